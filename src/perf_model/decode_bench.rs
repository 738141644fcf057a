//! Decode counters from the emulator (no GPU): per cached key per KV head, by key doubling
//! (two runs at cache lengths L and 2L with one split, difference divided by the added keys, so
//! per-CTA setup and epilogue cancel), plus whole-call global bytes (decode + combine, the split
//! count from the heuristic) against the compulsory bytes (README.md, "Performance
//! evidence"):
//! `e·(B·Hq·Sq·d·2 + B·Hkv·L·d·2)`. Counts are exact emulator counts, not times.

use crate::check::decode::DecodeCase;
use crate::common::dtype::DType;
use crate::emulator::{Counters, Device};
use crate::host::emulated_decode::{decode_on, DecodeRun};
use crate::ops::decode::fp8::KvCacheDType;
use crate::ops::decode::plan::{DecodePlan, SplitPolicy};
use crate::perf_model::decode::DecodeModelConfig;

/// One measured configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeBenchConfig {
    /// The shape, as the model describes it; its `cache_len` is L of the key doubling (2L is
    /// the second run) and of the whole-call byte count.
    pub shape: DecodeModelConfig,
    /// 16-bit pages or FP8 (then K/V bytes per key halve).
    pub kv_dtype: KvCacheDType,
    /// SMs for the split heuristic of the whole-call run.
    pub num_sms: u32,
}

/// What [`measure`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeBenchRow {
    pub config: DecodeBenchConfig,
    pub warp_instr_per_key: f64,
    pub smem_wavefronts_per_key: f64,
    pub smem_ideal_per_key: f64,
    pub mma_per_key: f64,
    pub bytes_per_key: f64,
    /// Whole call (decode + combine) global bytes / compulsory bytes.
    pub bytes_vs_compulsory: f64,
    /// Bytes requested / (32 x sectors), whole call.
    pub sector_efficiency: f64,
    pub splits: u32,
    pub findings: usize,
}

fn case(c: &DecodeBenchConfig, len: usize, split: SplitPolicy) -> DecodeCase {
    DecodeCase {
        kv_dtype: c.kv_dtype,
        ..DecodeCase::uniform(
            c.shape.dtype,
            c.shape.head_dim,
            c.shape.batch,
            c.shape.num_heads_kv,
            c.shape.group,
            c.shape.sq_new,
            c.shape.page_size,
            len,
            split,
            7,
        )
    }
}

fn run(c: &DecodeBenchConfig, len: usize, split: SplitPolicy) -> Result<(DecodeRun, u32), String> {
    let built = case(c, len, split).build();
    let plan = DecodePlan::new(&built.problem, split).map_err(|e| e.to_string())?;
    let mut dev = Device::new();
    let r = decode_on(&mut dev, &plan, &built.inputs).map_err(|e| e.to_string())?;
    Ok((r, plan.num_splits))
}

fn total(r: &DecodeRun) -> (Counters, Option<Counters>) {
    (
        r.decode_report.counters.clone(),
        r.combine_report.as_ref().map(|c| c.counters.clone()),
    )
}

/// Measures `c` on the emulator.
pub fn measure(c: &DecodeBenchConfig) -> Result<DecodeBenchRow, String> {
    let (r1, _) = run(c, c.shape.cache_len, SplitPolicy::Count(1))?;
    let (r2, _) = run(c, 2 * c.shape.cache_len, SplitPolicy::Count(1))?;
    let keys = (c.shape.batch * c.shape.num_heads_kv * c.shape.cache_len) as f64;
    let (a, b) = (&r1.decode_report.counters, &r2.decode_report.counters);
    let per = |f: fn(&Counters) -> u64| (f(b) as f64 - f(a) as f64) / keys;
    let (whole, splits) = run(
        c,
        c.shape.cache_len,
        SplitPolicy::Auto { num_sms: c.num_sms },
    )?;
    let (dc, cc) = total(&whole);
    let bytes = dc.global_bytes_requested() + cc.as_ref().map_or(0, |c| c.global_bytes_requested());
    let sectors = dc.global_sectors + cc.as_ref().map_or(0, |c| c.global_sectors);
    let e = c.shape.dtype.size() as f64;
    let e_kv = c.kv_dtype.element_bytes() as f64;
    let hq = c.shape.num_heads_kv * c.shape.group;
    // q read and o written once; K and V read once per KV head (FP8: plus the scales, 8 bytes
    // per KV head, counted as compulsory too).
    let scales = if c.kv_dtype.is_fp8() {
        8.0 * c.shape.num_heads_kv as f64
    } else {
        0.0
    };
    let compulsory = e * 2.0 * (c.shape.batch * hq * c.shape.sq_new * c.shape.head_dim) as f64
        + e_kv
            * 2.0
            * (c.shape.batch * c.shape.num_heads_kv * c.shape.cache_len * c.shape.head_dim) as f64
        + scales;
    Ok(DecodeBenchRow {
        config: *c,
        warp_instr_per_key: per(|c| c.warp_instructions),
        smem_wavefronts_per_key: per(|c| c.shared_wavefronts),
        smem_ideal_per_key: per(|c| c.shared_wavefronts_ideal),
        mma_per_key: per(|c| c.mma_instructions),
        bytes_per_key: per(|c| c.global_bytes_requested()),
        bytes_vs_compulsory: bytes as f64 / compulsory,
        sector_efficiency: bytes as f64 / (32.0 * sectors as f64),
        splits,
        findings: r1.findings().len() + r2.findings().len() + whole.findings().len(),
    })
}

/// The configurations of bench/results/decode.txt: d128 f16, 2 KV heads, page sizes 1/16/256,
/// sq_new 1/4, GQA 1/4/8 with f16 pages; then FP8 e4m3 and e5m2 pages (f16 and bf16 q) at page
/// size 16, sq_new 1 and 4, GQA 4.
pub fn default_configs() -> Vec<DecodeBenchConfig> {
    let mut v = Vec::new();
    let base = DecodeBenchConfig {
        shape: DecodeModelConfig {
            dtype: DType::F16,
            head_dim: 128,
            batch: 1,
            num_heads_kv: 2,
            group: 4,
            sq_new: 1,
            page_size: 16,
            cache_len: 4096,
        },
        kv_dtype: KvCacheDType::Same,
        num_sms: 108,
    };
    for page_size in [1, 16, 256] {
        for sq_new in [1, 4] {
            for group in [1, 4, 8] {
                let shape = DecodeModelConfig {
                    page_size,
                    sq_new,
                    group,
                    ..base.shape
                };
                v.push(DecodeBenchConfig { shape, ..base });
            }
        }
    }
    for kv_dtype in [KvCacheDType::Fp8E4M3, KvCacheDType::Fp8E5M2] {
        for dtype in [DType::F16, DType::Bf16] {
            for sq_new in [1, 4] {
                let shape = DecodeModelConfig {
                    dtype,
                    sq_new,
                    ..base.shape
                };
                v.push(DecodeBenchConfig {
                    shape,
                    kv_dtype,
                    ..base
                });
            }
        }
    }
    v
}
