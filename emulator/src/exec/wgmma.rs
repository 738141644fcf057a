//! Warpgroup MMA: `wgmma.mma_async` and its asynchronous group machinery (PTX ISA
//! "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions").
//!
//! Execution model. A warpgroup is 4 consecutive warps; `wgmma.mma_async.sync.aligned` is one
//! operation of the warpgroup (`.aligned`: all four warps execute the same instruction), so
//! the emulator executes it once, when the last of the four warps issues it: each warp's issue
//! is recorded in its [`Warpgroup`] (the k-th `wgmma.mma_async` a warp issues is its share of
//! the warpgroup's k-th operation), and the issue that completes the set hands the operation
//! to the scheduler, which executes it before any other instruction runs ([`on_complete`],
//! reached through [`Waitable::Wgmma`]). The operation then reads its shared-memory operands
//! and the A-fragment and accumulator registers of all four warps, and computes the 64 x N
//! product: for m64nNk16, warp `w % 4` owns rows 16(w%4)..16(w%4)+15 of A and D. The
//! descriptors and scale-d are taken as each warp issued them (the ISA lets a program change
//! those registers after issuing; it forbids touching the A and accumulator registers until
//! the wait, see below). The results stay in the operation until each warp's
//! `wgmma.wait_group` covering it writes that warp's accumulator registers, as on hardware
//! where they are undefined until then. A later wgmma of the same accumulators (the usual
//! k-loop chain, which the ISA orders without a wait) accumulates onto the earlier result.
//!
//! `wgmma.wait_group` in a warp returns only when every operation in the groups it retires
//! has executed, i.e. has been issued by all four warps: until then the warp blocks on
//! [`Waitable::Wgmma`]. The first wait that retires an operation completes it for the whole
//! warpgroup (PTX ISA "wgmma.wait_group": the committed operations are complete), so its
//! shared-memory operands are free from then on: a stage released right after one thread's
//! wait (the producer/consumer pipeline pattern) is released correctly.
//!
//! Divergence. An operation that a warp of its warpgroup can never issue (the warp exited,
//! does not exist, or every thread is stuck elsewhere at a stall) executes with the warps that
//! issued it and is a `DivergentCollective` finding, as a warp collective missing lanes is; so
//! is a warpgroup whose warps issue different wgmma instructions as the same operation.
//!
//! Checks. While a wgmma is in flight in a warp (from its issue to the warp's covering wait):
//! any other instruction naming one of its accumulator registers or A-fragment registers (the
//! ISA makes accessing either before the covering `wgmma.wait_group` undefined) is a
//! `WgmmaAccumulatorBeforeWait` finding, and any write to a shared-memory byte the warp's
//! slice reads, from the warp's issue until the operation completed, is a
//! `WgmmaOperandWriteBeforeWait` finding (`shared.rs` counts readers per byte). Another wgmma may share A registers with it, or chain on its
//! accumulators, but not write its A registers or read its accumulators as A. The operand
//! reads go through the race checker as reads by the warp owning the slice, except that a
//! write by a warp of the same warpgroup before its issue is ordered before them (the
//! operation starts after every warp's issue), so a tile written by other warps without a
//! barrier in between is a race. `wgmma.fence` (PTX ISA "wgmma.fence": required before the
//! first `wgmma.mma_async` of a warp and between any other access to a register and a
//! `wgmma.mma_async` that uses it as accumulator or A fragment) is checked per warp: an
//! accumulator or A register accessed by another instruction since the warp's last fence is a
//! `WgmmaMissingFence` finding at the wgmma, and so is a first wgmma with no fence before it.
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

use std::collections::VecDeque;

use super::mem::{hazard_finding, oob, Loc};
use super::sync::Waitable;
use super::tensor::a_frag_pos;
use super::{lanes, Env, Warp};
use crate::findings::FindingKind;
use crate::matrix_desc::{Major, MatrixDesc};
use crate::program::*;
use crate::shared::Hazard;
use crate::softfloat::{self as sf, round_f64, Rnd};

/// Sentinel group of a wgmma not yet committed.
const UNCOMMITTED: u32 = u32::MAX;
/// Warps per warpgroup.
const WARPS: usize = 4;
/// All four slots of a warpgroup.
const ALL: u8 = 0xF;

/// One wgmma of one warp between its issue and the warp's covering wait (or exit).
struct InFlight {
    /// The warpgroup operation's sequence number.
    seq: u64,
    group: u32,
    pc: u32,
}

/// Per-warp wgmma state: in-flight operations in issue order, the commit-group count and the
/// register bookkeeping of the checks.
#[derive(Default)]
pub(crate) struct WgState {
    inflight: Vec<InFlight>,
    committed: u32,
    /// Per register, how many in-flight wgmma write it as an accumulator (sized on first use).
    busy: Vec<u16>,
    /// Per register, how many in-flight wgmma read it as an A fragment (sized on first use).
    busy_a: Vec<u16>,
    /// `wgmma.fence` count of the warp (0: it never executed one).
    fences: u32,
    /// Per watched register ([`FenceWatch`]): the fence count when another instruction last
    /// accessed it, and that instruction (sized on first use).
    touched: Vec<(u32, u32)>,
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
}

/// What one warp named when it issued its share of a warpgroup operation.
#[derive(Clone, Copy)]
struct Issue {
    pc: u32,
    /// A's descriptor (unused for an A in registers) and B's, as the warp issued them.
    a_desc: u64,
    b_desc: u64,
    scale_d: bool,
}

/// One warpgroup `wgmma.mma_async`.
#[derive(Default)]
struct Operation {
    issues: [Option<Issue>; WARPS],
    /// Executed although some warp never issued it (stall resolution).
    forced: bool,
    /// Some warp's `wgmma.wait_group` retired it: complete, its operand reads done.
    complete: bool,
    /// Slots that issued it and have not retired (or abandoned) it yet.
    holders: u8,
    /// Per slot, the results: `vals[i * 32 + lane]` for accumulator register i.
    results: [Vec<u32>; WARPS],
    /// Per slot, the shared-memory byte offsets of the 2-byte operand elements its slice
    /// reads: A's 16 x 16 (descriptor A only), then B's N x 16. Marked from the warp's issue
    /// until the operation completes: the ISA forbids modifying them in between.
    offs: [Vec<u32>; WARPS],
}

impl Operation {
    /// The operation completed (or was dropped): its operands may be written again.
    fn unmark(&self, env: &mut Env) {
        for &off in self.offs.iter().flatten() {
            env.smem.wgmma_unmark(off as usize, 2);
        }
    }
}

impl Operation {
    fn issued(&self) -> u8 {
        (0..WARPS).fold(0, |m, s| m | (self.issues[s].is_some() as u8) << s)
    }
}

/// One warpgroup's operations, from the oldest one some warp still holds.
#[derive(Default)]
pub(crate) struct Warpgroup {
    ops: VecDeque<Operation>,
    /// Sequence number of `ops[0]`.
    base: u64,
    /// Sequence number of the first operation not executed yet (they execute in order).
    next_exec: u64,
    /// Per slot, how many `wgmma.mma_async` its warp issued.
    issued: [u64; WARPS],
    /// Slots whose warp exited or does not exist.
    gone: u8,
    /// Per slot and register (sized on first use): the latest executed operation writing it
    /// as an accumulator that the slot has not retired yet (the input of a chained wgmma), as
    /// [`Chain::pack`]ed (sequence, register index); 0 for none.
    pending: [Vec<u64>; WARPS],
}

/// A [`Warpgroup::pending`] entry: sequence number + 1 above, accumulator index (< 128) in
/// the low 8 bits.
struct Chain;

impl Chain {
    fn pack(seq: u64, i: usize) -> u64 {
        (seq + 1) << 8 | i as u64
    }

    /// (sequence, index) of a non-zero entry.
    fn unpack(v: u64) -> Option<(u64, usize)> {
        (v != 0).then(|| ((v >> 8) - 1, (v & 0xFF) as usize))
    }
}

impl Warpgroup {
    fn op(&self, seq: u64) -> Option<&Operation> {
        seq.checked_sub(self.base)
            .and_then(|i| self.ops.get(i as usize))
    }

    fn op_mut(&mut self, seq: u64) -> Option<&mut Operation> {
        seq.checked_sub(self.base)
            .and_then(|i| self.ops.get_mut(i as usize))
    }

    /// Whether the next operation can execute: every warp that can still issue it did.
    fn ready(&self) -> bool {
        self.op(self.next_exec).is_some_and(|o| {
            let issued = o.issued();
            issued != 0 && (o.forced || issued | self.gone == ALL)
        })
    }

    /// Drops the operations no warp holds any more (executed ones only, from the front),
    /// releasing the shared-memory operands of those no wait completed.
    fn collect(&mut self, env: &mut Env) {
        while let Some(o) = self.ops.front() {
            if self.base >= self.next_exec || o.holders != 0 {
                break;
            }
            let o = self.ops.pop_front().expect("front exists");
            if !o.complete {
                o.unmark(env);
            }
            self.base += 1;
        }
    }
}

/// The warpgroups of one CTA.
pub(crate) struct Warpgroups(Vec<Warpgroup>);

impl Warpgroups {
    /// The warpgroups of a CTA of `nwarps` warps; slots past the last warp never issue.
    pub fn new(nwarps: u32) -> Self {
        let n = (nwarps as usize).div_ceil(WARPS);
        Warpgroups(
            (0..n)
                .map(|g| Warpgroup {
                    gone: (0..WARPS)
                        .filter(|s| g * WARPS + s >= nwarps as usize)
                        .fold(0, |m, s| m | 1 << s),
                    ..Default::default()
                })
                .collect(),
        )
    }

    /// Descriptions of operations some warp waits for, for a deadlock report.
    pub fn describe(&self) -> Vec<String> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(g, wg)| {
                let o = wg.op(wg.next_exec)?;
                let missing = ALL & !o.issued() & !wg.gone;
                (missing != 0).then(|| {
                    format!(
                        "warpgroup {g}: wgmma {} waits for warps {}",
                        wg.next_exec,
                        slot_list(g, missing)
                    )
                })
            })
            .collect()
    }
}

/// The warps of warpgroup `g` named by the slot mask `m`, e.g. "4, 5".
fn slot_list(g: usize, m: u8) -> String {
    (0..WARPS)
        .filter(|s| m >> s & 1 == 1)
        .map(|s| (g * WARPS + s).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `wgmma.mma_async` at `pc`.
fn wgmma_at(prog: &Program, pc: u32) -> &WgmmaOp {
    match &prog.insts[pc as usize].op {
        Op::Wgmma(o) => o,
        other => unreachable!("not a wgmma at pc {pc}: {other:?}"),
    }
}

/// The accumulator registers of `op`.
fn acc_regs<'p>(prog: &'p Program, op: &WgmmaOp) -> &'p [R] {
    &prog.reg_lists[op.d.start as usize..(op.d.start + op.d.len) as usize]
}

/// Registers the `wgmma.fence` check watches: the accumulator and A-fragment registers of
/// every `wgmma.mma_async` of a program, and which of them every other instruction names
/// (computed once per module, so the per-instruction cost is one slice lookup).
#[derive(Debug, Clone)]
pub(crate) struct FenceWatch {
    /// Per register, its index among the watched ones, or `u32::MAX`.
    index: Vec<u32>,
    count: usize,
    /// Per instruction, the range of `names` holding the watched registers it names (none
    /// for a wgmma: accesses by wgmma themselves need no fence).
    at: Vec<(u32, u32)>,
    names: Vec<u32>,
}

impl FenceWatch {
    /// `None` for a program without `wgmma.mma_async` (nothing to watch).
    pub fn of(prog: &Program) -> Option<FenceWatch> {
        let mut index = vec![u32::MAX; prog.nregs];
        let mut count = 0usize;
        for i in &prog.insts {
            if let Op::Wgmma(o) = &i.op {
                let a = o.a_regs.into_iter().filter(|_| o.a_desc == NONE);
                for r in acc_regs(prog, o).iter().copied().chain(a) {
                    if r != NONE && index[r as usize] == u32::MAX {
                        index[r as usize] = count as u32;
                        count += 1;
                    }
                }
            }
        }
        if count == 0 {
            return None;
        }
        let mut names = Vec::new();
        let at = prog
            .insts
            .iter()
            .map(|i| {
                let start = names.len() as u32;
                if !matches!(i.op, Op::Wgmma(_)) {
                    let mut see = |r: R| {
                        if let Some(&x) = index.get(r as usize) {
                            if x != u32::MAX {
                                names.push(x);
                            }
                        }
                    };
                    op_regs(&i.op, &mut see);
                    see(i.guard);
                }
                (start, names.len() as u32)
            })
            .collect();
        Some(FenceWatch {
            index,
            count,
            at,
            names,
        })
    }

    /// Whether the instruction at `pc` names a watched register.
    #[inline]
    pub fn watches(&self, pc: u32) -> bool {
        let (a, b) = self.at[pc as usize];
        a != b
    }
}

/// Records that the instruction at `pc` (executed by some lane) accessed watched registers.
pub(super) fn touch(w: &mut Warp, fw: &FenceWatch, pc: u32) {
    let st = &mut w.wg;
    if st.touched.len() < fw.count {
        st.touched.resize(fw.count, (0, 0));
    }
    let stamp = (st.fences + 1, pc);
    let (a, b) = fw.at[pc as usize];
    for &x in &fw.names[a as usize..b as usize] {
        st.touched[x as usize] = stamp;
    }
}

/// `wgmma.fence`: orders the warp's earlier register accesses before its later wgmma.
pub(super) fn fence(w: &mut Warp) {
    w.wg.fences += 1;
}

/// PTX ISA "wgmma.fence": reports a `wgmma.mma_async` with no fence before it in its warp, or
/// whose accumulator or A registers another instruction accessed after the warp's last fence.
fn check_fence(w: &Warp, env: &mut Env, pc: u32, op: &WgmmaOp) {
    let Some(fw) = env.ctx.fence_watch else {
        return;
    };
    let st = &w.wg;
    if st.fences == 0 {
        env.report(
            FindingKind::WgmmaMissingFence,
            pc,
            w.id * 32,
            None,
            None,
            || "no wgmma.fence before the warp's first wgmma.mma_async".to_string(),
        );
        return;
    }
    let a = op.a_regs.into_iter().filter(|_| op.a_desc == NONE);
    let prog = env.ctx.prog;
    for r in acc_regs(prog, op).iter().copied().chain(a) {
        let Some(&(fences, at)) = fw
            .index
            .get(r as usize)
            .and_then(|&x| st.touched.get(x as usize))
        else {
            continue;
        };
        if fences == st.fences + 1 {
            let line = prog.insts[at as usize].line;
            env.report(FindingKind::WgmmaMissingFence, pc, w.id * 32, None, None, || {
                format!("an operand register of this wgmma.mma_async was accessed at line {line} after the warp's last wgmma.fence")
            });
            return;
        }
    }
}

/// The shared-memory offsets of the operand elements slot `slot`'s slice of `op` reads: for a
/// descriptor A its rows 16 slot .. 16 slot + 15 (row-major over k), then B as (n, k)
/// column-major over k (element (k, n) is at descriptor position (mn = n, k)).
fn operand_offsets(op: &WgmmaOp, is: &Issue, slot: u32) -> Vec<u32> {
    let mut offs = Vec::with_capacity(16 * (op.n as usize + 16));
    if op.a_desc != NONE {
        let desc = MatrixDesc::decode(is.a_desc);
        let major = if op.trans_a { Major::MN } else { Major::K };
        for r in 0..16 {
            offs.extend((0..16).map(|k| desc.element_addr(major, 16 * slot + r, k)));
        }
    }
    let desc = MatrixDesc::decode(is.b_desc);
    let major = if op.trans_b { Major::MN } else { Major::K };
    for col in 0..op.n {
        offs.extend((0..16).map(|k| desc.element_addr(major, col, k)));
    }
    offs
}

/// Issues one `wgmma.mma_async` for this warp: records its share of the warpgroup operation
/// and, when it is the last share, queues the operation's execution.
pub(super) fn exec_wgmma(w: &mut Warp, env: &mut Env, pc: u32, op: &WgmmaOp) {
    let nwarps = env.nthreads.div_ceil(32);
    let slot = (w.id % 4) as usize;
    let g = (w.id / 4) as usize;
    if w.id - slot as u32 + 4 > nwarps {
        let first = w.id - slot as u32;
        env.report(FindingKind::DivergentCollective, pc, w.id * 32, None, None, || {
            format!("wgmma needs the 4 warps {first}..{} of its warpgroup; the CTA has {nwarps} warps", first + 3)
        });
    }
    check_fence(w, env, pc, op);
    let issue = Issue {
        pc,
        a_desc: if op.a_desc == NONE {
            0
        } else {
            w.r(op.a_desc, 0)
        },
        b_desc: w.r(op.b_desc, 0),
        scale_d: w.r(op.scale_d, 0) & 1 == 1,
    };
    let offs = operand_offsets(op, &issue, slot as u32);
    let wg = &mut env.wgmma.0[g];
    let seq = wg.issued[slot];
    wg.issued[slot] += 1;
    if seq < wg.next_exec {
        // The operation already executed without this warp (forced at a stall).
        let line = env.ctx.prog.insts[pc as usize].line;
        env.report(FindingKind::DivergentCollective, pc, w.id * 32, None, None, || {
            format!("wgmma at line {line} issued after its warpgroup operation executed without this warp; ignored")
        });
        return;
    }
    let idx = (seq - wg.base) as usize;
    while wg.ops.len() <= idx {
        wg.ops.push_back(Operation::default());
    }
    for &off in &offs {
        if off as usize + 2 <= env.smem.len() {
            env.smem.wgmma_mark(off as usize, 2);
        }
    }
    let o = &mut wg.ops[idx];
    o.issues[slot] = Some(issue);
    o.offs[slot] = offs;
    o.holders |= 1 << slot;
    let ready = wg.ready();
    let st = &mut w.wg;
    let nregs = env.ctx.prog.nregs;
    if st.busy.len() < nregs {
        st.busy.resize(nregs, 0);
        st.busy_a.resize(nregs, 0);
    }
    for &r in acc_regs(env.ctx.prog, op) {
        st.busy[r as usize] += 1;
    }
    if op.a_desc == NONE {
        for r in op.a_regs {
            st.busy_a[r as usize] += 1;
        }
    }
    st.inflight.push(InFlight {
        seq,
        group: UNCOMMITTED,
        pc,
    });
    if ready {
        env.waits.complete(Waitable::Wgmma(g as u32));
    }
}

/// The scheduler's half of [`Waitable::Wgmma`]: executes warpgroup `g`'s operations that
/// every warp issued (right after the last issue, before any other instruction runs), then
/// lets its warps blocked in `wgmma.wait_group` retire what they wait for.
pub(super) fn on_complete(warps: &mut [Warp], env: &mut Env, g: usize) {
    let mut wg = std::mem::take(&mut env.wgmma.0[g]);
    while wg.ready() {
        execute(&mut wg, warps, env, g);
    }
    wg.collect(env);
    env.wgmma.0[g] = wg;
    let first = g * WARPS;
    let prog = env.ctx.prog;
    for w in warps.iter_mut().skip(first).take(WARPS) {
        let waiting = lanes(w.bar_wait & w.live())
            .filter(|&l| w.waiting_on[l] == Waitable::Wgmma(g as u32))
            .fold(0u32, |m, l| m | 1 << l);
        if waiting == 0 {
            continue;
        }
        let pc = w.pcs[waiting.trailing_zeros() as usize];
        let Op::WgmmaWait { n } = prog.insts[pc as usize].op else {
            unreachable!("a lane waits on a warpgroup away from wgmma.wait_group");
        };
        if wait(w, env, n) {
            for l in lanes(waiting) {
                w.pcs[l] += 1;
            }
            w.bar_wait &= !waiting;
        }
    }
}

/// A shared-memory operand element read by the operation for the slice of warp `warp`: its
/// value, with the checks.
fn read_elem(env: &mut Env, warp: u32, pc: u32, off: u32) -> u16 {
    let tid = warp * 32;
    let o = off as usize;
    if o + 2 > env.smem.len() {
        oob(env, pc, tid, Loc::Shared(off as u64), 2);
        return 0;
    }
    let ordered = |h: &Hazard| matches!(*h, Hazard::Raw(t) if t / 128 == warp / 4);
    let mut hz = env.smem.read_check(o, 2, tid);
    if hz.as_ref().is_some_and(ordered) {
        // Written by a warp of this warpgroup before it issued: ordered. Byte by byte, so
        // that another hazard of the second byte is not hidden.
        hz = (o..o + 2)
            .filter_map(|b| env.smem.read_check(b, 1, tid))
            .find(|h| !ordered(h));
    }
    if let Some(h) = hz {
        hazard_finding(env, pc, tid, off as u64, h);
    }
    u16::from_le_bytes([env.smem.data[o], env.smem.data[o + 1]])
}

/// Executes the warpgroup's next operation: every issued slice reads its operands and
/// computes its 16 rows.
fn execute(wg: &mut Warpgroup, warps: &[Warp], env: &mut Env, g: usize) {
    let seq = wg.next_exec;
    let idx = (seq - wg.base) as usize;
    let prog = env.ctx.prog;
    let issues = wg.ops[idx].issues;
    let issued = wg.ops[idx].issued();
    let (first_slot, first) = (0..WARPS)
        .find_map(|s| issues[s].map(|i| (s, i)))
        .expect("an executed operation has an issue");
    let tid0 = ((g * WARPS + first_slot) * 32) as u32;
    let missing = ALL & !issued;
    if missing != 0 {
        let line = prog.insts[first.pc as usize].line;
        let (gone, stuck) = (missing & wg.gone, missing & !wg.gone);
        env.report(FindingKind::DivergentCollective, first.pc, tid0, None, None, || {
            let mut why = Vec::new();
            if gone != 0 {
                why.push(format!("warps {} exited or do not exist", slot_list(g, gone)));
            }
            if stuck != 0 {
                why.push(format!("warps {} never reached it", slot_list(g, stuck)));
            }
            format!("the wgmma at line {line} is a warpgroup operation but {}; executed with the warps that issued it", why.join(" and "))
        });
    }
    if let Some(other) = issues.iter().flatten().find(|i| i.pc != first.pc) {
        let (l1, l2) = (
            prog.insts[first.pc as usize].line,
            prog.insts[other.pc as usize].line,
        );
        env.report(FindingKind::DivergentCollective, other.pc, tid0, None, None, || {
            format!("warps of one warpgroup issue different wgmma instructions (lines {l1} and {l2}) as the same operation")
        });
    }
    let mut results: [Vec<u32>; WARPS] = Default::default();
    for (s, is) in issues.iter().enumerate() {
        let Some(is) = is else { continue };
        let w = &warps[g * WARPS + s];
        results[s] = slice(wg, w, env, s, is, &wg.ops[idx].offs[s]);
    }
    // Results (and chain inputs) only for warps still holding it: an exited warp's are lost.
    let holders = wg.ops[idx].holders;
    for (s, is) in issues.iter().enumerate() {
        let Some(is) = is else { continue };
        if holders >> s & 1 == 0 {
            results[s] = Vec::new();
            continue;
        }
        let op = wgmma_at(prog, is.pc);
        let pending = &mut wg.pending[s];
        if pending.len() < prog.nregs {
            pending.resize(prog.nregs, 0);
        }
        for (i, &r) in acc_regs(prog, op).iter().enumerate() {
            pending[r as usize] = Chain::pack(seq, i);
        }
    }
    wg.ops[idx].results = results;
    wg.next_exec += 1;
    // Counters: one instruction of the warpgroup; B (N x 16) read once, a descriptor A's
    // 64 x 16 rows as four 16-row slices.
    let op = wgmma_at(prog, first.pc);
    env.cnt.wgmma += 1;
    env.cnt.wgmma_smem += op.n as u64 * 16 * 2;
}

/// Reads slot `s`'s operands (warp `w`, as it issued `is`) and computes its 16 x N slice of D.
fn slice(wg: &Warpgroup, w: &Warp, env: &mut Env, s: usize, is: &Issue, offs: &[u32]) -> Vec<u32> {
    let prog = env.ctx.prog;
    let op = wgmma_at(prog, is.pc);
    let pc = is.pc;
    let n = op.n as usize;
    let fmt = if op.bf16 { sf::BF16 } else { sf::F16 };
    let sa = if op.neg_a { -1.0 } else { 1.0 };
    let sb = if op.neg_b { -1.0 } else { 1.0 };
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
    }
    let mut offs = offs.iter();
    let mut elem = |env: &mut Env| {
        let off = *offs.next().expect("an offset per operand element");
        fmt.to_f64(read_elem(env, w.id, pc, off) as u64)
    };
    if op.a_desc != NONE {
        for row in am.iter_mut() {
            for x in row.iter_mut() {
                *x = sa * elem(env);
            }
        }
        env.cnt.wgmma_smem += 16 * 16 * 2;
    }
    // B: 16 x N.
    let mut bm = vec![[0f64; 16]; n];
    for bcol in bm.iter_mut() {
        for x in bcol.iter_mut() {
            *x = sb * elem(env);
        }
    }
    let regs = acc_regs(prog, op);
    // The accumulator input: a chained wgmma's result the warp has not retired yet, else the
    // register.
    let mut cur = vec![0u32; regs.len() * 32];
    if is.scale_d {
        for (i, &reg) in regs.iter().enumerate() {
            let dst = &mut cur[i * 32..i * 32 + 32];
            let chained = wg.pending[s]
                .get(reg as usize)
                .and_then(|&v| Chain::unpack(v))
                .and_then(|(sq, j)| wg.op(sq)?.results[s].get(j * 32..j * 32 + 32));
            match chained {
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
            let mut acc = 0f64;
            for (k, a) in am[r].iter().enumerate() {
                acc += a * bm[c][k];
            }
            if is.scale_d {
                acc += f32::from_bits(cur[i * 32 + lane]) as f64;
            }
            vals[i * 32 + lane] = round_f64(acc, 0.0, sf::F32, Rnd::Rn, false) as u32;
        }
    }
    let flops = 2 * 16 * op.n as u64 * 16;
    env.cnt.flops += flops;
    env.cnt.wgmma_flops += flops;
    vals
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

/// `wgmma.wait_group n`: when every operation of the committed groups but the `n` most recent
/// ones has executed, retires them (results to the registers, the operations complete) and
/// returns true; otherwise changes nothing and returns false (the warp blocks).
pub(super) fn wait(w: &mut Warp, env: &mut Env, n: u32) -> bool {
    let target = w.wg.committed.saturating_sub(n);
    let covered = |f: &InFlight| f.group != UNCOMMITTED && f.group < target;
    let g = (w.id / 4) as usize;
    let next_exec = env.wgmma.0[g].next_exec;
    if w.wg
        .inflight
        .iter()
        .any(|f| covered(f) && f.seq >= next_exec)
    {
        return false;
    }
    let slot = (w.id % 4) as usize;
    let mut wg = std::mem::take(&mut env.wgmma.0[g]);
    let all = std::mem::take(&mut w.wg.inflight);
    let mut keep = Vec::with_capacity(all.len());
    for f in all {
        if covered(&f) {
            release(w, env, &mut wg, slot, f, true);
        } else {
            keep.push(f);
        }
    }
    w.wg.inflight = keep;
    wg.collect(env);
    env.wgmma.0[g] = wg;
    true
}

/// Ends slot `slot`'s hold on an operation: results to the registers (when `write`),
/// registers free; the first wait completes the operation and frees its operands.
fn release(w: &mut Warp, env: &mut Env, wg: &mut Warpgroup, slot: usize, f: InFlight, write: bool) {
    let prog = env.ctx.prog;
    let op = wgmma_at(prog, f.pc);
    let regs = acc_regs(prog, op);
    let executed = f.seq < wg.next_exec;
    if let Some(o) = wg.op_mut(f.seq) {
        let vals = std::mem::take(&mut o.results[slot]);
        if write && !vals.is_empty() {
            for (i, &r) in regs.iter().enumerate() {
                for lane in 0..32 {
                    w.set(r, lane, vals[i * 32 + lane] as u64);
                }
            }
        }
        if write && !o.complete && executed {
            o.complete = true;
            o.unmark(env);
        }
        o.holders &= !(1 << slot);
    }
    for &r in regs {
        w.wg.busy[r as usize] -= 1;
        if let Some(v) = wg.pending[slot].get_mut(r as usize) {
            if Chain::unpack(*v).is_some_and(|(sq, _)| sq == f.seq) {
                *v = 0;
            }
        }
    }
    if op.a_desc == NONE {
        for r in op.a_regs {
            w.wg.busy_a[r as usize] -= 1;
        }
    }
}

/// The warp exited: it issues nothing more, and its in-flight results are lost. Operations
/// waiting only for it can now execute.
pub(super) fn abandon(w: &mut Warp, env: &mut Env) {
    let (g, slot) = ((w.id / 4) as usize, (w.id % 4) as usize);
    let mut wg = std::mem::take(&mut env.wgmma.0[g]);
    wg.gone |= 1 << slot;
    for f in std::mem::take(&mut w.wg.inflight) {
        release(w, env, &mut wg, slot, f, false);
    }
    wg.collect(env);
    let ready = wg.ready();
    env.wgmma.0[g] = wg;
    if ready {
        env.waits.complete(Waitable::Wgmma(g as u32));
    }
}

/// Stall resolution: some warpgroup's next operation misses warps that cannot issue it (they
/// wait for something that never comes): it executes with the warps that issued it (a
/// `DivergentCollective` finding). Returns whether one did.
pub(super) fn force_at_stall(warps: &mut [Warp], env: &mut Env) -> bool {
    let Some(g) = env
        .wgmma
        .0
        .iter()
        .position(|wg| wg.op(wg.next_exec).is_some_and(|o| o.issued() != 0))
    else {
        return false;
    };
    let wg = &mut env.wgmma.0[g];
    let seq = wg.next_exec;
    if let Some(o) = wg.op_mut(seq) {
        o.forced = true;
    }
    on_complete(warps, env, g);
    true
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
    let prog = env.ctx.prog;
    let (issued, what) = st
        .inflight
        .iter()
        .rev()
        .find_map(|f| {
            let line = prog.insts[f.pc as usize].line;
            let o = wgmma_at(prog, f.pc);
            if acc_regs(prog, o).contains(&hit) {
                Some((line, "accumulator"))
            } else if o.a_desc == NONE && o.a_regs.contains(&hit) {
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
