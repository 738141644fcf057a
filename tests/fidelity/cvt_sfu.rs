//! Fidelity of `cvt` rounding (f16/bf16 in every rounding mode, packed x2 order, float->int) and
//! of the special-function approximations, against expectations computed independently with the
//! `half` crate and f64 math.
use crate::emulator_support;

use emulator_support::*;
use flashmha::emulator::Device;
use half::{bf16, f16};
use rand::Rng;

/// Directed rounding derived from the round-to-nearest result and its neighbours.
fn f16_dir(x: f32, mode: &str) -> u16 {
    let n = f16::from_f32(x);
    if n.is_nan() || n.to_f32() == x {
        return n.to_bits();
    }
    let next = |h: f16, up: bool| -> f16 {
        // step one ulp towards +inf (up) or -inf
        let b = h.to_bits();
        let pos = b & 0x8000 == 0;
        if b & 0x7FFF == 0 {
            return f16::from_bits(if up { 0x0001 } else { 0x8001 });
        }
        f16::from_bits(if pos == up { b + 1 } else { b - 1 })
    };
    let up = if n.to_f32() > x { n } else { next(n, true) };
    let down = if n.to_f32() < x { n } else { next(n, false) };
    let r = match mode {
        "rz" => {
            if x > 0.0 {
                down
            } else {
                up
            }
        }
        "rm" => down,
        _ => up,
    };
    // f16::from_f32 overflows to inf; directed modes saturate where the ISA says so
    if r.is_infinite() && (mode == "rz" || (mode == "rm" && x > 0.0) || (mode == "rp" && x < 0.0)) {
        return if x > 0.0 { 0x7BFF } else { 0xFBFF };
    }
    r.to_bits()
}

fn bf16_rz(x: f32) -> u16 {
    (x.to_bits() >> 16) as u16
}

#[test]
fn cvt_rounding_modes_and_packing() {
    let m = module("cvt");
    let mut r = rng(4);
    let mut xs: Vec<f32> = (0..200)
        .map(|i| match i % 4 {
            0 => r.random_range(-4.0f32..4.0),
            1 => r.random_range(-70000.0f32..70000.0),
            2 => r.random_range(-1e-5f32..1e-5),
            _ => f32::from_bits(r.random::<u32>() & 0xBFFF_FFFF),
        })
        .collect();
    // exact ties for f16 (1 + 2^-11, 1 + 3*2^-11) and bf16, overflow, NaN, infinities
    xs.extend([
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        -(1.0 + 2f32.powi(-11)),
        1.0 + 2f32.powi(-8),
        65520.0,
        1e9,
        -1e9,
    ]);
    xs.extend([f32::INFINITY, f32::NEG_INFINITY, 2.5, -2.5, 3.5, 0.5]);
    let n = xs.len();
    let mut dev = Device::new();
    let pin = upload(&mut dev, &xs);
    let pout = dev.alloc(n * 12 * 4);
    launch(
        &mut dev,
        &m,
        "cvt_modes",
        (n as u32).div_ceil(64),
        64,
        &[Arg::Ptr(pin), Arg::Ptr(pout), Arg::I32(n as i32)],
    )
    .clean();
    let out: Vec<u32> = download(&dev, pout, n * 12);
    for (i, &x) in xs.iter().enumerate() {
        let o = &out[i * 12..i * 12 + 12];
        let y = xs[(i + 1) % n];
        assert_eq!(o[0] as u16, f16::from_f32(x).to_bits(), "rn.f16 {x:e}");
        assert_eq!(o[1] as u16, f16_dir(x, "rz"), "rz.f16 {x:e}");
        assert_eq!(o[2] as u16, f16_dir(x, "rm"), "rm.f16 {x:e}");
        assert_eq!(o[3] as u16, f16_dir(x, "rp"), "rp.f16 {x:e}");
        assert_eq!(o[4] as u16, bf16::from_f32(x).to_bits(), "rn.bf16 {x:e}");
        if x.is_finite() {
            assert_eq!(o[5] as u16, bf16_rz(x), "rz.bf16 {x:e}");
        }
        // packed: first source in the upper half
        assert_eq!(
            o[6],
            (f16::from_f32(x).to_bits() as u32) << 16 | f16::from_f32(y).to_bits() as u32,
            "f16x2 {x} {y}"
        );
        assert_eq!(
            o[7],
            (bf16::from_f32(x).to_bits() as u32) << 16 | bf16::from_f32(y).to_bits() as u32,
            "bf16x2 {x} {y}"
        );
        let sat = |v: f64| v.clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32;
        if !x.is_nan() {
            assert_eq!(o[8], sat((x as f64).round_ties_even()), "rni {x}");
            assert_eq!(o[9], sat((x as f64).trunc()), "rzi {x}");
            assert_eq!(
                o[10],
                (x as f64).floor().clamp(0.0, u32::MAX as f64) as u32,
                "rmi.u32 {x}"
            );
        } else {
            assert_eq!(o[8], 0);
        }
        assert_eq!(
            f32::from_bits(o[11]).to_bits(),
            f16::from_f32(x).to_f32().to_bits(),
            "f16 -> f32 {x}"
        );
    }
}

#[test]
fn special_functions_are_accurate() {
    let m = module("sfu");
    let mut r = rng(8);
    let xs: Vec<f32> = (0..256).map(|_| r.random_range(-20.0f32..20.0)).collect();
    let n = xs.len();
    let mut dev = Device::new();
    let pin = upload(&mut dev, &xs);
    let pout = dev.alloc(n * 8 * 4);
    let rep = launch(
        &mut dev,
        &m,
        "sfu",
        4,
        64,
        &[Arg::Ptr(pin), Arg::Ptr(pout), Arg::I32(n as i32)],
    )
    .clean();
    let out: Vec<f32> = download(&dev, pout, n * 8);
    let rel = |got: f32, want: f64| ((got as f64 - want) / want.abs().max(1e-30)).abs();
    for (i, &x) in xs.iter().enumerate() {
        let o = &out[i * 8..i * 8 + 8];
        let xd = x as f64;
        // ISA: ex2.approx max relative error 2^-22 (we are tighter, which is allowed)
        assert!(rel(o[0], xd.exp2()) < 2f64.powi(-22), "ex2 {x}");
        assert!(rel(o[1], xd.exp2()) < 2f64.powi(-22), "ex2.ftz {x}");
        assert!(
            (o[2] as f64 - xd.abs().log2()).abs() < 2f64.powi(-22),
            "lg2 {x}"
        );
        assert!((o[3] as f64 - xd.tanh()).abs() < 2f64.powi(-10), "tanh {x}");
        assert!(rel(o[4], 1.0 / xd) < 2f64.powi(-22), "rcp {x}");
        assert!(
            rel(o[5], 1.0 / xd.abs().sqrt()) < 2f64.powi(-22),
            "rsqrt {x}"
        );
        assert_eq!(o[6], (1.0 + x) / 3.0, "div.rn {x}");
        assert_eq!(o[7], x.abs().sqrt(), "sqrt.rn {x}");
    }
    assert!(rep.counters.class(flashmha::emulator::Class::Sfu) >= 6 * 4 * 2);
}
