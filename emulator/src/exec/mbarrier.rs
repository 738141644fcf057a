//! mbarrier family: the mbarrier objects of one CTA and the instructions on them, following
//! PTX ISA "Parallel Synchronization and Communication Instructions: mbarrier".
//!
//! An object holds the current phase, the pending arrival count, the expected arrival count and
//! the transaction count (tx-count). `init` sets phase 0, pending = expected = count, tx-count 0.
//! `arrive` decrements the pending count (by `count`, default 1; `arrive_drop` also lowers the
//! expected count of later phases); `expect_tx` raises and `complete_tx` (and every byte a bulk
//! or TMA copy lands) lowers the tx-count. The current phase completes when the pending count
//! and the tx-count are both zero: the phase number advances (its parity flips), the pending
//! count reloads from the expected count and the tx-count restarts at zero.
//!
//! Waits: `test_wait` / `try_wait` take the state token an `arrive` returned (complete when its
//! phase is no longer the current one) or, with `.parity`, a phase parity (complete when the
//! current phase's parity differs, i.e. the phase of that parity completed). `test_wait` never
//! blocks. `try_wait` parks the lane on a [`Waitable::Mbar`] until the phase completes (the
//! scheduler then writes `true`): its time limit is taken as "until nothing else can run", at
//! which point the waiters get `false` (a legal time-out) once; if nothing changed on any
//! mbarrier since the previous time-out, the CTA is deadlocked (a finding), as for `bar.sync`.
//! Before a wait looks at an object, the bulk/TMA copies completing on it land (`bulk.rs`).
//!
//! Object memory is opaque: the 8 bytes are marked in the shared-memory shadow so a plain
//! load/store of them is a finding; state lives here, keyed by shared-memory offset.

use std::collections::HashMap;

use super::mem::{fits, lane_addr, oob, resolve, Loc};
use super::sync::Waitable;
use super::{bulk, lanes, Env, Warp};
use crate::findings::FindingKind;
use crate::program::*;
use crate::types::Space;

/// Largest arrival count and |tx-count| (PTX ISA: both in the range of 20 bits).
const MAX_COUNT: u32 = (1 << 20) - 1;
const TX_LIMIT: i64 = (1 << 20) - 1;
/// Marks a value as a state token of this emulator (bit 63), so junk is detected.
const TOKEN: u64 = 1 << 63;

#[derive(Debug, Clone, Default)]
struct MbarObj {
    expected: u32,
    pending: u32,
    tx: i64,
    phase: u32,
    /// Bulk/TMA destinations (offset, len) landed in the current phase: readable once it
    /// completes.
    guarded: Vec<(u32, u32)>,
    /// A lane waits on the current phase (for deadlock reports).
    waited: bool,
    /// A peer CTA arrived in the current phase (`cluster.rs`: its completion starts a new
    /// race-checker epoch in every CTA).
    remote: bool,
}

/// Every mbarrier object of one CTA.
#[derive(Default)]
pub(crate) struct Mbars {
    objs: HashMap<u32, MbarObj>,
    /// Bumped on every state change: a stall times the try_wait waiters out only if something
    /// changed since the previous time-out; otherwise it is a deadlock.
    changes: u64,
    timed_out_at: Option<u64>,
}

impl Mbars {
    /// Whether an initialised object lives at `off`.
    pub fn is_valid(&self, off: u32) -> bool {
        self.objs.contains_key(&off)
    }

    /// Records bulk/TMA destination bytes that become readable when the current phase of the
    /// object at `off` completes.
    pub fn guard(&mut self, off: u32, run: (u32, u32)) {
        if let Some(m) = self.objs.get_mut(&off) {
            m.guarded.push(run);
        }
    }

    /// Pending mbarrier waits for a deadlock report.
    pub fn describe(&self) -> Vec<String> {
        let mut v: Vec<(&u32, &MbarObj)> = self.objs.iter().filter(|(_, m)| m.waited).collect();
        v.sort_by_key(|(o, _)| **o);
        v.into_iter()
            .map(|(o, m)| {
                format!(
                    "mbarrier at shared {o:#x}: phase {} waits for {} of {} arrivals, tx-count {}",
                    m.phase, m.pending, m.expected, m.tx
                )
            })
            .collect()
    }
}

/// The CTA rank and shared-memory offset of lane `l`'s mbarrier operand (a shared::cluster
/// address: a peer's object through `mapa`), or `None` after a finding.
pub(super) fn mbar_target(
    w: &Warp,
    env: &mut Env,
    pc: u32,
    l: usize,
    addr: Addr,
    generic: bool,
) -> Option<(u32, u32)> {
    let a = lane_addr(w, addr, l);
    let tid = w.id * 32 + l as u32;
    let a = if generic {
        match resolve(Space::Generic, a) {
            Loc::Shared(o) => o,
            _ => {
                env.report(FindingKind::MbarrierMisuse, pc, tid, Some(a), None, || {
                    format!("mbarrier address {a:#x} is not in shared memory")
                });
                return None;
            }
        }
    } else {
        a
    };
    let (rank, off, _) = super::cluster::locate(env, pc, tid, a)?;
    if !off.is_multiple_of(8) {
        env.report(FindingKind::Misaligned, pc, tid, Some(off), None, || {
            "an mbarrier object is 8-byte aligned".to_string()
        });
        return None;
    }
    if !fits(off, 8, env.smem.len() as u64) {
        oob(env, pc, tid, Loc::Shared(off), 8);
        return None;
    }
    Some((rank, off as u32))
}

/// Reports a misuse of the mbarrier object at shared offset `off` by thread `tid`.
fn misuse(env: &mut Env, pc: u32, tid: u32, off: u32, detail: impl FnOnce() -> String) {
    env.report(
        FindingKind::MbarrierMisuse,
        pc,
        tid,
        Some(off as u64),
        None,
        detail,
    );
}

fn uninit(env: &mut Env, pc: u32, tid: u32, off: u32, what: &str) {
    misuse(env, pc, tid, off, || {
        format!("{what} on shared {off:#x}, which holds no initialised mbarrier (mbarrier.init missing, or after mbarrier.inval)")
    });
}

/// Completes the current phase of the object at `off` if no arrival and no transaction is
/// pending: releases its guarded copy destinations and queues the completion.
fn maybe_complete(env: &mut Env, off: u32) {
    let Some(m) = env.waits.mbars.objs.get_mut(&off) else {
        return;
    };
    if m.pending != 0 || m.tx != 0 {
        return;
    }
    let phase = m.phase;
    m.phase = m.phase.wrapping_add(1);
    m.pending = m.expected;
    m.waited = false;
    env.cluster_epoch |= std::mem::take(&mut m.remote);
    let guarded = std::mem::take(&mut m.guarded);
    for (o, n) in guarded {
        env.smem.bulk_release(o as usize, n as usize);
    }
    env.waits.complete(Waitable::Mbar { off, phase });
}

/// A replaced or invalidated object no longer guards the copy destinations that landed in its
/// last phase (nothing can complete that phase any more).
fn release_guarded(env: &mut Env, old: Option<MbarObj>) {
    for (o, n) in old.map(|m| m.guarded).unwrap_or_default() {
        env.smem.bulk_release(o as usize, n as usize);
    }
}

/// Changes the tx-count of the object at `off` by `delta` (a landed copy passes minus its
/// bytes) and completes the phase if that was the last thing pending.
pub(super) fn add_tx(env: &mut Env, off: u32, delta: i64, pc: u32, tid: u32) {
    let Some(m) = env.waits.mbars.objs.get_mut(&off) else {
        return uninit(env, pc, tid, off, "a transaction count update");
    };
    m.tx += delta;
    let tx = m.tx;
    env.waits.mbars.changes += 1;
    if tx.abs() > TX_LIMIT {
        misuse(env, pc, tid, off, || {
            format!("tx-count {tx} is outside the range +-(2^20-1)")
        });
    }
    maybe_complete(env, off);
}

/// One arrive-on operation; returns the state token (phase and pending count before it).
fn arrive(env: &mut Env, off: u32, count: u32, k: MbarK, pc: u32, tid: u32, remote: bool) -> u64 {
    let MbarK::Arrive {
        drop, no_complete, ..
    } = k
    else {
        return 0;
    };
    let Some(m) = env.waits.mbars.objs.get_mut(&off) else {
        uninit(env, pc, tid, off, "mbarrier.arrive");
        return 0;
    };
    let token = TOKEN | m.phase as u64 | ((m.pending as u64) << 32);
    m.remote |= remote;
    let over = count > m.pending;
    let pending = m.pending;
    let take = count.min(m.pending);
    m.pending -= take;
    if drop {
        m.expected = m.expected.saturating_sub(count);
    }
    let completes = m.pending == 0 && m.tx == 0;
    env.waits.mbars.changes += 1;
    if over {
        misuse(env, pc, tid, off, || {
            format!(
                "arrive with count {count} but only {pending} arrivals are pending in this phase"
            )
        });
    }
    if no_complete && completes {
        misuse(env, pc, tid, off, || {
            "mbarrier.arrive.noComplete completed the phase".to_string()
        });
    }
    maybe_complete(env, off);
    token
}

/// Whether the wait operand `v` (state token or parity) names a completed phase.
fn wait_done(m: &MbarObj, parity: bool, v: u64) -> bool {
    if parity {
        (m.phase & 1) as u64 != v & 1
    } else {
        v as u32 != m.phase
    }
}

/// Executes an `mbarrier` instruction for the active lanes (in lane order) and moves the group
/// on; `try_wait` lanes whose phase is incomplete park instead.
pub(super) fn exec(w: &mut Warp, env: &mut Env, pc: u32, active: u32, op: &MbarOp) {
    let MbarOp {
        k,
        d,
        addr,
        generic,
        a,
        b,
    } = *op;
    let g = w.group;
    let mut parked = 0u32;
    for l in lanes(active) {
        let tid = w.id * 32 + l as u32;
        if k == MbarK::PendingCount {
            let v = w.r(a, l);
            w.set(d, l, (v >> 32) & MAX_COUNT as u64);
            continue;
        }
        let Some((rank, off)) = mbar_target(w, env, pc, l, addr, generic) else {
            if d != NONE {
                w.set(d, l, 0);
            }
            continue;
        };
        if rank != env.rank {
            // A peer's object: arrivals and transaction counts only (PTX ISA "mbarrier":
            // init, inval and the waits take shared::cta objects).
            let remote = matches!(
                k,
                MbarK::Arrive { .. } | MbarK::ExpectTx | MbarK::CompleteTx
            );
            if !remote {
                env.report(FindingKind::ClusterMisuse, pc, tid, Some(off as u64), None, || {
                    format!("this mbarrier operation needs the CTA's own object; {off:#x} is CTA rank {rank}'s")
                });
                if d != NONE {
                    w.set(d, l, 0);
                }
                continue;
            }
            let t = env.cta_mut(rank).expect("rank checked by mbar_target");
            let val = |r: R| if r == NONE { 0 } else { w.r(r, l) };
            remote_op(t, k, off, [val(a), val(b)], a == NONE, pc, tid);
            if d != NONE {
                w.set(d, l, 0);
            }
            continue;
        }
        match k {
            MbarK::Init => {
                let count = w.r(a, l) as u32;
                if count == 0 || count > MAX_COUNT {
                    misuse(env, pc, tid, off, || {
                        format!("mbarrier.init count {count} is outside 1..=2^20-1")
                    });
                }
                if let Some(h) = env.smem.mbar_mark(off as usize) {
                    super::mem::hazard_finding(env, pc, tid, off as u64, h);
                }
                let count = count.clamp(1, MAX_COUNT);
                let old = env.waits.mbars.objs.insert(
                    off,
                    MbarObj {
                        expected: count,
                        pending: count,
                        ..MbarObj::default()
                    },
                );
                release_guarded(env, old);
                env.waits.mbars.changes += 1;
            }
            MbarK::Inval => {
                match env.waits.mbars.objs.remove(&off) {
                    None => uninit(env, pc, tid, off, "mbarrier.inval"),
                    old => release_guarded(env, old),
                }
                env.smem.mbar_clear(off as usize);
                env.waits.mbars.changes += 1;
            }
            MbarK::Arrive { expect_tx, .. } => {
                if expect_tx {
                    add_tx(env, off, w.r(b, l) as u32 as i64, pc, tid);
                }
                let count = if a == NONE { 1 } else { w.r(a, l) as u32 };
                if count == 0 || count > MAX_COUNT {
                    misuse(env, pc, tid, off, || {
                        format!("arrive count {count} is outside 1..=2^20-1")
                    });
                }
                let token = arrive(env, off, count, k, pc, tid, false);
                if d != NONE {
                    w.set(d, l, token);
                }
            }
            MbarK::ExpectTx => add_tx(env, off, w.r(a, l) as u32 as i64, pc, tid),
            MbarK::CompleteTx => add_tx(env, off, -(w.r(a, l) as u32 as i64), pc, tid),
            MbarK::Wait { parity, try_wait } => {
                bulk::land_for(env, off);
                let v = w.r(a, l);
                let Some(m) = env.waits.mbars.objs.get_mut(&off) else {
                    uninit(env, pc, tid, off, "mbarrier wait");
                    // Nothing can ever complete it: park, so a wait loop ends as a deadlock
                    // instead of spinning.
                    if try_wait {
                        w.wait_on(
                            1 << l,
                            pc,
                            Waitable::Mbar {
                                off,
                                phase: u32::MAX,
                            },
                        );
                        parked |= 1 << l;
                    } else {
                        w.set(d, l, 0);
                    }
                    continue;
                };
                let bad_token = !parity && v & TOKEN == 0;
                let done = bad_token || wait_done(m, parity, v);
                if !done && try_wait {
                    m.waited = true;
                    let phase = m.phase;
                    w.wait_on(1 << l, pc, Waitable::Mbar { off, phase });
                    parked |= 1 << l;
                } else {
                    w.set(d, l, done as u64);
                }
                if bad_token {
                    misuse(env, pc, tid, off, || {
                        format!(
                            "wait operand {v:#x} is not a state token returned by mbarrier.arrive"
                        )
                    });
                }
            }
            MbarK::PendingCount => {}
        }
    }
    w.continue_with(g & !parked);
    if w.group == 0 {
        w.update_merge_pc();
    }
}

/// An arrive / expect_tx / complete_tx by a thread of a peer CTA on the object at `off` of
/// `env`'s CTA (operand values `[a, b]`; `one`: the arrive has no count operand). Findings go
/// to the object's CTA. The arrive's state token is not returned (PTX ISA: a remote arrive
/// takes the sink `_`).
fn remote_op(env: &mut Env, k: MbarK, off: u32, [a, b]: [u64; 2], one: bool, pc: u32, tid: u32) {
    match k {
        MbarK::Arrive { expect_tx, .. } => {
            if expect_tx {
                add_tx(env, off, b as u32 as i64, pc, tid);
            }
            let count = if one {
                1
            } else {
                (a as u32).clamp(1, MAX_COUNT)
            };
            arrive(env, off, count, k, pc, tid, true);
        }
        MbarK::ExpectTx => add_tx(env, off, a as u32 as i64, pc, tid),
        MbarK::CompleteTx => add_tx(env, off, -(a as u32 as i64), pc, tid),
        _ => {}
    }
}

/// Called by the scheduler's stall resolution once no in-flight bulk / TMA copy is left to
/// land (`bulk::land_all`): times out the `try_wait` waiters once per change of mbarrier
/// state. Returns whether something changed (false: not this family's stall).
pub(super) fn time_out(warps: &mut [Warp], env: &mut Env) -> bool {
    let waiting = warps.iter().any(|w| {
        lanes(w.bar_wait & w.live()).any(|l| matches!(w.waiting_on[l], Waitable::Mbar { .. }))
    });
    let mb = &mut env.waits.mbars;
    if !waiting || mb.timed_out_at == Some(mb.changes) {
        return false;
    }
    mb.timed_out_at = Some(mb.changes);
    let prog = env.ctx.prog;
    for w in warps.iter_mut() {
        for l in lanes(w.bar_wait & w.live()) {
            if let Waitable::Mbar { .. } = w.waiting_on[l] {
                if let Op::Async(AsyncOp::Mbar(MbarOp { d, .. })) = prog.insts[w.pcs[l] as usize].op
                {
                    w.set(d, l, 0);
                }
                w.bar_wait &= !(1 << l);
                w.pcs[l] += 1;
            }
        }
    }
    true
}

/// A completed phase releases a parked `try_wait` lane: its predicate becomes true.
pub(super) fn on_release(w: &mut Warp, prog: &Program, l: usize) {
    if let Op::Async(AsyncOp::Mbar(MbarOp { d, .. })) = prog.insts[w.pcs[l] as usize].op {
        if d != NONE {
            w.set(d, l, 1);
        }
    }
}
