//! Tensor-core family: `mma.sync` fragment layouts and arithmetic, and `ldmatrix`.

use super::mem::*;
use super::{Env, Warp};
use crate::counters::wavefronts;
use crate::findings::FindingKind;
use crate::program::*;
use crate::softfloat::{self as sf, round_f64, Rnd};
use crate::types::Space;

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
pub(super) fn mma(w: &mut Warp, env: &mut Env, op: &MmaOp) {
    let MmaOp {
        shape,
        bf16,
        c_f32,
        d_f32,
        d,
        a,
        b,
        c,
    } = *op;
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

/// Where the 16-byte matrix row that `lane` addresses lives (`ldmatrix` / `stmatrix`), or
/// `None` after a finding when a generic address is not in shared memory.
fn row_loc(
    w: &Warp,
    env: &mut Env,
    pc: u32,
    lane: usize,
    op: &MatrixOp,
    what: &str,
) -> Option<Loc> {
    let a = lane_addr(w, op.addr, lane);
    let loc = if op.generic {
        resolve(Space::Generic, a)
    } else {
        Loc::Shared(a)
    };
    if !matches!(loc, Loc::Shared(_)) {
        let tid = w.id * 32 + lane as u32;
        env.report(
            FindingKind::SharedOutOfBounds,
            pc,
            tid,
            Some(a),
            None,
            || format!("{what} generic address is not in shared memory"),
        );
        return None;
    }
    Some(loc)
}

/// Runs `access(w, env, j, r, lane, loc)` on row r of every matrix j of `op` (the row lane
/// 8j+r addresses, at `loc`), then counts the warp's shared access of the rows `access`
/// reported as done (8 rows of 16 bytes make one 128-byte phase).
fn each_row(
    w: &mut Warp,
    env: &mut Env,
    pc: u32,
    op: &MatrixOp,
    what: &str,
    mut access: impl FnMut(&mut Warp, &mut Env, usize, usize, usize, Loc) -> bool,
) {
    let mut acc = [(0u32, 0u32, 0u32); 32];
    let mut nacc = 0;
    for j in 0..op.num as usize {
        for r in 0..8 {
            let lane = j * 8 + r;
            let Some(loc) = row_loc(w, env, pc, lane, op, what) else {
                continue;
            };
            if access(w, env, j, r, lane, loc) {
                acc[nacc] = (lane as u32, loc_addr(loc) as u32, 16);
                nacc += 1;
            }
        }
    }
    if nacc > 0 {
        let (need, ideal) = wavefronts(&acc[..nacc], 8);
        env.cnt.shared_accesses += 1;
        env.cnt.wavefronts += need;
        env.cnt.wavefronts_ideal += ideal;
    }
}

/// `ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16`, PTX ISA "Warp-level matrix load
/// instruction: ldmatrix": lanes 8j..8j+7 give the addresses of rows 0..7 of matrix j (16 bytes
/// each). Without `.trans`, lane t receives row t/4, elements 2(t%4) and 2(t%4)+1 (low, high);
/// with `.trans` it receives column t/4, rows 2(t%4) and 2(t%4)+1, i.e. the transposed matrix.
pub(super) fn exec_ldmatrix(w: &mut Warp, env: &mut Env, pc: u32, op: &MatrixOp) {
    let mut rows = [[[0u16; 8]; 8]; 4];
    each_row(w, env, pc, op, "ldmatrix", |w, env, j, r, lane, loc| {
        let mut buf = [0u8; 16];
        let ok = read_lane(w, env, pc, lane, loc, &mut buf);
        if ok {
            for (e, v) in rows[j][r].iter_mut().enumerate() {
                *v = u16::from_le_bytes([buf[2 * e], buf[2 * e + 1]]);
            }
        }
        ok
    });
    for t in 0..32usize {
        if w.present >> t & 1 == 0 {
            continue;
        }
        for (m, &d) in rows.iter().zip(&op.regs).take(op.num as usize) {
            let (lo, hi) = if op.trans {
                (m[2 * (t % 4)][t / 4], m[2 * (t % 4) + 1][t / 4])
            } else {
                (m[t / 4][2 * (t % 4)], m[t / 4][2 * (t % 4) + 1])
            };
            w.set(d, t, lo as u64 | (hi as u64) << 16);
        }
    }
}

/// `stmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16`, PTX ISA "Warp-level matrix
/// store instruction: stmatrix", the mirror of `ldmatrix`: lanes 8j..8j+7 give the addresses of
/// rows 0..7 of matrix j (16 bytes each). Register j of lane t holds two elements of matrix j:
/// without `.trans` row t/4, columns 2(t%4) and 2(t%4)+1 (low, high half); with `.trans`
/// column t/4, rows 2(t%4) and 2(t%4)+1, so memory receives the transposed fragment.
pub(super) fn exec_stmatrix(w: &mut Warp, env: &mut Env, pc: u32, op: &MatrixOp) {
    let mut rows = [[[0u16; 8]; 8]; 4];
    for t in 0..32usize {
        for (j, m) in rows.iter_mut().enumerate().take(op.num as usize) {
            let v = w.r(op.regs[j], t);
            let (lo, hi) = (v as u16, (v >> 16) as u16);
            let (r, c) = (t / 4, 2 * (t % 4));
            if op.trans {
                m[c][r] = lo;
                m[c + 1][r] = hi;
            } else {
                m[r][c] = lo;
                m[r][c + 1] = hi;
            }
        }
    }
    each_row(w, env, pc, op, "stmatrix", |w, env, j, r, lane, loc| {
        let mut buf = [0u8; 16];
        for (e, v) in rows[j][r].iter().enumerate() {
            buf[2 * e..2 * e + 2].copy_from_slice(&v.to_le_bytes());
        }
        write_lane(w, env, pc, lane, loc, &buf);
        true
    });
}
