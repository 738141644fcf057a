//! The opt-in trace hook: per warp, the dynamic stream of warp-instructions a CTA executed, with
//! the per-instruction figures the timing needs that only execution knows (shared-memory
//! wavefronts, global 32-byte sectors, barrier ids and counts). Recorded only for the CTAs a
//! [`TraceSink`] asks for; a launch without a sink pays one predictable branch per
//! warp-instruction (`exec/mod.rs`, `run_warp`).
//!
//! The wavefronts and sectors of an instruction are the growth of the CTA's own counters
//! (`counters.rs`) while it executed, so the trace and the counters agree by construction.

use std::sync::Mutex;

use crate::counters::RawCounters;
use crate::exec::{Env, Warp};
use crate::program::{Addr, AsyncOp, Inst, MbarK, Op, NONE};

/// One dynamic warp-instruction: its PC and three figures whose meaning depends on the
/// instruction (see [`Rec::wavefronts`], [`Rec::sectors`], [`Rec::barrier`], [`Rec::mbar`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    pub pc: u32,
    a: u16,
    b: u16,
    c: u32,
}

impl Rec {
    /// Shared-memory wavefronts of a shared access (ldmatrix, ld/st.shared, the store half of
    /// a `cp.async`).
    pub fn wavefronts(&self) -> u32 {
        self.a as u32
    }
    /// Global 32-byte sectors of a global access (the source read of a `cp.async`).
    pub fn sectors(&self) -> u32 {
        self.b as u32
    }
    /// Of a `bar`: (barrier id, arriving threads, expected threads).
    pub fn barrier(&self) -> (u32, u32, u32) {
        ((self.a & 0xF) as u32, (self.a >> 4) as u32, self.b as u32)
    }
    /// Of an `mbarrier` instruction or a TMA load: the mbarrier's shared-memory offset.
    pub fn mbar(&self) -> u32 {
        self.a as u32 * 8
    }
    /// Of `mbarrier.arrive`: the arrivals (active lanes x count); of a wait: the parity waited
    /// for (the phase parity whose completion it needs, 0 or 1), or `u16::MAX` when no lane
    /// executed it.
    pub fn mbar_b(&self) -> u32 {
        self.b as u32
    }
    /// Of `mbarrier.init`: the expected arrivals (0 when no lane executed it); of an arrive /
    /// expect_tx / complete_tx: the transaction bytes added (summed over lanes); of a TMA load:
    /// the bytes it copies.
    pub fn mbar_c(&self) -> u32 {
        self.c
    }
}

/// The trace of one CTA: one instruction stream per warp.
#[derive(Debug, Clone, Default)]
pub struct CtaTrace {
    pub cta: [u32; 3],
    pub warps: Vec<Vec<Rec>>,
}

/// Per-CTA recorder, held by the CTA's `Env` while it runs.
pub(crate) struct Recorder {
    trace: CtaTrace,
    /// The record being executed: (warp, index, the counters before it, whether its `a` holds
    /// an mbarrier offset rather than wavefronts).
    pending: Option<(usize, usize, Before, bool)>,
}

/// The counters a record's figures are the growth of.
#[derive(Clone, Copy)]
struct Before {
    wavefronts: u64,
    sectors: u64,
    wgmma_smem: u64,
    tma_load: u64,
}

impl Before {
    fn of(c: &RawCounters) -> Self {
        Before {
            wavefronts: c.wavefronts,
            sectors: c.sectors,
            wgmma_smem: c.wgmma_smem,
            tma_load: c.tma_load,
        }
    }
}

impl Recorder {
    pub(crate) fn new(cta: [u32; 3], nwarps: u32) -> Self {
        Recorder {
            trace: CtaTrace {
                cta,
                warps: vec![Vec::new(); nwarps as usize],
            },
            pending: None,
        }
    }

    /// Closes the pending record with the counter growth since it started.
    fn close(&mut self, cnt: &RawCounters) {
        if let Some((w, i, b, keep_a)) = self.pending.take() {
            let r = &mut self.trace.warps[w][i];
            if !keep_a {
                // A wgmma's operand reads through its descriptors count as 128-byte wavefronts.
                r.a = sat16(
                    cnt.wavefronts - b.wavefronts + (cnt.wgmma_smem - b.wgmma_smem).div_ceil(128),
                );
            }
            r.b = sat16(cnt.sectors - b.sectors);
            r.c = (cnt.tma_load - b.tma_load).min(u32::MAX as u64) as u32;
        }
    }

    pub(crate) fn finish(mut self, cnt: &RawCounters) -> CtaTrace {
        self.close(cnt);
        self.trace
    }
}

fn sat16(v: u64) -> u16 {
    v.min(u16::MAX as u64 - 1) as u16
}

/// Records the warp-instruction at `pc` that `w` is about to execute for the `active` lanes.
#[inline(never)]
pub(crate) fn record(w: &Warp, env: &mut Env, pc: u32, inst: &Inst, active: u32) {
    let Some(rec) = env.trace.as_deref_mut() else {
        return;
    };
    rec.close(&env.cnt);
    let wi = w.id as usize;
    let idx = rec.trace.warps[wi].len();
    let first = active.trailing_zeros().min(31) as usize;
    let lanes = active.count_ones();
    // The mbarrier operand's shared offset / 8 (a generic address keeps its window offset in
    // the low bits: the shared window is aligned far above 256 KB).
    let mbar = |a: Addr| ((w.r(a.base, first).wrapping_add(a.off as u64) & 0x3_FFFF) / 8) as u16;
    let val = |r| if r == NONE { 0 } else { w.r(r, first) };
    let r = match inst.op {
        Op::Bar { id, count, .. } => {
            let bid = (w.r(id, first) & 0xF) as u16;
            let expected = if count == NONE {
                env.nthreads
            } else {
                w.r(count, first) as u32
            };
            Rec {
                pc,
                a: bid | ((lanes as u16) << 4),
                b: expected.min(u16::MAX as u32 - 1) as u16,
                c: 0,
            }
        }
        Op::Async(AsyncOp::Mbar(op)) => {
            // No lane executes it (guard false everywhere): no effect; a wait with no lane
            // waits for nothing (marked by b = u16::MAX, see `Rec::mbar_b`).
            let (b, c) = match op.k {
                MbarK::Wait { .. } if lanes == 0 => (u16::MAX as u32, 0),
                _ if lanes == 0 => (0, 0),
                MbarK::Init => (0, val(op.a) as u32),
                MbarK::Arrive { expect_tx, .. } => {
                    let count = if op.a == NONE { 1 } else { val(op.a) as u32 };
                    let tx = if expect_tx { val(op.b) as u32 } else { 0 };
                    (lanes * count, lanes * tx)
                }
                MbarK::ExpectTx | MbarK::CompleteTx => (0, lanes * val(op.a) as u32),
                // Parity form: the operand; state form: the token's phase (its low bit).
                MbarK::Wait { .. } => ((val(op.a) & 1) as u32, 0),
                MbarK::Inval | MbarK::PendingCount => (0, 0),
            };
            Rec {
                pc,
                a: mbar(op.addr),
                b: b.min(u16::MAX as u32) as u16,
                c,
            }
        }
        Op::Async(AsyncOp::Tma(op)) => {
            rec.pending = Some((wi, idx, Before::of(&env.cnt), true));
            Rec {
                pc,
                a: mbar(op.mbar),
                b: u16::MAX,
                c: 0,
            }
        }
        _ => {
            rec.pending = Some((wi, idx, Before::of(&env.cnt), false));
            // Marked open until `close` fills the figures in.
            Rec {
                pc,
                a: u16::MAX,
                b: u16::MAX,
                c: 0,
            }
        }
    };
    rec.trace.warps[wi].push(r);
}

/// Closes the last record of the running warp (called when `run_warp` returns, before other
/// warps or stall resolution change the counters).
pub(crate) fn flush(env: &mut Env) {
    if let Some(rec) = env.trace.as_deref_mut() {
        rec.close(&env.cnt);
    }
}

/// Which CTAs of a launch to trace, and where their traces go.
pub(crate) struct TraceSink {
    /// Linear CTA indices (x fastest), sorted.
    pub wanted: Vec<u64>,
    pub out: Mutex<Vec<(u64, CtaTrace)>>,
}

/// The linear index of `cta` in `grid` (x fastest), as `device.rs` enumerates CTAs.
pub(crate) fn linear_index(grid: [u32; 3], cta: [u32; 3]) -> u64 {
    cta[0] as u64 + grid[0] as u64 * (cta[1] as u64 + grid[1] as u64 * cta[2] as u64)
}

impl TraceSink {
    pub(crate) fn recorder_for(
        &self,
        grid: [u32; 3],
        cta: [u32; 3],
        nwarps: u32,
    ) -> Option<Box<Recorder>> {
        self.wanted
            .binary_search(&linear_index(grid, cta))
            .ok()
            .map(|_| Box::new(Recorder::new(cta, nwarps)))
    }

    pub(crate) fn push(&self, grid: [u32; 3], t: CtaTrace) {
        let linear = linear_index(grid, t.cta);
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((linear, t));
    }
}
