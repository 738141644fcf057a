//! Fidelity of `cp.async` (zero-fill when src-size < cp-size, ignore-src, commit groups) and of
//! atomics across CTAs and in shared memory.
use crate::emulator_support;

use emulator_support::*;
use flashmha::emulator::Device;
use rand::Rng;

#[test]
fn cp_async_zero_fills_past_src_size() {
    let m = module("cp_async");
    let mut r = rng(9);
    let n = 64usize;
    let src: Vec<u8> = (0..n * 16).map(|_| r.random_range(1..=255u8)).collect();
    let sizes: Vec<u32> = (0..n).map(|t| [0, 1, 4, 7, 8, 15, 16][t % 7]).collect();
    let mut dev = Device::new();
    let psrc = dev.upload(&src);
    let psz = upload(&mut dev, &sizes);
    let pout = dev.alloc(n * 16);
    let rep = launch(
        &mut dev,
        &m,
        "cp_async_zfill",
        1,
        n as u32,
        &[Arg::Ptr(psrc), Arg::Ptr(psz), Arg::Ptr(pout)],
    )
    .clean();
    let out = dev.read(pout, n * 16).unwrap();
    for t in 0..n {
        let s = (t + 1) % n;
        for k in 0..16 {
            let want = if k < sizes[s] as usize {
                src[16 * s + k]
            } else {
                0
            };
            assert_eq!(
                out[16 * t + k],
                want,
                "row {s} byte {k} (src-size {})",
                sizes[s]
            );
        }
    }
    let requested: u64 = sizes.iter().map(|&s| s as u64).sum();
    // cp.async reads only src-size bytes; plus the 4-byte `sizes[t]` load of each thread
    assert_eq!(rep.counters.global_load_bytes, requested + 4 * n as u64);
}

#[test]
fn cp_async_groups_and_ignore_src() {
    let m = module("cp_async");
    let mut r = rng(10);
    let src: Vec<u32> = (0..128).map(|_| r.random_range(1..u32::MAX)).collect();
    let out: Vec<u32> = run_in_out(&m, "cp_async_groups", 64, &src, 128);
    for t in 0..64 {
        // ignore-src true (odd t) copies zeros
        assert_eq!(out[t], if t % 2 == 1 { 0 } else { src[t] }, "a[{t}]");
        assert_eq!(out[64 + t], src[64 + t], "b[{t}]");
    }
}

#[test]
fn atomics_are_exact_across_ctas() {
    let m = module("atomics");
    let mut r = rng(12);
    let (blocks, threads) = (24u32, 128u32);
    let n = (blocks * threads) as usize - 17;
    let input: Vec<u32> = (0..n).map(|_| r.random_range(0..1_000_000)).collect();
    let mut dev = Device::new();
    let pin = upload(&mut dev, &input);
    let mut init = vec![0u32; 5 + blocks as usize];
    init[2] = u32::MAX;
    let pc = upload(&mut dev, &init);
    let pf = upload(&mut dev, &[0f32]);
    let pw = upload(&mut dev, &[0u64]);
    let rep = launch(
        &mut dev,
        &m,
        "atomics",
        blocks,
        threads,
        &[
            Arg::Ptr(pin),
            Arg::Ptr(pc),
            Arg::Ptr(pf),
            Arg::Ptr(pw),
            Arg::I32(n as i32),
        ],
    )
    .clean();
    let c: Vec<u32> = download(&dev, pc, 5 + blocks as usize);
    assert_eq!(c[0], input.iter().fold(0u32, |s, v| s.wrapping_add(*v)));
    assert_eq!(c[1], *input.iter().max().unwrap());
    assert_eq!(c[2], *input.iter().min().unwrap());
    assert_eq!(c[3], input.iter().fold(0, |s, v| s ^ v));
    assert_eq!(c[4], 3 * n as u32);
    for b in 0..blocks as usize {
        let lo = b * threads as usize;
        let hi = (lo + threads as usize).min(n);
        assert_eq!(
            c[5 + b],
            *input[lo..hi].iter().max().unwrap(),
            "block {b} shared max"
        );
    }
    let f: Vec<f32> = download(&dev, pf, 1);
    let fsum: f64 = input.iter().map(|v| (v & 0xff) as f64).sum();
    assert_eq!(f[0] as f64, fsum, "sum of small integers is exact in f32");
    let w: Vec<u64> = download(&dev, pw, 1);
    assert_eq!(w[0], input.iter().map(|&v| (v as u64) << 20).sum::<u64>());
    assert!(rep.counters.global_atomic_bytes > 0);
}
