//! Planted bugs must each produce the expected finding; the clean controls must produce none.
use crate::emulator_support;

use emulator_support::*;
use flashmha::emulator::{Device, FindingKind};

#[test]
fn out_of_bounds_global_write_is_reported_with_thread_and_address() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let n = 100;
    let out = dev.alloc(n * 4);
    let r = launch(
        &mut dev,
        &m,
        "bug_oob_write",
        1,
        128,
        &[Arg::Ptr(out), Arg::I32(n as i32)],
    );
    let f: Vec<_> = r.of_kind(FindingKind::GlobalOutOfBounds).collect();
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert_eq!(f[0].tid, [100, 0, 0]);
    assert_eq!(f[0].address, Some(out.0 + 400));
    assert_eq!(f[0].occurrences, 1);
    assert!(f[0].ptx.starts_with("st.global"), "{}", f[0].ptx);
    assert_eq!(f[0].kernel, "bug_oob_write");
    // the in-bounds writes happened
    let v: Vec<f32> = download(&dev, out, n);
    assert!(v.iter().enumerate().all(|(i, x)| *x == i as f32));
}

#[test]
fn missing_syncthreads_is_a_shared_race_and_the_barrier_fixes_it() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let mut r = rng(1);
    let input = upload(&mut dev, &rand_f32(&mut r, 128, 1.0));
    let out = dev.alloc(128 * 4);
    let rep = launch(
        &mut dev,
        &m,
        "bug_missing_sync",
        1,
        128,
        &[Arg::Ptr(input), Arg::Ptr(out)],
    );
    assert!(
        rep.has(FindingKind::SharedRaceRaw) || rep.has(FindingKind::UninitSharedRead),
        "{:?}",
        rep.findings
    );
    let races: Vec<_> = rep.findings.iter().filter(|f| f.kind.is_race()).collect();
    assert!(!races.is_empty(), "{:?}", rep.findings);
    assert!(races[0].other_tid.is_some());
    launch_clean(
        &mut dev,
        &m,
        "clean_with_sync",
        1,
        128,
        &[Arg::Ptr(input), Arg::Ptr(out)],
    );
}

#[test]
fn reading_cp_async_destination_before_wait_is_reported() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let mut r = rng(2);
    let input = upload(&mut dev, &rand_f32(&mut r, 256, 1.0));
    let out = dev.alloc(64 * 16);
    let rep = launch(
        &mut dev,
        &m,
        "bug_cp_async_no_wait",
        1,
        64,
        &[Arg::Ptr(input), Arg::Ptr(out)],
    );
    let f: Vec<_> = rep.of_kind(FindingKind::CpAsyncReadBeforeWait).collect();
    assert_eq!(f.len(), 1, "{:?}", rep.findings);
    assert_eq!(f[0].occurrences, 64);
    assert!(f[0].ptx.starts_with("ld.shared"), "{}", f[0].ptx);
}

#[test]
fn uninitialised_shared_read_is_reported_only_for_unwritten_elements() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let out = dev.alloc(64 * 4);
    let rep = launch(&mut dev, &m, "bug_uninit_shared", 1, 64, &[Arg::Ptr(out)]);
    let f: Vec<_> = rep.of_kind(FindingKind::UninitSharedRead).collect();
    assert_eq!(f.len(), 1, "{:?}", rep.findings);
    assert_eq!(f[0].occurrences, 32);
    assert_eq!(f[0].tid, [32, 0, 0]);
    assert_eq!(rep.findings.len(), 1);
}

#[test]
fn syncthreads_skipped_by_exiting_threads_is_reported_not_hung() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let out = dev.alloc(128 * 4);
    let rep = launch(
        &mut dev,
        &m,
        "bug_divergent_syncthreads",
        1,
        128,
        &[Arg::Ptr(out)],
    );
    assert!(
        rep.has(FindingKind::BarrierWithExitedThreads),
        "{:?}",
        rep.findings
    );
    let v: Vec<f32> = download(&dev, out, 64);
    assert!(
        v.iter().all(|x| *x == 1.0),
        "threads continue after the barrier"
    );
}

#[test]
fn threads_at_different_barriers_are_reported() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let out = dev.alloc(128 * 4);
    let rep = launch(
        &mut dev,
        &m,
        "bug_divergent_barriers",
        1,
        128,
        &[Arg::Ptr(out)],
    );
    let f: Vec<_> = rep.of_kind(FindingKind::DivergentBarrier).collect();
    assert_eq!(f.len(), 1, "{:?}", rep.findings);
    assert!(f[0].other_tid.is_some());
    let v: Vec<f32> = download(&dev, out, 128);
    assert!(v
        .iter()
        .enumerate()
        .all(|(i, x)| *x == if i < 64 { 2.0 } else { 3.0 }));
}

#[test]
fn shuffle_with_absent_members_is_a_divergent_collective() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let input = upload(&mut dev, &(0..32u32).map(|i| i * 7 + 1).collect::<Vec<_>>());
    let out = dev.alloc(32 * 4);
    let rep = launch(
        &mut dev,
        &m,
        "bug_divergent_shfl",
        1,
        32,
        &[Arg::Ptr(input), Arg::Ptr(out)],
    );
    assert!(
        rep.has(FindingKind::DivergentCollective),
        "{:?}",
        rep.findings
    );
}

#[test]
fn trap_is_reported() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let out = dev.alloc(32 * 4);
    let rep = launch(&mut dev, &m, "bug_trap", 1, 32, &[Arg::Ptr(out)]);
    let f: Vec<_> = rep.of_kind(FindingKind::Trap).collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].tid, [5, 0, 0]);
}

#[test]
fn misaligned_load_is_reported() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let input = dev.upload(&[1u8; 256]);
    let out = dev.alloc(32 * 4);
    let rep = launch(
        &mut dev,
        &m,
        "bug_misaligned",
        1,
        32,
        &[Arg::Ptr(input), Arg::Ptr(out)],
    );
    let f: Vec<_> = rep.of_kind(FindingKind::Misaligned).collect();
    assert_eq!(f.len(), 1, "{:?}", rep.findings);
    assert_eq!(f[0].occurrences, 32);
}

#[test]
fn clean_reduction_is_clean_and_correct_over_many_ctas() {
    let m = module("planted_bugs");
    let mut dev = Device::new();
    let mut r = rng(5);
    let data = rand_f32(&mut r, 256 * 40, 1.0);
    let input = upload(&mut dev, &data);
    let out = dev.alloc(40 * 4);
    let rep = launch_clean(
        &mut dev,
        &m,
        "clean_reduce",
        40,
        256,
        &[Arg::Ptr(input), Arg::Ptr(out)],
    );
    let got: Vec<f32> = download(&dev, out, 40);
    for b in 0..40 {
        let want: f64 = data[b * 256..(b + 1) * 256].iter().map(|&x| x as f64).sum();
        assert!((got[b] as f64 - want).abs() < 1e-4, "block {b}");
    }
    // 1 + 8 barriers per CTA
    assert_eq!(rep.counters.barriers, 40 * 9);
    assert_eq!(rep.counters.ctas, 40);
}
