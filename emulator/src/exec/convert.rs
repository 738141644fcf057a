//! Conversion family execution: `cvt` between all integer and float types in every rounding
//! mode, the f16x2/bf16x2 packing form, and `cvta` address-window arithmetic.

use super::lanes::*;
use crate::program::*;
use crate::softfloat::{self as sf, round_f64, Fmt, Rnd};
use crate::types::{Ty, TyKind};

pub fn exec_cvt(k: &CvtK, regs: &mut [u64], m: u32, d: R, a: R) {
    lanes1(regs, m, d, a, |x| cvt(k, x))
}

#[allow(clippy::too_many_arguments)]
pub fn exec_cvt_pack(
    fmt: Fmt,
    rnd: Rnd,
    relu: bool,
    satfinite: bool,
    regs: &mut [u64],
    m: u32,
    d: R,
    a: R,
    b: R,
) {
    lanes2(regs, m, d, a, b, |x, y| {
        let cv = |v: u64| -> u64 {
            let f = f32b(v) as f64;
            let f = if relu && f < 0.0 { 0.0 } else { f };
            round_f64(f, 0.0, fmt, rnd, satfinite) & 0xFFFF
        };
        (cv(x) << 16) | cv(y)
    })
}

pub fn exec_cvta(to_space: bool, window: u64, dmask: u64, regs: &mut [u64], m: u32, d: R, a: R) {
    lanes1(regs, m, d, a, |x| {
        if window == 0 {
            x & dmask
        } else if to_space {
            x.wrapping_sub(window) & dmask
        } else {
            x.wrapping_add(window) & dmask
        }
    })
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
}
