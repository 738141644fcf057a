//! The JVP kernel's emulator counters against the plain forward's on the same problem (issue
//! 22, item 1): one head, non-causal, sq = 128 (two JVP CTAs of 64 rows, one forward CTA of 128),
//! sk = 1024, f16, inputs and tangents uniform in [-1, 1). Both kernels see the same q, k, v.
//! Per pipe (instruction class), tensor instructions, shared wavefronts, global bytes and the
//! ratios JVP / forward. `#[ignore]`d (long emulator runs); run with
//! `cargo test --release --test ops jvp_counters -- --ignored --nocapture` and record the
//! printed table in bench/results/jvp_counters.txt.

use flashmha::backend::emulator::{dev_buf, launch, run};
use flashmha::common::dtype::DType;
use flashmha::emulator::{Counters, Device};
use flashmha::ops::forward::bind::FwdBufs;
use flashmha::ops::jvp::{JvpBufs, JvpPlan, JvpShape};
use flashmha::perf_model::backward::uniform_f16_bytes;
use flashmha::{FwdPlan, FwdShape, Heads};
use rand::SeedableRng;

/// (forward counters, JVP counters) of one head of sq x sk at `head_dim`.
fn counters(head_dim: usize, sq: usize, sk: usize) -> (Counters, Counters) {
    let shape = FwdShape::padded(1, sq, sk, Heads::mha(1), head_dim);
    let fwd = FwdPlan::new(DType::F16, &shape).expect("forward plan");
    let jvp = JvpPlan::new(DType::F16, &JvpShape::new(shape)).expect("jvp plan");
    let mut dev = Device::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut half = |n: usize| uniform_f16_bytes(&mut rng, n);
    let x = *fwd.extents();
    let mut up = |n: usize| dev_buf(dev.upload(&half(n)), n);
    let (q, k, v, dq, dk, dv) = (up(x.q), up(x.k), up(x.v), up(x.q), up(x.k), up(x.v));
    let (o, ot) = (
        dev_buf(dev.alloc(x.o * 2), x.o),
        dev_buf(dev.alloc(x.o * 2), x.o),
    );
    let fb = FwdBufs {
        q,
        k,
        v,
        o,
        ..Default::default()
    };
    let (_, fwd_report) = run(&mut dev, &fwd, &fb).expect("forward");
    assert!(fwd_report.is_clean(), "{:?}", fwd_report.findings);
    let l = jvp
        .bind(&JvpBufs {
            fwd: fb,
            dq,
            dk,
            dv,
            o_tangent: ot,
        })
        .expect("bind");
    let jvp_report = launch(&mut dev, &l).expect("jvp");
    assert!(jvp_report.is_clean(), "{:?}", jvp_report.findings);
    (fwd_report.counters, jvp_report.counters)
}

#[test]
#[ignore = "long emulator runs; prints the JVP / forward table (see the module doc)"]
fn jvp_counters_against_the_forward() {
    for d in [64usize, 128] {
        let (f, j) = counters(d, 128, 1024);
        println!("d{d}, one head, sq 128, sk 1024, f16: forward | JVP | JVP / forward");
        for ((name, a), (_, b)) in f.rows().into_iter().zip(j.rows()) {
            if a != 0 || b != 0 {
                let ratio = if a > 0 {
                    format!("{:.2}", b as f64 / a as f64)
                } else {
                    "-".into()
                };
                println!("  {name:<34} {a:>14} {b:>14} {ratio:>8}");
            }
        }
    }
}
