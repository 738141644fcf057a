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
use crate::program::{Inst, Op};

/// One dynamic warp-instruction: its PC and two figures whose meaning depends on the
/// instruction (see [`Rec::wavefronts`], [`Rec::sectors`], [`Rec::barrier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    pub pc: u32,
    a: u16,
    b: u16,
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
    /// The record being executed: (warp, index, wavefronts and sectors before it).
    pending: Option<(usize, usize, u64, u64)>,
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
        if let Some((w, i, wf, sec)) = self.pending.take() {
            let r = &mut self.trace.warps[w][i];
            r.a = sat16(cnt.wavefronts - wf);
            r.b = sat16(cnt.sectors - sec);
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
    let r = if let Op::Bar { id, count, .. } = inst.op {
        let first = active.trailing_zeros().min(31) as usize;
        let bid = (w.r(id, first) & 0xF) as u16;
        let expected = if count == crate::program::NONE {
            env.nthreads
        } else {
            w.r(count, first) as u32
        };
        Rec {
            pc,
            a: bid | ((active.count_ones() as u16) << 4),
            b: expected.min(u16::MAX as u32 - 1) as u16,
        }
    } else {
        rec.pending = Some((wi, idx, env.cnt.wavefronts, env.cnt.sectors));
        // Marked open until `close` fills the figures in.
        Rec {
            pc,
            a: u16::MAX,
            b: u16::MAX,
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
