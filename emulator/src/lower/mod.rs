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
use super::{ParamDecl, MAX_SHARED_BYTES};
use quals::Quals;

#[derive(Clone, Copy, Debug)]
enum VarLoc {
    Shared(u32),
    Local(u32),
    Param(u32),
    Global(usize),
}

/// The registers declared in one `{ }` scope: names bound to dense indices, and parameterized
/// declarations (`.reg .b32 %r<100>;`: prefix, count, bits) whose names get an index only when
/// the program first uses them, so a declaration of 2^31 registers (which ptxas accepts) costs
/// nothing until then (issue 19).
#[derive(Default)]
struct Scope {
    names: HashMap<String, R>,
    ranges: Vec<(String, u32, u8)>,
}

/// Index `i` if `name` is `prefix` followed by `i` in canonical decimal (`%r0`, `%r12`; not
/// `%r012`), the names a parameterized declaration `prefix<count>` defines.
fn range_index(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical {
        digits.parse().ok()
    } else {
        None
    }
}

struct Lowerer {
    lines: Arc<Vec<String>>,
    scopes: Vec<Scope>,
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
        scopes: vec![Scope::default()],
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
    let mut poff = 0u64;
    for p in &f.params {
        let align = p.effective_align().max(1);
        let off = place(&l, &mut poff, p, PARAM_LIMIT, "kernel parameters")?;
        l.vars.insert(p.name.clone(), VarLoc::Param(off));
        params.push(ParamDecl {
            name: p.name.clone(),
            offset: off,
            size: p.size() as u32,
            align,
        });
    }
    let body = f
        .body
        .as_ref()
        .ok_or_else(|| EmuError::parse(f.line, &f.name, "entry without body"))?;

    // Shared layout: module-scope statics, then function-scope statics, then dynamic.
    let mut soff = 0u64;
    let mut dyn_align = 16u32;
    let mut externs = Vec::new();
    let mut place_shared =
        |l: &mut Lowerer, v: &ast::VarDecl, soff: &mut u64| -> Result<(), EmuError> {
            if v.is_extern || v.dims.contains(&None) {
                dyn_align = dyn_align.max(v.effective_align());
                externs.push(v.name.clone());
            } else {
                let off = place(l, soff, v, MAX_SHARED_BYTES as u64, "static shared memory")?;
                l.vars.insert(v.name.clone(), VarLoc::Shared(off));
            }
            Ok(())
        };
    // Module-scope and function-scope `.global` / `.const` variables: one initialised image each,
    // allocated per launch.
    let place_global = |l: &mut Lowerer, v: &ast::VarDecl| -> Result<(), EmuError> {
        if v.space == Space::Const && v.size() > CONST_LIMIT {
            let what = "a .const variable (one 64 KiB constant bank)";
            return Err(too_big(l, v, v.size(), CONST_LIMIT, what));
        }
        let total = l
            .global_vars
            .iter()
            .fold(v.size(), |t, g| t.saturating_add(g.size));
        if total > GLOBAL_VAR_LIMIT {
            let what = ".global/.const variables (the emulator's limit)";
            return Err(too_big(l, v, total, GLOBAL_VAR_LIMIT, what));
        }
        let idx = l.global_vars.len();
        l.global_vars.push(GlobalVar {
            size: v.size(),
            init: init_bytes(v),
        });
        l.vars.insert(v.name.clone(), VarLoc::Global(idx));
        Ok(())
    };
    for v in &m.vars {
        match v.space {
            Space::Shared => place_shared(&mut l, v, &mut soff)?,
            Space::Global | Space::Const => place_global(&mut l, v)?,
            _ => {}
        }
    }
    let mut loff = 0u64;
    for s in body {
        if let Stmt::Var(v) = s {
            match v.space {
                Space::Shared => place_shared(&mut l, v, &mut soff)?,
                Space::Local => {
                    let off = place(&l, &mut loff, v, LOCAL_LIMIT, "local memory")?;
                    l.vars.insert(v.name.clone(), VarLoc::Local(off));
                }
                Space::Global | Space::Const => place_global(&mut l, v)?,
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
    // At most 2^31 (alignments are at most 2^31, the static part at most MAX_SHARED_BYTES); the
    // launch checks it plus the dynamic size against MAX_SHARED_BYTES.
    let dyn_off = soff.div_ceil(dyn_align as u64) * dyn_align as u64;
    let dyn_off = u32::try_from(dyn_off).unwrap_or(u32::MAX);
    for name in externs {
        l.vars.insert(name, VarLoc::Shared(dyn_off));
    }

    l.local_size = loff as u32;
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
        param_size: poff as u32,
        params,
        static_smem: soff as u32,
        dyn_smem_offset: dyn_off,
        local_size: l.local_size,
        reg_lists: l.reg_lists,
        source_lines: l.lines,
    })
}

/// Most instructions one entry may lower to. Calls are inlined, so a chain of functions each
/// calling the next k times grows as k^depth: the cap turns that into a load error instead of a
/// lowering that never ends. Our largest entries lower to tens of thousands.
const MAX_LOWERED_INSTS: usize = 1 << 21;

/// Most bytes of parameters a kernel may take: 32,764 (CUDA C++ Programming Guide, "Function
/// Parameters": the limit since CUDA 12.1 on Volta and newer; ptxas: "Formal parameter space
/// overflowed").
const PARAM_LIMIT: u64 = 32_764;
/// Most local memory a thread may have: 512 KiB (CUDA C++ Programming Guide, "Features and
/// Technical Specifications": maximum amount of local memory per thread).
const LOCAL_LIMIT: u64 = 512 * 1024;
/// A `.const` variable lives in one 64 KiB constant bank (CUDA C++ Programming Guide, "Features
/// and Technical Specifications": constant memory size).
const CONST_LIMIT: u64 = 64 * 1024;
/// The emulator allocates an entry's `.global`/`.const` variables on each launch; beyond 256 MiB
/// in all, a module is refused at load time rather than risking an allocation failure (which
/// aborts) per launch.
const GLOBAL_VAR_LIMIT: u64 = 256 << 20;

/// A load error for variable `v` whose space would need `need` bytes of at most `limit`.
fn too_big(l: &Lowerer, v: &ast::VarDecl, need: u64, limit: u64, what: &str) -> EmuError {
    EmuError::parse(
        v.line,
        &l.line_text(v.line),
        format!(
            "`{}` needs {need} bytes of {what}; at most {limit} fit",
            v.name
        ),
    )
}

/// Lays out variable `v` at the next offset aligned for it in a space of which `*end` bytes are
/// used and `limit` exist: its offset, or the load error when it does not fit.
fn place(
    l: &Lowerer,
    end: &mut u64,
    v: &ast::VarDecl,
    limit: u64,
    what: &str,
) -> Result<u32, EmuError> {
    let a = v.effective_align().max(1) as u64;
    let off = end.div_ceil(a).saturating_mul(a);
    let new_end = off.saturating_add(v.size());
    if new_end > limit {
        return Err(too_big(l, v, new_end, limit, what));
    }
    *end = new_end;
    Ok(off as u32)
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
                let scope = self.scopes.last_mut().unwrap();
                // A redeclared prefix names fresh registers from here on.
                scope
                    .names
                    .retain(|k, _| range_index(k, &r.name).is_none_or(|i| i >= n as u64));
                scope.ranges.push((r.name.clone(), n, bits.min(64) as u8));
            }
            None => {
                let id = self.new_reg(bits);
                self.scopes
                    .last_mut()
                    .unwrap()
                    .names
                    .insert(r.name.clone(), id);
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

    /// The register `name` refers to in the innermost scope declaring it; a name of a
    /// parameterized declaration gets its index on first use.
    fn lookup_reg(&mut self, name: &str) -> Option<R> {
        for k in (0..self.scopes.len()).rev() {
            if let Some(&r) = self.scopes[k].names.get(name) {
                return Some(r);
            }
            let bits = self.scopes[k]
                .ranges
                .iter()
                .rev()
                .find(|(prefix, n, _)| range_index(name, prefix).is_some_and(|i| i < *n as u64))
                .map(|&(_, _, bits)| bits);
            if let Some(bits) = bits {
                let r = self.new_reg(bits as u32);
                self.scopes[k].names.insert(name.to_string(), r);
                return Some(r);
            }
        }
        None
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
            // PTX ISA "Special Registers": a launch without a cluster shape is a grid of
            // one-CTA clusters (the values follow from the launch's cluster shape [1, 1, 1]).
            ("%clusterid", Some(c)) => Special::Clusterid(c),
            ("%nclusterid", Some(c)) => Special::Nclusterid(c),
            ("%cluster_ctaid", Some(c)) => Special::ClusterCtaid(c),
            ("%cluster_nctaid", Some(c)) => Special::ClusterNctaid(c),
            ("%cluster_ctarank", None) => Special::ClusterCtarank,
            ("%cluster_nctarank", None) => Special::ClusterNctarank,
            ("%is_explicit_cluster", None) => Special::IsExplicitCluster,
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

    /// An address operand of an instruction of state space `sp`. A variable named in it must be
    /// of that space (PTX ISA "Addresses as Operands": `[var]` is the address of `var` in its own
    /// state space, so `ld.shared [p]` of a kernel parameter `p` addresses nothing): a mismatch
    /// is a load error instead of an access to whatever lies at that offset of another space.
    /// Generic instructions keep every variable (its address is then checked at run time).
    fn addr_in(&mut self, o: &Operand, sp: Space) -> Result<Addr, EmuError> {
        if let Operand::Addr(Some(n), _) = o {
            let is_reg = self.lookup_reg(n).is_some();
            let var_space = match self.vars.get(n) {
                _ if is_reg => None,
                Some(VarLoc::Shared(_)) => Some(Space::Shared),
                Some(VarLoc::Local(_)) => Some(Space::Local),
                Some(VarLoc::Param(_)) => Some(Space::Param),
                Some(VarLoc::Global(_)) => Some(Space::Global),
                None => None,
            };
            let same = |v: Space| v == sp || (v == Space::Global && sp == Space::Const);
            if let Some(v) = var_space.filter(|&v| sp != Space::Generic && !same(v)) {
                return self.bad(&format!(
                    "`{n}` is a .{} variable; a .{} access cannot address it",
                    v.name(),
                    sp.name()
                ));
            }
        }
        self.addr(o)
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
                    self.scopes.push(Scope::default());
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
                    match self.local_var(v) {
                        Ok(outer) => shadowed.last_mut().unwrap().push((v.name.clone(), outer)),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                Stmt::Instr(i) => {
                    self.cur_line = i.line;
                    if self.insts.len() >= MAX_LOWERED_INSTS {
                        result = self.unsupported(&format!(
                            "an entry of more than {MAX_LOWERED_INSTS} instructions after inlining its calls"
                        ));
                        break;
                    }
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
    fn local_var(&mut self, v: &ast::VarDecl) -> Result<Option<VarLoc>, EmuError> {
        let mut end = self.local_size as u64;
        let off = place(self, &mut end, v, LOCAL_LIMIT, "local memory")?;
        self.local_size = end as u32;
        Ok(self.vars.insert(v.name.clone(), VarLoc::Local(off)))
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
