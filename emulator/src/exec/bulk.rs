//! Asynchronous-proxy family: bulk copies (`cp.async.bulk`), tensor copies through tensor maps
//! (`cp.async.bulk.tensor`, the TMA), their bulk async-groups, `fence.proxy.async`, tensor-map
//! prefetches and `.multicast::cluster` loads (into every CTA of the mask, `cluster.rs`); the
//! entry point [`exec_async`] also routes the mbarrier instructions to `mbarrier.rs` and
//! `mapa` / `getctarank` to `cluster.rs`.
//!
//! Timing model. A load (global -> shared) reads global memory when issued and is then *in
//! flight*: its destination bytes are marked in the shared-memory shadow, and it *lands*
//! (writes shared memory, then performs complete-tx of its bytes on its mbarrier) only when a
//! thread waits on that mbarrier or when nothing else can run. The bytes stay marked until the
//! mbarrier phase the copy completed on has completed, so reading them earlier, from any
//! thread, is a finding (PTX ISA "mbarrier: tx-count": the data is visible to a thread only
//! after it observed the phase completion). A store (shared -> global) reads shared memory and
//! writes global memory when issued; its source bytes stay marked as read by the async proxy
//! until `cp.async.bulk.wait_group(.read)` covers its group, so overwriting them earlier is a
//! finding, and it reports shared-memory bytes written by the generic proxy with no
//! `fence.proxy.async` since (PTX ISA "Memory Consistency Model: Proxies").
//!
//! Tensor copies walk the box of the tensor map (`tensormap.rs`): dimension 0 is contiguous,
//! dimension k advances by its byte stride and its element stride; out-of-bounds elements read
//! as zeros (or NaN with the NaN fill) and are not written by stores. In shared memory the box
//! is dense, row after row, and every 16-byte chunk is placed by the swizzle mode.

use std::collections::HashMap;

use super::mem::{fits, hazard_finding, lane_addr, oob, resolve, store_global, Loc};
use super::{lanes, mbarrier, Env, Warp};
use crate::findings::FindingKind;
use crate::program::*;
use crate::tensormap::{Decoded, TENSOR_MAP_ALIGN, TENSOR_MAP_BYTES};
use crate::types::Space;

/// A load that has not landed yet.
struct InFlight {
    mbar: u32,
    tid: u32,
    pc: u32,
    /// Shared-memory runs (offset, len) the data goes to, in data order.
    runs: Vec<(u32, u32)>,
    data: Vec<u8>,
}

/// Bulk stores of one thread: (group, or `u32::MAX` while uncommitted; source runs).
#[derive(Default)]
struct ThreadGroups {
    stores: Vec<(u32, Vec<(u32, u32)>)>,
    committed: u32,
}

/// The asynchronous-proxy state of one CTA.
#[derive(Default)]
pub(crate) struct AsyncProxy {
    inflight: Vec<InFlight>,
    groups: HashMap<u32, ThreadGroups>,
}

/// Appends a 16-byte chunk at `off` to `runs`, merging with the previous run when contiguous.
fn push_chunk(runs: &mut Vec<(u32, u32)>, off: u32, len: u32) {
    if let Some(last) = runs.last_mut() {
        if last.0 + last.1 == off {
            last.1 += len;
            return;
        }
    }
    runs.push((off, len));
}

fn land(env: &mut Env, c: InFlight) {
    let mut at = 0usize;
    for &(o, n) in &c.runs {
        let (o, n) = (o as usize, n as usize);
        if let Some(h) = env.smem.bulk_land(o, n, c.tid) {
            hazard_finding(env, c.pc, c.tid, o as u64, h);
        }
        env.smem.data[o..o + n].copy_from_slice(&c.data[at..at + n]);
        at += n;
    }
    if env.waits.mbars.is_valid(c.mbar) {
        for &r in &c.runs {
            env.waits.mbars.guard(c.mbar, r);
        }
    } else {
        for &(o, n) in &c.runs {
            env.smem.bulk_release(o as usize, n as usize);
        }
    }
    mbarrier::add_tx(env, c.mbar, -(c.data.len() as i64), c.pc, c.tid);
}

/// Lands, in issue order, the in-flight copies completing on the mbarrier at `mbar`.
pub(super) fn land_for(env: &mut Env, mbar: u32) {
    if env.async_proxy.inflight.iter().all(|c| c.mbar != mbar) {
        return;
    }
    let all = std::mem::take(&mut env.async_proxy.inflight);
    let (now, later): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| c.mbar == mbar);
    env.async_proxy.inflight = later;
    for c in now {
        land(env, c);
    }
}

/// Lands every in-flight copy; returns whether there was one.
pub(super) fn land_all(env: &mut Env) -> bool {
    let all = std::mem::take(&mut env.async_proxy.inflight);
    let any = !all.is_empty();
    for c in all {
        land(env, c);
    }
    any
}

/// Executes one instruction of the family for the active lanes and moves the group on.
pub(super) fn exec_async(w: &mut Warp, env: &mut Env, pc: u32, active: u32, op: AsyncOp) {
    match op {
        AsyncOp::Mbar(ref m) => return mbarrier::exec(w, env, pc, active, m),
        AsyncOp::Mapa { .. } | AsyncOp::GetCtaRank { .. } => {
            super::cluster::exec_addr(w, env, pc, active, &op)
        }
        AsyncOp::ClusterBar { .. } => unreachable!("scheduled by mod.rs"),
        AsyncOp::Tma(ref t) => {
            for l in lanes(active) {
                tma(w, env, pc, l, t);
            }
        }
        AsyncOp::BulkCopy(ref c) => {
            for l in lanes(active) {
                bulk_copy(w, env, pc, l, c);
            }
        }
        AsyncOp::BulkCommit => {
            for l in lanes(active) {
                let g = env
                    .async_proxy
                    .groups
                    .entry(w.id * 32 + l as u32)
                    .or_default();
                let id = g.committed;
                for s in g.stores.iter_mut().filter(|s| s.0 == u32::MAX) {
                    s.0 = id;
                }
                g.committed += 1;
            }
        }
        // Stores write global memory when issued, so `.read` (sources read) and the full wait
        // (writes done) release the same state here.
        AsyncOp::BulkWait { n, read: _ } => {
            for l in lanes(active) {
                let Some(g) = env.async_proxy.groups.get_mut(&(w.id * 32 + l as u32)) else {
                    continue;
                };
                let target = g.committed.saturating_sub(n);
                let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut g.stores)
                    .into_iter()
                    .partition(|s| s.0 != u32::MAX && s.0 < target);
                g.stores = keep;
                for (_, runs) in done {
                    for (o, len) in runs {
                        env.smem.clear_store_source(o as usize, len as usize);
                    }
                }
            }
        }
        AsyncOp::FenceProxyAsync { shared } => {
            if shared && active != 0 {
                env.smem.fence_proxy_async();
            }
        }
        AsyncOp::PrefetchTensorMap { addr, window } => {
            for l in lanes(active) {
                let a = lane_addr(w, addr, l).wrapping_add(window);
                read_map(env, pc, w.id * 32 + l as u32, a);
            }
        }
    }
    w.next();
}

fn invalid_map(env: &mut Env, pc: u32, tid: u32, a: u64, why: String) {
    env.report(
        FindingKind::TensorMapInvalid,
        pc,
        tid,
        Some(a),
        None,
        || why,
    );
}

/// Reads and decodes the tensor map at generic address `a` for thread `tid`; `None` after a
/// finding.
fn read_map(env: &mut Env, pc: u32, tid: u32, a: u64) -> Option<Decoded> {
    if !a.is_multiple_of(TENSOR_MAP_ALIGN) {
        invalid_map(
            env,
            pc,
            tid,
            a,
            format!("tensor map address {a:#x} is not 64-byte aligned"),
        );
        return None;
    }
    let mut buf = [0u8; TENSOR_MAP_BYTES];
    let ok = match resolve(Space::Generic, a) {
        Loc::Param(o) => {
            let p = env.ctx.params;
            let ok = o as usize + TENSOR_MAP_BYTES <= p.len();
            if ok {
                buf.copy_from_slice(&p[o as usize..o as usize + TENSOR_MAP_BYTES]);
            }
            ok
        }
        Loc::Global(g) => env.ctx.gmem.read(g, &mut buf).is_ok(),
        _ => false,
    };
    if !ok {
        invalid_map(env, pc, tid, a, format!("tensor map address {a:#x} is not 128 readable bytes of param, const or global memory"));
        return None;
    }
    match Decoded::from_bytes(&buf) {
        Ok(m) => Some(m),
        Err(e) => {
            invalid_map(env, pc, tid, a, e.to_string());
            None
        }
    }
}

/// The box rows of a tensor copy: for each row (dimensions 1.. in order, 1 fastest), its
/// global address of element 0 of the row and the in-bounds column range, or `None` when the
/// row lies outside the tensor.
fn box_rows(m: &Decoded, c: &[i64; 5]) -> Vec<Option<(u64, u32, u32)>> {
    let rank = m.rank as usize;
    let ext: Vec<u32> = (0..rank).map(|k| m.extent(k)).collect();
    let nrows: u64 = ext[1..].iter().map(|&e| e as u64).product();
    let n0 = ext[0] as i64;
    let lo = c[0].max(0);
    let hi = (c[0] + n0).min(m.dims[0] as i64);
    let mut rows = Vec::with_capacity(nrows as usize);
    for r in 0..nrows {
        let mut rem = r;
        // In i128: a map's address (any u64) plus coordinates (i32) times strides (< 2^40)
        // does not overflow there.
        let mut addr = m.address as i128;
        let mut inside = lo < hi;
        for k in 1..rank {
            let i = (rem % ext[k] as u64) as i64;
            rem /= ext[k] as u64;
            let g = c[k] + i * m.elem_strides[k] as i64;
            inside &= g >= 0 && g < m.dims[k] as i64;
            addr += g as i128 * m.strides[k] as i128;
        }
        rows.push(inside.then(|| {
            // A row beyond the 64-bit address space faults like any unmapped address (the
            // top address, never allocated, stands for it).
            let first = u64::try_from(addr + lo as i128 * m.strides[0] as i128).unwrap_or(u64::MAX);
            (first, (lo - c[0]) as u32, (hi - c[0]) as u32)
        }));
    }
    rows
}

fn count_global(env: &mut Env, addr: u64, n: u64, store: bool) {
    if n == 0 {
        return;
    }
    // The last byte saturates: a copy running past 2^64 faulted (a finding) and counts the
    // sectors up to the top.
    env.cnt.sectors += (addr.saturating_add(n - 1) >> 5) - (addr >> 5) + 1;
    if store {
        env.cnt.gst += n;
    } else {
        env.cnt.gld += n;
    }
}

fn tma(w: &mut Warp, env: &mut Env, pc: u32, l: usize, op: &TmaOp) {
    let tid = w.id * 32 + l as u32;
    let Some(m) = read_map(env, pc, tid, w.r(op.map, l)) else {
        return;
    };
    if m.rank != op.dims {
        let a = w.r(op.map, l);
        invalid_map(
            env,
            pc,
            tid,
            a,
            format!(
                "{} coordinates for a tensor map of rank {}",
                op.dims, m.rank
            ),
        );
        return;
    }
    if op.k == TmaK::Prefetch {
        return;
    }
    let mut c = [0i64; 5];
    for (x, r) in c.iter_mut().zip(op.coords.iter()).take(op.dims as usize) {
        *x = w.r(*r, l) as u32 as i32 as i64;
    }
    // PTX ISA "cp.async.bulk.tensor": the shared-memory box is 128-byte aligned; a swizzled box
    // starts at a repeat of its pattern.
    let Some((drank, base, _)) = super::cluster::locate(env, pc, tid, lane_addr(w, op.smem, l))
    else {
        return;
    };
    if op.k != TmaK::Load && drank != env.rank {
        env.report(
            FindingKind::ClusterMisuse,
            pc,
            tid,
            Some(base),
            None,
            || "a tensor store reads shared::cta memory; this address is a peer CTA's".to_string(),
        );
        return;
    }
    let align = m.swizzle.smem_align() as u64;
    if !base.is_multiple_of(align) {
        env.report(FindingKind::Misaligned, pc, tid, Some(base), None, || {
            format!(
                "a tensor copy with {:?} swizzle needs a {align}-byte aligned shared-memory box",
                m.swizzle
            )
        });
        return;
    }
    let bytes = m.box_bytes();
    if !fits(base, bytes, env.smem.len() as u64) {
        return oob(env, pc, tid, Loc::Shared(base), bytes as usize);
    }
    let base = base as u32;
    let esize = m.strides[0] as u32;
    let row_bytes = m.extent(0) * esize;
    let rows = box_rows(&m, &c);
    // Where the 16-byte chunk at dense offset `j` of the box lives in shared memory.
    let place = |j: u32| m.swizzle.apply(base + j);
    if op.k == TmaK::Load {
        let Some((mrank, mb)) = mbarrier::mbar_target(w, env, pc, l, op.mbar, false) else {
            return;
        };
        let fill = if m.nan_fill { 0xFF } else { 0 };
        let mut data = vec![fill; bytes as usize];
        let mut faulted = false;
        for (r, row) in rows.iter().enumerate() {
            let Some((ga, lo, hi)) = *row else { continue };
            let at = r * row_bytes as usize + (lo * esize) as usize;
            let n = ((hi - lo) * esize) as usize;
            if env.ctx.gmem.read(ga, &mut data[at..at + n]).is_err() && !faulted {
                faulted = true;
                oob(env, pc, tid, Loc::Global(ga), n);
            }
            count_global(env, ga, n as u64, false);
        }
        let mut runs = Vec::new();
        for j in (0..bytes as u32).step_by(16) {
            push_chunk(&mut runs, place(j), 16);
        }
        let targets = if op.mcast == NONE {
            if drank != mrank {
                env.report(FindingKind::ClusterMisuse, pc, tid, Some(base as u64), None, || {
                    format!("the copy writes CTA rank {drank} but completes on an mbarrier of rank {mrank}")
                });
                return;
            }
            1u32 << drank
        } else {
            w.r(op.mcast, l) as u32 & 0xFFFF
        };
        issue_loads(env, pc, tid, targets, mb, runs, data);
    } else {
        let mut row = vec![0u8; row_bytes as usize];
        let mut runs = Vec::new();
        let mut dirty = false;
        for (r, rinfo) in rows.iter().enumerate() {
            for j in (0..row_bytes).step_by(16) {
                let o = place(r as u32 * row_bytes + j);
                let (hz, d) = env.smem.store_source(o as usize, 16, tid);
                if let Some(h) = hz {
                    hazard_finding(env, pc, tid, o as u64, h);
                }
                dirty |= d;
                row[j as usize..j as usize + 16]
                    .copy_from_slice(&env.smem.data[o as usize..o as usize + 16]);
                push_chunk(&mut runs, o, 16);
            }
            let Some((ga, lo, hi)) = *rinfo else { continue };
            let src = &row[(lo * esize) as usize..(hi * esize) as usize];
            if !store_global(env, pc, tid, ga, src) {
                oob(env, pc, tid, Loc::Global(ga), src.len());
            }
            let n = src.len() as u64;
            count_global(env, ga, n, true);
            env.cnt.tma_store += n;
        }
        issue_store(env, pc, tid, base as u64, runs, dirty);
    }
}

/// Registers a load in flight to `runs` of each CTA rank in the mask `targets` (one bit: a
/// plain copy; several: `.multicast::cluster`), completing on the mbarrier at offset `mb` of
/// each destination CTA.
fn issue_loads(
    env: &mut Env,
    pc: u32,
    tid: u32,
    targets: u32,
    mb: u32,
    runs: Vec<(u32, u32)>,
    data: Vec<u8>,
) {
    let n = env.cluster_ctas();
    if targets == 0 || targets >> n != 0 {
        env.report(FindingKind::InvalidClusterRank, pc, tid, None, None, || {
            format!("multicast CTA mask {targets:#06x}; the cluster has {n} CTAs")
        });
    }
    let rank = env.rank;
    env.cnt.tma_load += data.len() as u64;
    for r in lanes(targets & ((1u32 << n) - 1)) {
        let r = r as u32;
        let key = if r == rank {
            tid
        } else {
            super::cluster::remote_key(rank, tid)
        };
        let Some(t) = env.cta_mut(r) else { continue };
        if t.finished {
            env.report(
                FindingKind::ClusterMisuse,
                pc,
                tid,
                Some(mb as u64),
                None,
                || {
                    format!(
                        "the copy writes the shared memory of cluster CTA rank {r}, which exited"
                    )
                },
            );
            continue;
        }
        let valid = t.waits.mbars.is_valid(mb);
        let mut hz = Vec::new();
        for &(o, len) in &runs {
            hz.extend(
                t.smem
                    .bulk_mark(o as usize, len as usize, key)
                    .map(|h| (o, h)),
            );
        }
        t.async_proxy.inflight.push(InFlight {
            mbar: mb,
            tid: key,
            pc,
            runs: runs.clone(),
            data: data.clone(),
        });
        if !valid {
            env.report(
                FindingKind::MbarrierMisuse,
                pc,
                tid,
                Some(mb as u64),
                None,
                || format!("the copy completes on shared {mb:#x} of CTA rank {r}, which holds no initialised mbarrier"),
            );
        }
        for (o, h) in hz {
            hazard_finding(env, pc, tid, o as u64, h);
        }
    }
}

/// Registers a store's source reads in the thread's current (uncommitted) bulk group.
fn issue_store(env: &mut Env, pc: u32, tid: u32, src: u64, runs: Vec<(u32, u32)>, dirty: bool) {
    if dirty {
        env.report(FindingKind::MissingProxyFence, pc, tid, Some(src), None, || {
            "the bulk store reads shared memory written by generic-proxy stores after the last fence.proxy.async".to_string()
        });
    }
    env.async_proxy
        .groups
        .entry(tid)
        .or_default()
        .stores
        .push((u32::MAX, runs));
}

fn bulk_copy(w: &mut Warp, env: &mut Env, pc: u32, l: usize, op: &BulkCopyOp) {
    let tid = w.id * 32 + l as u32;
    let (d, s) = (lane_addr(w, op.dst, l), lane_addr(w, op.src, l));
    let n = w.r(op.size, l) as u32 as u64;
    // PTX ISA "cp.async.bulk": size and both addresses are multiples of 16.
    if !n.is_multiple_of(16) || !d.is_multiple_of(16) || !s.is_multiple_of(16) {
        env.report(FindingKind::Misaligned, pc, tid, Some(d), None, || {
            format!("cp.async.bulk needs 16-byte multiples: dst {d:#x}, src {s:#x}, size {n}")
        });
        return;
    }
    let (sh, g) = if op.load { (d, s) } else { (s, d) };
    if !fits(sh, n, env.smem.len() as u64) {
        return oob(env, pc, tid, Loc::Shared(sh), n as usize);
    }
    if op.load {
        let Some((mrank, mb)) = mbarrier::mbar_target(w, env, pc, l, op.mbar, false) else {
            return;
        };
        if mrank != env.rank {
            env.report(FindingKind::ClusterMisuse, pc, tid, Some(sh), None, || {
                "cp.async.bulk into a peer CTA is not emulated".to_string()
            });
            return;
        }
        let mut data = vec![super::super::memory::POISON; n as usize];
        if env.ctx.gmem.read(g, &mut data).is_err() {
            oob(env, pc, tid, Loc::Global(g), n as usize);
        }
        count_global(env, g, n, false);
        issue_loads(
            env,
            pc,
            tid,
            1 << env.rank,
            mb,
            vec![(sh as u32, n as u32)],
            data,
        );
    } else {
        let (hz, dirty) = env.smem.store_source(sh as usize, n as usize, tid);
        if let Some(h) = hz {
            hazard_finding(env, pc, tid, sh, h);
        }
        let data = env.smem.data[sh as usize..(sh + n) as usize].to_vec();
        if !store_global(env, pc, tid, g, &data) {
            oob(env, pc, tid, Loc::Global(g), n as usize);
        }
        count_global(env, g, n, true);
        env.cnt.tma_store += n;
        issue_store(env, pc, tid, sh, vec![(sh as u32, n as u32)], dirty);
    }
}
