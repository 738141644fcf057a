//! SFU family: `ex2`, `lg2`, `sin`, `cos`, `tanh`, `rsqrt` (`.approx`), and `rcp`/`sqrt` in
//! their IEEE (`.rn`..) and `.approx` forms.

use super::super::ast;
use super::super::error::EmuError;
use super::super::program::*;
use super::super::softfloat::Rnd;
use super::quals::{rnd_of, Quals};
use super::{float_class, Lowerer};

impl Lowerer {
    pub(super) fn lower_sfu(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let base = q.base();
        self.ops(i, 2)?;
        let ty = self.one_ty(q)?;
        let fty = match FTy::from_ty(ty) {
            Some(f) => f,
            None => return self.bad("float type expected"),
        };
        let ftz = q.has("ftz");
        let approx = q.has("approx");
        let full = q.has("full");
        let rnd = q.take(rnd_of).unwrap_or(Rnd::Rn);
        if rnd == Rnd::Rna {
            return self.unsupported(&i.opcode);
        }
        let mods = FMods {
            rnd,
            ftz,
            sat: false,
            nan: false,
            approx: approx || full,
        };
        let k = match (base, fty) {
            ("ex2", _) if approx => SfuK::Ex2(fty, ftz),
            ("lg2", FTy::F32) if approx => SfuK::Lg2(ftz),
            ("sin", FTy::F32) if approx => SfuK::Sin(ftz),
            ("cos", FTy::F32) if approx => SfuK::Cos(ftz),
            ("tanh", _) if approx => SfuK::Tanh(fty),
            ("rcp", FTy::F32 | FTy::F64) => {
                if !approx && fty == FTy::F64 && mods.rnd != Rnd::Rn {
                    return self.unsupported(&i.opcode);
                }
                SfuK::Rcp(fty, mods)
            }
            ("sqrt", FTy::F32 | FTy::F64) => {
                if !approx && fty == FTy::F64 && mods.rnd != Rnd::Rn {
                    return self.unsupported(&i.opcode);
                }
                SfuK::Sqrt(fty, mods)
            }
            ("rsqrt", FTy::F32 | FTy::F64) if approx => SfuK::Rsqrt(fty, ftz),
            _ => return self.unsupported(&i.opcode),
        };
        let d = self.dst(&i.operands[0])?;
        let a = self.src(&i.operands[1], ty)?;
        let class = if approx || matches!(base, "ex2" | "lg2" | "sin" | "cos" | "tanh") {
            Class::Sfu
        } else {
            float_class(fty)
        };
        self.push(i, Op::Lane(LaneOp::Sfu { k, d, a }), class)
    }
}
