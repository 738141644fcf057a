//! Cycle-approximate timing of one SM, driven by the emulator's instruction traces (trace-driven,
//! as Accel-Sim's trace mode: the functional run records what each warp executed, a separate
//! model replays it against latencies and throughputs).
//!
//! - `trace.rs`: the opt-in hook: [`Device::launch_traced`] records, per warp of the CTAs asked
//!   for, the dynamic instruction stream with the figures only execution knows (shared-memory
//!   wavefronts incl. bank conflicts, global sectors, barrier ids and counts). Plain launches
//!   record nothing.
//! - `operands.rs`: the static side: each PTX instruction's class after ptxas (the PTX -> SASS
//!   cost map) and the registers it reads and writes.
//! - `sim.rs`: the SM: sub-partitions, GTO warp schedulers, a register scoreboard, pipes with
//!   latency and initiation interval, the shared-memory and global-memory servers, cp.async
//!   groups and barriers. Its policies are stated in its module doc.
//!
//! The parameters ([`SmConfig`]) come from the caller: the flashmha crate fills them per GPU with
//! their sources (`src/perf_model/timing.rs`). `wgmma`, mbarriers and TMA tensor copies are
//! modelled (`sim.rs`); non-tensor bulk copies (`cp.async.bulk`) are not (simulating a kernel
//! that uses them returns [`TimingError::Unsupported`]).

mod operands;
mod sim;
pub(crate) mod trace;

pub use operands::Kind;
pub use trace::{CtaTrace, Rec};

use crate::device::{Device, LaunchConfig, LaunchReport, Module};
use crate::error::EmuError;

/// Latency (clocks from issue to a dependent instruction's issue) and initiation interval
/// (clocks the pipe of one sub-partition is busy per warp-instruction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeParams {
    pub latency: u32,
    pub interval: u32,
}

/// The per-SM parameters of the simulation (see `sim.rs` for how each is used).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmConfig {
    /// Sub-partitions (warp schedulers) per SM, each issuing one warp-instruction per clock.
    pub subpartitions: u32,
    pub alu: PipeParams,
    pub fma: PipeParams,
    pub fp64: PipeParams,
    pub sfu: PipeParams,
    pub conv: PipeParams,
    /// `mma.sync` m16n8k16 (an m16n8k8 takes half the interval).
    pub mma: PipeParams,
    /// Clocks between two memory instructions (shared, global, shuffles) of one sub-partition.
    pub mio_interval: u32,
    /// Clocks from issue to data of a conflict-free shared load (one wavefront).
    pub smem_latency: u32,
    pub shuffle_latency: u32,
    /// Local-memory (L1 hit) load latency.
    pub l1_latency: u32,
    /// Global load latency after the request's bytes moved (L2 hit).
    pub global_latency: u32,
    /// This SM's share of the L2 bandwidth, bytes per clock.
    pub global_bytes_per_clk: f64,
    /// Clocks from the last arrival at a barrier to the waiters' next issue.
    pub barrier_latency: u32,
    /// Instructions a warp may look ahead to find one to issue (1: strict trace order; see
    /// `sim.rs`, "Order").
    pub sched_window: u32,
}

/// What one simulated SM did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SmRun {
    /// Clock at which the last warp finished.
    pub cycles: u64,
    /// Per simulated CTA, the clock its last warp finished.
    pub cta_cycles: Vec<u64>,
    /// Warp-instructions issued (free instructions not included).
    pub issued: u64,
    /// PTX instructions with no SASS counterpart in the cost map (moves, parameter loads).
    pub free_instructions: u64,
    /// Clocks of tensor-pipe occupancy summed over the sub-partitions.
    pub tensor_busy: u64,
    /// Clocks the shared-memory server was busy.
    pub smem_busy: u64,
    /// Barrier completions.
    pub barriers: u64,
    /// Sub-partition clocks in which nothing issued, by the binding constraint of the
    /// sub-partition's most ready warp (a dependency on a result of some kind, a busy pipe, a
    /// barrier, a cp.async wait, no warp left); summed over the sub-partitions up to the last
    /// issue.
    pub stalls: Vec<(String, u64)>,
}

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("the timing model does not handle {what} yet (instruction {pc})")]
    Unsupported { what: &'static str, pc: u32 },
    #[error("no warp can issue and some wait on a barrier that never completes ({0})")]
    Deadlock(String),
    #[error("no trace of CTA {0}")]
    NoTrace(usize),
}

/// The traces of some CTAs of one launch, with the kernel's static instruction facts.
#[derive(Debug, Clone, Default)]
pub struct KernelTrace {
    statics: operands::Statics,
    /// The traced CTAs, in ascending linear CTA index.
    pub ctas: Vec<CtaTrace>,
}

impl KernelTrace {
    /// Warp-instructions recorded over all traced CTAs.
    pub fn warp_instructions(&self) -> u64 {
        self.ctas
            .iter()
            .flat_map(|c| &c.warps)
            .map(|w| w.len() as u64)
            .sum()
    }

    /// The cost-map kind of the instruction at `pc`.
    pub fn kind(&self, pc: u32) -> Option<Kind> {
        self.statics.insts.get(pc as usize).map(|i| i.kind)
    }

    /// Simulates the traced CTAs `resident` (indices into [`KernelTrace::ctas`]; one may
    /// repeat to place copies of one CTA) together on one SM from clock 0.
    pub fn simulate_sm(&self, resident: &[usize], cfg: &SmConfig) -> Result<SmRun, TimingError> {
        self.simulate_sm_wgmma(resident, cfg, cfg.mma)
    }

    /// [`KernelTrace::simulate_sm`] with the `wgmma` pipe's parameters: `interval` clocks of a
    /// sub-partition's tensor pipe per m16n8k16-equivalent of a warp's wgmma quarter, and
    /// `latency` clocks from the end of that work to its accumulators (`simulate_sm` uses the
    /// `mma.sync` figures).
    pub fn simulate_sm_wgmma(
        &self,
        resident: &[usize],
        cfg: &SmConfig,
        wgmma: PipeParams,
    ) -> Result<SmRun, TimingError> {
        let ctas = resident
            .iter()
            .map(|&i| self.ctas.get(i).ok_or(TimingError::NoTrace(i)))
            .collect::<Result<Vec<_>, _>>()?;
        sim::run(&self.statics, &ctas, cfg, wgmma)
    }
}

impl Device {
    /// [`Device::launch`], also recording the instruction traces of the CTAs `ctas` (those in the
    /// grid; the others run untraced) for the timing model.
    pub fn launch_traced(
        &mut self,
        module: &Module,
        entry: &str,
        cfg: &LaunchConfig,
        params: &[u8],
        ctas: &[[u32; 3]],
    ) -> Result<(LaunchReport, KernelTrace), EmuError> {
        let mut wanted: Vec<u64> = ctas
            .iter()
            .filter(|c| c.iter().zip(cfg.grid).all(|(&i, n)| i < n))
            .map(|&c| trace::linear_index(cfg.grid, c))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let sink = trace::TraceSink {
            wanted,
            out: Default::default(),
        };
        let report = self.launch_inner(module, entry, cfg, None, params, Some(&sink))?;
        let statics = module
            .program(entry)
            .map(operands::Statics::of)
            .unwrap_or_default();
        let mut out = sink.out.into_inner().unwrap_or_else(|e| e.into_inner());
        out.sort_by_key(|(l, _)| *l);
        Ok((
            report,
            KernelTrace {
                statics,
                ctas: out.into_iter().map(|(_, t)| t).collect(),
            },
        ))
    }
}
