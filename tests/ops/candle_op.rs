//! The candle op (`flashmha::candle`) on CPU tensors, which run the embedded PTX on the
//! emulator: property tests with random shapes and values (padded, varlen, GQA/MQA, causal)
//! against the candle reference, with the tolerances of `flashmha::reference::ErrorModel`
//! (the same model `flashmha check` and the kernel property tests use), and the errors for bad
//! dims, dtypes, devices and cu_seqlens. Set FLASHMHA_PROPTEST_CASES to run more cases.

use crate::emulator_support::seed;
use candle_core::{DType as CDType, Device, Tensor};
use flashmha::candle::{attention, attention_varlen, attention_with_sinks};
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::reference::{self, ErrorModel, Layout, ReferenceInputs, Tolerance};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cases() -> u32 {
    crate::varlen_case::proptest_cases(32)
}

/// The candle dtype of `d` (also the candle gradient test's).
pub(crate) fn candle_dtype(d: DType) -> CDType {
    match d {
        DType::F16 => CDType::F16,
        DType::Bf16 => CDType::BF16,
    }
}

/// A CPU tensor of `dims` with values uniform in `[-amp, amp)` rounded to `dtype` (never all
/// zero), and those rounded values.
fn random(rng: &mut StdRng, dtype: DType, dims: &[usize], amp: f32) -> (Tensor, Vec<f32>) {
    let n: usize = dims.iter().product();
    let vals: Vec<f32> = (0..n)
        .map(|_| dtype.round(rng.random_range(-amp..amp)))
        .collect();
    let t = Tensor::from_vec(vals.clone(), dims, &Device::Cpu)
        .unwrap()
        .to_dtype(candle_dtype(dtype))
        .unwrap();
    (t, vals)
}

fn to_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(CDType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Everything one comparison needs besides the op's outputs (also the candle gradient test's
/// reference inputs).
pub(crate) struct Case<'a> {
    pub dtype: DType,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub layout: Layout<'a>,
    /// (hq, hkv).
    pub heads: (usize, usize),
    pub head_dim: usize,
    pub max_seqlens: (usize, usize),
    pub options: AttnOptions,
    /// `[hq]` attention-sink logits, when the op was given them.
    pub sinks: Option<&'a [f32]>,
}

/// Random padded inputs: q `[batch, sq, hq, d]` (|x| <= 1.5), k `[batch, sk, hkv, d]`
/// (|x| <= 1.5), v like k (|x| <= 1.0), as tensors and as the f32 values the reference reads.
struct Padded {
    dims: (usize, usize, usize, usize, usize, usize),
    q: (Tensor, Vec<f32>),
    k: (Tensor, Vec<f32>),
    v: (Tensor, Vec<f32>),
}

impl Padded {
    /// `dims` = (batch, sq, sk, hq, hkv, d).
    fn draw(
        rng: &mut StdRng,
        dtype: DType,
        dims: (usize, usize, usize, usize, usize, usize),
    ) -> Padded {
        let (batch, sq, sk, hq, hkv, d) = dims;
        let q = random(rng, dtype, &[batch, sq, hq, d], 1.5);
        let k = random(rng, dtype, &[batch, sk, hkv, d], 1.5);
        let v = random(rng, dtype, &[batch, sk, hkv, d], 1.0);
        Padded { dims, q, k, v }
    }

    /// The comparison of a run of these inputs under `options`.
    fn case(&self, dtype: DType, options: AttnOptions) -> Case<'_> {
        let (batch, sq, sk, hq, hkv, d) = self.dims;
        Case {
            dtype,
            q: &self.q.1,
            k: &self.k.1,
            v: &self.v.1,
            layout: Layout::Padded {
                batch,
                seqlen_q: sq,
                seqlen_k: sk,
            },
            heads: (hq, hkv),
            head_dim: d,
            max_seqlens: (sq, sk),
            options,
            sinks: None,
        }
    }
}

/// Compares O and LSE with the reference; an error names the output and the tolerance.
fn check(c: &Case, o: &Tensor, lse: &Tensor) -> Result<(), String> {
    let r = reference::attention(&ReferenceInputs {
        q: c.q,
        k: c.k,
        v: c.v,
        layout: c.layout,
        num_heads_q: c.heads.0,
        num_heads_kv: c.heads.1,
        head_dim: c.head_dim,
        options: &c.options,
        alibi_slopes: None,
        head_gates: None,
        sinks: c.sinks,
    })
    .map_err(|e| e.to_string())?;
    let max_abs = |xs: &[f32]| xs.iter().fold(0f64, |a, &x| a.max(f64::from(x).abs()));
    let model = ErrorModel {
        dtype: c.dtype,
        value_bound: max_abs(c.v),
        head_dim: c.head_dim,
        seqlen_k: c.max_seqlens.1,
        score_bound: reference::score_bound(
            c.q,
            c.k,
            c.head_dim,
            c.options.scale_for(c.head_dim),
            None,
            c.max_seqlens.0,
            c.max_seqlens.1,
        ),
        softcap: c.options.softcap,
    };
    let verdict = |name: &str, out: &[f32], refr: &[f32], tol: Tolerance| {
        reference::compare(out, refr)
            .check(&tol)
            .map_err(|e| format!("{name}: {e}"))
    };
    verdict("o", &to_f32(o), &r.o, model.output())?;
    verdict("lse", &to_f32(lse), &r.lse, model.lse())
}

fn head_dims() -> Vec<usize> {
    // Every compiled head dim up to 128 (larger ones are slow on the emulator and covered by
    // the kernel property tests).
    let mut d: Vec<usize> = flashmha::common::build_info::FWD_KERNELS
        .iter()
        .map(|r| r.head_dim as usize)
        .filter(|&d| d <= 128)
        .collect();
    d.dedup();
    d
}

prop_compose! {
    fn options()(
        scale in prop::option::weighted(0.2, 0.05f32..0.5),
        causal in prop::bool::weighted(0.5),
        softcap in prop::option::weighted(0.2, 5.0f32..30.0),
    ) -> AttnOptions {
        AttnOptions { softmax_scale: scale, causal, window: None, softcap }
    }
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F16), Just(DType::Bf16)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn padded_matches_the_reference(
        dtype in dtype(),
        hd in any::<prop::sample::Index>(),
        batch in 1usize..=2,
        sq in 1usize..=40,
        sk in 1usize..=40,
        hkv in 1usize..=2,
        group in 1usize..=3,
        options in options(),
        seed in any::<u64>(),
    ) {
        let dims = head_dims();
        let d = dims[hd.index(dims.len())];
        let hq = hkv * group;
        let mut rng = StdRng::seed_from_u64(seed);
        let x = Padded::draw(&mut rng, dtype, (batch, sq, sk, hq, hkv, d));
        let (o, lse) = attention(&x.q.0, &x.k.0, &x.v.0, &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(o.dims(), &[batch, sq, hq, d]);
        prop_assert_eq!(o.dtype(), candle_dtype(dtype));
        prop_assert_eq!(lse.dims(), &[batch, hq, sq]);
        check(&x.case(dtype, options), &o, &lse).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn varlen_matches_the_reference(
        dtype in dtype(),
        hd in any::<prop::sample::Index>(),
        lens in prop::collection::vec((0usize..=40, 0usize..=40), 1..=3),
        hkv in 1usize..=2,
        group in 1usize..=3,
        options in options(),
        slack in 0usize..=3,
        seed in any::<u64>(),
    ) {
        let dims = head_dims();
        let d = dims[hd.index(dims.len())];
        let hq = hkv * group;
        let offsets = |pick: fn(&(usize, usize)) -> usize| -> Vec<i32> {
            std::iter::once(0)
                .chain(lens.iter().scan(0, |acc, l| { *acc += pick(l) as i32; Some(*acc) }))
                .collect()
        };
        let (cu_q, cu_k) = (offsets(|l| l.0), offsets(|l| l.1));
        let (tq, tk) = (*cu_q.last().unwrap() as usize, *cu_k.last().unwrap() as usize);
        prop_assume!(tq > 0 && tk > 0);
        let max_q = lens.iter().map(|l| l.0).max().unwrap();
        let max_k = lens.iter().map(|l| l.1).max().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let (q, qv) = random(&mut rng, dtype, &[tq, hq, d], 1.5);
        let (k, kv) = random(&mut rng, dtype, &[tk, hkv, d], 1.5);
        let (v, vv) = random(&mut rng, dtype, &[tk, hkv, d], 1.0);
        // cu_seqlens as u32 and i64 tensors: any integer dtype is accepted.
        let cq = Tensor::from_vec(cu_q.iter().map(|&x| x as u32).collect::<Vec<_>>(), cu_q.len(), &Device::Cpu).unwrap();
        let ck = Tensor::from_vec(cu_k.iter().map(|&x| x as i64).collect::<Vec<_>>(), cu_k.len(), &Device::Cpu).unwrap();
        // The bounds may exceed the longest item.
        let (o, lse) = attention_varlen(&q, &k, &v, &cq, &ck, max_q + slack, max_k + slack, &options)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(o.dims(), &[tq, hq, d]);
        prop_assert_eq!(lse.dims(), &[hq, tq]);
        let case = Case {
            dtype, q: &qv, k: &kv, v: &vv,
            layout: Layout::Varlen { cu_seqlens_q: &cu_q, cu_seqlens_k: &cu_k },
            heads: (hq, hkv), head_dim: d, max_seqlens: (max_q, max_k), options,
            sinks: None,
        };
        check(&case, &o, &lse).map_err(TestCaseError::fail)?;
    }
}

/// Runs one padded case and checks it; returns the outputs for further checks.
fn padded(
    dtype: DType,
    dims: (usize, usize, usize, usize, usize, usize),
    options: AttnOptions,
    seed: u64,
) -> (Tensor, Tensor) {
    let x = Padded::draw(&mut StdRng::seed_from_u64(seed), dtype, dims);
    let (o, lse) = attention(&x.q.0, &x.k.0, &x.v.0, &options).unwrap();
    check(&x.case(dtype, options), &o, &lse).unwrap();
    (o, lse)
}

#[test]
fn multi_query_attention_shares_one_kv_head() {
    // MQA (hkv = 1) and GQA (hq = 6, hkv = 2), checked against the reference.
    padded(
        DType::Bf16,
        (2, 9, 13, 4, 1, 64),
        AttnOptions::default(),
        seed(),
    );
    padded(
        DType::F16,
        (1, 17, 11, 6, 2, 32),
        AttnOptions::default(),
        seed(),
    );
}

#[test]
fn sinks_join_every_softmax_and_match_the_reference() {
    // gpt-oss style: a learned logit per query head, here from negligible to dominant, plus a
    // head without a sink (-inf); causal with more queries than keys so that some rows see no
    // key and hold only their sink (O = 0, LSE = the sink).
    let causal = AttnOptions {
        causal: true,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(seed());
    for dtype in [DType::F16, DType::Bf16] {
        let dims = (2, 12, 7, 4, 2, 64);
        let x = Padded::draw(&mut rng, dtype, dims);
        let sink_vals = vec![-2.0f32, 0.5, 5.0, f32::NEG_INFINITY];
        let sinks = Tensor::from_vec(sink_vals.clone(), 4, &Device::Cpu).unwrap();
        let (o, lse) = attention_with_sinks(&x.q.0, &x.k.0, &x.v.0, &sinks, &causal).unwrap();
        let mut case = x.case(dtype, causal);
        case.sinks = Some(&sink_vals);
        check(&case, &o, &lse).unwrap();
        // Rows 0..5 of every item see no key: their LSE is the head's sink.
        let lse = lse.to_vec3::<f32>().unwrap();
        for item in &lse {
            for (h, row) in item.iter().enumerate() {
                assert!(row[..5].iter().all(|&l| l == sink_vals[h]), "{h}: {row:?}");
            }
        }
        // A sink of the wrong length or dtype is an error, not a launch.
        let short = Tensor::from_vec(vec![0f32; 3], 3, &Device::Cpu).unwrap();
        assert!(attention_with_sinks(&x.q.0, &x.k.0, &x.v.0, &short, &causal).is_err());
        let wrong = sinks.to_dtype(CDType::F16).unwrap();
        assert!(attention_with_sinks(&x.q.0, &x.k.0, &x.v.0, &wrong, &causal).is_err());
    }
}

#[test]
fn causal_with_more_queries_than_keys_masks_whole_rows() {
    // Bottom-right aligned: with sq = 12, sk = 5 the first 7 query rows see no key, so their
    // LSE is -inf and their O is 0; the rest match the reference.
    let causal = AttnOptions {
        causal: true,
        ..Default::default()
    };
    let (o, lse) = padded(DType::F16, (1, 12, 5, 2, 2, 64), causal, seed());
    let lse = lse.to_vec3::<f32>().unwrap();
    for row in &lse[0] {
        assert!(row[..7].iter().all(|x| *x == f32::NEG_INFINITY), "{row:?}");
        assert!(row[7..].iter().all(|x| x.is_finite()), "{row:?}");
    }
    let first_rows = to_f32(&o.narrow(1, 0, 7).unwrap());
    assert!(first_rows.iter().all(|x| *x == 0.0));
}

#[test]
fn strided_inputs_are_taken_as_their_logical_values() {
    // q laid out head-major and transposed to [b, sq, hq, d]: not contiguous.
    let mut rng = StdRng::seed_from_u64(seed());
    let (b, sq, sk, h, d) = (1, 7, 9, 2, 64);
    let (q_hm, _) = random(&mut rng, DType::Bf16, &[b, h, sq, d], 1.5);
    let q = q_hm.transpose(1, 2).unwrap();
    assert!(!q.is_contiguous());
    let (k, _) = random(&mut rng, DType::Bf16, &[b, sk, h, d], 1.5);
    let (v, _) = random(&mut rng, DType::Bf16, &[b, sk, h, d], 1.0);
    let opts = AttnOptions::default();
    let (o1, l1) = attention(&q, &k, &v, &opts).unwrap();
    let (o2, l2) = attention(&q.contiguous().unwrap(), &k, &v, &opts).unwrap();
    assert_eq!(to_f32(&o1), to_f32(&o2));
    assert_eq!(to_f32(&l1), to_f32(&l2));
    // And the result is not trivially zero.
    assert!(to_f32(&o1).iter().any(|x| *x != 0.0));
}

fn err(r: candle_core::Result<(Tensor, Tensor)>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_dims_dtypes_and_cu_seqlens_are_errors() {
    let mut rng = StdRng::seed_from_u64(seed());
    let bf = DType::Bf16;
    let (q, _) = random(&mut rng, bf, &[1, 4, 2, 64], 1.0);
    let (k, _) = random(&mut rng, bf, &[1, 6, 2, 64], 1.0);
    let (v, _) = random(&mut rng, bf, &[1, 6, 2, 64], 1.0);
    let o = AttnOptions::default();
    // Rank.
    let q3 = q.squeeze(0).unwrap();
    assert!(err(attention(&q3, &k, &v, &o)).contains("expected rank 4"));
    // dtype: f32, and k differing from q.
    let q32 = q.to_dtype(CDType::F32).unwrap();
    assert!(err(attention(&q32, &k, &v, &o)).contains("f16 or bf16"));
    let k16 = k.to_dtype(CDType::F16).unwrap();
    assert!(err(attention(&q, &k16, &v, &o)).contains("k holds f16 but bf16 was expected"));
    // v's sequence length differs from k's.
    let (v5, _) = random(&mut rng, bf, &[1, 5, 2, 64], 1.0);
    assert!(err(attention(&q, &k, &v5, &o)).contains("v: dimension seq is 5, expected 6"));
    // Head dim differs between q and k.
    let (k32, _) = random(&mut rng, bf, &[1, 6, 2, 32], 1.0);
    assert!(err(attention(&q, &k32, &k32, &o)).contains("k: dimension head_dim is 32"));
    // Heads not divisible.
    let (k3, _) = random(&mut rng, bf, &[1, 6, 3, 64], 1.0);
    assert!(err(attention(&q, &k3, &k3, &o)).contains("multiple of num_heads_kv"));
    // Head dim without a kernel: not a multiple of 8 (multiples of 8 run on the next kernel).
    let (q20, _) = random(&mut rng, bf, &[1, 4, 2, 20], 1.0);
    let (k20, _) = random(&mut rng, bf, &[1, 6, 2, 20], 1.0);
    assert!(err(attention(&q20, &k20, &k20, &o)).contains("head dim 20 is not supported"));
    // An invalid option.
    let bad = AttnOptions {
        softmax_scale: Some(-1.0),
        ..Default::default()
    };
    assert!(err(attention(&q, &k, &v, &bad)).contains("softmax_scale"));

    // Varlen: q [4, 2, 64], k/v [6, 2, 64] as items (1, 2) and (3, 4).
    let qp = q.squeeze(0).unwrap();
    let kp = k.squeeze(0).unwrap();
    let vp = v.squeeze(0).unwrap();
    let cu = |xs: &[u32]| Tensor::new(xs, &Device::Cpu).unwrap();
    let ok = attention_varlen(&qp, &kp, &vp, &cu(&[0, 1, 4]), &cu(&[0, 2, 6]), 3, 4, &o);
    assert!(ok.is_ok(), "{:?}", ok.err());
    let decreasing = attention_varlen(&qp, &kp, &vp, &cu(&[0, 3, 1]), &cu(&[0, 2, 6]), 3, 4, &o);
    assert!(err(decreasing).contains("cu_seqlens_q"));
    let too_long = attention_varlen(&qp, &kp, &vp, &cu(&[0, 1, 4]), &cu(&[0, 2, 6]), 2, 4, &o);
    assert!(err(too_long).contains("cu_seqlens_q: dimension seq is 3, at most 2"));
    let wrong_total = attention_varlen(&qp, &kp, &vp, &cu(&[0, 1, 3]), &cu(&[0, 2, 6]), 3, 4, &o);
    assert!(err(wrong_total).contains("q: dimension seq is 4, expected 3"));
    let float_cu = Tensor::new(&[0f32, 1., 4.], &Device::Cpu).unwrap();
    let float = attention_varlen(&qp, &kp, &vp, &float_cu, &cu(&[0, 2, 6]), 3, 4, &o);
    assert!(err(float).contains("integer dtype"));
}

/// CUDA tensors run on the GPU through the same plans: random padded (GQA, causal, strided k),
/// varlen and paged cases, moved to the device, checked against the reference on their host
/// values.
#[cfg(feature = "candle-cuda")]
#[test]
#[ignore = "needs a CUDA GPU and the candle-cuda feature: \
            cargo test --release --features candle-cuda --test candle_op -- --ignored"]
fn cuda_tensors_run_on_the_gpu_and_match_the_reference() {
    let dev = Device::new_cuda(0).expect("a CUDA device");
    let s = seed();
    let mut rng = StdRng::seed_from_u64(s);
    for (dtype, causal) in [(DType::F16, false), (DType::Bf16, true)] {
        // k arrives head-major and is transposed back: a strided view on the device.
        let x = Padded::draw(&mut rng, dtype, (2, 37, 90, 8, 2, 128));
        let k_strided =
            x.k.0
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .to_device(&dev)
                .unwrap()
                .transpose(1, 2)
                .unwrap();
        let options = AttnOptions {
            causal,
            ..AttnOptions::default()
        };
        let (o, lse) = attention(
            &x.q.0.to_device(&dev).unwrap(),
            &k_strided,
            &x.v.0.to_device(&dev).unwrap(),
            &options,
        )
        .unwrap();
        assert!(o.device().is_cuda() && lse.device().is_cuda());
        let case = x.case(dtype, options);
        let (o, lse) = (
            o.to_device(&Device::Cpu).unwrap(),
            lse.to_device(&Device::Cpu).unwrap(),
        );
        check(&case, &o, &lse).unwrap_or_else(|e| panic!("seed {s}, {dtype:?}: {e}"));
    }
    // Varlen: three items of random lengths (one empty), cu_seqlens given on the device.
    let lens_q = [rng.random_range(1..40), 0, rng.random_range(1..40)];
    let lens_k = [
        rng.random_range(1..70),
        rng.random_range(1..70),
        rng.random_range(1..70),
    ];
    let cu = |lens: &[usize]| -> Vec<i32> {
        std::iter::once(0)
            .chain(lens.iter().scan(0, |acc, &l| {
                *acc += l as i32;
                Some(*acc)
            }))
            .collect()
    };
    let (cu_q, cu_k) = (cu(&lens_q), cu(&lens_k));
    let (total_q, total_k) = (
        *cu_q.last().unwrap() as usize,
        *cu_k.last().unwrap() as usize,
    );
    let (hq, hkv, d) = (4, 4, 64);
    let (q, qv) = random(&mut rng, DType::F16, &[total_q, hq, d], 1.5);
    let (k, kv) = random(&mut rng, DType::F16, &[total_k, hkv, d], 1.5);
    let (v, vv) = random(&mut rng, DType::F16, &[total_k, hkv, d], 1.0);
    let (max_q, max_k) = (*lens_q.iter().max().unwrap(), *lens_k.iter().max().unwrap());
    let on_dev = |t: &Tensor| t.to_device(&dev).unwrap();
    let cu_tensor = |c: &[i32]| Tensor::new(c, &dev).unwrap();
    let (o, lse) = attention_varlen(
        &on_dev(&q),
        &on_dev(&k),
        &on_dev(&v),
        &cu_tensor(&cu_q),
        &cu_tensor(&cu_k),
        max_q,
        max_k,
        &AttnOptions::default(),
    )
    .unwrap();
    let case = Case {
        dtype: DType::F16,
        q: &qv,
        k: &kv,
        v: &vv,
        layout: Layout::Varlen {
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: &cu_k,
        },
        heads: (hq, hkv),
        head_dim: d,
        max_seqlens: (max_q, max_k),
        options: AttnOptions::default(),
        sinks: None,
    };
    let (o, lse) = (
        o.to_device(&Device::Cpu).unwrap(),
        lse.to_device(&Device::Cpu).unwrap(),
    );
    check(&case, &o, &lse).unwrap_or_else(|e| panic!("seed {s}, varlen: {e}"));
    // Paged decode over device page pools (decode + split combine on the GPU).
    check_paged_rounds(&dev, s);
}

/// The paged op on CPU tensors: random page sizes (1 upwards, not powers of two), NHD and HND
/// pools with shuffled pages and NaN in every page no sequence uses, GQA, causal decode of 1-5
/// new tokens per sequence, d64 and the (d_qk, d_v) pairs (128, 64) and (192, 128) (V pages and
/// o of d_v), checked against the reference over the gathered pages.
#[test]
fn paged_attention_matches_the_reference_over_gathered_pages() {
    check_paged_rounds(&Device::Cpu, seed());
}

/// Six random paged rounds (see the test above) with the tensors on `dev`; the last two with
/// d_qk != d_v.
fn check_paged_rounds(dev: &Device, s: u64) {
    use flashmha::candle::{paged_attention, PagedKvCache};
    use flashmha::common::geometry::PageStrides;
    use flashmha::ops::decode::DecodeProblem;
    use flashmha::reference::paged::{paged_attention as reference_paged, PagedReferenceInputs};
    let mut rng = StdRng::seed_from_u64(s);
    for round in 0..6 {
        let dtype = if round % 2 == 0 {
            DType::F16
        } else {
            DType::Bf16
        };
        let head_major = round == 2 || round == 3 || round == 5;
        let (d, d_v) = [
            (64, 64),
            (64, 64),
            (64, 64),
            (64, 64),
            (128, 64),
            (192, 128),
        ][round];
        let (batch, hkv, group) = (
            rng.random_range(1..4),
            rng.random_range(1..3),
            [1, 2, 4][round % 3],
        );
        let hq = hkv * group;
        let sq_new = rng.random_range(1..6);
        let page_size = [
            1,
            3,
            16,
            17,
            rng.random_range(1..20),
            rng.random_range(1..20),
        ][round];
        let lens: Vec<i32> = (0..batch)
            .map(|_| rng.random_range(sq_new..60) as i32)
            .collect();
        let max_pages = (*lens.iter().max().unwrap() as usize).div_ceil(page_size);
        let used = batch * max_pages;
        let num_pages = used + 3; // spare pages, never referenced, hold NaN
        let mut pages: Vec<i32> = (0..num_pages as i32).collect();
        // Fisher-Yates with the seeded rng: any page may serve any block.
        for i in (1..pages.len()).rev() {
            pages.swap(i, rng.random_range(0..=i));
        }
        let block_table: Vec<i32> = pages[..used].to_vec();
        // k pages: [num_pages, page_size, hkv, d] (HND: [num_pages, hkv, page_size, d]); v
        // pages the same with d_v.
        let pool_dims = |dim: usize| {
            if head_major {
                [num_pages, hkv, page_size, dim]
            } else {
                [num_pages, page_size, hkv, dim]
            }
        };
        let (q, qv) = random(&mut rng, dtype, &[batch, sq_new, hq, d], 1.5);
        let (_, mut kv) = random(&mut rng, dtype, &pool_dims(d), 1.5);
        let (_, mut vv) = random(&mut rng, dtype, &pool_dims(d_v), 1.0);
        for &p in &pages[used..] {
            let p = p as usize;
            for (vals, dim) in [(&mut kv, d), (&mut vv, d_v)] {
                let page_elems = page_size * hkv * dim;
                vals[p * page_elems..(p + 1) * page_elems].fill(f32::NAN);
            }
        }
        let pool = |vals: &[f32], dim: usize| {
            Tensor::from_vec(vals.to_vec(), &pool_dims(dim), &Device::Cpu)
                .unwrap()
                .to_dtype(candle_dtype(dtype))
                .unwrap()
                .to_device(dev)
                .unwrap()
        };
        let (k, v) = (pool(&kv, d), pool(&vv, d_v));
        let q = q.to_device(dev).unwrap();
        let bt = Tensor::from_vec(block_table.clone(), (batch, max_pages), dev).unwrap();
        let cl = Tensor::from_vec(lens.clone(), batch, dev).unwrap();
        let options = AttnOptions {
            causal: true,
            ..AttnOptions::default()
        };
        let cache = PagedKvCache {
            k: &k,
            v: &v,
            head_major,
            block_table: &bt,
            cache_seqlens: &cl,
            max_cache_len: None,
        };
        let (o, lse) = paged_attention(&q, &cache, &options).unwrap();
        assert!(o.device().same_device(dev) && lse.device().same_device(dev));
        let (o, lse) = (
            o.to_device(&Device::Cpu).unwrap(),
            lse.to_device(&Device::Cpu).unwrap(),
        );
        assert_eq!(o.dims(), &[batch, sq_new, hq, d_v]);
        assert_eq!(lse.dims(), &[batch, hq, sq_new]);

        let mut problem = DecodeProblem::contiguous(
            dtype, batch, sq_new, hq, hkv, d, num_pages, page_size, max_pages, head_major,
        );
        // The reference reads V pages and writes O with d_v.
        problem.head_dim_v = d_v;
        problem.v_strides = if head_major {
            PageStrides::hnd(page_size, hkv, d_v)
        } else {
            PageStrides::nhd(page_size, hkv, d_v)
        };
        problem.options = options;
        problem.lse = true;
        let r = reference_paged(&PagedReferenceInputs {
            problem: &problem,
            q: &qv,
            k_cache: &kv,
            v_cache: &vv,
            block_table: &block_table,
            cache_seqlens: &lens,
            cu_seqlens_q: None,
            alibi_slopes: None,
            head_gates: None,
            sinks: None,
        })
        .unwrap();
        let max_abs = |xs: &[f32]| {
            xs.iter()
                .filter(|x| x.is_finite())
                .fold(0f64, |a, &x| a.max(f64::from(x).abs()))
        };
        let model = ErrorModel {
            dtype,
            value_bound: max_abs(&vv),
            head_dim: d,
            seqlen_k: *lens.iter().max().unwrap() as usize,
            score_bound: reference::score_bound(
                &qv,
                &kv.iter()
                    .map(|x| if x.is_finite() { *x } else { 0.0 })
                    .collect::<Vec<_>>(),
                d,
                options.scale_for(d),
                None,
                sq_new,
                *lens.iter().max().unwrap() as usize,
            ),
            softcap: None,
        };
        // Padded problems: the reference's canonical LSE is [hq, b * sq_new], the op's
        // [b, hq, sq_new].
        let lse_out = to_f32(&lse);
        let mut lse_canon = vec![0f32; lse_out.len()];
        for b in 0..batch {
            for h in 0..hq {
                for i in 0..sq_new {
                    lse_canon[h * batch * sq_new + b * sq_new + i] =
                        lse_out[(b * hq + h) * sq_new + i];
                }
            }
        }
        let context = format!("seed {s}, round {round}, page size {page_size}");
        reference::compare(&to_f32(&o), &r.o)
            .check(&model.output())
            .unwrap_or_else(|e| panic!("{context}: o: {e}"));
        reference::compare(&lse_canon, &r.lse)
            .check(&model.lse())
            .unwrap_or_else(|e| panic!("{context}: lse: {e}"));
    }
}

/// Runs the (d_qk, d_v) = `dims` problem on `layout` directly on the emulator (inputs: the f32
/// values of q, k, v) and checks that the op's `o` and `lse` are bit for bit its outputs and that
/// it ran the pair's own kernel.
fn assert_is_the_direct_pair_run(
    dtype: DType,
    layout: flashmha::problem::SeqLayout,
    (heads, dims, options): ((usize, usize), (usize, usize), AttnOptions),
    (qv, kv, vv): (&[f32], &[f32], &[f32]),
    (o, lse): (&Tensor, &Tensor),
) {
    use flashmha::host::{emulated, HostInputs};
    use flashmha::problem::FwdProblem;
    let mut p = FwdProblem::contiguous_dv(dtype, layout, heads, dims, options);
    p.lse_len = Some(p.row_stats_len());
    let bits = |x: &[f32]| x.iter().map(|&f| dtype.bits_from_f32(f)).collect();
    let inputs = HostInputs {
        q: bits(qv),
        k: bits(kv),
        v: bits(vv),
        alibi_slopes: None,
        head_gates: None,
        sinks: None,
    };
    let run = emulated::forward(&p, &inputs).unwrap();
    let suffix = format!("_d{}v{}", dims.0, dims.1);
    assert!(run.launch.kernel.entry.ends_with(&suffix));
    let direct: Vec<f32> = run
        .outputs
        .o
        .iter()
        .map(|&b| dtype.f32_from_bits(b))
        .collect();
    assert_eq!(to_f32(o), direct);
    assert_eq!(to_f32(lse), run.outputs.lse.unwrap());
}

#[test]
fn a_head_dim_pair_gives_o_of_vs_head_dim_and_the_kernels_own_result() {
    // Issue 23: q, k [1, 9, hq / hkv, 192], v [1, 11, 1, 128] -> o [1, 9, 3, 128], and the
    // varlen op with (128, 64). The ops run the pair's kernel on these tensors: their O and LSE
    // are bit for bit those of the same problem run directly (whose match with the reference
    // tests/ops/head_dim_pairs.rs checks); a k whose head dim differs from q's and a pair with
    // no kernel are errors.
    use flashmha::problem::SeqLayout;
    let mut rng = StdRng::seed_from_u64(seed());
    let dtype = DType::Bf16;
    let (q, qv) = random(&mut rng, dtype, &[1, 9, 3, 192], 1.5);
    let (k, kv) = random(&mut rng, dtype, &[1, 11, 1, 192], 1.5);
    let (v, vv) = random(&mut rng, dtype, &[1, 11, 1, 128], 1.0);
    let causal = AttnOptions {
        causal: true,
        ..Default::default()
    };
    let (o, lse) = attention(&q, &k, &v, &causal).unwrap();
    assert_eq!(o.dims(), &[1, 9, 3, 128]);
    assert_eq!(lse.dims(), &[1, 3, 9]);
    let padded = SeqLayout::Padded {
        batch: 1,
        seqlen_q: 9,
        seqlen_k: 11,
    };
    assert_is_the_direct_pair_run(
        dtype,
        padded,
        ((3, 1), (192, 128), causal),
        (&qv, &kv, &vv),
        (&o, &lse),
    );
    // k's head dim is q's; (192, 64) has no kernel.
    let (k_bad, _) = random(&mut rng, dtype, &[1, 11, 1, 128], 1.5);
    assert!(attention(&q, &k_bad, &v, &causal).is_err());
    let (v64, _) = random(&mut rng, dtype, &[1, 11, 1, 64], 1.0);
    assert!(attention(&q, &k, &v64, &causal).is_err());

    // Varlen, (128, 64): q, k [total, h, 128], v [total_k, 1, 64] -> o [total_q, 2, 64]; an
    // item may have no queries. v64 next to q and k of 192 is refused.
    let (lq, lk): (Vec<i32>, Vec<i32>) = (
        vec![rng.random_range(1..9), rng.random_range(0..9)],
        vec![rng.random_range(1..12), rng.random_range(1..12)],
    );
    let offsets = |l: &[i32]| vec![0, l[0], l[0] + l[1]];
    let (cu_q, cu_k) = (offsets(&lq), offsets(&lk));
    let (tq, tk) = (cu_q[2] as usize, cu_k[2] as usize);
    let (q, qv) = random(&mut rng, dtype, &[tq, 2, 128], 1.5);
    let (k, kv) = random(&mut rng, dtype, &[tk, 1, 128], 1.5);
    let (v, vv) = random(&mut rng, dtype, &[tk, 1, 64], 1.0);
    let cu = |c: &[i32]| Tensor::from_vec(c.to_vec(), 3, &Device::Cpu).unwrap();
    let (max_q, max_k) = (
        *lq.iter().max().unwrap() as usize,
        *lk.iter().max().unwrap() as usize,
    );
    let (o, lse) =
        attention_varlen(&q, &k, &v, &cu(&cu_q), &cu(&cu_k), max_q, max_k, &causal).unwrap();
    assert_eq!(o.dims(), &[tq, 2, 64]);
    assert_eq!(lse.dims(), &[2, tq]);
    let varlen = SeqLayout::Varlen {
        cu_seqlens_q: cu_q.clone(),
        cu_seqlens_k: cu_k.clone(),
    };
    assert_is_the_direct_pair_run(
        dtype,
        varlen,
        ((2, 1), (128, 64), causal),
        (&qv, &kv, &vv),
        (&o, &lse),
    );
    let (q192, _) = random(&mut rng, dtype, &[tq, 2, 192], 1.5);
    let (k192, _) = random(&mut rng, dtype, &[tk, 1, 192], 1.5);
    let refused = attention_varlen(
        &q192,
        &k192,
        &v,
        &cu(&cu_q),
        &cu(&cu_k),
        max_q,
        max_k,
        &causal,
    );
    assert!(refused.is_err());
}

/// The MLA decode op on CPU tensors (the emulator): two random rounds (f16 and bf16) of 8 or 16
/// query heads on one latent head of 576 dims, 1-3 new tokens (causal), a shuffled page pool
/// (pages of 64 or of 1-20 keys) with NaN in every page no sequence uses, checked against the
/// dense reference over the gathered rows with V = the rows' first 512 dims (the rope dims of
/// V zeroed, so the reference's O columns past 512 are 0 and the op's O is compared on its
/// 512). Then wrong head dims are typed errors.
#[test]
fn mla_decode_attention_matches_the_reference_over_gathered_pages() {
    use flashmha::candle::{mla_decode_attention, MlaKvCache};
    use flashmha::ops::mla_decode::{MLA_D_QK, MLA_D_V};
    let s = seed();
    let mut rng = StdRng::seed_from_u64(s);
    let d = MLA_D_QK;
    for dtype in [DType::F16, DType::Bf16] {
        let (batch, hq, sq): (usize, usize, usize) = (
            rng.random_range(1..3),
            [8, 16][rng.random_range(0..2)],
            rng.random_range(1..4),
        );
        let sk: usize = rng.random_range(sq..90);
        let page_size = if rng.random_bool(0.5) {
            64
        } else {
            rng.random_range(1..21)
        };
        let max_pages = sk.div_ceil(page_size);
        let used = batch * max_pages;
        let num_pages = used + 2; // spare pages, never referenced, hold NaN
        let mut pages: Vec<i32> = (0..num_pages as i32).collect();
        for i in (1..pages.len()).rev() {
            pages.swap(i, rng.random_range(0..=i));
        }
        let (q, qv) = random(&mut rng, dtype, &[batch, sq, hq, d], 1.5);
        // Dense keys [batch, sk, 1, 576] scattered into the pool through the block table.
        let (_, kv) = random(&mut rng, dtype, &[batch, sk, 1, d], 1.5);
        let mut pool = vec![f32::NAN; num_pages * page_size * d];
        for b in 0..batch {
            for j in 0..sk {
                let page = pages[b * max_pages + j / page_size] as usize;
                let dst = (page * page_size + j % page_size) * d;
                pool[dst..dst + d].copy_from_slice(&kv[(b * sk + j) * d..(b * sk + j + 1) * d]);
            }
        }
        let pool = Tensor::from_vec(pool, (num_pages, page_size, d), &Device::Cpu)
            .unwrap()
            .to_dtype(candle_dtype(dtype))
            .unwrap();
        let bt =
            Tensor::from_vec(pages[..used].to_vec(), (batch, max_pages), &Device::Cpu).unwrap();
        let cl = Tensor::from_vec(vec![sk as i32; batch], batch, &Device::Cpu).unwrap();
        let options = AttnOptions {
            causal: true,
            ..AttnOptions::default()
        };
        let cache = MlaKvCache {
            kv: &pool,
            block_table: &bt,
            cache_seqlens: &cl,
            max_cache_len: None,
        };
        let (o, lse) = mla_decode_attention(&q, &cache, &options)
            .unwrap_or_else(|e| panic!("seed {s}, {dtype:?}: {e}"));
        assert_eq!(o.dims(), &[batch, sq, hq, MLA_D_V]);
        assert_eq!(lse.dims(), &[batch, hq, sq]);
        // V: the key rows with the 64 rope dims zeroed; O widened to 576 with zeros to match.
        let mut vv = kv.clone();
        for row in vv.chunks_exact_mut(d) {
            row[MLA_D_V..].fill(0.0);
        }
        let zeros = Tensor::zeros((batch, sq, hq, d - MLA_D_V), o.dtype(), &Device::Cpu).unwrap();
        let o_wide = Tensor::cat(&[&o, &zeros], 3).unwrap();
        let case = Case {
            dtype,
            q: &qv,
            k: &kv,
            v: &vv,
            layout: Layout::Padded {
                batch,
                seqlen_q: sq,
                seqlen_k: sk,
            },
            heads: (hq, 1),
            head_dim: d,
            max_seqlens: (sq, sk),
            options,
            sinks: None,
        };
        check(&case, &o_wide, &lse).unwrap_or_else(|e| {
            panic!("seed {s}, {dtype:?}, b {batch} hq {hq} sq {sq} sk {sk} page {page_size}: {e}")
        });
    }
    // A q or pool whose rows are not 576 wide is a typed error, not a panic.
    let (q, _) = random(&mut rng, DType::F16, &[1, 1, 8, 512], 1.0);
    let (pool, _) = random(&mut rng, DType::F16, &[2, 64, 576], 1.0);
    let bt = Tensor::from_vec(vec![0i32], (1, 1), &Device::Cpu).unwrap();
    let cl = Tensor::from_vec(vec![10i32], 1, &Device::Cpu).unwrap();
    let cache = MlaKvCache {
        kv: &pool,
        block_table: &bt,
        cache_seqlens: &cl,
        max_cache_len: None,
    };
    let o = AttnOptions::default();
    assert!(err(mla_decode_attention(&q, &cache, &o)).contains("head"));
    let (q, _) = random(&mut rng, DType::F16, &[1, 1, 8, 576], 1.0);
    let (narrow, _) = random(&mut rng, DType::F16, &[2, 64, 512], 1.0);
    let cache = MlaKvCache {
        kv: &narrow,
        ..cache
    };
    assert!(err(mla_decode_attention(&q, &cache, &o)).contains("head"));
    let cl2 = Tensor::from_vec(vec![10i32, 10], 2, &Device::Cpu).unwrap();
    let cache = MlaKvCache {
        kv: &pool,
        cache_seqlens: &cl2,
        ..cache
    };
    assert!(!err(mla_decode_attention(&q, &cache, &o)).is_empty());
}
