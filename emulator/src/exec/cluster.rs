//! Thread-block clusters (PTX ISA "Cluster of Cooperative Thread Arrays"): the CTAs of one
//! cluster run together in one scheduler (`mod.rs`, [`run_cluster`](super::run_cluster)), each
//! with its own [`Env`] (shared memory, barriers, mbarriers, in-flight copies); while a warp of
//! one CTA runs, the other CTAs' environments are lent to its `Env::peers`, so an instruction
//! can reach a peer's shared memory and mbarriers directly.
//!
//! Shared::cluster addresses. A CTA's own shared::cta offsets are valid shared::cluster
//! addresses of itself; `mapa` to rank `r` returns the offset tagged with `r + 1` in bits 24..
//! ([`tag`]), which `ld`/`st`/`atom`, `mbarrier` and the tensor copies decode ([`split`]).
//! Generic addresses carry the same value inside the shared window. Shared memory is below 2^18
//! bytes and a cluster has at most 16 CTAs, so the tags never collide with offsets or leave the
//! window.
//!
//! Checks: a rank outside the cluster is an `InvalidClusterRank` finding; reaching the shared
//! memory of a CTA that already exited (its shared memory may be reused), `barrier.cluster.wait`
//! without an arrive, or a second arrive in one phase is a `ClusterMisuse` finding. A peer's
//! accesses go through the same shadow checks as local ones, under a thread key of their own
//! ([`remote_key`]), so a race between CTAs is found like one between warps. The race checker's
//! epochs stay per CTA: a completed `barrier.cluster` starts a new epoch in every CTA, and so
//! does an mbarrier phase that a peer arrived on (a cluster-scope release); as within a CTA,
//! this can hide a race, never invent one.
//!
//! `barrier.cluster.arrive` / `.wait`: every thread of every CTA arrives once per phase; `wait`
//! blocks until the phase of the thread's last arrive completed. A phase missing only exited
//! threads completes at a stall, with a `BarrierWithExitedThreads` finding.

use super::sync::Waitable;
use super::{lanes, Env, Warp};
use crate::findings::FindingKind;
use crate::program::*;
use crate::shared::SharedMem;

/// Bit where the rank tag of a shared::cluster address starts.
const TAG_SHIFT: u32 = 24;
/// Largest cluster the emulator runs (the non-portable maximum of sm_90).
pub const MAX_CLUSTER_CTAS: u32 = 16;
const MAX_CLUSTER_CTAS_U64: u64 = MAX_CLUSTER_CTAS as u64;

/// The shared::cluster address of offset `off` in the CTA of rank `rank`.
pub(crate) fn tag(rank: u32, off: u64) -> u64 {
    ((rank as u64 + 1) << TAG_SHIFT) | (off & ((1 << TAG_SHIFT) - 1))
}

/// (rank, offset) of a shared::cluster address: `None` as rank for an untagged (own) offset,
/// and for a value no tag produces (it stays an offset, out of bounds).
pub(crate) fn split(a: u64) -> (Option<u64>, u64) {
    match a >> TAG_SHIFT {
        t @ 1..=MAX_CLUSTER_CTAS_U64 => (Some(t - 1), a & ((1 << TAG_SHIFT) - 1)),
        _ => (None, a),
    }
}

/// The shadow key (a thread id beyond the CTA's own, with a warp of its own) of thread `tid`
/// of the CTA of rank `rank` when it touches a peer's shared memory.
pub(crate) fn remote_key(rank: u32, tid: u32) -> u32 {
    1024 * (rank + 1) + tid
}

/// The barrier.cluster state, kept in the rank-0 CTA's environment.
#[derive(Default)]
pub(crate) struct ClusterBar {
    arrived: u32,
    /// Phases completed so far.
    phase: u32,
    first_pc: u32,
    first_tid: u32,
}

impl<'a> Env<'a> {
    /// The environment of cluster rank `r`: this CTA or a lent peer (`None` outside the
    /// cluster).
    pub(crate) fn cta_mut(&mut self, r: u32) -> Option<&mut Env<'a>> {
        if r == self.rank {
            return Some(self);
        }
        let i = if r < self.rank { r } else { r - 1 };
        self.peers.get_mut(i as usize)
    }

    /// CTAs in the cluster.
    pub(crate) fn cluster_ctas(&self) -> u32 {
        self.peers.len() as u32 + 1
    }

    /// The shared memory of rank `r` (`r` in the cluster, checked by [`locate`]).
    pub(crate) fn smem_of(&mut self, r: u32) -> &mut SharedMem {
        &mut self.cta_mut(r).expect("rank checked by locate").smem
    }
}

/// Resolves the shared::cluster address `a` used by thread `tid`: (rank, offset in that CTA,
/// shadow key of the access). `None` after a finding (rank outside the cluster, peer exited).
pub(crate) fn locate(env: &mut Env, pc: u32, tid: u32, a: u64) -> Option<(u32, u64, u32)> {
    let (rank, off) = split(a);
    let Some(r) = rank else {
        return Some((env.rank, off, tid));
    };
    if r == env.rank as u64 {
        return Some((env.rank, off, tid));
    }
    let n = env.cluster_ctas();
    if r >= n as u64 {
        env.report(
            FindingKind::InvalidClusterRank,
            pc,
            tid,
            Some(a),
            None,
            || format!("shared::cluster address of CTA rank {r}; the cluster has {n} CTAs"),
        );
        return None;
    }
    let r = r as u32;
    if env.cta_mut(r).is_some_and(|p| p.finished) {
        env.report(FindingKind::ClusterMisuse, pc, tid, Some(a), None, || {
            format!("the shared memory of cluster CTA rank {r} is accessed after that CTA exited")
        });
        return None;
    }
    Some((r, off, remote_key(env.rank, tid)))
}

/// `mapa` and `getctarank` for the active lanes.
pub(super) fn exec_addr(w: &mut Warp, env: &mut Env, pc: u32, active: u32, op: &AsyncOp) {
    let n = env.cluster_ctas();
    for l in lanes(active) {
        let tid = w.id * 32 + l as u32;
        let (d, a, generic) = match *op {
            AsyncOp::Mapa { d, a, generic, .. } | AsyncOp::GetCtaRank { d, a, generic } => {
                (d, a, generic)
            }
            _ => unreachable!("not a cluster address op"),
        };
        let v = w.r(a, l);
        let shared = if generic {
            match v.checked_sub(SHARED_WINDOW) {
                Some(o) if o < WINDOW_SIZE => o,
                _ => {
                    env.report(FindingKind::ClusterMisuse, pc, tid, Some(v), None, || {
                        format!("{v:#x} is not a generic address of shared memory")
                    });
                    w.set(d, l, 0);
                    continue;
                }
            }
        } else {
            v
        };
        let (owner, off) = split(shared);
        let owner = owner.map_or(env.rank, |r| r as u32);
        let out = match *op {
            AsyncOp::Mapa { rank, .. } => {
                let r = w.r(rank, l) as u32;
                if r >= n {
                    env.report(FindingKind::InvalidClusterRank, pc, tid, None, None, || {
                        format!("mapa to CTA rank {r}; the cluster has {n} CTAs")
                    });
                }
                let t = tag(r, off);
                if generic {
                    SHARED_WINDOW + t
                } else {
                    t
                }
            }
            _ => owner as u64,
        };
        w.set(d, l, out);
    }
}

/// `barrier.cluster.arrive` / `barrier.cluster.wait` for the active lanes.
pub(super) fn exec_bar(w: &mut Warp, env: &mut Env, pc: u32, active: u32, wait: bool) {
    let g = w.group;
    if active == 0 {
        return w.next();
    }
    let total = env.nthreads * env.cluster_ctas();
    let mut parked = 0u32;
    for l in lanes(active) {
        let tid = w.id * 32 + l as u32;
        let [arrived, waited] = env.cbar_counts[tid as usize];
        let done = env.cta_mut(0).expect("rank 0").cbar.phase;
        if wait {
            if waited == arrived {
                env.report(FindingKind::ClusterMisuse, pc, tid, None, None, || {
                    "barrier.cluster.wait without a barrier.cluster.arrive before it".to_string()
                });
                continue;
            }
            env.cbar_counts[tid as usize][1] += 1;
            if done < arrived {
                w.wait_on(1 << l, pc, Waitable::Cluster(arrived - 1));
                parked |= 1 << l;
            }
            continue;
        }
        if waited != arrived {
            env.report(FindingKind::ClusterMisuse, pc, tid, None, None, || {
                "a second barrier.cluster.arrive before the barrier.cluster.wait of the first"
                    .to_string()
            });
            continue;
        }
        env.cbar_counts[tid as usize][0] += 1;
        let rank = env.rank;
        let b = &mut env.cta_mut(0).expect("rank 0").cbar;
        if b.arrived == 0 {
            b.first_pc = pc;
            b.first_tid = remote_key(rank, tid);
        }
        b.arrived += 1;
        if b.arrived >= total {
            complete_bar(env);
        }
    }
    if wait {
        w.continue_with(g & !parked);
        if w.group == 0 {
            w.update_merge_pc();
        }
    } else {
        w.next();
    }
}

/// Completes the current barrier.cluster phase: every CTA releases its waiters.
fn complete_bar(env: &mut Env) {
    let b = &mut env.cta_mut(0).expect("rank 0").cbar;
    let phase = b.phase;
    b.phase += 1;
    b.arrived = 0;
    for r in 0..env.cluster_ctas() {
        if let Some(e) = env.cta_mut(r) {
            e.waits.complete(Waitable::Cluster(phase));
        }
    }
}

/// Stall resolution: a barrier.cluster phase that misses only exited threads completes, with
/// a finding. Called with the rank-0 CTA's environment (peers lent).
pub(super) fn release_if_only_exited_missing(env: &mut Env) -> bool {
    let total = env.nthreads * env.cluster_ctas();
    let exited: u32 = (0..env.cluster_ctas())
        .filter_map(|r| env.cta_mut(r).map(|e| e.exited_threads))
        .sum();
    let b = &env.cbar;
    if b.arrived == 0 || b.arrived + exited < total {
        return false;
    }
    let (arrived, pc, key) = (b.arrived, b.first_pc, b.first_tid);
    env.report(
        FindingKind::BarrierWithExitedThreads,
        pc,
        key % 1024,
        None,
        None,
        || format!("barrier.cluster: {arrived} of {total} threads arrived, the others exited"),
    );
    complete_bar(env);
    true
}

/// The pending barrier.cluster phase for a deadlock report (rank 0 holds it).
pub(super) fn describe(env: &Env) -> Option<String> {
    let b = &env.cbar;
    (env.rank == 0 && b.arrived > 0).then(|| {
        format!(
            "barrier.cluster phase {}: {} of {} threads arrived",
            b.phase,
            b.arrived,
            env.nthreads * env.cluster_ctas()
        )
    })
}
