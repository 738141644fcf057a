//! Warpgroup MMA: `wgmma.mma_async` and its asynchronous group machinery (PTX ISA
//! "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions").
//!
//! Execution model. A warpgroup is 4 consecutive warps; `wgmma.mma_async.sync.aligned` is
//! warp-synchronous (`.sync`) and must be executed by all warps of the warpgroup (`.aligned`).
//! For m64nNk16, warp `w % 4` of the warpgroup owns rows 16(w%4)..16(w%4)+15 of A and D and
//! reads all of B, so the product decomposes exactly into four per-warp 16-row slices: each
//! warp computes its slice when it issues the instruction (A and B are read at issue; the
//! ISA makes modifying them before completion undefined, and the checks below report it).
//! The result is held in the warp's in-flight list and written to the accumulator registers
//! only at the `wgmma.wait_group` that covers its commit group, as on hardware where the
//! registers are undefined until then. A later wgmma of the same accumulators (the usual
//! k-loop chain, which the ISA orders without a wait) accumulates onto the in-flight value.
//!
//! Checks. While a wgmma is in flight: any other instruction naming one of its accumulator
//! registers or A-fragment registers (the ISA makes accessing either before the covering
//! `wgmma.wait_group` undefined) is a `WgmmaAccumulatorBeforeWait` finding, and any write to a
//! shared-memory byte it reads is a `WgmmaOperandWriteBeforeWait` finding (`shared.rs` counts
//! readers per byte). Another wgmma may share A registers with it, or chain on its
//! accumulators, but not write its A registers or read its accumulators as A.
//! The operand reads themselves go through the race checker like any shared read, so a tile
//! written by other warps without a barrier in between is a race.
//!
//! Fragment layouts (PTX ISA "Matrix Fragments for wgmma.mma_async", m64nNk16): with
//! g = laneid / 4 and t = laneid % 4 inside warp w%4 of the warpgroup,
//! * D (.f32, N/2 registers d_i): row 16(w%4) + g + 8((i/2)%2), column 8(i/4) + 2t + i%2;
//! * A in registers (4 x .b32, elements a_0..a_7, low half first): the mma.m16n8k16 A layout
//!   shifted by 16(w%4) rows (see `tensor.rs`).
//!
//! Arithmetic: products of f16/bf16 are exact in f64 and summed in f64, then rounded once to
//! f32 (round to nearest even), like `mma.sync` in `tensor.rs`; hardware accumulates with
//! slightly different internal precision, which tests allow for.

use super::mem::{hazard_finding, oob, Loc};
use super::tensor::a_frag_pos;
use super::{Env, Warp};
use crate::findings::FindingKind;
use crate::matrix_desc::{Major, MatrixDesc};
use crate::program::*;
use crate::softfloat::{self as sf, round_f64, Rnd};

/// Sentinel group of a wgmma not yet committed.
const UNCOMMITTED: u32 = u32::MAX;

/// One in-flight `wgmma.mma_async` of one warp.
struct InFlight {
    group: u32,
    pc: u32,
    /// Accumulator registers and their results, `vals[i * 32 + lane]` for register `regs[i]`.
    regs: Vec<R>,
    vals: Vec<u32>,
    /// A-fragment registers (`NONE` for an A in shared memory).
    a_regs: [R; 4],
    /// Shared-memory byte offsets of the 2-byte operand elements it reads.
    smem: Vec<u32>,
}

/// Per-warp wgmma state: in-flight operations in issue order and the commit-group count.
#[derive(Default)]
pub(crate) struct WgState {
    inflight: Vec<InFlight>,
    committed: u32,
    /// Per register, how many in-flight wgmma write it as an accumulator (sized on first use).
    busy: Vec<u16>,
    /// Per register, how many in-flight wgmma read it as an A fragment (sized on first use).
    busy_a: Vec<u16>,
}

impl WgState {
    /// Whether some wgmma is in flight (the per-instruction accumulator check is needed).
    #[inline]
    pub fn active(&self) -> bool {
        !self.inflight.is_empty()
    }

    fn is_busy(&self, r: R) -> bool {
        r != NONE && self.busy.get(r as usize).is_some_and(|&c| c > 0)
    }

    fn is_busy_a(&self, r: R) -> bool {
        r != NONE && self.busy_a.get(r as usize).is_some_and(|&c| c > 0)
    }

    /// The 32 lane values register `r` will hold once everything in flight completed, if an
    /// in-flight wgmma writes it.
    fn pending_values(&self, r: R) -> Option<&[u32]> {
        if !self.is_busy(r) {
            return None;
        }
        self.inflight.iter().rev().find_map(|f| {
            f.regs
                .iter()
                .position(|&x| x == r)
                .map(|i| &f.vals[i * 32..i * 32 + 32])
        })
    }
}

/// A shared-memory operand element read by a wgmma: (value, byte offset), with its checks.
fn read_elem(w: &Warp, env: &mut Env, pc: u32, off: u32, smem: &mut Vec<u32>) -> u16 {
    let tid = w.id * 32;
    let o = off as usize;
    if o + 2 > env.smem.len() {
        oob(env, pc, tid, Loc::Shared(off as u64), 2);
        return 0;
    }
    if let Some(h) = env.smem.read_check(o, 2, tid) {
        hazard_finding(env, pc, tid, off as u64, h);
    }
    smem.push(off);
    u16::from_le_bytes([env.smem.data[o], env.smem.data[o + 1]])
}

/// Issues one `wgmma.mma_async` for this warp's 16-row slice.
pub(super) fn exec_wgmma(w: &mut Warp, env: &mut Env, pc: u32, op: &WgmmaOp) {
    let nwarps = env.nthreads.div_ceil(32);
    let slot = w.id % 4;
    if (w.id - slot) + 4 > nwarps {
        let first = w.id - slot;
        env.report(FindingKind::DivergentCollective, pc, w.id * 32, None, None, || {
            format!("wgmma needs the 4 warps {first}..{} of its warpgroup; the CTA has {nwarps} warps", first + 3)
        });
    }
    let n = op.n as usize;
    let fmt = if op.bf16 { sf::BF16 } else { sf::F16 };
    let sa = if op.neg_a { -1.0 } else { 1.0 };
    let sb = if op.neg_b { -1.0 } else { 1.0 };
    let mut smem = Vec::new();
    // A: this warp's 16 x 16 slice.
    let mut am = [[0f64; 16]; 16];
    if op.a_desc == NONE {
        for lane in 0..32u32 {
            for i in 0..8u32 {
                let (r, c) = a_frag_pos(16, lane, i);
                let v = w.r(op.a_regs[(i / 2) as usize], lane as usize) >> (16 * (i & 1));
                am[r as usize][c as usize] = sa * fmt.to_f64(v & 0xFFFF);
            }
        }
    } else {
        let desc = MatrixDesc::decode(w.r(op.a_desc, 0));
        let major = if op.trans_a { Major::MN } else { Major::K };
        for (r, row) in am.iter_mut().enumerate() {
            for (k, x) in row.iter_mut().enumerate() {
                let off = desc.element_addr(major, 16 * slot + r as u32, k as u32);
                *x = sa * fmt.to_f64(read_elem(w, env, pc, off, &mut smem) as u64);
            }
        }
    }
    // B: 16 x N, element (k, n) at descriptor position (mn = n, k).
    let desc = MatrixDesc::decode(w.r(op.b_desc, 0));
    let major = if op.trans_b { Major::MN } else { Major::K };
    let mut bm = vec![[0f64; 16]; n];
    for (col, bcol) in bm.iter_mut().enumerate() {
        for (k, x) in bcol.iter_mut().enumerate() {
            let off = desc.element_addr(major, col as u32, k as u32);
            *x = sb * fmt.to_f64(read_elem(w, env, pc, off, &mut smem) as u64);
        }
    }
    let regs: Vec<R> = {
        let l = &env.ctx.prog.reg_lists;
        l[op.d.start as usize..(op.d.start + op.d.len) as usize].to_vec()
    };
    let scale_d = w.r(op.scale_d, 0) & 1 == 1;
    // The accumulator input: the in-flight value of a chained wgmma, else the register.
    let mut cur = vec![0u32; regs.len() * 32];
    if scale_d {
        for (i, &reg) in regs.iter().enumerate() {
            let dst = &mut cur[i * 32..i * 32 + 32];
            match w.wg.pending_values(reg) {
                Some(v) => dst.copy_from_slice(v),
                None => {
                    for (lane, x) in dst.iter_mut().enumerate() {
                        *x = w.r(reg, lane) as u32;
                    }
                }
            }
        }
    }
    let mut vals = vec![0u32; regs.len() * 32];
    for lane in 0..32usize {
        let (g, t) = (lane / 4, lane % 4);
        for i in 0..regs.len() {
            let r = g + 8 * ((i / 2) % 2);
            let c = 8 * (i / 4) + 2 * t + i % 2;
            let mut s = 0f64;
            for (k, a) in am[r].iter().enumerate() {
                s += a * bm[c][k];
            }
            if scale_d {
                s += f32::from_bits(cur[i * 32 + lane]) as f64;
            }
            vals[i * 32 + lane] = round_f64(s, 0.0, sf::F32, Rnd::Rn, false) as u32;
        }
    }
    for &off in &smem {
        env.smem.wgmma_mark(off as usize, 2);
    }
    let st = &mut w.wg;
    if st.busy.len() < env.ctx.prog.nregs {
        st.busy.resize(env.ctx.prog.nregs, 0);
        st.busy_a.resize(env.ctx.prog.nregs, 0);
    }
    for &r in &regs {
        st.busy[r as usize] += 1;
    }
    let a_regs = if op.a_desc == NONE {
        op.a_regs
    } else {
        [NONE; 4]
    };
    for r in a_regs.into_iter().filter(|&r| r != NONE) {
        st.busy_a[r as usize] += 1;
    }
    st.inflight.push(InFlight {
        group: UNCOMMITTED,
        pc,
        regs,
        vals,
        a_regs,
        smem,
    });
    if slot == 0 {
        env.cnt.wgmma += 1;
    }
    // Shared-memory operand bytes: each warp reads its 16 rows of a descriptor A (the four
    // slices make the 64 x 16 tile); B (N x 16) is counted once, by the warpgroup's first warp.
    if op.a_desc != NONE {
        env.cnt.wgmma_smem += 16 * 16 * 2;
    }
    if slot == 0 {
        env.cnt.wgmma_smem += op.n as u64 * 16 * 2;
    }
    let flops = 2 * 16 * op.n as u64 * 16;
    env.cnt.flops += flops;
    env.cnt.wgmma_flops += flops;
}

/// `wgmma.commit_group`: every uncommitted wgmma of the warp joins a new group (possibly empty).
pub(super) fn commit(w: &mut Warp) {
    let st = &mut w.wg;
    let id = st.committed;
    for f in st.inflight.iter_mut().filter(|f| f.group == UNCOMMITTED) {
        f.group = id;
    }
    st.committed += 1;
}

/// Completes one in-flight wgmma: results to the registers (when `write`), operands released.
fn retire(w: &mut Warp, env: &mut Env, f: InFlight, write: bool) {
    for (i, &r) in f.regs.iter().enumerate() {
        if write {
            for lane in 0..32 {
                w.set(r, lane, f.vals[i * 32 + lane] as u64);
            }
        }
        w.wg.busy[r as usize] -= 1;
    }
    for r in f.a_regs.into_iter().filter(|&r| r != NONE) {
        w.wg.busy_a[r as usize] -= 1;
    }
    for off in f.smem {
        env.smem.wgmma_unmark(off as usize, 2);
    }
}

/// `wgmma.wait_group n`: completes every committed group but the `n` most recent ones.
pub(super) fn wait(w: &mut Warp, env: &mut Env, n: u32) {
    let target = w.wg.committed.saturating_sub(n);
    let all = std::mem::take(&mut w.wg.inflight);
    let mut keep = Vec::with_capacity(all.len());
    for f in all {
        if f.group != UNCOMMITTED && f.group < target {
            retire(w, env, f, true);
        } else {
            keep.push(f);
        }
    }
    w.wg.inflight = keep;
}

/// The warp exited with wgmma in flight: their results are lost, their operands released.
pub(super) fn abandon(w: &mut Warp, env: &mut Env) {
    for f in std::mem::take(&mut w.wg.inflight) {
        retire(w, env, f, false);
    }
}

/// Reports an instruction that names an accumulator or A-fragment register of an in-flight
/// wgmma. Another `wgmma.mma_async` may name them as its own accumulators (same-shape chains
/// are ordered by the hardware) or share its A registers, but may not read an in-flight
/// accumulator as A (or through a descriptor register) nor accumulate into in-flight A.
pub(super) fn check_access(w: &Warp, env: &mut Env, pc: u32, op: &Op, active: u32) {
    // A guard that is false in every lane of the group: the instruction touches nothing.
    if active == 0 {
        return;
    }
    let st = &w.wg;
    let mut hit = NONE;
    let mut see = |r: R, acc: bool, a: bool| {
        if hit == NONE && ((acc && st.is_busy(r)) || (a && st.is_busy_a(r))) {
            hit = r;
        }
    };
    match op {
        Op::Wgmma(o) => {
            for r in o.a_regs {
                see(r, true, false);
            }
            for r in [o.a_desc, o.b_desc, o.scale_d] {
                see(r, true, true);
            }
            let l = &env.ctx.prog.reg_lists;
            for &r in &l[o.d.start as usize..(o.d.start + o.d.len) as usize] {
                see(r, false, true);
            }
        }
        _ => op_regs(op, &mut |r| see(r, true, true)),
    }
    if hit == NONE {
        return;
    }
    let lane = active.trailing_zeros();
    let (issued, what) = st
        .inflight
        .iter()
        .rev()
        .find_map(|f| {
            let line = env.ctx.prog.insts[f.pc as usize].line;
            if f.regs.contains(&hit) {
                Some((line, "accumulator"))
            } else if f.a_regs.contains(&hit) {
                Some((line, "A-fragment"))
            } else {
                None
            }
        })
        .unwrap_or((0, "operand"));
    env.report(
        FindingKind::WgmmaAccumulatorBeforeWait,
        pc,
        w.id * 32 + lane,
        None,
        None,
        || format!("{what} register of the wgmma.mma_async at line {issued} used before wgmma.wait_group"),
    );
}

/// Calls `f` on every register operand (source or destination) of `op`.
fn op_regs(op: &Op, f: &mut impl FnMut(R)) {
    let mut all = |rs: &[R]| rs.iter().for_each(|&r| f(r));
    match *op {
        Op::Mov { d, a, .. }
        | Op::Lane(LaneOp::Un { d, a, .. })
        | Op::Lane(LaneOp::FUn { d, a, .. })
        | Op::Lane(LaneOp::Sfu { d, a, .. })
        | Op::Lane(LaneOp::Cvt { d, a, .. })
        | Op::Lane(LaneOp::Cvta { d, a, .. }) => all(&[d, a]),
        Op::Lane(LaneOp::Bin { d, a, b, .. })
        | Op::Lane(LaneOp::FBin { d, a, b, .. })
        | Op::Lane(LaneOp::CvtPack { d, a, b, .. }) => all(&[d, a, b]),
        Op::Lane(LaneOp::Tern { d, a, b, c, .. })
        | Op::Lane(LaneOp::Fma { d, a, b, c, .. })
        | Op::Lane(LaneOp::SlctF32 { d, a, b, c, .. }) => all(&[d, a, b, c]),
        Op::Bfi { d, a, b, c, e, .. } => all(&[d, a, b, c, e]),
        Op::Setp {
            d, dn, a, b, comb, ..
        } => {
            all(&[d, dn, a, b]);
            if let Some((_, p, _)) = comb {
                all(&[p]);
            }
        }
        Op::Pack { d, parts, .. } => {
            all(&[d]);
            all(&parts);
        }
        Op::Unpack { ds, a, .. } => {
            all(&ds);
            all(&[a]);
        }
        Op::Ld(LdOp { ds, addr, .. }) | Op::Ldmatrix(MatrixOp { regs: ds, addr, .. }) => {
            all(&ds);
            all(&[addr.base]);
        }
        Op::St(StOp { srcs, addr, .. })
        | Op::Stmatrix(MatrixOp {
            regs: srcs, addr, ..
        }) => {
            all(&srcs);
            all(&[addr.base]);
        }
        Op::Atom(AtomOp { d, addr, a, b, .. }) => all(&[d, addr.base, a, b]),
        Op::CpAsync(CpAsyncOp {
            dst,
            src,
            src_size,
            ignore_src,
            ..
        }) => all(&[dst.base, src.base, src_size, ignore_src]),
        Op::Bar { id, count, .. } => all(&[id, count]),
        Op::BarWarp { mask } => all(&[mask]),
        Op::Shfl {
            d,
            p,
            a,
            b,
            c,
            mask,
            ..
        } => all(&[d, p, a, b, c, mask]),
        Op::Vote { d, a, mask, .. } | Op::Redux { d, a, mask, .. } => all(&[d, a, mask]),
        Op::Match { d, p, a, mask, .. } => all(&[d, p, a, mask]),
        Op::Elect { d, p, mask } => all(&[d, p, mask]),
        Op::Activemask { d } | Op::Clock { d } => all(&[d]),
        Op::Mma(MmaOp { d, a, b, c, .. }) => {
            all(&d);
            all(&a);
            all(&b);
            all(&c);
        }
        // No register operands, or handled by the caller (wgmma). Instructions of families
        // added later default to unchecked rather than failing to build.
        #[allow(unreachable_patterns)]
        _ => {}
    }
}
