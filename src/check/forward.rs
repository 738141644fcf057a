//! Forward-kernel correctness checks: a random case (shape, layout, strides, features), its
//! inputs drawn from a seed, one run through the host runner (emulator or GPU), the candle
//! reference on the same rounded inputs, and the verdict of the one judge ([`super::judge`]).
//! Shared by the property tests (`tests/ops/forward_props.rs`) and `flashmha check`, so both
//! judge kernels the same way.

use super::judge::{self, AttentionInputs, AttentionOutputs, Judgement};
use crate::backend::emulator::EmulatorBackend;
use crate::common::dtype::DType;
use crate::common::error::{Error, Result};
use crate::common::geometry::Strides;
use crate::common::options::{AttnOptions, SlidingWindow};
use crate::common::target::KernelTarget;
use crate::host::device::HarnessBackend;
use crate::host::{runner, HostInputs};
use crate::ops::forward::tile::TileChoice;
use crate::problem::{FwdProblem, Operand, SeqLayout};
use crate::reference::tolerance::ENTROPY_SOFTCAP_MAX;
use crate::reference::{self, ReferenceInputs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One forward configuration to check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckCase {
    pub dtype: DType,
    /// d_qk: the head dim of q and k.
    pub head_dim: usize,
    /// d_v: the head dim of v and o (`head_dim` but for a compiled d_qk != d_v pair:
    /// [`CheckCase::with_head_dim_pair`]).
    pub head_dim_v: usize,
    pub num_heads_q: usize,
    pub num_heads_kv: usize,
    /// (sq, sk) per batch item; padded layouts use the first item's lengths for all items.
    pub seqlens: Vec<(usize, usize)>,
    pub varlen: bool,
    /// Extra elements (a multiple of 8) between rows and between heads: non-contiguous strides.
    pub stride_pad: usize,
    /// q/o as `[b, hq, s, d]` and k/v as `[b, hkv, s, d]` (heads outside rows) instead of the
    /// row-major `[b, s, h, d]`; varlen: `[h, total, d]`.
    pub head_major: bool,
    pub options: AttnOptions,
    pub alibi: bool,
    pub gates: bool,
    /// Attention-sink logits per query head ([`super::draw_sinks`]).
    pub sinks: bool,
    pub lse: bool,
    pub entropy: bool,
    /// Seed of the input values.
    pub seed: u64,
    /// Which compiled kernels run the case.
    pub target: KernelTarget,
    /// Which of the head dim's compiled tiles runs it (the primary row unless set).
    pub tile: TileChoice,
}

impl CheckCase {
    /// A random case: random dtype among `dtypes`, head dim among `head_dims`, lengths up to
    /// `max_len` (never rounded to tiles), and every feature switched on at random.
    pub fn random(
        rng: &mut impl Rng,
        dtypes: &[DType],
        head_dims: &[usize],
        max_len: usize,
    ) -> CheckCase {
        let dtype = dtypes[rng.random_range(0..dtypes.len())];
        let head_dim = head_dims[rng.random_range(0..head_dims.len())];
        let num_heads_kv = rng.random_range(1..=2);
        let num_heads_q = num_heads_kv * rng.random_range(1..=3);
        let varlen = rng.random_bool(0.3);
        let batch = rng.random_range(1..=2);
        let len = |rng: &mut dyn rand::RngCore| rng.random_range(1..=max_len);
        let first = (len(rng), len(rng));
        let seqlens = (0..batch)
            .map(|i| {
                if varlen && i > 0 {
                    (len(rng), len(rng))
                } else {
                    first
                }
            })
            .collect();
        let window = rng.random_bool(0.25).then(|| SlidingWindow {
            left: rng
                .random_bool(0.7)
                .then(|| rng.random_range(0..max_len as u32)),
            right: rng
                .random_bool(0.7)
                .then(|| rng.random_range(0..max_len as u32)),
        });
        let entropy = rng.random_bool(0.4);
        CheckCase {
            dtype,
            head_dim,
            head_dim_v: head_dim,
            num_heads_q,
            num_heads_kv,
            seqlens,
            varlen,
            stride_pad: if rng.random_bool(0.3) {
                8 * rng.random_range(1..=2)
            } else {
                0
            },
            head_major: rng.random_bool(0.25),
            options: AttnOptions {
                softmax_scale: rng.random_bool(0.2).then(|| rng.random_range(0.05..0.5)),
                causal: rng.random_bool(0.4),
                window,
                softcap: rng.random_bool(0.2).then(|| {
                    let c = rng.random_range(5.0..30.0f32);
                    if entropy {
                        c.min(ENTROPY_SOFTCAP_MAX)
                    } else {
                        c
                    }
                }),
            },
            alibi: rng.random_bool(0.2),
            gates: rng.random_bool(0.2),
            sinks: rng.random_bool(0.2),
            lse: rng.random_bool(0.6),
            entropy,
            seed: rng.random(),
            target: KernelTarget::Ampere,
            tile: TileChoice::Primary,
        }
    }

    /// The same case with q, k of head dim `pair.0` and v, o of `pair.1`.
    pub fn with_head_dim_pair(mut self, (head_dim, head_dim_v): (usize, usize)) -> CheckCase {
        self.head_dim = head_dim;
        self.head_dim_v = head_dim_v;
        self
    }

    fn layout(&self) -> SeqLayout {
        if self.varlen {
            let cu = |pick: fn(&(usize, usize)) -> usize| {
                std::iter::once(0)
                    .chain(self.seqlens.iter().scan(0i32, |acc, s| {
                        *acc += pick(s) as i32;
                        Some(*acc)
                    }))
                    .collect()
            };
            SeqLayout::Varlen {
                cu_seqlens_q: cu(|s| s.0),
                cu_seqlens_k: cu(|s| s.1),
            }
        } else {
            SeqLayout::Padded {
                batch: self.seqlens.len(),
                seqlen_q: self.seqlens[0].0,
                seqlen_k: self.seqlens[0].1,
            }
        }
    }

    /// The problem, with strides padded by `stride_pad` and heads outside rows when asked.
    pub fn problem(&self) -> FwdProblem {
        let mut p = FwdProblem::contiguous_dv(
            self.dtype,
            self.layout(),
            (self.num_heads_q, self.num_heads_kv),
            (self.head_dim, self.head_dim_v),
            self.options,
        );
        p.tile = self.tile;
        if self.stride_pad > 0 || self.head_major {
            let (sq, sk) = p.layout.max_seqlens();
            let (tq, tk) = p.layout.total_rows();
            let batch = p.layout.batch();
            let pad = self.stride_pad as i64;
            // Rows one (item, head) slice spans: the item's length, or every row for varlen;
            // `d`: the operand's own head dim.
            let operand = |heads: usize, seqlen: usize, rows_total: usize, d: usize| {
                let d = d as i64;
                let (items, rows) = if self.varlen {
                    (1, rows_total as i64)
                } else {
                    (batch as i64, seqlen as i64)
                };
                let (row, head, item) = if self.head_major {
                    let row = d + pad;
                    let head = rows * row + pad;
                    (row, head, heads as i64 * head)
                } else {
                    let head = d + pad;
                    let row = heads as i64 * head + pad;
                    (row, head, rows * row)
                };
                Operand {
                    strides: Strides {
                        batch: if self.varlen { 0 } else { item },
                        row,
                        head,
                    },
                    len: (items * item) as usize,
                }
            };
            let (d, dv) = (self.head_dim, self.head_dim_v);
            p.q = operand(self.num_heads_q, sq, tq, d);
            p.o = operand(self.num_heads_q, sq, tq, dv);
            p.k = operand(self.num_heads_kv, sk, tk, d);
            p.v = operand(self.num_heads_kv, sk, tk, dv);
        }
        let stats = p.row_stats_len();
        p.lse_len = self.lse.then_some(stats);
        p.entropy_len = self.entropy.then_some(stats);
        p.alibi_len = self.alibi.then_some(self.num_heads_q);
        p.gates_len = self.gates.then_some(self.num_heads_q);
        p.sinks_len = self.sinks.then_some(self.num_heads_q);
        p.target = self.target;
        p
    }

    /// A one-line description for tables and failure messages.
    pub fn describe(&self) -> String {
        let mut feats = super::feature_words(
            &self.options,
            [self.alibi, self.gates, self.sinks, self.lse, self.entropy],
        );
        if self.stride_pad > 0 {
            feats.push(format!("strided+{}", self.stride_pad));
        }
        if self.head_major {
            feats.push("head-major".into());
        }
        if self.tile != TileChoice::Primary {
            feats.push(format!("tile {:?}", self.tile));
        }
        if self.target != KernelTarget::Ampere {
            feats.push(format!("on {}", self.target));
        }
        let seqlens: Vec<String> = self
            .seqlens
            .iter()
            .map(|(q, k)| format!("{q}x{k}"))
            .collect();
        let dims = if self.head_dim_v == self.head_dim {
            format!("d{}", self.head_dim)
        } else {
            format!("d{}v{}", self.head_dim, self.head_dim_v)
        };
        format!(
            "{} {dims} hq{}/hkv{} {} sq x sk {} [{}]",
            self.dtype,
            self.num_heads_q,
            self.num_heads_kv,
            if self.varlen { "varlen" } else { "padded" },
            seqlens.join(","),
            feats.join(", ")
        )
    }
}

/// Element offsets of every (row, head, col) of an operand of head dim `d`, in contiguous
/// `[rows, heads, d]` order, where `rows` walks batch items then positions (padded) or global
/// rows (varlen).
fn gather_offsets(p: &FwdProblem, op: &Operand, heads: usize, d: usize, is_q: bool) -> Vec<usize> {
    let mut out = Vec::new();
    let (sq, sk) = p.layout.max_seqlens();
    let per_item = if is_q { sq } else { sk };
    let (tq, tk) = p.layout.total_rows();
    let (items, rows) = if p.layout.is_varlen() {
        (1, if is_q { tq } else { tk })
    } else {
        (p.layout.batch(), per_item)
    };
    let s = op.strides;
    for b in 0..items {
        for r in 0..rows {
            for h in 0..heads {
                let base = b as i64 * s.batch + r as i64 * s.row + h as i64 * s.head;
                out.extend((0..d).map(|c| (base + c as i64) as usize));
            }
        }
    }
    out
}

/// Runs `case` on the emulator and compares every output with the reference.
pub fn run_case(case: &CheckCase) -> Result<Judgement> {
    run_case_on(&EmulatorBackend::new(case.target), case)
}

/// Runs `case` on the first GPU and compares every output with the reference.
pub fn run_case_cuda(case: &CheckCase) -> Result<Judgement> {
    let backend = crate::cuda::CudaBackend::new(0)?;
    run_case_on(&backend, case)
}

/// Runs `case` on `backend` (through the one host runner) and judges every output.
pub fn run_case_on<B: HarnessBackend>(backend: &B, case: &CheckCase) -> Result<Judgement> {
    let p = case.problem();
    let mut rng = StdRng::seed_from_u64(case.seed);
    let ty = case.dtype;
    // Values in [-1, 1) scaled per tensor, rounded to the dtype: never all zeros.
    let mut draw = |n: usize, amp: f32| -> Vec<f32> {
        (0..n)
            .map(|_| ty.round(rng.random_range(-amp..amp)))
            .collect()
    };
    let q_vals = draw(p.q.len, 1.5);
    let k_vals = draw(p.k.len, 1.5);
    let v_vals = draw(p.v.len, 1.0);
    let slopes: Option<Vec<f32>> = case.alibi.then(|| {
        (0..case.num_heads_q)
            .map(|h| 0.5f32.powi(h as i32 + 1))
            .collect()
    });
    let gates: Option<Vec<f32>> = case.gates.then(|| {
        (0..case.num_heads_q)
            .map(|h| {
                if h % 3 == 1 {
                    0.0
                } else {
                    rng.random_range(0.25..2.0)
                }
            })
            .collect()
    });
    let sinks = case
        .sinks
        .then(|| super::draw_sinks(&mut rng, case.num_heads_q));
    let bits = |vals: &[f32]| vals.iter().map(|&x| ty.bits_from_f32(x)).collect();
    let inputs = HostInputs {
        q: bits(&q_vals),
        k: bits(&k_vals),
        v: bits(&v_vals),
        alibi_slopes: slopes.clone(),
        head_gates: gates.clone(),
        sinks: sinks.clone(),
    };
    let run = runner::forward(backend, &p, &inputs)?;
    let outputs = run.outputs;

    // The reference takes contiguous tensors: gather the strided ones.
    let (d, dv) = (case.head_dim, case.head_dim_v);
    let q_off = gather_offsets(&p, &p.q, case.num_heads_q, d, true);
    let k_off = gather_offsets(&p, &p.k, case.num_heads_kv, d, false);
    let v_off = gather_offsets(&p, &p.v, case.num_heads_kv, dv, false);
    let o_off = gather_offsets(&p, &p.o, case.num_heads_q, dv, true);
    let gather = |vals: &[f32], off: &[usize]| off.iter().map(|&i| vals[i]).collect::<Vec<f32>>();
    let (q_c, k_c, v_c) = (
        gather(&q_vals, &q_off),
        gather(&k_vals, &k_off),
        gather(&v_vals, &v_off),
    );
    let layout = p.layout.as_slices();
    let inputs = ReferenceInputs {
        q: &q_c,
        k: &k_c,
        v: &v_c,
        layout,
        num_heads_q: case.num_heads_q,
        num_heads_kv: case.num_heads_kv,
        head_dim: case.head_dim,
        options: &case.options,
        alibi_slopes: slopes.as_deref(),
        head_gates: gates.as_deref(),
        sinks: sinks.as_deref(),
    };
    let reference = reference::attention_with_v_dim(&inputs, dv)
        .map_err(|e| Error::Reference(e.to_string()))?;

    let o_out: Vec<f32> = o_off
        .iter()
        .map(|&i| case.dtype.f32_from_bits(outputs.o[i]))
        .collect();
    let (max_seqlen_q, max_seqlen_k) = p.layout.max_seqlens();
    let model = judge::error_model(&AttentionInputs {
        dtype: ty,
        head_dim: case.head_dim,
        q: &q_vals,
        k: &k_vals,
        v: &v_vals,
        head_gates: gates.as_deref(),
        alibi_slopes: slopes.as_deref(),
        softmax_scale: case.options.scale_for(case.head_dim),
        softcap: case.options.softcap,
        max_seqlen_q,
        max_seqlen_k,
    });
    let outputs = judge::attention(
        &model,
        AttentionOutputs {
            o: &o_out,
            lse: outputs.lse.as_deref(),
            entropy: outputs.entropy.as_deref(),
        },
        &reference,
    );
    Ok(Judgement {
        outputs,
        findings: run.report.findings.iter().map(|f| f.to_string()).collect(),
    })
}
