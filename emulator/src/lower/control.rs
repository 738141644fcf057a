//! Control family: `bra` (resolved to instruction indices after the body is lowered), `ret`,
//! `exit`, `trap`, `brkpt`.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::quals::Quals;
use super::Lowerer;

impl Lowerer {
    pub(super) fn lower_control(
        &mut self,
        i: &ast::Instr,
        q: &mut Quals,
        scope_chain: &[u32],
    ) -> Result<(), EmuError> {
        // `.uni` only promises the branch is not divergent; the scheduler handles either case.
        q.has("uni");
        match q.base() {
            "bra" => {
                self.ops(i, 1)?;
                let name = match &i.operands[0] {
                    Operand::Sym(n) | Operand::Reg(n) => n.clone(),
                    _ => return self.bad("bra needs a label"),
                };
                let at = self.insts.len();
                self.fixups.push((at, scope_chain.to_vec(), name, i.line));
                self.push(i, Op::Bra { target: 0 }, Class::Control)
            }
            // Inside an inlined `.func`, `ret` continues after the call.
            "ret" if !self.ret_fixups.is_empty() => {
                let at = self.insts.len();
                self.ret_fixups.last_mut().unwrap().push(at);
                self.push(i, Op::Bra { target: 0 }, Class::Control)
            }
            "ret" | "exit" => self.push(i, Op::Exit, Class::Control),
            _ => self.push(i, Op::Trap, Class::Control),
        }
    }
}
