//! FP8 KV cache in paged decode, beyond the property test: every format x scale granularity x
//! dtype runs on an FP8 entry and matches the reference; the K and V scales really are applied
//! (a run against wrongly scaled reference data fails); pages holding only subnormal codes
//! (every subnormal and zero of the format) dequantise exactly; the special codes (e4m3 NaN
//! 0x7f / 0xff, e5m2 NaN and +-inf) in a visible key make exactly the affected outputs non-finite.

use flashmha::check::decode::{check_run, DecodeCase};
use flashmha::common::dtype::DType;
use flashmha::host::emulated_decode::decode;
use flashmha::ops::decode::{DecodePlan, KvCacheDType, KvScaleGranularity, SplitPolicy};

fn case(
    dtype: DType,
    kv_dtype: KvCacheDType,
    kv_scales: KvScaleGranularity,
    head_dim: usize,
    seed: u64,
) -> DecodeCase {
    DecodeCase {
        cache_lens: vec![77, 130],
        head_major_pages: seed % 2 == 1,
        kv_dtype,
        kv_scales,
        shared_prefix_pages: 1,
        spare_pages: 2,
        lse: true,
        entropy: seed.is_multiple_of(3),
        // Two items of 2 new tokens, GQA 4 over 2 KV heads, pages of 17; causal.
        ..DecodeCase::uniform(
            dtype,
            head_dim,
            2,
            2,
            4,
            2,
            17,
            77,
            SplitPolicy::Count(1 + (seed % 3) as u32),
            seed,
        )
    }
}

const FORMATS: [KvCacheDType; 2] = [KvCacheDType::Fp8E4M3, KvCacheDType::Fp8E5M2];
const GRANULARITIES: [KvScaleGranularity; 2] =
    [KvScaleGranularity::PerTensor, KvScaleGranularity::PerKvHead];

#[test]
fn every_format_granularity_and_dtype_matches_the_reference() {
    let mut seed = 11;
    for dtype in [DType::F16, DType::Bf16] {
        for kv in FORMATS {
            for g in GRANULARITIES {
                for d in [64, 128, 256] {
                    seed += 1;
                    let c = case(dtype, kv, g, d, seed);
                    let built = c.build();
                    let plan = DecodePlan::new(&built.problem, c.split).unwrap();
                    assert!(plan.decode.entry.contains("_fp8_"), "{}", plan.decode.entry);
                    let run = decode(&plan, &built.inputs).unwrap();
                    let failures = check_run(&built, &run);
                    assert!(failures.is_empty(), "{}: {failures:#?}", c.describe());
                }
            }
        }
    }
}

#[test]
fn the_k_and_v_scales_are_applied() {
    for kv in FORMATS {
        let c = case(DType::F16, kv, KvScaleGranularity::PerKvHead, 128, 5);
        let built = c.build();
        let plan = DecodePlan::new(&built.problem, c.split).unwrap();
        let run = decode(&plan, &built.inputs).unwrap();
        assert!(check_run(&built, &run).is_empty());
        // The same kernel output judged against a reference whose scales differ (head 1's K
        // scale, then head 0's V scale, doubled) must fail.
        let mut wrong_k = c.build();
        wrong_k.inputs.k_scales[1] *= 2.0;
        assert!(
            !check_run(&wrong_k, &run).is_empty(),
            "{kv:?}: K scale ignored"
        );
        let mut wrong_v = c.build();
        wrong_v.inputs.v_scales[0] *= 2.0;
        assert!(
            !check_run(&wrong_v, &run).is_empty(),
            "{kv:?}: V scale ignored"
        );
    }
}

#[test]
fn subnormal_codes_dequantise_exactly() {
    for kv in FORMATS {
        for dtype in [DType::F16, DType::Bf16] {
            let c = case(dtype, kv, KvScaleGranularity::PerTensor, 64, 9);
            let mut built = c.build();
            // Every used code becomes a subnormal or zero (exponent field 0) of either sign;
            // the NaN code 0x7f of unused slots stays.
            let mantissa_mask = if kv == KvCacheDType::Fp8E4M3 {
                0x87
            } else {
                0x83
            };
            for pool in [&mut built.inputs.k_cache_fp8, &mut built.inputs.v_cache_fp8] {
                for x in pool.iter_mut() {
                    if *x != 0x7f {
                        *x &= mantissa_mask;
                    }
                }
            }
            // Scales large enough that subnormal keys still shape the softmax.
            let s = if kv == KvCacheDType::Fp8E4M3 {
                300.0
            } else {
                5000.0
            };
            built.inputs.k_scales = vec![s];
            built.inputs.v_scales = vec![s];
            let plan = DecodePlan::new(&built.problem, c.split).unwrap();
            let run = decode(&plan, &built.inputs).unwrap();
            let failures = check_run(&built, &run);
            assert!(failures.is_empty(), "{kv:?} {dtype:?}: {failures:#?}");
        }
    }
}

/// Plants `code` at element `c` of key `key` of item 0 (KV head 0) in the K or V pool and
/// returns which output elements are non-finite afterwards, as (row, q head, column).
fn non_finite_outputs(kv: KvCacheDType, in_v: bool, code: u8) -> Vec<(usize, usize, usize)> {
    let mut c = case(DType::F16, kv, KvScaleGranularity::PerTensor, 64, 4);
    c.split = SplitPolicy::Count(1);
    c.shared_prefix_pages = 0; // only item 0 holds the planted page
    let mut built = c.build();
    let p = &built.problem;
    let (key, col) = (5usize, 3usize);
    let strides = if in_v { p.v_strides } else { p.k_strides };
    let page = built.inputs.block_table[key / p.page_size] as i64;
    let o = (page * strides.page + (key % p.page_size) as i64 * strides.slot) as usize + col;
    if in_v {
        built.inputs.v_cache_fp8[o] = code;
    } else {
        built.inputs.k_cache_fp8[o] = code;
    }
    let plan = DecodePlan::new(&built.problem, c.split).unwrap();
    let run = decode(&plan, &built.inputs).unwrap();
    assert!(run.findings().is_empty(), "{:?}", run.findings());
    let (hq, d) = (p.num_heads_q, p.head_dim);
    let sq = 2;
    let mut bad = Vec::new();
    for r in 0..p.batch * sq {
        for h in 0..hq {
            for x in 0..d {
                let off = (r / sq) as i64 * p.o_strides.batch
                    + (r % sq) as i64 * p.o_strides.row
                    + h as i64 * p.o_strides.head
                    + x as i64;
                if !p.dtype.f32_from_bits(run.o[off as usize]).is_finite() {
                    bad.push((r, h, x));
                }
            }
        }
    }
    bad
}

#[test]
fn special_codes_reach_exactly_the_outputs_that_see_them() {
    let group = 4;
    // Item 0's two query rows see key 5 (causal, 77 keys); KV head 0 serves q heads 0..3.
    let rows_heads: Vec<(usize, usize)> = (0..2)
        .flat_map(|r| (0..group).map(move |h| (r, h)))
        .collect();
    // (format, NaN codes, infinities). An infinite K element gives a +inf or -inf score
    // depending on q's sign (a -inf score is a masked key), so K gets the NaN codes only.
    let specials: [(KvCacheDType, &[u8], &[u8]); 2] = [
        (KvCacheDType::Fp8E4M3, &[0x7f, 0xff], &[]),
        (KvCacheDType::Fp8E5M2, &[0x7d, 0xfe], &[0x7c, 0xfc]),
    ];
    // Both cases reach every column of the rows that see the key, and nothing else.
    let want: Vec<_> = rows_heads
        .iter()
        .flat_map(|&(r, h)| (0..64).map(move |x| (r, h, x)))
        .collect();
    for (kv, nans, infs) in specials {
        // In K (the NaN codes): every column of the rows that see the key becomes NaN. In V
        // (NaN and infinite codes): the rows that see the key get a NaN LSE (a NaN or inf in O
        // reaches the row statistics, so no merge can drop it), and decode's cross-warp state
        // merge weights every column by it.
        let k_codes = nans.iter().map(|&c| (false, c));
        let v_codes = nans.iter().chain(infs).map(|&c| (true, c));
        for (in_v, code) in k_codes.chain(v_codes) {
            let bad = non_finite_outputs(kv, in_v, code);
            let operand = if in_v { "V" } else { "K" };
            assert!(
                bad == want,
                "{kv:?} {operand} code {code:#x}: {} non-finite",
                bad.len()
            );
        }
    }
}

/// A host scale of 0, NaN, +-inf or below 0 is a typed error naming the buffer and the index,
/// before anything is uploaded or launched, in the decode and in the append (before, they ran
/// and gave O = 0 or NaN codes silently); the valid scales of the same case run.
#[test]
fn invalid_host_scales_are_typed_errors_in_decode_and_append() {
    use flashmha::common::error::{Error, TensorName};
    use flashmha::host::emulated_decode::{kv_append_into_for, AppendTarget, HostPools};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let bad = [
        0.0f32,
        -0.0,
        -1.5,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    for kv in FORMATS {
        let c = case(
            DType::F16,
            kv,
            KvScaleGranularity::PerKvHead,
            128,
            rng.random(),
        );
        let built = c.build();
        let plan = DecodePlan::new(&built.problem, c.split).unwrap();
        assert!(decode(&plan, &built.inputs).is_ok());
        let value = bad[rng.random_range(0..bad.len())];
        let head = rng.random_range(0..built.inputs.k_scales.len());
        for tensor in [TensorName::KScales, TensorName::VScales] {
            let mut inputs = built.inputs.clone();
            let scales = if tensor == TensorName::KScales {
                &mut inputs.k_scales
            } else {
                &mut inputs.v_scales
            };
            scales[head] = value;
            match decode(&plan, &inputs) {
                Err(Error::InvalidScale {
                    tensor: t, index, ..
                }) => assert_eq!((t, index), (tensor, head), "{kv:?}"),
                Err(e) => panic!("{kv:?} {value}: {e}"),
                Ok(_) => panic!("{kv:?}: {tensor} = {value} was accepted"),
            }
            // The append quantises with the same scales: the same rule.
            let p = &built.problem;
            let rows = p.num_heads_kv * p.head_dim;
            let new: Vec<u16> = (0..rows)
                .map(|_| half::f16::from_f32(rng.random_range(-4.0..4.0)).to_bits())
                .collect();
            let pools = HostPools::Fp8 {
                k: built.inputs.k_cache_fp8.clone(),
                v: built.inputs.v_cache_fp8.clone(),
                k_scales: if tensor == TensorName::KScales {
                    inputs.k_scales.clone()
                } else {
                    built.inputs.k_scales.clone()
                },
                v_scales: if tensor == TensorName::VScales {
                    inputs.v_scales.clone()
                } else {
                    built.inputs.v_scales.clone()
                },
            };
            let slot = [rng.random_range(0..(p.num_pages * p.page_size) as i32)];
            let appended = kv_append_into_for(
                flashmha::KernelTarget::Ampere,
                p,
                &pools,
                &new,
                &new,
                AppendTarget::Slots(&slot),
            );
            assert!(
                matches!(appended, Err(Error::InvalidScale { tensor: t, index, .. }) if t == tensor && index == head),
                "{kv:?} {tensor} = {value}: {:?}",
                appended.map(|_| ())
            );
        }
    }
}
