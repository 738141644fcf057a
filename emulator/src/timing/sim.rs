//! The SM simulation: replays the traces of the CTAs resident on one SM together, cycle by
//! cycle (skipping cycles in which nothing can issue).
//!
//! Policies (each a stated model choice, see `timing/mod.rs` for the sources):
//! - **Sub-partitions**: warp slot `s` (CTA slot-major, then warp index) runs on sub-partition
//!   `s % subpartitions`; each sub-partition issues at most one warp-instruction per clock.
//! - **Scheduler**: greedy-then-oldest (GTO): the warp that issued last keeps issuing while it
//!   is eligible, else the oldest eligible warp (lowest slot) issues.
//! - **Dependencies**: a per-warp scoreboard on PTX registers and predicates: an instruction is
//!   eligible when every register it reads or writes is ready (RAW and WAW; PTX registers are
//!   virtual, so ptxas's register reuse (WAR) is not seen).
//! - **Order**: a warp issues its trace in order (PTX order, `sched_window` 1), or with a
//!   window of N the earliest-ready of its next N unissued instructions that has no register or
//!   memory-order hazard with an older one and no barrier, branch, exit or cp.async
//!   commit/wait before it: a stand-in for ptxas's list scheduling inside a basic block.
//! - **Pipes**: per sub-partition, each pipe accepts a warp-instruction every `interval`
//!   clocks; the result is ready `latency` clocks after issue.
//! - **Shared memory**: one SM-wide server retiring one 128-byte wavefront per clock; an access
//!   of W wavefronts (bank conflicts included, from the trace) occupies it W clocks, its data is
//!   ready `smem_latency + W - 1` clocks after it starts. Shuffles take one wavefront slot.
//! - **Global memory**: one server per SM at its share of the L2 bandwidth (bytes per clock,
//!   the GPU's L2 bandwidth divided evenly by the SMs: all SMs equally loaded); a request of S
//!   sectors occupies it S x 32 / bandwidth clocks and its data is ready `global_latency` after
//!   that. DRAM is not in the SM simulation (the kernel-level model bounds it).
//! - **cp.async**: completes like a global load; its shared-memory wavefronts are charged at
//!   issue; `cp.async.wait_group n` blocks the warp until all but the newest n committed groups
//!   completed.
//! - **Barriers**: `bar.sync` blocks the warp until the barrier's expected threads arrived;
//!   waiters are released `barrier_latency` clocks after the last arrival.
//! - **wgmma**: each warp of the warpgroup issues its `wgmma.mma_async` in one issue slot; its
//!   m16nNk16 quarter queues on its sub-partition's tensor pipe (N/8 x the wgmma interval per
//!   m16n8k16; `mma.sync` waits behind queued wgmma work), its descriptor operand reads go to
//!   the shared-memory server (wavefronts from the trace), and its accumulators are ready the
//!   wgmma latency after its tensor work ends. Consecutive wgmmas on the same accumulators do
//!   not wait for each other (the tensor core chains them). `commit_group` / `wait_group n` as
//!   cp.async's groups. The queue has no depth limit (an assumption).
//! - **mbarriers**: per CTA and shared offset: the expected arrivals (from `init`), arrivals
//!   and transaction bytes (arrive.expect_tx adds, a TMA load's bytes complete at its data's
//!   arrival). A phase completes when all arrivals are in and the bytes balance, at the latest
//!   of its events. A wait on parity p passes when the barrier's phase at that clock has the
//!   other parity, else blocks until the phase completes (+ `barrier_latency`) (PTX ISA
//!   semantics, so the emulator's own interleaving does not leak in): the emulator's failed
//!   `try_wait` polls (a wait followed by itself, or by a branch back to itself) are dropped
//!   from the trace first.
//! - **TMA**: a tensor load is a global request of its bytes (sectors = bytes / 32) whose shared
//!   writes are charged at issue; a tensor store a global store in a bulk async-group.
//! - A warp is finished when its last `exit` issued (lanes that exit early leave the others
//!   running) and its last register write landed.

use std::collections::{HashMap, VecDeque};

use super::operands::{InstInfo, Kind, Statics};
use super::trace::{CtaTrace, Rec};
use super::{SmConfig, SmRun, TimingError};
use crate::program::R;

#[derive(Clone, Copy)]
enum Pipe {
    Alu,
    Fma,
    Fp64,
    Sfu,
    Conv,
    Tensor,
    Mio,
    Branch,
}
const NPIPES: usize = 8;

/// Why a sub-partition issued nothing in a clock: the binding constraint of its most ready warp.
/// The names are the keys of [`SmRun::stalls`].
pub(super) const STALLS: [&str; 12] = [
    "wait: mma result",
    "wait: shared/ldmatrix/shuffle result",
    "wait: global result",
    "wait: SFU/conversion result",
    "wait: ALU/FMA result",
    "pipe busy: tensor",
    "pipe busy: other",
    "barrier",
    "cp.async wait",
    "no warp left",
    "mbarrier wait",
    "wgmma / bulk group wait",
];
const WAIT_MMA: u8 = 0;
const WAIT_SMEM: u8 = 1;
const WAIT_GLOBAL: u8 = 2;
const WAIT_SFU: u8 = 3;
const WAIT_ALU: u8 = 4;
const PIPE_TENSOR: u8 = 5;
const PIPE_OTHER: u8 = 6;
const BARRIER: u8 = 7;
const CP_WAIT: u8 = 8;
const NO_WARP: u8 = 9;
const MBAR_WAIT: u8 = 10;
const GROUP_WAIT: u8 = 11;

/// The stall cause of waiting for a result of `k`.
fn wait_cause(k: Kind) -> u8 {
    match k {
        Kind::Mma { .. } | Kind::Wgmma { .. } => WAIT_MMA,
        Kind::MbarWait => MBAR_WAIT,
        Kind::SharedLd | Kind::Shuffle => WAIT_SMEM,
        Kind::GlobalLd { .. } | Kind::CpAsync => WAIT_GLOBAL,
        Kind::Sfu | Kind::Conv => WAIT_SFU,
        _ => WAIT_ALU,
    }
}

struct WarpState<'a> {
    cta: usize,
    recs: &'a [Rec],
    /// The oldest record not issued yet.
    next: usize,
    /// Records issued ahead of `next` (bit i: record `next + i`; bit 0 is always clear).
    ahead: u64,
    /// Position after `next` of the record the last [`Sm::earliest`] chose.
    pick: usize,
    /// Per register: scan stamp << 2 | DEF | USE of the window's unissued records.
    marks: Vec<u32>,
    stamp: u32,
    ready: Vec<u64>,
    /// Per register, the stall cause of waiting for it (the kind of its producer).
    producer: Vec<u8>,
    blocked_until: u64,
    blocked_cause: u8,
    at_barrier: bool,
    last_write: u64,
    done: Option<u64>,
    /// cp.async, wgmma and bulk-store async-groups.
    cp: Groups,
    wg: Groups,
    bulk: Groups,
    /// Parked on an mbarrier phase that has not completed yet.
    at_mbar: bool,
    sp: usize,
}

/// The async-groups of one kind of a warp: completion clock of the operations not committed
/// yet, and of each committed group, oldest first.
#[derive(Default)]
struct Groups {
    open: u64,
    committed: VecDeque<u64>,
}

impl Groups {
    fn add(&mut self, done: u64) {
        self.open = self.open.max(done);
    }
    fn commit(&mut self) {
        let g = std::mem::take(&mut self.open);
        self.committed.push_back(g);
    }
    /// `wait_group n` issued at `t`: the clock all but the newest `n` groups completed.
    fn wait(&mut self, n: u32, t: u64) -> u64 {
        let mut until = t + 1;
        while self.committed.len() > n as usize {
            until = until.max(self.committed.pop_front().unwrap_or(0));
        }
        until
    }
}

impl WarpState<'_> {
    /// The async-groups a commit / wait / async operation of kind `k` belongs to.
    fn groups(&mut self, k: Kind) -> &mut Groups {
        match k {
            Kind::Wgmma { .. } | Kind::WgmmaCommit | Kind::WgmmaWait(_) => &mut self.wg,
            Kind::TmaStore | Kind::BulkCommit | Kind::BulkWait(_) => &mut self.bulk,
            _ => &mut self.cp,
        }
    }
}

/// One mbarrier of one CTA.
#[derive(Default)]
struct Mbar {
    expected: u32,
    arrived: u32,
    /// Transaction bytes expected minus bytes completed, in the current phase.
    tx: i64,
    /// The latest clock of the current phase's events (arrivals, bytes landing).
    last: u64,
    /// Completion clock of every completed phase, in order.
    done_at: Vec<u64>,
    /// Warps parked until the current phase completes.
    waiters: Vec<usize>,
}

#[derive(Clone, Copy, Default)]
struct Barrier {
    arrived: u32,
    expected: u32,
}

struct Sm<'a> {
    cfg: &'a SmConfig,
    st: &'a Statics,
    warps: Vec<WarpState<'a>>,
    pipe_free: Vec<[u64; NPIPES]>,
    smem_free: u64,
    mem_free: f64,
    bars: Vec<[Barrier; 16]>,
    waiters: Vec<Vec<usize>>,
    /// Per CTA, its mbarriers by shared offset.
    mbars: Vec<HashMap<u32, Mbar>>,
    wgmma: super::PipeParams,
    run: SmRun,
}

fn pipe_of(k: Kind) -> Option<Pipe> {
    Some(match k {
        Kind::Alu => Pipe::Alu,
        Kind::Fma => Pipe::Fma,
        Kind::Fp64 => Pipe::Fp64,
        Kind::Sfu => Pipe::Sfu,
        Kind::Conv => Pipe::Conv,
        Kind::Mma { .. } => Pipe::Tensor,
        Kind::SharedLd
        | Kind::SharedSt
        | Kind::Shuffle
        | Kind::GlobalLd { .. }
        | Kind::GlobalSt { .. }
        | Kind::CpAsync => Pipe::Mio,
        Kind::MbarInit
        | Kind::MbarArrive
        | Kind::MbarTx { .. }
        | Kind::MbarWait
        | Kind::TmaLoad
        | Kind::TmaStore => Pipe::Mio,
        Kind::Branch
        | Kind::Exit
        | Kind::CpCommit
        | Kind::CpWait(_)
        | Kind::Bar { .. }
        | Kind::Wgmma { .. }
        | Kind::WgmmaCommit
        | Kind::WgmmaWait(_)
        | Kind::BulkCommit
        | Kind::BulkWait(_) => Pipe::Branch,
        Kind::Free | Kind::Unsupported(_) => return None,
    })
}

impl<'a> Sm<'a> {
    fn info(&self, w: usize) -> Option<(&'a InstInfo, Rec)> {
        self.info_at(w, 0)
    }

    /// The record `pos` places after warp `w`'s oldest unissued one.
    fn info_at(&self, w: usize, pos: usize) -> Option<(&'a InstInfo, Rec)> {
        let ws = &self.warps[w];
        ws.recs
            .get(ws.next + pos)
            .map(|r| (&self.st.insts[r.pc as usize], *r))
    }

    /// Moves warp `w`'s head past the records issued ahead of it and applies the free
    /// instructions that reach the head.
    fn drain_free(&mut self, w: usize) {
        let st = self.st;
        loop {
            let ws = &mut self.warps[w];
            if ws.ahead & 1 == 1 {
                ws.next += 1;
                ws.ahead >>= 1;
                continue;
            }
            let Some(r) = ws.recs.get(ws.next) else {
                return;
            };
            let i = &st.insts[r.pc as usize];
            if i.kind != Kind::Free {
                return;
            }
            let t = st
                .uses(i)
                .iter()
                .map(|&u| ws.ready[u as usize])
                .max()
                .unwrap_or(0);
            for &d in st.defs(i) {
                ws.ready[d as usize] = t;
            }
            ws.next += 1;
            ws.ahead >>= 1;
            self.run.free_instructions += 1;
        }
    }

    /// The earliest clock warp `w` can issue an instruction (`u64::MAX`: waiting on a barrier
    /// or finished), the constraint that sets it, and (in `pick`) which instruction: the head,
    /// or with a scheduling window of N > 1 the earliest of the next N unissued records that
    /// has no register hazard (RAW, WAR, WAW) with an older unissued record, no memory access
    /// passing an older one, and no barrier, branch, exit or cp.async commit/wait before it
    /// (these issue only at the head).
    fn earliest(&mut self, w: usize) -> Result<(u64, u8), TimingError> {
        const DEF: u32 = 1;
        const USE: u32 = 2;
        let window = self.cfg.sched_window.clamp(1, 64) as usize;
        let ws = &self.warps[w];
        if ws.done.is_some() {
            return Ok((u64::MAX, NO_WARP));
        }
        if ws.at_barrier {
            return Ok((u64::MAX, BARRIER));
        }
        if ws.at_mbar {
            return Ok((u64::MAX, MBAR_WAIT));
        }
        let mut marks = std::mem::take(&mut self.warps[w].marks);
        let stamp = {
            let ws = &mut self.warps[w];
            ws.stamp = ws.stamp.wrapping_add(1) & 0x3FFF_FFFF;
            if ws.stamp == 0 {
                marks.fill(0);
                ws.stamp = 1;
            }
            ws.stamp
        };
        let marked = |marks: &[u32], r: R, bits: u32| {
            marks[r as usize] >> 2 == stamp && marks[r as usize] & bits != 0
        };
        let mut best: Option<(u64, u8, usize)> = None;
        let mut older_mem = false;
        let mut result = Ok(());
        for pos in 0..window {
            let ws = &self.warps[w];
            if ws.ahead >> pos & 1 == 1 {
                continue;
            }
            let Some((i, r)) = self.info_at(w, pos) else {
                break;
            };
            if let Kind::Unsupported(what) = i.kind {
                if pos == 0 {
                    result = Err(TimingError::Unsupported { what, pc: r.pc });
                }
                break;
            }
            let fence = matches!(
                i.kind,
                Kind::Bar { .. }
                    | Kind::Branch
                    | Kind::Exit
                    | Kind::CpCommit
                    | Kind::CpWait(_)
                    | Kind::MbarWait
                    | Kind::WgmmaCommit
                    | Kind::WgmmaWait(_)
                    | Kind::BulkCommit
                    | Kind::BulkWait(_)
            );
            if fence && pos > 0 {
                break;
            }
            let mem = matches!(
                i.kind,
                Kind::SharedLd
                    | Kind::SharedSt
                    | Kind::GlobalLd { .. }
                    | Kind::GlobalSt { .. }
                    | Kind::CpAsync
                    | Kind::Wgmma { .. }
                    | Kind::MbarInit
                    | Kind::MbarArrive
                    | Kind::MbarTx { .. }
                    | Kind::TmaLoad
                    | Kind::TmaStore
            );
            let (uses, defs) = (self.st.uses(i), self.st.defs(i));
            // A wgmma accumulates into registers an older wgmma may still be writing: the
            // tensor core chains them, so its accumulators do not hold it back.
            let waited_defs = if matches!(i.kind, Kind::Wgmma { .. }) {
                &[][..]
            } else {
                defs
            };
            let hazard = (mem && older_mem)
                || uses.iter().any(|&u| marked(&marks, u, DEF))
                || defs.iter().any(|&d| marked(&marks, d, DEF | USE));
            if !hazard && i.kind != Kind::Free {
                let (mut t, mut cause) = (ws.blocked_until, ws.blocked_cause);
                for &x in uses.iter().chain(waited_defs) {
                    if ws.ready[x as usize] > t {
                        (t, cause) = (ws.ready[x as usize], ws.producer[x as usize]);
                    }
                }
                if let Some(p) = pipe_of(i.kind) {
                    let free = self.pipe_free[ws.sp][p as usize];
                    if free > t {
                        t = free;
                        cause = if matches!(p, Pipe::Tensor) {
                            PIPE_TENSOR
                        } else {
                            PIPE_OTHER
                        };
                    }
                }
                if best.is_none_or(|(bt, _, _)| t < bt) {
                    best = Some((t, cause, pos));
                }
            }
            for (regs, bit) in [(defs, DEF), (uses, USE)] {
                for &x in regs {
                    let m = &mut marks[x as usize];
                    *m = if *m >> 2 == stamp {
                        *m | bit
                    } else {
                        stamp << 2 | bit
                    };
                }
            }
            older_mem |= mem;
            if fence {
                break;
            }
        }
        let ws = &mut self.warps[w];
        ws.marks = marks;
        result?;
        let Some((t, cause, pos)) = best else {
            // Ran off the end of the trace without `exit` (trace of an abandoned CTA).
            return Ok((u64::MAX, NO_WARP));
        };
        ws.pick = pos;
        Ok((t, cause))
    }

    fn pipe_params(&self, k: Kind) -> (u32, u32) {
        let c = self.cfg;
        let p = match k {
            Kind::Alu => c.alu,
            Kind::Fma => c.fma,
            Kind::Fp64 => c.fp64,
            Kind::Sfu => c.sfu,
            Kind::Conv => c.conv,
            Kind::Mma { k8 } => {
                let mut p = c.mma;
                if k8 {
                    p.interval = p.interval.div_ceil(2);
                }
                p
            }
            Kind::SharedLd
            | Kind::SharedSt
            | Kind::Shuffle
            | Kind::GlobalLd { .. }
            | Kind::GlobalSt { .. }
            | Kind::CpAsync => super::PipeParams {
                latency: 0,
                interval: c.mio_interval,
            },
            _ => super::PipeParams {
                latency: 0,
                interval: 1,
            },
        };
        (p.latency, p.interval)
    }

    /// A global request of `sectors` issued at `t`: the clock its data is ready.
    fn global(&mut self, t: u64, sectors: u32, local: bool) -> u64 {
        if local {
            return t + self.cfg.l1_latency as u64;
        }
        let start = self.mem_free.max(t as f64);
        self.mem_free = start + sectors as f64 * 32.0 / self.cfg.global_bytes_per_clk;
        self.mem_free.ceil() as u64 + self.cfg.global_latency as u64
    }

    /// `wavefronts` on the shared-memory server from `t`: the clock the last one retires.
    fn smem(&mut self, t: u64, wavefronts: u32) -> u64 {
        let start = self.smem_free.max(t);
        self.smem_free = start + wavefronts.max(1) as u64;
        self.run.smem_busy += wavefronts.max(1) as u64;
        self.smem_free
    }

    fn write(&mut self, w: usize, i: &InstInfo, at: u64) {
        let st = self.st;
        let ws = &mut self.warps[w];
        let cause = wait_cause(i.kind);
        for &d in st.defs(i) {
            ws.ready[d as usize] = at;
            ws.producer[d as usize] = cause;
        }
        ws.last_write = ws.last_write.max(at);
    }

    /// Moves warp `x` past the barrier or wait at its head, issuing again no earlier than `at`.
    fn release(&mut self, x: usize, at: u64, cause: u8) {
        let ws = &mut self.warps[x];
        if at > ws.blocked_until {
            ws.blocked_until = at;
            ws.blocked_cause = cause;
        }
        ws.ahead |= 1;
    }

    /// Completes the current phase of CTA `cta`'s mbarrier at `off` if all its arrivals are in
    /// and its bytes balance (at the latest of its events), and releases its parked waiters.
    fn check_phase(&mut self, cta: usize, off: u32, t: u64) {
        let Some(m) = self.mbars[cta].get_mut(&off) else {
            return;
        };
        if m.expected == 0 || m.arrived < m.expected || m.tx != 0 {
            return;
        }
        let done = m.last.max(t);
        m.done_at.push(done);
        m.arrived = 0;
        m.last = 0;
        let release = done + self.cfg.barrier_latency as u64;
        for x in std::mem::take(&mut m.waiters) {
            let (i, _) = self
                .info(x)
                .expect("a parked warp has its wait at its head");
            self.write(x, i, release);
            self.warps[x].at_mbar = false;
            self.release(x, release, MBAR_WAIT);
            self.drain_free(x);
        }
    }

    /// What the first blocked warps wait on (for the deadlock error).
    fn blocked(&self) -> String {
        let mut out = Vec::new();
        for (w, ws) in self.warps.iter().enumerate() {
            if ws.done.is_some() || out.len() == 4 {
                continue;
            }
            let Some((_, r)) = self.info(w) else {
                continue;
            };
            let what = if ws.at_mbar {
                let m = &self.mbars[ws.cta][&r.mbar()];
                format!(
                    "mbarrier at {:#x}: {}/{} arrivals, {} tx bytes pending, {} phases done",
                    r.mbar(),
                    m.arrived,
                    m.expected,
                    m.tx,
                    m.done_at.len()
                )
            } else if ws.at_barrier {
                let (id, _, expected) = r.barrier();
                let b = self.bars[ws.cta][id as usize];
                format!("bar {id}: {}/{expected} threads", b.arrived)
            } else {
                "end of trace".to_string()
            };
            out.push(format!("CTA {} warp {w} at pc {}: {what}", ws.cta, r.pc));
        }
        out.join("; ")
    }

    fn issue(&mut self, w: usize, t: u64) {
        let pick = self.warps[w].pick;
        let (i, r) = self
            .info_at(w, pick)
            .expect("issue of a warp with an instruction");
        let sp = self.warps[w].sp;
        let (lat, interval) = self.pipe_params(i.kind);
        if let Some(p) = pipe_of(i.kind) {
            self.pipe_free[sp][p as usize] = t + interval as u64;
        }
        self.run.issued += 1;
        match i.kind {
            Kind::Alu | Kind::Fma | Kind::Fp64 | Kind::Sfu | Kind::Conv => {
                self.write(w, i, t + lat as u64)
            }
            Kind::Mma { k8 } => {
                self.run.tensor_busy += if k8 {
                    interval as u64
                } else {
                    self.cfg.mma.interval as u64
                };
                self.write(w, i, t + lat as u64)
            }
            Kind::SharedLd => {
                let end = self.smem(t, r.wavefronts());
                self.write(w, i, end - 1 + self.cfg.smem_latency as u64)
            }
            Kind::SharedSt => {
                self.smem(t, r.wavefronts());
            }
            Kind::Shuffle => {
                let end = self.smem(t, 1);
                self.write(w, i, end - 1 + self.cfg.shuffle_latency as u64)
            }
            Kind::GlobalLd { local } => {
                let at = self.global(t, r.sectors(), local);
                self.write(w, i, at)
            }
            Kind::GlobalSt { local } => {
                let at = self.global(t, r.sectors(), local);
                let ws = &mut self.warps[w];
                ws.last_write = ws.last_write.max(at);
            }
            // A cp.async's shared writes and a tensor store's shared reads are charged at issue.
            Kind::CpAsync | Kind::TmaStore => {
                self.smem(t, r.wavefronts());
                let at = self.global(t, r.sectors(), false);
                let ws = &mut self.warps[w];
                ws.groups(i.kind).add(at);
                ws.last_write = ws.last_write.max(at);
            }
            Kind::CpCommit | Kind::WgmmaCommit | Kind::BulkCommit => {
                self.warps[w].groups(i.kind).commit();
            }
            Kind::CpWait(n) | Kind::WgmmaWait(n) | Kind::BulkWait(n) => {
                let ws = &mut self.warps[w];
                ws.blocked_until = ws.groups(i.kind).wait(n, t);
                ws.blocked_cause = if matches!(i.kind, Kind::CpWait(_)) {
                    CP_WAIT
                } else {
                    GROUP_WAIT
                };
            }
            Kind::Bar { arrive } => {
                let (id, arriving, expected) = r.barrier();
                let cta = self.warps[w].cta;
                let b = &mut self.bars[cta][id as usize];
                if b.arrived == 0 {
                    b.expected = expected;
                }
                b.arrived += arriving;
                let complete = b.arrived >= b.expected;
                if !arrive {
                    self.warps[w].at_barrier = true;
                    self.waiters[cta].push(w);
                }
                if complete {
                    self.bars[cta][id as usize] = Barrier::default();
                    let release = t + self.cfg.barrier_latency as u64;
                    let ids: Vec<usize> = std::mem::take(&mut self.waiters[cta]);
                    let mut keep = Vec::new();
                    for x in ids {
                        let head = self.info(x).map(|(_, r)| r.barrier().0);
                        if head == Some(id) {
                            self.warps[x].at_barrier = false;
                            self.release(x, release, BARRIER);
                        } else {
                            keep.push(x);
                        }
                    }
                    self.waiters[cta] = keep;
                    self.run.barriers += 1;
                    // The releasing warp moved past its own bar above (if it waited), or moves now.
                    if arrive {
                        self.warps[w].ahead |= 1;
                    }
                    for x in 0..self.warps.len() {
                        self.drain_free(x);
                    }
                    return;
                }
                if arrive {
                    self.warps[w].ahead |= 1;
                    self.drain_free(w);
                }
                return;
            }
            Kind::Wgmma { n8 } => {
                let busy = n8 as u64 * self.wgmma.interval as u64;
                let start = self.pipe_free[sp][Pipe::Tensor as usize].max(t);
                self.pipe_free[sp][Pipe::Tensor as usize] = start + busy;
                self.run.tensor_busy += busy;
                self.smem(start, r.wavefronts());
                let done = start + busy + self.wgmma.latency as u64;
                self.write(w, i, done);
                self.warps[w].groups(i.kind).add(done);
            }
            Kind::TmaLoad => {
                let bytes = r.mbar_c();
                self.smem(t, bytes.div_ceil(128));
                let at = self.global(t, bytes.div_ceil(32), false);
                let cta = self.warps[w].cta;
                let m = self.mbars[cta].entry(r.mbar()).or_default();
                m.tx -= bytes as i64;
                m.last = m.last.max(at);
                self.check_phase(cta, r.mbar(), t);
            }
            Kind::MbarInit if r.mbar_c() == 0 => {}
            Kind::MbarInit => {
                let cta = self.warps[w].cta;
                self.mbars[cta].insert(
                    r.mbar(),
                    Mbar {
                        expected: r.mbar_c().max(1),
                        ..Mbar::default()
                    },
                );
            }
            Kind::MbarArrive | Kind::MbarTx { .. } => {
                let cta = self.warps[w].cta;
                let m = self.mbars[cta].entry(r.mbar()).or_default();
                let bytes = r.mbar_c() as i64;
                if i.kind == (Kind::MbarTx { complete: true }) {
                    m.tx -= bytes;
                } else {
                    m.tx += bytes;
                }
                if i.kind == Kind::MbarArrive {
                    m.arrived += r.mbar_b();
                }
                m.last = m.last.max(t);
                self.write(w, i, t + 1);
                self.check_phase(cta, r.mbar(), t);
            }
            Kind::MbarWait => {
                let cta = self.warps[w].cta;
                let m = self.mbars[cta].entry(r.mbar()).or_default();
                // The barrier's phase at clock t: the first whose completion is later (or the
                // one not completed yet).
                let phase = m
                    .done_at
                    .iter()
                    .position(|&d| d > t)
                    .unwrap_or(m.done_at.len());
                if r.mbar_b() == u16::MAX as u32 || phase % 2 != r.mbar_b() as usize % 2 {
                    self.write(w, i, t + 1);
                } else if let Some(&d) = m.done_at.get(phase) {
                    let at = d + self.cfg.barrier_latency as u64;
                    self.write(w, i, at);
                    let ws = &mut self.warps[w];
                    ws.blocked_until = ws.blocked_until.max(at);
                    ws.blocked_cause = MBAR_WAIT;
                } else {
                    m.waiters.push(w);
                    self.warps[w].at_mbar = true;
                    return;
                }
            }
            Kind::Branch => {}
            Kind::Exit => {
                // Lanes of a divergent warp may exit while others go on (a producer warp whose
                // lane 0 issues the copies): only the warp's last record ends it.
                let ws = &mut self.warps[w];
                if ws.next + pick + 1 >= ws.recs.len() {
                    ws.done = Some((t + 1).max(ws.last_write));
                }
            }
            Kind::Free | Kind::Unsupported(_) => unreachable!("not issued"),
        }
        let ws = &mut self.warps[w];
        if ws.done.is_none() {
            ws.ahead |= 1 << pick;
            self.drain_free(w);
        }
    }
}

/// Simulates the CTAs `ctas` resident together on one SM, all starting at clock 0.
pub(super) fn run(
    st: &Statics,
    ctas: &[&CtaTrace],
    cfg: &SmConfig,
    wgmma: super::PipeParams,
) -> Result<SmRun, TimingError> {
    let nsp = cfg.subpartitions.max(1) as usize;
    let filtered: Vec<Vec<Vec<Rec>>> = ctas
        .iter()
        .map(|t| {
            t.warps
                .iter()
                .map(|w| without_failed_polls(st, w))
                .collect()
        })
        .collect();
    let mut warps = Vec::new();
    for (c, t) in filtered.iter().enumerate() {
        for recs in t {
            let slot = warps.len();
            warps.push(WarpState {
                cta: c,
                recs,
                next: 0,
                ahead: 0,
                pick: 0,
                marks: vec![0; st.nregs],
                stamp: 0,
                ready: vec![0; st.nregs],
                producer: vec![WAIT_ALU; st.nregs],
                blocked_until: 0,
                blocked_cause: WAIT_ALU,
                at_barrier: false,
                last_write: 0,
                done: None,
                cp: Groups::default(),
                wg: Groups::default(),
                bulk: Groups::default(),
                at_mbar: false,
                sp: slot % nsp,
            });
        }
    }
    let mut sm = Sm {
        cfg,
        st,
        pipe_free: vec![[0; NPIPES]; nsp],
        smem_free: 0,
        mem_free: 0.0,
        bars: vec![[Barrier::default(); 16]; ctas.len()],
        waiters: vec![Vec::new(); ctas.len()],
        mbars: (0..ctas.len()).map(|_| HashMap::new()).collect(),
        wgmma,
        warps,
        run: SmRun::default(),
    };
    let nw = sm.warps.len();
    for w in 0..nw {
        sm.drain_free(w);
    }
    let mut last = vec![usize::MAX; nsp];
    let mut t = 0u64;
    let mut earliest = vec![(0u64, 0u8); nw];
    let mut stalls = [0u64; STALLS.len()];
    let mut issued = vec![false; nsp];
    for (w, e) in earliest.iter_mut().enumerate() {
        *e = sm.earliest(w)?;
    }
    loop {
        for (sp, l) in last.iter_mut().enumerate() {
            let pick = if *l != usize::MAX && earliest[*l].0 <= t {
                Some(*l)
            } else {
                (sp..nw).step_by(nsp).find(|&w| earliest[w].0 <= t)
            };
            issued[sp] = pick.is_some();
            if let Some(w) = pick {
                sm.issue(w, t);
                *l = w;
            }
        }
        if sm
            .warps
            .iter()
            .all(|w| w.done.is_some() || w.next >= w.recs.len())
        {
            break;
        }
        let mut next = u64::MAX;
        for (w, e) in earliest.iter_mut().enumerate() {
            *e = sm.earliest(w)?;
            next = next.min(e.0);
        }
        if next == u64::MAX {
            return Err(TimingError::Deadlock(sm.blocked()));
        }
        let next = next.max(t + 1);
        // Idle sub-partition clocks in (t, next), and at t for those that did not issue, go to
        // the constraint of their most ready warp.
        for (sp, &did) in issued.iter().enumerate() {
            let idle = next - t - did as u64;
            if idle == 0 {
                continue;
            }
            let cause = (sp..nw)
                .step_by(nsp)
                .map(|w| earliest[w])
                .min()
                .map_or(NO_WARP, |(_, c)| c);
            stalls[cause as usize] += idle;
        }
        t = next;
    }
    let mut run = sm.run;
    run.stalls = STALLS.iter().map(|s| s.to_string()).zip(stalls).collect();
    run.cta_cycles = vec![0; ctas.len()];
    for ws in &sm.warps {
        let end = ws.done.unwrap_or(ws.last_write).max(ws.last_write);
        run.cta_cycles[ws.cta] = run.cta_cycles[ws.cta].max(end);
    }
    run.cycles = run.cta_cycles.iter().copied().max().unwrap_or(0);
    Ok(run)
}

/// `recs` without the emulator's failed mbarrier polls: a wait followed by the same wait (the
/// emulator parked the warp and re-ran it), or by a branch and then the same wait (a `try_wait`
/// that returned false and its retry loop). The simulation times the one successful wait itself.
fn without_failed_polls(st: &Statics, recs: &[Rec]) -> Vec<Rec> {
    let kind = |r: &Rec| st.insts.get(r.pc as usize).map(|i| i.kind);
    let mut out = Vec::with_capacity(recs.len());
    let mut i = 0;
    while i < recs.len() {
        let r = recs[i];
        if kind(&r) == Some(Kind::MbarWait) {
            if recs.get(i + 1).is_some_and(|n| n.pc == r.pc) {
                i += 1;
                continue;
            }
            if recs
                .get(i + 1)
                .is_some_and(|n| kind(n) == Some(Kind::Branch))
                && recs.get(i + 2).is_some_and(|n| n.pc == r.pc)
            {
                i += 2;
                continue;
            }
        }
        out.push(r);
        i += 1;
    }
    out
}
