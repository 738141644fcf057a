//! Memory family: `ld`, `st`, `atom`/`red`, and the per-lane access helpers the async-copy and
//! tensor families use (`cp.async`, `ldmatrix`).
//! Every lane's access is bounds- and alignment-checked in its state space; shared accesses also
//! go through the shadow checks (races, uninitialised reads, cp.async hazards). The counters for
//! global bytes/sectors and shared wavefronts are collected here per warp-instruction.

use super::{lanes, Env, Warp};
use crate::counters::wavefronts;
use crate::findings::FindingKind;
use crate::memory::WriterTag;
use crate::program::*;
use crate::shared::Hazard;
use crate::types::{Space, Ty};

/// Where one lane's address points.
#[derive(Clone, Copy, Debug)]
pub(super) enum Loc {
    Global(u64),
    Shared(u64),
    Local(u64),
    Param(u64),
}

pub(super) fn resolve(sp: Space, a: u64) -> Loc {
    match sp {
        Space::Global | Space::Const => Loc::Global(a),
        Space::Shared => Loc::Shared(a),
        Space::Local => Loc::Local(a),
        Space::Param => Loc::Param(a),
        Space::Generic => {
            if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&a) {
                Loc::Shared(a - SHARED_WINDOW)
            } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&a) {
                Loc::Local(a - LOCAL_WINDOW)
            } else if (PARAM_WINDOW..PARAM_WINDOW + WINDOW_SIZE).contains(&a) {
                Loc::Param(a - PARAM_WINDOW)
            } else {
                Loc::Global(a)
            }
        }
    }
}

pub(super) fn hazard_finding(env: &mut Env, pc: u32, tid: u32, off: u64, h: Hazard) {
    let (kind, other) = match h {
        Hazard::Raw(o) => (FindingKind::SharedRaceRaw, Some(o)),
        Hazard::War(o) => (FindingKind::SharedRaceWar, o),
        Hazard::Waw(o) => (FindingKind::SharedRaceWaw, Some(o)),
        Hazard::PendingRead => (FindingKind::CpAsyncReadBeforeWait, None),
        Hazard::PendingWrite => (FindingKind::CpAsyncWriteBeforeWait, None),
        Hazard::Uninit => (FindingKind::UninitSharedRead, None),
        Hazard::WgmmaOperandWrite => (FindingKind::WgmmaOperandWriteBeforeWait, None),
        Hazard::BulkPendingRead => (FindingKind::BulkReadBeforeComplete, None),
        Hazard::BulkPendingWrite => (FindingKind::BulkWriteBeforeComplete, None),
        Hazard::StoreSourceWrite => (FindingKind::BulkStoreSourceOverwritten, None),
        Hazard::MbarAccess => (FindingKind::MbarrierMisuse, None),
    };
    env.report(kind, pc, tid, Some(off), other, || match h {
        Hazard::War(None) => {
            "threads of several other warps read it since the last barrier".to_string()
        }
        Hazard::Raw(_) | Hazard::War(_) | Hazard::Waw(_) => {
            "no barrier between the two accesses".to_string()
        }
        Hazard::PendingRead => {
            "the cp.async writing it has not been waited for (cp.async.wait_group)".to_string()
        }
        Hazard::PendingWrite => "a cp.async to this location is still in flight".to_string(),
        Hazard::Uninit => "no thread wrote this shared memory before".to_string(),
        Hazard::WgmmaOperandWrite => {
            "a wgmma.mma_async reading this operand has not been waited for (wgmma.wait_group)"
                .to_string()
        }
        Hazard::BulkPendingRead => {
            "the mbarrier phase the bulk/TMA copy into it completes on has not completed (wait with mbarrier.try_wait first)".to_string()
        }
        Hazard::BulkPendingWrite => {
            "a bulk/TMA copy into it is in flight (its mbarrier phase has not completed)".to_string()
        }
        Hazard::StoreSourceWrite => {
            "a bulk/TMA store still reads it (cp.async.bulk.wait_group.read not executed)".to_string()
        }
        Hazard::MbarAccess => {
            "an mbarrier object is accessed by a plain load/store/atomic (only mbarrier instructions may touch it until mbarrier.inval)".to_string()
        }
    });
}

pub(super) fn oob(env: &mut Env, pc: u32, tid: u32, loc: Loc, len: usize) {
    let (kind, addr, what) = match loc {
        Loc::Global(a) => (
            FindingKind::GlobalOutOfBounds,
            a,
            "no allocation contains".to_string(),
        ),
        Loc::Shared(a) => (
            FindingKind::SharedOutOfBounds,
            a,
            format!("CTA shared memory is {} bytes;", env.smem.len()),
        ),
        Loc::Local(a) => (
            FindingKind::LocalOutOfBounds,
            a,
            format!("local frame is {} bytes;", env.local_size),
        ),
        Loc::Param(a) => (
            FindingKind::ParamOutOfBounds,
            a,
            format!("parameter buffer is {} bytes;", env.ctx.params.len()),
        ),
    };
    env.report(kind, pc, tid, Some(addr), None, || {
        format!("{what} access of {len} bytes at {addr:#x}")
    });
}

/// Whether `len` bytes at offset `o` lie inside a space of `size` bytes. Offsets come from
/// program registers (any u64), so the end is computed with a checked add: an access whose end
/// passes 2^64 is out of bounds, not an overflow.
#[inline]
pub(super) fn fits(o: u64, len: u64, size: u64) -> bool {
    o.checked_add(len).is_some_and(|end| end <= size)
}

pub(super) fn loc_addr(l: Loc) -> u64 {
    match l {
        Loc::Global(a) | Loc::Shared(a) | Loc::Local(a) | Loc::Param(a) => a,
    }
}

/// Whether a `len`-byte access at `loc` is naturally aligned; a finding if not.
#[inline]
fn aligned(env: &mut Env, pc: u32, tid: u32, loc: Loc, len: usize) -> bool {
    let a = loc_addr(loc);
    if a.is_multiple_of(len as u64) {
        return true;
    }
    env.report(FindingKind::Misaligned, pc, tid, Some(a), None, || {
        format!("{len}-byte access at {a:#x}")
    });
    false
}

/// Reads `out.len()` bytes for one lane; false (and a finding) if the access is invalid.
pub(super) fn read_lane(
    w: &Warp,
    env: &mut Env,
    pc: u32,
    lane: usize,
    loc: Loc,
    out: &mut [u8],
) -> bool {
    let len = out.len();
    let tid = w.id * 32 + lane as u32;
    if !aligned(env, pc, tid, loc, len) {
        return false;
    }
    match loc {
        Loc::Global(a) => match env.ctx.gmem.find(a, len as u64) {
            Ok((al, off)) => {
                al.read(off, out);
                true
            }
            Err(_) => {
                oob(env, pc, tid, loc, len);
                false
            }
        },
        Loc::Shared(a) => {
            // A shared::cluster address may name a peer CTA's memory (`cluster.rs`).
            let Some((rank, o, key)) = super::cluster::locate(env, pc, tid, a) else {
                return false;
            };
            if !fits(o, len as u64, env.smem.len() as u64) {
                oob(env, pc, tid, Loc::Shared(o), len);
                return false;
            }
            let o = o as usize;
            let sm = env.smem_of(rank);
            let hz = sm.read_check(o, len, key);
            out.copy_from_slice(&sm.data[o..o + len]);
            if let Some(h) = hz {
                hazard_finding(env, pc, tid, o as u64, h);
            }
            true
        }
        Loc::Local(o) => {
            let ls = env.local_size as u64;
            if !fits(o, len as u64, ls) {
                oob(env, pc, tid, loc, len);
                return false;
            }
            let base = lane * ls as usize + o as usize;
            out.copy_from_slice(&w.local[base..base + len]);
            true
        }
        Loc::Param(o) => {
            let p = env.ctx.params;
            if !fits(o, len as u64, p.len() as u64) {
                oob(env, pc, tid, loc, len);
                return false;
            }
            out.copy_from_slice(&p[o as usize..o as usize + len]);
            true
        }
    }
}

/// A kernel's store of `data` to global address `a` (plain stores and bulk/TMA stores): `false`
/// when no allocation holds it (the caller reports the out-of-bounds access). With race checks
/// on, a byte another CTA of this launch already wrote is a `GlobalRaceWaw` finding: CTAs are
/// unordered, so the value left behind depends on the schedule.
pub(super) fn store_global(env: &mut Env, pc: u32, tid: u32, a: u64, data: &[u8]) -> bool {
    let Ok((al, off)) = env.ctx.gmem.find(a, data.len() as u64) else {
        return false;
    };
    if !env.ctx.check_races {
        al.write(off, data);
        return true;
    }
    let [gx, gy, _] = env.ctx.grid;
    let [x, y, z] = env.cta;
    let linear = x as u64 + gx as u64 * (y as u64 + gy as u64 * z as u64);
    // Grids past 2^32 - 1 CTAs share the last index (never emulated in practice).
    let cta = u32::try_from(linear).unwrap_or(WriterTag::SHARED - 1);
    let tag = WriterTag {
        epoch: env.ctx.epoch,
        cta,
    };
    if let Some(o) = al.write_by(off, data, tag) {
        let base = al.base;
        env.report(
            FindingKind::GlobalRaceWaw,
            pc,
            tid,
            Some(base + o as u64),
            None,
            || "another CTA of this launch already wrote this byte".to_string(),
        );
    }
    true
}

pub(super) fn write_lane(w: &mut Warp, env: &mut Env, pc: u32, lane: usize, loc: Loc, data: &[u8]) {
    let len = data.len();
    let tid = w.id * 32 + lane as u32;
    if !aligned(env, pc, tid, loc, len) {
        return;
    }
    match loc {
        Loc::Global(a) => {
            if !store_global(env, pc, tid, a, data) {
                oob(env, pc, tid, loc, len)
            }
        }
        Loc::Shared(a) => {
            let Some((rank, o, key)) = super::cluster::locate(env, pc, tid, a) else {
                return;
            };
            if !fits(o, len as u64, env.smem.len() as u64) {
                return oob(env, pc, tid, Loc::Shared(o), len);
            }
            let o = o as usize;
            let sm = env.smem_of(rank);
            let hz = sm.write_check(o, len, key, false);
            sm.data[o..o + len].copy_from_slice(data);
            if let Some(h) = hz {
                hazard_finding(env, pc, tid, o as u64, h);
            }
        }
        Loc::Local(o) => {
            let ls = env.local_size as u64;
            if !fits(o, len as u64, ls) {
                return oob(env, pc, tid, loc, len);
            }
            let base = lane * ls as usize + o as usize;
            w.local[base..base + len].copy_from_slice(data);
        }
        Loc::Param(_) => {
            // Kernel parameters are read-only in the emulator (as in a real launch).
            oob(env, pc, tid, loc, len)
        }
    }
}

/// Per-warp-instruction traffic accumulation.
pub(super) struct Traffic {
    sectors: [u64; 64],
    nsec: usize,
    bytes: u64,
    shared: [(u32, u32, u32); 32],
    nshared: usize,
}

impl Traffic {
    pub(super) fn new() -> Self {
        Traffic {
            sectors: [0; 64],
            nsec: 0,
            bytes: 0,
            shared: [(0, 0, 0); 32],
            nshared: 0,
        }
    }

    pub(super) fn add(&mut self, lane: usize, loc: Loc, len: usize) {
        match loc {
            Loc::Global(a) => {
                self.bytes += len as u64;
                if len == 0 {
                    return;
                }
                // The last byte saturates: an access running past 2^64 is out of bounds
                // (reported by the access), and counts the sectors up to the top.
                let (s0, s1) = (a >> 5, a.saturating_add(len as u64 - 1) >> 5);
                for s in s0..=s1.min(s0 + 1) {
                    if self.nsec < 64 {
                        self.sectors[self.nsec] = s;
                        self.nsec += 1;
                    }
                }
            }
            Loc::Shared(o) => {
                self.shared[self.nshared] = (lane as u32, o as u32, len as u32);
                self.nshared += 1;
            }
            _ => {}
        }
    }

    pub(super) fn finish(mut self, env: &mut Env, kind: u8) {
        if self.nsec > 0 || self.bytes > 0 {
            let s = &mut self.sectors[..self.nsec];
            s.sort_unstable();
            let mut distinct = 0;
            let mut prev = u64::MAX;
            for &x in s.iter() {
                if x != prev {
                    distinct += 1;
                    prev = x;
                }
            }
            env.cnt.sectors += distinct;
            match kind {
                0 => env.cnt.gld += self.bytes,
                1 => env.cnt.gst += self.bytes,
                _ => env.cnt.gatom += self.bytes,
            }
        }
        if self.nshared > 0 {
            let len = self.shared[0].2.max(1);
            let phase = (128 / len.max(4)).clamp(1, 32);
            let (need, ideal) = wavefronts(&self.shared[..self.nshared], phase);
            env.cnt.shared_accesses += 1;
            env.cnt.wavefronts += need;
            env.cnt.wavefronts_ideal += ideal;
        }
    }
}

#[inline]
pub(super) fn lane_addr(w: &Warp, addr: Addr, lane: usize) -> u64 {
    w.r(addr.base, lane).wrapping_add(addr.off as u64)
}

/// Resolves the address of each active lane, runs `access` (the lane's read or write) on it and
/// counts the warp's traffic of `len` bytes a lane (`kind` as in [`Traffic::finish`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn each_lane_access(
    w: &mut Warp,
    env: &mut Env,
    active: u32,
    sp: Space,
    addr: Addr,
    len: usize,
    kind: u8,
    mut access: impl FnMut(&mut Warp, &mut Env, usize, Loc),
) {
    let mut t = Traffic::new();
    for l in lanes(active) {
        let loc = resolve(sp, lane_addr(w, addr, l));
        access(w, env, l, loc);
        t.add(l, loc, len);
    }
    t.finish(env, kind);
}

pub(super) fn exec_ld(w: &mut Warp, env: &mut Env, pc: u32, active: u32, op: &LdOp) {
    let size = op.size as usize;
    let len = size * op.n as usize;
    each_lane_access(w, env, active, op.sp, op.addr, len, 0, |w, env, l, loc| {
        let mut buf = [0u8; 32];
        read_lane(w, env, pc, l, loc, &mut buf[..len]);
        for (k, d) in op.ds.iter().enumerate().take(op.n as usize) {
            let mut raw = [0u8; 8];
            raw[..size].copy_from_slice(&buf[k * size..(k + 1) * size]);
            let mut v = u64::from_le_bytes(raw);
            if op.sext && size < 8 {
                v = super::lanes::sext(v, op.size * 8) as u64;
            }
            w.set(*d, l, v & op.dmask);
        }
    });
}

pub(super) fn exec_st(w: &mut Warp, env: &mut Env, pc: u32, active: u32, op: &StOp) {
    let size = op.size as usize;
    let len = size * op.n as usize;
    each_lane_access(w, env, active, op.sp, op.addr, len, 1, |w, env, l, loc| {
        let mut buf = [0u8; 32];
        for (k, r) in op.srcs.iter().enumerate().take(op.n as usize) {
            let v = w.r(*r, l).to_le_bytes();
            buf[k * size..(k + 1) * size].copy_from_slice(&v[..size]);
        }
        write_lane(w, env, pc, l, loc, &buf[..len]);
    });
}

fn atom_apply(op: AtomK, ty: Ty, old: u64, a: u64, b: u64) -> u64 {
    let w = ty.bits() as u8;
    let m = super::lanes::mask(w);
    let (old, a, b) = (old & m, a & m, b & m);
    match op {
        AtomK::Add => match ty {
            Ty::F32 => (f32::from_bits(old as u32) + f32::from_bits(a as u32)).to_bits() as u64,
            Ty::F64 => (f64::from_bits(old) + f64::from_bits(a)).to_bits(),
            _ => old.wrapping_add(a) & m,
        },
        AtomK::Min | AtomK::Max => {
            let max = op == AtomK::Max;
            let lt = match ty {
                Ty::F32 => f32::from_bits(old as u32) < f32::from_bits(a as u32),
                Ty::F64 => f64::from_bits(old) < f64::from_bits(a),
                t if t.is_signed() => super::lanes::sext(old, w) < super::lanes::sext(a, w),
                _ => old < a,
            };
            if lt != max {
                old
            } else {
                a
            }
        }
        AtomK::Inc => {
            if old >= a {
                0
            } else {
                old + 1
            }
        }
        AtomK::Dec => {
            if old == 0 || old > a {
                a
            } else {
                old - 1
            }
        }
        AtomK::Exch => a,
        AtomK::Cas => {
            if old == a {
                b
            } else {
                old
            }
        }
        AtomK::And => old & a,
        AtomK::Or => old | a,
        AtomK::Xor => old ^ a,
    }
}

pub(super) fn exec_atom(w: &mut Warp, env: &mut Env, pc: u32, active: u32, op: &AtomOp) {
    let AtomOp {
        sp,
        k,
        ty,
        d,
        addr,
        a,
        b,
    } = *op;
    let size = ty.bytes() as usize;
    let mut t = Traffic::new();
    for l in lanes(active) {
        let loc = resolve(sp, lane_addr(w, addr, l));
        let tid = w.id * 32 + l as u32;
        let av = w.r(a, l);
        let bv = if b == NONE { 0 } else { w.r(b, l) };
        let at = loc_addr(loc);
        if !at.is_multiple_of(size as u64) {
            env.report(FindingKind::Misaligned, pc, tid, Some(at), None, || {
                format!("{size}-byte atomic at {at:#x}")
            });
            continue;
        }
        let old = match loc {
            Loc::Global(ga) => match env.ctx.gmem.find(ga, size as u64) {
                Ok((al, off)) => al.rmw(off, size, |old| atom_apply(k, ty, old, av, bv)),
                Err(_) => {
                    oob(env, pc, tid, loc, size);
                    continue;
                }
            },
            Loc::Shared(sa) => {
                let Some((rank, o, _)) = super::cluster::locate(env, pc, tid, sa) else {
                    continue;
                };
                if !fits(o, size as u64, env.smem.len() as u64) {
                    oob(env, pc, tid, Loc::Shared(o), size);
                    continue;
                }
                let o = o as usize;
                let sm = env.smem_of(rank);
                let hz = sm.atomic_touch(o, size);
                let mut raw = [0u8; 8];
                raw[..size].copy_from_slice(&sm.data[o..o + size]);
                let old = u64::from_le_bytes(raw);
                let new = atom_apply(k, ty, old, av, bv);
                sm.data[o..o + size].copy_from_slice(&new.to_le_bytes()[..size]);
                if let Some(h) = hz {
                    hazard_finding(env, pc, tid, o as u64, h);
                }
                old
            }
            _ => {
                oob(env, pc, tid, loc, size);
                continue;
            }
        };
        t.add(l, loc, size);
        if d != NONE {
            w.set(d, l, old);
        }
    }
    t.finish(env, 2);
}
