//! The candle op (feature `candle`), as `flashmha::candle`: attention over candle tensors that
//! returns both O and the log-sum-exp (candle's `CustomOp3` returns one tensor, which is why
//! this is a function and not a custom op). Padded ([`attention`]) and packed variable-length
//! ([`attention_varlen`]) layouts, new tokens over a paged KV cache ([`paged_attention`],
//! `paged.rs`), and the MLA decode over a paged latent cache ([`mla_decode_attention`],
//! `mla.rs`).
//!
//! CUDA tensors go to the kernels on the stream of candle's device (feature `candle-cuda`,
//! `cuda.rs`: the same plan, no synchronisation). CPU tensors run the exact PTX of the GPU
//! kernels on the emulator backend ([`crate::host::emulated`]), so the op is tested in CI
//! against the candle reference; a run in which the emulator reports any finding fails.
//! Without `candle-cuda`, CUDA tensors are refused with [`CUDA_UNAVAILABLE`].
//!
//! Gradients: when q, k, v (or the sinks) are tracked by candle's autograd, `loss.backward()`
//! runs the backward kernels on the same device, with the forward's LSE (`grad.rs`).
//!
//! Errors: candle errors; a flashmha validation error is wrapped
//! (`candle_core::Error::Wrapped`) with its structured message. Reads the given tensors,
//! returns new ones; touches nothing else.

use crate::common::dtype::DType;
use crate::common::error::{Dim, Error, TensorName};
use crate::common::options::AttnOptions;
use crate::host::emulated;
use crate::host::problem::{FwdProblem, SeqLayout};
use crate::host::HostInputs;
use crate::ops::forward::problem::{FwdShape, Heads, SeqShape};
use candle_core::{DType as CDType, Device, Tensor};

#[cfg(feature = "candle-cuda")]
mod cuda;
mod grad;
mod mla;
mod paged;

pub use mla::{mla_decode_attention, MlaKvCache};
pub use paged::{paged_attention, PagedKvCache};

/// Why CUDA tensors are rejected when the crate is built without feature `candle-cuda` (the
/// error message of that case).
pub const CUDA_UNAVAILABLE: &str = "flashmha::candle: CUDA tensors need flashmha's \
     `candle-cuda` feature (which turns on candle-core's `cuda`); without it, move the tensors \
     to the CPU to run the kernels on the emulator, or call flashmha::cuda::CudaBackend with \
     cudarc buffers";

/// Where q, k and v live: the kernels run there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// CPU tensors: the emulator.
    Emulator,
    /// CUDA tensors: the CUDA backend (feature `candle-cuda`).
    #[cfg_attr(not(feature = "candle-cuda"), allow(dead_code))]
    Cuda,
}

fn wrap(e: Error) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The kernels' element type of `t`, which must be f16 or bf16 and equal to `dtype` of q.
fn element_type(name: TensorName, t: &Tensor) -> candle_core::Result<DType> {
    match t.dtype() {
        CDType::F16 => Ok(DType::F16),
        CDType::BF16 => Ok(DType::Bf16),
        other => Err(candle_core::Error::Msg(format!(
            "flashmha::candle: {name} is {other:?}; the kernels take f16 or bf16"
        ))),
    }
}

fn same_dtype(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<DType> {
    dtype_shared_by(q, [(TensorName::K, k), (TensorName::V, v)])
}

/// q's kernel dtype, which every one of `others` must have too.
fn dtype_shared_by<const N: usize>(
    q: &Tensor,
    others: [(TensorName, &Tensor); N],
) -> candle_core::Result<DType> {
    let dtype = element_type(TensorName::Q, q)?;
    for (name, t) in others {
        let found = element_type(name, t)?;
        if found != dtype {
            return Err(wrap(Error::DTypeMismatch {
                tensor: name,
                expected: dtype,
                found,
            }));
        }
    }
    Ok(dtype)
}

fn same_device(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Target> {
    for t in [k, v] {
        if !t.device().same_device(q.device()) {
            return Err(candle_core::Error::Msg(
                "flashmha::candle: q, k and v must be on the same device".into(),
            ));
        }
    }
    if q.device().is_cpu() {
        Ok(Target::Emulator)
    } else if q.device().is_cuda() {
        if cfg!(feature = "candle-cuda") {
            Ok(Target::Cuda)
        } else {
            Err(candle_core::Error::Msg(CUDA_UNAVAILABLE.into()))
        }
    } else {
        Err(candle_core::Error::Msg(format!(
            "flashmha::candle: {:?} tensors are not supported (CPU runs on the emulator)",
            q.device()
        )))
    }
}

fn dims<const N: usize>(name: TensorName, t: &Tensor) -> candle_core::Result<[usize; N]> {
    t.dims().try_into().map_err(|_| {
        candle_core::Error::Msg(format!(
            "flashmha::candle: {name} has shape {:?}, expected rank {N}",
            t.dims()
        ))
    })
}

/// The raw 16-bit patterns of a f16/bf16 tensor, in row-major order.
fn bits(t: &Tensor) -> candle_core::Result<Vec<u16>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        CDType::F16 => bytemuck::cast_vec(flat.to_vec1::<half::f16>()?),
        _ => bytemuck::cast_vec(flat.to_vec1::<half::bf16>()?),
    })
}

/// A tensor of `dtype` from raw 16-bit patterns.
fn from_bits(bits: Vec<u16>, dtype: DType, dims: &[usize]) -> candle_core::Result<Tensor> {
    match dtype {
        DType::F16 => Tensor::from_vec(
            bytemuck::cast_vec::<u16, half::f16>(bits),
            dims,
            &Device::Cpu,
        ),
        DType::Bf16 => Tensor::from_vec(
            bytemuck::cast_vec::<u16, half::bf16>(bits),
            dims,
            &Device::Cpu,
        ),
    }
}

/// Runs `problem` on the emulator with the tensors' data (and the sinks' values); returns O's
/// bits and the LSE.
fn emulate(
    problem: &FwdProblem,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: Option<Vec<f32>>,
) -> candle_core::Result<(Vec<u16>, Vec<f32>)> {
    let inputs = HostInputs {
        q: bits(q)?,
        k: bits(k)?,
        v: bits(v)?,
        alibi_slopes: None,
        head_gates: None,
        sinks,
    };
    let run = emulated::forward(problem, &inputs).map_err(wrap)?;
    let findings = run
        .report
        .findings
        .iter()
        .map(ToString::to_string)
        .collect();
    emulated_outputs(findings, run.outputs.o, run.outputs.lse)
}

/// An emulated run's O bits and LSE; an error when the emulator reported any finding (the
/// first one named) or the LSE was not written.
fn emulated_outputs(
    findings: Vec<String>,
    o: Vec<u16>,
    lse: Option<Vec<f32>>,
) -> candle_core::Result<(Vec<u16>, Vec<f32>)> {
    if let Some(first) = findings.first() {
        return Err(wrap(Error::Emulator(
            crate::common::error::EmulatorError::Findings {
                count: findings.len(),
                first: first.clone(),
            },
        )));
    }
    let lse =
        lse.ok_or_else(|| candle_core::Error::Msg("flashmha::candle: no LSE was written".into()))?;
    Ok((o, lse))
}

/// Attention over padded tensors: `q: [b, sq, hq, d]`, `k, v: [b, sk, hkv, d]` (f16 or bf16,
/// any strides; `hq` a multiple of `hkv` for GQA/MQA). Returns `o: [b, sq, hq, d]` (q's dtype)
/// and `lse: [b, hq, sq]` (f32, natural log; `-inf` for a fully masked row). Masks and scale
/// follow [`AttnOptions`]. v may have its own head dim d_v where a (d, d_v) pair is compiled
/// (issue 23: 192 / 128, 128 / 64; forward only, the backward refuses it): o is then
/// `[b, sq, hq, d_v]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttnOptions,
) -> candle_core::Result<(Tensor, Tensor)> {
    padded(q, k, v, None, opts)
}

/// [`attention`] with attention sinks: `sinks: [hq]` (f32, on q's device) holds a logit per
/// query head whose `exp` joins every row's softmax denominator of that head and contributes
/// no value, `P_ij = exp(s_ij) / (exp(sinks[h]) + sum_j exp(s_ij))` (gpt-oss and similar);
/// the LSE includes it (a row with no visible key gets `O = 0`, `lse = sinks[h]`).
pub fn attention_with_sinks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: &Tensor,
    opts: &AttnOptions,
) -> candle_core::Result<(Tensor, Tensor)> {
    padded(q, k, v, Some(sinks), opts)
}

/// `sinks` checked as the `[hq]` f32 tensor the kernels read.
fn check_sinks(sinks: &Tensor, heads_q: usize) -> candle_core::Result<()> {
    let [n] = dims::<1>(TensorName::Sinks, sinks)?;
    if n != heads_q {
        return Err(wrap(Error::DimMismatch {
            tensor: TensorName::Sinks,
            dim: Dim::Heads,
            expected: heads_q,
            found: n,
        }));
    }
    if sinks.dtype() != CDType::F32 {
        return Err(candle_core::Error::Msg(format!(
            "flashmha::candle: sinks are {:?}; the kernels take f32",
            sinks.dtype()
        )));
    }
    Ok(())
}

/// The padded op, with or without sinks.
fn padded(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: Option<&Tensor>,
    opts: &AttnOptions,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dtype = same_dtype(q, k, v)?;
    let qd = dims::<4>(TensorName::Q, q)?;
    let kd = dims::<4>(TensorName::K, k)?;
    let vd = dims::<4>(TensorName::V, v)?;
    // o: q's rows and heads, v's head dim. Checks every dim of every tensor against the others
    // (typed errors).
    let od = [qd[0], qd[1], qd[2], vd[3]];
    let shape = FwdShape::from_dense_dims(qd, kd, vd, od).map_err(wrap)?;
    let [batch, seqlen_q, heads_q, _] = qd;
    if let Some(s) = sinks {
        check_sinks(s, heads_q)?;
        if !s.device().same_device(q.device()) {
            return Err(candle_core::Error::Msg(
                "flashmha::candle: sinks must be on q's device".into(),
            ));
        }
    }
    let shape = shape.with_options(*opts);
    let (o, lse) = if same_device(q, k, v)? == Target::Cuda {
        let out = OutputDims {
            o: od.to_vec(),
            lse: vec![batch, heads_q, seqlen_q],
            sinks: sinks.cloned(),
        };
        on_cuda(&shape, q, k, v, None, out)?
    } else {
        padded_emulated(dtype, &shape, q, k, v, sinks)?
    };
    with_gradients(shape, (q, k, v), (o, lse), None, sinks)
}

/// `o` carrying the op's backward when any input is tracked (grad.rs), and the LSE.
fn with_gradients(
    shape: FwdShape,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    (o, lse): (Tensor, Tensor),
    cu_seqlens: Option<(Tensor, Tensor)>,
    sinks: Option<&Tensor>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let grad = grad::AttnGrad {
        shape,
        o,
        lse: lse.clone(),
        cu_seqlens,
        sinks: None,
        stash: Default::default(),
    };
    // SinkGrad runs the one kernel backward (with d(sink)) and hands dQ, dK, dV to the
    // AttnGrad through their shared stash (grad.rs).
    let sink_grad = sinks.map(|z| grad::SinkGrad {
        grad: grad::AttnGrad {
            sinks: Some(z.clone()),
            ..grad.clone()
        },
        qkv: [q.clone(), k.clone(), v.clone()],
    });
    let o = grad.attach(q, k, v)?;
    let o = match (sinks, sink_grad) {
        (Some(z), Some(g)) => g.attach(o, z)?,
        _ => o,
    };
    Ok((o, lse))
}

/// The padded op on CPU tensors: the emulator.
fn padded_emulated(
    dtype: DType,
    shape: &FwdShape,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: Option<&Tensor>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let qd = dims::<4>(TensorName::Q, q)?;
    let [batch, seqlen_q, heads_q, head_dim] = qd;
    let mut problem = FwdProblem::contiguous_dv(
        dtype,
        SeqLayout::Padded {
            batch,
            seqlen_q,
            seqlen_k: shape.seq.max_seqlens().1,
        },
        (heads_q, shape.heads.kv),
        (head_dim, shape.head_dim_v),
        shape.options,
    );
    problem.lse_len = Some(problem.row_stats_len());
    problem.sinks_len = sinks.map(|_| heads_q);
    let sinks = sinks.map(|s| s.to_vec1::<f32>()).transpose()?;
    let (o, lse) = emulate(&problem, q, k, v, sinks)?;
    Ok((
        from_bits(o, dtype, &[batch, seqlen_q, heads_q, shape.head_dim_v])?,
        Tensor::from_vec(lse, (batch, heads_q, seqlen_q), &Device::Cpu)?,
    ))
}

/// The dims of the op's two outputs (read by the CUDA path; the emulator path builds its
/// outputs from the problem).
#[cfg_attr(not(feature = "candle-cuda"), allow(dead_code))]
struct OutputDims {
    /// `[b, sq, hq, d]` or `[total_q, hq, d]`, contiguous.
    o: Vec<usize>,
    /// `[b, hq, sq]` or `[hq, total_q]`.
    lse: Vec<usize>,
    /// `[hq]` f32 attention-sink logits on the tensors' device, when given.
    sinks: Option<Tensor>,
}

/// Runs `shape` on the tensors' CUDA device (feature `candle-cuda`); without the feature,
/// [`same_device`] never returns [`Target::Cuda`] and this is the [`CUDA_UNAVAILABLE`] error.
fn on_cuda(
    shape: &FwdShape,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens: Option<(&Tensor, &Tensor)>,
    out: OutputDims,
) -> candle_core::Result<(Tensor, Tensor)> {
    #[cfg(feature = "candle-cuda")]
    return cuda::run(shape, q, k, v, cu_seqlens, out);
    #[cfg(not(feature = "candle-cuda"))]
    {
        let _ = (shape, q, k, v, cu_seqlens, out);
        Err(candle_core::Error::Msg(CUDA_UNAVAILABLE.into()))
    }
}

/// A host copy of a `[batch + 1]` integer cu_seqlens tensor.
fn cu_seqlens(name: TensorName, t: &Tensor) -> candle_core::Result<Vec<i32>> {
    let [_] = dims::<1>(name, t)?;
    host_i32(name, t)
}

/// A host copy of an integer tensor (any integer dtype, any device) as i32, in row-major
/// order; an entry outside i32 is an error.
fn host_i32(name: TensorName, t: &Tensor) -> candle_core::Result<Vec<i32>> {
    if t.dtype().is_float() {
        return Err(candle_core::Error::Msg(format!(
            "flashmha::candle: {name} is {:?}; expected an integer dtype",
            t.dtype()
        )));
    }
    t.flatten_all()?
        .to_dtype(CDType::I64)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|x| {
            i32::try_from(x).map_err(|_| {
                candle_core::Error::Msg(format!(
                    "flashmha::candle: {name} holds {x}, beyond the kernels' int32 range"
                ))
            })
        })
        .collect()
}

/// Attention over packed variable-length sequences: `q: [total_q, hq, d]`,
/// `k: [total_k, hkv, d]`, `v: [total_k, hkv, d_v]` (d_v = d, or a compiled (d, d_v) pair such
/// as DeepSeek's (192, 128): issue 23); item `i` owns rows
/// `cu_seqlens_q[i]..cu_seqlens_q[i + 1]` of q (and likewise of k, v). `cu_seqlens_*` are
/// `[batch + 1]` integer tensors (any integer dtype, any device); `max_seqlen_*` bound every
/// item's length (an item longer than its bound is an error). Returns `o: [total_q, hq, d_v]`
/// and `lse: [hq, total_q]` (f32).
#[allow(clippy::too_many_arguments)] // the varlen signature users know from flash-attn
pub fn attention_varlen(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &Tensor,
    cu_seqlens_k: &Tensor,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    opts: &AttnOptions,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dtype = same_dtype(q, k, v)?;
    let [total_q, heads_q, head_dim] = dims::<3>(TensorName::Q, q)?;
    let [total_k, heads_kv, head_dim_k] = dims::<3>(TensorName::K, k)?;
    let vd = dims::<3>(TensorName::V, v)?;
    let head_dim_v = vd[2];
    // v: k's rows and heads, its own head dim (d_v; the plan checks the pair is compiled).
    let kd = [total_k, heads_kv, head_dim_v];
    let dim_names = [Dim::Seq, Dim::Heads, Dim::HeadDim];
    if let Some(i) = (0..3).find(|&i| vd[i] != kd[i]) {
        return Err(wrap(Error::DimMismatch {
            tensor: TensorName::V,
            dim: dim_names[i],
            expected: kd[i],
            found: vd[i],
        }));
    }
    if head_dim_k != head_dim {
        return Err(wrap(Error::DimMismatch {
            tensor: TensorName::K,
            dim: Dim::HeadDim,
            expected: head_dim,
            found: head_dim_k,
        }));
    }
    if same_device(q, k, v)? == Target::Cuda {
        // Host-side bounds only: the device cu_seqlens are never read here; the kernel checks
        // them against these bounds and traps on a violation.
        let batch = dims::<1>(TensorName::CuSeqlensQ, cu_seqlens_q)?[0].saturating_sub(1);
        let shape = FwdShape::contiguous(
            SeqShape::Varlen {
                batch,
                max_seqlen_q,
                max_seqlen_k,
                total_q,
                total_k,
            },
            Heads::gqa(heads_q, heads_kv),
            head_dim,
            head_dim_v,
        )
        .with_options(*opts);
        let cu_q = cu_seqlens_q.to_device(q.device())?;
        let cu_k = cu_seqlens_k.to_device(q.device())?;
        let out = OutputDims {
            o: vec![total_q, heads_q, head_dim_v],
            lse: vec![heads_q, total_q],
            sinks: None,
        };
        let outputs = on_cuda(&shape, q, k, v, Some((&cu_q, &cu_k)), out)?;
        return with_gradients(shape, (q, k, v), outputs, Some((cu_q, cu_k)), None);
    }
    let layout = SeqLayout::Varlen {
        cu_seqlens_q: cu_seqlens(TensorName::CuSeqlensQ, cu_seqlens_q)?,
        cu_seqlens_k: cu_seqlens(TensorName::CuSeqlensK, cu_seqlens_k)?,
    };
    let mut problem = FwdProblem::contiguous_dv(
        dtype,
        layout,
        (heads_q, heads_kv),
        (head_dim, head_dim_v),
        *opts,
    );
    // Host checks of the cu_seqlens (start at 0, never decrease, same length) first.
    let shape = problem.shape().map_err(wrap)?;
    let (max_q, max_k) = problem.layout.max_seqlens();
    let (rows_q, rows_k) = problem.layout.total_rows();
    let checks = [
        (TensorName::CuSeqlensQ, Dim::Seq, max_seqlen_q, max_q),
        (TensorName::CuSeqlensK, Dim::Seq, max_seqlen_k, max_k),
    ];
    for (tensor, dim, max, found) in checks {
        if found > max {
            return Err(wrap(Error::DimTooLarge {
                tensor,
                dim,
                max,
                found,
            }));
        }
    }
    // The packed tensors must hold exactly the rows the cu_seqlens end at.
    for (tensor, expected, found) in [
        (TensorName::Q, rows_q, total_q),
        (TensorName::K, rows_k, total_k),
    ] {
        if found != expected {
            return Err(wrap(Error::DimMismatch {
                tensor,
                dim: Dim::Seq,
                expected,
                found,
            }));
        }
    }
    problem.lse_len = Some(problem.row_stats_len());
    let (o, lse) = emulate(&problem, q, k, v, None)?;
    let outputs = (
        from_bits(o, dtype, &[total_q, heads_q, head_dim_v])?,
        Tensor::from_vec(lse, (heads_q, total_q), &Device::Cpu)?,
    );
    let cu = (cu_seqlens_q.clone(), cu_seqlens_k.clone());
    with_gradients(shape, (q, k, v), outputs, Some(cu), None)
}
