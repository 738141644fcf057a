//! The work of a whole launch, extrapolated from small emulator runs, and the launch's shape
//! ([`fwd_launch_shape`]: ptxas registers and shared memory, the `setmaxnreg` split). The work: every CTA costs a fixed
//! part (prologue, epilogue) plus one per-tile part per KV tile it processes plus an extra per
//! tile that needs the per-element mask. The three parts are measured on the emulator (key
//! doubling, then one causal tile), and the launch's tile counts come from the same tile
//! ranges the kernel computes (mask.cuh). [`check_against_emulation`] compares the
//! extrapolation with a full emulated launch, so the subset is shown to be representative.

use super::gpus::GpuSpec;
use super::pipes::{LaunchShape, Work};
use super::registers;
use super::tile_figures::emulate_counters;
use crate::common::build_info::{module_of, ptxas_stats, FwdKernelRow};
use crate::common::error::Result;
use crate::common::options::AttnOptions;
use crate::problem::{FwdProblem, SeqLayout};

/// Per-CTA, per-tile and per-masked-tile work of one kernel (non-causal full tiles, plus the
/// extra of a tile that needs per-element masking).
#[derive(Debug, Clone, Copy)]
pub struct TileCosts {
    pub fixed: Work,
    pub per_tile: Work,
    pub masked_extra: Work,
}

/// A one-head padded problem (`sq` queries, `sk` keys) of `row`'s kernel and target.
pub(super) fn one_head(row: &FwdKernelRow, sq: usize, sk: usize, causal: bool) -> FwdProblem {
    let mut p = FwdProblem::contiguous_dv(
        row.dtype,
        SeqLayout::Padded {
            batch: 1,
            seqlen_q: sq,
            seqlen_k: sk,
        },
        (1, 1),
        (row.head_dim as usize, row.head_dim_v as usize),
        AttnOptions {
            causal,
            ..Default::default()
        },
    );
    p.target = row.target;
    // Exactly this row, also where it is not the plan's choice (a tile candidate).
    p.tile = crate::TileChoice::Entry(row.entry);
    p
}

/// KV tiles of each Q tile and how many of them need the per-element mask, for a padded,
/// window-free problem (the same bounds as KeyMask / PartialTileTest in kernels/common/mask.cuh).
pub fn tile_counts(sq: usize, sk: usize, causal: bool, bm: usize, bn: usize) -> Vec<(u64, u64)> {
    let shift = sk as i64 - sq as i64;
    let key_hi = |i: i64| -> i64 {
        if causal {
            (i + shift + 1).clamp(0, sk as i64)
        } else {
            sk as i64
        }
    };
    (0..sq.div_ceil(bm))
        .map(|t| {
            let first = (t * bm) as i64;
            let last = (((t + 1) * bm).min(sq) - 1) as i64;
            let end = (key_hi(last) as usize).div_ceil(bn);
            let hi_first = key_hi(first);
            let masked = (0..end)
                .filter(|&n| ((n + 1) * bn) as i64 > hi_first)
                .count();
            (end as u64, masked as u64)
        })
        .collect()
}

/// The launch shape of `ctas` CTAs of `row` on `gpu`: ptxas's registers and static shared
/// memory of the GPU's arch (or of its arch-specific `a` variant, e.g. sm_90a; the first arch
/// assembled if neither), the row's dynamic shared memory, and the register split its PTX asks
/// for with `setmaxnreg` (one producer warpgroup, the others consumers).
pub fn fwd_launch_shape(row: &FwdKernelRow, ctas: u64, gpu: &GpuSpec) -> LaunchShape {
    let arch = format!("sm_{}", gpu.sm);
    let arch_a = format!("{arch}a");
    let stats: Vec<_> = ptxas_stats(row.entry).collect();
    let s = stats
        .iter()
        .find(|s| s.arch == arch || s.arch == arch_a)
        .or(stats.first())
        .copied();
    let split = module_of(row.entry).and_then(|m| registers::reg_split(m.ptx, row.num_warps / 4));
    LaunchShape {
        ctas,
        threads_per_cta: row.num_warps * 32,
        regs_per_thread: s.map_or(255, |s| s.registers),
        smem_per_cta: row.smem_bytes + s.map_or(0, |s| s.static_smem_bytes),
        spill_bytes_per_thread: s.map_or(0, |s| s.spill_store_bytes + s.spill_load_bytes),
        setmaxnreg_regs_per_cta: split.map_or(0, |r| r.regs_per_cta()),
    }
}

/// Measures the three parts of `row` on the emulator (three small launches of one Q tile).
pub fn measure_costs(row: &FwdKernelRow) -> Result<TileCosts> {
    let (bm, bn) = (row.block_m as usize, row.block_n as usize);
    let keys = 8 * bn;
    let w = |p: &FwdProblem| -> Result<Work> { Ok(Work::from_counters(&emulate_counters(p)?)) };
    let a = w(&one_head(row, bm, keys, false))?;
    let b = w(&one_head(row, bm, 2 * keys, false))?;
    let per_tile = b.add_scaled(&a, -1.0).scaled(1.0 / 8.0);
    let fixed = a.add_scaled(&per_tile, -8.0);
    // One Q tile against its own keys, causal: every tile of its range is masked.
    let c = w(&one_head(row, bm, bm, true))?;
    let counts = tile_counts(bm, bm, true, bm, bn);
    let (tiles, masked) = counts[0];
    let masked_extra = c
        .add_scaled(&fixed, -1.0)
        .add_scaled(&per_tile, -(tiles as f64))
        .scaled(1.0 / masked.max(1) as f64);
    Ok(TileCosts {
        fixed,
        per_tile,
        masked_extra,
    })
}

/// Extrapolated work of a padded, window-free launch of `batch * heads` (item, head) pairs.
pub fn launch_work(
    costs: &TileCosts,
    row: &FwdKernelRow,
    batch_heads: usize,
    sq: usize,
    sk: usize,
    causal: bool,
) -> Work {
    let counts = tile_counts(sq, sk, causal, row.block_m as usize, row.block_n as usize);
    let mut w = Work::default();
    for (tiles, masked) in counts {
        w = w
            .add_scaled(&costs.fixed, 1.0)
            .add_scaled(&costs.per_tile, tiles as f64)
            .add_scaled(&costs.masked_extra, masked as f64);
    }
    w.scaled(batch_heads as f64)
}

/// Relative error of the extrapolation against a full emulated launch of one head at sq = sk =
/// `seqlen`: (warp-instructions, tensor FLOPs (mma.sync + wgmma), shared-memory wavefronts
/// (with wgmma operand and TMA bytes, [`Work::smem_wavefronts_total`]), global sectors).
pub fn check_against_emulation(
    costs: &TileCosts,
    row: &FwdKernelRow,
    seqlen: usize,
    causal: bool,
) -> Result<[f64; 4]> {
    let full = Work::from_counters(&emulate_counters(&one_head(row, seqlen, seqlen, causal))?);
    let est = launch_work(costs, row, 1, seqlen, seqlen, causal);
    let rel = |a: f64, b: f64| (a - b) / b.max(1.0);
    Ok([
        rel(est.warp_instructions, full.warp_instructions),
        rel(est.tensor_flops(), full.tensor_flops()),
        rel(est.smem_wavefronts_total(), full.smem_wavefronts_total()),
        rel(est.global_sectors, full.global_sectors),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_counts_follow_the_causal_diagonal() {
        // Non-causal: every Q tile reads all 4 tiles, none masked (sk is a multiple of bn).
        assert_eq!(tile_counts(256, 256, false, 128, 64), vec![(4, 0), (4, 0)]);
        // Causal, square: Q tile 0 sees keys 0..128 (2 tiles, both cross the diagonal for row 0);
        // Q tile 1 sees 0..256, tiles 2 and 3 cross its first row's bound (129 keys).
        assert_eq!(tile_counts(256, 256, true, 128, 64), vec![(2, 2), (4, 2)]);
        // A ragged sk: the last tile is partial, hence masked.
        assert_eq!(tile_counts(128, 100, false, 128, 64), vec![(2, 1)]);
    }
}
