//! Property tests of paged decode on the emulator against the candle reference over the gathered
//! pages: random page sizes (1, 3, 17, 256 and others), NHD and HND pools, shuffled pages and
//! prefixes shared between items, NaN in every slot no item reads and garbage in every unused
//! block-table entry, cache lengths 0, 1 and non-multiples of the page size, GQA 1-8, padded
//! and varlen queries, forced split counts 1-16, fixed split sizes and the heuristic, and the
//! options of prefill. Zero findings required. FLASHMHA_PROPTEST_CASES sets the case count.
//! FP8 pages: e4m3 and e5m2 codes (quantised values mixed with arbitrary finite codes, zeros
//! and subnormals included) under random per-tensor or per-KV-head scales, against the candle
//! reference over the dequantised (f32) pages.
//! Turing: a quarter of the general cases run the sm_75 kernels (f16 over 16-bit pages, their
//! register-staged key-block pipeline, m16n8k8 mma) under the same checks.

use flashmha::check::decode::{run_decode_case, DecodeCase};
use flashmha::common::dtype::DType;
use flashmha::common::options::{AttnOptions, SlidingWindow};
use flashmha::ops::decode::kernels::DECODE_KERNELS;
use flashmha::ops::decode::validate::{decode_head_dim_pairs, decode_width_for};
use flashmha::ops::decode::{KvCacheDType, KvScaleGranularity, SplitPolicy};
use flashmha::KernelTarget;
use proptest::prelude::*;

fn cases() -> u32 {
    crate::varlen_case::proptest_cases(64)
}

fn page_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(3),
        Just(16),
        Just(17),
        Just(256),
        1usize..=64
    ]
}

fn split() -> impl Strategy<Value = SplitPolicy> {
    prop_oneof![
        (1u32..=16).prop_map(SplitPolicy::Count),
        (1u32..=4).prop_map(|k| SplitPolicy::FixedKeys(64 * k)),
        (1u32..=132).prop_map(|num_sms| SplitPolicy::Auto { num_sms }),
    ]
}

prop_compose! {
    fn options()(
        scale in prop::option::weighted(0.2, 0.05f32..0.5),
        causal in prop::bool::weighted(0.5),
        window in prop::option::weighted(0.2, (prop::option::of(0u32..80), prop::option::of(0u32..8))
            .prop_map(|(left, right)| SlidingWindow { left, right })),
        softcap in prop::option::weighted(0.2, 5.0f32..30.0),
    ) -> AttnOptions {
        AttnOptions { softmax_scale: scale, causal, window, softcap }
    }
}

prop_compose! {
    fn case()(
        turing in prop::bool::weighted(0.25),
        dtype in prop_oneof![Just(DType::F16), Just(DType::Bf16)],
        // d64 / d128 most of the time, every served dim sometimes.
        hd_pick in prop_oneof![3 => Just(None), 1 => any::<prop::sample::Index>().prop_map(Some)],
        d_common in prop_oneof![Just(64usize), Just(128)],
        // Sometimes a compiled d_qk != d_v pair instead (issue 23; Ampere rows, 16-bit pages).
        pair_pick in prop::option::weighted(0.15, any::<prop::sample::Index>()),
        hkv in 1usize..=2,
        group in 1usize..=8,
        lens in prop::collection::vec(prop_oneof![1 => Just(0usize), 1 => Just(1), 6 => 2usize..=300], 1..=3),
        sq_new in prop_oneof![3 => Just(1usize), 1 => 2usize..=5],
        varlen in prop::bool::weighted(0.3),
        q_lens_v in prop::collection::vec(0usize..=6, 3),
        page_size in page_size(),
        head_major in any::<bool>(),
        shared in prop_oneof![Just(0usize), 1usize..=3],
        spare in 0usize..=3,
        options in options(),
        alibi in prop::bool::weighted(0.2),
        gates in prop::bool::weighted(0.2),
        sinks in prop::bool::weighted(0.2),
        lse in prop::bool::weighted(0.6),
        entropy in prop::bool::weighted(0.3),
        split in split(),
        seed in any::<u64>(),
    ) -> DecodeCase {
        // Turing serves f16 only, at the head dims of its table (64 and 128 among them).
        let target = if turing { KernelTarget::Turing } else { KernelTarget::Ampere };
        let dtype = if turing { DType::F16 } else { dtype };
        // Otherwise any multiple of 8 the kernels serve (issue 23: the compiled dims and the
        // ones between them, on the narrowest wider kernel).
        let head_dim = match hd_pick {
            None => d_common,
            Some(i) => {
                let dims: Vec<usize> = (1..=32).map(|k| 8 * k)
                    .filter(|&d| decode_width_for(target, dtype, 2, d).is_some())
                    .collect();
                dims[i.index(dims.len())]
            }
        };
        let pairs = decode_head_dim_pairs(target, dtype, 2);
        let (head_dim, head_dim_v) = match pair_pick {
            Some(i) if !pairs.is_empty() => {
                let (d, dv) = pairs[i.index(pairs.len())];
                (d as usize, dv as usize)
            }
            _ => (head_dim, head_dim),
        };
        let batch = lens.len();
        let q_lens = if varlen {
            let mut q: Vec<usize> = q_lens_v[..batch].to_vec();
            if q.iter().all(|&x| x == 0) { q[0] = 1; }
            q
        } else {
            vec![sq_new; batch]
        };
        DecodeCase {
            target, dtype, head_dim, head_dim_v, num_heads_kv: hkv, group, cache_lens: lens, q_lens, varlen, page_size,
            head_major_pages: head_major, kv_dtype: KvCacheDType::Same,
            kv_scales: KvScaleGranularity::PerTensor, shared_prefix_pages: shared, spare_pages: spare, options,
            alibi, gates, sinks, lse, entropy, split, seed,
        }
    }
}

prop_compose! {
    /// An FP8 case: any of the general case's shapes and options, on an FP8 head dim.
    fn fp8_case()(
        base in case(),
        kv_dtype in prop_oneof![Just(KvCacheDType::Fp8E4M3), Just(KvCacheDType::Fp8E5M2)],
        per_head in any::<bool>(),
        d_pick in any::<prop::sample::Index>(),
    ) -> DecodeCase {
        let dims: Vec<usize> = DECODE_KERNELS.iter()
            .filter(|r| r.dtype == base.dtype && r.kv_bytes == 1)
            .map(|r| r.head_dim as usize).collect();
        let head_dim = dims[d_pick.index(dims.len())];
        DecodeCase {
            target: KernelTarget::Ampere,  // FP8 pages are an Ampere-and-newer feature
            head_dim,
            head_dim_v: head_dim,  // (FP8 pages: d_v = d_qk)
            kv_dtype,
            kv_scales: if per_head { KvScaleGranularity::PerKvHead } else { KvScaleGranularity::PerTensor },
            ..base
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn paged_decode_fp8_matches_reference(case in fp8_case()) {
        let outcome = run_decode_case(&case).map_err(|e| TestCaseError::fail(format!("{}: {e}", case.describe())))?;
        prop_assert!(outcome.passed(), "{}: {:#?}", case.describe(), outcome.failures());
    }

    #[test]
    fn paged_decode_matches_reference(case in case()) {
        let outcome = run_decode_case(&case).map_err(|e| TestCaseError::fail(format!("{}: {e}", case.describe())))?;
        // The plan ran the case's kernel family (a Turing case never falls back to sm_80 code).
        prop_assert_eq!(outcome.plan.kernel.target, case.target);
        prop_assert_eq!(outcome.plan.decode.entry.contains("_sm75_"), case.target == KernelTarget::Turing);
        prop_assert!(outcome.passed(), "{}: {:#?}", case.describe(), outcome.failures());
    }
}
