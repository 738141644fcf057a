//! Integer family: integer and bitwise arithmetic (`add`/`sub` incl. `.sat`, `mul.lo/.hi/.wide`,
//! `mad.lo/.hi/.wide`, `div`, `rem`, `min`, `max`, `neg`, `abs`, `not`, `cnot`, `popc`, `clz`,
//! `brev`, `bfind(.shiftamt)`, `and`/`or`/`xor`, `shl`/`shr`, `bfe`, `bfi`, `prmt`, `shf`).

use super::super::ast;
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::Ty;
use super::quals::Quals;
use super::Lowerer;

impl Lowerer {
    pub(super) fn lower_int(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let base = q.base();
        let ty = self.one_ty(q)?;
        let o = &i.operands;
        let w = if ty == Ty::Pred { 1 } else { ty.bits() as u8 };
        let s = ty.is_signed();
        match base {
            "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" => {
                self.ops(i, 3)?;
                let sat = q.has("sat");
                if sat && ty != Ty::S32 {
                    return self.unsupported(&i.opcode);
                }
                let k = match base {
                    "add" if sat => BinK::AddSat,
                    "sub" if sat => BinK::SubSat,
                    "add" => BinK::Add(w),
                    "sub" => BinK::Sub(w),
                    "mul" if q.has("hi") => BinK::MulHi(w, s),
                    "mul" if q.has("wide") => BinK::MulWide(w, s),
                    "mul" => {
                        q.has("lo");
                        BinK::MulLo(w)
                    }
                    "div" => BinK::Div(w, s),
                    "rem" => BinK::Rem(w, s),
                    "min" => BinK::Min(w, s),
                    _ => BinK::Max(w, s),
                };
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let b = self.src(&o[2], ty)?;
                self.push(i, Op::Lane(LaneOp::Bin { k, d, a, b }), Class::Int)
            }
            "mad" => {
                self.ops(i, 4)?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let b = self.src(&o[2], ty)?;
                let (k, cty) = if q.has("hi") {
                    (TerK::MadHi(w, s), ty)
                } else if q.has("wide") {
                    let cty = match (w, s) {
                        (16, true) => Ty::S32,
                        (16, false) => Ty::U32,
                        (_, true) => Ty::S64,
                        _ => Ty::U64,
                    };
                    (TerK::MadWide(w, s), cty)
                } else {
                    q.has("lo");
                    (TerK::MadLo(w), ty)
                };
                let c = self.src(&o[3], cty)?;
                self.push(i, Op::Lane(LaneOp::Tern { k, d, a, b, c }), Class::Int)
            }
            "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" => {
                self.ops(i, 2)?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let k = match base {
                    "neg" => UnK::Neg(w),
                    "abs" => UnK::Abs(w),
                    "not" => UnK::Not(w),
                    "cnot" => UnK::Cnot,
                    "popc" => UnK::Popc(w),
                    "clz" => UnK::Clz(w),
                    "brev" => UnK::Brev(w),
                    _ => UnK::Bfind(w, s, q.has("shiftamt")),
                };
                self.push(i, Op::Lane(LaneOp::Un { k, d, a }), Class::Int)
            }
            "and" | "or" | "xor" | "shl" | "shr" => {
                self.ops(i, 3)?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let (k, bty) = match base {
                    "and" => (BinK::And, ty),
                    "or" => (BinK::Or, ty),
                    "xor" => (BinK::Xor, ty),
                    "shl" => (BinK::Shl(w), Ty::U32),
                    _ => (BinK::Shr(w, s), Ty::U32),
                };
                let b = self.src(&o[2], bty)?;
                self.push(i, Op::Lane(LaneOp::Bin { k, d, a, b }), Class::Int)
            }
            "bfe" | "prmt" | "shf" => {
                self.ops(i, 4)?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let k = match base {
                    "bfe" => TerK::Bfe(w, s),
                    // Only the default (generic byte-select) mode; `.f4e`, `.b4e`, ... stay
                    // unconsumed and are rejected.
                    "prmt" => TerK::Prmt,
                    _ => {
                        let left = q.has("l");
                        if !left && !q.has("r") {
                            return self.bad("shf needs .l or .r");
                        }
                        let clamp = q.has("clamp");
                        if !clamp && !q.has("wrap") {
                            return self.bad("shf needs .clamp or .wrap");
                        }
                        TerK::Shf { left, clamp }
                    }
                };
                let bty = if base == "bfe" { Ty::U32 } else { ty };
                let b = self.src(&o[2], bty)?;
                let c = self.src(&o[3], Ty::U32)?;
                self.push(i, Op::Lane(LaneOp::Tern { k, d, a, b, c }), Class::Int)
            }
            _ => {
                // bfi
                self.ops(i, 5)?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let b = self.src(&o[2], ty)?;
                let c = self.src(&o[3], Ty::U32)?;
                let e = self.src(&o[4], Ty::U32)?;
                self.push(i, Op::Bfi { w, d, a, b, c, e }, Class::Int)
            }
        }
    }
}
