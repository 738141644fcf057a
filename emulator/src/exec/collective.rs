//! Warp collectives: the readiness rule (all required lanes converged here, else wait or report),
//! and the data movement of `shfl.sync`, `vote.sync`, `match.sync`, `redux.sync`. (`mma` and
//! `ldmatrix` use the readiness rule from `tensor.rs`.)

use super::{lanes, Env, Warp};
use crate::findings::FindingKind;
use crate::program::*;

/// Reports a collective whose lanes do not agree (`tid`: the first lane concerned).
fn divergent(env: &mut Env, pc: u32, tid: u32, detail: impl FnOnce() -> String) {
    env.report(
        FindingKind::DivergentCollective,
        pc,
        tid,
        None,
        None,
        detail,
    );
}

/// The message of one member-mask violation, from its lanes and the member mask.
type MaskMessage = fn(u32, u32) -> String;

/// Decides whether the group may execute a collective that needs the lanes in `required`.
/// Returns false after parking the group to wait for missing lanes.
fn ready_mask(
    w: &mut Warp,
    env: &mut Env,
    pc: u32,
    active: u32,
    required: u32,
    what: &str,
) -> bool {
    if w.force {
        w.force = false;
        return true;
    }
    let g = w.group;
    let live = w.live();
    let elsewhere = required & live & !g;
    if elsewhere != 0 {
        // Wait for them: park the whole group at this instruction.
        w.coll_wait |= g;
        w.park_group();
        return false;
    }
    let tid = w.id * 32 + active.trailing_zeros().min(31);
    // Every violation of the member mask is a finding: lanes that are gone, lanes predicated
    // off, lanes that run it without being members.
    let violations: [(u32, MaskMessage); 3] = [
        (required & !live, |m, _| {
            format!("member lanes {m:#010x} have exited or do not exist")
        }),
        (required & g & !active, |m, _| {
            format!("member lanes {m:#010x} are predicated off")
        }),
        (active & !required, |m, req| {
            format!("lanes {m:#010x} execute it but are not in the member mask {req:#010x}")
        }),
    ];
    for (m, msg) in violations {
        if m != 0 {
            divergent(env, pc, tid, || format!("{what}: {}", msg(m, required)));
        }
    }
    true
}

/// Readiness of a `.sync` collective with a member-mask operand.
pub(super) fn ready(w: &mut Warp, env: &mut Env, pc: u32, active: u32, mask_reg: R) -> bool {
    if active == 0 && !w.force {
        // Nobody executes it (all predicated off).
        return true;
    }
    let first = active.trailing_zeros().min(31) as usize;
    let required = w.r(mask_reg, first) as u32;
    for l in lanes(active) {
        if w.r(mask_reg, l) as u32 != required {
            let other = w.r(mask_reg, l) as u32;
            let tid = w.id * 32 + l as u32;
            divergent(env, pc, tid, || {
                format!("lanes use different member masks ({required:#010x} and {other:#010x})")
            });
            break;
        }
    }
    ready_mask(w, env, pc, active, required, "member-mask collective")
}

/// Readiness of an `.aligned` collective (`mma`, `ldmatrix`): every lane of the warp.
pub(super) fn ready_aligned(w: &mut Warp, env: &mut Env, pc: u32, active: u32) -> bool {
    ready_mask(w, env, pc, active, w.present, ".aligned warp instruction")
}

/// `shfl.sync` per PTX ISA "Data Movement and Conversion Instructions: shfl.sync".
#[allow(clippy::too_many_arguments)]
pub(super) fn shfl(w: &mut Warp, active: u32, mode: ShflMode, d: R, p: R, a: R, b: R, c: R) {
    let src: [u64; 32] = w.regs[a as usize * 32..a as usize * 32 + 32]
        .try_into()
        .unwrap();
    for l in lanes(active) {
        let lane = l as i32;
        let bval = (w.r(b, l) & 31) as i32;
        let cv = w.r(c, l);
        let cval = (cv & 31) as i32;
        let segmask = ((cv >> 8) & 31) as i32;
        let max_lane = (lane & segmask) | (cval & !segmask);
        let min_lane = lane & segmask;
        let (j, pval) = match mode {
            ShflMode::Up => {
                let j = lane - bval;
                (j, j >= max_lane)
            }
            ShflMode::Down => {
                let j = lane + bval;
                (j, j <= max_lane)
            }
            ShflMode::Bfly => {
                let j = lane ^ bval;
                (j, j <= max_lane)
            }
            ShflMode::Idx => {
                let j = min_lane | (bval & !segmask);
                (j, j <= max_lane)
            }
        };
        let j = if pval { j } else { lane };
        w.set(d, l, src[j as usize & 31] & 0xFFFF_FFFF);
        if p != NONE {
            w.set(p, l, pval as u64);
        }
    }
}

pub(super) fn vote(w: &mut Warp, active: u32, mode: VoteMode, d: R, a: R, neg: bool) {
    let mut ballot = 0u32;
    for l in lanes(active) {
        if (w.r(a, l) & 1 != 0) != neg {
            ballot |= 1 << l;
        }
    }
    let v = match mode {
        VoteMode::All => (ballot == active) as u64,
        VoteMode::Any => (ballot != 0) as u64,
        VoteMode::Uni => (ballot == 0 || ballot == active) as u64,
        VoteMode::Ballot => ballot as u64,
    };
    for l in lanes(active) {
        w.set(d, l, v);
    }
}

pub(super) fn match_sync(w: &mut Warp, active: u32, all: bool, d: R, p: R, a: R) {
    let vals: Vec<(usize, u64)> = lanes(active).map(|l| (l, w.r(a, l))).collect();
    let same = vals.iter().all(|(_, v)| *v == vals[0].1);
    for &(l, v) in &vals {
        let m = if all {
            if same {
                active
            } else {
                0
            }
        } else {
            vals.iter()
                .filter(|(_, x)| *x == v)
                .fold(0u32, |m, (k, _)| m | 1 << k)
        };
        w.set(d, l, m as u64);
        if p != NONE {
            w.set(p, l, same as u64);
        }
    }
}

pub(super) fn redux(w: &mut Warp, active: u32, k: ReduxK, d: R, a: R) {
    let vals: Vec<u32> = lanes(active).map(|l| w.r(a, l) as u32).collect();
    let r: u32 = match k {
        ReduxK::Add => vals.iter().fold(0u32, |s, v| s.wrapping_add(*v)),
        ReduxK::Min(s) => {
            if s {
                vals.iter().map(|v| *v as i32).min().unwrap_or(0) as u32
            } else {
                vals.iter().copied().min().unwrap_or(0)
            }
        }
        ReduxK::Max(s) => {
            if s {
                vals.iter().map(|v| *v as i32).max().unwrap_or(0) as u32
            } else {
                vals.iter().copied().max().unwrap_or(0)
            }
        }
        ReduxK::And => vals.iter().fold(u32::MAX, |s, v| s & v),
        ReduxK::Or => vals.iter().fold(0, |s, v| s | v),
        ReduxK::Xor => vals.iter().fold(0, |s, v| s ^ v),
    };
    for l in lanes(active) {
        w.set(d, l, r as u64);
    }
}

/// `elect.sync d|p, membermask` (PTX ISA "Parallel Synchronization and Communication
/// Instructions: elect.sync", sm_90): one leader among the active member lanes; every executing
/// lane receives the leader's lane id in `d`, and `p` is true only in the leader. The ISA
/// leaves the choice to the hardware; the emulator deterministically picks the lowest lane.
pub(super) fn elect(w: &mut Warp, active: u32, d: R, p: R, mask: R) {
    if active == 0 {
        return;
    }
    let members = active & w.r(mask, active.trailing_zeros() as usize) as u32;
    let leader = if members == 0 {
        32
    } else {
        members.trailing_zeros()
    };
    for l in lanes(active) {
        if d != NONE {
            w.set(d, l, leader as u64 & 31);
        }
        if p != NONE {
            w.set(p, l, (l as u32 == leader) as u64);
        }
    }
}
