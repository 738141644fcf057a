//! The C ABI of the backward (`flashmha_bwd_*`, src/capi/backward.rs): the emulator entry gives
//! the Rust API's bits, bad buffers are typed errors with nothing written, and on a CUDA
//! context (the emulated driver's sm_80, sm_75, sm_90 devices) `flashmha_bwd_run` gives the
//! emulated run's bits, sm_75 refusing the plan with `FLASHMHA_ERR_UNSUPPORTED`.

use crate::backward_support::{emulated_backward_with_sinks, BwdHost};
use crate::capi_support::{buf, padded_shape, plan, raw_buf};
use crate::cuda_support;
use crate::emulator_support::{rng, seed};
use flashmha::capi::{
    ffi, flashmha_bwd_plan_create, flashmha_bwd_plan_create_for_context, flashmha_bwd_plan_destroy,
    flashmha_bwd_plan_workspace_len, flashmha_bwd_run, flashmha_emulate_bwd_run,
    flashmha_emulate_run, flashmha_plan_destroy,
};
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::ops::backward::{BwdPlan, BwdShape};
use flashmha::{FwdShape, Heads};
use half::f16;
use rand::Rng;

/// One random padded f16 problem with its forward already run through the C ABI: inputs, O,
/// LSE, dO, and the backward shape.
struct Problem {
    shape: ffi::flashmha_bwd_shape,
    dims: (usize, usize, usize, usize, usize),
    causal: bool,
    q: Vec<f16>,
    k: Vec<f16>,
    v: Vec<f16>,
    o: Vec<f16>,
    lse: Vec<f32>,
    d_o: Vec<f16>,
    /// `[hq]` attention-sink logits of the forward (its LSE includes them).
    sinks: Vec<f32>,
}

impl Problem {
    fn draw(seed: u64) -> Problem {
        let mut r = rng(seed);
        let (sq, sk) = (r.random_range(1..=40), r.random_range(1..=40));
        let (hkv, group, d) = (r.random_range(1..=2), r.random_range(1..=3), 64);
        let hq = hkv * group;
        let causal = r.random_bool(0.5);
        let mut fwd = padded_shape(ffi::FLASHMHA_DTYPE_F16, (sq, sk), (hq, hkv), d);
        fwd.options.causal = i32::from(causal);
        let mut draw = |n: usize| -> Vec<f16> {
            (0..n)
                .map(|_| f16::from_f32(r.random_range(-1.0..1.0)))
                .collect()
        };
        let (mut q, mut k, mut v) = (draw(sq * hq * d), draw(sk * hkv * d), draw(sk * hkv * d));
        let d_o = draw(sq * hq * d);
        let mut sinks: Vec<f32> = (0..hq).map(|_| r.random_range(-1.0f32..3.0)).collect();
        let mut o = vec![f16::ZERO; sq * hq * d];
        let mut lse = vec![0f32; hq * sq];
        let p = plan(&fwd, None);
        let bufs = ffi::flashmha_bufs {
            q: buf(&mut q),
            k: buf(&mut k),
            v: buf(&mut v),
            o: buf(&mut o),
            lse: buf(&mut lse),
            sinks: buf(&mut sinks),
            ..Default::default()
        };
        // SAFETY: live Vecs of the declared lengths and a live plan, destroyed once.
        unsafe {
            assert_eq!(flashmha_emulate_run(p, &bufs), ffi::FLASHMHA_OK);
            flashmha_plan_destroy(p);
        }
        Problem {
            shape: ffi::flashmha_bwd_shape {
                fwd,
                ..Default::default()
            },
            dims: (sq, sk, hq, hkv, d),
            causal,
            q,
            k,
            v,
            o,
            lse,
            d_o,
            sinks,
        }
    }

    /// The same backward through the Rust API on the emulator: dQ, dK, dV and d(sink).
    fn rust_api(&self) -> ([Vec<f16>; 3], Vec<f32>) {
        let (sq, sk, hq, hkv, d) = self.dims;
        let shape = FwdShape::padded(1, sq, sk, Heads::gqa(hq, hkv), d).with_options(AttnOptions {
            causal: self.causal,
            ..AttnOptions::default()
        });
        let plan = BwdPlan::new(DType::F16, &BwdShape::new(shape)).unwrap();
        let host = BwdHost {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            o: &self.o,
            d_o: &self.d_o,
            lse: &self.lse,
        };
        let lens = [self.q.len(), self.k.len(), self.v.len()];
        emulated_backward_with_sinks(&plan, &host, lens, Some(&self.sinks))
    }
}

fn bits(x: &[f16]) -> Vec<u16> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// A backward plan of `s` through the C entry point (for `ctx` when given): the status and the
/// plan (NULL on error).
fn bwd_plan(
    s: &ffi::flashmha_bwd_shape,
    ctx: Option<*mut ffi::flashmha_context>,
) -> (ffi::flashmha_status, *mut ffi::flashmha_bwd_plan) {
    let mut p: *mut ffi::flashmha_bwd_plan = std::ptr::null_mut();
    // SAFETY: valid pointers to locals; `ctx` live when given.
    let code = unsafe {
        match ctx {
            Some(c) => flashmha_bwd_plan_create_for_context(c, s, &mut p),
            None => flashmha_bwd_plan_create(s, &mut p),
        }
    };
    (code, p)
}

fn workspace_len(p: *const ffi::flashmha_bwd_plan) -> usize {
    let mut n = 0usize;
    // SAFETY: a live plan and a local.
    assert_eq!(
        unsafe { flashmha_bwd_plan_workspace_len(p, &mut n) },
        ffi::FLASHMHA_OK
    );
    n
}

/// `flashmha_emulate_bwd_run` gives the Rust API's bits, d(sink) included (outputs poisoned
/// with NaN first, so an unwritten element fails); a short dq or workspace, a lone cu_seqlens,
/// d_head_gates without head_gates, d_sinks without sinks, a short d_sinks and a NULL plan are
/// typed errors that write nothing.
#[test]
fn the_c_abi_backward_matches_the_rust_api_and_refuses_bad_buffers() {
    let seed = seed();
    let mut pb = Problem::draw(seed);
    let (code, p) = bwd_plan(&pb.shape, None);
    assert_eq!(code, ffi::FLASHMHA_OK);
    let nan = f16::NAN;
    let (mut dq, mut dk, mut dv) = (
        vec![nan; pb.q.len()],
        vec![nan; pb.k.len()],
        vec![nan; pb.v.len()],
    );
    let mut ws = vec![f32::NAN; workspace_len(p)];
    let mut cu = [0i32, pb.dims.0 as i32];
    let mut gates = vec![1f32; pb.dims.2];
    let mut d_sinks = vec![f32::NAN; pb.dims.2];
    let mut bufs = ffi::flashmha_bwd_bufs {
        q: buf(&mut pb.q),
        k: buf(&mut pb.k),
        v: buf(&mut pb.v),
        o: buf(&mut pb.o),
        d_o: buf(&mut pb.d_o),
        lse: buf(&mut pb.lse),
        dq: buf(&mut dq),
        dk: buf(&mut dk),
        dv: buf(&mut dv),
        workspace: buf(&mut ws),
        sinks: buf(&mut pb.sinks),
        d_sinks: buf(&mut d_sinks),
        ..Default::default()
    };
    let run = |b: &ffi::flashmha_bwd_bufs| {
        // SAFETY: every buffer is a live Vec of (at least) its declared length; `p` is live.
        unsafe { flashmha_emulate_bwd_run(p, b) }
    };
    // Refused before anything runs: the poisoned outputs stay poisoned.
    let good = bufs;
    let mut refusals = Vec::new();
    bufs.dq.len -= 1;
    refusals.push(("short dq", bufs, ffi::FLASHMHA_ERR_BUFFER));
    bufs = good;
    bufs.workspace.len -= 1;
    refusals.push(("short workspace", bufs, ffi::FLASHMHA_ERR_BUFFER));
    bufs = good;
    bufs.cu_seqlens_q = buf(&mut cu);
    refusals.push((
        "lone cu_seqlens_q",
        bufs,
        ffi::FLASHMHA_ERR_INVALID_ARGUMENT,
    ));
    bufs = good;
    bufs.d_head_gates = buf(&mut gates);
    refusals.push((
        "d_head_gates without head_gates",
        bufs,
        ffi::FLASHMHA_ERR_BUFFER,
    ));
    bufs = good;
    bufs.sinks = ffi::flashmha_buf::default();
    refusals.push(("d_sinks without sinks", bufs, ffi::FLASHMHA_ERR_BUFFER));
    bufs = good;
    bufs.d_sinks.len -= 1;
    refusals.push(("short d_sinks", bufs, ffi::FLASHMHA_ERR_BUFFER));
    for (what, b, expected) in refusals {
        assert_eq!(run(&b), expected, "seed {seed}: {what}");
        for out in [&dq, &dk, &dv] {
            assert!(out.iter().all(|x| x.is_nan()), "seed {seed}: {what} wrote");
        }
        assert!(
            d_sinks.iter().all(|x| x.is_nan()),
            "seed {seed}: {what} wrote"
        );
    }
    // SAFETY: a NULL plan is refused.
    assert_eq!(
        unsafe { flashmha_emulate_bwd_run(std::ptr::null(), &good) },
        ffi::FLASHMHA_ERR_INVALID_ARGUMENT
    );

    assert_eq!(run(&good), ffi::FLASHMHA_OK, "seed {seed}");
    let ([rq, rk, rv], rz) = pb.rust_api();
    let f32_bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(f32_bits(&d_sinks), f32_bits(&rz), "seed {seed}: d_sinks");
    assert!(d_sinks.iter().all(|x| x.is_finite() && *x != 0.0));
    assert_eq!(bits(&dq), bits(&rq), "seed {seed}: dq");
    assert_eq!(bits(&dk), bits(&rk), "seed {seed}: dk");
    assert_eq!(bits(&dv), bits(&rv), "seed {seed}: dv");
    assert!(dq.iter().chain(&dk).chain(&dv).all(|x| x.is_finite()));
    assert!(dv.iter().any(|x| *x != f16::ZERO));
    // SAFETY: destroyed once.
    unsafe { flashmha_bwd_plan_destroy(p) };
}

/// A change to a valid backward shape.
type Edit = fn(&mut ffi::flashmha_bwd_shape);

/// Shapes are planned or typed errors: usize::MAX lengths, a head dim without a kernel.
#[test]
fn bad_backward_shapes_are_typed_errors() {
    let base = padded_shape(ffi::FLASHMHA_DTYPE_BF16, (5, 7), (2, 1), 64);
    let edits: [(Edit, ffi::flashmha_status); 4] = [
        (|s| s.fwd.seqlen_q = usize::MAX, ffi::FLASHMHA_ERR_OVERFLOW),
        (|s| s.fwd.head_dim = 256, ffi::FLASHMHA_ERR_UNSUPPORTED),
        (|s| s.fwd.heads_kv = 3, ffi::FLASHMHA_ERR_SHAPE),
        (|s| s.dq_strides.row = -1, ffi::FLASHMHA_ERR_SHAPE),
    ];
    let s = ffi::flashmha_bwd_shape {
        fwd: base,
        ..Default::default()
    };
    let (code, p) = bwd_plan(&s, None);
    assert_eq!(code, ffi::FLASHMHA_OK);
    // SAFETY: destroyed once.
    unsafe { flashmha_bwd_plan_destroy(p) };
    for (i, (edit, expected)) in edits.iter().enumerate() {
        let mut bad = s;
        edit(&mut bad);
        let (code, p) = bwd_plan(&bad, None);
        assert_eq!(code, *expected, "edit {i}");
        assert!(p.is_null(), "edit {i}");
    }
}

/// On each device of the (emulated) driver: sm_80 and sm_90 run `flashmha_bwd_run` on device
/// addresses and give the emulated run's bits; sm_75 has no backward kernel, a typed error.
#[test]
fn the_c_abi_backward_on_a_cuda_context_equals_its_emulated_run() {
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    use flashmha::capi::{flashmha_context_create, flashmha_context_destroy};
    use std::ffi::c_void;
    let seed = seed();
    let devices = cuda_support::devices();
    let pb = Problem::draw(seed);
    let ([rq, rk, rv], rz) = pb.rust_api();
    for ordinal in devices {
        let mut ctx: *mut ffi::flashmha_context = std::ptr::null_mut();
        // SAFETY: a valid pointer to a local.
        let code = unsafe { flashmha_context_create(ordinal as i32, &mut ctx) };
        assert_eq!(code, ffi::FLASHMHA_OK, "device {ordinal}");
        let cctx = cudarc::driver::CudaContext::new(ordinal).unwrap();
        let (code, p) = bwd_plan(&pb.shape, Some(ctx));
        if cctx.compute_capability().unwrap().0 < 8 {
            assert_eq!(code, ffi::FLASHMHA_ERR_UNSUPPORTED, "device {ordinal}");
            assert!(p.is_null());
            // SAFETY: destroyed once.
            unsafe { flashmha_context_destroy(ctx) };
            continue;
        }
        assert_eq!(code, ffi::FLASHMHA_OK, "device {ordinal}");
        let stream = cctx.default_stream();
        let up = |x: &[f16]| stream.clone_htod(x).unwrap();
        let (q, k, v, o, d_o) = (up(&pb.q), up(&pb.k), up(&pb.v), up(&pb.o), up(&pb.d_o));
        let lse = stream.clone_htod(&pb.lse).unwrap();
        let mut grads =
            [pb.q.len(), pb.k.len(), pb.v.len()].map(|n| stream.alloc_zeros::<f16>(n).unwrap());
        let mut ws = stream.alloc_zeros::<f32>(workspace_len(p).max(1)).unwrap();
        let z = stream.clone_htod(&pb.sinks).unwrap();
        let mut dz = stream.alloc_zeros::<f32>(pb.sinks.len()).unwrap();
        let addr = |b: &cudarc::driver::CudaSlice<f16>, n: usize| {
            raw_buf(b.device_ptr(&stream).0 as usize as *mut c_void, n)
        };
        let [gq, gk, gv] = &mut grads;
        let bufs = ffi::flashmha_bwd_bufs {
            q: addr(&q, pb.q.len()),
            k: addr(&k, pb.k.len()),
            v: addr(&v, pb.v.len()),
            o: addr(&o, pb.o.len()),
            d_o: addr(&d_o, pb.d_o.len()),
            lse: raw_buf(
                lse.device_ptr(&stream).0 as usize as *mut c_void,
                pb.lse.len(),
            ),
            // Written by the kernels: bound for writing (cudarc orders them as writes).
            dq: raw_buf(
                gq.device_ptr_mut(&stream).0 as usize as *mut c_void,
                pb.q.len(),
            ),
            dk: raw_buf(
                gk.device_ptr_mut(&stream).0 as usize as *mut c_void,
                pb.k.len(),
            ),
            dv: raw_buf(
                gv.device_ptr_mut(&stream).0 as usize as *mut c_void,
                pb.v.len(),
            ),
            workspace: raw_buf(
                ws.device_ptr_mut(&stream).0 as usize as *mut c_void,
                workspace_len(p),
            ),
            sinks: raw_buf(
                z.device_ptr(&stream).0 as usize as *mut c_void,
                pb.sinks.len(),
            ),
            d_sinks: raw_buf(
                dz.device_ptr_mut(&stream).0 as usize as *mut c_void,
                pb.sinks.len(),
            ),
            ..Default::default()
        };
        // A short dK is refused before any launch.
        let mut short = bufs;
        short.dk.len -= 1;
        // SAFETY: device buffers of this context, alive until the downloads below synchronise;
        // NULL is the legacy default stream.
        unsafe {
            assert_eq!(
                flashmha_bwd_run(ctx, p, &short, std::ptr::null_mut()),
                ffi::FLASHMHA_ERR_BUFFER
            );
            assert_eq!(
                flashmha_bwd_run(ctx, p, &bufs, std::ptr::null_mut()),
                ffi::FLASHMHA_OK,
                "device {ordinal}: {}",
                cuda_support::findings()
            );
        }
        let got = grads.each_ref().map(|g| stream.clone_dtoh(g).unwrap());
        let got_z = stream.clone_dtoh(&dz).unwrap();
        if cuda_support::emulated().is_some() {
            let f32_bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                f32_bits(&got_z),
                f32_bits(&rz),
                "device {ordinal}, seed {seed}: d_sinks"
            );
            // The same PTX on the same emulator: the same bits.
            assert_eq!(
                bits(&got[0]),
                bits(&rq),
                "device {ordinal}, seed {seed}: dq"
            );
            assert_eq!(
                bits(&got[1]),
                bits(&rk),
                "device {ordinal}, seed {seed}: dk"
            );
            assert_eq!(
                bits(&got[2]),
                bits(&rv),
                "device {ordinal}, seed {seed}: dv"
            );
        } else {
            // A GPU's f32 atomics order dQ differently: within an f16 ulp or two (|dQ| < 4).
            for (g, r) in got.iter().zip([&rq, &rk, &rv]) {
                let worst = g
                    .iter()
                    .zip(r.iter())
                    .map(|(a, b)| (a.to_f32() - b.to_f32()).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= 8e-3, "device {ordinal}, seed {seed}: {worst}");
            }
        }
        drop((ws, grads, z, dz));
        // SAFETY: live handles, destroyed once.
        unsafe {
            flashmha_bwd_plan_destroy(p);
            flashmha_context_destroy(ctx);
        }
    }
}
