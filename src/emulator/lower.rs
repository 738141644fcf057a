//! Lowering: syntax tree (`ast.rs`) to executable [`Program`]s, one per `.entry`. Resolves
//! register names (with nested `{ }` scopes) to dense indices, turns immediates, special registers
//! and variable addresses into pre-loaded registers, lays out shared/local/param space, resolves
//! labels, and decodes every opcode's qualifiers. Any opcode or qualifier combination the executor
//! does not implement is rejected here with [`EmuError::Unsupported`].

use std::collections::HashMap;
use std::sync::Arc;

use super::ast::{self, Init, Operand, Stmt};
use super::error::EmuError;
use super::program::*;
use super::softfloat::{self, Rnd};
use super::types::{Space, Ty, TyKind};
use super::ParamDecl;

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
}

fn mask_of(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Lowers every `.entry` of the module.
pub fn lower_module(m: &ast::Module, src: &str) -> Result<Vec<Program>, EmuError> {
    let lines: Arc<Vec<String>> = Arc::new(src.lines().map(|l| l.to_string()).collect());
    let mut out = Vec::new();
    for f in m.funcs.iter().filter(|f| f.is_entry) {
        out.push(lower_entry(m, f, lines.clone())?);
    }
    Ok(out)
}

fn lower_entry(
    m: &ast::Module,
    f: &ast::Func,
    lines: Arc<Vec<String>>,
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
    for v in &m.vars {
        match v.space {
            Space::Shared => place_shared(&mut l, v, &mut soff),
            Space::Global | Space::Const => {
                let idx = l.global_vars.len();
                l.global_vars.push(GlobalVar {
                    size: v.size(),
                    init: init_bytes(v),
                });
                l.vars.insert(v.name.clone(), VarLoc::Global(idx));
            }
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
                Space::Global | Space::Const => {
                    let idx = l.global_vars.len();
                    l.global_vars.push(GlobalVar {
                        size: v.size(),
                        init: init_bytes(v),
                    });
                    l.vars.insert(v.name.clone(), VarLoc::Global(idx));
                }
                _ => {
                    return Err(EmuError::Unsupported {
                        line: v.line,
                        opcode: format!(".{} variable in function body", v.space.name()),
                        text: l.line_text(v.line),
                    })
                }
            }
        }
    }
    let dyn_off = soff.div_ceil(dyn_align) * dyn_align;
    for name in externs {
        l.vars.insert(name, VarLoc::Shared(dyn_off));
    }

    // Pass 1: label positions per scope.
    let mut scope_ids = vec![0u32];
    let mut next_scope = 1u32;
    let mut idx = 0u32;
    for s in body {
        match s {
            Stmt::Open => {
                scope_ids.push(next_scope);
                next_scope += 1;
            }
            Stmt::Close => {
                scope_ids.pop();
            }
            Stmt::Label(name, _) => {
                l.labels
                    .insert((*scope_ids.last().unwrap(), name.clone()), idx);
            }
            Stmt::Instr(_) => idx += 1,
            _ => {}
        }
    }
    // Pass 2: instructions.
    let mut scope_ids = vec![0u32];
    let mut next_scope = 1u32;
    for s in body {
        match s {
            Stmt::Open => {
                scope_ids.push(next_scope);
                next_scope += 1;
                l.scopes.push(HashMap::new());
            }
            Stmt::Close => {
                scope_ids.pop();
                l.scopes.pop();
            }
            Stmt::Reg(r) => l.declare(r),
            Stmt::Instr(i) => {
                l.cur_line = i.line;
                l.instr(i, &scope_ids)?;
            }
            _ => {}
        }
    }
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
        local_size: loff,
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

fn rnd_of(q: &str) -> Option<Rnd> {
    Some(match q {
        "rn" | "rni" => Rnd::Rn,
        "rz" | "rzi" => Rnd::Rz,
        "rm" | "rmi" => Rnd::Rm,
        "rp" | "rpi" => Rnd::Rp,
        "rna" => Rnd::Rna,
        _ => return None,
    })
}

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

/// Qualifiers that only tune caching, memory ordering or scope; the emulator is sequentially
/// consistent and cache-less, so they do not change results.
fn is_ignorable_mem_qual(q: &str) -> bool {
    matches!(
        q,
        "weak"
            | "volatile"
            | "relaxed"
            | "acquire"
            | "release"
            | "acq_rel"
            | "mmio"
            | "sc"
            | "cta"
            | "gpu"
            | "sys"
            | "cluster"
            | "nc"
            | "ca"
            | "cg"
            | "cs"
            | "lu"
            | "cv"
            | "wb"
            | "wt"
            | "sync"
            | "aligned"
            | "unified"
    ) || q.starts_with("L1::")
        || q.starts_with("L2::")
        || q.starts_with("level::")
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

    fn instr(&mut self, i: &ast::Instr, scope_chain: &[u32]) -> Result<(), EmuError> {
        let parts: Vec<&str> = i.opcode.split('.').collect();
        let base = parts[0];
        let quals: Vec<&str> = parts[1..].to_vec();
        let has = |q: &str| quals.contains(&q);
        let types: Vec<Ty> = quals.iter().filter_map(|q| Ty::parse(q)).collect();
        let ty = types.last().copied();
        let o = &i.operands;
        match base {
            "mov" => {
                self.ops(i, 2)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("mov without type"))?;
                if let Operand::Vec(ds) = &o[0] {
                    let n = ds.len();
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
            "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "copysign" => {
                self.ops(i, 3)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("missing type"))?;
                let d = self.dst(&o[0])?;
                if has("cc") || base == "addc" {
                    return self.unsupported(&i.opcode);
                }
                if let Some(fty) = FTy::from_ty(ty) {
                    let fop = match base {
                        "add" => FOp::Add,
                        "sub" => FOp::Sub,
                        "mul" => FOp::Mul,
                        "div" => FOp::Div,
                        "min" => FOp::Min,
                        "max" => FOp::Max,
                        "copysign" => FOp::Copysign,
                        _ => return self.unsupported(&i.opcode),
                    };
                    if has("xorsign")
                        || has("relu") && !fty.is_x2() && fty != FTy::F16 && fty != FTy::Bf16
                    {
                        return self.unsupported(&i.opcode);
                    }
                    if has("relu") {
                        return self.unsupported(&i.opcode);
                    }
                    let mods = self.fmods(&quals, fty)?;
                    if fty == FTy::F64 && fop == FOp::Div && mods.rnd != Rnd::Rn {
                        return self.unsupported(&i.opcode);
                    }
                    let a = self.src(&o[1], ty)?;
                    let b = self.src(&o[2], ty)?;
                    let class = float_class(fty);
                    return self.push(
                        i,
                        Op::Bin {
                            k: BinK::F(fop, fty, mods),
                            d,
                            a,
                            b,
                        },
                        class,
                    );
                }
                let w = ty.bits() as u8;
                let s = ty.is_signed();
                let k = match base {
                    "add" if has("sat") => BinK::AddSat,
                    "sub" if has("sat") => BinK::SubSat,
                    "add" => BinK::Add(w),
                    "sub" => BinK::Sub(w),
                    "mul" if has("hi") => BinK::MulHi(w, s),
                    "mul" if has("wide") => BinK::MulWide(w, s),
                    "mul" => BinK::MulLo(w),
                    "div" => BinK::Div(w, s),
                    "rem" => BinK::Rem(w, s),
                    "min" if !has("relu") => BinK::Min(w, s),
                    "max" if !has("relu") => BinK::Max(w, s),
                    _ => return self.unsupported(&i.opcode),
                };
                let a = self.src(&o[1], ty)?;
                let b = self.src(&o[2], ty)?;
                self.push(i, Op::Bin { k, d, a, b }, Class::Int)
            }
            "mad" | "fma" => {
                self.ops(i, 4)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("missing type"))?;
                if has("cc") {
                    return self.unsupported(&i.opcode);
                }
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let b = self.src(&o[2], ty)?;
                if let Some(fty) = FTy::from_ty(ty) {
                    if has("relu") {
                        return self.unsupported(&i.opcode);
                    }
                    let mods = self.fmods(&quals, fty)?;
                    if fty == FTy::F64 && mods.rnd != Rnd::Rn {
                        return self.unsupported(&i.opcode);
                    }
                    let c = self.src(&o[3], ty)?;
                    return self.push(
                        i,
                        Op::Tern {
                            k: TerK::Fma(fty, mods),
                            d,
                            a,
                            b,
                            c,
                        },
                        float_class(fty),
                    );
                }
                let w = ty.bits() as u8;
                let s = ty.is_signed();
                let (k, cty) = if has("hi") {
                    (TerK::MadHi(w, s), ty)
                } else if has("wide") {
                    (TerK::MadWide(w, s), if s { Ty::S64 } else { Ty::U64 })
                } else {
                    (TerK::MadLo(w), ty)
                };
                let cty = if w == 16 && has("wide") { Ty::U32 } else { cty };
                let c = self.src(&o[3], cty)?;
                self.push(i, Op::Tern { k, d, a, b, c }, Class::Int)
            }
            "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" => {
                self.ops(i, 2)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("missing type"))?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let w = if ty == Ty::Pred { 1 } else { ty.bits() as u8 };
                let (k, class) = if let Some(fty) = FTy::from_ty(ty) {
                    let ftz = has("ftz");
                    match base {
                        "neg" => (UnK::FNeg(fty, ftz), float_class(fty)),
                        "abs" => (UnK::FAbs(fty, ftz), float_class(fty)),
                        _ => return self.unsupported(&i.opcode),
                    }
                } else {
                    let k = match base {
                        "neg" => UnK::Neg(w),
                        "abs" => UnK::Abs(w),
                        "not" => UnK::Not(w),
                        "cnot" => UnK::Cnot,
                        "popc" => UnK::Popc(w),
                        "clz" => UnK::Clz(w),
                        "brev" => UnK::Brev(w),
                        "bfind" => UnK::Bfind(w, ty.is_signed(), has("shiftamt")),
                        _ => return self.unsupported(&i.opcode),
                    };
                    (k, Class::Int)
                };
                self.push(i, Op::Un { k, d, a }, class)
            }
            "and" | "or" | "xor" | "shl" | "shr" => {
                self.ops(i, 3)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("missing type"))?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let w = ty.bits() as u8;
                let (k, bty) = match base {
                    "and" => (BinK::And, ty),
                    "or" => (BinK::Or, ty),
                    "xor" => (BinK::Xor, ty),
                    "shl" => (BinK::Shl(w), Ty::U32),
                    _ => (BinK::Shr(w, ty.is_signed()), Ty::U32),
                };
                let b = self.src(&o[2], bty)?;
                self.push(i, Op::Bin { k, d, a, b }, Class::Int)
            }
            "bfe" | "prmt" | "shf" => {
                self.ops(i, 4)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("missing type"))?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let k = match base {
                    "bfe" => TerK::Bfe(ty.bits() as u8, ty.is_signed()),
                    "prmt" => {
                        if quals.len() > 1 {
                            return self.unsupported(&i.opcode);
                        }
                        TerK::Prmt
                    }
                    _ => TerK::Shf {
                        left: has("l"),
                        clamp: has("clamp"),
                    },
                };
                let bty = if base == "bfe" { Ty::U32 } else { ty };
                let b = self.src(&o[2], bty)?;
                let c = self.src(&o[3], Ty::U32)?;
                self.push(i, Op::Tern { k, d, a, b, c }, Class::Int)
            }
            "bfi" => {
                self.ops(i, 5)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("missing type"))?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let b = self.src(&o[2], ty)?;
                let c = self.src(&o[3], Ty::U32)?;
                let e = self.src(&o[4], Ty::U32)?;
                self.push(
                    i,
                    Op::Bfi {
                        w: ty.bits() as u8,
                        d,
                        a,
                        b,
                        c,
                        e,
                    },
                    Class::Int,
                )
            }
            "selp" | "slct" => {
                self.ops(i, 4)?;
                let dty = *types
                    .first()
                    .ok_or(())
                    .or_else(|_| self.bad("missing type"))?;
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], dty)?;
                let b = self.src(&o[2], dty)?;
                let (k, cty) = if base == "selp" {
                    (TerK::Selp, Ty::Pred)
                } else if ty == Some(Ty::F32) {
                    (TerK::SlctF32(has("ftz")), Ty::F32)
                } else {
                    (TerK::SlctS32, Ty::S32)
                };
                let c = self.src(&o[3], cty)?;
                let class = if dty.is_float() {
                    float_class(FTy::from_ty(dty).unwrap())
                } else {
                    Class::Int
                };
                self.push(i, Op::Tern { k, d, a, b, c }, class)
            }
            "setp" | "set" => self.lower_setp(i, &quals, &types),
            "cvt" => self.lower_cvt(i, &quals, &types),
            "cvta" => {
                self.ops(i, 2)?;
                let to = has("to");
                let window = if has("shared") || has("shared::cta") {
                    SHARED_WINDOW
                } else if has("local") {
                    LOCAL_WINDOW
                } else if has("param") {
                    PARAM_WINDOW
                } else if has("global") || has("const") {
                    0
                } else {
                    return self.unsupported(&i.opcode);
                };
                let ty = ty.unwrap_or(Ty::U64);
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], Ty::U64)?;
                let dmask = mask_of(ty.bits());
                self.push(
                    i,
                    Op::Un {
                        k: UnK::Cvta {
                            to_space: to,
                            window,
                            dmask,
                        },
                        d,
                        a,
                    },
                    Class::Int,
                )
            }
            "ld" | "ldu" | "st" => self.lower_ldst(i, base == "st", &quals, ty),
            "atom" | "red" => self.lower_atom(i, base == "red", &quals, ty),
            "cp" => self.lower_cp(i, &quals),
            "bra" => {
                self.ops(i, 1)?;
                let name = match &o[0] {
                    Operand::Sym(n) | Operand::Reg(n) => n.clone(),
                    _ => return self.bad("bra needs a label"),
                };
                let at = self.insts.len();
                self.fixups.push((at, scope_chain.to_vec(), name, i.line));
                self.push(i, Op::Bra { target: 0 }, Class::Control)
            }
            "ret" | "exit" => self.push(i, Op::Exit, Class::Control),
            "trap" | "brkpt" => self.push(i, Op::Trap, Class::Control),
            "bar" | "barrier" => {
                if has("warp") {
                    self.ops(i, 1)?;
                    let mask = self.src(&o[0], Ty::B32)?;
                    return self.push(i, Op::BarWarp { mask }, Class::Sync);
                }
                if has("red") {
                    return self.unsupported(&i.opcode);
                }
                let arrive = has("arrive");
                if !(arrive || has("sync") || quals.is_empty()) {
                    return self.unsupported(&i.opcode);
                }
                self.ops(i, 1)?;
                let id = self.src(&o[0], Ty::U32)?;
                let count = if o.len() > 1 {
                    self.src(&o[1], Ty::U32)?
                } else {
                    NONE
                };
                self.push(i, Op::Bar { id, count, arrive }, Class::Sync)
            }
            "shfl" => {
                if !has("sync") {
                    return self.unsupported(&i.opcode);
                }
                self.ops(i, 5)?;
                let mode = if has("up") {
                    ShflMode::Up
                } else if has("down") {
                    ShflMode::Down
                } else if has("bfly") {
                    ShflMode::Bfly
                } else if has("idx") {
                    ShflMode::Idx
                } else {
                    return self.bad("shfl mode missing");
                };
                let (d, p) = match &o[0] {
                    Operand::Pair(d, p) => {
                        let d = self.dst(&Operand::Reg(d.clone()))?;
                        let p = self.dst(&Operand::Reg(p.clone()))?;
                        (d, p)
                    }
                    other => (self.dst(other)?, NONE),
                };
                let a = self.src(&o[1], Ty::B32)?;
                let b = self.src(&o[2], Ty::B32)?;
                let c = self.src(&o[3], Ty::B32)?;
                let mask = self.src(&o[4], Ty::B32)?;
                self.push(
                    i,
                    Op::Shfl {
                        mode,
                        d,
                        p,
                        a,
                        b,
                        c,
                        mask,
                    },
                    Class::Shuffle,
                )
            }
            "vote" => {
                if !has("sync") {
                    return self.unsupported(&i.opcode);
                }
                self.ops(i, 3)?;
                let mode = if has("all") {
                    VoteMode::All
                } else if has("any") {
                    VoteMode::Any
                } else if has("uni") {
                    VoteMode::Uni
                } else if has("ballot") {
                    VoteMode::Ballot
                } else {
                    return self.unsupported(&i.opcode);
                };
                let d = self.dst(&o[0])?;
                let (a, neg) = match &o[1] {
                    Operand::Not(n) => (self.src(&Operand::Reg(n.clone()), Ty::Pred)?, true),
                    other => (self.src(other, Ty::Pred)?, false),
                };
                let mask = self.src(&o[2], Ty::B32)?;
                self.push(
                    i,
                    Op::Vote {
                        mode,
                        d,
                        a,
                        neg,
                        mask,
                    },
                    Class::Shuffle,
                )
            }
            "match" => {
                self.ops(i, 3)?;
                let ty = ty.unwrap_or(Ty::B32);
                let (d, p) = match &o[0] {
                    Operand::Pair(d, p) => {
                        let d = self.dst(&Operand::Reg(d.clone()))?;
                        let p = self.dst(&Operand::Reg(p.clone()))?;
                        (d, p)
                    }
                    other => (self.dst(other)?, NONE),
                };
                let a = self.src(&o[1], ty)?;
                let mask = self.src(&o[2], Ty::B32)?;
                self.push(
                    i,
                    Op::Match {
                        all: has("all"),
                        d,
                        p,
                        a,
                        mask,
                    },
                    Class::Shuffle,
                )
            }
            "redux" => {
                self.ops(i, 3)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("missing type"))?;
                if ty.is_float() {
                    return self.unsupported(&i.opcode);
                }
                let s = ty.is_signed();
                let k = if has("add") {
                    ReduxK::Add
                } else if has("min") {
                    ReduxK::Min(s)
                } else if has("max") {
                    ReduxK::Max(s)
                } else if has("and") {
                    ReduxK::And
                } else if has("or") {
                    ReduxK::Or
                } else if has("xor") {
                    ReduxK::Xor
                } else {
                    return self.unsupported(&i.opcode);
                };
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let mask = self.src(&o[2], Ty::B32)?;
                self.push(i, Op::Redux { k, d, a, mask }, Class::Shuffle)
            }
            "activemask" => {
                self.ops(i, 1)?;
                let d = self.dst(&o[0])?;
                self.push(i, Op::Activemask { d }, Class::Shuffle)
            }
            "mma" => self.lower_mma(i, &quals, &types),
            "ldmatrix" => {
                self.ops(i, 2)?;
                if !has("m8n8") || !has("b16") {
                    return self.unsupported(&i.opcode);
                }
                let num = if has("x1") {
                    1
                } else if has("x2") {
                    2
                } else if has("x4") {
                    4
                } else {
                    return self.bad("ldmatrix needs .x1/.x2/.x4");
                };
                let mut ds = [NONE; 4];
                match &o[0] {
                    Operand::Vec(v) if v.len() == num => {
                        for (k, d) in v.iter().enumerate() {
                            ds[k] = self.dst(d)?;
                        }
                    }
                    d if num == 1 => ds[0] = self.dst(d)?,
                    _ => return self.bad("ldmatrix destination count does not match .num"),
                }
                let addr = self.addr(&o[1])?;
                let generic = !(has("shared") || has("shared::cta"));
                self.push(
                    i,
                    Op::Ldmatrix {
                        num: num as u8,
                        trans: has("trans"),
                        ds,
                        addr,
                        generic,
                    },
                    Class::MemShared,
                )
            }
            "membar" | "fence" => {
                if quals
                    .iter()
                    .any(|q| q.starts_with("proxy") || q.starts_with("mbarrier"))
                    && !has("proxy.async")
                {
                    // fence.proxy.* orders proxies we do not model; still a no-op here.
                }
                self.push(i, Op::Nop, Class::Sync)
            }
            "prefetch" | "prefetchu" | "discard" | "applypriority" => {
                self.push(i, Op::Nop, Class::MemGlobal)
            }
            "nanosleep" | "pmevent" => self.push(i, Op::Nop, Class::Other),
            "createpolicy" => {
                self.ops(i, 1)?;
                let d = self.dst(&o[0])?;
                let a = self.zero;
                self.push(
                    i,
                    Op::Un {
                        k: UnK::Const(0x1000_0000_0000_0000),
                        d,
                        a,
                    },
                    Class::Other,
                )
            }
            "ex2" | "lg2" | "rcp" | "sqrt" | "rsqrt" | "sin" | "cos" | "tanh" => {
                self.ops(i, 2)?;
                let ty = ty.ok_or(()).or_else(|_| self.bad("missing type"))?;
                let fty = match FTy::from_ty(ty) {
                    Some(f) => f,
                    None => return self.bad("float type expected"),
                };
                let ftz = has("ftz");
                let approx = has("approx");
                let mods = self.fmods(&quals, fty)?;
                let k = match (base, fty) {
                    ("ex2", _) if approx => UnK::Ex2(fty, ftz),
                    ("lg2", FTy::F32) if approx => UnK::Lg2(ftz),
                    ("sin", FTy::F32) if approx => UnK::Sin(ftz),
                    ("cos", FTy::F32) if approx => UnK::Cos(ftz),
                    ("tanh", _) if approx => UnK::Tanh(fty),
                    ("rcp", FTy::F32 | FTy::F64) => {
                        if !approx && fty == FTy::F64 && mods.rnd != Rnd::Rn {
                            return self.unsupported(&i.opcode);
                        }
                        UnK::Rcp(fty, mods)
                    }
                    ("sqrt", FTy::F32 | FTy::F64) => {
                        if !approx && fty == FTy::F64 && mods.rnd != Rnd::Rn {
                            return self.unsupported(&i.opcode);
                        }
                        UnK::Sqrt(fty, mods)
                    }
                    ("rsqrt", FTy::F32 | FTy::F64) if approx => UnK::Rsqrt(fty, ftz),
                    _ => return self.unsupported(&i.opcode),
                };
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let class = if approx || matches!(base, "ex2" | "lg2" | "sin" | "cos" | "tanh") {
                    Class::Sfu
                } else {
                    float_class(fty)
                };
                self.push(i, Op::Un { k, d, a }, class)
            }
            _ => self.unsupported(&i.opcode),
        }
    }

    fn fmods(&self, quals: &[&str], fty: FTy) -> Result<FMods, EmuError> {
        let rnd = quals.iter().find_map(|q| rnd_of(q));
        let rnd = rnd.unwrap_or(Rnd::Rn);
        if rnd == Rnd::Rna {
            return self.unsupported(&format!(".rna on {fty:?}"));
        }
        Ok(FMods {
            rnd,
            ftz: quals.contains(&"ftz"),
            sat: quals.contains(&"sat"),
            nan: quals.contains(&"NaN"),
            approx: quals.contains(&"approx") || quals.contains(&"full"),
        })
    }

    fn lower_setp(&mut self, i: &ast::Instr, quals: &[&str], types: &[Ty]) -> Result<(), EmuError> {
        self.ops(i, 3)?;
        let is_set = i.opcode.starts_with("set.");
        let cmp = match quals.iter().find_map(|q| cmp_of(q)) {
            Some(c) => c,
            None => return self.bad("comparison operator missing"),
        };
        let boolop = quals.iter().find_map(|q| match *q {
            "and" => Some(BoolOp::And),
            "or" => Some(BoolOp::Or),
            "xor" => Some(BoolOp::Xor),
            _ => None,
        });
        let (out, sty) = if is_set {
            if types.len() != 2 {
                return self.bad("set needs destination and source types");
            }
            let out = if types[0] == Ty::F32 {
                SetOut::F32
            } else {
                SetOut::Mask
            };
            (out, types[1])
        } else {
            match types.last() {
                Some(t) => (SetOut::Pred, *t),
                None => return self.bad("setp without type"),
            }
        };
        if sty.is_float() && (sty == Ty::F16x2 || sty == Ty::Bf16x2) {
            return self.unsupported(&i.opcode);
        }
        let cty = match FTy::from_ty(sty) {
            Some(f) => CmpTy::Float(f, quals.contains(&"ftz")),
            None => CmpTy::Int(sty.bits() as u8, sty.is_signed()),
        };
        let o = &i.operands;
        let (d, dn) = match &o[0] {
            Operand::Pair(d, q) => {
                let d = self.dst(&Operand::Reg(d.clone()))?;
                let q = self.dst(&Operand::Reg(q.clone()))?;
                (d, q)
            }
            other => (self.dst(other)?, NONE),
        };
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

    fn lower_cvt(&mut self, i: &ast::Instr, quals: &[&str], types: &[Ty]) -> Result<(), EmuError> {
        // Any qualifier that is neither a type nor a known modifier (e.g. fp8 formats) is unsupported.
        for q in quals {
            if Ty::parse(q).is_none()
                && rnd_of(q).is_none()
                && !matches!(*q, "ftz" | "sat" | "relu" | "satfinite")
            {
                return self.unsupported(&i.opcode);
            }
        }
        if types.len() != 2 {
            return self.unsupported(&i.opcode);
        }
        let (to, from) = (types[0], types[1]);
        let rq = quals.iter().find(|q| rnd_of(q).is_some());
        let rnd = rq.and_then(|q| rnd_of(q));
        let int_rnd = rq.is_some_and(|q| q.ends_with('i'));
        let relu = quals.contains(&"relu");
        let satfinite = quals.contains(&"satfinite");
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
            let k = BinK::CvtPack(fmt, rnd.unwrap_or(Rnd::Rn), relu, satfinite);
            return self.push(i, Op::Bin { k, d, a, b }, Class::Conversion);
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
            sat: quals.contains(&"sat"),
            ftz: quals.contains(&"ftz"),
            relu,
            satfinite,
            dmask: mask_of(dbits.max(to.bits())),
        };
        self.push(
            i,
            Op::Un {
                k: UnK::Cvt(k),
                d,
                a,
            },
            Class::Conversion,
        )
    }

    fn lower_ldst(
        &mut self,
        i: &ast::Instr,
        store: bool,
        quals: &[&str],
        ty: Option<Ty>,
    ) -> Result<(), EmuError> {
        let mut sp = Space::Generic;
        let mut n = 1u8;
        for q in quals {
            if let Some(s) = Space::parse(q) {
                sp = s;
            } else if *q == "v2" {
                n = 2;
            } else if *q == "v4" {
                n = 4;
            } else if Ty::parse(q).is_some() || is_ignorable_mem_qual(q) {
            } else {
                return self.unsupported(&i.opcode);
            }
        }
        let ty = match ty {
            Some(t) => t,
            None => return self.bad("missing type"),
        };
        if ty == Ty::B128 || ty == Ty::Pred {
            return self.unsupported(&i.opcode);
        }
        self.ops(i, 2)?;
        let o = &i.operands;
        let (addr_op, val_op) = if store {
            (&o[0], &o[1])
        } else {
            (&o[1], &o[0])
        };
        let addr = self.addr(addr_op)?;
        let vals: Vec<&Operand> = match val_op {
            Operand::Vec(v) => v.iter().collect(),
            other => vec![other],
        };
        if vals.len() != n as usize {
            return self.bad("vector operand count does not match .v2/.v4");
        }
        let class = match sp {
            Space::Shared => Class::MemShared,
            Space::Local => Class::MemLocal,
            Space::Param => Class::MemParam,
            _ => Class::MemGlobal,
        };
        let size = ty.bytes() as u8;
        let mut regs = [NONE; 4];
        if store {
            for (k, v) in vals.iter().enumerate() {
                regs[k] = self.src(v, ty)?;
            }
            self.push(
                i,
                Op::St {
                    sp,
                    size,
                    n,
                    srcs: regs,
                    addr,
                },
                class,
            )
        } else {
            let mut dbits = 64u32;
            for (k, v) in vals.iter().enumerate() {
                regs[k] = if **v == Operand::Sink {
                    self.new_reg(64)
                } else {
                    self.dst(v)?
                };
                dbits = dbits.min(self.reg_bits[regs[k] as usize] as u32);
            }
            let dmask = mask_of(dbits.max(ty.bits()));
            self.push(
                i,
                Op::Ld {
                    sp,
                    size,
                    n,
                    ds: regs,
                    addr,
                    sext: ty.is_signed(),
                    dmask,
                },
                class,
            )
        }
    }

    fn lower_atom(
        &mut self,
        i: &ast::Instr,
        red: bool,
        quals: &[&str],
        ty: Option<Ty>,
    ) -> Result<(), EmuError> {
        let mut sp = Space::Generic;
        let mut op = None;
        for q in quals {
            if let Some(s) = Space::parse(q) {
                sp = s;
                continue;
            }
            let o = match *q {
                "add" => AtomOp::Add,
                "min" => AtomOp::Min,
                "max" => AtomOp::Max,
                "inc" => AtomOp::Inc,
                "dec" => AtomOp::Dec,
                "exch" => AtomOp::Exch,
                "cas" => AtomOp::Cas,
                "and" => AtomOp::And,
                "or" => AtomOp::Or,
                "xor" => AtomOp::Xor,
                _ => {
                    if Ty::parse(q).is_some() || is_ignorable_mem_qual(q) {
                        continue;
                    }
                    return self.unsupported(&i.opcode);
                }
            };
            op = Some(o);
        }
        let (op, ty) = match (op, ty) {
            (Some(o), Some(t)) => (o, t),
            _ => return self.bad("atom needs an operation and a type"),
        };
        let ok_ty = matches!(ty.bits(), 32 | 64) && !matches!(ty, Ty::F16x2 | Ty::Bf16x2);
        let float_ok = !ty.is_float()
            || (op == AtomOp::Add || op == AtomOp::Exch || op == AtomOp::Min || op == AtomOp::Max);
        if !ok_ty
            || !float_ok
            || (sp != Space::Global && sp != Space::Shared && sp != Space::Generic)
        {
            return self.unsupported(&i.opcode);
        }
        let o = &i.operands;
        let (d, rest) = if red {
            (NONE, &o[..])
        } else {
            (self.dst(&o[0])?, &o[1..])
        };
        if rest.len() < 2 {
            return self.bad("atom operands missing");
        }
        let addr = self.addr(&rest[0])?;
        let a = self.src(&rest[1], ty)?;
        let b = if op == AtomOp::Cas {
            match rest.get(2) {
                Some(x) => self.src(x, ty)?,
                None => return self.bad("atom.cas needs two values"),
            }
        } else {
            NONE
        };
        let class = if sp == Space::Shared {
            Class::MemShared
        } else {
            Class::MemGlobal
        };
        self.push(
            i,
            Op::Atom {
                sp,
                op,
                ty,
                d,
                addr,
                a,
                b,
            },
            class,
        )
    }

    fn lower_cp(&mut self, i: &ast::Instr, quals: &[&str]) -> Result<(), EmuError> {
        if quals.first() != Some(&"async") {
            return self.unsupported(&i.opcode);
        }
        let rest = &quals[1..];
        match rest.first().copied() {
            Some("commit_group") => return self.push(i, Op::CpCommit, Class::Sync),
            Some("wait_group") => {
                self.ops(i, 1)?;
                let n = match i.operands[0] {
                    Operand::Int(v) => v as u32,
                    _ => return self.bad("wait_group needs an immediate"),
                };
                return self.push(i, Op::CpWait { n }, Class::Sync);
            }
            Some("wait_all") => {
                self.push(i, Op::CpCommit, Class::Sync)?;
                return self.push(i, Op::CpWait { n: 0 }, Class::Sync);
            }
            Some("ca") | Some("cg") => {}
            _ => return self.unsupported(&i.opcode),
        }
        let mut shared = false;
        let mut global = false;
        let mut hint = false;
        for q in &rest[1..] {
            match *q {
                "shared" | "shared::cta" => shared = true,
                "global" => global = true,
                "L2::cache_hint" => hint = true,
                q if q.starts_with("L2::") => {}
                _ => return self.unsupported(&i.opcode),
            }
        }
        if !shared || !global {
            return self.unsupported(&i.opcode);
        }
        self.ops(i, 3)?;
        let o = &i.operands;
        let dst = self.addr(&o[0])?;
        let src = self.addr(&o[1])?;
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
            Op::CpAsync {
                dst,
                src,
                cp,
                src_size,
                ignore_src,
                dst_generic: false,
            },
            Class::MemGlobal,
        )
    }

    fn lower_mma(&mut self, i: &ast::Instr, quals: &[&str], types: &[Ty]) -> Result<(), EmuError> {
        let shape = if quals.contains(&"m16n8k16") {
            MmaShape::M16N8K16
        } else if quals.contains(&"m16n8k8") {
            MmaShape::M16N8K8
        } else {
            return self.unsupported(&i.opcode);
        };
        if !quals.contains(&"row") || !quals.contains(&"col") || types.len() != 4 {
            return self.unsupported(&i.opcode);
        }
        let (dt, at, bt, ct) = (types[0], types[1], types[2], types[3]);
        let bf16 = match (at, bt) {
            (Ty::F16, Ty::F16) => false,
            (Ty::Bf16, Ty::Bf16) => true,
            _ => return self.unsupported(&i.opcode),
        };
        if bf16 && (dt != Ty::F32 || ct != Ty::F32) {
            return self.unsupported(&i.opcode);
        }
        if !matches!(dt, Ty::F32 | Ty::F16) || !matches!(ct, Ty::F32 | Ty::F16) {
            return self.unsupported(&i.opcode);
        }
        self.ops(i, 4)?;
        let (na, nb) = match shape {
            MmaShape::M16N8K16 => (4, 2),
            MmaShape::M16N8K8 => (2, 1),
        };
        let nd = if dt == Ty::F32 { 4 } else { 2 };
        let nc = if ct == Ty::F32 { 4 } else { 2 };
        let vecs = |l: &mut Self, op: &Operand, n: usize, dst: bool| -> Result<[R; 4], EmuError> {
            let mut out = [NONE; 4];
            match op {
                Operand::Vec(v) if v.len() == n => {
                    for (k, x) in v.iter().enumerate() {
                        out[k] = if dst { l.dst(x)? } else { l.src(x, Ty::B32)? };
                    }
                    Ok(out)
                }
                _ => l.bad("mma operand vector has the wrong length"),
            }
        };
        let o = &i.operands;
        let d = vecs(self, &o[0], nd, true)?;
        let a = vecs(self, &o[1], na, false)?;
        let b4 = vecs(self, &o[2], nb, false)?;
        let c = vecs(self, &o[3], nc, false)?;
        let op = Op::Mma {
            shape,
            bf16,
            c_f32: ct == Ty::F32,
            d_f32: dt == Ty::F32,
            d,
            a,
            b: [b4[0], b4[1]],
            c,
        };
        self.push(i, op, Class::Tensor)
    }
}

fn float_class(f: FTy) -> Class {
    match f {
        FTy::F32 => Class::Fp32,
        FTy::F64 => Class::Fp64,
        _ => Class::Fp16,
    }
}
