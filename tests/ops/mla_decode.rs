//! MLA decode (issue 23 item 3) on the emulator against the candle reference over the gathered
//! pages (src/check/mla.rs): random cases (page tables, lengths, NaN in every unread slot and
//! spare page, masks, modifiers, sinks, varlen, split policies), 1 vs many splits, and a bad
//! device-resident length trapping. Cases are small (16-32 heads, caches of at most 80 keys):
//! each 16-key block of a 32-row tile is 272 mma on the emulator.

use crate::emulator_support::{rng, seed};
use flashmha::check::mla::{random_case, run_case};
use flashmha::ops::decode::SplitPolicy;

#[test]
fn mla_decode_matches_the_reference_on_random_cases() {
    let mut rng = rng(seed());
    for _ in 0..3 {
        let mut case = random_case(&mut rng, &[16, 32], 80);
        case.spare_pages = case.spare_pages.max(1); // NaN pages nobody may read
        let out = run_case(&case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
        assert!(
            out.judgement.passed(),
            "{:?}\n{case:?}",
            out.judgement.failures()
        );
        assert!(out.judgement.output("o").is_some());
    }
}

#[test]
fn mla_decode_split_counts_agree() {
    let mut rng = rng(seed());
    let mut case = random_case(&mut rng, &[16], 8);
    case.cache_lens = vec![150, 70];
    case.q_lens = vec![1, 1];
    case.varlen = false;
    case.lse = true;
    case.split = SplitPolicy::Count(1);
    let one = run_case(&case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
    case.split = SplitPolicy::Count(3);
    let many = run_case(&case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
    assert_eq!(one.plan.num_splits, 1);
    assert_eq!(many.plan.num_splits, 3);
    assert!(many.plan.combine.is_some());
    for out in [&one, &many] {
        assert!(
            out.judgement.passed(),
            "{:?}\n{case:?}",
            out.judgement.failures()
        );
    }
    // Each within the judge's tolerance of the reference, so of each other: compare directly
    // too (the bf16 / f16 output rounding of two different merge orders).
    let dtype = case.dtype;
    let max_diff = one
        .run
        .o
        .iter()
        .zip(&many.run.o)
        .map(|(&a, &b)| (dtype.f32_from_bits(a) - dtype.f32_from_bits(b)).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 2e-2, "1 vs 3 splits differ by {max_diff}");
}

/// A clean run, then the same run with `mutate`d device data: the MLA kernel traps and reports
/// no out-of-bounds access before the trap.
fn assert_traps(mutate: impl Fn(&mut flashmha::host::emulated_decode::DecodeHostInputs)) {
    use flashmha::backend::emulator::EmulatorBackend;
    use flashmha::check::mla::mla_problem;
    use flashmha::emulator::FindingKind;
    use flashmha::host::runner;
    use flashmha::ops::mla_decode::MlaDecodePlan;
    use flashmha::KernelTarget;
    let mut rng = rng(seed());
    let mut case = random_case(&mut rng, &[16], 8);
    case.cache_lens = vec![70, 33];
    case.q_lens = vec![1, 1];
    case.varlen = false;
    case.page_size = 16; // item 0's page 2 holds its keys 32..47
    case.shared_prefix_pages = 0;
    case.split = SplitPolicy::Count(2);
    let mut built = case.build();
    let plan = MlaDecodePlan::new_for(
        KernelTarget::Ampere,
        &mla_problem(&built.problem),
        case.split,
    )
    .unwrap();
    let be = || EmulatorBackend::new(KernelTarget::Ampere);
    let clean = runner::mla_decode(&be(), &plan, &built.inputs).unwrap();
    assert!(clean.findings().is_empty(), "{:?}", clean.findings());
    mutate(&mut built.inputs);
    let run = runner::mla_decode(&be(), &plan, &built.inputs).unwrap();
    let f = &run.decode_report.findings;
    assert!(run.decode_report.has(FindingKind::Trap), "{f:?}");
    assert!(f.iter().all(|f| f.kind == FindingKind::Trap), "{f:?}");
}

#[test]
fn mla_decode_traps_on_bad_device_indices() {
    // A page past the pool (item 0's page 2: keys 32..47 of its 70), a negative page.
    assert_traps(|i| i.block_table[2] = i32::MAX);
    assert_traps(|i| i.block_table[2] = -1);
    // A cache length beyond the block table.
    assert_traps(|i| i.cache_seqlens[1] = 1 << 20);
    assert_traps(|i| i.cache_seqlens[0] = -5);
}

#[test]
fn mla_decode_api_refuses_bad_buffers_before_any_launch() {
    use flashmha::api::{mla_decode, DecodeArgs};
    use flashmha::backend::{emulator::EmulatorBackend, Backend};
    use flashmha::ops::mla_decode::{MlaDecodePlan, MlaDecodeProblem, MLA_D_QK, MLA_D_V};
    use flashmha::{DType, Error, KernelTarget};
    use half::bf16;
    let be = EmulatorBackend::new(KernelTarget::Ampere);
    let s = be.stream().unwrap();
    let p = MlaDecodeProblem::contiguous(DType::Bf16, 2, 1, 16, 4, 64, 2);
    let plan = MlaDecodePlan::new_for(be.target(), &p, SplitPolicy::Count(2)).unwrap();
    let q = be.upload(&s, &vec![bf16::ONE; 2 * 16 * MLA_D_QK]).unwrap();
    let kv = be.upload(&s, &vec![bf16::ONE; 4 * 64 * MLA_D_QK]).unwrap();
    let table = be.upload(&s, &[0i32, 1, 2, 3]).unwrap();
    let lens = be.upload(&s, &[100i32, 64]).unwrap();
    let poison = bf16::from_f32(-7.0);
    let mut o = be.upload(&s, &vec![poison; 2 * 16 * MLA_D_V]).unwrap();
    // The plan splits: no workspace is a typed error and nothing is written.
    let args = DecodeArgs::mla(&q, &kv, &mut o, &table, &lens);
    assert!(matches!(
        mla_decode(&be, &s, &plan, args),
        Err(Error::MissingBuffer { .. })
    ));
    assert!(be.download(&s, &o).unwrap().iter().all(|&x| x == poison));
    // A short o: typed error.
    let mut short = be.upload(&s, &vec![poison; 2 * 16 * MLA_D_V - 1]).unwrap();
    let mut ws = be
        .alloc_zeros::<f32>(&s, plan.workspace.elems() as usize)
        .unwrap();
    let args = DecodeArgs::mla(&q, &kv, &mut short, &table, &lens).workspace(&mut ws);
    assert!(mla_decode(&be, &s, &plan, args).is_err());
    // FP8 codes for a 16-bit plan: a typed error.
    let codes = be.upload(&s, &vec![0u8; 4 * 64 * MLA_D_QK]).unwrap();
    let scale = be.upload(&s, &[1.0f32]).unwrap();
    let args = DecodeArgs::mla_fp8(&q, &codes, &scale, &mut o, &table, &lens).workspace(&mut ws);
    assert!(matches!(
        mla_decode(&be, &s, &plan, args),
        Err(Error::KvPoolMismatch { .. })
    ));
    // All ones: every head's O is the value row, 1.
    let args = DecodeArgs::mla(&q, &kv, &mut o, &table, &lens).workspace(&mut ws);
    mla_decode(&be, &s, &plan, args).unwrap();
    assert!(be.download(&s, &o).unwrap().iter().all(|&x| x == bf16::ONE));
}
