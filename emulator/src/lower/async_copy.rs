//! Async-copy family: `cp.async.{ca,cg}.shared.global` (with src-size / ignore-src and
//! `.L2::cache_hint`), `cp.async.commit_group`, `cp.async.wait_group`, `cp.async.wait_all`.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::{Space, Ty};
use super::quals::Quals;
use super::Lowerer;

impl Lowerer {
    pub(super) fn lower_cp(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        if q.at(0) != Some("async") {
            return self.unsupported(&i.opcode);
        }
        q.has("async");
        if q.has("commit_group") {
            return self.push(i, Op::CpCommit, Class::Sync);
        }
        if q.has("wait_group") {
            self.ops(i, 1)?;
            let n = match i.operands[0] {
                Operand::Int(v) => v as u32,
                _ => return self.bad("wait_group needs an immediate"),
            };
            return self.push(i, Op::CpWait { n }, Class::Sync);
        }
        if q.has("wait_all") {
            self.push(i, Op::CpCommit, Class::Sync)?;
            return self.push(i, Op::CpWait { n: 0 }, Class::Sync);
        }
        if q.one_of(&[("ca", ()), ("cg", ())]).is_none() {
            return self.unsupported(&i.opcode);
        }
        let shared = q.space() == Some(Space::Shared);
        let global = q.space() == Some(Space::Global);
        if !shared || !global {
            return self.unsupported(&i.opcode);
        }
        let hint = q.has("L2::cache_hint");
        // Prefetch-size hints (`.L2::64B`, ...).
        q.ignore(|s| s.starts_with("L2::") && s.ends_with('B'));
        self.ops(i, 3)?;
        let o = &i.operands;
        let dst = self.addr_in(&o[0], Space::Shared)?;
        let src = self.addr_in(&o[1], Space::Global)?;
        let cp = match o[2] {
            Operand::Int(v) if v == 4 || v == 8 || v == 16 => v as u8,
            _ => return self.bad("cp.async cp-size must be 4, 8 or 16"),
        };
        let mut extra: Vec<&Operand> = o[3..].iter().collect();
        if hint {
            extra.pop();
        }
        let (mut src_size, mut ignore_src) = (NONE, NONE);
        if let Some(x) = extra.first() {
            let is_pred = match x {
                Operand::Reg(n) | Operand::Sym(n) => self
                    .lookup_reg(n)
                    .is_some_and(|r| self.reg_bits[r as usize] == 1),
                Operand::Not(_) => return self.unsupported("cp.async with negated ignore-src"),
                _ => false,
            };
            if is_pred {
                ignore_src = self.src(x, Ty::Pred)?;
            } else {
                src_size = self.src(x, Ty::U32)?;
            }
        }
        self.push(
            i,
            Op::CpAsync(CpAsyncOp {
                dst,
                src,
                cp,
                src_size,
                ignore_src,
                dst_generic: false,
            }),
            Class::MemGlobal,
        )
    }
}
