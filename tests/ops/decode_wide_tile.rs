//! 32-row query tiles (two m16 row blocks per warp): the plan picks the `_r32` entry when an
//! item has more than 16 packed rows per KV head (GQA group x new tokens), it matches the
//! reference with every option (masks, window, softcap, ALiBi, gates, LSE, entropy) on padded
//! and varlen queries, partially filled tiles and more than one tile per KV head, and it reads
//! each cached K/V row once per KV head where the 16-row tiles read it twice. Turing (sm_75)
//! has a wide tile at d64 only (d128's would not fit 64 KiB of shared memory): it matches the
//! reference the same way, and d128 there runs two 16-row tiles per KV head.

use flashmha::check::decode::{run_decode_case, DecodeCase};
use flashmha::common::dtype::DType;
use flashmha::common::options::{AttnOptions, SlidingWindow};
use flashmha::ops::decode::{DecodePlan, KvCacheDType, SplitPolicy};

#[allow(clippy::too_many_arguments)]
fn case(
    dtype: DType,
    head_dim: usize,
    group: usize,
    q_lens: Vec<usize>,
    varlen: bool,
    options: AttnOptions,
    extras: bool,
    seed: u64,
) -> DecodeCase {
    let batch = q_lens.len();
    DecodeCase {
        cache_lens: vec![150, 37, 0][..batch].to_vec(),
        q_lens,
        varlen,
        head_major_pages: seed.is_multiple_of(2),
        shared_prefix_pages: 1,
        spare_pages: 1,
        options,
        alibi: extras,
        gates: extras,
        lse: true,
        entropy: extras,
        // Pages of 13 over 2 KV heads; the lengths above replace the uniform ones.
        ..DecodeCase::uniform(
            dtype,
            head_dim,
            batch,
            2,
            group,
            1,
            13,
            0,
            SplitPolicy::Count(1 + (seed % 4) as u32),
            seed,
        )
    }
}

/// The options the wide tiles run with: causal, none, and causal with a window and a softcap.
fn option_sets() -> [AttnOptions; 3] {
    let causal = AttnOptions {
        causal: true,
        ..AttnOptions::default()
    };
    let windowed = AttnOptions {
        window: Some(SlidingWindow {
            left: Some(40),
            right: None,
        }),
        softcap: Some(12.0),
        ..causal
    };
    [causal, AttnOptions::default(), windowed]
}

/// Plans `c` for its target, asserts its decode entry with `entry_ok`, runs it on the emulator
/// and asserts the outputs match the reference.
fn plan_and_check(c: &DecodeCase, entry_ok: impl Fn(&str) -> bool) {
    let plan = DecodePlan::new_for(c.target, &c.build().problem, c.split).unwrap();
    assert!(entry_ok(plan.decode.entry), "{}", plan.decode.entry);
    let out = run_decode_case(c).unwrap();
    assert!(out.passed(), "{}: {:#?}", c.describe(), out.failures());
}

#[test]
fn wide_tiles_match_the_reference() {
    let mut seed = 100;
    for dtype in [DType::F16, DType::Bf16] {
        for d in [64, 128] {
            // (group, q lens, varlen): 32 rows exactly, 24 (a partial tile), 40 (two tiles),
            // varlen items of 3, 4 and 1 tokens at GQA 8.
            let shapes: [(usize, Vec<usize>, bool); 4] = [
                (8, vec![4, 4], false),
                (8, vec![3, 3], false),
                (5, vec![8, 8], false),
                (8, vec![3, 4, 1], true),
            ];
            for (group, q_lens, varlen) in shapes {
                for (i, o) in option_sets().into_iter().enumerate() {
                    seed += 1;
                    let c = case(dtype, d, group, q_lens.clone(), varlen, o, i == 1, seed);
                    plan_and_check(&c, |entry| entry.ends_with("_r32"));
                }
            }
        }
    }
}

#[test]
fn turing_wide_tiles_match_the_reference() {
    let [causal, _, windowed] = option_sets();
    let shapes: [(usize, Vec<usize>, bool); 3] = [
        (8, vec![4, 4], false),
        (5, vec![8, 8], false),
        (8, vec![3, 4, 1], true),
    ];
    let mut seed = 300;
    for (d, want) in [
        (64, "flashmha_decode_sm75_f16_d64_r32"),
        (128, "flashmha_decode_sm75_f16_d128"),
    ] {
        for (group, q_lens, varlen) in &shapes {
            for (i, o) in [causal, windowed].into_iter().enumerate() {
                seed += 1;
                let c = DecodeCase {
                    target: flashmha::KernelTarget::Turing,
                    ..case(
                        DType::F16,
                        d,
                        *group,
                        q_lens.clone(),
                        *varlen,
                        o,
                        i == 1,
                        seed,
                    )
                };
                plan_and_check(&c, |entry| entry == want);
            }
        }
    }
}

#[test]
fn sixteen_rows_or_fewer_keep_the_narrow_tile() {
    let c = case(
        DType::F16,
        128,
        4,
        vec![4, 4],
        false,
        AttnOptions::default(),
        false,
        1,
    );
    let plan = DecodePlan::new(&c.build().problem, c.split).unwrap();
    assert_eq!(plan.decode.entry, "flashmha_decode_f16_d128");
    assert_eq!(plan.decode.grid[1], 2); // hkv x one 16-row tile
}

#[test]
fn gqa8_by_4_tokens_reads_each_kv_row_once() {
    use flashmha::perf_model::decode::DecodeModelConfig;
    use flashmha::perf_model::decode_bench::{measure, DecodeBenchConfig};
    let c = DecodeBenchConfig {
        shape: DecodeModelConfig {
            dtype: DType::F16,
            head_dim: 128,
            batch: 1,
            num_heads_kv: 2,
            group: 8,
            sq_new: 4,
            page_size: 16,
            cache_len: 512,
        },
        kv_dtype: KvCacheDType::Same,
        num_sms: 108,
    };
    let row = measure(&c).unwrap();
    assert_eq!(row.findings, 0);
    // K and V rows (2 x 128 x 2 bytes) plus the 4-byte block-table entry, once per key per
    // KV head: one CTA per KV head instead of two.
    assert_eq!(row.bytes_per_key, 516.0, "{row:?}");
}
