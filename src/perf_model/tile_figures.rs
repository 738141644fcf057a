//! Main-loop figures of one forward-kernel instantiation, measured on the emulator by key
//! doubling: the same launch with `sk` and `2 sk` keys differs only by main-loop iterations, so
//! the differences of the counters are the main loop's, prologue and epilogue excluded. These
//! are the numbers behind every tile choice in `kernels/kernel_table.h` (README.md,
//! "Performance evidence"). Beside them, the same ratios over the whole `2 sk` launch
//! (prologue and epilogue included): the basis of FlashAttention-2's figures in
//! bench/results/fwd_tiles_before.tsv, so those are compared with these only.
//!
//! Units: every "per mma" is per m16n8k16-equivalent `mma` (2 x 16 x 8 x 16 FLOPs): a Turing
//! kernel's `mma.m16n8k8` counts as half of one, so sm_75 and sm_80+ rows read on one scale.
//! Non-tensor counts depend on the inputs (the O rescale is skipped when no row max grows), so
//! the distribution is a parameter ([`Inputs`]) and is stated wherever a figure is quoted.

use super::launch_work::one_head;
use crate::common::build_info::{self, FwdKernelRow};
use crate::common::error::Result;
use crate::emulated::{self, HostInputs};
use crate::emulator::Counters;
use crate::problem::FwdProblem;

/// The distribution of q, k, v in a measured launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inputs {
    /// Standard normal N(0, 1) (what `torch.randn` gives FlashAttention-2's benchmarks).
    #[default]
    Normal,
    /// Uniform in [-1, 1) ([`HostInputs::random`], the perf model's).
    Uniform,
}

impl std::fmt::Display for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Inputs::Normal => "N(0,1)",
            Inputs::Uniform => "uniform [-1,1)",
        })
    }
}

impl std::str::FromStr for Inputs {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(Inputs::Normal),
            "uniform" => Ok(Inputs::Uniform),
            other => Err(format!(
                "unknown input distribution {other:?} (normal or uniform)"
            )),
        }
    }
}

/// Per m16n8k16-equivalent `mma` (module docs), of the main loop (key doubling) and of the
/// whole `2 sk` launch, plus global traffic of whole launches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TileFigures {
    /// `ldmatrix` warp-instructions per `mma`.
    pub ldmatrix_per_mma: f64,
    /// Shared-memory wavefronts per `mma` (ldmatrix and the cp.async stores that fill the tiles).
    pub wavefronts_per_mma: f64,
    /// The conflict-free minimum of the same accesses, per `mma`.
    pub ideal_wavefronts_per_mma: f64,
    /// Warp-instructions that are not `mma`, per `mma`.
    pub non_tensor_per_mma: f64,
    /// The same three over the whole `2 sk` launch (FlashAttention-2's basis).
    pub whole_run_ldmatrix_per_mma: f64,
    pub whole_run_wavefronts_per_mma: f64,
    pub whole_run_non_tensor_per_mma: f64,
    /// m16n8k16-equivalents per `mma` instruction of this kernel: 1, or 0.5 for m16n8k8.
    pub mma_k16_per_instruction: f64,
    /// Global bytes requested / compulsory bytes, one Q tile (sq = block_m) over `keys` keys.
    pub bytes_vs_compulsory_one_tile: f64,
    /// The same at sq = sk = 1024 (8 or 16 Q tiles per head re-read K and V).
    pub bytes_vs_compulsory_1024: f64,
    /// Global bytes / the tile model (one read of K and V per Q tile) at sq = sk = 1024.
    pub bytes_vs_tile_model_1024: f64,
}

/// Keys of the shorter of the two launches (the longer has twice as many).
pub const BASE_KEYS: usize = 1024;

/// Runs `p` on the emulator with uniform random inputs; any finding is an error.
pub fn emulate_counters(p: &FwdProblem) -> Result<Counters> {
    emulate_counters_with(p, Inputs::Uniform)
}

/// [`emulate_counters`] with inputs drawn from `inputs`.
pub fn emulate_counters_with(p: &FwdProblem, inputs: Inputs) -> Result<Counters> {
    let host = match inputs {
        Inputs::Uniform => HostInputs::random(p, 7),
        Inputs::Normal => HostInputs::random_normal(p, 7),
    };
    let run = emulated::forward(p, &host)?;
    crate::backend::emulator::require_clean(&run.report)?;
    Ok(run.report.counters)
}

/// Warp-instructions on the PTX lines of `entry`'s module whose text contains `opcode` (the
/// backward's counter table uses it too: tests/ops/backward_counters.rs).
pub fn on_lines_with(c: &Counters, entry: &str, opcode: &str) -> u64 {
    let Some(module) = build_info::module_of(entry) else {
        return 0;
    };
    let lines: std::collections::HashSet<u32> = module
        .ptx
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(opcode))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    c.per_line
        .iter()
        .filter(|(l, _)| lines.contains(l))
        .map(|(_, n)| n)
        .sum()
}

/// m16n8k16-equivalents per `mma` instruction of `entry`'s module: 0.5 when it issues only
/// `m16n8k8` (the Turing kernels), else 1.
fn k16_per_mma(entry: &str) -> f64 {
    match build_info::module_of(entry) {
        Some(m) if m.ptx.contains(".m16n8k8.") && !m.ptx.contains(".m16n8k16.") => 0.5,
        _ => 1.0,
    }
}

/// Measures `row` with inputs from `inputs` (see the module doc).
pub fn measure(row: &FwdKernelRow, inputs: Inputs) -> Result<TileFigures> {
    let bm = row.block_m as usize;
    let p1 = one_head(row, bm, BASE_KEYS, false);
    let p2 = one_head(row, bm, 2 * BASE_KEYS, false);
    let (c1, c2) = (
        emulate_counters_with(&p1, inputs)?,
        emulate_counters_with(&p2, inputs)?,
    );
    let k16 = k16_per_mma(row.entry);
    let d = |f: fn(&Counters) -> u64| f(&c2).saturating_sub(f(&c1)) as f64;
    let d_mma_instr = d(|c| c.mma_instructions).max(1.0);
    let d_mma = d_mma_instr * k16;
    let ldsm = |c: &Counters| on_lines_with(c, row.entry, "ldmatrix");
    let d_ldsm = ldsm(&c2).saturating_sub(ldsm(&c1)) as f64;
    let all_mma_instr = (c2.mma_instructions as f64).max(1.0);
    let all_mma = all_mma_instr * k16;
    let p3 = one_head(row, 1024, 1024, false);
    let c3 = emulate_counters_with(&p3, inputs)?;
    Ok(TileFigures {
        ldmatrix_per_mma: d_ldsm / d_mma,
        wavefronts_per_mma: d(|c| c.shared_wavefronts) / d_mma,
        ideal_wavefronts_per_mma: d(|c| c.shared_wavefronts_ideal) / d_mma,
        non_tensor_per_mma: (d(|c| c.warp_instructions) - d_mma_instr) / d_mma,
        whole_run_ldmatrix_per_mma: ldsm(&c2) as f64 / all_mma,
        whole_run_wavefronts_per_mma: c2.shared_wavefronts as f64 / all_mma,
        whole_run_non_tensor_per_mma: (c2.warp_instructions as f64 - all_mma_instr) / all_mma,
        mma_k16_per_instruction: k16,
        bytes_vs_compulsory_one_tile: c1.global_bytes_requested() as f64 / p1.compulsory_bytes(),
        bytes_vs_compulsory_1024: c3.global_bytes_requested() as f64 / p3.compulsory_bytes(),
        bytes_vs_tile_model_1024: c3.global_bytes_requested() as f64
            / super::tile_model_bytes(&p3, bm, row.block_n as usize).unwrap_or(f64::NAN),
    })
}
