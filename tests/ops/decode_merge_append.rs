//! The public merge_states kernel (f16 / bf16 states, 2 and N states, rows whose every state is
//! -inf, states with -inf among finite ones) against an f64 host merge, and the KV-append
//! kernel against a host scatter (NHD and HND pools, padding slots < 0 skipped, an out-of-range
//! slot traps).

use flashmha::common::dtype::DType;
use flashmha::emulator::FindingKind;
use flashmha::host::emulated_decode::{kv_append, merge_states};
use flashmha::ops::decode::DecodeProblem;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn merge_states_matches_host_merge(
        bf16 in any::<bool>(),
        num_states in prop_oneof![Just(2usize), 1usize..=40],
        rows in 1usize..=5,
        heads in 1usize..=3,
        d in prop_oneof![Just(64usize), Just(128), Just(8), Just(256)],
        neg_inf_pct in 0u32..60,
        seed in any::<u64>(),
    ) {
        use rand::{Rng, SeedableRng};
        let dtype = if bf16 { DType::Bf16 } else { DType::F16 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = rows * heads;
        let o: Vec<u16> = (0..num_states * n * d).map(|_| dtype.bits_from_f32(rng.random_range(-1.0..1.0))).collect();
        let mut lse: Vec<f32> = (0..num_states * n).map(|_| rng.random_range(-8.0f32..8.0)).collect();
        for x in lse.iter_mut() {
            if rng.random_range(0..100) < neg_inf_pct { *x = f32::NEG_INFINITY; }
        }
        // Row 0 head 0: every state empty.
        for s in 0..num_states { lse[s * n] = f32::NEG_INFINITY; }
        let run = merge_states(dtype, &o, &lse, num_states, rows, heads, d).unwrap();
        prop_assert!(run.report.findings.is_empty(), "{:?}", run.report.findings);
        let u = dtype.unit_roundoff();
        for i in 0..n {
            let ls: Vec<f64> = (0..num_states).map(|s| f64::from(lse[s * n + i])).collect();
            let m = ls.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let (r, h) = (i / heads, i % heads);
            let got_lse = run.lse[h * rows + r];
            if m == f64::NEG_INFINITY {
                prop_assert_eq!(got_lse, f32::NEG_INFINITY);
                for c in 0..d { prop_assert_eq!(run.o[i * d + c], 0, "empty row must be +0"); }
                continue;
            }
            let total: f64 = ls.iter().map(|l| (l - m).exp()).sum();
            prop_assert!((f64::from(got_lse) - (m + total.ln())).abs() < 1e-5, "lse {} vs {}", got_lse, m + total.ln());
            for c in 0..d {
                let want: f64 = (0..num_states)
                    .map(|s| (ls[s] - m).exp() / total * f64::from(dtype.f32_from_bits(o[(s * n + i) * d + c])))
                    .sum();
                let got = f64::from(dtype.f32_from_bits(run.o[i * d + c]));
                // Output rounding (u) plus f32 weights (a few 2^-24), |O| <= 1.
                prop_assert!((got - want).abs() <= 1.5 * u + 1e-5, "o[{}][{}]: {} vs {}", i, c, got, want);
            }
        }
    }

    #[test]
    fn kv_append_writes_exactly_the_mapped_slots(
        page_size in prop_oneof![Just(1usize), Just(3), Just(16), 1usize..=40],
        num_pages in 1usize..=6,
        hkv in 1usize..=3,
        d in prop_oneof![Just(64usize), Just(128), Just(32)],
        head_major in any::<bool>(),
        tokens in 1usize..=12,
        seed in any::<u64>(),
    ) {
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let p = DecodeProblem::contiguous(DType::F16, 1, 1, hkv, hkv, d, num_pages, page_size, 1, head_major);
        let span = p.cache_span(&p.k_strides) as usize;
        let k0: Vec<u16> = (0..span).map(|_| rng.random()).collect();
        let v0: Vec<u16> = (0..span).map(|_| rng.random()).collect();
        let mut slots: Vec<i32> = (0..(num_pages * page_size) as i32).collect();
        slots.shuffle(&mut rng);
        let mut mapping: Vec<i32> = slots.into_iter().take(tokens).collect();
        while mapping.len() < tokens { mapping.push(-1); }
        if tokens > 1 { mapping[tokens - 1] = -1; } // a padding token
        let kn: Vec<u16> = (0..tokens * hkv * d).map(|_| rng.random()).collect();
        let vn: Vec<u16> = (0..tokens * hkv * d).map(|_| rng.random()).collect();
        let (k, v, report) = kv_append(&p, &k0, &v0, &kn, &vn, &mapping).unwrap();
        prop_assert!(report.findings.is_empty(), "{:?}", report.findings);
        let (mut ke, mut ve) = (k0.clone(), v0.clone());
        for (t, &slot) in mapping.iter().enumerate() {
            if slot < 0 { continue; }
            let (page, off) = (slot as usize / page_size, slot as usize % page_size);
            for h in 0..hkv {
                let dst = (page as i64 * p.k_strides.page + off as i64 * p.k_strides.slot + h as i64 * p.k_strides.head) as usize;
                let src = (t * hkv + h) * d;
                ke[dst..dst + d].copy_from_slice(&kn[src..src + d]);
                ve[dst..dst + d].copy_from_slice(&vn[src..src + d]);
            }
        }
        prop_assert!(k == ke && v == ve);
    }
}

#[test]
fn kv_append_out_of_range_slot_traps() {
    let p = DecodeProblem::contiguous(DType::Bf16, 1, 1, 2, 2, 64, 3, 5, 1, false);
    let span = p.cache_span(&p.k_strides) as usize;
    let cache = vec![0u16; span];
    let new = vec![1u16; 2 * 2 * 64];
    let (_, _, report) = kv_append(&p, &cache, &cache, &new, &new, &[4, 15]).unwrap();
    assert!(report.has(FindingKind::Trap), "{:?}", report.findings);
    assert!(report.findings.iter().all(|f| f.kind == FindingKind::Trap));
}
