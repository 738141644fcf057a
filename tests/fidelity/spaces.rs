//! Local memory through generic addressing, dynamic shared memory, vector accesses.
use crate::emulator_support;

use emulator_support::*;
use flashmha::emulator::{Device, LaunchConfig};
use rand::Rng;

#[test]
fn dynamically_indexed_local_array() {
    let m = module("spaces");
    let mut r = rng(13);
    let idx: Vec<u32> = (0..64).map(|_| r.random()).collect();
    let out: Vec<u32> = run_in_out(&m, "local_array", 64, &idx, 64);
    for t in 0..64u32 {
        let a = |i: u32| i * 131 + t;
        assert_eq!(
            out[t as usize],
            a(idx[t as usize] % 32) + a((idx[t as usize].wrapping_add(7)) % 32),
            "thread {t}"
        );
    }
}

#[test]
fn dynamic_shared_memory_and_vectors() {
    let m = module("spaces");
    let mut r = rng(14);
    let n = 96usize;
    let input = rand_f32(&mut r, n * 4, 10.0);
    let mut dev = Device::new();
    let pi = upload(&mut dev, &input);
    let po = dev.alloc(n * 16);
    let ps = dev.alloc(4);
    let p = params(&m, "dyn_smem", &[Arg::Ptr(pi), Arg::Ptr(po), Arg::Ptr(ps)]);
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [n as u32, 1, 1],
        dynamic_smem_bytes: (n * 16) as u32,
    };
    let rep = dev.launch(&m, "dyn_smem", &cfg, &p).unwrap();
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let out: Vec<f32> = download(&dev, po, n * 4);
    for t in 0..n {
        let s = n - 1 - t;
        for c in 0..4 {
            assert_eq!(out[t * 4 + c], input[s * 4 + 3 - c]);
        }
    }
    let size: Vec<u32> = download(&dev, ps, 1);
    assert_eq!(size[0], (n * 16) as u32);
    // too little dynamic shared memory: the accesses past the end are reported
    let small = LaunchConfig {
        dynamic_smem_bytes: 512,
        ..cfg
    };
    let rep = dev.launch(&m, "dyn_smem", &small, &p).unwrap();
    assert!(rep.has(flashmha::emulator::FindingKind::SharedOutOfBounds));
}
