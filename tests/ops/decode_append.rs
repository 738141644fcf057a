//! KV append into 16-bit and FP8 pages, through a slot mapping or through block table +
//! position, against a host scatter that quantises with the host FP8 codec (nearest, ties to
//! the even code, saturating, NaN kept: src/ops/decode/fp8.rs) of `x / scale` computed in f32; and
//! every planted out-of-range device index (slot, batch item, position, block-table entry) traps
//! without any out-of-bounds access. The Turing append (compute_75, f16 into 16-bit pages)
//! writes the same pools and traps the same way; bf16 and FP8 pages there are typed errors.

use flashmha::common::dtype::DType;
use flashmha::common::error::Error;
use flashmha::emulator::FindingKind;
use flashmha::host::emulated_decode::{kv_append_into_for, AppendTarget, HostPools};
use flashmha::ops::decode::{DecodeProblem, KvCacheDType, KvScaleGranularity};
use flashmha::KernelTarget;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Values that exercise rounding ties (with scale 1), saturation, the specials and the
/// subnormal ranges of both formats; all exact in f16 and bf16 except where rounding to the
/// source type is part of the point.
const SPECIAL_VALUES: [f32; 16] = [
    0.0,
    -0.0,
    1.0625, // e4m3 tie between 1 and 1.125
    1.1875, // e4m3 tie between 1.125 and 1.25
    1.125,  // e5m2 tie between 1 and 1.25
    448.0,
    464.0, // e4m3: rounds past the max, saturates
    -60000.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    0.0009765625,   // 2^-10: half the e4m3 subnormal step
    0.0029296875,   // 3 x 2^-10: e4m3 subnormal tie
    7.629_394_5e-6, // 2^-17: half the e5m2 subnormal step
    0.015625,       // 2^-6: the smallest e4m3 normal
    -0.5,
];

struct AppendCase {
    problem: DecodeProblem,
    pools: HostPools,
    k_new: Vec<u16>,
    v_new: Vec<u16>,
    /// (item, position) of every token, or None for a padding token.
    dest: Vec<Option<(usize, usize)>>,
    block_table: Vec<i32>,
    by_position: bool,
}

#[allow(clippy::too_many_arguments)]
fn build(
    dtype: DType,
    kv: KvCacheDType,
    granularity: KvScaleGranularity,
    page_size: usize,
    hkv: usize,
    d: usize,
    head_major: bool,
    tokens: usize,
    by_position: bool,
    unit_scale: bool,
    seed: u64,
) -> AppendCase {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let batch = 3;
    let max_pages_per_seq = 3;
    let num_pages = batch * max_pages_per_seq + 2;
    let mut problem = DecodeProblem::contiguous(
        dtype,
        batch,
        1,
        hkv,
        hkv,
        d,
        num_pages,
        page_size,
        max_pages_per_seq,
        head_major,
    );
    problem.kv_dtype = kv;
    problem.kv_scales = granularity;
    // Every item owns max_pages_per_seq distinct pages, shuffled over the pool.
    let mut pages: Vec<i32> = (0..num_pages as i32).collect();
    pages.shuffle(&mut rng);
    let block_table: Vec<i32> = pages[..batch * max_pages_per_seq].to_vec();
    // Distinct destinations (two tokens never share a slot), a padding token now and then.
    let mut all: Vec<(usize, usize)> = (0..batch)
        .flat_map(|b| (0..max_pages_per_seq * page_size).map(move |p| (b, p)))
        .collect();
    all.shuffle(&mut rng);
    let dest: Vec<Option<(usize, usize)>> = (0..tokens)
        .map(|t| {
            if t % 5 == 4 {
                None
            } else {
                all.get(t).copied()
            }
        })
        .collect();
    let span = problem.cache_span(&problem.k_strides) as usize;
    let value = |rng: &mut rand::rngs::StdRng| {
        if rng.random_range(0..4) == 0 {
            SPECIAL_VALUES[rng.random_range(0..SPECIAL_VALUES.len())]
        } else {
            rng.random_range(-3.0f32..3.0)
        }
    };
    let rows = tokens * hkv * d;
    let k_new: Vec<u16> = (0..rows)
        .map(|_| dtype.bits_from_f32(value(&mut rng)))
        .collect();
    let v_new: Vec<u16> = (0..rows)
        .map(|_| dtype.bits_from_f32(value(&mut rng)))
        .collect();
    let pools = if kv.is_fp8() {
        let n = granularity.len(hkv);
        let scale = |rng: &mut rand::rngs::StdRng| {
            if unit_scale {
                1.0
            } else {
                rng.random_range(0.001f32..0.1)
            }
        };
        HostPools::Fp8 {
            k: (0..span).map(|_| rng.random()).collect(),
            v: (0..span).map(|_| rng.random()).collect(),
            k_scales: (0..n).map(|_| scale(&mut rng)).collect(),
            v_scales: (0..n).map(|_| scale(&mut rng)).collect(),
        }
    } else {
        HostPools::Bits16 {
            k: (0..span).map(|_| rng.random()).collect(),
            v: (0..span).map(|_| rng.random()).collect(),
        }
    };
    AppendCase {
        problem,
        pools,
        k_new,
        v_new,
        dest,
        block_table,
        by_position,
    }
}

impl AppendCase {
    fn slot(&self, b: usize, pos: usize) -> usize {
        let p = &self.problem;
        self.block_table[b * p.block_table_stride + pos / p.page_size] as usize * p.page_size
            + pos % p.page_size
    }
    fn slots(&self) -> Vec<i32> {
        self.dest
            .iter()
            .map(|d| d.map_or(-1, |(b, pos)| self.slot(b, pos) as i32))
            .collect()
    }
    fn token_batch(&self) -> Vec<i32> {
        self.dest
            .iter()
            .map(|d| d.map_or(0, |x| x.0 as i32))
            .collect()
    }
    fn token_pos(&self) -> Vec<i32> {
        self.dest
            .iter()
            .map(|d| d.map_or(-1, |x| x.1 as i32))
            .collect()
    }

    /// The pools after a host scatter (and quantisation) of the new rows.
    fn expected(&self) -> HostPools {
        let p = &self.problem;
        let (hkv, d) = (p.num_heads_kv, p.head_dim);
        let mut out = self.pools.clone();
        for (t, dest) in self.dest.iter().enumerate() {
            let Some((b, pos)) = *dest else { continue };
            let slot = self.slot(b, pos);
            let (page, off) = (slot / p.page_size, slot % p.page_size);
            for h in 0..hkv {
                let dst = (page as i64 * p.k_strides.page
                    + off as i64 * p.k_strides.slot
                    + h as i64 * p.k_strides.head) as usize;
                let src = (t * hkv + h) * d;
                match &mut out {
                    HostPools::Bits16 { k, v } => {
                        k[dst..dst + d].copy_from_slice(&self.k_new[src..src + d]);
                        v[dst..dst + d].copy_from_slice(&self.v_new[src..src + d]);
                    }
                    HostPools::Fp8 {
                        k,
                        v,
                        k_scales,
                        v_scales,
                    } => {
                        let si = h * p.kv_scales.stride() as usize;
                        for c in 0..d {
                            let x = p.dtype.f32_from_bits(self.k_new[src + c]);
                            k[dst + c] = p.kv_dtype.encode(x / k_scales[si]);
                            let x = p.dtype.f32_from_bits(self.v_new[src + c]);
                            v[dst + c] = p.kv_dtype.encode(x / v_scales[si]);
                        }
                    }
                }
            }
        }
        out
    }

    fn run(
        &self,
        slots: &[i32],
        token_batch: &[i32],
        token_pos: &[i32],
        block_table: &[i32],
    ) -> (HostPools, flashmha::emulator::LaunchReport) {
        let target = if self.by_position {
            AppendTarget::Positions {
                block_table,
                token_batch,
                token_pos,
            }
        } else {
            AppendTarget::Slots(slots)
        };
        let (p, pools) = (&self.problem, &self.pools);
        kv_append_into_for(
            KernelTarget::Ampere,
            p,
            pools,
            &self.k_new,
            &self.v_new,
            target,
        )
        .unwrap()
    }

    fn run_clean(&self) -> (HostPools, flashmha::emulator::LaunchReport) {
        self.run(
            &self.slots(),
            &self.token_batch(),
            &self.token_pos(),
            &self.block_table,
        )
    }
}

fn kv_type() -> impl Strategy<Value = KvCacheDType> {
    prop_oneof![
        Just(KvCacheDType::Same),
        Just(KvCacheDType::Fp8E4M3),
        Just(KvCacheDType::Fp8E5M2)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn append_matches_host_scatter(
        bf16 in any::<bool>(),
        kv in kv_type(),
        per_head in any::<bool>(),
        page_size in prop_oneof![Just(1usize), Just(3), Just(16), 1usize..=40],
        hkv in 1usize..=3,
        d in prop_oneof![Just(64usize), Just(128), Just(32), Just(16)],
        head_major in any::<bool>(),
        tokens in 1usize..=12,
        by_position in any::<bool>(),
        unit_scale in prop::bool::weighted(0.3),
        seed in any::<u64>(),
    ) {
        let dtype = if bf16 { DType::Bf16 } else { DType::F16 };
        let g = if per_head { KvScaleGranularity::PerKvHead } else { KvScaleGranularity::PerTensor };
        let case = build(dtype, kv, g, page_size, hkv, d, head_major, tokens, by_position, unit_scale, seed);
        let (got, report) = case.run_clean();
        prop_assert!(report.findings.is_empty(), "{:?}", report.findings);
        prop_assert!(got == case.expected(), "{kv:?} {dtype:?} by_position {by_position}: pools differ");
        // Not vacuous: the scatter changed the pools (the first token is never padding).
        prop_assert!(got != case.pools, "nothing was written");
    }
}

#[test]
fn turing_append_writes_the_same_pools_and_traps() {
    let turing = KernelTarget::Turing;
    let g = KvScaleGranularity::PerTensor;
    for (seed, by_position) in [(60u64, false), (61, true)] {
        let case = build(
            DType::F16,
            KvCacheDType::Same,
            g,
            7,
            2,
            64,
            by_position,
            9,
            by_position,
            false,
            seed,
        );
        let (slots, tb, tp) = (case.slots(), case.token_batch(), case.token_pos());
        let run = |slots: &[i32], tp: &[i32]| {
            let target = if by_position {
                AppendTarget::Positions {
                    block_table: &case.block_table,
                    token_batch: &tb,
                    token_pos: tp,
                }
            } else {
                AppendTarget::Slots(slots)
            };
            kv_append_into_for(
                turing,
                &case.problem,
                &case.pools,
                &case.k_new,
                &case.v_new,
                target,
            )
            .unwrap()
        };
        let (got, report) = run(&slots, &tp);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert!(
            got == case.expected(),
            "by_position {by_position}: pools differ"
        );
        assert!(got != case.pools, "nothing was written");
        // A destination past the pool traps, with no out-of-bounds access.
        let limit = (case.problem.max_pages_per_seq * case.problem.page_size) as i32;
        let (mut bad_slots, mut bad_tp) = (slots.clone(), tp.clone());
        bad_slots[1] = (case.problem.num_pages * case.problem.page_size) as i32;
        bad_tp[1] = limit;
        let (_, report) = run(&bad_slots, &bad_tp);
        assert!(report.has(FindingKind::Trap), "{:?}", report.findings);
        assert!(
            report.findings.iter().all(|f| f.kind == FindingKind::Trap),
            "{:?}",
            report.findings
        );
    }
    // bf16 and FP8 pages: typed errors before any launch.
    let bf16 = build(
        DType::Bf16,
        KvCacheDType::Same,
        g,
        7,
        2,
        64,
        false,
        3,
        false,
        false,
        62,
    );
    let fp8 = build(
        DType::F16,
        KvCacheDType::Fp8E4M3,
        g,
        7,
        2,
        64,
        false,
        3,
        false,
        false,
        63,
    );
    for (case, want_dtype_error) in [(&bf16, true), (&fp8, false)] {
        let slots = case.slots();
        let r = kv_append_into_for(
            turing,
            &case.problem,
            &case.pools,
            &case.k_new,
            &case.v_new,
            AppendTarget::Slots(&slots),
        );
        match r {
            Err(Error::UnsupportedDType { target, .. }) if want_dtype_error => {
                assert_eq!(target, turing)
            }
            Err(Error::UnsupportedOnTarget { target, .. }) if !want_dtype_error => {
                assert_eq!(target, turing)
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}

fn assert_traps(case: &AppendCase, slots: &[i32], tb: &[i32], tp: &[i32], bt: &[i32]) {
    let (_, report) = case.run(slots, tb, tp, bt);
    assert!(report.has(FindingKind::Trap), "{:?}", report.findings);
    assert!(
        report.findings.iter().all(|f| f.kind == FindingKind::Trap),
        "only traps: {:?}",
        report.findings
    );
}

#[test]
fn planted_out_of_range_indices_trap() {
    for (i, kv) in [
        KvCacheDType::Same,
        KvCacheDType::Fp8E4M3,
        KvCacheDType::Fp8E5M2,
    ]
    .into_iter()
    .enumerate()
    {
        let g = KvScaleGranularity::PerKvHead;
        let seed = 40 + i as u64;
        // Slot mapping: a slot at the end of the pool.
        let case = build(DType::F16, kv, g, 5, 2, 64, false, 6, false, false, seed);
        assert!(case.run_clean().1.findings.is_empty());
        let mut slots = case.slots();
        slots[1] = (case.problem.num_pages * case.problem.page_size) as i32;
        assert_traps(&case, &slots, &[], &[], &[]);
        // Block table + position.
        let case = build(DType::Bf16, kv, g, 5, 2, 64, true, 6, true, false, seed);
        assert!(case.run_clean().1.findings.is_empty());
        let (tb, tp, bt) = (
            case.token_batch(),
            case.token_pos(),
            case.block_table.clone(),
        );
        let limit = (case.problem.max_pages_per_seq * case.problem.page_size) as i32;
        for bad in [3, -1, i32::MAX] {
            let mut x = tb.clone();
            x[0] = bad; // batch is 3
            assert_traps(&case, &[], &x, &tp, &bt);
        }
        let mut x = tp.clone();
        x[2] = limit;
        assert_traps(&case, &[], &tb, &x, &bt);
        // A block-table entry that token 0 uses, out of range either way.
        let (b0, p0) = case.dest[0].unwrap();
        for bad in [-1, case.problem.num_pages as i32, i32::MIN] {
            let mut x = bt.clone();
            x[b0 * case.problem.block_table_stride + p0 / case.problem.page_size] = bad;
            assert_traps(&case, &[], &tb, &tp, &x);
        }
    }
}
