//! Device-resident indices of decode are never trusted: a planted out-of-range block-table
//! entry, a cache length beyond the block table, and an inconsistent cu_seqlens_q each make the
//! kernel trap (a finding), and no out-of-bounds access is reported before the trap. The
//! Turing kernels (register-staged key blocks) check the same indices before their loads.

use flashmha::check::decode::DecodeCase;
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::emulator::FindingKind;
use flashmha::host::emulated_decode::decode;
use flashmha::ops::decode::{DecodePlan, SplitPolicy};

fn base_case(seed: u64) -> DecodeCase {
    DecodeCase {
        cache_lens: vec![70, 33],
        spare_pages: 2,
        options: AttnOptions::default(),
        lse: true,
        // Two items of one new token, f16 d64, GQA 4 over 2 KV heads, pages of 16.
        ..DecodeCase::uniform(
            DType::F16,
            64,
            2,
            2,
            4,
            1,
            16,
            70,
            SplitPolicy::Count(2),
            seed,
        )
    }
}

fn assert_traps(
    case: &DecodeCase,
    mutate: impl Fn(&mut flashmha::host::emulated_decode::DecodeHostInputs),
) {
    let mut built = case.build();
    // The unmodified case runs clean.
    let plan = DecodePlan::new_for(case.target, &built.problem, case.split).unwrap();
    let clean = decode(&plan, &built.inputs).unwrap();
    assert!(clean.findings().is_empty(), "{:?}", clean.findings());
    mutate(&mut built.inputs);
    let run = decode(&plan, &built.inputs).unwrap();
    assert!(
        run.decode_report.has(FindingKind::Trap),
        "{:?}",
        run.decode_report.findings
    );
    assert!(
        run.decode_report
            .findings
            .iter()
            .all(|f| f.kind == FindingKind::Trap),
        "only traps, no out-of-bounds access: {:?}",
        run.decode_report.findings
    );
}

#[test]
fn out_of_range_block_table_entry_traps() {
    for (seed, bad) in [(1u64, i32::MAX), (2, -1), (3, 0)] {
        let case = base_case(seed);
        let num_pages = case.build().problem.num_pages as i32;
        let bad = if bad == 0 { num_pages } else { bad };
        // Page 2 of item 0 (keys 32..47 of its 70).
        assert_traps(&case, |i| i.block_table[2] = bad);
    }
}

#[test]
fn turing_kernels_trap_on_the_same_bad_indices() {
    let turing = |seed| DecodeCase {
        target: flashmha::KernelTarget::Turing,
        ..base_case(seed)
    };
    let case = turing(7);
    let built = case.build();
    let num_pages = built.problem.num_pages as i32;
    // Page 2 of item 0 (keys 32..47 of its 70), and its first page.
    assert_traps(&case, |i| i.block_table[2] = num_pages);
    assert_traps(&case, |i| i.block_table[0] = -1);
    let limit = (built.problem.max_pages_per_seq * built.problem.page_size) as i32;
    assert_traps(&turing(8), |i| i.cache_seqlens[1] = limit + 1);
}

#[test]
fn cache_length_beyond_the_block_table_traps() {
    let case = base_case(4);
    let built = case.build();
    let limit = (built.problem.max_pages_per_seq * built.problem.page_size) as i32;
    assert_traps(&case, |i| i.cache_seqlens[1] = limit + 1);
    assert_traps(&case, |i| i.cache_seqlens[0] = -5);
}

#[test]
fn inconsistent_cu_seqlens_q_traps() {
    let mut case = base_case(5);
    case.varlen = true;
    case.q_lens = vec![2, 3];
    // Past total_q, decreasing, and longer than max_seqlen_q.
    assert_traps(&case, |i| i.cu_seqlens_q.as_mut().unwrap()[2] = 6);
    assert_traps(&case, |i| i.cu_seqlens_q.as_mut().unwrap()[1] = 4);
    let mut wide = base_case(6);
    wide.varlen = true;
    wide.q_lens = vec![1, 4];
    assert_traps(&wide, |i| {
        let cu = i.cu_seqlens_q.as_mut().unwrap();
        cu[1] = 5; // item 0 would own 5 rows > max_seqlen_q = 4
    });
}
