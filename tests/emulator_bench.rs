//! Emulation speed on the product forward kernel (`cargo test --release --test emulator_bench --
//! --ignored --nocapture`), plus a smoke test that every shipped kernel module loads.
use std::time::Instant;

use flashmha::emulator::{Device, LaunchConfig, Module};
use half::f16;
use rand::{Rng, SeedableRng};

const ENTRY: &str = "flashmha_fwd_f16_d64";

#[allow(clippy::too_many_arguments)]
fn forward_params(
    q: u64,
    k: u64,
    v: u64,
    o: u64,
    lse: u64,
    b: u32,
    h: u32,
    s: u32,
    d: u32,
) -> Vec<u8> {
    // FlashFwdParams of kernels/params.h, padded layout [b, s, h, d].
    let mut p = Vec::with_capacity(240);
    for ptr in [q, k, v, o, lse, 0, 0, 0, 0, 0] {
        p.extend_from_slice(&ptr.to_le_bytes());
    }
    let (row, head, batch) = ((h * d) as i64, d as i64, (s * h * d) as i64);
    for _ in 0..4 {
        for x in [batch, row, head] {
            p.extend_from_slice(&x.to_le_bytes());
        }
    }
    for x in [(h * s) as i64, s as i64] {
        p.extend_from_slice(&x.to_le_bytes());
    }
    for x in [b as i32, h as i32, h as i32, d as i32, s as i32, s as i32] {
        p.extend_from_slice(&x.to_le_bytes());
    }
    let scale = 1.0 / (d as f32).sqrt();
    for x in [scale, scale * std::f32::consts::LOG2_E, 0.0] {
        p.extend_from_slice(&x.to_le_bytes());
    }
    for x in [-1i32, -1, 0] {
        p.extend_from_slice(&x.to_le_bytes());
    }
    p
}

#[test]
fn every_shipped_module_loads() {
    for entry in [ENTRY, "flashmha_head_similarity_f16"] {
        let img = flashmha::build_info::module_of(entry).expect("module");
        let m = Module::parse(img.ptx).unwrap_or_else(|e| panic!("{}: {e}", img.name));
        assert!(m.entries().any(|e| e == entry));
    }
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn emulation_speed_on_forward_kernel() {
    let img = flashmha::build_info::module_of(ENTRY).expect("module");
    let m = Module::parse(img.ptx).unwrap();
    assert_eq!(m.param_size(ENTRY), Some(240));
    let (b, h, s, d) = (1u32, 4u32, 512u32, 64u32);
    let n = (b * s * h * d) as usize;
    let mut r = rand::rngs::StdRng::seed_from_u64(1);
    let mut rand_f16 = || {
        (0..n)
            .flat_map(|_| f16::from_f32(r.random_range(-1.0f32..1.0)).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let mut dev = Device::new();
    let (q, k, v) = (
        dev.upload(&rand_f16()),
        dev.upload(&rand_f16()),
        dev.upload(&rand_f16()),
    );
    let o = dev.alloc(n * 2);
    let lse = dev.alloc((b * h * s) as usize * 4);
    let params = forward_params(q.0, k.0, v.0, o.0, lse.0, b, h, s, d);
    let cfg = LaunchConfig {
        grid: [s.div_ceil(64), h, b],
        block: [128, 1, 1],
        dynamic_smem_bytes: 73728,
    };
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let t = Instant::now();
        let rep = pool
            .install(|| dev.launch(&m, ENTRY, &cfg, &params))
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let c = &rep.counters;
        println!(
            "{threads} host thread(s): {:.2} s, {} warp-instr, {} thread-instr -> {:.1} M thread-instr/s ({:.1} M/s per core), {} findings",
            secs,
            c.warp_instructions,
            c.thread_instructions,
            c.thread_instructions as f64 / secs / 1e6,
            c.thread_instructions as f64 / secs / 1e6 / threads as f64,
            rep.findings.len()
        );
        for f in rep.findings.iter().take(5) {
            println!("  {f}");
        }
        if threads == 2 {
            println!("{c}");
        }
    }
}
