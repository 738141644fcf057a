//! `call` to a `.func`, lowered by inlining the callee's body at the call site: its registers
//! get a fresh scope, its parameters and return values are bound to the caller's argument and
//! result variables (per-thread local frame slots), its `.local` variables get a fresh frame
//! slot, and each of its `ret`s branches to the instruction after the call. Semantically this
//! is a call with its own stack frame; recursion (which has no finite inlining) is rejected.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::quals::Quals;
use super::{Lowerer, Scope, VarLoc};

/// Deepest chain of nested calls inlined before the call is treated as recursive.
const MAX_CALL_DEPTH: usize = 16;

impl Lowerer {
    pub(super) fn lower_call(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        q.has("uni");
        let o = &i.operands;
        let (rets, rest) = match o.first() {
            Some(Operand::Vec(r)) => (r.as_slice(), &o[1..]),
            _ => (&[][..], &o[..]),
        };
        let name = match rest.first() {
            Some(Operand::Sym(n)) => n.clone(),
            Some(Operand::Reg(_)) => return self.unsupported("indirect call"),
            _ => return self.bad("call needs a function name"),
        };
        let args: &[Operand] = match rest.get(1) {
            Some(Operand::Vec(a)) => a,
            None => &[],
            Some(_) => return self.bad("call arguments must be a `( .. )` list"),
        };
        if rest.len() > 2 {
            return self.unsupported("call through a prototype");
        }
        if i.guard.is_some() {
            return self.unsupported("predicated call");
        }
        let funcs = self.funcs.clone();
        let Some(f) = funcs.get(&name) else {
            return self.unsupported(&format!("call to `{name}` (no definition in the module)"));
        };
        if self.ret_fixups.len() >= MAX_CALL_DEPTH {
            return self.unsupported(&format!("call to `{name}` (recursion)"));
        }
        if f.params.len() != args.len() || f.ret_params.len() != rets.len() {
            return self.bad(&format!(
                "call to `{name}` passes {} arguments and {} results, it declares {} and {}",
                args.len(),
                rets.len(),
                f.params.len(),
                f.ret_params.len()
            ));
        }
        // Bind the callee's parameter and result names to the caller's variables.
        let mut saved: Vec<(String, Option<VarLoc>)> = Vec::new();
        let bindings = f
            .params
            .iter()
            .zip(args)
            .chain(f.ret_params.iter().zip(rets));
        let mut bound: Vec<(String, VarLoc)> = Vec::new();
        for (decl, actual) in bindings {
            let loc = match actual {
                Operand::Sym(n) | Operand::Reg(n) => match self.vars.get(n) {
                    Some(l @ VarLoc::Local(_)) => *l,
                    _ => return self.bad(&format!("call argument `{n}` is not a .param variable")),
                },
                _ => return self.unsupported("call with an immediate argument"),
            };
            bound.push((decl.name.clone(), loc));
        }
        for (n, loc) in bound {
            saved.push((n.clone(), self.vars.insert(n, loc)));
        }
        let body = f.body.as_ref().expect("definitions only");
        self.scopes.push(Scope::default());
        self.ret_fixups.push(Vec::new());
        let scope = self.next_scope;
        self.next_scope += 1;
        let call_line = self.cur_line;
        let r = self.lower_body(body, scope);
        self.cur_line = call_line;
        let rets_at = self.ret_fixups.pop().unwrap_or_default();
        self.scopes.pop();
        self.unshadow(saved);
        r?;
        let end = self.insts.len() as u32;
        for at in rets_at {
            if let Op::Bra { target } = &mut self.insts[at].op {
                *target = end;
            }
        }
        Ok(())
    }
}
