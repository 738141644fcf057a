//! Per-lane semantics of the arithmetic, logic, comparison and conversion instructions, and the
//! helpers that apply them to all active lanes of a warp. Registers are 64-bit slots holding the
//! value zero-extended from the register's width; each function reads the bits its PTX type
//! says and masks its result to the destination width.

use crate::emulator::program::*;
use crate::emulator::softfloat::{self as sf, round_f64, two_sum, Fmt, Rnd};
use crate::emulator::types::{Ty, TyKind};

pub const FULL: u32 = u32::MAX;

#[inline(always)]
pub fn mask(w: u8) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

#[inline(always)]
pub fn sext(x: u64, w: u8) -> i64 {
    if w >= 64 {
        x as i64
    } else {
        ((x << (64 - w)) as i64) >> (64 - w)
    }
}

#[inline(always)]
fn lane_slice(regs: &[u64], r: R) -> [u64; 32] {
    let i = r as usize * 32;
    regs[i..i + 32].try_into().unwrap()
}

/// `d = f(a)` on the lanes in `m`.
#[inline(always)]
pub fn lanes1(regs: &mut [u64], m: u32, d: R, a: R, f: impl Fn(u64) -> u64) {
    let av = lane_slice(regs, a);
    let di = d as usize * 32;
    let dv = &mut regs[di..di + 32];
    if m == FULL {
        for l in 0..32 {
            dv[l] = f(av[l]);
        }
    } else {
        for l in 0..32 {
            if m >> l & 1 != 0 {
                dv[l] = f(av[l]);
            }
        }
    }
}

#[inline(always)]
pub fn lanes2(regs: &mut [u64], m: u32, d: R, a: R, b: R, f: impl Fn(u64, u64) -> u64) {
    let av = lane_slice(regs, a);
    let bv = lane_slice(regs, b);
    let di = d as usize * 32;
    let dv = &mut regs[di..di + 32];
    if m == FULL {
        for l in 0..32 {
            dv[l] = f(av[l], bv[l]);
        }
    } else {
        for l in 0..32 {
            if m >> l & 1 != 0 {
                dv[l] = f(av[l], bv[l]);
            }
        }
    }
}

#[inline(always)]
pub fn lanes3(regs: &mut [u64], m: u32, d: R, a: R, b: R, c: R, f: impl Fn(u64, u64, u64) -> u64) {
    let av = lane_slice(regs, a);
    let bv = lane_slice(regs, b);
    let cv = lane_slice(regs, c);
    let di = d as usize * 32;
    let dv = &mut regs[di..di + 32];
    if m == FULL {
        for l in 0..32 {
            dv[l] = f(av[l], bv[l], cv[l]);
        }
    } else {
        for l in 0..32 {
            if m >> l & 1 != 0 {
                dv[l] = f(av[l], bv[l], cv[l]);
            }
        }
    }
}

#[inline(always)]
fn f32b(x: u64) -> f32 {
    f32::from_bits(x as u32)
}

#[inline(always)]
fn bf32(x: f32) -> u64 {
    x.to_bits() as u64
}

#[inline(always)]
fn sat01(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

fn mul_hi(a: u64, b: u64, w: u8, s: bool) -> u64 {
    if s {
        ((sext(a, w) as i128 * sext(b, w) as i128) >> w) as u64 & mask(w)
    } else {
        (((a & mask(w)) as u128 * (b & mask(w)) as u128) >> w) as u64 & mask(w)
    }
}

fn mul_wide(a: u64, b: u64, w: u8, s: bool) -> u64 {
    if s {
        (sext(a, w).wrapping_mul(sext(b, w))) as u64 & mask(2 * w)
    } else {
        (a & mask(w)).wrapping_mul(b & mask(w)) & mask(2 * w)
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
fn f32_bin(op: FOp, m: FMods, x: f32, y: f32) -> f32 {
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
fn ftz_h(bits: u64, fmt: Fmt) -> u64 {
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
fn per_half(x2: bool, a: u64, b: u64, f: impl Fn(u64, u64) -> u64) -> u64 {
    if x2 {
        (f(a & 0xFFFF, b & 0xFFFF) & 0xFFFF)
            | ((f((a >> 16) & 0xFFFF, (b >> 16) & 0xFFFF) & 0xFFFF) << 16)
    } else {
        f(a & 0xFFFF, b & 0xFFFF) & 0xFFFF
    }
}

pub fn exec_bin(k: BinK, regs: &mut [u64], m: u32, d: R, a: R, b: R) {
    match k {
        BinK::Add(w) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| x.wrapping_add(y) & mk)
        }
        BinK::Sub(w) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| x.wrapping_sub(y) & mk)
        }
        BinK::AddSat => lanes2(regs, m, d, a, b, |x, y| {
            ((x as u32 as i32 as i64 + y as u32 as i32 as i64)
                .clamp(i32::MIN as i64, i32::MAX as i64) as i32) as u32 as u64
        }),
        BinK::SubSat => lanes2(regs, m, d, a, b, |x, y| {
            ((x as u32 as i32 as i64 - y as u32 as i32 as i64)
                .clamp(i32::MIN as i64, i32::MAX as i64) as i32) as u32 as u64
        }),
        BinK::MulLo(w) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| x.wrapping_mul(y) & mk)
        }
        BinK::MulHi(w, s) => lanes2(regs, m, d, a, b, |x, y| mul_hi(x, y, w, s)),
        BinK::MulWide(w, s) => lanes2(regs, m, d, a, b, |x, y| mul_wide(x, y, w, s)),
        BinK::Div(w, s) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| {
                if y & mk == 0 {
                    mk
                } else if s {
                    sext(x, w).wrapping_div(sext(y, w)) as u64 & mk
                } else {
                    ((x & mk) / (y & mk)) & mk
                }
            })
        }
        BinK::Rem(w, s) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| {
                if y & mk == 0 {
                    x & mk
                } else if s {
                    sext(x, w).wrapping_rem(sext(y, w)) as u64 & mk
                } else {
                    ((x & mk) % (y & mk)) & mk
                }
            })
        }
        BinK::Min(w, s) | BinK::Max(w, s) => {
            let mk = mask(w);
            let max = matches!(k, BinK::Max(..));
            lanes2(regs, m, d, a, b, |x, y| {
                let lt = if s {
                    sext(x, w) < sext(y, w)
                } else {
                    (x & mk) < (y & mk)
                };
                (if lt != max { x } else { y }) & mk
            })
        }
        BinK::Shl(w) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| {
                let n = y as u32;
                if n >= w as u32 {
                    0
                } else {
                    (x << n) & mk
                }
            })
        }
        BinK::Shr(w, s) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| {
                let n = (y as u32).min(w as u32);
                if s {
                    (sext(x, w) >> n.min(63)) as u64 & mk
                } else if n >= w as u32 {
                    0
                } else {
                    (x & mk) >> n
                }
            })
        }
        BinK::And => lanes2(regs, m, d, a, b, |x, y| x & y),
        BinK::Or => lanes2(regs, m, d, a, b, |x, y| x | y),
        BinK::Xor => lanes2(regs, m, d, a, b, |x, y| x ^ y),
        BinK::F(op, fty, mods) => match fty {
            FTy::F32 => {
                if mods.rnd == Rnd::Rn && !mods.ftz && !mods.sat {
                    match op {
                        FOp::Add => {
                            return lanes2(regs, m, d, a, b, |x, y| bf32(f32b(x) + f32b(y)))
                        }
                        FOp::Sub => {
                            return lanes2(regs, m, d, a, b, |x, y| bf32(f32b(x) - f32b(y)))
                        }
                        FOp::Mul => {
                            return lanes2(regs, m, d, a, b, |x, y| bf32(f32b(x) * f32b(y)))
                        }
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
        },
        BinK::CvtPack(fmt, rnd, relu, satfinite) => lanes2(regs, m, d, a, b, |x, y| {
            let cv = |v: u64| -> u64 {
                let f = f32b(v) as f64;
                let f = if relu && f < 0.0 { 0.0 } else { f };
                round_f64(f, 0.0, fmt, rnd, satfinite) & 0xFFFF
            };
            (cv(x) << 16) | cv(y)
        }),
    }
}

pub fn exec_un(k: UnK, regs: &mut [u64], m: u32, d: R, a: R) {
    match k {
        UnK::Not(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| !x & mk)
        }
        UnK::Cnot => lanes1(regs, m, d, a, |x| (x == 0) as u64),
        UnK::Neg(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| x.wrapping_neg() & mk)
        }
        UnK::Abs(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| sext(x, w).unsigned_abs() & mk)
        }
        UnK::Popc(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| (x & mk).count_ones() as u64)
        }
        UnK::Clz(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| {
                ((x & mk).leading_zeros() - (64 - w as u32)) as u64
            })
        }
        UnK::Brev(w) => lanes1(regs, m, d, a, |x| x.reverse_bits() >> (64 - w as u32)),
        UnK::Bfind(w, s, shiftamt) => lanes1(regs, m, d, a, |x| {
            let v = if s && sext(x, w) < 0 {
                !x & mask(w)
            } else {
                x & mask(w)
            };
            if v == 0 {
                0xFFFF_FFFF
            } else {
                let pos = 63 - v.leading_zeros();
                if shiftamt {
                    (w as u32 - 1 - pos) as u64
                } else {
                    pos as u64
                }
            }
        }),
        UnK::FNeg(fty, ftz) | UnK::FAbs(fty, ftz) => {
            let neg = matches!(k, UnK::FNeg(..));
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
        UnK::Sqrt(fty, mods) => match fty {
            FTy::F64 => lanes1(regs, m, d, a, |x| f64::from_bits(x).sqrt().to_bits()),
            _ => lanes1(regs, m, d, a, |x| {
                let v = if mods.ftz {
                    sf::ftz32(f32b(x))
                } else {
                    f32b(x)
                };
                let r = if mods.approx || mods.rnd == Rnd::Rn {
                    v.sqrt()
                } else {
                    let s = (v as f64).sqrt();
                    let r = (-s).mul_add(s, v as f64);
                    let resid = if r == 0.0 || !s.is_finite() {
                        0.0
                    } else {
                        r.signum() * f64::MIN_POSITIVE
                    };
                    f32::from_bits(round_f64(s, resid, sf::F32, mods.rnd, false) as u32)
                };
                bf32(if mods.ftz { sf::ftz32(r) } else { r })
            }),
        },
        UnK::Rsqrt(fty, ftz) => match fty {
            FTy::F64 => lanes1(regs, m, d, a, |x| {
                (1.0 / f64::from_bits(x).sqrt()).to_bits()
            }),
            _ => lanes1(regs, m, d, a, |x| {
                let v = if ftz { sf::ftz32(f32b(x)) } else { f32b(x) };
                let r = (1.0 / (v as f64).sqrt()) as f32;
                bf32(if ftz { sf::ftz32(r) } else { r })
            }),
        },
        UnK::Rcp(fty, mods) => match fty {
            FTy::F64 => lanes1(regs, m, d, a, |x| (1.0 / f64::from_bits(x)).to_bits()),
            _ => {
                let one = 1f32;
                lanes1(regs, m, d, a, move |x| {
                    bf32(f32_bin(FOp::Div, mods, one, f32b(x)))
                })
            }
        },
        UnK::Ex2(fty, ftz) => match fty {
            FTy::F32 => lanes1(regs, m, d, a, |x| {
                let v = if ftz { sf::ftz32(f32b(x)) } else { f32b(x) };
                let r = (v as f64).exp2() as f32;
                bf32(if ftz { sf::ftz32(r) } else { r })
            }),
            _ => {
                let fmt = fty.half_fmt();
                lanes1(regs, m, d, a, |x| {
                    per_half(fty.is_x2(), x, 0, |h, _| {
                        round_f64(fmt.to_f64(h).exp2(), 0.0, fmt, Rnd::Rn, false)
                    })
                })
            }
        },
        UnK::Lg2(ftz) => lanes1(regs, m, d, a, |x| {
            let v = if ftz { sf::ftz32(f32b(x)) } else { f32b(x) };
            bf32((v as f64).log2() as f32)
        }),
        UnK::Sin(ftz) | UnK::Cos(ftz) => {
            let sin = matches!(k, UnK::Sin(_));
            lanes1(regs, m, d, a, |x| {
                let v = if ftz { sf::ftz32(f32b(x)) } else { f32b(x) } as f64;
                bf32((if sin { v.sin() } else { v.cos() }) as f32)
            })
        }
        UnK::Tanh(fty) => match fty {
            FTy::F32 => lanes1(regs, m, d, a, |x| bf32((f32b(x) as f64).tanh() as f32)),
            _ => {
                let fmt = fty.half_fmt();
                lanes1(regs, m, d, a, |x| {
                    per_half(fty.is_x2(), x, 0, |h, _| {
                        round_f64(fmt.to_f64(h).tanh(), 0.0, fmt, Rnd::Rn, false)
                    })
                })
            }
        },
        UnK::Cvt(c) => lanes1(regs, m, d, a, |x| cvt(&c, x)),
        UnK::Cvta {
            to_space,
            window,
            dmask,
        } => lanes1(regs, m, d, a, |x| {
            if window == 0 {
                x & dmask
            } else if to_space {
                x.wrapping_sub(window) & dmask
            } else {
                x.wrapping_add(window) & dmask
            }
        }),
        UnK::Const(v) => lanes1(regs, m, d, a, |_| v),
    }
}

fn bfe(a: u64, pos: u64, len: u64, w: u8, s: bool) -> u64 {
    let msb = w as u64 - 1;
    let pos = pos & 0xFF;
    let len = len & 0xFF;
    let sbit = if !s || len == 0 {
        0
    } else {
        (a >> (pos + len - 1).min(msb)) & 1
    };
    let mut d = 0u64;
    for i in 0..w as u64 {
        let bit = if i < len && pos + i <= msb {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    d
}

fn prmt(a: u64, b: u64, c: u64) -> u64 {
    let bytes = ((b & 0xFFFF_FFFF) << 32) | (a & 0xFFFF_FFFF);
    let mut d = 0u64;
    for i in 0..4 {
        let sel = (c >> (4 * i)) & 0xF;
        let mut byte = (bytes >> (8 * (sel & 7))) & 0xFF;
        if sel & 8 != 0 {
            byte = if byte & 0x80 != 0 { 0xFF } else { 0 };
        }
        d |= byte << (8 * i);
    }
    d
}

pub fn exec_tern(k: TerK, regs: &mut [u64], m: u32, d: R, a: R, b: R, c: R) {
    match k {
        TerK::MadLo(w) => {
            let mk = mask(w);
            lanes3(regs, m, d, a, b, c, |x, y, z| {
                x.wrapping_mul(y).wrapping_add(z) & mk
            })
        }
        TerK::MadHi(w, s) => {
            let mk = mask(w);
            lanes3(regs, m, d, a, b, c, |x, y, z| {
                mul_hi(x, y, w, s).wrapping_add(z) & mk
            })
        }
        TerK::MadWide(w, s) => {
            let mk = mask(2 * w);
            lanes3(regs, m, d, a, b, c, |x, y, z| {
                mul_wide(x, y, w, s).wrapping_add(z) & mk
            })
        }
        TerK::Fma(fty, mods) => match fty {
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
        },
        TerK::Selp => lanes3(
            regs,
            m,
            d,
            a,
            b,
            c,
            |x, y, p| if p & 1 != 0 { x } else { y },
        ),
        TerK::SlctS32 => lanes3(regs, m, d, a, b, c, |x, y, z| {
            if (z as u32 as i32) >= 0 {
                x
            } else {
                y
            }
        }),
        TerK::SlctF32(ftz) => lanes3(regs, m, d, a, b, c, |x, y, z| {
            let v = if ftz { sf::ftz32(f32b(z)) } else { f32b(z) };
            if v >= 0.0 {
                x
            } else {
                y
            }
        }),
        TerK::Bfe(w, s) => lanes3(regs, m, d, a, b, c, |x, y, z| bfe(x, y, z, w, s)),
        TerK::Prmt => lanes3(regs, m, d, a, b, c, prmt),
        TerK::Shf { left, clamp } => lanes3(regs, m, d, a, b, c, |x, y, z| {
            let n = if clamp {
                (z as u32).min(32)
            } else {
                z as u32 & 31
            } as u64;
            let v = ((y & 0xFFFF_FFFF) << 32) | (x & 0xFFFF_FFFF);
            if left {
                ((v << n) >> 32) & 0xFFFF_FFFF
            } else {
                (v >> n) & 0xFFFF_FFFF
            }
        }),
    }
}

pub fn exec_bfi(w: u8, regs: &mut [u64], m: u32, d: R, srcs: [R; 4]) {
    let [a, b, c, e] = srcs;
    let av = lane_slice(regs, a);
    let bv = lane_slice(regs, b);
    let cv = lane_slice(regs, c);
    let ev = lane_slice(regs, e);
    for l in 0..32 {
        if m >> l & 1 == 0 {
            continue;
        }
        let pos = cv[l] & 0xFF;
        let len = ev[l] & 0xFF;
        let mut f = bv[l] & mask(w);
        for i in 0..len {
            if pos + i < w as u64 {
                f = (f & !(1 << (pos + i))) | (((av[l] >> i) & 1) << (pos + i));
            }
        }
        regs[d as usize * 32 + l] = f;
    }
}

/// Evaluates one comparison.
#[inline(always)]
pub fn compare(ty: CmpTy, cmp: Cmp, x: u64, y: u64) -> bool {
    match ty {
        CmpTy::Int(w, s) => {
            let (lt, eq) = if s {
                (sext(x, w) < sext(y, w), sext(x, w) == sext(y, w))
            } else {
                (
                    (x & mask(w)) < (y & mask(w)),
                    (x & mask(w)) == (y & mask(w)),
                )
            };
            match cmp {
                Cmp::Eq | Cmp::Equ => eq,
                Cmp::Ne | Cmp::Neu => !eq,
                Cmp::Lt | Cmp::Ltu => lt,
                Cmp::Le | Cmp::Leu => lt || eq,
                Cmp::Gt | Cmp::Gtu => !lt && !eq,
                Cmp::Ge | Cmp::Geu => !lt,
                Cmp::Num => true,
                Cmp::Nan => false,
            }
        }
        CmpTy::Float(fty, ftz) => {
            let (a, b) = match fty {
                FTy::F32 => {
                    let (p, q) = (f32b(x), f32b(y));
                    let (p, q) = if ftz {
                        (sf::ftz32(p), sf::ftz32(q))
                    } else {
                        (p, q)
                    };
                    (p as f64, q as f64)
                }
                FTy::F64 => (f64::from_bits(x), f64::from_bits(y)),
                _ => {
                    let f = fty.half_fmt();
                    (f.to_f64(x & 0xFFFF), f.to_f64(y & 0xFFFF))
                }
            };
            let un = a.is_nan() || b.is_nan();
            match cmp {
                Cmp::Eq => a == b,
                Cmp::Ne => !un && a != b,
                Cmp::Lt => a < b,
                Cmp::Le => a <= b,
                Cmp::Gt => a > b,
                Cmp::Ge => a >= b,
                Cmp::Equ => un || a == b,
                Cmp::Neu => un || a != b,
                Cmp::Ltu => un || a < b,
                Cmp::Leu => un || a <= b,
                Cmp::Gtu => un || a > b,
                Cmp::Geu => un || a >= b,
                Cmp::Num => !un,
                Cmp::Nan => un,
            }
        }
    }
}

fn fmt_of(t: Ty) -> Option<Fmt> {
    Some(match t {
        Ty::F16 => sf::F16,
        Ty::Bf16 => sf::BF16,
        Ty::F32 => sf::F32,
        Ty::F64 => sf::F64,
        Ty::Tf32 => sf::F32,
        _ => return None,
    })
}

/// Rounds a finite f64 to an integral value with an integer rounding mode.
fn round_int(v: f64, r: Rnd) -> f64 {
    match r {
        Rnd::Rn => v.round_ties_even(),
        Rnd::Rna => v.round(),
        Rnd::Rz => v.trunc(),
        Rnd::Rm => v.floor(),
        Rnd::Rp => v.ceil(),
    }
}

/// `cvt` of one value.
pub fn cvt(k: &CvtK, x: u64) -> u64 {
    let from_float = k.from.is_float();
    let to_float = k.to.is_float();
    let tw = k.to.bits() as u8;
    let fw = k.from.bits() as u8;
    let finish_int = |v: u64| -> u64 {
        if k.to.kind() == TyKind::Signed {
            sext(v, tw) as u64 & k.dmask
        } else {
            v & mask(tw)
        }
    };
    let int_range = |t: Ty| -> (i128, i128) {
        let w = t.bits();
        if t.is_signed() {
            (-(1i128 << (w - 1)), (1i128 << (w - 1)) - 1)
        } else {
            (0, (1i128 << w) - 1)
        }
    };
    match (from_float, to_float) {
        (false, false) => {
            let v: i128 = if k.from.is_signed() {
                sext(x, fw) as i128
            } else {
                (x & mask(fw)) as i128
            };
            let v = if k.sat {
                let (lo, hi) = int_range(k.to);
                v.clamp(lo, hi)
            } else {
                v
            };
            finish_int(v as u64)
        }
        (true, false) => {
            let f = fmt_of(k.from).unwrap();
            let mut v = if k.from == Ty::F32 && k.ftz {
                sf::ftz32(f32b(x)) as f64
            } else {
                f.to_f64(x & mask(fw))
            };
            if v.is_nan() {
                return 0;
            }
            v = round_int(v, k.rnd.unwrap_or(Rnd::Rz));
            let (lo, hi) = int_range(k.to);
            let iv = if v <= lo as f64 {
                lo
            } else if v >= hi as f64 {
                hi
            } else {
                v as i128
            };
            finish_int(iv as u64)
        }
        (false, true) => {
            let v: i128 = if k.from.is_signed() {
                sext(x, fw) as i128
            } else {
                (x & mask(fw)) as i128
            };
            let to = fmt_of(k.to).unwrap();
            let r = sf::round_pack(
                v < 0,
                v.unsigned_abs() as u64,
                0,
                false,
                to,
                k.rnd.unwrap_or(Rnd::Rn),
                false,
            );
            let r = if k.to == Ty::Tf32 {
                tf32_from_f32(r as u32, Rnd::Rn)
            } else {
                r
            };
            r & k.dmask
        }
        (true, true) => {
            let from = fmt_of(k.from).unwrap();
            let to = fmt_of(k.to).unwrap();
            let mut v = if k.from == Ty::F32 && k.ftz {
                sf::ftz32(f32b(x)) as f64
            } else {
                from.to_f64(x & mask(fw))
            };
            if k.int_rnd && v.is_finite() {
                v = round_int(v, k.rnd.unwrap_or(Rnd::Rn)).copysign(v);
            }
            if k.relu && (v < 0.0 || (v == 0.0 && v.is_sign_negative())) {
                v = 0.0;
            }
            let mut r = if k.to == Ty::Tf32 {
                tf32_from_f32((v as f32).to_bits(), k.rnd.unwrap_or(Rnd::Rna))
            } else if v.is_nan() {
                to.canonical_nan()
            } else {
                round_f64(
                    v,
                    0.0,
                    to,
                    if k.int_rnd {
                        Rnd::Rn
                    } else {
                        k.rnd.unwrap_or(Rnd::Rn)
                    },
                    k.satfinite,
                )
            };
            if k.sat {
                let rv = to.to_f64(r);
                r = if rv.is_nan() {
                    0
                } else {
                    round_f64(rv.clamp(0.0, 1.0), 0.0, to, Rnd::Rn, false)
                };
            }
            if k.ftz && k.to == Ty::F32 {
                r = sf::ftz32(f32::from_bits(r as u32)).to_bits() as u64;
            }
            r & k.dmask
        }
    }
}

/// Rounds an f32 to tf32 precision, keeping the f32 bit layout (low 13 bits zero).
fn tf32_from_f32(bits: u32, rnd: Rnd) -> u64 {
    let v = f32::from_bits(bits);
    if v.is_nan() {
        return 0x7FFF_FFFF;
    }
    let t = round_f64(v as f64, 0.0, sf::TF32, rnd, false);
    // tf32 encoding: 1 + 8 + 10 bits; widen the fraction back to 23 bits
    ((t >> 18) << 31 | ((t >> 10) & 0xFF) << 23 | (t & 0x3FF) << 13) & 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ck(from: Ty, to: Ty, rnd: Option<Rnd>, int_rnd: bool, sat: bool) -> CvtK {
        CvtK {
            from,
            to,
            rnd,
            int_rnd,
            sat,
            ftz: false,
            relu: false,
            satfinite: false,
            dmask: u64::MAX,
        }
    }

    #[test]
    fn integer_edge_cases() {
        assert_eq!(bfe(0xF0, 4, 4, 32, false), 0xF);
        assert_eq!(bfe(0xF0, 4, 4, 32, true), 0xFFFF_FFFF);
        assert_eq!(prmt(0x33221100, 0x77665544, 0x5410), 0x55441100);
        assert_eq!(prmt(0x000000F0, 0, 0x8888), 0xFFFF_FFFF);
        assert_eq!(mul_hi(0xFFFF_FFFF, 2, 32, false), 1);
        assert_eq!(mul_hi(0xFFFF_FFFF, 2, 32, true), 0xFFFF_FFFF);
        assert_eq!(mul_wide(0xFFFF_FFFF, 0xFFFF_FFFF, 32, true), 1);
    }

    #[test]
    fn float_to_int_saturates_and_rounds() {
        let k = ck(Ty::F32, Ty::S32, Some(Rnd::Rn), true, false);
        assert_eq!(cvt(&k, 2.5f32.to_bits() as u64), 2);
        assert_eq!(cvt(&k, 3.5f32.to_bits() as u64), 4);
        assert_eq!(cvt(&k, (-2.5f32).to_bits() as u64) as u32 as i32, -2);
        assert_eq!(cvt(&k, 1e20f32.to_bits() as u64) as u32, i32::MAX as u32);
        assert_eq!(cvt(&k, f32::NAN.to_bits() as u64), 0);
        let k = ck(Ty::F32, Ty::U8, Some(Rnd::Rz), true, false);
        assert_eq!(cvt(&k, (-3.0f32).to_bits() as u64), 0);
        assert_eq!(cvt(&k, 300.0f32.to_bits() as u64), 255);
    }

    #[test]
    fn fminmax_rules() {
        assert_eq!(fminmax(f64::NAN, 1.0, false, false), Some(1.0));
        assert_eq!(fminmax(f64::NAN, 1.0, false, true), None);
        assert!(fminmax(0.0, -0.0, false, false).unwrap().is_sign_negative());
        assert!(fminmax(-0.0, 0.0, true, false).unwrap().is_sign_positive());
    }
}
