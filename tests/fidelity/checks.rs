//! Planted bugs must each produce the expected finding; the clean controls must produce none.
use crate::emulator_support;

use emulator_support::*;
use flashmha::emulator::{Device, DevicePtr, FindingKind, LaunchReport};

/// Runs the kernel `entry` of `kernels/emu_tests/planted_bugs.cu` as one CTA of `block`
/// threads on the buffers `ptrs`.
fn planted(dev: &mut Device, entry: &str, block: u32, ptrs: &[DevicePtr]) -> LaunchReport {
    let args: Vec<Arg> = ptrs.iter().map(|&p| Arg::Ptr(p)).collect();
    launch(dev, &module("planted_bugs"), entry, 1, block, &args)
}

#[test]
fn out_of_bounds_global_write_is_reported_with_thread_and_address() {
    let mut dev = Device::new();
    let n = 100;
    let out = dev.alloc(n * 4);
    let args = [Arg::Ptr(out), Arg::I32(n as i32)];
    let r = launch(
        &mut dev,
        &module("planted_bugs"),
        "bug_oob_write",
        1,
        128,
        &args,
    );
    let f = r.only(FindingKind::GlobalOutOfBounds);
    assert_eq!(f.tid, [100, 0, 0]);
    assert_eq!(f.address, Some(out.0 + 400));
    assert_eq!(f.occurrences, 1);
    assert!(f.ptx.starts_with("st.global"), "{}", f.ptx);
    assert_eq!(f.kernel, "bug_oob_write");
    // the in-bounds writes happened
    let v: Vec<f32> = download(&dev, out, n);
    assert!(v.iter().enumerate().all(|(i, x)| *x == i as f32));
}

#[test]
fn missing_syncthreads_is_a_shared_race_and_the_barrier_fixes_it() {
    let mut dev = Device::new();
    let mut r = rng(1);
    let input = upload(&mut dev, &rand_f32(&mut r, 128, 1.0));
    let out = dev.alloc(128 * 4);
    let rep = planted(&mut dev, "bug_missing_sync", 128, &[input, out]);
    assert!(
        rep.has(FindingKind::SharedRaceRaw) || rep.has(FindingKind::UninitSharedRead),
        "{:?}",
        rep.findings
    );
    let races: Vec<_> = rep.findings.iter().filter(|f| f.kind.is_race()).collect();
    assert!(!races.is_empty(), "{:?}", rep.findings);
    assert!(races[0].other_tid.is_some());
    planted(&mut dev, "clean_with_sync", 128, &[input, out]).clean();
}

#[test]
fn reading_cp_async_destination_before_wait_is_reported() {
    let mut dev = Device::new();
    let mut r = rng(2);
    let input = upload(&mut dev, &rand_f32(&mut r, 256, 1.0));
    let out = dev.alloc(64 * 16);
    let rep = planted(&mut dev, "bug_cp_async_no_wait", 64, &[input, out]);
    let f = rep.only(FindingKind::CpAsyncReadBeforeWait);
    assert_eq!(f.occurrences, 64);
    assert!(f.ptx.starts_with("ld.shared"), "{}", f.ptx);
}

#[test]
fn uninitialised_shared_read_is_reported_only_for_unwritten_elements() {
    let mut dev = Device::new();
    let out = dev.alloc(64 * 4);
    let rep = planted(&mut dev, "bug_uninit_shared", 64, &[out]);
    let f = rep.only(FindingKind::UninitSharedRead);
    assert_eq!(f.occurrences, 32);
    assert_eq!(f.tid, [32, 0, 0]);
    assert_eq!(rep.findings.len(), 1);
}

#[test]
fn syncthreads_skipped_by_exiting_threads_is_reported_not_hung() {
    let mut dev = Device::new();
    let out = dev.alloc(128 * 4);
    let rep = planted(&mut dev, "bug_divergent_syncthreads", 128, &[out]);
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
    let mut dev = Device::new();
    let out = dev.alloc(128 * 4);
    let rep = planted(&mut dev, "bug_divergent_barriers", 128, &[out]);
    let f = rep.only(FindingKind::DivergentBarrier);
    assert!(f.other_tid.is_some());
    let v: Vec<f32> = download(&dev, out, 128);
    assert!(v
        .iter()
        .enumerate()
        .all(|(i, x)| *x == if i < 64 { 2.0 } else { 3.0 }));
}

#[test]
fn shuffle_with_absent_members_is_a_divergent_collective() {
    let mut dev = Device::new();
    let input = upload(&mut dev, &(0..32u32).map(|i| i * 7 + 1).collect::<Vec<_>>());
    let out = dev.alloc(32 * 4);
    let rep = planted(&mut dev, "bug_divergent_shfl", 32, &[input, out]);
    assert!(
        rep.has(FindingKind::DivergentCollective),
        "{:?}",
        rep.findings
    );
}

#[test]
fn trap_is_reported() {
    let mut dev = Device::new();
    let out = dev.alloc(32 * 4);
    let rep = planted(&mut dev, "bug_trap", 32, &[out]);
    let f = rep.only(FindingKind::Trap);
    assert_eq!(f.tid, [5, 0, 0]);
}

#[test]
fn misaligned_load_is_reported() {
    let mut dev = Device::new();
    let input = dev.upload(&[1u8; 256]);
    let out = dev.alloc(32 * 4);
    let rep = planted(&mut dev, "bug_misaligned", 32, &[input, out]);
    let f = rep.only(FindingKind::Misaligned);
    assert_eq!(f.occurrences, 32);
}

#[test]
fn clean_reduction_is_clean_and_correct_over_many_ctas() {
    let mut dev = Device::new();
    let mut r = rng(5);
    let data = rand_f32(&mut r, 256 * 40, 1.0);
    let input = upload(&mut dev, &data);
    let out = dev.alloc(40 * 4);
    let rep = launch(
        &mut dev,
        &module("planted_bugs"),
        "clean_reduce",
        40,
        256,
        &[Arg::Ptr(input), Arg::Ptr(out)],
    )
    .clean();
    let got: Vec<f32> = download(&dev, out, 40);
    for b in 0..40 {
        let want: f64 = data[b * 256..(b + 1) * 256].iter().map(|&x| x as f64).sum();
        assert!((got[b] as f64 - want).abs() < 1e-4, "block {b}");
    }
    // 1 + 8 barriers per CTA
    assert_eq!(rep.counters.barriers, 40 * 9);
    assert_eq!(rep.counters.ctas, 40);
}

#[test]
fn two_ctas_writing_one_global_byte_is_a_race_and_disjoint_bytes_are_not() {
    let mut dev = Device::new();
    let out = dev.alloc(8 * 2);
    let run = |dev: &mut Device, stride: i32| {
        let args = [Arg::Ptr(out), Arg::I32(stride)];
        launch(
            dev,
            &module("planted_bugs"),
            "bug_cross_cta_write",
            4,
            2,
            &args,
        )
    };
    // stride 0: the 4 CTAs of 2 threads all write halves 0 and 1.
    let rep = run(&mut dev, 0);
    let f = rep.only(FindingKind::GlobalRaceWaw);
    assert!(
        f.address == Some(out.0) || f.address == Some(out.0 + 2),
        "{f:?}"
    );
    assert!(f.ptx.starts_with("st.global"), "{}", f.ptx);
    // stride 2: CTA c writes halves 2c and 2c + 1, so CTAs 0-3 share one 8-byte word pairwise
    // without sharing a byte; a second launch does not see the first one's writers.
    run(&mut dev, 2).clean();
    run(&mut dev, 2).clean();
    let v: Vec<u16> = (0..8)
        .map(|i| {
            let b = dev.read(DevicePtr(out.0 + 2 * i), 2).unwrap();
            u16::from_le_bytes([b[0], b[1]])
        })
        .collect();
    assert_eq!(v, [0, 0, 1, 1, 2, 2, 3, 3]);
}
