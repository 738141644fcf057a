//! Data movement family: `mov` between registers, with vector pack/unpack forms and the
//! `%clock` counters.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::Ty;
use super::quals::Quals;
use super::{mask_of, Lowerer};

impl Lowerer {
    pub(super) fn lower_mov(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        self.ops(i, 2)?;
        let ty = self.one_ty(q)?;
        let o = &i.operands;
        if let Operand::Vec(ds) = &o[0] {
            let n = ds.len();
            if n > 4 {
                return self.bad("vector mov with more than 4 parts");
            }
            let mut regs = [NONE; 4];
            for (k, d) in ds.iter().enumerate() {
                regs[k] = if *d == Operand::Sink {
                    NONE
                } else {
                    self.dst(d)?
                };
            }
            let a = self.src(&o[1], ty)?;
            let bits = (ty.bits() / n as u32) as u8;
            return self.push(
                i,
                Op::Unpack {
                    ds: regs,
                    n: n as u8,
                    bits,
                    a,
                },
                Class::Other,
            );
        }
        let d = self.dst(&o[0])?;
        if let Operand::Vec(ps) = &o[1] {
            let n = ps.len();
            if n == 0 || n > 4 {
                return self.bad("bad vector mov");
            }
            let bits = ty.bits() / n as u32;
            let pty = match bits {
                8 => Ty::B8,
                16 => Ty::B16,
                32 => Ty::B32,
                _ => return self.bad("bad vector mov"),
            };
            let mut parts = [NONE; 4];
            for (k, p) in ps.iter().enumerate() {
                parts[k] = self.src(p, pty)?;
            }
            return self.push(
                i,
                Op::Pack {
                    d,
                    parts,
                    n: n as u8,
                    bits: bits as u8,
                },
                Class::Other,
            );
        }
        if let Operand::Reg(n) = &o[1] {
            if n.starts_with("%clock") || n.starts_with("%globaltimer") {
                return self.push(i, Op::Clock { d }, Class::Other);
            }
        }
        let a = self.src(&o[1], ty)?;
        let mask = if ty == Ty::Pred {
            1
        } else {
            mask_of(ty.bits())
        };
        self.push(i, Op::Mov { d, a, mask }, Class::Other)
    }
}
