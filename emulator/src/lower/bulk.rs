//! Bulk-copy family (the asynchronous proxy): `cp.async.bulk` (global -> shared::cluster with
//! `.mbarrier::complete_tx::bytes`, shared::cta -> global with `.bulk_group`),
//! `cp.async.bulk.tensor.{1..5}d` loads and stores through a tensor map (`.tile` mode, the
//! `[tensorMap, {coords}]` address form, optional `.L2::cache_hint` operand),
//! `cp.async.bulk.prefetch{.tensor}`, `cp.async.bulk.commit_group`,
//! `cp.async.bulk.wait_group{.read}`, `prefetch{.space}.tensormap`, and `fence.proxy.async`.
//! Tensor loads take `.multicast::cluster` with a 16-bit CTA mask operand (before the optional
//! cache hint). Non-tensor multicast, im2col and shared::cta -> shared::cluster copies are
//! rejected. Semantics in
//! `exec/bulk.rs`.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::{Space, Ty};
use super::quals::Quals;
use super::{Lowerer, VarLoc};

impl Lowerer {
    pub(super) fn lower_bulk(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        q.has("async");
        q.has("bulk");
        let o = &i.operands;
        if q.has("commit_group") {
            return self.push(i, Op::Async(AsyncOp::BulkCommit), Class::Sync);
        }
        if q.has("wait_group") {
            let read = q.has("read");
            self.ops(i, 1)?;
            let n = match o[0] {
                Operand::Int(v) => v as u32,
                _ => return self.bad("cp.async.bulk.wait_group needs an immediate"),
            };
            return self.push(i, Op::Async(AsyncOp::BulkWait { n, read }), Class::Sync);
        }
        let tensor = q.has("tensor");
        let dims = if tensor {
            match q.one_of(&[("1d", 1u8), ("2d", 2), ("3d", 3), ("4d", 4), ("5d", 5)]) {
                Some(d) => d,
                None => return self.bad("cp.async.bulk.tensor needs a .1d-.5d dimension"),
            }
        } else {
            0
        };
        q.has("tile");
        let hint = q.has("L2::cache_hint");
        let zero = Addr {
            base: self.zero,
            off: 0,
        };
        if q.has("prefetch") {
            // Into L2 only: no visible effect, but the operands are checked.
            q.has("L2");
            if q.space() != Some(Space::Global) {
                return self.unsupported(&i.opcode);
            }
            let mut args = o.len();
            if hint {
                self.ops(i, 2)?;
                self.src(&o[o.len() - 1], Ty::U64)?;
                args -= 1;
            }
            if !tensor {
                if args != 2 {
                    return self.bad("cp.async.bulk.prefetch takes [src], size");
                }
                self.addr(&o[0])?;
                self.src(&o[1], Ty::U32)?;
                return self.push(i, Op::Nop, Class::MemGlobal);
            }
            self.ops(i, 1)?;
            let (map, coords) = self.tensor_addr(&o[0], dims)?;
            let op = AsyncOp::Tma(TmaOp {
                k: TmaK::Prefetch,
                dims,
                smem: zero,
                map,
                coords,
                mbar: zero,
                mcast: NONE,
            });
            return self.push(i, Op::Async(op), Class::MemGlobal);
        }
        // `.dst.src`: the first state space is the destination.
        let spaces: Vec<&str> = (0..16)
            .filter_map(|k| q.at(k))
            .filter(|s| matches!(*s, "global" | "shared::cta" | "shared::cluster"))
            .collect();
        let load = match spaces.as_slice() {
            ["shared::cluster" | "shared::cta", "global"] => true,
            ["global", "shared::cta"] => false,
            _ => return self.unsupported(&i.opcode),
        };
        for s in spaces {
            q.has(s);
        }
        let done = if load {
            q.has("mbarrier::complete_tx::bytes")
        } else {
            q.has("bulk_group")
        };
        if !done {
            return self.unsupported(&i.opcode);
        }
        let multicast = q.has("multicast::cluster");
        if multicast && !(tensor && load) {
            return self.unsupported(&i.opcode);
        }
        let n = match (tensor, load) {
            (true, true) => 3,
            (true, false) => 2,
            (false, true) => 4,
            (false, false) => 3,
        };
        let n = n + multicast as usize;
        if o.len() != n + hint as usize {
            return self.bad(&format!(
                "`{}` takes {} operands",
                i.opcode,
                n + hint as usize
            ));
        }
        if hint {
            // The cache policy only steers L2 eviction.
            self.src(&o[n], Ty::U64)?;
        }
        let mcast = if multicast {
            self.src(&o[3], Ty::U16)?
        } else {
            NONE
        };
        let op = if tensor {
            let (tm, smem) = if load { (&o[1], &o[0]) } else { (&o[0], &o[1]) };
            let (map, coords) = self.tensor_addr(tm, dims)?;
            let smem = self.addr(smem)?;
            let mbar = if load { self.addr(&o[2])? } else { zero };
            AsyncOp::Tma(TmaOp {
                k: if load { TmaK::Load } else { TmaK::Store },
                dims,
                smem,
                map,
                coords,
                mbar,
                mcast,
            })
        } else {
            let dst = self.addr(&o[0])?;
            let src = self.addr(&o[1])?;
            let size = self.src(&o[2], Ty::U32)?;
            let mbar = if load { self.addr(&o[3])? } else { zero };
            AsyncOp::BulkCopy(BulkCopyOp {
                load,
                dst,
                src,
                size,
                mbar,
            })
        };
        self.push(i, Op::Async(op), Class::MemGlobal)
    }

    /// `prefetch{.const,.param}.tensormap [a]`.
    pub(super) fn lower_prefetch_tensormap(
        &mut self,
        i: &ast::Instr,
        q: &mut Quals,
    ) -> Result<(), EmuError> {
        q.has("tensormap");
        let window = match q.space() {
            None | Some(Space::Const) | Some(Space::Global) => 0,
            Some(Space::Param) => PARAM_WINDOW,
            Some(_) => return self.unsupported(&i.opcode),
        };
        self.ops(i, 1)?;
        let addr = self.addr(&i.operands[0])?;
        self.push(
            i,
            Op::Async(AsyncOp::PrefetchTensorMap { addr, window }),
            Class::MemGlobal,
        )
    }

    /// `[tensorMap, {c0, ..}]`: the map's generic address (a register, or a kernel parameter /
    /// module variable named directly) and `dims` coordinate registers.
    fn tensor_addr(&mut self, o: &Operand, dims: u8) -> Result<(R, [R; 5]), EmuError> {
        let Operand::TensorAddr(name, cs) = o else {
            return self.bad("expected `[tensorMap, {coordinates}]`");
        };
        if cs.len() != dims as usize {
            return self.bad(&format!(
                "{} coordinates for a .{dims}d tensor copy",
                cs.len()
            ));
        }
        let map = match self.lookup_reg(name) {
            Some(r) => r,
            None => match self.vars.get(name).copied() {
                Some(VarLoc::Param(off)) => self.constant(PARAM_WINDOW + off as u64),
                Some(VarLoc::Global(_)) => self.src(&Operand::Sym(name.clone()), Ty::U64)?,
                _ => return self.bad(&format!("unknown tensor map `{name}`")),
            },
        };
        let mut coords = [NONE; 5];
        for (k, c) in cs.iter().enumerate() {
            coords[k] = self.src(c, Ty::S32)?;
        }
        Ok((map, coords))
    }
}
