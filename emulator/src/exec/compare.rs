//! Comparison family execution: `setp`/`set` compares (integer widths and signedness, float
//! ordered/unordered forms) with the optional boolean combiner.

use super::float::ftz_h;
use super::lanes::*;
use super::{lanes, Warp};
use crate::program::*;
use crate::softfloat as sf;

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
                    let (p, q) = if ftz {
                        (ftz_h(x & 0xFFFF, f), ftz_h(y & 0xFFFF, f))
                    } else {
                        (x & 0xFFFF, y & 0xFFFF)
                    };
                    (f.to_f64(p), f.to_f64(q))
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

/// `setp`/`set` for the active lanes: `regs` are the destination, the negated destination (or
/// `NONE`), and the two operands. For f16x2/bf16x2 operands (PTX ISA 9.7.4 "Half Precision
/// Comparison Instructions: set, setp") the two halves compare separately: `p` (and the low
/// half of a `set` result) from the low halves, `q` (the high half) from the high halves, each
/// combined with `c` by the boolean operation.
pub(super) fn exec_setp(
    w: &mut Warp,
    active: u32,
    ty: CmpTy,
    cmp: Cmp,
    out: SetOut,
    regs: [R; 4],
    comb: Option<(BoolOp, R, bool)>,
) {
    let [d, dn, a, b] = regs;
    let x2 = matches!(ty, CmpTy::Float(FTy::F16x2 | FTy::Bf16x2, _));
    for l in lanes(active) {
        let (av, bv) = (w.r(a, l), w.r(b, l));
        let t0 = compare(ty, cmp, av, bv);
        let t1 = if x2 {
            compare(ty, cmp, av >> 16, bv >> 16)
        } else {
            !t0
        };
        let (p, q) = match comb {
            None => (t0, t1),
            Some((op, c, neg)) => {
                let cv = (w.r(c, l) & 1 != 0) != neg;
                let f = |x: bool| match op {
                    BoolOp::And => x && cv,
                    BoolOp::Or => x || cv,
                    BoolOp::Xor => x != cv,
                };
                (f(t0), f(t1))
            }
        };
        let enc = |x: bool| match out {
            SetOut::Pred => x as u64,
            SetOut::Mask => {
                if x {
                    0xFFFF_FFFF
                } else {
                    0
                }
            }
            SetOut::F32 => {
                if x {
                    1f32.to_bits() as u64
                } else {
                    0
                }
            }
            SetOut::HalfOnes(one) => {
                if x {
                    one as u64
                } else {
                    0
                }
            }
            SetOut::HalfMask => {
                if x {
                    0xFFFF
                } else {
                    0
                }
            }
        };
        match out {
            SetOut::HalfOnes(_) | SetOut::HalfMask => w.set(d, l, enc(p) | (enc(q) << 16)),
            _ => {
                w.set(d, l, enc(p));
                if dn != NONE {
                    w.set(dn, l, enc(q));
                }
            }
        }
    }
}
