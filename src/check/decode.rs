//! One decode test case end to end, shared by the property tests and `flashmha check --decode`:
//! builds a random paged cache (shuffled pages, optionally a prefix shared by several items,
//! every slot no item uses and every unused page filled with NaN, block-table entries past an
//! item's pages filled with out-of-range garbage that must never be read), runs the plan on the
//! emulator (or any device of the host runner) and judges O, LSE and entropy against the candle
//! reference over the gathered pages with the one judge ([`super::judge`]).

use super::judge::{self, AttentionInputs, AttentionOutputs, Judgement};
use crate::backend::emulator::EmulatorBackend;
use crate::common::dtype::DType;
use crate::common::error::{Error, Result};
use crate::common::geometry::{PageStrides, Strides};
use crate::common::options::AttnOptions;
use crate::common::target::KernelTarget;
use crate::host::device::HarnessBackend;
use crate::host::runner::{self, DecodeHostInputs, DecodeRun};
use crate::ops::decode::fp8::{KvCacheDType, KvScaleGranularity};
use crate::ops::decode::kernels::DECODE_KERNELS;
use crate::ops::decode::plan::{DecodePlan, SplitPolicy};
use crate::ops::decode::problem::{DecodeProblem, QueryLayout};
use crate::ops::decode::validate::{decode_head_dim_pairs, decode_width_for};
use crate::reference::paged::{
    item_rows, pack_rows, paged_attention, stat_offset, PagedReferenceInputs,
};
use crate::reference::tolerance::ENTROPY_SOFTCAP_MAX;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Everything that defines one random case (besides the seed's values).
#[derive(Debug, Clone)]
pub struct DecodeCase {
    /// The kernels that run it: Ampere-and-newer, or Turing (f16 over 16-bit pages only).
    pub target: KernelTarget,
    pub dtype: DType,
    /// d_qk: q and the K pages.
    pub head_dim: usize,
    /// d_v: the V pages and o (`head_dim` but for a compiled d_qk != d_v pair).
    pub head_dim_v: usize,
    pub num_heads_kv: usize,
    pub group: usize,
    /// Cache length of each item (new tokens included).
    pub cache_lens: Vec<usize>,
    /// New query tokens of each item; padded layout when all equal and `!varlen`.
    pub q_lens: Vec<usize>,
    pub varlen: bool,
    pub page_size: usize,
    pub head_major_pages: bool,
    /// 16-bit or FP8 pages; FP8 pools mix quantised uniform values with arbitrary finite codes
    /// (subnormals and zeros included) under random positive scales.
    pub kv_dtype: KvCacheDType,
    pub kv_scales: KvScaleGranularity,
    /// Items 1.. share item 0's first this many pages (where both are long enough).
    pub shared_prefix_pages: usize,
    /// Extra pages nobody uses (NaN-filled).
    pub spare_pages: usize,
    pub options: AttnOptions,
    pub alibi: bool,
    pub gates: bool,
    /// Attention-sink logits per query head ([`super::draw_sinks`]).
    pub sinks: bool,
    pub lse: bool,
    pub entropy: bool,
    pub split: SplitPolicy,
    pub seed: u64,
}

/// Case data: the problem and its host inputs (the reference's f32 values are derived from
/// them in [`check_outputs`]).
pub struct BuiltCase {
    pub problem: DecodeProblem,
    pub inputs: DecodeHostInputs,
}

fn nan_bits(dtype: DType) -> u16 {
    match dtype {
        DType::F16 => 0x7E00,
        DType::Bf16 => 0x7FC0,
    }
}

impl DecodeCase {
    /// A uniform batch (every item `cache_len` keys and `sq_new` new tokens), NHD pages, no
    /// shared prefix or spare pages, causal, no optional inputs or outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn uniform(
        dtype: DType,
        head_dim: usize,
        batch: usize,
        num_heads_kv: usize,
        group: usize,
        sq_new: usize,
        page_size: usize,
        cache_len: usize,
        split: SplitPolicy,
        seed: u64,
    ) -> DecodeCase {
        DecodeCase {
            target: KernelTarget::Ampere,
            dtype,
            head_dim,
            head_dim_v: head_dim,
            num_heads_kv,
            group,
            cache_lens: vec![cache_len; batch],
            q_lens: vec![sq_new; batch],
            varlen: false,
            page_size,
            head_major_pages: false,
            kv_dtype: KvCacheDType::Same,
            kv_scales: KvScaleGranularity::PerTensor,
            shared_prefix_pages: 0,
            spare_pages: 0,
            options: AttnOptions {
                causal: true,
                ..AttnOptions::default()
            },
            alibi: false,
            gates: false,
            sinks: false,
            lse: false,
            entropy: false,
            split,
            seed,
        }
    }

    /// A random case (the distribution of the property tests, for `flashmha check --decode`):
    /// page sizes 1, 3, 16, 17, 256 or 1..=64, NHD or HND, cache lengths 0, 1 or up to
    /// `max_len` (not multiples of the page size), GQA 1-8, padded or varlen queries, shared
    /// prefixes and spare NaN pages, forced split counts, fixed split sizes or the heuristic,
    /// the options of prefill, and FP8 pages where an FP8 kernel exists; head dims drawn from
    /// `head_dims`.
    pub fn random(
        rng: &mut impl Rng,
        dtypes: &[DType],
        head_dims: &[usize],
        max_len: usize,
    ) -> DecodeCase {
        Self::random_on(rng, None, dtypes, head_dims, max_len)
    }

    /// [`DecodeCase::random`] on the kernels of `target` when given (Hopper decodes with the
    /// Ampere rows; Turing takes 16-bit pages only), else on Turing in a quarter of the cases
    /// it serves and on Ampere otherwise. `dtypes` and `head_dims` must be ones `target` has
    /// decode kernels for.
    pub fn random_on(
        rng: &mut impl Rng,
        target: Option<KernelTarget>,
        dtypes: &[DType],
        head_dims: &[usize],
        max_len: usize,
    ) -> DecodeCase {
        let dtype = dtypes[rng.random_range(0..dtypes.len())];
        let head_dim = head_dims[rng.random_range(0..head_dims.len())];
        // FP8 pages (either format, either scale granularity) in a quarter of the cases whose
        // dtype and head dim have an FP8 kernel.
        let fp8_compiled = DECODE_KERNELS
            .iter()
            .any(|r| r.kv_bytes == 1 && r.dtype == dtype && r.head_dim as usize == head_dim);
        // The Turing kernels in a quarter of the cases they serve (f16, the head dims up to
        // their widest, 16-bit pages); those cases take no FP8 pages.
        let turing_compiled = decode_width_for(KernelTarget::Turing, dtype, 2, head_dim).is_some();
        let target = match target {
            Some(t) => t.shared_kernels(),
            None if turing_compiled && rng.random_bool(0.25) => KernelTarget::Turing,
            None => KernelTarget::Ampere,
        };
        let fp8_compiled = fp8_compiled && target == KernelTarget::Ampere;
        let kv_dtype = match (fp8_compiled && rng.random_bool(0.25), rng.random_bool(0.5)) {
            (false, _) => KvCacheDType::Same,
            (true, true) => KvCacheDType::Fp8E4M3,
            (true, false) => KvCacheDType::Fp8E5M2,
        };
        let kv_scales = if rng.random_bool(0.5) {
            KvScaleGranularity::PerTensor
        } else {
            KvScaleGranularity::PerKvHead
        };
        let batch = rng.random_range(1..=3);
        let cache_lens: Vec<usize> = (0..batch)
            .map(|_| match rng.random_range(0..8) {
                0 => 0,
                1 => 1,
                _ => rng.random_range(2..=max_len.max(2)),
            })
            .collect();
        let varlen = rng.random_bool(0.3);
        let q_lens = if varlen {
            let mut q: Vec<usize> = (0..batch).map(|_| rng.random_range(0..=6)).collect();
            if q.iter().all(|&x| x == 0) {
                q[0] = 1;
            }
            q
        } else {
            let sq = if rng.random_bool(0.75) {
                1
            } else {
                rng.random_range(2..=5)
            };
            vec![sq; batch]
        };
        let page_size = match rng.random_range(0..6) {
            0 => 1,
            1 => 3,
            2 => 16,
            3 => 17,
            4 => 256,
            _ => rng.random_range(1..=64),
        };
        let split = match rng.random_range(0..3) {
            0 => SplitPolicy::Count(rng.random_range(1..=16)),
            1 => SplitPolicy::FixedKeys(64 * rng.random_range(1..=4)),
            _ => SplitPolicy::Auto {
                num_sms: rng.random_range(1..=132),
            },
        };
        let window = rng
            .random_bool(0.2)
            .then(|| crate::common::options::SlidingWindow {
                left: rng.random_bool(0.5).then(|| rng.random_range(0..80)),
                right: rng.random_bool(0.5).then(|| rng.random_range(0..8)),
            });
        let mut case = DecodeCase {
            target,
            dtype,
            head_dim,
            head_dim_v: head_dim,
            num_heads_kv: rng.random_range(1..=2),
            group: rng.random_range(1..=8),
            cache_lens,
            q_lens,
            varlen,
            page_size,
            head_major_pages: rng.random_bool(0.5),
            kv_dtype,
            kv_scales,
            shared_prefix_pages: if rng.random_bool(0.5) {
                rng.random_range(1..=3)
            } else {
                0
            },
            spare_pages: rng.random_range(0..=3),
            options: AttnOptions {
                softmax_scale: rng.random_bool(0.2).then(|| rng.random_range(0.05..0.5)),
                causal: rng.random_bool(0.5),
                window,
                softcap: rng.random_bool(0.2).then(|| rng.random_range(5.0..30.0)),
            },
            alibi: rng.random_bool(0.2),
            gates: rng.random_bool(0.2),
            sinks: rng.random_bool(0.2),
            lse: rng.random_bool(0.6),
            entropy: rng.random_bool(0.3),
            split,
            seed: rng.random(),
        };
        // A compiled d_qk != d_v pair (issue 23: 16-bit pages) in a sixth of the cases that can
        // take one.
        let pairs = decode_head_dim_pairs(target, dtype, 2);
        if !kv_dtype.is_fp8() && !pairs.is_empty() && rng.random_bool(1.0 / 6.0) {
            let (d, dv) = pairs[rng.random_range(0..pairs.len())];
            case.head_dim = d as usize;
            case.head_dim_v = dv as usize;
        }
        // With entropy on, softcaps stay within ENTROPY_SOFTCAP_MAX (the judge's entropy policy,
        // src/check/judge.rs), as the forward generator draws them.
        if case.entropy {
            case.options.softcap = case.options.softcap.map(|c| c.min(ENTROPY_SOFTCAP_MAX));
        }
        case
    }

    /// The problem and host inputs (deterministic in `seed`).
    pub fn build(&self) -> BuiltCase {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let (hkv, d, ps) = (self.num_heads_kv, self.head_dim, self.page_size);
        let dv = self.head_dim_v;
        let hq = hkv * self.group;
        let batch = self.cache_lens.len();
        let pages_of = |l: usize| l.div_ceil(ps);
        let max_pages_per_seq = self
            .cache_lens
            .iter()
            .map(|&l| pages_of(l))
            .max()
            .unwrap_or(0)
            .max(1)
            + 1;
        // Pages: item 0's first `shared` pages are reused by every item long enough.
        let shared = self.shared_prefix_pages.min(pages_of(self.cache_lens[0]));
        let own: usize = self
            .cache_lens
            .iter()
            .enumerate()
            .map(|(b, &l)| {
                // Items long enough to hold the whole shared prefix reuse item 0's pages.
                if b > 0 && shared > 0 && l >= shared * ps {
                    pages_of(l) - shared
                } else {
                    pages_of(l)
                }
            })
            .sum();
        let num_pages = own + self.spare_pages + 1;
        let mut free: Vec<i32> = (0..num_pages as i32).collect();
        free.shuffle(&mut rng);
        let mut table = vec![0i32; batch * max_pages_per_seq];
        let garbage = [
            num_pages as i32,
            -1,
            i32::MAX,
            i32::MIN,
            num_pages as i32 + 7,
        ];
        for (b, &l) in self.cache_lens.iter().enumerate() {
            for j in 0..max_pages_per_seq {
                table[b * max_pages_per_seq + j] = if j < pages_of(l) {
                    if b > 0 && j < shared && l >= shared * ps {
                        table[j]
                    } else {
                        free.pop().expect("enough pages")
                    }
                } else {
                    garbage[rng.random_range(0..garbage.len())]
                };
            }
        }
        let queries = if self.varlen {
            QueryLayout::Varlen {
                total_q: self.q_lens.iter().sum::<usize>().max(1),
                max_seqlen_q: self.q_lens.iter().copied().max().unwrap_or(1).max(1),
            }
        } else {
            QueryLayout::Padded {
                sq_new: self.q_lens[0],
            }
        };
        // q: [.., hq, d], o: [.., hq, d_v] (padded; varlen ignores the batch stride).
        let rows_of = |d: usize| {
            let row = (hq * d) as i64;
            Strides {
                batch: self.q_lens[0] as i64 * row,
                row,
                head: d as i64,
            }
        };
        let (q_strides, o_strides) = (rows_of(d), rows_of(dv));
        // K pages of d_qk, V pages of d_v elements per row, both NHD or both HND.
        let pages_of_dim = |d: usize| {
            if self.head_major_pages {
                PageStrides::hnd(ps, hkv, d)
            } else {
                PageStrides::nhd(ps, hkv, d)
            }
        };
        let (strides, v_strides) = (pages_of_dim(d), pages_of_dim(dv));
        let problem = DecodeProblem {
            dtype: self.dtype,
            batch,
            num_heads_q: hq,
            num_heads_kv: hkv,
            head_dim: d,
            head_dim_v: dv,
            queries,
            q_strides,
            o_strides,
            num_pages,
            page_size: ps,
            k_strides: strides,
            v_strides,
            kv_dtype: self.kv_dtype,
            kv_scales: self.kv_scales,
            max_pages_per_seq,
            block_table_stride: max_pages_per_seq,
            max_cache_len: self.cache_lens.iter().copied().max().unwrap_or(0),
            options: self.options,
            alibi: self.alibi,
            gates: self.gates,
            sinks: self.sinks,
            lse: self.lse,
            entropy: self.entropy,
        };
        // Pools: NaN everywhere, random values in every slot some item reads.
        let span = problem.cache_span(&strides) as usize;
        let v_span = problem.v_cache_span() as usize;
        let mut k_cache = vec![nan_bits(self.dtype); span];
        let mut v_cache = vec![nan_bits(self.dtype); v_span];
        let draw =
            |rng: &mut rand::rngs::StdRng| self.dtype.bits_from_f32(rng.random_range(-1.0..1.0));
        // Offset and KV head of every cache row some item reads (item, position, head order;
        // shared pages are met once per item that reads them).
        // (K offset, V offset, KV head) of every such row.
        let used_rows: Vec<(usize, usize, usize)> = (0..batch)
            .flat_map(|b| (0..self.cache_lens[b]).map(move |j| (b, j)))
            .flat_map(|(b, j)| {
                let page = table[b * max_pages_per_seq + j / ps] as i64;
                let at = move |s: &PageStrides, h: usize| {
                    (page * s.page + (j % ps) as i64 * s.slot + h as i64 * s.head) as usize
                };
                (0..hkv).map(move |h| (at(&strides, h), at(&v_strides, h), h))
            })
            .collect();
        for &(ko, vo, _) in &used_rows {
            // A shared page's row is met once per item that reads it: drawn the first time (K
            // and V column by column, so d_v = d_qk cases draw what they always drew).
            for c in 0..d {
                if k_cache[ko + c] == nan_bits(self.dtype) {
                    k_cache[ko + c] = draw(&mut rng);
                    if c < dv {
                        v_cache[vo + c] = draw(&mut rng);
                    }
                }
            }
        }
        let mut inputs_fp8 = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if self.kv_dtype.is_fp8() {
            let t = self.kv_dtype;
            // The largest finite value, and the NaN code of both formats (S.1111111).
            let max_finite = t.decode(if t == KvCacheDType::Fp8E5M2 {
                0x7b
            } else {
                0x7e
            });
            const NAN_CODE: u8 = 0x7f;
            let n_scales = problem.kv_scales_len();
            let scale = |rng: &mut rand::rngs::StdRng| rng.random_range(0.5f32..2.0) / max_finite;
            let k_scales: Vec<f32> = (0..n_scales).map(|_| scale(&mut rng)).collect();
            let v_scales: Vec<f32> = (0..n_scales).map(|_| scale(&mut rng)).collect();
            let code = |rng: &mut rand::rngs::StdRng, s: f32| loop {
                let c = if rng.random_range(0..10) == 0 {
                    rng.random::<u8>() // any code: subnormals, zeros, the extremes
                } else {
                    t.encode(rng.random_range(-1.0f32..1.0) / s)
                };
                if t.decode(c).is_finite() {
                    break c;
                }
            };
            let mut k8 = vec![NAN_CODE; span];
            let mut v8 = k8.clone();
            let scale_of = |h: usize| match self.kv_scales {
                KvScaleGranularity::PerTensor => 0,
                KvScaleGranularity::PerKvHead => h,
            };
            // (FP8 pages only with d_v = d_qk: one offset serves K and V.)
            for &(o, _, h) in &used_rows {
                for c in 0..d {
                    if k8[o + c] == NAN_CODE {
                        k8[o + c] = code(&mut rng, k_scales[scale_of(h)]);
                        v8[o + c] = code(&mut rng, v_scales[scale_of(h)]);
                    }
                }
            }
            k_cache.clear();
            v_cache.clear();
            inputs_fp8 = (k8, v8, k_scales, v_scales);
        }
        let q_len = problem.q_span(&q_strides) as usize;
        let q = (0..q_len).map(|_| draw(&mut rng)).collect();
        let cu_seqlens_q = self.varlen.then(|| {
            std::iter::once(0)
                .chain(self.q_lens.iter().scan(0i32, |acc, &l| {
                    *acc += l as i32;
                    Some(*acc)
                }))
                .collect()
        });
        let alibi_slopes = self
            .alibi
            .then(|| (0..hq).map(|_| rng.random_range(0.0f32..0.3)).collect());
        let head_gates = self
            .gates
            .then(|| (0..hq).map(|_| rng.random_range(-1.5f32..1.5)).collect());
        let sinks = self.sinks.then(|| super::draw_sinks(&mut rng, hq));
        BuiltCase {
            problem,
            inputs: DecodeHostInputs {
                q,
                k_cache,
                v_cache,
                k_cache_fp8: inputs_fp8.0,
                v_cache_fp8: inputs_fp8.1,
                k_scales: inputs_fp8.2,
                v_scales: inputs_fp8.3,
                block_table: table,
                cache_seqlens: self.cache_lens.iter().map(|&l| l as i32).collect(),
                cu_seqlens_q,
                alibi_slopes,
                head_gates,
                sinks,
            },
        }
    }

    /// One line a person can read: target (when not Ampere), dtype, pages, head dim, heads,
    /// lengths, layout, options and split policy.
    pub fn describe(&self) -> String {
        let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let mut words = Vec::new();
        if self.target != KernelTarget::Ampere {
            words.push(format!("on {}", self.target));
        }
        if self.head_dim_v == self.head_dim {
            words.push(format!("{} d{}", self.dtype, self.head_dim));
        } else {
            words.push(format!(
                "{} d{}v{}",
                self.dtype, self.head_dim, self.head_dim_v
            ));
        }
        if self.kv_dtype.is_fp8() {
            words.push(format!(
                "kv {} scale per {}",
                match self.kv_dtype {
                    KvCacheDType::Fp8E5M2 => "e5m2",
                    _ => "e4m3",
                },
                match self.kv_scales {
                    KvScaleGranularity::PerTensor => "tensor",
                    KvScaleGranularity::PerKvHead => "kv head",
                }
            ));
        }
        words.push(format!("hkv{} gqa{}", self.num_heads_kv, self.group));
        words.push(format!("cache {}", list(&self.cache_lens)));
        words.push(format!(
            "q {}{}",
            list(&self.q_lens),
            if self.varlen { " varlen" } else { "" }
        ));
        words.push(format!(
            "page {} {}",
            self.page_size,
            if self.head_major_pages { "HND" } else { "NHD" }
        ));
        if self.shared_prefix_pages > 0 {
            words.push(format!("shared {}", self.shared_prefix_pages));
        }
        words.extend(super::feature_words(
            &self.options,
            [self.alibi, self.gates, self.sinks, self.lse, self.entropy],
        ));
        words.push(match self.split {
            SplitPolicy::Auto { num_sms } => format!("splits auto/{num_sms} SMs"),
            SplitPolicy::Count(n) => format!("splits {n}"),
            SplitPolicy::FixedKeys(k) => format!("splits of {k} keys"),
        });
        words.push(format!("seed {}", self.seed));
        words.join(" ")
    }
}

/// The f32 values of an FP8 pool: code x the scale of its KV head (NaN where no element is).
pub fn dequantised_pool(
    p: &DecodeProblem,
    strides: &PageStrides,
    codes: &[u8],
    scales: &[f32],
) -> Vec<f32> {
    let mut out = vec![f32::NAN; codes.len()];
    for page in 0..p.num_pages {
        for slot in 0..p.page_size {
            for h in 0..p.num_heads_kv {
                let scale = scales[h * p.kv_scales.stride() as usize];
                let o = (page as i64 * strides.page
                    + slot as i64 * strides.slot
                    + h as i64 * strides.head) as usize;
                for c in 0..p.head_dim {
                    out[o + c] = p.kv_dtype.decode(codes[o + c]) * scale;
                }
            }
        }
    }
    out
}

/// Result of one case: the plan and run, and the judge's verdict on every output (findings
/// included).
pub struct DecodeOutcome {
    pub plan: DecodePlan,
    pub run: DecodeRun,
    pub judgement: Judgement,
}

impl DecodeOutcome {
    /// No finding and every output within its tolerance.
    pub fn passed(&self) -> bool {
        self.judgement.passed()
    }

    /// One line per failure (empty = pass).
    pub fn failures(&self) -> Vec<String> {
        self.judgement.failures()
    }
}

/// Builds, plans, runs and judges `case` on a fresh emulator device.
pub fn run_decode_case(case: &DecodeCase) -> std::result::Result<DecodeOutcome, String> {
    run_decode_case_on(&EmulatorBackend::new(case.target), case.target, case)
        .map_err(|e| e.to_string())
}

/// Builds `case`, plans it for the kernels of `target` (a GPU's own, or the case's), runs it on
/// `backend` through the host runner and judges it.
pub fn run_decode_case_on<B: HarnessBackend>(
    backend: &B,
    target: KernelTarget,
    case: &DecodeCase,
) -> Result<DecodeOutcome> {
    let built = case.build();
    let plan = DecodePlan::new_for(target, &built.problem, case.split)?;
    let run = runner::decode(backend, &plan, &built.inputs)?;
    let judgement = judge_run(&built, &run)?;
    Ok(DecodeOutcome {
        plan,
        run,
        judgement,
    })
}

/// Judges a run: its findings and every output against the reference.
pub fn judge_run(built: &BuiltCase, run: &DecodeRun) -> Result<Judgement> {
    let mut j = check_outputs(built, &run.o, run.lse.as_deref(), run.entropy.as_deref())?;
    j.findings = run.findings().iter().map(|f| f.to_string()).collect();
    Ok(j)
}

/// [`judge_run`]'s failures, one line each (empty = pass).
pub fn check_run(built: &BuiltCase, run: &DecodeRun) -> Vec<String> {
    judge_run(built, run).map_or_else(|e| vec![e.to_string()], |j| j.failures())
}

/// Judges outputs of any backend (o raw bits in the problem's layout; lse / entropy as the
/// kernel writes them) against the candle reference (no findings: see [`judge_run`]).
pub fn check_outputs(
    built: &BuiltCase,
    run_o: &[u16],
    run_lse: Option<&[f32]>,
    run_entropy: Option<&[f32]>,
) -> Result<Judgement> {
    let p = &built.problem;
    let inp = &built.inputs;
    let f32s = |xs: &[u16]| {
        xs.iter()
            .map(|&b| p.dtype.f32_from_bits(b))
            .collect::<Vec<f32>>()
    };
    let q = f32s(&inp.q);
    let (k, v) = if p.kv_dtype.is_fp8() {
        (
            dequantised_pool(p, &p.k_strides, &inp.k_cache_fp8, &inp.k_scales),
            dequantised_pool(p, &p.v_strides, &inp.v_cache_fp8, &inp.v_scales),
        )
    } else {
        (f32s(&inp.k_cache), f32s(&inp.v_cache))
    };
    let reference = paged_attention(&PagedReferenceInputs {
        problem: p,
        q: &q,
        k_cache: &k,
        v_cache: &v,
        block_table: &inp.block_table,
        cache_seqlens: &inp.cache_seqlens,
        cu_seqlens_q: inp.cu_seqlens_q.as_deref(),
        alibi_slopes: inp.alibi_slopes.as_deref(),
        head_gates: inp.head_gates.as_deref(),
        sinks: inp.sinks.as_deref(),
    })
    .map_err(|e| Error::Reference(e.to_string()))?;
    let rows = item_rows(p, inp.cu_seqlens_q.as_deref());
    let total_q = rows.last().map_or(0, |r| r.1);
    let (hq, d) = (p.num_heads_q, p.head_dim);
    // Kernel outputs in the canonical layouts of the reference (o rows of d_v elements).
    let o = f32s(&pack_rows(p, (&p.o_strides, p.head_dim_v), &rows, run_o));
    let canon_stats = |xs: &[f32]| {
        let mut out = vec![0f32; hq * total_q];
        for h in 0..hq {
            for r in 0..total_q {
                out[h * total_q + r] = xs[stat_offset(p, r, h)];
            }
        }
        out
    };
    let model = judge::error_model(&AttentionInputs {
        dtype: p.dtype,
        head_dim: d,
        q: &q,
        k: &k,
        v: &v,
        head_gates: inp.head_gates.as_deref(),
        alibi_slopes: inp.alibi_slopes.as_deref(),
        softmax_scale: p.options.scale_for(d),
        softcap: p.options.softcap,
        max_seqlen_q: rows.iter().map(|r| r.1 - r.0).max().unwrap_or(0),
        max_seqlen_k: inp.cache_seqlens.iter().copied().max().unwrap_or(0).max(0) as usize,
    });
    let (lse, entropy) = (run_lse.map(canon_stats), run_entropy.map(canon_stats));
    Ok(Judgement {
        outputs: judge::attention(
            &model,
            AttentionOutputs {
                o: &o,
                lse: lse.as_deref(),
                entropy: entropy.as_deref(),
            },
            &reference,
        ),
        findings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The judge's entropy policy (src/check/judge.rs) needs softcaps of at most
    /// ENTROPY_SOFTCAP_MAX whenever entropy is requested; larger ones are still drawn without it.
    #[test]
    fn random_cases_keep_softcaps_within_the_entropy_bound_when_entropy_is_on() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        let (mut capped, mut large_without) = (0, 0);
        for _ in 0..4000 {
            let c = DecodeCase::random(&mut rng, &[DType::F16], &[64], 100);
            match (c.entropy, c.options.softcap) {
                (true, Some(cap)) => {
                    assert!(cap <= ENTROPY_SOFTCAP_MAX, "{}", c.describe());
                    capped += 1;
                }
                (false, Some(cap)) if cap > ENTROPY_SOFTCAP_MAX => large_without += 1,
                _ => {}
            }
        }
        assert!(capped > 0 && large_without > 0, "{capped} {large_without}");
    }
}
