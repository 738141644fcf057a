//! Lowering: syntax tree (`ast.rs`) to executable [`Program`]s, one per `.entry`. This file
//! resolves register names (with nested `{ }` scopes) to dense indices, turns immediates, special
//! registers and variable addresses into pre-loaded registers, lays out shared/local/param space,
//! resolves labels, and routes each instruction to the lowering of its family:
//!
//! | file            | family                                                        |
//! |-----------------|---------------------------------------------------------------|
//! | `int.rs`        | integer and bitwise arithmetic (`add`.. `bfi`, integer `mad`)   |
//! | `float.rs`      | f64/f32/f16/bf16(x2) arithmetic, `fma`, float `neg`/`abs`       |
//! | `sfu.rs`        | `ex2`, `lg2`, `rcp`, `sqrt`, `rsqrt`, `sin`, `cos`, `tanh`      |
//! | `compare.rs`    | `setp`, `set`, `selp`, `slct`                                   |
//! | `convert.rs`    | `cvt`                                                         |
//! | `data.rs`       | `mov` (incl. pack/unpack, `%clock`)                            |
//! | `memory.rs`     | `ld`, `st`, `atom`, `red`, `cvta`, `mapa`, prefetch, cache hints |
//! | `async_copy.rs` | `cp.async` and its groups                                      |
//! | `bulk.rs`       | `cp.async.bulk*` (bulk and TMA copies), `prefetch.tensormap`   |
//! | `mbarrier.rs`   | `mbarrier.*`                                                  |
//! | `sync.rs`       | `bar`/`barrier`, `membar`/`fence`, `nanosleep`                 |
//! | `warp.rs`       | `shfl`, `vote`, `match`, `redux`, `activemask`                 |
//! | `tensor.rs`     | `mma`, `ldmatrix`, `stmatrix`                                 |
//! | `wgmma.rs`      | `wgmma.mma_async`, `wgmma.fence`/`commit_group`/`wait_group`  |
//! | `control.rs`    | `bra`, `ret`, `exit`, `trap`                                  |
//! | `call.rs`       | `call` to a `.func`: inlined at the call site                  |
//!
//! Every family lowering consumes the qualifiers it implements through [`Quals`]; a qualifier
//! left unconsumed rejects the instruction with [`EmuError::Unsupported`] and its PTX line, as
//! does any opcode no family claims. Adding a family is a new file plus one dispatch line here.

mod async_copy;
mod bulk;
mod call;
mod compare;
mod control;
mod convert;
mod data;
mod float;
mod int;
mod mbarrier;
mod memory;
mod quals;
mod sfu;
mod sync;
mod tensor;
mod warp;
mod wgmma;

use std::collections::HashMap;
use std::sync::Arc;

use super::ast::{self, Init, Operand, Stmt};
use super::error::EmuError;
use super::program::*;
use super::types::{Space, Ty, TyKind};
use super::ParamDecl;
use quals::Quals;

#[derive(Clone, Copy, Debug)]
enum VarLoc {
    Shared(u32),
    Local(u32),
    Param(u32),
    Global(usize),
}

struct Lowerer {
    lines: Arc<Vec<String>>,
    scopes: Vec<HashMap<String, R>>,
    reg_bits: Vec<u8>,
    consts: HashMap<u64, R>,
    const_list: Vec<(R, u64)>,
    specials: HashMap<String, R>,
    special_list: Vec<(R, Special)>,
    vars: HashMap<String, VarLoc>,
    global_vars: Vec<GlobalVar>,
    relocs: Vec<SymbolReloc>,
    reloc_regs: HashMap<(usize, i64), R>,
    insts: Vec<Inst>,
    /// (instruction index, scope chain, label) of branches to patch.
    fixups: Vec<(usize, Vec<u32>, String, u32)>,
    labels: HashMap<(u32, String), u32>,
    zero: R,
    cur_line: u32,
    /// Bytes of local space laid out so far (entry `.local` variables, then call frames).
    local_size: u32,
    /// Next id for a `{ }` scope (label namespaces).
    next_scope: u32,
    /// The module's `.func` definitions, by name, for `call`.
    funcs: Arc<HashMap<String, ast::Func>>,
    /// Per inlined call being lowered (innermost last): indices of the branches its `ret`s
    /// became, patched to the end of the inlined body.
    ret_fixups: Vec<Vec<usize>>,
    /// Backing store of the [`RegList`]s in lowered instructions (`Program::reg_lists`).
    reg_lists: Vec<R>,
}

fn mask_of(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Lowers every `.entry` of the module.
/// Lowers every `.entry` of the module independently: an entry that uses something the
/// emulator does not implement yields its error without affecting the others.
pub fn lower_module(m: &ast::Module, src: &str) -> Vec<(String, Result<Program, EmuError>)> {
    let lines: Arc<Vec<String>> = Arc::new(src.lines().map(|l| l.to_string()).collect());
    let funcs: Arc<HashMap<String, ast::Func>> = Arc::new(
        m.funcs
            .iter()
            .filter(|f| !f.is_entry && f.body.is_some())
            .map(|f| (f.name.clone(), f.clone()))
            .collect(),
    );
    m.funcs
        .iter()
        .filter(|f| f.is_entry)
        .map(|f| {
            (
                f.name.clone(),
                lower_entry(m, f, lines.clone(), funcs.clone()),
            )
        })
        .collect()
}

fn lower_entry(
    m: &ast::Module,
    f: &ast::Func,
    lines: Arc<Vec<String>>,
    funcs: Arc<HashMap<String, ast::Func>>,
) -> Result<Program, EmuError> {
    let mut l = Lowerer {
        lines,
        scopes: vec![HashMap::new()],
        reg_bits: Vec::new(),
        consts: HashMap::new(),
        const_list: Vec::new(),
        specials: HashMap::new(),
        special_list: Vec::new(),
        vars: HashMap::new(),
        global_vars: Vec::new(),
        relocs: Vec::new(),
        reloc_regs: HashMap::new(),
        insts: Vec::new(),
        fixups: Vec::new(),
        labels: HashMap::new(),
        zero: 0,
        cur_line: f.line,
        local_size: 0,
        next_scope: 1,
        funcs,
        ret_fixups: Vec::new(),
        reg_lists: Vec::new(),
    };
    l.zero = l.constant(0);

    // Parameter space layout.
    let mut params = Vec::new();
    let mut poff = 0u32;
    for p in &f.params {
        let align = p.effective_align().max(1);
        poff = poff.div_ceil(align) * align;
        l.vars.insert(p.name.clone(), VarLoc::Param(poff));
        params.push(ParamDecl {
            name: p.name.clone(),
            offset: poff,
            size: p.size() as u32,
            align,
        });
        poff += p.size() as u32;
    }
    let body = f
        .body
        .as_ref()
        .ok_or_else(|| EmuError::parse(f.line, &f.name, "entry without body"))?;

    // Shared layout: module-scope statics, then function-scope statics, then dynamic.
    let mut soff = 0u32;
    let mut dyn_align = 16u32;
    let mut externs = Vec::new();
    let mut place_shared = |l: &mut Lowerer, v: &ast::VarDecl, soff: &mut u32| {
        if v.is_extern || v.dims.contains(&None) {
            dyn_align = dyn_align.max(v.effective_align());
            externs.push(v.name.clone());
        } else {
            let a = v.effective_align().max(1);
            *soff = soff.div_ceil(a) * a;
            l.vars.insert(v.name.clone(), VarLoc::Shared(*soff));
            *soff += v.size() as u32;
        }
    };
    // Module-scope and function-scope `.global` / `.const` variables: one initialised image each.
    let place_global = |l: &mut Lowerer, v: &ast::VarDecl| {
        let idx = l.global_vars.len();
        l.global_vars.push(GlobalVar {
            size: v.size(),
            init: init_bytes(v),
        });
        l.vars.insert(v.name.clone(), VarLoc::Global(idx));
    };
    for v in &m.vars {
        match v.space {
            Space::Shared => place_shared(&mut l, v, &mut soff),
            Space::Global | Space::Const => place_global(&mut l, v),
            _ => {}
        }
    }
    let mut loff = 0u32;
    for s in body {
        if let Stmt::Var(v) = s {
            match v.space {
                Space::Shared => place_shared(&mut l, v, &mut soff),
                Space::Local => {
                    let a = v.effective_align().max(1);
                    loff = loff.div_ceil(a) * a;
                    l.vars.insert(v.name.clone(), VarLoc::Local(loff));
                    loff += v.size() as u32;
                }
                Space::Global | Space::Const => place_global(&mut l, v),
                // Call arguments and results: laid out where they are declared (pass 2).
                Space::Param => {}
                _ => {
                    return Err(EmuError::Unsupported {
                        line: v.line,
                        opcode: format!(".{} variable in function body", v.space.name()),
                        text: l.line_text(v.line),
                        detail: String::new(),
                    })
                }
            }
        }
    }
    let dyn_off = soff.div_ceil(dyn_align) * dyn_align;
    for name in externs {
        l.vars.insert(name, VarLoc::Shared(dyn_off));
    }

    l.local_size = loff;
    l.lower_body(body, 0)?;
    // Falling off the end of the entry is a return.
    l.insts.push(Inst {
        op: Op::Exit,
        guard: NONE,
        guard_neg: false,
        line: f.line,
        class: Class::Control,
    });
    for (at, chain, name, line) in std::mem::take(&mut l.fixups) {
        let target = chain
            .iter()
            .rev()
            .find_map(|s| l.labels.get(&(*s, name.clone())))
            .copied()
            .ok_or_else(|| {
                EmuError::parse(line, &l.line_text(line), format!("unknown label `{name}`"))
            })?;
        if let Op::Bra { target: t } = &mut l.insts[at].op {
            *t = target;
        }
    }
    Ok(Program {
        name: f.name.clone(),
        insts: l.insts,
        nregs: l.reg_bits.len(),
        consts: l.const_list,
        specials: l.special_list,
        relocs: l.relocs,
        global_vars: l.global_vars,
        param_size: poff,
        params,
        static_smem: soff,
        dyn_smem_offset: dyn_off,
        local_size: l.local_size,
        reg_lists: l.reg_lists,
        source_lines: l.lines,
    })
}

fn init_bytes(v: &ast::VarDecl) -> Vec<u8> {
    let mut out = Vec::new();
    let sz = v.ty.bytes() as usize;
    for i in &v.init {
        let raw = match *i {
            Init::Int(x) => x,
            Init::F32(b) => {
                if v.ty == Ty::F64 {
                    (f32::from_bits(b) as f64).to_bits()
                } else {
                    b as u64
                }
            }
            Init::F64(b) => {
                if v.ty == Ty::F32 {
                    (f64::from_bits(b) as f32).to_bits() as u64
                } else {
                    b
                }
            }
        };
        out.extend_from_slice(&raw.to_le_bytes()[..sz.min(8)]);
    }
    out
}

impl Lowerer {
    fn line_text(&self, line: u32) -> String {
        self.lines
            .get(line.saturating_sub(1) as usize)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    fn unsupported<T>(&self, what: &str) -> Result<T, EmuError> {
        Err(EmuError::Unsupported {
            line: self.cur_line,
            opcode: what.to_string(),
            text: self.line_text(self.cur_line),
            detail: String::new(),
        })
    }

    fn bad<T>(&self, msg: &str) -> Result<T, EmuError> {
        Err(EmuError::parse(
            self.cur_line,
            &self.line_text(self.cur_line),
            msg,
        ))
    }

    fn new_reg(&mut self, bits: u32) -> R {
        self.reg_bits.push(bits.min(64) as u8);
        (self.reg_bits.len() - 1) as R
    }

    fn declare(&mut self, r: &ast::RegDecl) {
        let bits = r.ty.bits();
        match r.count {
            Some(n) => {
                for i in 0..n {
                    let id = self.new_reg(bits);
                    self.scopes
                        .last_mut()
                        .unwrap()
                        .insert(format!("{}{}", r.name, i), id);
                }
            }
            None => {
                let id = self.new_reg(bits);
                self.scopes.last_mut().unwrap().insert(r.name.clone(), id);
            }
        }
    }

    fn constant(&mut self, v: u64) -> R {
        if let Some(&r) = self.consts.get(&v) {
            return r;
        }
        let r = self.new_reg(64);
        self.consts.insert(v, r);
        self.const_list.push((r, v));
        r
    }

    fn lookup_reg(&self, name: &str) -> Option<R> {
        self.scopes.iter().rev().find_map(|s| s.get(name)).copied()
    }

    fn special(&mut self, name: &str) -> Option<R> {
        if let Some(&r) = self.specials.get(name) {
            return Some(r);
        }
        let dim = |s: &str| -> Option<u8> {
            match s {
                "x" => Some(0),
                "y" => Some(1),
                "z" => Some(2),
                _ => None,
            }
        };
        let (base, comp) = match name.split_once('.') {
            Some((b, c)) => (b, dim(c)),
            None => (name, None),
        };
        let sp = match (base, comp) {
            ("%tid", Some(c)) => Special::Tid(c),
            ("%ntid", Some(c)) => Special::Ntid(c),
            ("%ctaid", Some(c)) => Special::Ctaid(c),
            ("%nctaid", Some(c)) => Special::Nctaid(c),
            ("%laneid", None) => Special::Laneid,
            ("%warpid", None) => Special::Warpid,
            ("%nwarpid", None) => Special::Nwarpid,
            ("%lanemask_eq", None) => Special::LanemaskEq,
            ("%lanemask_lt", None) => Special::LanemaskLt,
            ("%lanemask_le", None) => Special::LanemaskLe,
            ("%lanemask_gt", None) => Special::LanemaskGt,
            ("%lanemask_ge", None) => Special::LanemaskGe,
            ("%dynamic_smem_size", None) => Special::DynSmem,
            ("%total_smem_size", None) => Special::TotalSmem,
            ("%smid", None) | ("%gridid", None) => Special::Zero,
            // Every launch is a grid of one-CTA clusters (PTX ISA "Special Registers":
            // %clusterid is then the CTA id, %cluster_ctaid 0, %cluster_nctaid 1).
            ("%clusterid", Some(c)) => Special::Ctaid(c),
            ("%nclusterid", Some(c)) => Special::Nctaid(c),
            ("%cluster_ctaid", Some(_)) => Special::Zero,
            ("%cluster_nctaid", Some(_)) => Special::Value(1),
            ("%cluster_ctarank", None) | ("%is_explicit_cluster", None) => Special::Zero,
            ("%cluster_nctarank", None) => Special::Value(1),
            _ => return None,
        };
        let r = self.new_reg(64);
        self.specials.insert(name.to_string(), r);
        self.special_list.push((r, sp));
        Some(r)
    }

    fn var_value(&mut self, name: &str, off: i64) -> Option<R> {
        let loc = *self.vars.get(name)?;
        Some(match loc {
            VarLoc::Shared(o) | VarLoc::Local(o) | VarLoc::Param(o) => {
                self.constant((o as i64 + off) as u64)
            }
            VarLoc::Global(idx) => {
                if let Some(&r) = self.reloc_regs.get(&(idx, off)) {
                    return Some(r);
                }
                let r = self.new_reg(64);
                self.relocs.push(SymbolReloc {
                    reg: r,
                    var: idx,
                    off,
                });
                self.reloc_regs.insert((idx, off), r);
                r
            }
        })
    }

    /// A destination register.
    fn dst(&mut self, o: &Operand) -> Result<R, EmuError> {
        match o {
            Operand::Reg(n) | Operand::Sym(n) => match self.lookup_reg(n) {
                Some(r) => Ok(r),
                None => self.bad(&format!("unknown register `{n}`")),
            },
            Operand::Sink => Ok(self.new_reg(64)),
            _ => self.bad("expected a destination register"),
        }
    }

    /// A source operand of type `ty` as a register (immediates become constant registers).
    fn src(&mut self, o: &Operand, ty: Ty) -> Result<R, EmuError> {
        match o {
            Operand::Reg(n) | Operand::Sym(n) => {
                if let Some(r) = self.lookup_reg(n) {
                    return Ok(r);
                }
                if let Some(r) = self.special(n) {
                    return Ok(r);
                }
                if let Some(r) = self.var_value(n, 0) {
                    return Ok(r);
                }
                if n.starts_with("%clock") || n.starts_with("%globaltimer") {
                    return self.unsupported(&format!("{n} outside mov"));
                }
                self.bad(&format!("unknown register or symbol `{n}`"))
            }
            Operand::SymOff(n, off) => match self.var_value(n, *off) {
                Some(r) => Ok(r),
                None => self.bad(&format!("unknown symbol `{n}`")),
            },
            Operand::Int(v) => {
                let v = if ty.kind() == TyKind::Float && ty.bits() == 32 && *v != 0 {
                    // integer literal in a float context: its value, not its bits
                    (*v as i64 as f32).to_bits() as u64
                } else {
                    *v & mask_of(ty.bits().max(1))
                };
                Ok(self.constant(v))
            }
            Operand::F32(b) => {
                let v = if ty == Ty::F64 {
                    (f32::from_bits(*b) as f64).to_bits()
                } else {
                    *b as u64
                };
                Ok(self.constant(v))
            }
            Operand::F64(b) => {
                let v = if ty.bits() == 32 {
                    (f64::from_bits(*b) as f32).to_bits() as u64
                } else {
                    *b
                };
                Ok(self.constant(v))
            }
            _ => self.bad("unexpected operand form"),
        }
    }

    fn addr(&mut self, o: &Operand) -> Result<Addr, EmuError> {
        match o {
            Operand::Addr(None, off) => Ok(Addr {
                base: self.zero,
                off: *off,
            }),
            Operand::Addr(Some(n), off) => {
                if let Some(r) = self.lookup_reg(n) {
                    return Ok(Addr { base: r, off: *off });
                }
                match self.vars.get(n).copied() {
                    Some(VarLoc::Shared(o)) | Some(VarLoc::Local(o)) | Some(VarLoc::Param(o)) => {
                        Ok(Addr {
                            base: self.zero,
                            off: o as i64 + off,
                        })
                    }
                    Some(VarLoc::Global(_)) => {
                        let r = self.var_value(n, 0).unwrap();
                        Ok(Addr { base: r, off: *off })
                    }
                    None => self.bad(&format!("unknown address base `{n}`")),
                }
            }
            _ => self.bad("expected an address `[...]`"),
        }
    }

    fn push(&mut self, i: &ast::Instr, op: Op, class: Class) -> Result<(), EmuError> {
        let (guard, guard_neg) = match &i.guard {
            Some((p, neg)) => match self.lookup_reg(p) {
                Some(r) => (r, *neg),
                None => return self.bad(&format!("unknown guard predicate `{p}`")),
            },
            None => (NONE, false),
        };
        self.insts.push(Inst {
            op,
            guard,
            guard_neg,
            line: i.line,
            class,
        });
        Ok(())
    }

    fn ops(&self, i: &ast::Instr, n: usize) -> Result<(), EmuError> {
        if i.operands.len() < n {
            return self.bad(&format!("`{}` needs {} operands", i.opcode, n));
        }
        Ok(())
    }

    /// Lowers the statements of a body (an entry's, or an inlined `.func`'s) in order. Labels
    /// are recorded at the instruction index they precede, in the namespace of their `{ }`
    /// scope (nested in `scope`); branches are patched once everything is lowered.
    fn lower_body(&mut self, body: &[Stmt], scope: u32) -> Result<(), EmuError> {
        let mut scope_ids = vec![scope];
        // Variables declared in a `{ }` scope (call arguments and results, an inlined
        // function's locals) shadow outer ones until the scope closes: (name, outer binding).
        let mut shadowed: Vec<Vec<(String, Option<VarLoc>)>> = vec![Vec::new()];
        let mut result = Ok(());
        for s in body {
            match s {
                Stmt::Open => {
                    scope_ids.push(self.next_scope);
                    self.next_scope += 1;
                    self.scopes.push(HashMap::new());
                    shadowed.push(Vec::new());
                }
                Stmt::Close if scope_ids.len() > 1 => {
                    scope_ids.pop();
                    self.scopes.pop();
                    self.unshadow(shadowed.pop().unwrap_or_default());
                }
                Stmt::Reg(r) => self.declare(r),
                Stmt::Label(name, _) => {
                    let at = self.insts.len() as u32;
                    self.labels
                        .insert((*scope_ids.last().unwrap(), name.clone()), at);
                }
                Stmt::Var(v)
                    if v.space == Space::Param
                        || (v.space == Space::Local && !self.ret_fixups.is_empty()) =>
                {
                    let outer = self.local_var(v);
                    shadowed.last_mut().unwrap().push((v.name.clone(), outer));
                }
                Stmt::Instr(i) => {
                    self.cur_line = i.line;
                    if let Err(e) = self.instr(i, &scope_ids) {
                        result = Err(e);
                        break;
                    }
                }
                _ => {}
            }
        }
        while let Some(level) = shadowed.pop() {
            self.unshadow(level);
        }
        result
    }

    /// Restores the outer bindings of variables a closing scope declared (innermost first).
    fn unshadow(&mut self, level: Vec<(String, Option<VarLoc>)>) {
        for (n, outer) in level.into_iter().rev() {
            match outer {
                Some(l) => self.vars.insert(n, l),
                None => self.vars.remove(&n),
            };
        }
    }

    /// Lays out a per-thread variable in local space (call arguments and results, and the
    /// `.local` variables of inlined functions): a fresh frame slot per declaration.
    /// Returns the binding it shadows.
    fn local_var(&mut self, v: &ast::VarDecl) -> Option<VarLoc> {
        let a = v.effective_align().max(1);
        let off = self.local_size.div_ceil(a) * a;
        self.local_size = off + v.size() as u32;
        self.vars.insert(v.name.clone(), VarLoc::Local(off))
    }

    /// Lowers one instruction through its family, then rejects any qualifier nobody consumed.
    fn instr(&mut self, i: &ast::Instr, scope_chain: &[u32]) -> Result<(), EmuError> {
        let mut q = Quals::split(&i.opcode);
        match family(i, &q) {
            Some(lower) => lower(self, i, &mut q),
            // Branches resolve against the enclosing scopes' labels.
            None if CONTROL.contains(&q.base()) => self.lower_control(i, &mut q, scope_chain),
            None => self.unsupported(&i.opcode),
        }?;
        match q.leftover() {
            Some(left) => Err(EmuError::Unsupported {
                line: self.cur_line,
                opcode: i.opcode.clone(),
                text: self.line_text(self.cur_line),
                detail: format!(" (qualifier .{left} is not implemented)"),
            }),
            None => Ok(()),
        }
    }

    /// The instruction's type qualifier (consumed), or a parse error naming the line.
    fn one_ty(&self, q: &mut Quals) -> Result<Ty, EmuError> {
        match q.types().last() {
            Some(t) => Ok(*t),
            None => self.bad("missing type"),
        }
    }

    /// A destination that may be a `d|p` pair (second part `NONE` when absent).
    fn dst_pair(&mut self, o: &Operand) -> Result<(R, R), EmuError> {
        match o {
            Operand::Pair(d, p) => {
                let d = self.dst(&Operand::Reg(d.clone()))?;
                let p = self.dst(&Operand::Reg(p.clone()))?;
                Ok((d, p))
            }
            other => Ok((self.dst(other)?, NONE)),
        }
    }
}

/// How one instruction family lowers an instruction (its base name is `q.base()`).
type Family = fn(&mut Lowerer, &ast::Instr, &mut Quals) -> Result<(), EmuError>;

/// The base names of the control family (`lower_control`, which also needs the scope chain).
const CONTROL: &[&str] = &["bra", "ret", "exit", "trap", "brkpt"];

/// The family that lowers `i`, by its base name (and, where one name spans two families, by its
/// type or qualifiers); `None` for the control family and for what is not implemented.
fn family(i: &ast::Instr, q: &Quals) -> Option<Family> {
    let float = q.peek_ty().and_then(FTy::from_ty).is_some();
    Some(match q.base() {
        "mov" => Lowerer::lower_mov,
        "add" | "sub" | "mul" | "div" | "min" | "max" | "copysign" | "mad" | "fma" | "neg"
        | "abs"
            if float =>
        {
            Lowerer::lower_float
        }
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "mad" | "neg" | "abs" | "not"
        | "cnot" | "popc" | "clz" | "brev" | "bfind" | "and" | "or" | "xor" | "shl" | "shr"
        | "bfe" | "prmt" | "shf" | "bfi" => Lowerer::lower_int,
        "ex2" | "lg2" | "rcp" | "sqrt" | "rsqrt" | "sin" | "cos" | "tanh" => Lowerer::lower_sfu,
        "setp" | "set" => Lowerer::lower_setp,
        "selp" | "slct" => Lowerer::lower_select,
        "cvt" => Lowerer::lower_cvt,
        "prefetch" if i.opcode.contains(".tensormap") => Lowerer::lower_prefetch_tensormap,
        "ld" | "ldu" | "st" | "atom" | "red" | "cvta" | "prefetch" | "prefetchu" | "discard"
        | "applypriority" | "createpolicy" | "mapa" | "getctarank" => Lowerer::lower_memory,
        "cp" if i.opcode.starts_with("cp.async.bulk") => Lowerer::lower_bulk,
        "cp" => Lowerer::lower_cp,
        "mbarrier" => Lowerer::lower_mbarrier,
        "bar" | "barrier" | "membar" | "fence" | "nanosleep" | "pmevent" | "griddepcontrol"
        | "setmaxnreg" => Lowerer::lower_sync,
        "shfl" | "vote" | "match" | "redux" | "activemask" | "elect" => Lowerer::lower_warp,
        "mma" | "ldmatrix" | "stmatrix" => Lowerer::lower_tensor,
        "wgmma" => Lowerer::lower_wgmma,
        "call" => Lowerer::lower_call,
        _ => return None,
    })
}

fn float_class(f: FTy) -> Class {
    match f {
        FTy::F32 => Class::Fp32,
        FTy::F64 => Class::Fp64,
        _ => Class::Fp16,
    }
}
