//! Memory family: `ld`/`ldu`/`st` (scalar and `.v2`/`.v4`, every state space), `atom`/`red`,
//! `cvta`, and the cache-management instructions that do not change results in a cache-less
//! model (`prefetch`, `prefetchu`, `discard`, `applypriority`, `createpolicy`).

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::{Space, Ty};
use super::quals::{is_ignorable_mem_qual, Quals};
use super::{mask_of, Lowerer};

/// What `createpolicy` returns: an opaque cache policy the emulator never interprets.
const CACHE_POLICY: u64 = 0x1000_0000_0000_0000;

impl Lowerer {
    pub(super) fn lower_memory(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let base = q.base();
        match base {
            "ld" | "ldu" | "st" => self.lower_ldst(i, base == "st", q),
            "atom" | "red" => self.lower_atom(i, base == "red", q),
            "cvta" => self.lower_cvta(i, q),
            "mapa" | "getctarank" => self.lower_cluster_addr(base == "mapa", i, q),
            "createpolicy" => {
                self.ops(i, 1)?;
                q.one_of(&[("fractional", ()), ("range", ())]);
                q.ignore(|s| s.starts_with("L2::"));
                q.types();
                let d = self.dst(&i.operands[0])?;
                let a = self.constant(CACHE_POLICY);
                self.push(
                    i,
                    Op::Mov {
                        d,
                        a,
                        mask: u64::MAX,
                    },
                    Class::Other,
                )
            }
            _ => {
                // prefetch / prefetchu / discard / applypriority: cache hints only.
                q.space();
                q.ignore(|s| matches!(s, "L1" | "L2") || is_ignorable_mem_qual(s));
                q.types();
                self.push(i, Op::Nop, Class::MemGlobal)
            }
        }
    }

    /// `mapa{.shared::cluster}.{u32,u64} d, a, rank` (the address of the same variable in CTA
    /// `rank` of the cluster) and `getctarank{.shared::cluster}.{u32,u64} d, a` (the rank of
    /// the CTA owning `a`); without the state space, `a` and `d` are generic addresses (PTX ISA
    /// "mapa", "getctarank"). Semantics and the address encoding in `exec/cluster.rs`.
    fn lower_cluster_addr(
        &mut self,
        mapa: bool,
        i: &ast::Instr,
        q: &mut Quals,
    ) -> Result<(), EmuError> {
        let generic = match q.space() {
            None => true,
            Some(Space::Shared) => false,
            Some(_) => return self.unsupported(&i.opcode),
        };
        let ty = match q.types().as_slice() {
            [t @ (Ty::U32 | Ty::U64 | Ty::B32 | Ty::B64)] => *t,
            _ => return self.bad("mapa/getctarank take .u32 or .u64"),
        };
        self.ops(i, if mapa { 3 } else { 2 })?;
        let d = self.dst(&i.operands[0])?;
        let a = self.src(&i.operands[1], ty)?;
        if !mapa {
            let op = AsyncOp::GetCtaRank { d, a, generic };
            return self.push(i, Op::Async(op), Class::Int);
        }
        let rank = self.src(&i.operands[2], Ty::U32)?;
        let op = AsyncOp::Mapa {
            d,
            a,
            rank,
            generic,
        };
        self.push(i, Op::Async(op), Class::Int)
    }

    fn lower_cvta(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        self.ops(i, 2)?;
        let to = q.has("to");
        let window = match q.space() {
            Some(Space::Shared) => SHARED_WINDOW,
            Some(Space::Local) => LOCAL_WINDOW,
            Some(Space::Param) => PARAM_WINDOW,
            Some(Space::Global) | Some(Space::Const) => 0,
            _ => return self.unsupported(&i.opcode),
        };
        let ty = q.types().last().copied().unwrap_or(Ty::U64);
        let d = self.dst(&i.operands[0])?;
        let a = self.src(&i.operands[1], Ty::U64)?;
        let dmask = mask_of(ty.bits());
        self.push(
            i,
            Op::Lane(LaneOp::Cvta {
                to_space: to,
                window,
                dmask,
                d,
                a,
            }),
            Class::Int,
        )
    }

    fn lower_ldst(&mut self, i: &ast::Instr, store: bool, q: &mut Quals) -> Result<(), EmuError> {
        let mut sp = q.space().unwrap_or(Space::Generic);
        // Call arguments and results (`.param` declared in a body, or an inlined function's
        // parameters) live in the thread's local frame.
        let addr_op = if store {
            i.operands.first()
        } else {
            i.operands.get(1)
        };
        if sp == Space::Param {
            if let Some(Operand::Addr(Some(n), _)) = addr_op {
                if matches!(self.vars.get(n), Some(super::VarLoc::Local(_))) {
                    sp = Space::Local;
                }
            }
        }
        let n = q.one_of(&[("v2", 2u8), ("v4", 4u8)]).unwrap_or(1);
        q.ignore(is_ignorable_mem_qual);
        let ty = match q.types().last() {
            Some(t) => *t,
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
        let addr = self.addr_in(addr_op, sp)?;
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
                Op::St(StOp {
                    sp,
                    size,
                    n,
                    srcs: regs,
                    addr,
                }),
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
                Op::Ld(LdOp {
                    sp,
                    size,
                    n,
                    ds: regs,
                    addr,
                    sext: ty.is_signed(),
                    dmask,
                }),
                class,
            )
        }
    }

    fn lower_atom(&mut self, i: &ast::Instr, red: bool, q: &mut Quals) -> Result<(), EmuError> {
        let sp = q.space().unwrap_or(Space::Generic);
        let op = q.one_of(&[
            ("add", AtomK::Add),
            ("min", AtomK::Min),
            ("max", AtomK::Max),
            ("inc", AtomK::Inc),
            ("dec", AtomK::Dec),
            ("exch", AtomK::Exch),
            ("cas", AtomK::Cas),
            ("and", AtomK::And),
            ("or", AtomK::Or),
            ("xor", AtomK::Xor),
        ]);
        q.ignore(is_ignorable_mem_qual);
        let ty = q.types().last().copied();
        let (op, ty) = match (op, ty) {
            (Some(o), Some(t)) => (o, t),
            _ => return self.bad("atom needs an operation and a type"),
        };
        let ok_ty = matches!(ty.bits(), 32 | 64) && !matches!(ty, Ty::F16x2 | Ty::Bf16x2);
        let float_ok = !ty.is_float()
            || (op == AtomK::Add || op == AtomK::Exch || op == AtomK::Min || op == AtomK::Max);
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
            self.ops(i, 1)?;
            (self.dst(&o[0])?, &o[1..])
        };
        if rest.len() < 2 {
            return self.bad("atom operands missing");
        }
        let addr = self.addr_in(&rest[0], sp)?;
        let a = self.src(&rest[1], ty)?;
        let b = if op == AtomK::Cas {
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
            Op::Atom(AtomOp {
                sp,
                k: op,
                ty,
                d,
                addr,
                a,
                b,
            }),
            class,
        )
    }
}
