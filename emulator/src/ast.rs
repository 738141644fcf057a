//! Syntax tree of a PTX module as written: names are still strings and qualifiers are still
//! dotted text. The lowering pass (`lower/`) turns this into the executable form.

use super::types::{Space, Ty};

#[derive(Debug, Clone, Default)]
pub struct Module {
    pub version: String,
    pub target: String,
    pub address_size: u32,
    /// Module-scope variables (`.global`, `.const`, `.shared`, incl. `.extern .shared x[]`).
    pub vars: Vec<VarDecl>,
    pub funcs: Vec<Func>,
}

/// Initial value of a module-scope variable element.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    Int(u64),
    F32(u32),
    F64(u64),
}

/// A variable or parameter declaration: `.shared .align 16 .b8 smem[4096];`, `.param .u64 p;`.
#[derive(Debug, Clone, PartialEq)]
pub struct VarDecl {
    pub space: Space,
    pub align: u32,
    pub ty: Ty,
    /// Vector width from `.v2`/`.v4` (1 when absent).
    pub vec: u32,
    pub name: String,
    /// Array dimensions; `None` is an unsized dimension (`[]`, only for extern shared).
    pub dims: Vec<Option<u64>>,
    pub init: Vec<Init>,
    pub is_extern: bool,
    pub line: u32,
}

impl VarDecl {
    /// Size in bytes (0 for an unsized extern array).
    pub fn size(&self) -> u64 {
        // The parser refuses sizes past 2^64; saturating keeps this total for hand-built trees.
        self.dims
            .iter()
            .fold(self.ty.bytes() as u64 * self.vec as u64, |acc, d| {
                acc.saturating_mul(d.unwrap_or(0))
            })
    }

    /// Natural alignment when `.align` is absent.
    pub fn effective_align(&self) -> u32 {
        if self.align > 0 {
            self.align
        } else {
            self.ty.bytes().max(1) * self.vec
        }
    }
}

/// `.reg .b32 %r<50>;` (count = Some(50)) or `.reg .pred p;` (count = None).
#[derive(Debug, Clone, PartialEq)]
pub struct RegDecl {
    pub ty: Ty,
    pub name: String,
    pub count: Option<u32>,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `%r1`, `%tid.x`, or a plain identifier that names a register.
    Reg(String),
    Int(u64),
    F32(u32),
    F64(u64),
    /// A name that is not a register: a label, a variable (its address), a parameter.
    Sym(String),
    /// `name+off` outside brackets.
    SymOff(String, i64),
    /// `{a, b, ...}`.
    Vec(Vec<Operand>),
    /// `[base+off]`; base is a register or symbol name, or absent for `[imm]`.
    Addr(Option<String>, i64),
    /// `[map, {c0, c1, ..}]`: a tensor map address and tensor coordinates (TMA copies).
    TensorAddr(String, Vec<Operand>),
    /// `d|p` destination pair of `setp`/`shfl`.
    Pair(String, String),
    /// `!p` negated predicate source.
    Not(String),
    /// `_` sink destination.
    Sink,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instr {
    /// Guard predicate register and whether it is negated (`@!%p`).
    pub guard: Option<(String, bool)>,
    /// Full opcode with qualifiers, e.g. `ld.global.nc.v4.u32`.
    pub opcode: String,
    pub operands: Vec<Operand>,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Reg(RegDecl),
    Var(VarDecl),
    Label(String, u32),
    Instr(Instr),
    /// `{` opening a nested scope (nvcc wraps inline asm in these).
    Open,
    /// `}` closing it.
    Close,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Func {
    pub name: String,
    pub is_entry: bool,
    pub params: Vec<VarDecl>,
    pub ret_params: Vec<VarDecl>,
    /// `None` for a declaration without body (`.extern .func f(...);`).
    pub body: Option<Vec<Stmt>>,
    pub line: u32,
}
