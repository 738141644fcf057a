//! Main-loop figures of one forward-kernel instantiation, measured on the emulator by key
//! doubling: the same launch with `sk` and `2 sk` keys differs only by main-loop iterations, so
//! the differences of the counters are the main loop's, prologue and epilogue excluded. These
//! are the numbers behind every tile choice in `kernels/kernel_table.h` (DESIGN.md section 5).

use crate::common::build_info::{self, FwdKernelRow};
use crate::common::error::Result;
use crate::common::options::AttnOptions;
use crate::emulated::{self, HostInputs};
use crate::emulator::Counters;
use crate::problem::{FwdProblem, SeqLayout};

/// Per `mma` of the main loop, plus global traffic of whole launches.
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
    /// Global bytes requested / compulsory bytes, one Q tile (sq = block_m) over `keys` keys.
    pub bytes_vs_compulsory_one_tile: f64,
    /// The same at sq = sk = 1024 (8 or 16 Q tiles per head re-read K and V).
    pub bytes_vs_compulsory_1024: f64,
    /// Global bytes / the tile model (one read of K and V per Q tile) at sq = sk = 1024.
    pub bytes_vs_tile_model_1024: f64,
}

/// Keys of the shorter of the two launches (the longer has twice as many).
pub const BASE_KEYS: usize = 1024;

fn padded(row: &FwdKernelRow, sq: usize, sk: usize) -> FwdProblem {
    let mut p = FwdProblem::contiguous(
        row.dtype,
        SeqLayout::Padded {
            batch: 1,
            seqlen_q: sq,
            seqlen_k: sk,
        },
        1,
        1,
        row.head_dim as usize,
        AttnOptions::default(),
    );
    p.target = row.target;
    p
}

/// Runs `p` on the emulator with random inputs; any finding is an error.
pub fn emulate_counters(p: &FwdProblem) -> Result<Counters> {
    let run = emulated::forward(p, &HostInputs::random(p, 7))?;
    crate::backend::emulator::require_clean(&run.report)?;
    Ok(run.report.counters)
}

/// Warp-instructions on the PTX lines of `entry`'s module whose text contains `opcode`.
fn on_lines_with(c: &Counters, entry: &str, opcode: &str) -> u64 {
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

/// Measures `row` (see the module doc).
pub fn measure(row: &FwdKernelRow) -> Result<TileFigures> {
    let bm = row.block_m as usize;
    let p1 = padded(row, bm, BASE_KEYS);
    let p2 = padded(row, bm, 2 * BASE_KEYS);
    let (c1, c2) = (emulate_counters(&p1)?, emulate_counters(&p2)?);
    let d = |f: fn(&Counters) -> u64| f(&c2).saturating_sub(f(&c1)) as f64;
    let d_mma = d(|c| c.mma_instructions).max(1.0);
    let d_ldsm = on_lines_with(&c2, row.entry, "ldmatrix")
        .saturating_sub(on_lines_with(&c1, row.entry, "ldmatrix")) as f64;
    let p3 = padded(row, 1024, 1024);
    let c3 = emulate_counters(&p3)?;
    Ok(TileFigures {
        ldmatrix_per_mma: d_ldsm / d_mma,
        wavefronts_per_mma: d(|c| c.shared_wavefronts) / d_mma,
        ideal_wavefronts_per_mma: d(|c| c.shared_wavefronts_ideal) / d_mma,
        non_tensor_per_mma: (d(|c| c.warp_instructions) - d_mma) / d_mma,
        bytes_vs_compulsory_one_tile: c1.global_bytes_requested() as f64 / p1.compulsory_bytes(),
        bytes_vs_compulsory_1024: c3.global_bytes_requested() as f64 / p3.compulsory_bytes(),
        bytes_vs_tile_model_1024: c3.global_bytes_requested() as f64
            / super::tile_model_bytes(&p3, bm, row.block_n as usize).unwrap_or(f64::NAN),
    })
}
