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
        // Registers hold at most 64 bits here; `.b128` (PTX ISA 8.3, sm_70+) is not implemented.
        if ty.bits() > 64 {
            return self.unsupported(&i.opcode);
        }
        if let Operand::Vec(ds) = &o[0] {
            let n = ds.len();
            let Some(bits) = part_bits(ty, n) else {
                return self.bad("bad vector mov");
            };
            let mut regs = [NONE; 4];
            for (k, d) in ds.iter().enumerate() {
                regs[k] = if *d == Operand::Sink {
                    NONE
                } else {
                    self.dst(d)?
                };
                // PTX ISA "mov": the parts are registers of the part width.
                if regs[k] != NONE && self.reg_bits[regs[k] as usize] as u32 != bits {
                    return self.bad(&format!(
                        "a vector mov unpacking {} bits into {}-bit parts needs {bits}-bit destinations",
                        ty.bits(),
                        bits
                    ));
                }
            }
            let a = self.src(&o[1], ty)?;
            let bits = bits as u8;
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
            let Some(bits) = part_bits(ty, n) else {
                return self.bad("bad vector mov");
            };
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

/// The width of each of the `n` parts of a vector `mov` of type `ty`: 2 or 4 parts of 8, 16 or
/// 32 bits that make up the whole type (PTX ISA "mov": `.b16 {.b8, .b8}`, `.b32 {.b16, .b16}`,
/// `.b64 {.b32, .b32}` or four `.b16`); `None` for any other split.
fn part_bits(ty: Ty, n: usize) -> Option<u32> {
    let bits = ty.bits();
    let part = bits / n.max(1) as u32;
    let ok = matches!(n, 2 | 4) && part * n as u32 == bits && matches!(part, 8 | 16 | 32);
    ok.then_some(part)
}
