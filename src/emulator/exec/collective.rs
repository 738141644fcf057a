//! Warp collectives: the readiness rule (all required lanes converged here, else wait or report),
//! and the data movement of `shfl.sync`, `vote.sync`, `match.sync`, `redux.sync` and `mma.sync`.
//! (`ldmatrix` is in `mem.rs` since it reads shared memory.)

use super::{lanes, Env, Warp};
use crate::emulator::findings::FindingKind;
use crate::emulator::program::*;
use crate::emulator::softfloat::{self as sf, round_f64, Rnd};

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
    let gone = required & !live;
    if gone != 0 {
        env.report(
            FindingKind::DivergentCollective,
            pc,
            tid,
            None,
            None,
            || format!("{what}: member lanes {gone:#010x} have exited or do not exist"),
        );
    }
    let off = required & g & !active;
    if off != 0 {
        env.report(
            FindingKind::DivergentCollective,
            pc,
            tid,
            None,
            None,
            || format!("{what}: member lanes {off:#010x} are predicated off"),
        );
    }
    let extra = active & !required;
    if extra != 0 {
        env.report(FindingKind::DivergentCollective, pc, tid, None, None, || {
            format!("{what}: lanes {extra:#010x} execute it but are not in the member mask {required:#010x}")
        });
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
            env.report(
                FindingKind::DivergentCollective,
                pc,
                tid,
                None,
                None,
                || format!("lanes use different member masks ({required:#010x} and {other:#010x})"),
            );
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

// Fragment layouts, PTX ISA 9.x "Warp Level Matrix Multiply-Accumulate Instructions",
// section "Matrix Fragments for mma.m16n8k16 with floating point type" (9.7.16.5.8 in ISA 9.4)
// and "Matrix Fragments for mma.m16n8k8" (9.7.16.5.7): with groupID = laneid >> 2 and
// threadID_in_group = laneid % 4,
//   A (m16n8k16, f16/bf16, elements a0..a7, two per .b32 register, low half first):
//     row = groupID for a0,a1,a4,a5, groupID + 8 otherwise;
//     col = tig*2 + (i & 1) for i < 4, tig*2 + (i & 1) + 8 for i >= 4.
//   A (m16n8k8, a0..a3): row = groupID for a0,a1, groupID + 8 for a2,a3; col = tig*2 + (i & 1).
//   B (m16n8k16, b0..b3): row = tig*2 + (i & 1) (+8 for i >= 2); col = groupID.
//   B (m16n8k8, b0..b1): row = tig*2 + i; col = groupID.
//   C/D (c0..c3): row = groupID for c0,c1, groupID + 8 for c2,c3; col = tig*2 + (i & 1);
//     f32: one register per element; f16: two elements per register (c0,c1 | c2,c3).

/// (row, col) of element `i` of the A fragment held by `lane`.
pub fn a_frag_pos(k: u32, lane: u32, i: u32) -> (u32, u32) {
    let (g, t) = (lane >> 2, lane % 4);
    if k == 16 {
        let row = if i < 2 || (4..6).contains(&i) {
            g
        } else {
            g + 8
        };
        let col = t * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
        (row, col)
    } else {
        (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1))
    }
}

/// (row, col) of element `i` of the B fragment held by `lane`.
pub fn b_frag_pos(k: u32, lane: u32, i: u32) -> (u32, u32) {
    let (g, t) = (lane >> 2, lane % 4);
    if k == 16 {
        (t * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, g)
    } else {
        (t * 2 + i, g)
    }
}

/// (row, col) of element `i` of the C/D fragment held by `lane`.
pub fn c_frag_pos(lane: u32, i: u32) -> (u32, u32) {
    let (g, t) = (lane >> 2, lane % 4);
    (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1))
}

/// `mma.sync.aligned.m16n8k{16,8}.row.col` with f16/bf16 inputs. Products are exact and summed
/// in f64, then rounded once to the output type (round to nearest even); real tensor cores
/// accumulate with slightly different internal precision, which tests allow for.
#[allow(clippy::too_many_arguments)]
pub(super) fn mma(
    w: &mut Warp,
    env: &mut Env,
    shape: MmaShape,
    bf16: bool,
    c_f32: bool,
    d_f32: bool,
    d: [R; 4],
    a: [R; 4],
    b: [R; 2],
    c: [R; 4],
) {
    let (m, n, k) = shape.mnk();
    let fmt = if bf16 { sf::BF16 } else { sf::F16 };
    let mut am = [[0f64; 16]; 16];
    let mut bm = [[0f64; 8]; 16];
    let mut cm = [[0f64; 8]; 16];
    let half = |v: u64, i: u32| fmt.to_f64((v >> (16 * (i & 1))) & 0xFFFF);
    for lane in 0..32u32 {
        let l = lane as usize;
        for i in 0..(k / 2) {
            let (r, col) = a_frag_pos(k, lane, i);
            am[r as usize][col as usize] = half(w.r(a[(i / 2) as usize], l), i);
        }
        for i in 0..(k / 4) {
            let (r, col) = b_frag_pos(k, lane, i);
            bm[r as usize][col as usize] = half(w.r(b[(i / 2) as usize], l), i);
        }
        for i in 0..4u32 {
            let (r, col) = c_frag_pos(lane, i);
            cm[r as usize][col as usize] = if c_f32 {
                f32::from_bits(w.r(c[i as usize], l) as u32) as f64
            } else {
                sf::F16.to_f64((w.r(c[(i / 2) as usize], l) >> (16 * (i & 1))) & 0xFFFF)
            };
        }
    }
    let mut dm = [[0u64; 8]; 16];
    for (i, row) in dm.iter_mut().enumerate().take(m as usize) {
        for (j, out) in row.iter_mut().enumerate().take(n as usize) {
            let mut s = cm[i][j];
            for (kk, arow) in am[i].iter().enumerate().take(k as usize) {
                s += arow * bm[kk][j];
            }
            *out = if d_f32 {
                round_f64(s, 0.0, sf::F32, Rnd::Rn, false)
            } else {
                round_f64(s, 0.0, sf::F16, Rnd::Rn, false)
            };
        }
    }
    for lane in 0..32u32 {
        let l = lane as usize;
        if d_f32 {
            for i in 0..4u32 {
                let (r, col) = c_frag_pos(lane, i);
                w.set(d[i as usize], l, dm[r as usize][col as usize]);
            }
        } else {
            for reg in 0..2u32 {
                let (r0, c0) = c_frag_pos(lane, reg * 2);
                let (r1, c1) = c_frag_pos(lane, reg * 2 + 1);
                let v = dm[r0 as usize][c0 as usize] | (dm[r1 as usize][c1 as usize] << 16);
                w.set(d[reg as usize], l, v);
            }
        }
    }
    env.cnt.mma += 1;
    env.cnt.flops += 2 * (m * n * k) as u64;
}
