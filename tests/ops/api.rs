//! The server-facing API on the emulator backend: one plan bound to the buffers of several
//! "layers", the same plan run from several threads at once (identical bits), O(1) binding
//! errors before any launch, and the thread-safety of plans and backends.

use crate::emulator_support::{rng, seed};
use flashmha::backend::emulator::{self as emu, dev_buf};
use flashmha::emulator::{Device, DevicePtr};
use flashmha::ops::forward::bind::FwdBufs;
use flashmha::reference::{self, Layout, ReferenceInputs};
use flashmha::{AttnOptions, DType, Error, FwdPlan, FwdShape, Heads};
use half::bf16;
use rand::Rng;

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

fn run_layer(dev: &mut Device, plan: &FwdPlan, layer: &Layer) -> Vec<bf16> {
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

fn random_layer(rng: &mut impl Rng, plan: &FwdPlan) -> Layer {
    let x = plan.extents();
    Layer {
        q: random_bf16(rng, x.q),
        k: random_bf16(rng, x.k),
        v: random_bf16(rng, x.v),
    }
}

#[test]
fn one_plan_serves_every_layer_and_matches_the_reference() {
    let mut rng = rng(seed());
    let shape = random_shape(&mut rng);
    let plan = FwdPlan::new(DType::Bf16, &shape).unwrap();
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
            sinks: None,
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
    let mut rng = rng(seed());
    let shape = random_shape(&mut rng);
    let plan = FwdPlan::new(DType::Bf16, &shape).unwrap();
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
    let plan = FwdPlan::new(DType::Bf16, &shape).unwrap();
    let x = *plan.extents();
    let mut rng = rng(seed());
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
    send_sync::<FwdPlan>();
    send_sync::<FwdPlan>();
    send_sync::<flashmha::cuda::CudaBackend>();
    send_sync::<Device>();
}

/// Absurd sizes (usize::MAX, 0) and strides (2^62 elements, i64::MAX, negative, an output head
/// stride of 0) given to every public plan constructor: each is a typed error, never a panic or
/// a wrapped size. Each case first plans a valid random problem (so the error is the absurd
/// value's), then the same problem with one value made absurd.
mod absurd_sizes {
    use flashmha::common::binding::DevBuf;
    use flashmha::common::dtype::DType;
    use flashmha::ops::decode::{DecodePlan, DecodeProblem, QueryLayout, SplitPolicy};
    use flashmha::ops::head_similarity::{HeadSimBuffers, HeadSimPlan, HeadSimProblem};
    use flashmha::ops::kv_append::{AppendIndex, KvAppendPlan};
    use flashmha::ops::merge::{MergePlan, MergeProblem, MergeStates, StatsLayout};
    use flashmha::{FwdPlan, FwdShape, Heads, SeqShape};
    use proptest::prelude::*;

    /// A size made absurd: the largest or the empty one.
    fn absurd_size() -> impl Strategy<Value = usize> {
        prop_oneof![Just(usize::MAX), Just(0usize)]
    }

    /// A stride no tensor of a few rows can have: past the kernels' int64 byte offsets
    /// (aligned, so only the span can refuse it), unaligned at i64::MAX, or negative.
    fn absurd_stride() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(1i64 << 62),
            Just(i64::MAX),
            Just(-8i64),
            Just(i64::MIN)
        ]
    }

    /// Where a forward shape gets its absurd value.
    #[derive(Debug, Clone)]
    enum FwdAbsurd {
        /// 0 batch, 1 seqlen_q, 2 seqlen_k, 3 heads_q, 4 heads_kv, 5 head_dim (padded).
        Size(usize, usize),
        /// Varlen total rows: 0 q, 1 k (usize::MAX only: empty varlen tensors are valid).
        VarlenTotal(usize),
        /// Tensor 0..4 (q, k, v, o), dim 0..3 (batch, row, head).
        Stride(usize, usize, i64),
        /// O's head stride 0: every head writes the same elements.
        OutputHeadsOverlap,
    }

    fn fwd_absurd() -> impl Strategy<Value = FwdAbsurd> {
        prop_oneof![
            (0..6usize, absurd_size()).prop_map(|(f, v)| FwdAbsurd::Size(f, v)),
            (0..2usize).prop_map(FwdAbsurd::VarlenTotal),
            (0..4usize, 0..3usize, absurd_stride())
                .prop_map(|(t, d, v)| FwdAbsurd::Stride(t, d, v)),
            Just(FwdAbsurd::OutputHeadsOverlap),
        ]
    }

    #[derive(Debug, Clone)]
    enum DecodeAbsurd {
        /// 0 batch, 1 sq_new, 2 heads_q, 3 heads_kv, 4 head_dim, 5 num_pages, 6 page_size,
        /// 7 max_pages_per_seq (through `DecodeProblem::contiguous`).
        Size(usize, usize),
        /// `block_table_stride`, `max_cache_len` = usize::MAX.
        BlockTableStride,
        MaxCacheLen,
        /// Varlen queries with usize::MAX total rows, or an item bound of usize::MAX.
        VarlenTotal,
        VarlenItem,
        /// Tensor 0..4 (q, o, k_cache, v_cache), dim 0..3 (batch/page, row/slot, head).
        Stride(usize, usize, i64),
        OutputHeadsOverlap,
    }

    fn decode_absurd() -> impl Strategy<Value = DecodeAbsurd> {
        prop_oneof![
            (0..8usize, absurd_size()).prop_map(|(f, v)| DecodeAbsurd::Size(f, v)),
            Just(DecodeAbsurd::BlockTableStride),
            Just(DecodeAbsurd::MaxCacheLen),
            Just(DecodeAbsurd::VarlenTotal),
            Just(DecodeAbsurd::VarlenItem),
            (0..4usize, 0..3usize, absurd_stride())
                .prop_map(|(t, d, v)| DecodeAbsurd::Stride(t, d, v)),
            Just(DecodeAbsurd::OutputHeadsOverlap),
        ]
    }

    /// The valid base of a decode / append case: every dimension has extent >= 2, so any
    /// absurd stride is stepped by.
    #[derive(Debug, Clone, Copy)]
    struct DecodeBase {
        batch: usize,
        sq_new: usize,
        hkv: usize,
        group: usize,
        d: usize,
        pages_per_seq: usize,
        page_size: usize,
        hnd: bool,
    }

    fn decode_base() -> impl Strategy<Value = DecodeBase> {
        (
            2..=4usize,
            2..=3usize,
            2..=4usize,
            1..=4usize,
            prop_oneof![Just(64usize), Just(128)],
            2..=6usize,
            2..=40usize,
            any::<bool>(),
        )
            .prop_map(
                |(batch, sq_new, hkv, group, d, pages_per_seq, page_size, hnd)| DecodeBase {
                    batch,
                    sq_new,
                    hkv,
                    group,
                    d,
                    pages_per_seq,
                    page_size,
                    hnd,
                },
            )
    }

    fn decode_problem(b: DecodeBase, absurd: Option<&DecodeAbsurd>) -> DecodeProblem {
        let mut sizes = [
            b.batch,
            b.sq_new,
            b.hkv * b.group,
            b.hkv,
            b.d,
            b.batch * b.pages_per_seq,
            b.page_size,
            b.pages_per_seq,
        ];
        if let Some(DecodeAbsurd::Size(f, v)) = absurd {
            sizes[*f] = *v;
        }
        let [batch, sq_new, hq, hkv, d, pages, page_size, per_seq] = sizes;
        let mut p = DecodeProblem::contiguous(
            DType::F16,
            batch,
            sq_new,
            hq,
            hkv,
            d,
            pages,
            page_size,
            per_seq,
            b.hnd,
        );
        match absurd {
            Some(DecodeAbsurd::BlockTableStride) => p.block_table_stride = usize::MAX,
            Some(DecodeAbsurd::MaxCacheLen) => p.max_cache_len = usize::MAX,
            Some(DecodeAbsurd::VarlenTotal) => {
                p.queries = QueryLayout::Varlen {
                    total_q: usize::MAX,
                    max_seqlen_q: 1,
                }
            }
            Some(DecodeAbsurd::VarlenItem) => {
                p.queries = QueryLayout::Varlen {
                    total_q: 2,
                    max_seqlen_q: usize::MAX,
                }
            }
            Some(DecodeAbsurd::Stride(t, dim, v)) => {
                let (q, o) = (&mut p.q_strides, &mut p.o_strides);
                let (k, vv) = (&mut p.k_strides, &mut p.v_strides);
                *match (t, dim) {
                    (0, 0) => &mut q.batch,
                    (0, 1) => &mut q.row,
                    (0, _) => &mut q.head,
                    (1, 0) => &mut o.batch,
                    (1, 1) => &mut o.row,
                    (1, _) => &mut o.head,
                    (2, 0) => &mut k.page,
                    (2, 1) => &mut k.slot,
                    (2, _) => &mut k.head,
                    (_, 0) => &mut vv.page,
                    (_, 1) => &mut vv.slot,
                    (_, _) => &mut vv.head,
                } = *v;
            }
            Some(DecodeAbsurd::OutputHeadsOverlap) => p.o_strides.head = 0,
            _ => {}
        }
        p
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn forward_plans_refuse_absurd_sizes(
            batch in 2..=4usize, sq in 2..=64usize, sk in 2..=64usize, hkv in 2..=4usize,
            group in 1..=2usize, d in prop_oneof![Just(64usize), Just(128)],
            varlen in any::<bool>(), absurd in fwd_absurd(),
        ) {
            let mut sizes = [batch, sq, sk, hkv * group, hkv, d];
            let (mut total_q, mut total_k) = (batch * sq, batch * sk);
            // Padded when a stride is made absurd (varlen ignores the batch stride) or a length
            // 0 (a varlen item may be empty).
            let varlen = varlen
                && !matches!(absurd, FwdAbsurd::Stride(..) | FwdAbsurd::Size(1 | 2, 0));
            let build = |sizes: [usize; 6], total_q, total_k| {
                let [batch, sq, sk, hq, hkv, d] = sizes;
                let heads = Heads::gqa(hq, hkv);
                if varlen {
                    let seq = SeqShape::Varlen {
                        batch, max_seqlen_q: sq, max_seqlen_k: sk, total_q, total_k,
                    };
                    FwdShape::varlen(seq, heads, d)
                } else {
                    FwdShape::padded(batch, sq, sk, heads, d)
                }
            };
            let valid = build(sizes, total_q, total_k);
            prop_assert!(FwdPlan::new(DType::F16, &valid).is_ok(), "{valid:?}");
            let mut shape = match absurd {
                FwdAbsurd::Size(f, v) => {
                    sizes[f] = v;
                    build(sizes, total_q, total_k)
                }
                FwdAbsurd::VarlenTotal(which) => {
                    if which == 0 { total_q = usize::MAX } else { total_k = usize::MAX }
                    let seq = SeqShape::Varlen {
                        batch, max_seqlen_q: sq, max_seqlen_k: sk, total_q, total_k,
                    };
                    FwdShape::varlen(seq, Heads::gqa(hkv * group, hkv), d)
                }
                _ => valid,
            };
            match absurd {
                FwdAbsurd::Stride(t, dim, v) => {
                    let st = &mut shape.strides;
                    let s = match t { 0 => &mut st.q, 1 => &mut st.k, 2 => &mut st.v, _ => &mut st.o };
                    *match dim { 0 => &mut s.batch, 1 => &mut s.row, _ => &mut s.head } = v;
                }
                FwdAbsurd::OutputHeadsOverlap => shape.strides.o.head = 0,
                _ => {}
            }
            let result = FwdPlan::new(DType::F16, &shape);
            prop_assert!(result.is_err(), "{absurd:?} planned: {shape:?}");
        }

        #[test]
        fn decode_and_append_plans_refuse_absurd_sizes(
            base in decode_base(), absurd in decode_absurd(), tokens in 1..=9usize,
        ) {
            let valid = decode_problem(base, None);
            prop_assert!(DecodePlan::new(&valid, SplitPolicy::Count(2)).is_ok(), "{valid:?}");
            prop_assert!(KvAppendPlan::new(&valid, tokens, AppendIndex::Slots).is_ok());
            let p = decode_problem(base, Some(&absurd));
            let decode = DecodePlan::new(&p, SplitPolicy::Count(2));
            prop_assert!(decode.is_err(), "{absurd:?} planned: {p:?}");
            // The append reads the pools' geometry only: q / o and the query bounds are the
            // decode's.
            let append_reads = match absurd {
                DecodeAbsurd::Size(f, _) => ![1, 2].contains(&f),
                DecodeAbsurd::BlockTableStride => true,
                DecodeAbsurd::Stride(t, ..) => t >= 2,
                _ => false,
            };
            let append = KvAppendPlan::new(&p, tokens, AppendIndex::Positions);
            if append_reads {
                prop_assert!(append.is_err(), "{absurd:?} planned an append: {p:?}");
            }
            let append = KvAppendPlan::new(&valid, usize::MAX, AppendIndex::Slots);
            prop_assert!(append.is_err());
        }

        #[test]
        fn merge_and_head_similarity_plans_refuse_absurd_sizes(
            rows in 1..=64usize, heads in 1..=8usize, d in prop_oneof![Just(64usize), Just(128)],
            states in 2..=5usize, field in 0..4usize, value in absurd_size(),
            stride in absurd_stride(),
        ) {
            let merge = |sizes: [usize; 4]| MergeProblem {
                dtype: DType::F16,
                states: MergeStates::Stacked { num_states: sizes[0] },
                rows: sizes[1],
                heads: sizes[2],
                head_dim: sizes[3],
                lse_layout: StatsLayout::HeadsRows,
            };
            let mut sizes = [states, rows, heads, d];
            prop_assert!(MergePlan::new(&merge(sizes)).is_ok());
            sizes[field] = value;
            prop_assert!(MergePlan::new(&merge(sizes)).is_err(), "{sizes:?}");

            // Plan, then bind to buffers as long as the contiguous tensors (saturating).
            let plan_head_similarity = |p: &HeadSimProblem| {
                let o_len = p.num_tokens.saturating_mul(p.num_heads).saturating_mul(p.head_dim);
                let bufs = HeadSimBuffers {
                    o: DevBuf::new(1 << 32, o_len),
                    gram: DevBuf::new(1 << 40, p.num_heads.saturating_mul(p.num_heads)),
                };
                HeadSimPlan::new(p).and_then(|plan| plan.bind(&bufs))
            };
            let heads = heads + 1; // a stride is only stepped by with two heads or more
            let mut sizes = [rows + 1, heads, d];
            prop_assert!(plan_head_similarity(
                &HeadSimProblem::contiguous(DType::F16, sizes[0], sizes[1], sizes[2]),
            ).is_ok());
            let valid = HeadSimProblem::contiguous(DType::F16, sizes[0], sizes[1], sizes[2]);
            if field < 3 {
                sizes[field] = value;
                let p = HeadSimProblem::contiguous(DType::F16, sizes[0], sizes[1], sizes[2]);
                prop_assert!(plan_head_similarity(&p).is_err(), "{p:?}");
            } else {
                for p in [
                    HeadSimProblem { token_stride: stride, ..valid },
                    HeadSimProblem { head_stride: stride, ..valid },
                ] {
                    prop_assert!(plan_head_similarity(&p).is_err(), "{p:?}");
                }
            }
        }
    }

    /// The case: `seqlen_q = seqlen_k = usize::MAX` is an overflow error in Rust and
    /// `FLASHMHA_ERR_OVERFLOW` through the C ABI (it was a panic, reported as internal).
    #[test]
    fn usize_max_lengths_are_an_overflow_error_in_rust_and_in_c() {
        let shape = FwdShape::padded(1, usize::MAX, usize::MAX, Heads::mha(2), 64);
        assert!(matches!(
            FwdPlan::new(DType::F16, &shape),
            Err(flashmha::Error::Overflow32 {
                limit: flashmha::common::error::Limit::SeqlenSum,
                ..
            })
        ));
        #[cfg(feature = "capi")]
        {
            use flashmha::capi::ffi;
            let s = crate::capi_support::padded_shape(
                ffi::FLASHMHA_DTYPE_F16,
                (usize::MAX, usize::MAX),
                (2, 2),
                64,
            );
            let mut p: *mut ffi::flashmha_plan = std::ptr::null_mut();
            // SAFETY: valid pointers to locals; nothing is created on failure.
            let code = unsafe { flashmha::capi::flashmha_plan_create(&s, &mut p) };
            assert_eq!(code, ffi::FLASHMHA_ERR_OVERFLOW);
            assert!(p.is_null());
        }
    }
}

/// One aliasing rule for both paths of the C ABI: `o` overlapping `q` is `FLASHMHA_ERR_BUFFER`
/// in the emulator entry as it is on a GPU (the emulator copies host buffers into its own
/// allocations, which hid the overlap), and the same buffers without the overlap run.
#[cfg(feature = "capi")]
#[test]
fn the_c_emulator_entry_refuses_o_aliasing_q_like_the_gpu_path() {
    use crate::capi_support::{self, buf, padded_shape};
    use flashmha::capi::{ffi, flashmha_emulate_run, flashmha_plan_destroy};
    let mut rng = rng(seed());
    let (sq, sk, h, d) = (rng.random_range(1..=40), rng.random_range(1..=40), 2, 64);
    let s = padded_shape(ffi::FLASHMHA_DTYPE_BF16, (sq, sk), (h, h), d);
    let plan = capi_support::plan(&s, None);
    let (nq, nk) = (sq * h * d, sk * h * d);
    let mut q = random_bf16(&mut rng, nq);
    let mut k = random_bf16(&mut rng, nk);
    let mut v = random_bf16(&mut rng, nk);
    let mut o = vec![bf16::ZERO; nq];
    let mut bufs = ffi::flashmha_bufs {
        q: buf(&mut q),
        k: buf(&mut k),
        v: buf(&mut v),
        o: buf(&mut o),
        ..Default::default()
    };
    // SAFETY: every buffer is a live Vec of its declared length; `plan` is live.
    assert_eq!(
        unsafe { flashmha_emulate_run(plan, &bufs) },
        ffi::FLASHMHA_OK
    );
    assert!(o.iter().all(|x| x.is_finite()) && o.iter().any(|x| *x != bf16::ZERO));
    let q_before = q.clone();
    bufs.o = buf(&mut q);
    // SAFETY: as above (o and q are the same live Vec; the call must refuse before writing).
    assert_eq!(
        unsafe { flashmha_emulate_run(plan, &bufs) },
        ffi::FLASHMHA_ERR_BUFFER
    );
    assert_eq!(q, q_before, "nothing is written");
    // SAFETY: destroyed once.
    unsafe { flashmha_plan_destroy(plan) };
}
