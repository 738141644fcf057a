//! Async-copy family: `cp.async` (a per-lane record of the copy, data read at issue) and its
//! completion by `cp.async.wait_group`/`wait_all` or thread exit, which writes shared memory and
//! clears the shadow hazard marks.

use super::mem::*;
use super::{lanes, CpRec, Env, Warp};
use crate::findings::FindingKind;
use crate::program::*;

pub(super) fn exec_cp_async(w: &mut Warp, env: &mut Env, pc: u32, active: u32, op: &CpAsyncOp) {
    let CpAsyncOp {
        dst,
        src,
        cp,
        src_size,
        ignore_src,
        ..
    } = *op;
    let mut t = Traffic::new();
    let mut ts = Traffic::new();
    for l in lanes(active) {
        let tid = w.id * 32 + l as u32;
        let mut n = if src_size != NONE {
            w.r(src_size, l) as u32
        } else if ignore_src != NONE && w.r(ignore_src, l) & 1 != 0 {
            0
        } else {
            cp as u32
        };
        if n > cp as u32 {
            env.report(FindingKind::GlobalOutOfBounds, pc, tid, None, None, || {
                format!("cp.async src-size {n} exceeds cp-size {cp}")
            });
            n = cp as u32;
        }
        let d = lane_addr(w, dst, l);
        let s = lane_addr(w, src, l);
        if !d.is_multiple_of(cp as u64) || (n > 0 && !s.is_multiple_of(cp as u64)) {
            env.report(FindingKind::Misaligned, pc, tid, Some(if !d.is_multiple_of(cp as u64) { d } else { s }), None, || {
                format!("cp.async of {cp} bytes needs {cp}-byte aligned addresses (dst {d:#x}, src {s:#x})")
            });
            continue;
        }
        if !fits(d, cp as u64, env.smem.len() as u64) {
            oob(env, pc, tid, Loc::Shared(d), cp as usize);
            continue;
        }
        let mut data = [0u8; 16];
        if n > 0 {
            match env.ctx.gmem.find(s, n as u64) {
                Ok((al, off)) => al.read(off, &mut data[..n as usize]),
                Err(_) => oob(env, pc, tid, Loc::Global(s), n as usize),
            }
            t.add(l, Loc::Global(s), n as usize);
        }
        if let Some(h) = env.smem.mark_pending(d as usize, cp as usize) {
            hazard_finding(env, pc, tid, d, h);
        }
        ts.add(l, Loc::Shared(d), cp as usize);
        w.cp[l].recs.push(CpRec {
            group: u32::MAX,
            dst: d as u32,
            len: cp,
            data,
        });
    }
    t.finish(env, 0);
    ts.finish(env, 0);
}

/// Completes lane `l`'s copies of commit groups below `target` (`u32::MAX`: all, committed or not).
pub(super) fn complete_cp(w: &mut Warp, env: &mut Env, pc: u32, l: usize, target: u32) {
    if w.cp[l].recs.is_empty() {
        return;
    }
    let tid = w.id * 32 + l as u32;
    let recs = std::mem::take(&mut w.cp[l].recs);
    let mut keep = Vec::with_capacity(recs.len());
    for r in recs {
        if target == u32::MAX || (r.group != u32::MAX && r.group < target) {
            let (o, n) = (r.dst as usize, r.len as usize);
            env.smem.data[o..o + n].copy_from_slice(&r.data[..n]);
            if let Some(h) = env.smem.write_check(o, n, tid, true) {
                hazard_finding(env, pc, tid, o as u64, h);
            }
        } else {
            keep.push(r);
        }
    }
    w.cp[l].recs = keep;
}
