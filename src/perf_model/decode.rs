//! Modelled time of a paged decode call (decode launch, then the split combine) per pipe, from
//! emulator counters. Every batch item has the same cache length and every KV head the same
//! work, so one emulated item with one KV head (the same split count, the same per-CTA key
//! range) is exact for the whole launch once scaled by `batch x hkv`: no extrapolation. The two
//! launches run one after the other; each gets its own pipes, occupancy and waves, and the call
//! takes the sum of their binding times. Every time here is *modelled* (no latency model: a
//! pipe's time is its work at full rate), never measured.
//!
//! DRAM bytes: every 32-byte sector the launches touch, once (K/V of a KV head read by two row
//! tiles is counted twice: an upper bound that L2 may halve); the partial states are counted as
//! DRAM traffic too, though a small workspace may stay in L2.

use super::gpus::GpuSpec;
use super::pipes::{self, LaunchShape, Modelled, Work};
use crate::check::decode::DecodeCase;
use crate::common::build_info::ptxas_stats;
use crate::common::dtype::DType;
use crate::common::error::Result;
use crate::common::launch::Launch;
use crate::common::options::AttnOptions;
use crate::emulator::{Device, EmuOptions};
use crate::host::emulated_decode::{decode_on, DecodeRun};
use crate::ops::decode::plan::{DecodePlan, SplitPolicy};
use crate::ops::decode::problem::DecodeProblem;
use crate::ops::decode::validate::DECODE_TILE_ROWS;

/// One decode configuration: a uniform batch (every item `cache_len` keys, `sq_new` new
/// tokens), contiguous NHD pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeModelConfig {
    pub dtype: DType,
    pub head_dim: usize,
    pub batch: usize,
    pub num_heads_kv: usize,
    pub group: usize,
    pub sq_new: usize,
    pub page_size: usize,
    pub cache_len: usize,
}

impl DecodeModelConfig {
    /// The problem (shapes only) the plan sees: pages for every item, causal.
    pub fn problem(&self) -> DecodeProblem {
        let pages_per_seq = self.cache_len.div_ceil(self.page_size).max(1);
        let mut p = DecodeProblem::contiguous(
            self.dtype,
            self.batch,
            self.sq_new,
            self.num_heads_kv * self.group,
            self.num_heads_kv,
            self.head_dim,
            self.batch * pages_per_seq,
            self.page_size,
            pages_per_seq,
            false,
        );
        p.max_cache_len = self.cache_len;
        p.options = AttnOptions {
            causal: true,
            ..AttnOptions::default()
        };
        p
    }

    /// Compulsory global bytes: q read and o written once, K and V read once per KV head.
    pub fn compulsory_bytes(&self) -> f64 {
        let e = self.dtype.size() as f64;
        let hq = self.num_heads_kv * self.group;
        e * (2.0 * (self.batch * hq * self.sq_new * self.head_dim) as f64
            + 2.0 * (self.batch * self.num_heads_kv * self.cache_len * self.head_dim) as f64)
    }

    /// Packed-row tiles per KV head (`group x sq_new` rows, 16 per CTA).
    pub fn row_tiles(&self) -> usize {
        (self.group * self.sq_new).div_ceil(DECODE_TILE_ROWS)
    }
}

/// A config whose compulsory DRAM bytes a modelled call is measured against.
pub trait Compulsory {
    /// Bytes the call must move to and from DRAM at the least.
    fn compulsory_bytes(&self) -> f64;
}

/// A modelled decode-shaped call of config `C`: the decode launch, then the split combine
/// (the paged decode's and the MLA decode's, src/perf_model/mla_decode.rs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitModelled<C> {
    pub config: C,
    pub splits: u32,
    pub decode: Modelled,
    pub combine: Option<Modelled>,
    /// Bytes the model moves to and from DRAM (both launches).
    pub dram_bytes: f64,
    /// Findings of the emulated item (0 expected).
    pub findings: usize,
}

/// A modelled decode call.
pub type DecodeModelled = SplitModelled<DecodeModelConfig>;

impl Compulsory for DecodeModelConfig {
    fn compulsory_bytes(&self) -> f64 {
        DecodeModelConfig::compulsory_bytes(self)
    }
}

impl<C: Compulsory> SplitModelled<C> {
    /// Modelled seconds of the call: decode, then combine.
    pub fn seconds(&self) -> f64 {
        self.decode.seconds() + self.combine.map_or(0.0, |c| c.seconds())
    }
    /// Compulsory bytes / modelled time / DRAM bandwidth: the fraction of DRAM bandwidth the
    /// call reaches on useful bytes.
    pub fn dram_fraction(&self, gpu: &GpuSpec) -> f64 {
        self.config.compulsory_bytes() / self.seconds() / gpu.dram_bytes_per_s
    }
    /// DRAM bytes the model charges / compulsory bytes.
    pub fn bytes_vs_compulsory(&self) -> f64 {
        self.dram_bytes / self.config.compulsory_bytes()
    }
}

/// The smallest batch whose decode grid (one split) fills every CTA slot of `gpu` once.
pub fn batch_filling(gpu: &GpuSpec, c: &DecodeModelConfig) -> Result<usize> {
    let one = DecodeModelConfig { batch: 1, ..*c };
    let plan = DecodePlan::new(&one.problem(), SplitPolicy::Count(1))?;
    let shape = launch_shape(
        plan.kernel.entry,
        1,
        plan.decode.block[0],
        plan.decode.dynamic_smem_bytes,
        gpu,
    );
    let (per_sm, _) = pipes::ctas_per_sm(gpu, &shape);
    let slots = u64::from(per_sm.max(1)) * u64::from(gpu.sms);
    let per_item = (c.num_heads_kv * c.row_tiles()) as u64;
    Ok(slots.div_ceil(per_item) as usize)
}

pub(crate) fn launch_shape(
    entry: &str,
    ctas: u64,
    threads: u32,
    dyn_smem: u32,
    gpu: &GpuSpec,
) -> LaunchShape {
    let arch = format!("sm_{}", gpu.sm);
    let stats: Vec<_> = ptxas_stats(entry).collect();
    let s = stats
        .iter()
        .find(|s| s.arch == arch)
        .or(stats.first())
        .copied();
    LaunchShape {
        ctas,
        threads_per_cta: threads,
        regs_per_thread: s.map_or(255, |s| s.registers),
        smem_per_cta: dyn_smem + s.map_or(0, |s| s.static_smem_bytes),
        spill_bytes_per_thread: s.map_or(0, |s| s.spill_store_bytes + s.spill_load_bytes),
        setmaxnreg_regs_per_cta: 0,
    }
}

/// Models `c` on `gpu`: the split count from the plan's heuristic for `gpu`'s SMs, one item
/// with one KV head emulated with that split count, scaled to the whole launch.
pub fn model_decode(gpu: &GpuSpec, c: &DecodeModelConfig) -> Result<DecodeModelled> {
    let plan = DecodePlan::new(&c.problem(), SplitPolicy::Auto { num_sms: gpu.sms })?;
    let split = if plan.combine.is_some() {
        SplitPolicy::Count(plan.num_splits)
    } else {
        SplitPolicy::Count(1)
    };
    let case = DecodeCase::uniform(
        c.dtype,
        c.head_dim,
        1,
        1,
        c.group,
        c.sq_new,
        c.page_size,
        c.cache_len,
        split,
        11,
    );
    let built = case.build();
    let one = DecodePlan::new(&built.problem, split)?;
    // Counters do not depend on the race and uninitialised-read checks; the tests run those.
    let mut dev = Device::with_options(EmuOptions {
        check_races: false,
        check_uninit: false,
        ..EmuOptions::default()
    });
    let run = decode_on(&mut dev, &one, &built.inputs)?;
    let scale = (c.batch * c.num_heads_kv) as f64;
    let (decode, combine, dram_bytes) =
        model_launches(gpu, (&plan.decode, plan.combine.as_ref()), &run, scale);
    Ok(DecodeModelled {
        config: *c,
        splits: plan.num_splits,
        decode,
        combine,
        dram_bytes,
        findings: run.findings().len(),
    })
}

/// The modelled decode and (if planned) combine launches of a call whose counters `run` holds
/// for `1 / scale` of it, and the DRAM bytes of both (every sector touched, once per access).
/// Shared with the MLA model (src/perf_model/mla_decode.rs).
pub(crate) fn model_launches(
    gpu: &GpuSpec,
    (decode, combine): (&Launch, Option<&Launch>),
    run: &DecodeRun,
    scale: f64,
) -> (Modelled, Option<Modelled>, f64) {
    let one = |l: &Launch, counters: &crate::emulator::Counters| {
        let w = Work::from_counters(counters).scaled(scale);
        let ctas = u64::from(l.grid[0]) * u64::from(l.grid[1]) * u64::from(l.grid[2]);
        let shape = launch_shape(l.entry, ctas, l.block[0], l.dynamic_smem_bytes, gpu);
        let dram = w.global_sectors * 32.0;
        (pipes::model(&w, gpu, &shape, dram), dram)
    };
    let (d, d_dram) = one(decode, &run.decode_report.counters);
    let (c, c_dram) = match (combine, &run.combine_report) {
        (Some(cl), Some(cr)) => {
            let (m, dram) = one(cl, &cr.counters);
            (Some(m), dram)
        }
        _ => (None, 0.0),
    };
    (d, c, d_dram + c_dram)
}

#[cfg(test)]
mod tests {
    use super::super::gpus::A100;
    use super::*;

    fn config(batch: usize) -> DecodeModelConfig {
        DecodeModelConfig {
            dtype: DType::F16,
            head_dim: 64,
            batch,
            num_heads_kv: 4,
            group: 4,
            sq_new: 1,
            page_size: 16,
            cache_len: 512,
        }
    }

    #[test]
    fn a_filling_batch_is_one_split_and_dram_bound() {
        let c = config(1);
        let b = batch_filling(&A100, &c).unwrap();
        // 4 KV heads x 1 row tile per item: the slots of 108 SMs need ceil(slots / 4) items.
        assert!(b >= 108 / 4, "{b}");
        let m = model_decode(&A100, &DecodeModelConfig { batch: b, ..c }).unwrap();
        assert_eq!(m.findings, 0);
        assert_eq!(m.splits, 1);
        assert!(m.combine.is_none());
        assert_eq!(m.decode.binding(), "DRAM");
        // Sectors touched cover at least the compulsory bytes (minus q/o rounding).
        assert!(m.dram_bytes >= 0.99 * c.compulsory_bytes() * b as f64);
        let f = m.dram_fraction(&A100);
        assert!(f > 0.5 && f <= 1.0, "{f}");
    }

    #[test]
    fn a_single_sequence_splits_and_pays_a_combine() {
        // 4 KV heads of one sequence leave 104 SMs idle: 4096 keys allow 4 splits of 1024 keys
        // (GQA 4: 256 keys per packed row).
        let c = DecodeModelConfig {
            cache_len: 4096,
            ..config(1)
        };
        let m = model_decode(&A100, &c).unwrap();
        assert_eq!(m.findings, 0);
        assert_eq!(m.splits, 4);
        let c = m.combine.expect("combine");
        assert!(c.seconds() > 0.0);
        assert!((m.seconds() - m.decode.seconds() - c.seconds()).abs() < 1e-15);
        // Every pipe is reported, and the binding one is the slowest.
        assert!(m.decode.pipe_s.iter().all(|&t| t >= 0.0));
        assert!(m.decode.pipe_s.iter().all(|&t| t <= m.decode.seconds()));
    }
}
