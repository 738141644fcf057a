//! The server-facing API on the emulator backend: one plan bound to the buffers of several
//! "layers", the same plan run from several threads at once (identical bits), O(1) binding
//! errors before any launch, and the thread-safety of plans and backends.

use flashmha::backend::emulator::{self as emu, dev_buf};
use flashmha::emulator::{Device, DevicePtr};
use flashmha::ops::forward::bind::FwdBufs;
use flashmha::reference::{self, Layout, ReferenceInputs};
use flashmha::{AttnOptions, Error, FwdPlan, FwdShape, Heads};
use half::bf16;
use rand::{Rng, SeedableRng};

fn seed() -> u64 {
    let seed = std::env::var("FLASHMHA_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("FLASHMHA_SEED={seed}");
    seed
}

fn random_bf16(rng: &mut impl Rng, n: usize) -> Vec<bf16> {
    (0..n)
        .map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0)))
        .collect()
}

fn upload(dev: &mut Device, data: &[bf16]) -> DevicePtr {
    let ptr = dev.alloc(data.len() * 2);
    dev.write(ptr, bytemuck::cast_slice(data)).unwrap();
    ptr
}

/// One layer's tensors on an emulator device, and its output read back after a run.
struct Layer {
    q: Vec<bf16>,
    k: Vec<bf16>,
    v: Vec<bf16>,
}

fn run_layer(dev: &mut Device, plan: &FwdPlan<bf16>, layer: &Layer) -> Vec<bf16> {
    let x = plan.extents();
    let q = upload(dev, &layer.q);
    let k = upload(dev, &layer.k);
    let v = upload(dev, &layer.v);
    let o = upload(dev, &vec![bf16::NAN; x.o]);
    let bufs = FwdBufs {
        q: dev_buf(q, layer.q.len()),
        k: dev_buf(k, layer.k.len()),
        v: dev_buf(v, layer.v.len()),
        o: dev_buf(o, x.o),
        ..FwdBufs::default()
    };
    let (_, report) = emu::run(dev, plan, &bufs).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    bytemuck::pod_collect_to_vec(&dev.read(o, x.o * 2).unwrap())
}

fn random_shape(rng: &mut impl Rng) -> FwdShape {
    let kv = rng.random_range(1..=2);
    let heads = Heads::gqa(kv * rng.random_range(1..=2), kv);
    let shape = FwdShape::padded(
        rng.random_range(1..=2),
        rng.random_range(1..=80),
        rng.random_range(1..=80),
        heads,
        64,
    );
    shape.with_options(AttnOptions {
        causal: rng.random_bool(0.5),
        ..Default::default()
    })
}

fn random_layer(rng: &mut impl Rng, plan: &FwdPlan<bf16>) -> Layer {
    let x = plan.extents();
    Layer {
        q: random_bf16(rng, x.q),
        k: random_bf16(rng, x.k),
        v: random_bf16(rng, x.v),
    }
}

#[test]
fn one_plan_serves_every_layer_and_matches_the_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let shape = random_shape(&mut rng);
    let plan = FwdPlan::<bf16>::new(&shape).unwrap();
    let mut dev = Device::new();
    let f32s = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let (batch, sq, sk) = match shape.seq {
        flashmha::SeqShape::Padded {
            batch,
            seqlen_q,
            seqlen_k,
        } => (batch, seqlen_q, seqlen_k),
        flashmha::SeqShape::Varlen { .. } => unreachable!("padded shape"),
    };
    for _layer in 0..3 {
        let layer = random_layer(&mut rng, &plan);
        let o = run_layer(&mut dev, &plan, &layer);
        let (q, k, v) = (f32s(&layer.q), f32s(&layer.k), f32s(&layer.v));
        let reference = reference::attention(&ReferenceInputs {
            q: &q,
            k: &k,
            v: &v,
            layout: Layout::Padded {
                batch,
                seqlen_q: sq,
                seqlen_k: sk,
            },
            num_heads_q: shape.heads.q,
            num_heads_kv: shape.heads.kv,
            head_dim: shape.head_dim,
            options: &shape.options,
            alibi_slopes: None,
            head_gates: None,
        })
        .unwrap();
        // |o| <= 1 (a convex mix of values in [-1, 1)): the output's own rounding (u) plus the
        // P rounding to bf16 before P.V (another u per term, averaging out), with margin: 5u.
        let tol = 5.0 * flashmha::common::dtype::DType::Bf16.unit_roundoff() as f32;
        let worst = o
            .iter()
            .zip(&reference.o)
            .map(|(a, b)| (a.to_f32() - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= tol, "max |o - ref| = {worst} for {shape:?}");
    }
}

#[test]
fn the_same_plan_runs_from_several_threads_with_identical_bits() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let shape = random_shape(&mut rng);
    let plan = FwdPlan::<bf16>::new(&shape).unwrap();
    let layer = random_layer(&mut rng, &plan);
    let outputs: Vec<Vec<bf16>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| run_layer(&mut Device::new(), &plan, &layer)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let bits = |o: &[bf16]| o.iter().map(|x| x.to_bits()).collect::<Vec<u16>>();
    for o in &outputs[1..] {
        assert_eq!(bits(o), bits(&outputs[0]));
    }
    assert!(outputs[0].iter().all(|x| x.is_finite()));
}

#[test]
fn binding_errors_come_before_any_launch_and_write_nothing() {
    let shape = FwdShape::padded(1, 20, 30, Heads::mha(2), 64);
    let plan = FwdPlan::<bf16>::new(&shape).unwrap();
    let x = *plan.extents();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let mut dev = Device::new();
    let q = upload(&mut dev, &random_bf16(&mut rng, x.q));
    let k = upload(&mut dev, &random_bf16(&mut rng, x.k));
    let v = upload(&mut dev, &random_bf16(&mut rng, x.v));
    let o = upload(&mut dev, &vec![bf16::NAN; x.o]);
    let good = FwdBufs {
        q: dev_buf(q, x.q),
        k: dev_buf(k, x.k),
        v: dev_buf(v, x.v),
        o: dev_buf(o, x.o),
        ..FwdBufs::default()
    };
    let short_v = FwdBufs {
        v: dev_buf(v, x.v - 1),
        ..good
    };
    let o_on_k = FwdBufs {
        o: dev_buf(k, x.o),
        ..good
    };
    assert!(matches!(
        emu::run(&mut dev, &plan, &short_v),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        emu::run(&mut dev, &plan, &o_on_k),
        Err(Error::Alias { .. })
    ));
    // Nothing was launched: o still holds its poison, k its inputs.
    let o_bits: Vec<u16> = bytemuck::pod_collect_to_vec(&dev.read(o, x.o * 2).unwrap());
    assert!(o_bits.iter().all(|&b| b == bf16::NAN.to_bits()));
    // The good binding runs cleanly.
    let (_, report) = emu::run(&mut dev, &plan, &good).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
}

#[test]
fn plans_and_backends_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<FwdPlan<bf16>>();
    send_sync::<FwdPlan<half::f16>>();
    send_sync::<flashmha::cuda::CudaBackend>();
    send_sync::<Device>();
}
