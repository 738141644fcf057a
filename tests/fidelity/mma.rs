//! Fidelity of `mma.sync` and `ldmatrix` against the PTX ISA's fragment layouts, on random data.
use crate::emulator_support;

use emulator_support::*;
use flashmha::emulator::Device;
use half::{bf16, f16};

/// 16x16 (A) times 16x8 (B) plus C, in f64 from the rounded inputs.
fn matmul(a: &[f64], b: &[f64], c: &[f64], k: usize) -> Vec<f64> {
    let mut d = vec![0f64; 16 * 8];
    for i in 0..16 {
        for j in 0..8 {
            let mut s = c[i * 8 + j];
            for kk in 0..k {
                s += a[i * k + kk] * b[kk * 8 + j];
            }
            d[i * 8 + j] = s;
        }
    }
    d
}

fn run_f32(entry: &str, k: usize, bf: bool, seed: u64) {
    run_f32_counted(entry, k, bf, seed, 1);
}

/// `run_f32` for a kernel that issues `mmas` mma instructions in all.
fn run_f32_counted(entry: &str, k: usize, bf: bool, seed: u64, mmas: u64) {
    let m = module("mma");
    let mut r = rng(seed);
    let av = rand_f32(&mut r, 16 * k, 2.0);
    let bv = rand_f32(&mut r, k * 8, 2.0);
    let cv = rand_f32(&mut r, 16 * 8, 4.0);
    let (a_bits, a64): (Vec<u16>, Vec<f64>) = if bf {
        av.iter()
            .map(|&x| (bf16::from_f32(x).to_bits(), bf16::from_f32(x).to_f64()))
            .unzip()
    } else {
        av.iter()
            .map(|&x| (f16::from_f32(x).to_bits(), f16::from_f32(x).to_f64()))
            .unzip()
    };
    let (b_bits, b64): (Vec<u16>, Vec<f64>) = if bf {
        bv.iter()
            .map(|&x| (bf16::from_f32(x).to_bits(), bf16::from_f32(x).to_f64()))
            .unzip()
    } else {
        bv.iter()
            .map(|&x| (f16::from_f32(x).to_bits(), f16::from_f32(x).to_f64()))
            .unzip()
    };
    let c64: Vec<f64> = cv.iter().map(|&x| x as f64).collect();
    let mut dev = Device::new();
    let (pa, pb, pc) = (
        upload(&mut dev, &a_bits),
        upload(&mut dev, &b_bits),
        upload(&mut dev, &cv),
    );
    let pd = dev.alloc(16 * 8 * 4);
    let rep = launch(
        &mut dev,
        &m,
        entry,
        1,
        32,
        &[Arg::Ptr(pa), Arg::Ptr(pb), Arg::Ptr(pc), Arg::Ptr(pd)],
    )
    .clean();
    let d: Vec<f32> = download(&dev, pd, 128);
    let want = matmul(&a64, &b64, &c64, k);
    for i in 0..128 {
        let tol = 1e-5 * want[i].abs().max(1.0);
        assert!(
            (d[i] as f64 - want[i]).abs() <= tol,
            "{entry} element ({}, {}): got {} want {}",
            i / 8,
            i % 8,
            d[i],
            want[i]
        );
    }
    assert_eq!(rep.counters.mma_instructions, mmas);
    assert_eq!(rep.counters.tensor_flops, 2 * 16 * 8 * k as u64);
}

#[test]
fn mma_m16n8k16_f16_f32_matches_matmul() {
    for seed in 0..3 {
        run_f32("mma_f16_f32", 16, false, seed);
    }
}

#[test]
fn mma_m16n8k16_bf16_f32_matches_matmul() {
    for seed in 10..13 {
        run_f32("mma_bf16_f32", 16, true, seed);
    }
}

/// PTX ISA 9.7.14.5.7 "Matrix Fragments for mma.m16n8k8" (the Turing kernels' only mma):
/// A a0..a3 at rows groupID / groupID + 8, cols 2 * threadID_in_group + {0, 1}; B b0, b1 at rows
/// 2 * threadID_in_group + {0, 1}, col groupID; C as m16n8k16.
#[test]
fn mma_m16n8k8_f16_f32_matches_matmul() {
    for seed in 21..25 {
        run_f32("mma_k8_f16_f32", 8, false, seed);
    }
}

/// The Turing k16 step of kernels/common/mma.cuh: two m16n8k8 on the halves of the m16n8k16
/// fragments must equal one m16n8k16 (two mma instructions, the same FLOPs).
#[test]
fn two_m16n8k8_compute_one_m16n8k16_step() {
    for seed in 30..34 {
        run_f32_counted("mma_k16_as_two_k8", 16, false, seed, 2);
    }
}

#[test]
fn mma_m16n8k16_f16_f16_matches_matmul_rounded() {
    let m = module("mma");
    let mut r = rng(7);
    let a: Vec<f16> = rand_f32(&mut r, 256, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let b: Vec<f16> = rand_f32(&mut r, 128, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let c: Vec<f16> = rand_f32(&mut r, 128, 2.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let bits = |v: &[f16]| v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>();
    let mut dev = Device::new();
    let (pa, pb, pc) = (
        upload(&mut dev, &bits(&a)),
        upload(&mut dev, &bits(&b)),
        upload(&mut dev, &bits(&c)),
    );
    let pd = dev.alloc(256);
    launch(
        &mut dev,
        &m,
        "mma_f16_f16",
        1,
        32,
        &[Arg::Ptr(pa), Arg::Ptr(pb), Arg::Ptr(pc), Arg::Ptr(pd)],
    )
    .clean();
    let d: Vec<u16> = download(&dev, pd, 128);
    let f = |v: &[f16]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let want = matmul(&f(&a), &f(&b), &f(&c), 16);
    for i in 0..128 {
        let got = f16::from_bits(d[i]).to_f64();
        // one f16 rounding of the exact result
        let ulp = f16::from_f64(want[i]).to_f64().abs() * 2f64.powi(-10) + 1e-7;
        assert!(
            (got - want[i]).abs() <= ulp,
            "element {i}: got {got} want {}",
            want[i]
        );
    }
}

/// Expected registers of lane `t` for `ldmatrix` with `num` matrices, per the PTX ISA section
/// "Warp-level matrix load instruction: ldmatrix": without .trans lane t holds row t/4, columns
/// 2(t%4), 2(t%4)+1 of each matrix; with .trans the same positions of the transposed matrix.
fn ldmatrix_expect(src: &[u16], num: usize, trans: bool, t: usize) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (j, o) in out.iter_mut().enumerate().take(num) {
        let el = |r: usize, c: usize| src[64 * j + r * 8 + c] as u32;
        let (r, c) = (t / 4, 2 * (t % 4));
        *o = if trans {
            el(c, r) | el(c + 1, r) << 16
        } else {
            el(r, c) | el(r, c + 1) << 16
        };
    }
    out
}

#[test]
fn ldmatrix_layouts_all_variants() {
    let m = module("ldmatrix");
    let mut r = rng(3);
    let src: Vec<u16> = (0..256).map(|_| rand::Rng::random::<u16>(&mut r)).collect();
    for (entry, num, trans) in [
        ("ldm_x1", 1, false),
        ("ldm_x2", 2, false),
        ("ldm_x4", 4, false),
        ("ldm_x1_trans", 1, true),
        ("ldm_x2_trans", 2, true),
        ("ldm_x4_trans", 4, true),
    ] {
        let mut dev = Device::new();
        let pin = upload(&mut dev, &src);
        let pout = dev.alloc(32 * 4 * 4);
        let rep = launch(&mut dev, &m, entry, 1, 32, &[Arg::Ptr(pin), Arg::Ptr(pout)]).clean();
        let got: Vec<u32> = download(&dev, pout, 128);
        for t in 0..32 {
            let want = ldmatrix_expect(&src, num, trans, t);
            for j in 0..num {
                assert_eq!(got[t * 4 + j], want[j], "{entry}: lane {t} register {j}");
            }
            for j in num..4 {
                assert_eq!(
                    got[t * 4 + j],
                    0,
                    "{entry}: lane {t} register {j} must stay untouched"
                );
            }
        }
        // 48-byte row pitch: the 8 rows of a matrix cover banks 0-3, 12-15, 24-27, 4-7, 16-19,
        // 28-31, 8-11, 20-23, i.e. conflict-free: one wavefront per matrix, and the staging
        // stores are conflict-free too.
        let c = &rep.counters;
        assert_eq!(c.shared_wavefronts, c.shared_wavefronts_ideal, "{entry}");
        assert!(c.shared_wavefronts_ideal >= num as u64);
    }
}
