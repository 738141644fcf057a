//! Barrier and synchronisation family, built on one abstraction: a [`Waitable`] is something
//! lanes block on until it completes: a CTA barrier (`bar.sync 0` / `__syncthreads`), a named
//! barrier with a thread count (`bar.sync id, n` / `bar.arrive`), or one phase of an mbarrier
//! object (`mbarrier.try_wait`, state in `mbarrier.rs`). The scheduler asks [`Waitables`]
//! which lanes a completion releases; stall resolution asks which waitables are pending and can
//! only complete because threads exited; the race checker starts a new epoch whenever a
//! waitable that orders shared memory among its participants completes.

use super::mbarrier::Mbars;
use super::{lanes, Env, Warp};
use crate::findings::FindingKind;
use crate::program::*;

/// Number of hardware barriers per CTA (PTX ISA "bar, barrier": ids 0..15).
pub const NUM_BARRIERS: usize = 16;

/// Something lanes wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waitable {
    /// Barrier `id` (0..15) of the CTA, CTA-wide or named with a thread count.
    Barrier(u8),
    /// Phase number `phase` of the mbarrier object at shared-memory offset `off`.
    Mbar { off: u32, phase: u32 },
    /// Warpgroup `g` executed `wgmma.mma_async` operations: its warps blocked in
    /// `wgmma.wait_group` re-check (`wgmma.rs`). Orders nothing by itself.
    Wgmma(u32),
    /// Phase `phase` of the cluster's `barrier.cluster` (`cluster.rs`).
    Cluster(u32),
}

impl Waitable {
    /// Whether completing it orders the shared-memory accesses of everyone before it against
    /// everyone after it (the race checker's epoch boundary). Every barrier completion is
    /// treated as a full CTA barrier: this can hide races between threads outside a named
    /// barrier's set, never invent one.
    fn orders_shared_memory(self) -> bool {
        match self {
            Waitable::Barrier(_) => true,
            // Producer/consumer pipelines order their shared-memory reuse with mbarriers only.
            Waitable::Mbar { .. } => true,
            Waitable::Cluster(_) => true,
            Waitable::Wgmma(_) => false,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct BarState {
    arrived: u32,
    expected: u32,
    first_pc: u32,
    first_tid: u32,
    divergent_reported: bool,
}

/// What every waitable of one CTA has seen so far.
pub(crate) struct Waitables {
    bars: [BarState; NUM_BARRIERS],
    /// Waitables that completed and whose waiters the scheduler must release, in order.
    completed: Vec<Waitable>,
    /// The CTA's mbarrier objects.
    pub mbars: Mbars,
}

impl Waitables {
    pub fn new() -> Self {
        Waitables {
            bars: [BarState::default(); NUM_BARRIERS],
            completed: Vec::new(),
            mbars: Mbars::default(),
        }
    }

    /// Whether a completion is waiting to be released (the running warp yields).
    #[inline]
    pub fn has_completion(&self) -> bool {
        !self.completed.is_empty()
    }

    pub fn take_completion(&mut self) -> Option<Waitable> {
        if self.completed.is_empty() {
            None
        } else {
            Some(self.completed.remove(0))
        }
    }

    /// Queues the completion of `wt` for the scheduler to release.
    pub fn complete(&mut self, wt: Waitable) {
        self.completed.push(wt);
    }

    fn reset(&mut self, wt: Waitable) {
        match wt {
            Waitable::Barrier(id) => self.bars[id as usize] = BarState::default(),
            Waitable::Mbar { .. } | Waitable::Wgmma(_) | Waitable::Cluster(_) => {}
        }
    }

    /// Pending waitables that some thread arrived at: (waitable, arrived, expected, first pc,
    /// first thread).
    fn pending(&self) -> impl Iterator<Item = (Waitable, u32, u32, u32, u32)> + '_ {
        self.bars
            .iter()
            .enumerate()
            .filter(|(_, b)| b.arrived > 0)
            .map(|(id, b)| {
                (
                    Waitable::Barrier(id as u8),
                    b.arrived,
                    b.expected,
                    b.first_pc,
                    b.first_tid,
                )
            })
    }
}

/// `bar.sync`/`barrier.sync`/`bar.arrive` for the active lanes of the group.
#[allow(clippy::too_many_arguments)]
pub(super) fn exec_bar(
    w: &mut Warp,
    env: &mut Env,
    pc: u32,
    active: u32,
    id: R,
    count: R,
    arrive: bool,
) {
    let g = w.group;
    let first = active.trailing_zeros() as usize;
    let bid = (w.r(id, first) & (NUM_BARRIERS as u64 - 1)) as u8;
    let expected = if count == NONE {
        env.nthreads
    } else {
        w.r(count, first) as u32
    };
    let tid = w.id * 32 + first as u32;
    // Divergence is only defined for the CTA-wide form (`__syncthreads`): named barriers with
    // a count legitimately pair `bar.arrive` with `bar.sync`, or barriers at different code
    // locations.
    let full = count == NONE && !arrive;
    let b = &mut env.waits.bars[bid as usize];
    if b.arrived == 0 {
        b.first_pc = pc;
        b.first_tid = tid;
        b.expected = expected;
        b.divergent_reported = !full;
    } else if full && b.first_pc != pc && !b.divergent_reported {
        b.divergent_reported = true;
        let (fpc, ftid) = (b.first_pc, b.first_tid);
        let other_line = env.ctx.prog.insts[fpc as usize].line;
        env.report(
            FindingKind::DivergentBarrier,
            pc,
            tid,
            None,
            Some(ftid),
            || format!("threads wait on barrier {bid} at different instructions (also line {other_line})"),
        );
    }
    let b = &mut env.waits.bars[bid as usize];
    b.arrived += active.count_ones();
    let complete = b.arrived >= b.expected;
    if !arrive {
        w.wait_on(active, pc, Waitable::Barrier(bid));
        w.continue_with(g & !active);
        if w.group == 0 {
            w.update_merge_pc();
        }
    } else {
        w.next();
    }
    if complete {
        env.waits.complete(Waitable::Barrier(bid));
    }
}

/// Completes `wt`: every lane waiting on it moves past the instruction it waits at.
pub(super) fn release(warps: &mut [Warp], env: &mut Env, wt: Waitable) {
    if let Waitable::Wgmma(g) = wt {
        return super::wgmma::on_complete(warps, env, g as usize);
    }
    let prog = env.ctx.prog;
    for w in warps.iter_mut() {
        for l in lanes(w.bar_wait) {
            if w.waiting_on[l] == wt {
                if let Waitable::Mbar { .. } = wt {
                    super::mbarrier::on_release(w, prog, l);
                }
                w.bar_wait &= !(1 << l);
                w.pcs[l] += 1;
            }
        }
    }
    env.waits.reset(wt);
    match wt {
        Waitable::Barrier(_) | Waitable::Cluster(_) => env.cnt.barriers += 1,
        Waitable::Mbar { .. } => env.cnt.mbar_phases += 1,
        Waitable::Wgmma(_) => {}
    }
    if wt.orders_shared_memory() {
        env.smem.next_epoch();
    }
}

/// Stall resolution for waitables: one that misses only exited threads completes, with a
/// finding. Returns whether one was released.
pub(super) fn release_if_only_exited_missing(warps: &mut [Warp], env: &mut Env) -> bool {
    let exited = env.exited_threads;
    let found = env
        .waits
        .pending()
        .find(|&(_, arrived, expected, _, _)| arrived + exited >= expected);
    let Some((wt, arrived, expected, pc, tid)) = found else {
        return false;
    };
    let Waitable::Barrier(id) = wt else {
        return false;
    };
    env.report(
        FindingKind::BarrierWithExitedThreads,
        pc,
        tid,
        None,
        None,
        || format!("barrier {id}: {arrived} of {expected} threads arrived, the others exited"),
    );
    release(warps, env, wt);
    true
}

/// Describes the pending waitables for a deadlock report.
pub(super) fn describe_pending(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = env
        .waits
        .pending()
        .map(|(wt, arrived, expected, _, _)| match wt {
            Waitable::Barrier(id) => format!("barrier {id}: {arrived}/{expected} arrived"),
            Waitable::Mbar { off, phase } => format!("mbarrier {off:#x} phase {phase}"),
            Waitable::Wgmma(g) => format!("warpgroup {g} wgmma"),
            Waitable::Cluster(p) => format!("barrier.cluster phase {p}"),
        })
        .collect();
    v.extend(super::cluster::describe(env));
    v.extend(env.wgmma.describe());
    v.extend(env.waits.mbars.describe());
    v
}
