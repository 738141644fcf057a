//! SFU family execution: `ex2`, `lg2`, `sin`, `cos`, `tanh`, `rsqrt` computed in f64 and rounded
//! (more accurate than the hardware's approximations), `rcp` and `sqrt` exactly rounded.

use super::float::{f32_bin, per_half};
use super::lanes::*;
use crate::program::*;
use crate::softfloat::{self as sf, round_f64, Rnd};

pub fn exec_sfu(k: SfuK, regs: &mut [u64], m: u32, d: R, a: R) {
    match k {
        SfuK::Sqrt(fty, mods) => match fty {
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
        SfuK::Rsqrt(fty, ftz) => match fty {
            FTy::F64 => lanes1(regs, m, d, a, |x| {
                (1.0 / f64::from_bits(x).sqrt()).to_bits()
            }),
            _ => lanes1(regs, m, d, a, |x| {
                let v = if ftz { sf::ftz32(f32b(x)) } else { f32b(x) };
                let r = (1.0 / (v as f64).sqrt()) as f32;
                bf32(if ftz { sf::ftz32(r) } else { r })
            }),
        },
        SfuK::Rcp(fty, mods) => match fty {
            FTy::F64 => lanes1(regs, m, d, a, |x| (1.0 / f64::from_bits(x)).to_bits()),
            _ => {
                let one = 1f32;
                lanes1(regs, m, d, a, move |x| {
                    bf32(f32_bin(FOp::Div, mods, one, f32b(x)))
                })
            }
        },
        SfuK::Ex2(fty, ftz) => match fty {
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
        SfuK::Lg2(ftz) => lanes1(regs, m, d, a, |x| {
            let v = if ftz { sf::ftz32(f32b(x)) } else { f32b(x) };
            bf32((v as f64).log2() as f32)
        }),
        SfuK::Sin(ftz) | SfuK::Cos(ftz) => {
            let sin = matches!(k, SfuK::Sin(_));
            lanes1(regs, m, d, a, |x| {
                let v = if ftz { sf::ftz32(f32b(x)) } else { f32b(x) } as f64;
                bf32((if sin { v.sin() } else { v.cos() }) as f32)
            })
        }
        SfuK::Tanh(fty) => match fty {
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
    }
}
