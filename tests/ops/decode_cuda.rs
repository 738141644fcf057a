//! The CUDA launch path of paged decode (and the CUDA backend's module loading, tensor maps and
//! the C ABI's CUDA entry points). Random paged cases run through the host runner on every CUDA
//! device (the `Backend` calls a server makes) and match the candle reference: on the emulated
//! driver's sm_80, sm_75 and sm_90 devices in CI (tests/support/cuda.rs), on the real devices
//! with `FLASHMHA_REAL_GPU=1`. The O(1) checks the CUDA path makes before any launch are the
//! plan's, tested here on addresses alone.

use crate::cuda_support;
use crate::emulator_support::{rng, seed};
use flashmha::api::{Attention, KvAppendArgs, MergeArgs};
use flashmha::check::decode::{run_decode_case_on, DecodeCase};
use flashmha::common::binding::DevBuf;
use flashmha::common::dtype::DType;
use flashmha::common::error::{AlignWhat, Error, TensorName};
use flashmha::cuda::{driver_present, CudaBackend};
use flashmha::host::emulated_decode::{kv_append_into_for, merge};
use flashmha::host::emulated_decode::{AppendTarget, HostPools, MergeHostInputs};
use flashmha::ops::decode::kernels::DECODE_KERNELS;
use flashmha::ops::decode::{DecodeBuffers, DecodePlan, DecodeProblem, KvCacheDType, SplitPolicy};
use flashmha::ops::kv_append::{AppendIndex, KvAppendPlan};
use flashmha::ops::merge::{MergePlan, MergeProblem, MergeStates, StatsLayout};
use flashmha::KernelTarget;
use half::f16;
use rand::Rng;

#[test]
fn without_a_driver_decode_is_a_typed_error_with_one_it_loads() {
    // In this test binary the emulated driver (or a GPU runner's real one) is always present:
    // the no-driver branch is taken by the library's unit tests, which never load it.
    cuda_support::emulated();
    match CudaBackend::new(0) {
        Err(Error::NoCudaDriver { reason }) => {
            assert!(!driver_present());
            assert!(reason.contains("libcuda"), "{reason}");
        }
        // A driver without a usable device is still a typed error, never a panic.
        Err(e) => assert!(driver_present(), "{e}"),
        // With a GPU: any device the crate supports (a T4, compute capability 7.5, included)
        // opens on the kernels of its own target.
        Ok(b) => {
            let (major, minor) = b.compute_capability();
            assert_eq!(
                KernelTarget::for_compute_capability(major, minor),
                Some(b.target()),
                "compute capability {major}.{minor}"
            );
        }
    }
}

#[test]
fn the_checks_before_any_launch_are_typed() {
    let case = DecodeCase::uniform(
        DType::F16,
        128,
        2,
        2,
        4,
        1,
        16,
        300,
        SplitPolicy::Count(3),
        1,
    );
    let built = case.build();
    let plan = DecodePlan::new(&built.problem, case.split).unwrap();
    let p = &plan.problem;
    // Addresses only (nothing runs): each buffer in its own 1 MiB slot.
    let slot = |i: u64, len: u64| DevBuf {
        addr: (i + 1) << 20,
        len,
    };
    let ws_len = plan.workspace.elems();
    let (po, pl, pe) = plan.carve_workspace(slot(9, ws_len)).unwrap();
    let good = DecodeBuffers {
        q: slot(0, p.q_span(&p.q_strides)),
        k_cache: slot(1, p.cache_span(&p.k_strides)),
        v_cache: slot(2, p.cache_span(&p.v_strides)),
        o: slot(3, p.q_span(&p.o_strides)),
        block_table: slot(4, built.inputs.block_table.len() as u64),
        cache_seqlens: slot(5, 2),
        partial_o: po,
        partial_lse: pl,
        partial_entropy: pe,
        ..Default::default()
    };
    assert!(plan.params(&good).is_ok());
    // The workspace the plan states, and not one element less.
    assert!(matches!(
        plan.carve_workspace(slot(9, ws_len - 1)),
        Err(Error::BufferTooSmall {
            tensor: TensorName::Workspace,
            ..
        })
    ));
    // o written over the V pool.
    let aliased = DecodeBuffers {
        o: DevBuf {
            addr: good.v_cache.addr + 64,
            ..good.o
        },
        ..good
    };
    assert!(matches!(
        plan.params(&aliased),
        Err(Error::Alias {
            a: TensorName::O,
            b: TensorName::VCache
        })
    ));
    // A workspace carved at an address that breaks the 16-byte partial-O stores.
    let (po, pl, pe) = plan
        .carve_workspace(DevBuf {
            addr: (10 << 20) + 4,
            len: ws_len,
        })
        .unwrap();
    assert!(matches!(
        plan.params(&DecodeBuffers {
            partial_o: po,
            partial_lse: pl,
            partial_entropy: pe,
            ..good
        }),
        Err(Error::Misaligned {
            tensor: TensorName::PartialO,
            what: AlignWhat::Base,
            ..
        })
    ));
    // The block table one row short.
    assert!(matches!(
        plan.params(&DecodeBuffers {
            block_table: slot(4, built.inputs.block_table.len() as u64 - 1),
            ..good
        }),
        Err(Error::BufferTooSmall {
            tensor: TensorName::BlockTable,
            ..
        })
    ));
}

#[test]
fn random_paged_decode_on_the_gpu_matches_the_reference() {
    cuda_support::backends(|_| true)
        .iter()
        .for_each(random_paged_decode_on);
}

fn random_paged_decode_on(backend: &CudaBackend) {
    let seed = seed();
    let mut rng = rng(seed);
    // The device's kernels: on a T4 (Turing) f16 at the Turing head dims over 16-bit pages; on
    // an H100 the Ampere decode rows it shares.
    let target = backend.target();
    let mut dims: Vec<usize> = DECODE_KERNELS
        .iter()
        .filter(|r| r.target == target.shared_kernels())
        .map(|r| r.head_dim as usize)
        .collect();
    dims.sort_unstable();
    dims.dedup();
    let dtypes: &[DType] = if target.supports(DType::Bf16) {
        &[DType::F16, DType::Bf16]
    } else {
        &[DType::F16]
    };
    // A GPU runs many cases; each costs the emulated driver an emulator run.
    let cases = if cuda_support::emulated().is_some() {
        3
    } else {
        32
    };
    for n in 0..cases {
        let case = DecodeCase::random_on(&mut rng, Some(target), dtypes, &dims, 700);
        let failures = run_decode_case_on(backend, target, &case)
            .unwrap()
            .failures();
        assert!(
            failures.is_empty(),
            "case {n} ({}), seed {seed}: {failures:?}",
            case.describe()
        );
    }
}

#[test]
fn merge_pair_and_kv_append_on_the_gpu_match_the_emulator() {
    cuda_support::backends(|_| true)
        .iter()
        .for_each(merge_pair_and_kv_append_on);
}

fn merge_pair_and_kv_append_on(backend: &CudaBackend) {
    let seed = seed();
    let mut rng = rng(seed);
    let stream = backend.context().default_stream();

    // Merge of two separate states; some rows empty in one state or both.
    let (rows, heads, d) = (rng.random_range(1..=9), rng.random_range(1..=8), 128);
    let n = rows * heads;
    let draw_o = |rng: &mut rand::rngs::StdRng| -> Vec<u16> {
        (0..n * d)
            .map(|_| f16::from_f32(rng.random_range(-1.0..1.0)).to_bits())
            .collect()
    };
    let draw_lse = |rng: &mut rand::rngs::StdRng| -> Vec<f32> {
        (0..n)
            .map(|i| {
                if i % 5 == 0 {
                    f32::NEG_INFINITY
                } else {
                    rng.random_range(-6.0..6.0)
                }
            })
            .collect()
    };
    let (o_a, lse_a, o_b, mut lse_b) = (
        draw_o(&mut rng),
        draw_lse(&mut rng),
        draw_o(&mut rng),
        draw_lse(&mut rng),
    );
    lse_b[n - 1] = f32::NEG_INFINITY;
    let problem = MergeProblem {
        dtype: DType::F16,
        states: MergeStates::Pair,
        rows,
        heads,
        head_dim: d,
        lse_layout: StatsLayout::HeadsRows,
    };
    // The device's own kernels (sm_75 ones on a T4), emulated and on the GPU alike.
    let target = backend.target();
    let plan = MergePlan::new_for(target, &problem).unwrap();
    let emulated = merge(
        &plan,
        &MergeHostInputs {
            o_states: &o_a,
            lse_states: &lse_a,
            o_b: Some(&o_b),
            lse_b: Some(&lse_b),
        },
    )
    .unwrap();
    let up16 = |v: &[u16]| {
        stream
            .clone_htod(bytemuck::cast_slice::<u16, f16>(v))
            .unwrap()
    };
    let (da, db) = (up16(&o_a), up16(&o_b));
    let (la, lb) = (
        stream.clone_htod(&lse_a).unwrap(),
        stream.clone_htod(&lse_b).unwrap(),
    );
    let mut o = up16(&vec![0xFFFF; n * d]);
    let mut lse = stream.clone_htod(&vec![f32::NAN; n]).unwrap();
    backend
        .merge_states(
            &stream,
            &plan,
            MergeArgs::pair(&da, &la, &db, &lb, &mut o).lse(&mut lse),
        )
        .unwrap();
    let got_o: Vec<f16> = stream.clone_dtoh(&o).unwrap();
    let got_lse: Vec<f32> = stream.clone_dtoh(&lse).unwrap();
    for (i, (g, e)) in got_o.iter().zip(&emulated.o).enumerate() {
        let (g, e) = (g.to_f32(), f16::from_bits(*e).to_f32());
        assert!(
            (g - e).abs() <= 2e-3,
            "o[{i}]: gpu {g} emulator {e}, seed {seed}"
        );
    }
    for (i, (g, e)) in got_lse.iter().zip(&emulated.lse).enumerate() {
        assert!(
            g == e || (g - e).abs() <= 1e-5,
            "lse[{i}]: gpu {g} emulator {e}, seed {seed}"
        );
    }

    // KV append: a pure copy, so the GPU pools equal the emulator's bit for bit.
    let (hkv, ps, pages, tokens) = (2, rng.random_range(2..=40), 5, 7);
    let p = DecodeProblem::contiguous(DType::F16, 1, 1, hkv, hkv, d, pages, ps, 1, false);
    let span = p.cache_span(&p.k_strides) as usize;
    let k0: Vec<u16> = (0..span).map(|_| rng.random()).collect();
    let v0: Vec<u16> = (0..span).map(|_| rng.random()).collect();
    let kn: Vec<u16> = (0..tokens * hkv * d).map(|_| rng.random()).collect();
    let vn: Vec<u16> = (0..tokens * hkv * d).map(|_| rng.random()).collect();
    let slots: Vec<i32> = (0..tokens)
        // Distinct slots spread over the pools (duplicates would race), one padding token.
        .map(|t| {
            if t == 3 {
                -1
            } else {
                (t * (pages * ps / tokens)) as i32
            }
        })
        .collect();
    let pools = HostPools::Bits16 {
        k: k0.clone(),
        v: v0.clone(),
    };
    let (appended, report) =
        kv_append_into_for(target, &p, &pools, &kn, &vn, AppendTarget::Slots(&slots)).unwrap();
    assert!(report.findings.is_empty());
    let HostPools::Bits16 { k: k_emu, v: v_emu } = appended else {
        panic!("16-bit pools come back as 16-bit pools");
    };
    let plan = KvAppendPlan::new_for(target, &p, tokens, AppendIndex::Slots).unwrap();
    let (dkn, dvn) = (up16(&kn), up16(&vn));
    let (mut dk, mut dv) = (up16(&k0), up16(&v0));
    let dslots = stream.clone_htod(&slots).unwrap();
    backend
        .kv_append(
            &stream,
            &plan,
            KvAppendArgs::new(&dkn, &dvn, &mut dk, &mut dv).slots(&dslots),
        )
        .unwrap();
    let k_gpu: Vec<f16> = stream.clone_dtoh(&dk).unwrap();
    let v_gpu: Vec<f16> = stream.clone_dtoh(&dv).unwrap();
    assert!(k_gpu.iter().map(|x| x.to_bits()).eq(k_emu.iter().copied()));
    assert!(v_gpu.iter().map(|x| x.to_bits()).eq(v_emu.iter().copied()));
}

/// FP8 append through block table + positions on the GPU equals the emulator bit for bit (the
/// quantisation is integer and round-to-nearest-even, so both backends produce the same codes).
#[test]
fn fp8_kv_append_at_positions_on_the_gpu_matches_the_emulator() {
    // FP8 pages are an sm_80+ feature (the plan refuses them on sm_75 with a typed error).
    cuda_support::backends(|t| t != KernelTarget::Turing)
        .iter()
        .for_each(fp8_kv_append_at_positions_on);
}

fn fp8_kv_append_at_positions_on(backend: &CudaBackend) {
    let seed = seed();
    let mut rng = rng(seed);
    let stream = backend.context().default_stream();
    let (batch, hkv, d, ps, pages_per_seq) = (2, 2, 128, rng.random_range(1..=20), 3);
    let pages = batch * pages_per_seq;
    for kv in [KvCacheDType::Fp8E4M3, KvCacheDType::Fp8E5M2] {
        let mut p = DecodeProblem::contiguous(
            DType::F16,
            batch,
            1,
            hkv,
            hkv,
            d,
            pages,
            ps,
            pages_per_seq,
            false,
        );
        p.kv_dtype = kv;
        let span = p.cache_span(&p.k_strides) as usize;
        let block_table: Vec<i32> = (0..pages as i32).rev().collect();
        // One new token per sequence at a random position of its pages, plus a skipped one.
        let token_batch: Vec<i32> = vec![0, 1, 1];
        let token_pos: Vec<i32> = vec![
            rng.random_range(0..(pages_per_seq * ps) as i32),
            rng.random_range(0..(pages_per_seq * ps) as i32),
            -1,
        ];
        let tokens = token_pos.len();
        let rows = |rng: &mut rand::rngs::StdRng| -> Vec<u16> {
            (0..tokens * hkv * d)
                .map(|_| f16::from_f32(rng.random_range(-40.0..40.0)).to_bits())
                .collect()
        };
        let (kn, vn) = (rows(&mut rng), rows(&mut rng));
        let codes: Vec<u8> = (0..span).map(|_| rng.random()).collect();
        let (k_scales, v_scales) = (vec![0.5f32; 1], vec![0.25f32; 1]);
        let pools = HostPools::Fp8 {
            k: codes.clone(),
            v: codes.clone(),
            k_scales: k_scales.clone(),
            v_scales: v_scales.clone(),
        };
        let target = AppendTarget::Positions {
            block_table: &block_table,
            token_batch: &token_batch,
            token_pos: &token_pos,
        };
        let (emulated, report) =
            kv_append_into_for(KernelTarget::Ampere, &p, &pools, &kn, &vn, target).unwrap();
        assert!(report.findings.is_empty());
        let HostPools::Fp8 {
            k: k_emu, v: v_emu, ..
        } = emulated
        else {
            panic!("FP8 pools come back as FP8 pools");
        };
        let plan = KvAppendPlan::new(&p, tokens, AppendIndex::Positions).unwrap();
        let up16 = |x: &[u16]| {
            stream
                .clone_htod(&x.iter().map(|&b| f16::from_bits(b)).collect::<Vec<_>>())
                .unwrap()
        };
        let (dkn, dvn) = (up16(&kn), up16(&vn));
        let (mut dk, mut dv) = (
            stream.clone_htod(&codes).unwrap(),
            stream.clone_htod(&codes).unwrap(),
        );
        let (dks, dvs) = (
            stream.clone_htod(&k_scales).unwrap(),
            stream.clone_htod(&v_scales).unwrap(),
        );
        let (dbt, dtb, dtp) = (
            stream.clone_htod(&block_table).unwrap(),
            stream.clone_htod(&token_batch).unwrap(),
            stream.clone_htod(&token_pos).unwrap(),
        );
        let args =
            KvAppendArgs::fp8(&dkn, &dvn, &mut dk, &mut dv, &dks, &dvs).positions(&dbt, &dtb, &dtp);
        backend.kv_append(&stream, &plan, args).unwrap();
        let k_gpu: Vec<u8> = stream.clone_dtoh(&dk).unwrap();
        let v_gpu: Vec<u8> = stream.clone_dtoh(&dv).unwrap();
        assert_eq!(k_gpu, k_emu, "{kv:?} K codes, seed {seed}");
        assert_eq!(v_gpu, v_emu, "{kv:?} V codes, seed {seed}");
    }
}

/// Each module of a device's target is loaded once per context (moved from the library's unit
/// tests, which must stay free of any driver): the backend's count, and the driver's own log of
/// loads (no module twice in one context).
#[test]
fn each_module_of_the_target_is_loaded_once_per_context() {
    use flashmha::cuda::{choose_image, modules_for, ImageChoice};
    for backend in cuda_support::backends(|_| true) {
        let (major, minor) = backend.compute_capability();
        let expected = modules_for(backend.target())
            .filter(|m| !matches!(choose_image(m, major, minor), ImageChoice::None))
            .count();
        assert_eq!(backend.modules_loaded(), expected);
        // Another backend over the same context (e.g. a candle device's) loads each once too.
        let before = cuda_support::emulated().map(|d| d.thread_module_loads().len());
        let again = CudaBackend::on_context(backend.context().clone()).unwrap();
        assert_eq!(again.modules_loaded(), expected);
        if let (Some(d), Some(before)) = (cuda_support::emulated(), before) {
            let loads = d.thread_module_loads()[before..].to_vec();
            assert_eq!(loads.len(), expected);
            let ctx = backend.context().cu_ctx() as u64;
            assert!(
                loads.iter().all(|&(c, _)| c == ctx),
                "loaded into another context"
            );
            let distinct: std::collections::BTreeSet<u64> = loads.iter().map(|&(_, h)| h).collect();
            assert_eq!(distinct.len(), expected, "a module loaded twice");
        }
    }
}

/// The sm_90a MLA decode of 128 heads launches 2-CTA clusters (cuLaunchKernelEx with the
/// cluster-dimension attribute) and matches the reference on the Hopper devices.
#[test]
fn mla_decode_cluster_launches_run_on_the_cuda_path() {
    use flashmha::check::mla::{random_case_for, run_case_on};
    let mut rng = rng(seed());
    for backend in cuda_support::backends(|t| t == KernelTarget::Hopper) {
        let mut case = random_case_for(&mut rng, KernelTarget::Hopper, &[128], 140);
        case.kv_dtype = KvCacheDType::Same;
        case.page_size = 64;
        case.spare_pages = case.spare_pages.max(1);
        let out = run_case_on(&backend, &case).unwrap_or_else(|e| panic!("{e}\n{case:?}"));
        assert_eq!(out.plan.decode.cluster, [2, 1, 1]);
        assert!(
            out.judgement.passed(),
            "{:?}\n{case:?}",
            out.judgement.failures()
        );
    }
}

/// The driver encodes the sm_90a forward's planned tensor maps, and a stride that is not a
/// multiple of 16 is its typed error (moved from the library's unit tests).
#[test]
fn the_driver_encodes_the_planned_maps_and_rejects_a_bad_stride() {
    use flashmha::backend::Backend;
    use flashmha::host::problem::FwdProblem;
    use flashmha::ops::forward::tma::FwdTmaMaps;
    // cuTensorMapEncodeTiled needs an initialised driver (and tensor maps need 9.0+).
    for backend in cuda_support::backends(|t| t == KernelTarget::Hopper) {
        let p = FwdProblem::varlen(DType::F16, (vec![0, 7, 40], vec![0, 90, 91]), (8, 2), 128);
        let maps = FwdTmaMaps::describe(&p.shape().unwrap(), 128, 128);
        for desc in [maps.q, maps.k, maps.v] {
            let bytes = backend
                .encode_tensor_map("q", &desc, 0x7f00_0000_0000)
                .expect("a valid map");
            assert!(bytes.iter().any(|&b| b != 0), "the driver wrote the map");
        }
        let mut bad = maps.q;
        bad.global_strides[1] += 8;
        assert!(matches!(
            backend.encode_tensor_map("q", &bad, 0x7f00_0000_0000),
            Err(Error::Cuda { .. })
        ));
    }
}

/// The C ABI's CUDA entry points on each device: a context, a plan for its kernels and
/// `flashmha_run` on raw device addresses (from cudarc, in the context's primary context) give
/// the same O as `flashmha_emulate_run` of the same plan on host buffers (the same bits on the
/// emulated driver), and a context's errors are the C status codes.
#[cfg(feature = "capi")]
#[test]
fn the_c_abi_forward_on_a_cuda_context_equals_its_emulated_run() {
    use crate::capi_support::{self, buf, padded_shape, raw_buf};
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    use flashmha::capi::{
        ffi, flashmha_context_create, flashmha_context_destroy, flashmha_emulate_run,
        flashmha_plan_destroy, flashmha_run,
    };
    use std::ffi::c_void;
    let seed = seed();
    let mut rng = rng(seed);
    for ordinal in cuda_support::devices() {
        let mut ctx: *mut ffi::flashmha_context = std::ptr::null_mut();
        // SAFETY: a valid pointer to a local.
        let code = unsafe { flashmha_context_create(ordinal as i32, &mut ctx) };
        assert_eq!(code, ffi::FLASHMHA_OK, "device {ordinal}");
        let (sq, sk, h, d) = (rng.random_range(1..=70), rng.random_range(1..=90), 2, 128);
        let s = padded_shape(ffi::FLASHMHA_DTYPE_F16, (sq, sk), (h, h), d);
        let plan = capi_support::plan(&s, Some(ctx));
        let (nq, nk) = (sq * h * d, sk * h * d);
        let draw = |rng: &mut rand::rngs::StdRng, n: usize| -> Vec<f16> {
            (0..n)
                .map(|_| f16::from_f32(rng.random_range(-1.0..1.0)))
                .collect()
        };
        let (mut q, mut k, mut v) = (draw(&mut rng, nq), draw(&mut rng, nk), draw(&mut rng, nk));
        let mut o_emu = vec![f16::ZERO; nq];
        let host = ffi::flashmha_bufs {
            q: buf(&mut q),
            k: buf(&mut k),
            v: buf(&mut v),
            o: buf(&mut o_emu),
            ..Default::default()
        };
        // SAFETY: live host Vecs of the declared lengths and a live plan.
        assert_eq!(
            unsafe { flashmha_emulate_run(plan, &host) },
            ffi::FLASHMHA_OK
        );

        let cctx = cudarc::driver::CudaContext::new(ordinal).unwrap();
        let stream = cctx.default_stream();
        let (dq, dk, dv) = (
            stream.clone_htod(&q).unwrap(),
            stream.clone_htod(&k).unwrap(),
            stream.clone_htod(&v).unwrap(),
        );
        let mut o = stream.alloc_zeros::<f16>(nq).unwrap();
        let addr =
            |b: &cudarc::driver::CudaSlice<f16>| b.device_ptr(&stream).0 as usize as *mut c_void;
        let dev = ffi::flashmha_bufs {
            q: raw_buf(addr(&dq), nq),
            k: raw_buf(addr(&dk), nk),
            v: raw_buf(addr(&dv), nk),
            // Written by the kernel: bound for writing (cudarc orders it as a write).
            o: raw_buf(o.device_ptr_mut(&stream).0 as usize as *mut c_void, nq),
            ..Default::default()
        };
        // SAFETY: device buffers of this context, alive until the stream ran the kernel (the
        // download below synchronises); NULL is the legacy default stream.
        let code = unsafe { flashmha_run(ctx, plan, &dev, std::ptr::null_mut()) };
        assert_eq!(code, ffi::FLASHMHA_OK, "device {ordinal}");
        let got = stream.clone_dtoh(&o).unwrap();
        // Bit for bit on the emulated driver (the same PTX on the same emulator); a GPU's
        // tensor cores round differently, within an f16 ulp or two of these O values (|O| < 1).
        let worst = got
            .iter()
            .zip(&o_emu)
            .map(|(g, e)| (g.to_f32() - e.to_f32()).abs())
            .fold(0.0f32, f32::max);
        let allowed = if cuda_support::emulated().is_some() {
            0.0
        } else {
            2e-3
        };
        assert!(
            worst <= allowed && got.iter().all(|x| x.is_finite()),
            "device {ordinal}, seed {seed}: the GPU path differs from the emulated one by {worst}"
        );
        // A too-short O is the C buffer error, before any launch.
        let mut short = dev;
        short.o.len = (nq - 1) as _;
        // SAFETY: as above; the call refuses before launching.
        let code = unsafe { flashmha_run(ctx, plan, &short, std::ptr::null_mut()) };
        assert_eq!(code, ffi::FLASHMHA_ERR_BUFFER);
        drop(o);
        // SAFETY: live handles, destroyed once.
        unsafe {
            flashmha_plan_destroy(plan);
            flashmha_context_destroy(ctx);
        }
    }
}
