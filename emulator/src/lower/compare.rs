//! Comparison and selection family: `setp` and `set` (with boolean combiners and the `p|q`
//! destination pair), `selp`, `slct`.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::Ty;
use super::quals::Quals;
use super::{float_class, Lowerer};

fn cmp_of(q: &str) -> Option<Cmp> {
    Some(match q {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" | "lo" => Cmp::Lt,
        "le" | "ls" => Cmp::Le,
        "gt" | "hi" => Cmp::Gt,
        "ge" | "hs" => Cmp::Ge,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

impl Lowerer {
    /// `setp`, or `set` (which writes a value instead of a predicate).
    pub(super) fn lower_setp(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let is_set = q.base() == "set";
        self.ops(i, 3)?;
        let cmp = match q.take(cmp_of) {
            Some(c) => c,
            None => return self.bad("comparison operator missing"),
        };
        let boolop = q.one_of(&[
            ("and", BoolOp::And),
            ("or", BoolOp::Or),
            ("xor", BoolOp::Xor),
        ]);
        let types = q.types();
        let (out, sty) = if is_set {
            if types.len() != 2 {
                return self.bad("set needs destination and source types");
            }
            let x2 = matches!(types[1], Ty::F16x2 | Ty::Bf16x2);
            let out = match (types[0], x2) {
                (Ty::F32, false) => SetOut::F32,
                // 1.0 in f16 and bf16.
                (Ty::F16x2, true) => SetOut::HalfOnes(0x3C00),
                (Ty::Bf16x2, true) => SetOut::HalfOnes(0x3F80),
                (Ty::U32 | Ty::S32, true) => SetOut::HalfMask,
                (Ty::F16x2 | Ty::Bf16x2, false) => return self.unsupported(&i.opcode),
                _ => SetOut::Mask,
            };
            (out, types[1])
        } else {
            match types.last() {
                Some(t) => (SetOut::Pred, *t),
                None => return self.bad("setp without type"),
            }
        };
        let x2 = matches!(sty, Ty::F16x2 | Ty::Bf16x2);
        if x2 && !is_set && !matches!(i.operands[0], Operand::Pair(..)) {
            return self.bad("setp on f16x2/bf16x2 needs a p|q destination pair");
        }
        let cty = match FTy::from_ty(sty) {
            Some(f) => CmpTy::Float(f, q.has("ftz")),
            None => CmpTy::Int(sty.bits() as u8, sty.is_signed()),
        };
        let o = &i.operands;
        let (d, dn) = self.dst_pair(&o[0])?;
        let a = self.src(&o[1], sty)?;
        let b = self.src(&o[2], sty)?;
        let comb = match (boolop, o.get(3)) {
            (Some(op), Some(Operand::Not(n))) => {
                Some((op, self.src(&Operand::Reg(n.clone()), Ty::Pred)?, true))
            }
            (Some(op), Some(c)) => Some((op, self.src(c, Ty::Pred)?, false)),
            (None, None) => None,
            _ => return self.bad("boolean combiner and predicate operand must come together"),
        };
        let class = match cty {
            CmpTy::Float(f, _) => float_class(f),
            _ => Class::Int,
        };
        self.push(
            i,
            Op::Setp {
                ty: cty,
                cmp,
                out,
                d,
                dn,
                a,
                b,
                comb,
            },
            class,
        )
    }

    pub(super) fn lower_select(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let base = q.base();
        self.ops(i, 4)?;
        let types = q.types();
        let dty = match types.first() {
            Some(t) => *t,
            None => return self.bad("missing type"),
        };
        let o = &i.operands;
        let d = self.dst(&o[0])?;
        let a = self.src(&o[1], dty)?;
        let b = self.src(&o[2], dty)?;
        let class = match FTy::from_ty(dty) {
            Some(f) => float_class(f),
            None => Class::Int,
        };
        if base == "selp" {
            let c = self.src(&o[3], Ty::Pred)?;
            return self.push(
                i,
                Op::Lane(LaneOp::Tern {
                    k: TerK::Selp,
                    d,
                    a,
                    b,
                    c,
                }),
                class,
            );
        }
        if types.len() != 2 {
            return self.bad("slct needs destination and operand types");
        }
        if types[1] == Ty::F32 {
            let c = self.src(&o[3], Ty::F32)?;
            let ftz = q.has("ftz");
            self.push(i, Op::Lane(LaneOp::SlctF32 { ftz, d, a, b, c }), class)
        } else {
            let c = self.src(&o[3], Ty::S32)?;
            self.push(
                i,
                Op::Lane(LaneOp::Tern {
                    k: TerK::SlctS32,
                    d,
                    a,
                    b,
                    c,
                }),
                class,
            )
        }
    }
}
