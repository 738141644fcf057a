//! Float family: f64/f32/f16/bf16 and packed f16x2/bf16x2 arithmetic (`add`, `sub`, `mul`,
//! `div`, `min`, `max` incl. `.NaN`, `copysign`, `fma`/`mad`, `neg`, `abs`) with rounding,
//! `.ftz` and `.sat` modifiers.

use super::super::ast;
use super::super::error::EmuError;
use super::super::program::*;
use super::super::softfloat::Rnd;
use super::quals::{rnd_of, Quals};
use super::{float_class, Lowerer};

impl Lowerer {
    /// Consumes the float modifiers (`.rn`.., `.ftz`, `.sat`, `.NaN`, `.approx`/`.full`).
    pub(super) fn fmods(&self, q: &mut Quals, fty: FTy) -> Result<FMods, EmuError> {
        let rnd = q.take(rnd_of).unwrap_or(Rnd::Rn);
        if rnd == Rnd::Rna {
            return self.unsupported(&format!(".rna on {fty:?}"));
        }
        let approx = q.has("approx");
        let full = q.has("full");
        Ok(FMods {
            rnd,
            ftz: q.has("ftz"),
            sat: q.has("sat"),
            nan: q.has("NaN"),
            approx: approx || full,
        })
    }

    pub(super) fn lower_float(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let base = q.base();
        let ty = self.one_ty(q)?;
        let fty = FTy::from_ty(ty).expect("dispatched on a float type");
        let o = &i.operands;
        let class = float_class(fty);
        match base {
            "neg" | "abs" => {
                self.ops(i, 2)?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let k = if base == "neg" { FUnK::Neg } else { FUnK::Abs };
                let ftz = q.has("ftz");
                self.push(
                    i,
                    Op::Lane(LaneOp::FUn {
                        k,
                        ty: fty,
                        ftz,
                        d,
                        a,
                    }),
                    class,
                )
            }
            "mad" | "fma" => {
                self.ops(i, 4)?;
                let mods = self.fmods(q, fty)?;
                if fty == FTy::F64 && mods.rnd != Rnd::Rn {
                    return self.unsupported(&i.opcode);
                }
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let b = self.src(&o[2], ty)?;
                let c = self.src(&o[3], ty)?;
                self.push(
                    i,
                    Op::Lane(LaneOp::Fma {
                        ty: fty,
                        mods,
                        d,
                        a,
                        b,
                        c,
                    }),
                    class,
                )
            }
            _ => {
                self.ops(i, 3)?;
                let op = match base {
                    "add" => FOp::Add,
                    "sub" => FOp::Sub,
                    "mul" => FOp::Mul,
                    "div" => FOp::Div,
                    "min" => FOp::Min,
                    "max" => FOp::Max,
                    _ => FOp::Copysign,
                };
                let mods = self.fmods(q, fty)?;
                if fty == FTy::F64 && op == FOp::Div && mods.rnd != Rnd::Rn {
                    return self.unsupported(&i.opcode);
                }
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let b = self.src(&o[2], ty)?;
                self.push(
                    i,
                    Op::Lane(LaneOp::FBin {
                        op,
                        ty: fty,
                        mods,
                        d,
                        a,
                        b,
                    }),
                    class,
                )
            }
        }
    }
}
