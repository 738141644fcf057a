//! Fidelity of `shfl.sync` (all modes, sub-warp widths), `vote.sync` and `match.any.sync`,
//! against the semantics in the PTX ISA section "shfl.sync" computed here independently.
use crate::emulator_support;

use emulator_support::*;
use flashmha::emulator::Device;
use rand::Rng;

/// CUDA's `__shfl_*_sync(mask, v, x, width)` lowers to `shfl.sync` with c = ((32 - width) << 8)
/// | clamp; this models the resulting ISA semantics lane by lane.
fn shfl(v: &[u32], mode: &str, b: i32, width: i32) -> Vec<u32> {
    (0..32i32)
        .map(|lane| {
            let base = lane & !(width - 1);
            let (j, ok) = match mode {
                "up" => (lane - b, lane - b >= base),
                "down" => (lane + b, lane + b < base + width),
                "bfly" => (lane ^ b, (lane ^ b) < base + width),
                _ => (base + (b & (width - 1)), true),
            };
            if ok {
                v[j as usize]
            } else {
                v[lane as usize]
            }
        })
        .collect()
}

#[test]
fn shuffles_votes_and_match_follow_the_isa() {
    let m = module("shfl");
    let mut r = rng(11);
    for case in 0..6 {
        let input: Vec<u32> = (0..32).map(|_| r.random()).collect();
        let delta = r.random_range(1..6u32);
        let src = r.random_range(0..32u32);
        let xmask = r.random_range(1..32u32);
        let width = [2u32, 4, 8, 16, 32][case % 5];
        let mut dev = Device::new();
        let pin = upload(&mut dev, &input);
        let pp = upload(&mut dev, &[delta, src, xmask, width]);
        let pout = dev.alloc(13 * 32 * 4);
        launch(
            &mut dev,
            &m,
            "shfl_modes",
            1,
            32,
            &[Arg::Ptr(pin), Arg::Ptr(pp), Arg::Ptr(pout)],
        )
        .clean();
        let out: Vec<u32> = download(&dev, pout, 13 * 32);
        let row = |k: usize| &out[k * 32..(k + 1) * 32];
        let (d, s, x, w) = (delta as i32, src as i32, xmask as i32, width as i32);
        assert_eq!(row(0), shfl(&input, "up", d, 32), "up");
        assert_eq!(row(1), shfl(&input, "down", d, 32), "down");
        assert_eq!(row(2), shfl(&input, "bfly", x, 32), "bfly");
        assert_eq!(row(3), shfl(&input, "idx", s, 32), "idx");
        assert_eq!(row(4), shfl(&input, "up", d, w), "up width {w}");
        assert_eq!(row(5), shfl(&input, "down", d, w), "down width {w}");
        assert_eq!(row(6), shfl(&input, "bfly", x, w), "bfly width {w}");
        assert_eq!(row(7), shfl(&input, "idx", s, w), "idx width {w}");
        let ballot = input
            .iter()
            .enumerate()
            .fold(0u32, |m, (l, v)| m | ((v & 1) << l));
        assert!(row(8).iter().all(|&b| b == ballot));
        assert!(row(9).iter().all(|&b| b == (ballot != 0) as u32));
        assert!(row(10).iter().all(|&b| b == (ballot == u32::MAX) as u32));
        for l in 0..32 {
            let key = input[l] & 3;
            let want = (0..32)
                .filter(|&k| input[k] & 3 == key)
                .fold(0u32, |m, k| m | 1 << k);
            assert_eq!(row(11)[l], want, "match.any lane {l}");
        }
        for l in 0..32 {
            let want = if l % 2 == 0 {
                input[(l + 2) % 32]
            } else {
                0xdeadbeef
            };
            assert_eq!(row(12)[l], want, "divergent shfl lane {l}");
        }
    }
}
