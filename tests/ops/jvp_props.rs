//! Property tests of the forward-mode (JVP) attention (issue 22) on the emulator: random shapes
//! (lengths never rounded to a tile), GQA ratios 1-8, padded and varlen layouts (items with no
//! queries or no keys), causal and sliding-window masks, custom scales, softcaps, ALiBi, head
//! gates, sinks, f16 and bf16, every compiled head dim and multiples of 8 between, and strided
//! layouts (the tangents share their primals' strides). O and O' must
//! match the reference (central finite differences in f64 of an f64 forward,
//! `flashmha::reference::attention_jvp`) within the per-element tolerances it derives, with
//! zero emulator findings (any finding is an error of the launch). Outputs are poisoned with
//! NaN before the run, so an element the kernel fails to write fails. A planted bad cu_seqlens
//! traps. FLASHMHA_PROPTEST_CASES runs more.

use crate::varlen_case::{
    cu_seqlens, download_f32, drawn_seqlens, fwd_shape, proptest_cases, reference_layout, window,
};
use flashmha::api::{Attention, JvpArgs};
use flashmha::backend::emulator::EmulatorBackend;
use flashmha::backend::Backend;
use flashmha::common::dtype::DType;
use flashmha::common::element::Element;
use flashmha::common::options::AttnOptions;
use flashmha::ops::jvp::kernels::compiled_head_dims;
use flashmha::ops::jvp::{JvpPlan, JvpShape};
use flashmha::reference::{attention_jvp, check_each, round_slice, ReferenceInputs, Tangents};
use flashmha::{FwdShape, Heads, KernelTarget, SeqShape};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn cases() -> u32 {
    proptest_cases(12)
}

/// One random JVP problem.
#[derive(Debug, Clone)]
struct Case {
    dtype: DType,
    head_dim: usize,
    hkv: usize,
    group: usize,
    /// (sq, sk) per item; padded cases use the first.
    seqlens: Vec<(usize, usize)>,
    varlen: bool,
    options: AttnOptions,
    alibi: bool,
    gates: bool,
    sinks: bool,
    seed: u64,
}

fn head_dims(dtype: DType) -> Vec<usize> {
    let compiled: Vec<usize> = compiled_head_dims(dtype)
        .into_iter()
        .map(|d| d as usize)
        .collect();
    let mut dims: Vec<usize> = compiled
        .into_iter()
        .chain([8usize, 24, 48, 72, 104])
        .collect();
    dims.sort_unstable();
    dims.dedup();
    dims
}

prop_compose! {
    fn case()(
        dtype in prop::sample::select(vec![DType::F16, DType::Bf16]),
        hd_pick in any::<prop::sample::Index>(),
        (hkv, group) in prop_oneof![(1usize..=2, 1usize..=4), (Just(1usize), 5usize..=8)],
        seqlens in prop::collection::vec((1usize..=90, 1usize..=90), 1..=3),
        varlen in prop::bool::weighted(0.4),
        empty in prop::option::weighted(0.3, (0usize..3, 0usize..2)),
        scale in prop::option::weighted(0.25, 0.05f32..0.5),
        causal in prop::bool::weighted(0.4),
        window in window(),
        softcap in prop::option::weighted(0.2, 5.0f32..30.0),
        alibi in prop::bool::weighted(0.2),
        gates in prop::bool::weighted(0.25),
        sinks in prop::bool::weighted(0.2),
        seed in any::<u64>(),
    ) -> Case {
        let dims = head_dims(dtype);
        let seqlens = drawn_seqlens(seqlens, varlen, empty);
        Case {
            dtype,
            head_dim: dims[hd_pick.index(dims.len())],
            hkv,
            group,
            seqlens,
            varlen,
            options: AttnOptions { softmax_scale: scale, causal, window, softcap },
            alibi,
            gates,
            sinks,
            seed,
        }
    }
}

impl Case {
    fn hq(&self) -> usize {
        self.hkv * self.group
    }

    /// Per-item row starts: (cu_q, cu_k).
    fn layout(&self) -> (Vec<i32>, Vec<i32>) {
        cu_seqlens(&self.seqlens)
    }

    fn fwd_shape(&self) -> FwdShape {
        let heads = Heads::gqa(self.hq(), self.hkv);
        fwd_shape(
            &self.seqlens,
            self.varlen,
            heads,
            self.head_dim,
            self.options,
        )
    }
}

/// Runs the JVP of `case` on the emulator (for `target`'s plan) and checks O and O' against
/// the reference; returns the worst |err| / tolerance of each.
fn run_case<T: Element>(case: &Case, target: KernelTarget) -> Result<(f64, f64), String> {
    let be = EmulatorBackend::new(target);
    let stream = be.stream().map_err(|e| e.to_string())?;
    let (cu_q, cu_k) = case.layout();
    let (tq, tk) = (
        *cu_q.last().unwrap() as usize,
        *cu_k.last().unwrap() as usize,
    );
    let (hq, hkv, d) = (case.hq(), case.hkv, case.head_dim);
    let mut rng = rand::rngs::StdRng::seed_from_u64(case.seed);
    let draw = |rng: &mut rand::rngs::StdRng, n: usize| -> Vec<f32> {
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        round_slice(&x, case.dtype)
    };
    let (nq, nk) = (tq * hq * d, tk * hkv * d);
    let [q, k, v, dq, dk, dv] = [nq, nk, nk, nq, nk, nk].map(|n| draw(&mut rng, n));
    let slopes: Vec<f32> = (0..hq).map(|_| rng.random_range(0.01f32..0.3)).collect();
    let mut gates: Vec<f32> = (0..hq).map(|_| rng.random_range(-1.5f32..1.5)).collect();
    if rng.random_bool(0.3) {
        gates[0] = 0.0;
    }
    let sinks: Vec<f32> = (0..hq).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let err = |e: flashmha::Error| e.to_string();
    let up = |x: &[f32]| {
        let t: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
        be.upload(&stream, &t).map_err(err)
    };
    let plan =
        JvpPlan::new_for(target, case.dtype, &JvpShape::new(case.fwd_shape())).map_err(err)?;
    let (q_d, k_d, v_d) = (up(&q)?, up(&k)?, up(&v)?);
    let (dq_d, dk_d, dv_d) = (up(&dq)?, up(&dk)?, up(&dv)?);
    let (mut o_d, mut ot_d) = (
        up(&vec![f32::NAN; tq * hq * d])?,
        up(&vec![f32::NAN; tq * hq * d])?,
    );
    let f32_up = |x: &[f32]| be.upload(&stream, x).map_err(err);
    let (cq, ck) = (
        be.upload(&stream, &cu_q).map_err(err)?,
        be.upload(&stream, &cu_k).map_err(err)?,
    );
    let (slopes_d, gates_d, sinks_d) = (f32_up(&slopes)?, f32_up(&gates)?, f32_up(&sinks)?);
    let mut args = JvpArgs::new(
        (&q_d, &k_d, &v_d),
        (&dq_d, &dk_d, &dv_d),
        (&mut o_d, &mut ot_d),
    );
    if case.varlen {
        args = args.cu_seqlens(&cq, &ck);
    }
    if case.alibi {
        args = args.alibi_slopes(&slopes_d);
    }
    if case.gates {
        args = args.head_gates(&gates_d);
    }
    if case.sinks {
        args = args.sinks(&sinks_d);
    }
    be.jvp(&stream, &plan, args).map_err(err)?;
    let down = |b: &<EmulatorBackend as Backend>::Buffer<T>| download_f32(&be, &stream, b);
    let (o, ot) = (down(&o_d)?, down(&ot_d)?);

    let (max_q, max_k) = case.fwd_shape().seq.max_seqlens();
    let layout = reference_layout(case.varlen, &cu_q, &cu_k, (max_q, max_k));
    let inp = ReferenceInputs {
        q: &q,
        k: &k,
        v: &v,
        layout,
        num_heads_q: hq,
        num_heads_kv: hkv,
        head_dim: d,
        options: &case.options,
        alibi_slopes: case.alibi.then_some(&slopes[..]),
        head_gates: case.gates.then_some(&gates[..]),
        sinks: case.sinks.then_some(&sinks[..]),
    };
    let unit = match case.dtype {
        DType::F16 => 2f64.powi(-11),
        DType::Bf16 => 2f64.powi(-8),
    };
    let r = attention_jvp(
        &inp,
        Tangents {
            dq: &dq,
            dk: &dk,
            dv: &dv,
        },
        unit,
    )
    .map_err(|e| e.to_string())?;
    let narrow = |x: &[f64]| -> Vec<f32> { x.iter().map(|&v| v as f32).collect() };
    Ok((
        check_each(&o, &narrow(&r.o), &r.o_tol).map_err(|e| format!("o: {e}"))?,
        check_each(&ot, &narrow(&r.o_tangent), &r.o_tangent_tol)
            .map_err(|e| format!("o_tangent: {e}"))?,
    ))
}

fn run(case: &Case, target: KernelTarget) -> Result<(f64, f64), TestCaseError> {
    match case.dtype {
        DType::F16 => run_case::<half::f16>(case, target),
        DType::Bf16 => run_case::<half::bf16>(case, target),
    }
    .map_err(|e| TestCaseError::fail(format!("{case:?}: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn jvp_matches_finite_differences_on_the_emulator(case in case()) {
        let (o, ot) = run(&case, KernelTarget::Ampere)?;
        // The measured worst error / tolerance (visible with --nocapture).
        println!(
            "jvp {:?} d{} hq{} hkv{} {:?} varlen {} {:?} alibi {} gates {} sinks {}: worst |err|/tol o {o:.2e} o' {ot:.2e}",
            case.dtype, case.head_dim, case.hq(), case.hkv, case.seqlens, case.varlen, case.options,
            case.alibi, case.gates, case.sinks
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2, failure_persistence: None, ..ProptestConfig::default() })]

    /// A Hopper plan runs the Ampere kernels (sm_90 cubins of the same module).
    #[test]
    fn hopper_runs_the_ampere_jvp(case in case()) {
        run(&case, KernelTarget::Hopper)?;
    }
}

/// Turing has no JVP kernel: a typed error before anything runs.
#[test]
fn turing_is_a_typed_error() {
    let shape = JvpShape::new(FwdShape::padded(1, 16, 16, Heads::mha(2), 64));
    let e = JvpPlan::new_for(KernelTarget::Turing, DType::F16, &shape).unwrap_err();
    assert!(
        matches!(e, flashmha::Error::UnsupportedOnTarget { .. }),
        "{e}"
    );
}

/// A cu_seqlens_k whose last entry runs past total_k makes the JVP trap (a finding, a typed
/// error), before any access out of bounds.
#[test]
fn planted_bad_cu_seqlens_traps() {
    let be = EmulatorBackend::new(KernelTarget::Ampere);
    let stream = be.stream().unwrap();
    let (tq, tk, hq, d) = (14usize, 11usize, 2usize, 64usize);
    let shape = FwdShape::varlen(
        SeqShape::Varlen {
            batch: 2,
            max_seqlen_q: 9,
            max_seqlen_k: 7,
            total_q: tq,
            total_k: tk,
        },
        Heads::gqa(hq, 1),
        d,
    );
    let plan = JvpPlan::new(DType::F16, &JvpShape::new(shape)).unwrap();
    let x = |n: usize| vec![half::f16::from_f32(0.5); n];
    let (q, k) = (
        be.upload(&stream, &x(tq * hq * d)).unwrap(),
        be.upload(&stream, &x(tk * d)).unwrap(),
    );
    let (mut o, mut ot) = (
        be.alloc_zeros::<half::f16>(&stream, tq * hq * d).unwrap(),
        be.alloc_zeros::<half::f16>(&stream, tq * hq * d).unwrap(),
    );
    let cq = be.upload(&stream, &[0i32, 5, 14]).unwrap();
    let bad_k = be.upload(&stream, &[0i32, 7, 12]).unwrap(); // 12 > total_k = 11
    let args = JvpArgs::new((&q, &k, &k), (&q, &k, &k), (&mut o, &mut ot)).cu_seqlens(&cq, &bad_k);
    let e = be.jvp(&stream, &plan, args).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("trap"), "{e}");
}

/// Strided layouts: head-major q and k with padded rows, v and o with padded heads and a spare
/// row per item; each tangent shares its primal's strides (kernels/params.h, FlashJvpParams), so
/// dq, dk, dv and O' are strided the same way. O and O' must be bitwise the contiguous run's
/// values, and every element outside the views (filled with -7, which would change a result
/// read from it) stays as it was.
#[test]
fn strided_tangent_layouts_give_the_contiguous_outputs() {
    use crate::backward_layouts::{bits, extent, head_major, padded, scatter, BATCH};
    use crate::emulator_support::{rng, seed};
    use flashmha::common::geometry::Strides;
    use flashmha::ops::forward::problem::QkvoStrides;
    use half::f16;
    let seed = seed();
    let mut r = rng(seed);
    let (sq, sk) = (r.random_range(1..=40), r.random_range(1..=40));
    let hkv = r.random_range(1..=2);
    let hq = hkv * r.random_range(1..=3);
    let d = [32usize, 64, 128][r.random_range(0..3)];
    let causal = r.random_bool(0.5);
    let (qd, kd) = ((sq, hq, d), (sk, hkv, d));
    let mut draw = |n: usize| -> Vec<f16> {
        (0..n)
            .map(|_| f16::from_f32(r.random_range(-1.0..1.0)))
            .collect()
    };
    let (nq, nk) = (BATCH * sq * hq * d, BATCH * sk * hkv * d);
    let [q, k, v, dq, dk, dv] = [nq, nk, nk, nq, nk, nk].map(&mut draw);
    let be = EmulatorBackend::new(KernelTarget::Ampere);
    let stream = be.stream().unwrap();
    // O and O' as laid out at `st` (whole buffers, padding included).
    let run = |st: QkvoStrides| -> [Vec<f16>; 2] {
        let shape = FwdShape::padded(BATCH, sq, sk, Heads::gqa(hq, hkv), d)
            .with_options(AttnOptions {
                causal,
                ..AttnOptions::default()
            })
            .with_strides(st);
        let plan = JvpPlan::new(DType::F16, &JvpShape::new(shape)).unwrap();
        let put = |x: &[f16], dims, at| {
            let placed = scatter(x, dims, at, extent(dims, at));
            be.upload(&stream, &placed).unwrap()
        };
        let (q_d, k_d, v_d) = (put(&q, qd, st.q), put(&k, kd, st.k), put(&v, kd, st.v));
        let (dq_d, dk_d, dv_d) = (put(&dq, qd, st.q), put(&dk, kd, st.k), put(&dv, kd, st.v));
        let (mut o, mut ot) = (put(&[], qd, st.o), put(&[], qd, st.o));
        let args = JvpArgs::new((&q_d, &k_d, &v_d), (&dq_d, &dk_d, &dv_d), (&mut o, &mut ot));
        be.jvp(&stream, &plan, args).unwrap();
        [
            be.download(&stream, &o).unwrap(),
            be.download(&stream, &ot).unwrap(),
        ]
    };
    let contiguous = |s: usize, h: usize| Strides::contiguous(s, h, d);
    let want = run(QkvoStrides {
        q: contiguous(sq, hq),
        k: contiguous(sk, hkv),
        v: contiguous(sk, hkv),
        o: contiguous(sq, hq),
    });
    assert!(want.iter().flatten().all(|x| x.is_finite()), "seed {seed}");
    let strided = QkvoStrides {
        q: head_major(sq, hq, d),
        k: head_major(sk, hkv, d),
        v: padded(sk, hkv, d),
        o: padded(sq, hq, d),
    };
    let got = run(strided);
    for (name, g, w) in [("o", &got[0], &want[0]), ("o'", &got[1], &want[1])] {
        let expected = scatter(w, qd, strided.o, extent(qd, strided.o));
        assert_eq!(
            bits(g),
            bits(&expected),
            "seed {seed} ({sq}x{sk}, hq {hq}, hkv {hkv}, d{d}, causal {causal}): {name}"
        );
    }
}
