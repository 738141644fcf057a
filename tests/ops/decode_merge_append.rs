//! The public merge_states kernel (f16 / bf16 states, 2 and N states, rows whose every state is
//! -inf, states with -inf among finite ones) against an f64 host merge, and the KV-append
//! kernel against a host scatter (NHD and HND pools, padding slots < 0 skipped, an out-of-range
//! slot traps). NaN propagation: a NaN in a decode input reaches its rows' O and LSE through the
//! cross-warp merge and the split combine, and survives merge_states.

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
        d in prop_oneof![Just(64usize), Just(128), Just(8), Just(256), Just(72), Just(112), Just(200)],
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
        d in prop_oneof![Just(64usize), Just(128), Just(32), Just(72), Just(112), Just(200)],
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// NaN propagation (src/common/options.rs) in paged decode: a NaN planted at a random position of a
    /// random query row's q, or of the k or v of a random cached key, makes every row that sees
    /// it (that row; every row of the key's KV-head group whose mask lets the key in) end with a
    /// NaN LSE written by the kernel and a NaN in its O, through the warps' merge and, with
    /// several splits, the split combine; rows of the other KV heads stay finite. Merged with a
    /// finite state by merge_states, each such row is NaN in O and LSE.
    #[test]
    fn a_nan_in_decode_q_k_or_v_reaches_the_rows_o_and_lse_and_survives_merge_states(
        turing in prop::bool::weighted(0.25),
        bf16 in any::<bool>(),
        d in prop_oneof![Just(64usize), Just(128)],
        batch in 1usize..=2,
        hkv in 1usize..=2,
        group in 1usize..=4,
        sq_new in 1usize..=3,
        cache_len in 1usize..=300,
        page_size in prop_oneof![Just(1usize), Just(16), 1usize..=40],
        causal in any::<bool>(),
        splits in 1u32..=6,
        operand in 0usize..3,
        seed in any::<u64>(),
    ) {
        use flashmha::check::decode::DecodeCase;
        use flashmha::host::emulated_decode::decode;
        use flashmha::ops::decode::{DecodePlan, SplitPolicy};
        use flashmha::host::POISON_U16;
        use flashmha::KernelTarget;
        use rand::{Rng, SeedableRng};
        // Turing serves f16 (d64 and d128 among its dims).
        let target = if turing { KernelTarget::Turing } else { KernelTarget::Ampere };
        let dtype = if bf16 && !turing { DType::Bf16 } else { DType::F16 };
        let cache_len = cache_len.max(sq_new); // every row sees key 0
        let mut case = DecodeCase::uniform(
            dtype, d, batch, hkv, group, sq_new, page_size, cache_len, SplitPolicy::Count(splits), seed,
        );
        case.target = target;
        case.options.causal = causal;
        case.lse = true;
        let built = case.build();
        let (p, mut inputs) = (built.problem, built.inputs);
        let hq = hkv * group;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        let nan = dtype.bits_from_f32(f32::NAN);
        let b = rng.random_range(0..batch);
        let sees = |i: usize, j: usize| !causal || j + sq_new <= i + cache_len;
        // Rows (item b, query i, head h) the NaN reaches, and the KV head it is planted in.
        let (affected, kv_head): (Vec<(usize, usize)>, usize) = match operand {
            0 => {
                let (i, h, c) = (rng.random_range(0..sq_new), rng.random_range(0..hq), rng.random_range(0..d));
                let at = b as i64 * p.q_strides.batch + i as i64 * p.q_strides.row + h as i64 * p.q_strides.head;
                inputs.q[at as usize + c] = nan;
                (vec![(i, h)], h / group)
            }
            _ => {
                let (j, g, c) = (rng.random_range(0..cache_len), rng.random_range(0..hkv), rng.random_range(0..d));
                let page = inputs.block_table[b * p.block_table_stride + j / page_size] as i64;
                let s = if operand == 1 { p.k_strides } else { p.v_strides };
                let at = page * s.page + (j % page_size) as i64 * s.slot + g as i64 * s.head;
                let x = if operand == 1 { &mut inputs.k_cache } else { &mut inputs.v_cache };
                x[at as usize + c] = nan;
                let rows = crate::emulator_support::rows_of_group(sq_new, g, group, |i| sees(i, j));
                (rows, g)
            }
        };
        prop_assert!(!affected.is_empty(), "the last row sees every key");
        let plan = DecodePlan::new_for(target, &p, SplitPolicy::Count(splits)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let run = decode(&plan, &inputs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(run.findings().is_empty(), "{:?}", run.findings());
        let lse = run.lse.clone().expect("lse requested"); // [b, hq, sq_new]
        let lse_at = |bb: usize, h: usize, i: usize| lse[(bb * hq + h) * sq_new + i];
        let row_o = |o: &[u16], r: usize, h: usize| -> Vec<u16> { o[(r * hq + h) * d..][..d].to_vec() }; // [rows, hq, d]
        let written_nan16 = |x: u16| dtype.f32_from_bits(x).is_nan() && x != POISON_U16;
        let what = ["q", "k", "v"][operand];
        for &(i, h) in &affected {
            let l = lse_at(b, h, i);
            prop_assert!(l.is_nan() && l.to_bits() != u32::MAX, "{what}: lse[{b}][{h}][{i}] = {l} ({:#x}), {} splits", l.to_bits(), plan.num_splits);
            prop_assert!(row_o(&run.o, b * sq_new + i, h).into_iter().any(written_nan16), "{what}: O row ({b}, {i}, {h}) has no NaN");
        }
        for (bb, i, h) in (0..batch).flat_map(|bb| (0..sq_new).flat_map(move |i| (0..hq).map(move |h| (bb, i, h)))) {
            if bb == b && h / group == kv_head { continue; }
            prop_assert!(lse_at(bb, h, i).is_finite(), "{what}: untouched row lse[{bb}][{h}][{i}] = {}", lse_at(bb, h, i));
            prop_assert!(row_o(&run.o, bb * sq_new + i, h).iter().all(|&x| dtype.f32_from_bits(x).is_finite()));
        }

        // merge_states with a finite state: rows = batch x sq_new, [2, rows, hq, d], LSE [2, rows, hq].
        let rows = batch * sq_new;
        let mut o_states = run.o.clone();
        o_states.extend((0..rows * hq * d).map(|_| dtype.bits_from_f32(rng.random_range(-1.0..1.0))));
        let mut lse_states: Vec<f32> = (0..rows * hq).map(|n| {
            let (r, h) = (n / hq, n % hq);
            lse_at(r / sq_new, h, r % sq_new)
        }).collect();
        lse_states.extend((0..rows * hq).map(|_| rng.random_range(-8.0f32..8.0)));
        let merged = merge_states(dtype, &o_states, &lse_states, 2, rows, hq, d)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(merged.report.findings.is_empty(), "{:?}", merged.report.findings);
        for &(i, h) in &affected {
            let r = b * sq_new + i;
            let l = merged.lse[h * rows + r];
            // merge() poisons its LSE (all bits set); the kernel's NaN is another pattern.
            prop_assert!(l.is_nan() && l.to_bits() != flashmha::host::POISON_F32_BITS, "{what}: merged lse = {l}");
            prop_assert!(row_o(&merged.o, r, h).into_iter().all(written_nan16), "{what}: merged O row ({r}, {h}) not all NaN");
        }
    }
}
