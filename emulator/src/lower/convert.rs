//! Conversion family: `cvt` between integer and float types in every rounding mode (with
//! `.sat`, `.ftz`, `.relu`, `.satfinite`), and the packing `cvt.{f16x2,bf16x2}.f32 d, a, b`.

use super::super::ast;
use super::super::error::EmuError;
use super::super::program::*;
use super::super::softfloat::{self, Rnd};
use super::super::types::Ty;
use super::quals::{rnd_of, Quals};
use super::{mask_of, Lowerer};

impl Lowerer {
    pub(super) fn lower_cvt(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let types = q.types();
        if types.len() != 2 {
            return self.unsupported(&i.opcode);
        }
        let (to, from) = (types[0], types[1]);
        // The integer forms (`.rni`..) end in `i`; remember which one was written.
        let rq = q.take(|s| rnd_of(s).map(|r| (r, s.ends_with('i'))));
        let rnd = rq.map(|(r, _)| r);
        let int_rnd = rq.is_some_and(|(_, i)| i);
        let relu = q.has("relu");
        let satfinite = q.has("satfinite");
        let sat = q.has("sat");
        let ftz = q.has("ftz");
        let o = &i.operands;
        if matches!(to, Ty::F16x2 | Ty::Bf16x2) {
            if from != Ty::F32 || o.len() != 3 {
                return self.unsupported(&i.opcode);
            }
            let fmt = if to == Ty::F16x2 {
                softfloat::F16
            } else {
                softfloat::BF16
            };
            let d = self.dst(&o[0])?;
            let a = self.src(&o[1], Ty::F32)?;
            let b = self.src(&o[2], Ty::F32)?;
            let op = Op::Lane(LaneOp::CvtPack {
                fmt,
                rnd: rnd.unwrap_or(Rnd::Rn),
                relu,
                satfinite,
                d,
                a,
                b,
            });
            return self.push(i, op, Class::Conversion);
        }
        self.ops(i, 2)?;
        if matches!(from, Ty::F16x2 | Ty::Bf16x2 | Ty::B128 | Ty::Pred)
            || to == Ty::Pred
            || to == Ty::B128
        {
            return self.unsupported(&i.opcode);
        }
        let d = self.dst(&o[0])?;
        let dbits = self.reg_bits[d as usize] as u32;
        let a = self.src(&o[1], from)?;
        let k = CvtK {
            from,
            to,
            rnd,
            int_rnd,
            sat,
            ftz,
            relu,
            satfinite,
            dmask: mask_of(dbits.max(to.bits())),
        };
        self.push(i, Op::Lane(LaneOp::Cvt { k, d, a }), Class::Conversion)
    }
}
