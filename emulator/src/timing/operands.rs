//! Static per-instruction facts the timing model needs, computed once per kernel from the
//! lowered program: the execution class of each PTX instruction after ptxas (the PTX -> SASS
//! cost map, [`Kind`]) and the registers it reads and writes (for the scoreboard).
//!
//! The PTX -> SASS cost map (the emulator runs PTX; hardware runs ptxas's SASS, and the toolkit
//! wheels we build with ship no disassembler, so this map stands in for reading the SASS):
//! - register moves (`mov`, `mov` packing/unpacking vectors, `cvta`), `ld.param` and
//!   `wgmma.fence` are [`Kind::Free`]: ptxas coalesces moves in register allocation, folds
//!   parameter loads into constant-bank operands and address conversions into the address
//!   arithmetic. A free instruction takes no issue slot; its destination is ready when its
//!   sources are.
//! - every other PTX instruction is one SASS instruction of its class. Known departures, not
//!   modelled: `div`/`rem`/`sqrt` expand to sequences, 64-bit integer arithmetic to two
//!   instructions, and ptxas fuses or removes some address arithmetic.
//! - ptxas's instruction scheduling is not modelled: the warp issues in PTX order (the order of
//!   nvcc's PTX is already scheduled by NVVM for loads early and uses late).

use crate::program::*;

/// What the SM does with an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No SASS instruction (see the module doc).
    Free,
    /// Integer / logical / compare / select / min-max / vote (ALU pipe).
    Alu,
    /// FP32 and packed FP16/BF16 arithmetic (FMA pipe).
    Fma,
    Fp64,
    /// MUFU: ex2, lg2, rcp, rsqrt, sin, cos, tanh, sqrt, division.
    Sfu,
    /// Float conversions (`cvt` with a float side, `cvt.rn.f16x2.f32`).
    Conv,
    /// `mma.sync`; `k8`: m16n8k8 (half the work of m16n8k16).
    Mma {
        k8: bool,
    },
    /// Shared-memory read with a result (ld.shared, ldmatrix); its wavefronts come from the trace.
    SharedLd,
    /// Shared-memory write (st.shared, stmatrix).
    SharedSt,
    /// Warp shuffles and reductions through the crossbar (shfl, match, redux).
    Shuffle,
    /// Global (or local) load with a result; atomics with a return value.
    GlobalLd {
        local: bool,
    },
    /// Global (or local) store, `red`.
    GlobalSt {
        local: bool,
    },
    /// `cp.async` global -> shared.
    CpAsync,
    CpCommit,
    /// `cp.async.wait_group n`.
    CpWait(u32),
    /// `bar.sync` / `bar.arrive` (ids and counts are in the trace).
    Bar {
        arrive: bool,
    },
    Branch,
    Exit,
    /// `wgmma.mma_async` m64nNk16 (`n8` = N / 8): each warp of the warpgroup issues it and its
    /// sub-partition's tensor core does the warp's m16nNk16 quarter, asynchronously.
    Wgmma {
        n8: u16,
    },
    WgmmaCommit,
    /// `wgmma.wait_group n`.
    WgmmaWait(u32),
    /// `mbarrier.init` (the expected arrivals are in the trace).
    MbarInit,
    /// `mbarrier.arrive` (with `.expect_tx`: its bytes are in the trace).
    MbarArrive,
    /// `mbarrier.expect_tx` / `mbarrier.complete_tx`.
    MbarTx {
        complete: bool,
    },
    /// `mbarrier.test_wait` / `try_wait` (the parity waited for is in the trace).
    MbarWait,
    /// `cp.async.bulk.tensor` global -> shared, completing its bytes on an mbarrier.
    TmaLoad,
    /// `cp.async.bulk.tensor` shared -> global, in a bulk async-group.
    TmaStore,
    BulkCommit,
    /// `cp.async.bulk.wait_group n`.
    BulkWait(u32),
    /// An instruction the timing model does not handle yet (named).
    Unsupported(&'static str),
}

/// Static facts of one instruction: its kind and where its registers are in [`Statics::regs`].
#[derive(Debug, Clone, Copy)]
pub struct InstInfo {
    pub kind: Kind,
    pub defs: (u32, u16),
    pub uses: (u32, u16),
}

/// Static facts of a whole program.
#[derive(Debug, Clone, Default)]
pub struct Statics {
    pub insts: Vec<InstInfo>,
    pub regs: Vec<R>,
    pub nregs: usize,
}

impl Statics {
    pub fn defs(&self, i: &InstInfo) -> &[R] {
        &self.regs[i.defs.0 as usize..i.defs.0 as usize + i.defs.1 as usize]
    }
    pub fn uses(&self, i: &InstInfo) -> &[R] {
        &self.regs[i.uses.0 as usize..i.uses.0 as usize + i.uses.1 as usize]
    }

    pub(crate) fn of(prog: &Program) -> Statics {
        let mut s = Statics {
            insts: Vec::with_capacity(prog.insts.len()),
            regs: Vec::new(),
            nregs: prog.nregs,
        };
        for inst in &prog.insts {
            let mut defs: Vec<R> = Vec::new();
            let mut uses: Vec<R> = Vec::new();
            if inst.guard != NONE {
                uses.push(inst.guard);
            }
            let kind = classify(prog, inst, &mut defs, &mut uses);
            let mut push = |v: &[R]| {
                let start = s.regs.len() as u32;
                s.regs.extend(v.iter().copied().filter(|&r| r != NONE));
                (start, (s.regs.len() as u32 - start) as u16)
            };
            let defs = push(&defs);
            let uses = push(&uses);
            s.insts.push(InstInfo { kind, defs, uses });
        }
        s
    }
}

fn float_kind(ty: FTy) -> Kind {
    match ty {
        FTy::F64 => Kind::Fp64,
        _ => Kind::Fma,
    }
}

fn classify(prog: &Program, inst: &Inst, d: &mut Vec<R>, u: &mut Vec<R>) -> Kind {
    match inst.op {
        Op::Mov { d: x, a, .. } => {
            d.push(x);
            u.push(a);
            Kind::Free
        }
        Op::Pack { d: x, parts, n, .. } => {
            d.push(x);
            u.extend_from_slice(&parts[..n as usize]);
            Kind::Free
        }
        Op::Unpack { ds, n, a, .. } => {
            d.extend_from_slice(&ds[..n as usize]);
            u.push(a);
            Kind::Free
        }
        Op::Lane(ref op) => lane_kind(op, d, u),
        Op::Bfi {
            d: x, a, b, c, e, ..
        } => {
            d.push(x);
            u.extend([a, b, c, e]);
            Kind::Alu
        }
        Op::Setp {
            d: x,
            dn,
            a,
            b,
            comb,
            ..
        } => {
            d.extend([x, dn]);
            u.extend([a, b]);
            if let Some((_, c, _)) = comb {
                u.push(c);
            }
            Kind::Alu
        }
        Op::Ld(ref op) => {
            d.extend_from_slice(&op.ds[..op.n as usize]);
            u.push(op.addr.base);
            match op.sp {
                crate::types::Space::Param | crate::types::Space::Const => Kind::Free,
                crate::types::Space::Shared => Kind::SharedLd,
                crate::types::Space::Local => Kind::GlobalLd { local: true },
                _ => match inst.class {
                    Class::MemShared => Kind::SharedLd,
                    _ => Kind::GlobalLd { local: false },
                },
            }
        }
        Op::St(ref op) => {
            u.extend_from_slice(&op.srcs[..op.n as usize]);
            u.push(op.addr.base);
            match inst.class {
                Class::MemShared => Kind::SharedSt,
                Class::MemLocal => Kind::GlobalSt { local: true },
                _ => Kind::GlobalSt { local: false },
            }
        }
        Op::Atom(ref op) => {
            u.extend([op.addr.base, op.a, op.b]);
            let shared = inst.class == Class::MemShared;
            if op.d == NONE {
                if shared {
                    Kind::SharedSt
                } else {
                    Kind::GlobalSt { local: false }
                }
            } else {
                d.push(op.d);
                if shared {
                    Kind::SharedLd
                } else {
                    Kind::GlobalLd { local: false }
                }
            }
        }
        Op::CpAsync(ref op) => {
            u.extend([op.dst.base, op.src.base, op.src_size, op.ignore_src]);
            Kind::CpAsync
        }
        Op::CpCommit => Kind::CpCommit,
        Op::CpWait { n } => Kind::CpWait(n),
        Op::Bra { .. } => Kind::Branch,
        Op::Exit => Kind::Exit,
        Op::Trap => Kind::Exit,
        Op::Bar {
            id, count, arrive, ..
        } => {
            u.extend([id, count]);
            Kind::Bar { arrive }
        }
        // `bar.warp.sync` of a converged warp is a no-op in SASS (WARPSYNC of all lanes).
        Op::BarWarp { mask } => {
            u.push(mask);
            Kind::Free
        }
        Op::Shfl {
            d: x,
            p,
            a,
            b,
            c,
            mask,
            ..
        } => {
            d.extend([x, p]);
            u.extend([a, b, c, mask]);
            Kind::Shuffle
        }
        Op::Vote { d: x, a, mask, .. } => {
            d.push(x);
            u.extend([a, mask]);
            Kind::Alu
        }
        Op::Match {
            d: x, p, a, mask, ..
        } => {
            d.extend([x, p]);
            u.extend([a, mask]);
            Kind::Shuffle
        }
        Op::Redux { d: x, a, mask, .. } => {
            d.push(x);
            u.extend([a, mask]);
            Kind::Shuffle
        }
        Op::Activemask { d: x } => {
            d.push(x);
            Kind::Alu
        }
        Op::Elect { d: x, p, mask } => {
            d.extend([x, p]);
            u.push(mask);
            Kind::Alu
        }
        Op::Mma(ref op) => {
            d.extend(op.d);
            u.extend(op.a);
            u.extend(op.b);
            u.extend(op.c);
            Kind::Mma {
                k8: op.shape == MmaShape::M16N8K8,
            }
        }
        Op::Ldmatrix(ref op) => {
            d.extend_from_slice(&op.regs[..op.num as usize]);
            u.push(op.addr.base);
            Kind::SharedLd
        }
        Op::Stmatrix(ref op) => {
            u.extend_from_slice(&op.regs[..op.num as usize]);
            u.push(op.addr.base);
            Kind::SharedSt
        }
        Op::Wgmma(ref op) => {
            let l = op.d;
            d.extend_from_slice(&prog.reg_lists[l.start as usize..(l.start + l.len) as usize]);
            u.extend([op.a_desc, op.b_desc, op.scale_d]);
            u.extend_from_slice(&op.a_regs);
            Kind::Wgmma {
                n8: (op.n / 8).max(1) as u16,
            }
        }
        Op::WgmmaFence => Kind::Free,
        Op::WgmmaCommit => Kind::WgmmaCommit,
        Op::WgmmaWait { n } => Kind::WgmmaWait(n),
        Op::Clock { d: x } => {
            d.push(x);
            Kind::Alu
        }
        Op::Async(AsyncOp::FenceProxyAsync { .. }) => Kind::Free,
        Op::Async(AsyncOp::Mapa { d: x, a, rank, .. }) => {
            d.push(x);
            u.extend([a, rank]);
            Kind::Alu
        }
        Op::Async(AsyncOp::GetCtaRank { d: x, a, .. }) => {
            d.push(x);
            u.push(a);
            Kind::Alu
        }
        Op::Async(AsyncOp::ClusterBar { .. }) => Kind::Unsupported("barrier.cluster"),
        Op::Async(AsyncOp::Mbar(ref op)) => {
            u.extend([op.addr.base, op.a, op.b]);
            match op.k {
                MbarK::Init => Kind::MbarInit,
                MbarK::Inval => Kind::Free,
                MbarK::Arrive { .. } => {
                    d.push(op.d);
                    Kind::MbarArrive
                }
                MbarK::ExpectTx => Kind::MbarTx { complete: false },
                MbarK::CompleteTx => Kind::MbarTx { complete: true },
                MbarK::Wait { .. } => {
                    d.push(op.d);
                    Kind::MbarWait
                }
                MbarK::PendingCount => {
                    d.push(op.d);
                    Kind::Alu
                }
            }
        }
        Op::Async(AsyncOp::Tma(ref op)) if op.mcast != NONE => {
            Kind::Unsupported("cp.async.bulk.tensor .multicast::cluster")
        }
        Op::Async(AsyncOp::Tma(ref op)) => {
            u.extend([op.map, op.smem.base, op.mbar.base]);
            u.extend_from_slice(&op.coords[..op.dims as usize]);
            match op.k {
                TmaK::Load => Kind::TmaLoad,
                TmaK::Store => Kind::TmaStore,
                TmaK::Prefetch => Kind::Free,
            }
        }
        Op::Async(AsyncOp::BulkCommit) => Kind::BulkCommit,
        Op::Async(AsyncOp::BulkWait { n, .. }) => Kind::BulkWait(n),
        Op::Async(AsyncOp::PrefetchTensorMap { .. }) => Kind::Free,
        Op::Async(AsyncOp::BulkCopy(_)) => Kind::Unsupported("cp.async.bulk (non-tensor)"),
        Op::Nop => Kind::Free,
    }
}

fn lane_kind(op: &LaneOp, d: &mut Vec<R>, u: &mut Vec<R>) -> Kind {
    // (destination, sources padded with NONE, kind); NONE entries are dropped by the caller.
    let (x, srcs, kind) = match *op {
        LaneOp::Bin { d, a, b, .. } => (d, [a, b, NONE], Kind::Alu),
        LaneOp::Un { d, a, .. } => (d, [a, NONE, NONE], Kind::Alu),
        LaneOp::Tern { d, a, b, c, .. } => (d, [a, b, c], Kind::Alu),
        LaneOp::FBin {
            op, ty, d, a, b, ..
        } => {
            let k = match op {
                FOp::Div => Kind::Sfu,
                FOp::Min | FOp::Max | FOp::Copysign if ty != FTy::F64 => Kind::Alu,
                _ => float_kind(ty),
            };
            (d, [a, b, NONE], k)
        }
        LaneOp::FUn { ty, d, a, .. } => (d, [a, NONE, NONE], float_kind(ty)),
        LaneOp::Fma { ty, d, a, b, c, .. } => (d, [a, b, c], float_kind(ty)),
        LaneOp::SlctF32 { d, a, b, c, .. } => (d, [a, b, c], Kind::Alu),
        LaneOp::Sfu { d, a, .. } => (d, [a, NONE, NONE], Kind::Sfu),
        LaneOp::Cvt { k, d, a } => {
            let kind = if k.from.is_float() || k.to.is_float() {
                Kind::Conv
            } else {
                Kind::Alu
            };
            (d, [a, NONE, NONE], kind)
        }
        LaneOp::CvtPack { d, a, b, .. } => (d, [a, b, NONE], Kind::Conv),
        LaneOp::Cvta { d, a, .. } => (d, [a, NONE, NONE], Kind::Free),
    };
    d.push(x);
    u.extend(srcs);
    kind
}
