//! Float family execution: f64/f32/f16/bf16 and packed x2 arithmetic, `fma`, float `neg`/`abs`
//! and `slct.f32`, with PTX rounding, `.ftz`, `.sat` and min/max NaN rules.

use super::lanes::*;
use crate::program::*;
use crate::softfloat::{self as sf, round_f64, two_sum, Fmt, Rnd};

#[inline(always)]
fn sat01(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// IEEE-style minimum/maximum as PTX defines them: a NaN operand is ignored unless both are NaN
/// (or `.NaN` is given), and -0 orders below +0.
#[inline(always)]
fn fminmax(a: f64, b: f64, max: bool, nan: bool) -> Option<f64> {
    if a.is_nan() || b.is_nan() {
        if nan || (a.is_nan() && b.is_nan()) {
            return None;
        }
        return Some(if a.is_nan() { b } else { a });
    }
    if a == b {
        // equal values, only the sign of zero can differ
        let neg = a.is_sign_negative() && b.is_sign_negative();
        let pos = !a.is_sign_negative() && !b.is_sign_negative();
        let r = if max {
            if neg {
                a
            } else {
                a.abs()
            }
        } else if pos {
            a
        } else {
            -a.abs()
        };
        return Some(r);
    }
    Some(if (a < b) != max { a } else { b })
}

/// f32 binary arithmetic with PTX modifiers.
#[inline(always)]
pub fn f32_bin(op: FOp, m: FMods, x: f32, y: f32) -> f32 {
    let (x, y) = if m.ftz {
        (sf::ftz32(x), sf::ftz32(y))
    } else {
        (x, y)
    };
    let r = match op {
        FOp::Add | FOp::Sub => {
            let y = if op == FOp::Sub { -y } else { y };
            if m.rnd == Rnd::Rn {
                x + y
            } else {
                let (s, e) = two_sum(x as f64, y as f64);
                f32::from_bits(round_f64(s, e, sf::F32, m.rnd, false) as u32)
            }
        }
        FOp::Mul => {
            if m.rnd == Rnd::Rn {
                x * y
            } else {
                sf::f64_to_f32(x as f64 * y as f64, m.rnd)
            }
        }
        FOp::Div => {
            if m.rnd == Rnd::Rn || m.approx {
                ((x as f64) / (y as f64)) as f32
            } else {
                let q = x as f64 / y as f64;
                let r = (-q).mul_add(y as f64, x as f64);
                let resid = if r == 0.0 || !q.is_finite() {
                    0.0
                } else if (r > 0.0) == (y > 0.0) {
                    f64::MIN_POSITIVE
                } else {
                    -f64::MIN_POSITIVE
                };
                f32::from_bits(round_f64(q, resid, sf::F32, m.rnd, false) as u32)
            }
        }
        FOp::Min | FOp::Max => match fminmax(x as f64, y as f64, op == FOp::Max, m.nan) {
            Some(v) => v as f32,
            None => f32::from_bits(0x7FFF_FFFF),
        },
        FOp::Copysign => f32::from_bits((y.to_bits() & 0x7FFF_FFFF) | (x.to_bits() & 0x8000_0000)),
    };
    let r = if m.ftz { sf::ftz32(r) } else { r };
    if m.sat {
        sat01(r)
    } else {
        r
    }
}

fn f64_bin(op: FOp, m: FMods, x: f64, y: f64) -> f64 {
    match op {
        FOp::Add | FOp::Sub => {
            let y = if op == FOp::Sub { -y } else { y };
            let (s, e) = two_sum(x, y);
            sf::adjust_f64(s, e, m.rnd)
        }
        FOp::Mul => {
            let p = x * y;
            if m.rnd == Rnd::Rn || !p.is_finite() {
                p
            } else {
                sf::adjust_f64(p, x.mul_add(y, -p), m.rnd)
            }
        }
        FOp::Div => x / y,
        FOp::Min | FOp::Max => {
            fminmax(x, y, op == FOp::Max, m.nan).unwrap_or(f64::from_bits(0x7FFF_FFFF_FFFF_FFFF))
        }
        FOp::Copysign => y.abs().copysign(x),
    }
}

/// Flush a half-format subnormal to zero.
pub fn ftz_h(bits: u64, fmt: Fmt) -> u64 {
    let e = (bits >> fmt.mbits) & ((1 << fmt.ebits) - 1);
    if e == 0 {
        bits & fmt.sign_bit()
    } else {
        bits
    }
}

/// One f16/bf16 element of a binary operation.
fn half_bin(op: FOp, m: FMods, fmt: Fmt, a: u64, b: u64) -> u64 {
    let (a, b) = if m.ftz {
        (ftz_h(a, fmt), ftz_h(b, fmt))
    } else {
        (a, b)
    };
    let x = fmt.to_f64(a);
    let y = fmt.to_f64(b);
    let r = match op {
        FOp::Add | FOp::Sub => {
            let y = if op == FOp::Sub { -y } else { y };
            // the exact sum of two half values fits an f64
            round_f64(x + y, 0.0, fmt, m.rnd, false)
        }
        FOp::Mul => round_f64(x * y, 0.0, fmt, m.rnd, false),
        FOp::Div => round_f64(x / y, 0.0, fmt, m.rnd, false),
        FOp::Min | FOp::Max => match fminmax(x, y, op == FOp::Max, m.nan) {
            Some(v) => round_f64(v, 0.0, fmt, Rnd::Rn, false),
            None => fmt.canonical_nan(),
        },
        FOp::Copysign => (b & !fmt.sign_bit()) | (a & fmt.sign_bit()),
    };
    half_post(r, fmt, m)
}

fn half_post(r: u64, fmt: Fmt, m: FMods) -> u64 {
    let r = if m.ftz { ftz_h(r, fmt) } else { r };
    if m.sat {
        let v = fmt.to_f64(r);
        if v.is_nan() {
            0
        } else {
            round_f64(v.clamp(0.0, 1.0), 0.0, fmt, Rnd::Rn, false)
        }
    } else {
        r
    }
}

fn half_fma(m: FMods, fmt: Fmt, a: u64, b: u64, c: u64) -> u64 {
    let (a, b, c) = if m.ftz {
        (ftz_h(a, fmt), ftz_h(b, fmt), ftz_h(c, fmt))
    } else {
        (a, b, c)
    };
    let p = fmt.to_f64(a) * fmt.to_f64(b);
    let (s, e) = two_sum(p, fmt.to_f64(c));
    half_post(round_f64(s, e, fmt, m.rnd, false), fmt, m)
}

/// Applies `f` to each 16-bit half of a packed pair (or to the single low half).
#[inline(always)]
pub fn per_half(x2: bool, a: u64, b: u64, f: impl Fn(u64, u64) -> u64) -> u64 {
    if x2 {
        (f(a & 0xFFFF, b & 0xFFFF) & 0xFFFF)
            | ((f((a >> 16) & 0xFFFF, (b >> 16) & 0xFFFF) & 0xFFFF) << 16)
    } else {
        f(a & 0xFFFF, b & 0xFFFF) & 0xFFFF
    }
}

#[allow(clippy::too_many_arguments)]
pub fn exec_fbin(op: FOp, fty: FTy, mods: FMods, regs: &mut [u64], m: u32, d: R, a: R, b: R) {
    match fty {
        FTy::F32 => {
            if mods.rnd == Rnd::Rn && !mods.ftz && !mods.sat {
                match op {
                    FOp::Add => return lanes2(regs, m, d, a, b, |x, y| bf32(f32b(x) + f32b(y))),
                    FOp::Sub => return lanes2(regs, m, d, a, b, |x, y| bf32(f32b(x) - f32b(y))),
                    FOp::Mul => return lanes2(regs, m, d, a, b, |x, y| bf32(f32b(x) * f32b(y))),
                    _ => {}
                }
            }
            lanes2(regs, m, d, a, b, |x, y| {
                bf32(f32_bin(op, mods, f32b(x), f32b(y)))
            })
        }
        FTy::F64 => lanes2(regs, m, d, a, b, |x, y| {
            f64_bin(op, mods, f64::from_bits(x), f64::from_bits(y)).to_bits()
        }),
        _ => {
            let fmt = fty.half_fmt();
            let x2 = fty.is_x2();
            lanes2(regs, m, d, a, b, |x, y| {
                per_half(x2, x, y, |p, q| half_bin(op, mods, fmt, p, q))
            })
        }
    }
}

pub fn exec_fun(k: FUnK, fty: FTy, ftz: bool, regs: &mut [u64], m: u32, d: R, a: R) {
    {
        let neg = k == FUnK::Neg;
        match fty {
            FTy::F32 => lanes1(regs, m, d, a, |x| {
                let v = if ftz { sf::ftz32(f32b(x)) } else { f32b(x) };
                bf32(if neg { -v } else { v.abs() })
            }),
            FTy::F64 => lanes1(regs, m, d, a, |x| {
                let v = f64::from_bits(x);
                (if neg { -v } else { v.abs() }).to_bits()
            }),
            _ => {
                let fmt = fty.half_fmt();
                lanes1(regs, m, d, a, |x| {
                    per_half(fty.is_x2(), x, 0, |h, _| {
                        let h = if ftz { ftz_h(h, fmt) } else { h };
                        if neg {
                            h ^ 0x8000
                        } else {
                            h & 0x7FFF
                        }
                    })
                })
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn exec_fma(fty: FTy, mods: FMods, regs: &mut [u64], m: u32, d: R, a: R, b: R, c: R) {
    match fty {
        FTy::F32 => {
            if mods.rnd == Rnd::Rn && !mods.ftz && !mods.sat {
                return lanes3(regs, m, d, a, b, c, |x, y, z| {
                    bf32(f32b(x).mul_add(f32b(y), f32b(z)))
                });
            }
            lanes3(regs, m, d, a, b, c, |x, y, z| {
                let (x, y, z) = (f32b(x), f32b(y), f32b(z));
                let (x, y, z) = if mods.ftz {
                    (sf::ftz32(x), sf::ftz32(y), sf::ftz32(z))
                } else {
                    (x, y, z)
                };
                let r = if mods.rnd == Rnd::Rn {
                    x.mul_add(y, z)
                } else {
                    let (s, e) = two_sum(x as f64 * y as f64, z as f64);
                    f32::from_bits(round_f64(s, e, sf::F32, mods.rnd, false) as u32)
                };
                let r = if mods.ftz { sf::ftz32(r) } else { r };
                bf32(if mods.sat { sat01(r) } else { r })
            })
        }
        FTy::F64 => lanes3(regs, m, d, a, b, c, |x, y, z| {
            f64::from_bits(x)
                .mul_add(f64::from_bits(y), f64::from_bits(z))
                .to_bits()
        }),
        _ => {
            let fmt = fty.half_fmt();
            let x2 = fty.is_x2();
            lanes3(regs, m, d, a, b, c, |x, y, z| {
                let lo = half_fma(mods, fmt, x & 0xFFFF, y & 0xFFFF, z & 0xFFFF);
                if x2 {
                    lo | (half_fma(
                        mods,
                        fmt,
                        (x >> 16) & 0xFFFF,
                        (y >> 16) & 0xFFFF,
                        (z >> 16) & 0xFFFF,
                    ) << 16)
                } else {
                    lo
                }
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn exec_slct_f32(ftz: bool, regs: &mut [u64], m: u32, d: R, a: R, b: R, c: R) {
    lanes3(regs, m, d, a, b, c, |x, y, z| {
        let v = if ftz { sf::ftz32(f32b(z)) } else { f32b(z) };
        if v >= 0.0 {
            x
        } else {
            y
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fminmax_rules() {
        assert_eq!(fminmax(f64::NAN, 1.0, false, false), Some(1.0));
        assert_eq!(fminmax(f64::NAN, 1.0, false, true), None);
        assert!(fminmax(0.0, -0.0, false, false).unwrap().is_sign_negative());
        assert!(fminmax(-0.0, 0.0, true, false).unwrap().is_sign_positive());
    }
}
