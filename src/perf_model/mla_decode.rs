//! Modelled time of an MLA decode call (issue 23 item 3): the MLA launch, then the split
//! combine, per pipe from emulator counters, as [`super::decode`] models the paged decode. Every
//! item has the same cache length, so one emulated item (the split count the plan picks for
//! the whole batch) is exact for the launch once its counters are scaled by the batch. Times are
//! *modelled* (each pipe at full rate, the slowest binds), never measured.
//!
//! The kernel is the one the plan picks for the config's target: the sm_80+ `mma.sync` kernel
//! (32-row tiles) on Ampere, the sm_90a `wgmma` one (64-row tiles, TMA page loads) on Hopper.
//!
//! DRAM bytes: every 32-byte sector the launches touch (TMA loads included), once per touching
//! access: with more query heads per sequence than a tile's rows the latent rows are read by
//! hq / tile-rows row tiles (on sm_90a by hq / 128 clusters of two tiles, whose multicast TMA
//! reads each page once for both), and the model charges each read to DRAM (an upper bound: the
//! tiles of one split launch together, so on a GPU the repeats can hit L2). Compulsory bytes follow FlashMLA's benchmark
//! (tests/test_flash_mla.py of deepseek-ai/FlashMLA): the cache rows once, q and o once.

use super::decode::{
    launch_shape, model_launches, predict_launches, Compulsory, SplitModelled, SplitPredicted,
};
use super::gpus::GpuSpec;
use super::pipes;
use crate::backend::emulator::{EmulatorBackend, EntryTraces};
use crate::check::decode::DecodeCase;
use crate::check::mla::mla_problem;
use crate::common::dtype::DType;
use crate::common::error::Result;
use crate::common::options::AttnOptions;
use crate::common::target::KernelTarget;
use crate::emulator::EmuOptions;
use crate::host::runner;
use crate::ops::decode::{KvCacheDType, SplitPolicy};
use crate::ops::mla_decode::{MlaDecodePlan, MlaDecodeProblem, MLA_D_QK, MLA_D_V};

/// One MLA decode configuration: a uniform batch, contiguous pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaModelConfig {
    /// Whose kernel runs: [`KernelTarget::Ampere`] (sm_80+) or [`KernelTarget::Hopper`] (the
    /// sm_90a kernel where the plan picks it).
    pub target: KernelTarget,
    pub dtype: DType,
    pub kv_dtype: KvCacheDType,
    pub batch: usize,
    pub num_heads_q: usize,
    pub sq_new: usize,
    pub page_size: usize,
    pub cache_len: usize,
}

impl MlaModelConfig {
    /// The case of `batch` items (the model builds one), causal, with `split`.
    fn case(&self, batch: usize, split: SplitPolicy) -> DecodeCase {
        let mut c = DecodeCase::uniform(
            self.dtype,
            MLA_D_QK,
            batch,
            1,
            self.num_heads_q,
            self.sq_new,
            self.page_size,
            self.cache_len,
            split,
            13,
        );
        c.kv_dtype = self.kv_dtype;
        c.target = self.target;
        c.options = AttnOptions {
            causal: true,
            ..AttnOptions::default()
        };
        c
    }

    /// Compulsory bytes: every cached row once (576 elements of the page type), q read and o
    /// written once (576 + 512 elements per row and head).
    pub fn compulsory_bytes(&self) -> f64 {
        let e = self.dtype.size() as f64;
        let e_kv = self.kv_dtype.element_bytes() as f64;
        let b = self.batch as f64;
        b * (e_kv * (self.cache_len * MLA_D_QK) as f64
            + e * (self.num_heads_q * self.sq_new * (MLA_D_QK + MLA_D_V)) as f64)
    }

    /// Tensor FLOPs of the call (FlashMLA's count: 2 x keys x rows x (576 + 512)).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.cache_len * self.num_heads_q * self.sq_new) as f64
            * (MLA_D_QK + MLA_D_V) as f64
    }
}

impl Compulsory for MlaModelConfig {
    fn compulsory_bytes(&self) -> f64 {
        MlaModelConfig::compulsory_bytes(self)
    }
}

/// A modelled MLA decode call (decode, then the split combine).
pub type MlaModelled = SplitModelled<MlaModelConfig>;

/// Models `c` on `gpu`: the plan's split count for `gpu`'s SMs, one item (one of its identical
/// row tiles where they are identical) emulated with it, scaled to the launch.
pub fn model_mla(gpu: &GpuSpec, c: &MlaModelConfig) -> Result<MlaModelled> {
    Ok(emulate(gpu, c, false)?.0)
}

/// A predicted MLA decode call (the SM simulation beside the per-pipe model).
pub type MlaPredicted = SplitPredicted<MlaModelConfig>;

/// [`model_mla`] plus the SM simulation's prediction: the emulated item's decode and combine
/// CTA 0 traced (a full split of one row tile) and each launch timed as the paged decode's
/// (src/perf_model/decode.rs `predict_launches`: uniform CTAs, latent rows streamed from DRAM).
/// `None` in the prediction when the plan launches 2-CTA clusters (the sm_90a kernel at 96 or
/// 128 heads): the SM simulation runs one CTA at a time and has no cluster barrier or multicast
/// copy (emulator/src/timing/operands.rs), so only the per-pipe model is given there.
pub fn predict_mla(
    gpu: &GpuSpec,
    c: &MlaModelConfig,
) -> Result<(MlaModelled, Option<MlaPredicted>)> {
    let (modelled, plan, traces) = emulate(gpu, c, true)?;
    if plan.decode.is_cluster() {
        return Ok((modelled, None));
    }
    let predicted = predict_launches(
        gpu,
        (&plan.decode, plan.combine.as_ref()),
        modelled,
        &traces,
    )?;
    Ok((modelled, Some(predicted)))
}

/// The whole call's plan for `gpu`'s SMs, its per-pipe model from one emulated item (row tile),
/// and (`traced`) that item's traces of CTA 0 of each launch.
fn emulate(
    gpu: &GpuSpec,
    c: &MlaModelConfig,
    traced: bool,
) -> Result<(MlaModelled, MlaDecodePlan, EntryTraces)> {
    let auto = SplitPolicy::Auto { num_sms: gpu.sms };
    // The whole batch's plan needs shapes only: one item's problem with `batch` items of pages.
    let built = c.case(1, auto).build();
    let one_item = mla_problem(&built.problem);
    let full = MlaDecodeProblem {
        batch: c.batch,
        num_pages: one_item.num_pages.saturating_mul(c.batch),
        ..one_item.clone()
    };
    let plan = MlaDecodePlan::new_for(c.target, &full, auto)?;
    let split = SplitPolicy::Count(plan.num_splits);
    // One row tile of one item is emulated (one cluster of row tiles when the plan launches
    // clusters: its CTAs share the page reads): with one new token every row tile of an item
    // does the same work over the same keys (its own heads), so the launch is `batch x tiles`
    // times it (exact for sq_new 1 and hq a multiple of the tile rows; the tiles differ only in
    // the heads they read and write).
    let tile_rows = plan.kernel.tile_rows as usize * plan.decode.cluster[0] as usize;
    let tiles = (c.num_heads_q * c.sq_new).div_ceil(tile_rows);
    let one_tile = if c.sq_new == 1 && c.num_heads_q.is_multiple_of(tile_rows) {
        MlaModelConfig {
            num_heads_q: tile_rows,
            ..*c
        }
    } else {
        *c
    };
    let per_tile = one_tile.num_heads_q != c.num_heads_q;
    let built = one_tile.case(1, split).build();
    let one = MlaDecodePlan::new_for(c.target, &mla_problem(&built.problem), split)?;
    // Counters do not depend on the race and uninitialised-read checks; the tests run those.
    let backend = EmulatorBackend::new(c.target);
    backend.set_options(EmuOptions {
        check_races: false,
        check_uninit: false,
        ..EmuOptions::default()
    });
    // A cluster launch cannot be traced (see `predict_mla`).
    if traced && !one.decode.is_cluster() {
        backend.trace_ctas(&[[0, 0, 0]]);
    }
    let run = runner::mla_decode(&backend, &one, &built.inputs)?;
    let traces = backend.take_traces();
    let scale = c.batch as f64 * if per_tile { tiles as f64 } else { 1.0 };
    let (decode, combine, dram_bytes) =
        model_launches(gpu, (&plan.decode, plan.combine.as_ref()), &run, scale);
    let modelled = MlaModelled {
        config: *c,
        splits: plan.num_splits,
        decode,
        combine,
        dram_bytes,
        findings: run.findings().len(),
    };
    Ok((modelled, plan, traces))
}

/// The smallest batch whose one-split grid fills every CTA slot of `gpu` once.
pub fn batch_filling(gpu: &GpuSpec, c: &MlaModelConfig) -> Result<usize> {
    let built = MlaModelConfig { batch: 1, ..*c }
        .case(1, SplitPolicy::Count(1))
        .build();
    let plan = MlaDecodePlan::new_for(
        c.target,
        &mla_problem(&built.problem),
        SplitPolicy::Count(1),
    )?;
    let l = &plan.decode;
    let shape = launch_shape(l.entry, 1, l.block[0], l.dynamic_smem_bytes, gpu);
    let (per_sm, _) = pipes::ctas_per_sm(gpu, &shape);
    let slots = u64::from(per_sm.max(1)) * u64::from(gpu.sms);
    let per_item = u64::from(l.grid[0]) * u64::from(l.grid[1]);
    Ok(slots.div_ceil(per_item) as usize)
}

#[cfg(test)]
mod tests {
    use super::super::gpus::A100;
    use super::*;

    #[test]
    fn prediction_adds_latency_to_the_per_pipe_model() {
        // One 32-row tile of the sm_80 kernel, 512 cached tokens in 64-token pages: a batch of 1
        // (split over A100's SMs, then combined), and batches of 216 and 432 (a CTA per item:
        // two and four per SM, no split).
        let c = MlaModelConfig {
            target: KernelTarget::Ampere,
            dtype: DType::Bf16,
            kv_dtype: KvCacheDType::Same,
            batch: 1,
            num_heads_q: 32,
            sq_new: 1,
            page_size: 64,
            cache_len: 512,
        };
        let predict = |c: &MlaModelConfig| predict_mla(&A100, c).unwrap().1.unwrap();
        let one = predict(&c);
        let full = predict(&MlaModelConfig { batch: 216, ..c });
        let double = predict(&MlaModelConfig { batch: 432, ..c });
        assert!(one.combine.is_some() && full.combine.is_none() && double.combine.is_none());
        for p in [&one, &full, &double] {
            assert_eq!(p.modelled.findings, 0);
            // The DRAM time is the floor of each launch, and the call is decode then combine.
            assert!(p.decode.seconds >= p.decode.dram_seconds && p.decode.sm_seconds > 0.0);
            let total = p.decode.seconds + p.combine.map_or(0.0, |c| c.seconds);
            assert!((p.seconds() - total).abs() <= 1e-15);
            assert_eq!(p.combine.is_some(), p.modelled.combine.is_some());
            // A prediction never beats the DRAM bandwidth.
            let f = p.dram_fraction(&A100);
            assert!(f > 0.0 && f <= 1.0, "{f}");
        }
        // Twice the CTAs take longer, and no more than twice as long.
        assert!(double.seconds() > full.seconds());
        assert!(double.seconds() <= 2.0 * full.seconds() * 1.0001);
    }
}
