//! Backward-kernel correctness checks (issue 21, `flashmha check --backward`): a random case
//! drawn by the forward's generator ([`CheckCase::random`]: dtype, head dim, GQA, lengths,
//! varlen, causal / window / softcap / scale, ALiBi, gates) plus deterministic mode on or off,
//! run forward then backward on the emulator (the forward's O and LSE feed the backward, as in
//! training), and judged by the one judge ([`super::judge`]) against candle's autograd
//! ([`attention_backward`]) under the per-element tolerances its [`BwdErrorModel`](crate::reference::BwdErrorModel) derives.
//! Gradients and the workspace are poisoned with NaN first, so an unwritten element fails.
//! Tensors are contiguous here (strided gradients: tests/ops/backward_layouts.rs).

use super::forward::CheckCase;
use super::judge::{self, AttentionInputs, Judgement};
use crate::api::{Attention, BwdArgs, FwdArgs};
use crate::backend::emulator::EmulatorBackend;
use crate::backend::Backend;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{EmulatorError, Error, Result};
use crate::ops::backward::{BwdPlan, BwdShape};
use crate::ops::forward::plan::FwdPlan;
use crate::ops::forward::problem::{FwdShape, Heads, SeqShape};
use crate::problem::SeqLayout;
use crate::reference::{attention_backward, ReferenceInputs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One backward configuration to check.
#[derive(Debug, Clone, PartialEq)]
pub struct BwdCheckCase {
    /// The forward it is the gradient of (contiguous, no entropy: the backward does not take
    /// it; LSE always on, the backward's input; with sinks, d(sink) is judged too).
    pub fwd: CheckCase,
    /// Ordered dQ reduction instead of atomics.
    pub deterministic: bool,
}

impl BwdCheckCase {
    /// A random case of the forward's generator, restricted to what the backward takes.
    pub fn random(
        rng: &mut impl Rng,
        dtypes: &[DType],
        head_dims: &[usize],
        max_len: usize,
    ) -> BwdCheckCase {
        let mut fwd = CheckCase::random(rng, dtypes, head_dims, max_len);
        fwd.stride_pad = 0;
        fwd.head_major = false;
        fwd.entropy = false;
        fwd.lse = true;
        BwdCheckCase {
            fwd,
            deterministic: rng.random_bool(0.3),
        }
    }

    /// A one-line description for tables and failure messages.
    pub fn describe(&self) -> String {
        let mut s = self.fwd.describe();
        if self.deterministic {
            s.push_str(" deterministic");
        }
        s
    }

    /// The forward shape of the API (contiguous tensors).
    fn shape(&self) -> FwdShape {
        let c = &self.fwd;
        let heads = Heads::gqa(c.num_heads_q, c.num_heads_kv);
        let shape = match c.problem().layout {
            SeqLayout::Padded {
                batch,
                seqlen_q,
                seqlen_k,
            } => FwdShape::padded(batch, seqlen_q, seqlen_k, heads, c.head_dim),
            layout @ SeqLayout::Varlen { .. } => {
                let (max_seqlen_q, max_seqlen_k) = layout.max_seqlens();
                let (total_q, total_k) = layout.total_rows();
                let seq = SeqShape::Varlen {
                    batch: layout.batch(),
                    max_seqlen_q,
                    max_seqlen_k,
                    total_q,
                    total_k,
                };
                FwdShape::varlen(seq, heads, c.head_dim)
            }
        };
        shape.with_options(c.options)
    }
}

/// Runs `case` (forward, then backward) on the emulator and judges dQ, dK, dV and, with gates,
/// d(gate). An emulator finding ends the run and is the judgement's finding.
pub fn run_case(case: &BwdCheckCase) -> Result<Judgement> {
    let run = match case.fwd.dtype {
        DType::F16 => run_typed::<half::f16>(case),
        DType::Bf16 => run_typed::<half::bf16>(case),
    };
    match run {
        Err(Error::Emulator(e @ EmulatorError::KernelFinding { .. })) => Ok(Judgement {
            outputs: Vec::new(),
            findings: vec![e.to_string()],
        }),
        other => other,
    }
}

fn run_typed<T: Element>(case: &BwdCheckCase) -> Result<Judgement> {
    let c = &case.fwd;
    let be = EmulatorBackend::new(c.target);
    let stream = be.stream()?;
    let layout = c.problem().layout;
    let (tq, tk) = layout.total_rows();
    let (hq, hkv, d) = (c.num_heads_q, c.num_heads_kv, c.head_dim);
    let mut rng = StdRng::seed_from_u64(c.seed);
    // Values uniform in [-1, 1) rounded to the dtype (never all zeros).
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| c.dtype.round(rng.random_range(-1.0f32..1.0)))
            .collect()
    };
    // q, o, d_o, dq: [tq, hq, d]; k, v, dk, dv: [tk, hkv, d].
    let (q, k, v, d_o) = (
        draw(tq * hq * d),
        draw(tk * hkv * d),
        draw(tk * hkv * d),
        draw(tq * hq * d),
    );
    // Slopes and gates as the forward check draws them (a gate of 0 every third head).
    let slopes: Vec<f32> = (0..hq).map(|h| 0.5f32.powi(h as i32 + 1)).collect();
    let gates: Vec<f32> = (0..hq)
        .map(|h| {
            if h % 3 == 1 {
                0.0
            } else {
                rng.random_range(0.25..2.0)
            }
        })
        .collect();
    // Sinks as the forward check draws them (check/mod.rs draw_sinks: some -inf).
    let sinks: Vec<f32> = if c.sinks {
        super::draw_sinks(&mut rng, hq)
    } else {
        vec![0.0; hq]
    };
    let dev = |x: &[f32]| -> Vec<T> { x.iter().map(|&v| T::from_f32(v)).collect() };
    let shape = case.shape();
    let fwd = FwdPlan::new(c.dtype, &shape)?;
    let bwd = BwdPlan::new(
        c.dtype,
        &BwdShape::new(shape).with_deterministic(case.deterministic),
    )?;
    let (q_d, k_d, v_d, do_d) = (
        be.upload(&stream, &dev(&q))?,
        be.upload(&stream, &dev(&k))?,
        be.upload(&stream, &dev(&v))?,
        be.upload(&stream, &dev(&d_o))?,
    );
    let (cu_q, cu_k): (Vec<i32>, Vec<i32>) = match &layout {
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => (cu_seqlens_q.clone(), cu_seqlens_k.clone()),
        SeqLayout::Padded { .. } => (vec![0], vec![0]),
    };
    let (cq, ck) = (be.upload(&stream, &cu_q)?, be.upload(&stream, &cu_k)?);
    let slopes_d = be.upload(&stream, &slopes)?;
    let gates_d = be.upload(&stream, &gates)?;
    let sinks_d = be.upload(&stream, &sinks)?;
    let mut o_d = be.alloc_zeros::<T>(&stream, tq * hq * d)?;
    // lse: [hq, tq] (varlen) / [b, hq, sq] (padded): one f32 per query row and head.
    let mut lse_d = be.alloc_zeros::<f32>(&stream, hq * tq)?;
    let mut args = FwdArgs::new(&q_d, &k_d, &v_d, &mut o_d).lse(&mut lse_d);
    if c.varlen {
        args = args.cu_seqlens(&cq, &ck);
    }
    if c.alibi {
        args = args.alibi_slopes(&slopes_d);
    }
    if c.gates {
        args = args.head_gates(&gates_d);
    }
    if c.sinks {
        args = args.sinks(&sinks_d);
    }
    be.run(&stream, &fwd, args)?;

    let nan = T::from_f32(f32::NAN);
    let mut dq_d = be.upload(&stream, &vec![nan; tq * hq * d])?;
    let mut dk_d = be.upload(&stream, &vec![nan; tk * hkv * d])?;
    let mut dv_d = be.upload(&stream, &vec![nan; tk * hkv * d])?;
    let mut ws = be.upload(&stream, &vec![f32::NAN; bwd.workspace_len()])?;
    let mut dg_d = be.upload(&stream, &vec![f32::NAN; hq])?;
    let mut ds_d = be.upload(&stream, &vec![f32::NAN; hq])?;
    let mut args = BwdArgs::new(
        (&q_d, &k_d, &v_d),
        (&o_d, &lse_d),
        &do_d,
        (&mut dq_d, &mut dk_d, &mut dv_d),
        &mut ws,
    );
    if c.varlen {
        args = args.cu_seqlens(&cq, &ck);
    }
    if c.alibi {
        args = args.alibi_slopes(&slopes_d);
    }
    if c.gates {
        args = args.head_gates(&gates_d).head_gate_grads(&mut dg_d);
    }
    if c.sinks {
        args = args.sinks(&sinks_d).sink_grads(&mut ds_d);
    }
    be.backward(&stream, &bwd, args)?;
    let down = |b: &<EmulatorBackend as Backend>::Buffer<T>| -> Result<Vec<f32>> {
        Ok(be
            .download(&stream, b)?
            .iter()
            .map(|x| x.to_f32())
            .collect())
    };
    let (dq, dk, dv) = (down(&dq_d)?, down(&dk_d)?, down(&dv_d)?);
    let d_gates = be.download(&stream, &dg_d)?;
    let d_sinks = be.download(&stream, &ds_d)?;

    let (max_seqlen_q, max_seqlen_k) = layout.max_seqlens();
    let (slopes, gates) = (
        c.alibi.then_some(&slopes[..]),
        c.gates.then_some(&gates[..]),
    );
    let model = judge::backward_error_model(&AttentionInputs {
        dtype: c.dtype,
        head_dim: d,
        q: &q,
        k: &k,
        v: &v,
        head_gates: gates,
        alibi_slopes: slopes,
        softmax_scale: c.options.scale_for(d),
        softcap: c.options.softcap,
        max_seqlen_q,
        max_seqlen_k,
    });
    let r = attention_backward(
        &ReferenceInputs {
            q: &q,
            k: &k,
            v: &v,
            layout: layout.as_slices(),
            num_heads_q: hq,
            num_heads_kv: hkv,
            head_dim: d,
            options: &c.options,
            alibi_slopes: slopes,
            head_gates: gates,
            sinks: c.sinks.then_some(&sinks[..]),
        },
        &d_o,
        &model,
    )
    .map_err(|e| Error::Reference(e.to_string()))?;
    let mut outputs = vec![
        judge::per_element("dq", &dq, &r.dq, &r.dq_tol),
        judge::per_element("dk", &dk, &r.dk, &r.dk_tol),
        judge::per_element("dv", &dv, &r.dv, &r.dv_tol),
    ];
    // The per-head gradients of the optional inputs (the reference's are empty without them).
    for (on, name, got, want, tol) in [
        (c.gates, "d_gates", &d_gates, &r.d_gates, &r.d_gates_tol),
        (c.sinks, "d_sinks", &d_sinks, &r.d_sinks, &r.d_sinks_tol),
    ] {
        if on {
            outputs.push(judge::per_element(name, got, want, tol));
        }
    }
    Ok(Judgement {
        outputs,
        findings: Vec::new(),
    })
}
