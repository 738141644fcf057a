//! The candle op on CUDA tensors (feature `candle-cuda`): the tensors' device memory goes to
//! the kernels through [`CudaBackend::run`] on the stream of candle's device, with the same
//! [`FwdPlan`] the emulator path runs. O and the LSE are allocated on that stream (as every
//! candle op allocates its outputs) and wrapped as candle tensors; nothing is synchronised.
//!
//! Strided inputs are read in place when their head dim is contiguous (candle's layout strides
//! become the plan's strides); anything else is made contiguous first. One [`CudaBackend`]
//! (all forward kernels loaded) is kept per CUDA context, so only the first call on a device
//! loads modules.
//!
//! The paged ops ([`paged`]: paged decode and MLA decode) plan for the device's SM count and
//! allocate O, the LSE and the split workspace per call on the stream (servers that want one
//! workspace for every layer use `CudaBackend::decode` / `api::mla_decode` directly).
//!
//! The backward ([`backward`], called by `grad.rs` when candle's autograd asks) runs the same
//! [`BwdPlan`] as the emulator path, with dQ, dK, dV and its workspace allocated on the stream.
//!
//! Reads the given tensors, returns new ones; touches nothing else.

use super::grad::{AttnGrad, Grads};
use super::paged::PagedCall;
use super::{wrap, OutputDims};
use crate::api::{Attention, BwdArgs, DecodeArgs, FwdArgs};
use crate::backend::cuda::CudaBackend;
use crate::common::element::Element;
use crate::common::geometry::Strides;
use crate::ops::backward::{BwdPlan, BwdShape};
use crate::ops::decode::{DecodePlan, SplitPolicy};
use crate::ops::forward::plan::FwdPlan;
use crate::ops::forward::problem::{FwdShape, QkvoStrides};
use crate::ops::mla_decode::MlaDecodePlan;
use candle_core::cuda::{CudaDType, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{Storage, Tensor};
use cudarc::driver::{CudaStream, CudaView};
use std::sync::{Arc, Mutex, OnceLock};

/// Backends already loaded, by CUDA context handle (as an address: the handle is an opaque
/// pointer the driver keeps for the context's lifetime).
static BACKENDS: OnceLock<Mutex<Vec<LoadedBackend>>> = OnceLock::new();

/// (context handle as an address, the backend loaded into that context)
type LoadedBackend = (usize, Arc<CudaBackend>);

/// The backend of `stream`'s context, loading the kernels on first use.
fn backend_for(stream: &CudaStream) -> candle_core::Result<Arc<CudaBackend>> {
    let ctx = stream.context();
    let key = ctx.cu_ctx() as usize;
    let cache = BACKENDS.get_or_init(|| Mutex::new(Vec::new()));
    // A poisoned lock only means another thread panicked while loading; the list stays valid.
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, b)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(b.clone());
    }
    let backend = Arc::new(CudaBackend::on_context(ctx.clone()).map_err(wrap)?);
    cache.push((key, backend.clone()));
    Ok(backend)
}

/// A CUDA tensor's device elements from its first element (`offset`) to the end of its storage;
/// the plan's per-run check bounds every access the kernel forms within that view.
fn device_view<'a, T: CudaDType>(
    storage: &'a Storage,
    offset: usize,
) -> candle_core::Result<CudaView<'a, T>> {
    match storage {
        Storage::Cuda(s) => {
            let slice = s.as_cuda_slice::<T>()?;
            Ok(slice.slice(offset..))
        }
        _ => candle_core::bail!("flashmha::candle: expected a CUDA tensor"),
    }
}

/// Runs `f` with device i32 views of a varlen call's `cu_seqlens` (converted on the stream if
/// they are another integer type; the kernels check every entry against the plan's bounds and
/// trap), or with `None` for a padded call.
fn with_cu_views<R>(
    cu_seqlens: Option<(&Tensor, &Tensor)>,
    f: impl FnOnce(Option<(&CudaView<'_, i32>, &CudaView<'_, i32>)>) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let Some((cq, ck)) = cu_seqlens else {
        return f(None);
    };
    let to_i32 = |t: &Tensor| t.to_dtype(candle_core::DType::I32)?.contiguous();
    let (cq, ck) = (to_i32(cq)?, to_i32(ck)?);
    let (qs, ql) = cq.storage_and_layout();
    let (ks, kl) = ck.storage_and_layout();
    let q_view = device_view::<i32>(&qs, ql.start_offset())?;
    let k_view = device_view::<i32>(&ks, kl.start_offset())?;
    f(Some((&q_view, &k_view)))
}

/// Row strides of a `[b, s, h, d]` (rank 4) or `[total, h, d]` (rank 3) tensor whose head dim
/// is contiguous; `None` otherwise.
fn row_strides(t: &Tensor) -> Option<Strides> {
    let st = t.layout().stride();
    match *st {
        [batch, row, head, 1] => Some(Strides {
            batch: batch as i64,
            row: row as i64,
            head: head as i64,
        }),
        [row, head, 1] => Some(Strides {
            batch: 0,
            row: row as i64,
            head: head as i64,
        }),
        _ => None,
    }
}

/// `t` with a contiguous head dim (itself, or a contiguous copy made on its stream) and the
/// strides of its leading dims.
fn with_contiguous_head_dim(t: &Tensor) -> candle_core::Result<(Tensor, Strides)> {
    let t = if row_strides(t).is_some() {
        t.clone()
    } else {
        t.contiguous()?
    };
    match row_strides(&t) {
        Some(s) => Ok((t, s)),
        None => candle_core::bail!(
            "flashmha::candle: a tensor of shape {:?} must have rank 3 or 4",
            t.dims()
        ),
    }
}

/// Runs `shape` (made from the tensors' dims, options set; its strides are replaced by the
/// tensors' own) on the tensors' device. `cu_seqlens` are the device tensors of a varlen shape.
pub(super) fn run(
    shape: &FwdShape,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens: Option<(&Tensor, &Tensor)>,
    out: OutputDims,
) -> candle_core::Result<(Tensor, Tensor)> {
    match q.dtype() {
        candle_core::DType::F16 => run_typed::<half::f16>(shape, q, k, v, cu_seqlens, out),
        candle_core::DType::BF16 => run_typed::<half::bf16>(shape, q, k, v, cu_seqlens, out),
        other => candle_core::bail!("flashmha::candle: {other:?} is not a kernel dtype"),
    }
}

fn run_typed<T: Element + CudaDType>(
    shape: &FwdShape,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens: Option<(&Tensor, &Tensor)>,
    out: OutputDims,
) -> candle_core::Result<(Tensor, Tensor)> {
    let device = q.device().as_cuda_device()?.clone();
    let stream = device.cuda_stream();
    let backend = backend_for(&stream)?;

    let (q, q_strides) = with_contiguous_head_dim(q)?;
    let (k, k_strides) = with_contiguous_head_dim(k)?;
    let (v, v_strides) = with_contiguous_head_dim(v)?;
    let o_len: usize = out.o.iter().product();
    let o_strides = match *out.o.as_slice() {
        [_, s, h, d] => Strides::contiguous(s, h, d),
        [_, h, d] => Strides::contiguous(0, h, d),
        _ => candle_core::bail!("flashmha::candle: O must have rank 3 or 4"),
    };
    let strides = QkvoStrides {
        q: q_strides,
        k: k_strides,
        v: v_strides,
        o: o_strides,
    };
    let plan =
        FwdPlan::new_for(backend.target(), T::DTYPE, &shape.with_strides(strides)).map_err(wrap)?;

    // Outputs are fully written by the kernel; zeroed allocations keep them defined even if a
    // launch error leaves them unwritten (the error is returned and they are dropped).
    let mut o = stream
        .alloc_zeros::<T>(o_len)
        .map_err(candle_core::Error::wrap)?;
    let lse_len: usize = out.lse.iter().product();
    let mut lse = stream
        .alloc_zeros::<f32>(lse_len)
        .map_err(candle_core::Error::wrap)?;
    {
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let q_view = device_view::<T>(&qs, ql.start_offset())?;
        let k_view = device_view::<T>(&ks, kl.start_offset())?;
        let v_view = device_view::<T>(&vs, vl.start_offset())?;
        let sinks = out.sinks.as_ref().map(Tensor::contiguous).transpose()?;
        let sinks_guard = sinks.as_ref().map(Tensor::storage_and_layout);
        let sinks_view = match &sinks_guard {
            Some((ss, sl)) => Some(device_view::<f32>(ss, sl.start_offset())?),
            None => None,
        };
        with_cu_views(cu_seqlens, |cu| {
            let mut args = FwdArgs::new(&q_view, &k_view, &v_view, &mut o).lse(&mut lse);
            if let Some((cq, ck)) = cu {
                args = args.cu_seqlens(cq, ck);
            }
            if let Some(s) = sinks_view.as_ref() {
                args = args.sinks(s);
            }
            backend.run(&stream, &plan, args).map_err(wrap)
        })?;
    }
    let o = Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(o, device.clone())),
        out.o,
        BackpropOp::none(),
        false,
    );
    let lse = Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(lse, device)),
        out.lse,
        BackpropOp::none(),
        false,
    );
    Ok((o, lse))
}

/// SMs of the device behind `stream` (the split heuristic's input).
fn sm_count(stream: &CudaStream) -> candle_core::Result<u32> {
    use cudarc::driver::sys::CUdevice_attribute_enum::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
    let n = stream
        .context()
        .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(candle_core::Error::wrap)?;
    Ok(n.max(1) as u32)
}

/// A paged op (the paged decode or the MLA decode) on the tensors' device: plans for the
/// device's SM count (its kernels: Turing runs f16 paged decode only and no MLA, typed errors),
/// allocates O, the LSE and (when the plan splits) the split workspace on candle's stream, and
/// runs decode and combine ([`CudaBackend::decode`], `api::mla_decode`).
pub(super) fn paged(
    call: PagedCall,
    q: &Tensor,
    o_dims: &[usize],
    lse_dims: &[usize],
) -> candle_core::Result<(Tensor, Tensor)> {
    match q.dtype() {
        candle_core::DType::F16 => paged_typed::<half::f16>(call, q, o_dims, lse_dims),
        candle_core::DType::BF16 => paged_typed::<half::bf16>(call, q, o_dims, lse_dims),
        other => candle_core::bail!("flashmha::candle: {other:?} is not a kernel dtype"),
    }
}

fn paged_typed<T: Element + CudaDType>(
    call: PagedCall,
    q: &Tensor,
    o_dims: &[usize],
    lse_dims: &[usize],
) -> candle_core::Result<(Tensor, Tensor)> {
    let stream = q.device().as_cuda_device()?.cuda_stream();
    let backend = backend_for(&stream)?;
    let policy = SplitPolicy::Auto {
        num_sms: sm_count(&stream)?,
    };
    let dims = (o_dims, lse_dims);
    match call {
        PagedCall::Decode(problem, cache) => {
            let plan = DecodePlan::new_for(backend.target(), problem, policy).map_err(wrap)?;
            let indices = (cache.block_table, cache.cache_seqlens);
            run_paged::<T>(
                q,
                (cache.k, Some(cache.v)),
                indices,
                plan.workspace.elems(),
                dims,
                |args| backend.decode(&stream, &plan, args),
            )
        }
        PagedCall::Mla(problem, cache) => {
            let plan = MlaDecodePlan::new_for(backend.target(), problem, policy).map_err(wrap)?;
            let indices = (cache.block_table, cache.cache_seqlens);
            run_paged::<T>(
                q,
                (cache.kv, None),
                indices,
                plan.workspace.elems(),
                dims,
                |args| crate::api::mla_decode(backend.as_ref(), &stream, &plan, args),
            )
        }
    }
}

/// One paged op on q's CUDA device: contiguous q and pools (`v` None: the one pool `k` is read
/// as both), the block table and lengths as i32 on the device (the kernel checks every entry
/// against the plan and traps), O `[o_dims]`, the LSE `[lse_dims]` and a workspace of
/// `workspace_elems` f32 allocated on candle's stream; `launch` queues the planned kernels with
/// those arguments. Nothing is synchronised.
fn run_paged<T: Element + CudaDType>(
    q: &Tensor,
    (k, v): (&Tensor, Option<&Tensor>),
    (block_table, cache_seqlens): (&Tensor, &Tensor),
    workspace_elems: u64,
    (o_dims, lse_dims): (&[usize], &[usize]),
    launch: impl FnOnce(DecodeArgs<'_, CudaBackend, T>) -> crate::Result<()>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let device = q.device().as_cuda_device()?.clone();
    let stream = device.cuda_stream();
    let (q, k) = (q.contiguous()?, k.contiguous()?);
    let v = v.map(Tensor::contiguous).transpose()?;
    let to_i32 = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.to_device(q.device())?
            .to_dtype(candle_core::DType::I32)?
            .contiguous()
    };
    let (block_table, cache_seqlens) = (to_i32(block_table)?, to_i32(cache_seqlens)?);
    let workspace_elems = usize::try_from(workspace_elems)
        .map_err(|_| candle_core::Error::Msg("flashmha::candle: workspace exceeds usize".into()))?;

    let alloc = |n: usize| {
        stream
            .alloc_zeros::<f32>(n)
            .map_err(candle_core::Error::wrap)
    };
    let mut o = stream
        .alloc_zeros::<T>(o_dims.iter().product())
        .map_err(candle_core::Error::wrap)?;
    let mut lse = alloc(lse_dims.iter().product())?;
    let mut workspace = alloc(workspace_elems.max(1))?;
    {
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let v_guard = v.as_ref().map(Tensor::storage_and_layout);
        let (bs, bl) = block_table.storage_and_layout();
        let (cs, cl) = cache_seqlens.storage_and_layout();
        let q_view = device_view::<T>(&qs, ql.start_offset())?;
        let k_view = device_view::<T>(&ks, kl.start_offset())?;
        let v_view = match &v_guard {
            Some((vs, vl)) => Some(device_view::<T>(vs, vl.start_offset())?),
            None => None,
        };
        let bt_view = device_view::<i32>(&bs, bl.start_offset())?;
        let cs_view = device_view::<i32>(&cs, cl.start_offset())?;
        let v_ref = v_view.as_ref().unwrap_or(&k_view);
        let args = DecodeArgs::new(&q_view, &k_view, v_ref, &mut o, &bt_view, &cs_view)
            .lse(&mut lse)
            .workspace(&mut workspace);
        launch(args).map_err(wrap)?;
    }
    let o = Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(o, device.clone())),
        o_dims,
        BackpropOp::none(),
        false,
    );
    let lse = Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(lse, device)),
        lse_dims,
        BackpropOp::none(),
        false,
    );
    Ok((o, lse))
}

/// The backward of one forward call on the tensors' CUDA device (grad.rs): contiguous q, k, v
/// and dO, the forward's O and LSE kept in `grad`; dQ, dK, dV and the f32 workspace are
/// allocated on candle's stream (as every candle op allocates its outputs); nothing is
/// synchronised.
pub(super) fn backward(
    shape: &BwdShape,
    grad: &AttnGrad,
    tensors: [&Tensor; 4],
) -> candle_core::Result<Grads> {
    match tensors[0].dtype() {
        candle_core::DType::F16 => backward_typed::<half::f16>(shape, grad, tensors),
        candle_core::DType::BF16 => backward_typed::<half::bf16>(shape, grad, tensors),
        other => candle_core::bail!("flashmha::candle: {other:?} is not a kernel dtype"),
    }
}

fn backward_typed<T: Element + CudaDType>(
    shape: &BwdShape,
    grad: &AttnGrad,
    [q, k, v, d_o]: [&Tensor; 4],
) -> candle_core::Result<Grads> {
    let device = q.device().as_cuda_device()?.clone();
    let stream = device.cuda_stream();
    let backend = backend_for(&stream)?;
    let plan = BwdPlan::new_for(backend.target(), T::DTYPE, shape).map_err(wrap)?;
    let zeros = |n: usize| stream.alloc_zeros::<T>(n).map_err(candle_core::Error::wrap);
    let (mut dq, mut dk, mut dv) = (
        zeros(q.elem_count())?,
        zeros(k.elem_count())?,
        zeros(v.elem_count())?,
    );
    let mut workspace = stream
        .alloc_zeros::<f32>(plan.workspace_len().max(1))
        .map_err(candle_core::Error::wrap)?;
    // d(sink) `[hq]` when the sinks are given (grad.rs).
    let sinks = grad.sinks.as_ref().map(Tensor::contiguous).transpose()?;
    let mut d_sinks = match &sinks {
        Some(z) => Some(
            stream
                .alloc_zeros::<f32>(z.elem_count())
                .map_err(candle_core::Error::wrap)?,
        ),
        None => None,
    };
    {
        let o = grad.o.contiguous()?;
        let lse = grad.lse.contiguous()?;
        let guards = [q, k, v, &o, d_o].map(|t| t.storage_and_layout());
        let [(qs, ql), (ks, kl), (vs, vl), (os, ol), (ds, dl)] = &guards;
        let q_view = device_view::<T>(qs, ql.start_offset())?;
        let k_view = device_view::<T>(ks, kl.start_offset())?;
        let v_view = device_view::<T>(vs, vl.start_offset())?;
        let o_view = device_view::<T>(os, ol.start_offset())?;
        let do_view = device_view::<T>(ds, dl.start_offset())?;
        let (ls, ll) = lse.storage_and_layout();
        let lse_view = device_view::<f32>(&ls, ll.start_offset())?;
        let cu = grad.cu_seqlens.as_ref().map(|(cq, ck)| (cq, ck));
        let z_guard = sinks.as_ref().map(Tensor::storage_and_layout);
        let z_view = match &z_guard {
            Some((zs, zl)) => Some(device_view::<f32>(zs, zl.start_offset())?),
            None => None,
        };
        with_cu_views(cu, |cu| {
            let mut args = BwdArgs::new(
                (&q_view, &k_view, &v_view),
                (&o_view, &lse_view),
                &do_view,
                (&mut dq, &mut dk, &mut dv),
                &mut workspace,
            );
            if let Some((cq, ck)) = cu {
                args = args.cu_seqlens(cq, ck);
            }
            if let (Some(z), Some(dz)) = (&z_view, d_sinks.as_mut()) {
                args = args.sinks(z).sink_grads(dz);
            }
            backend.backward(&stream, &plan, args).map_err(wrap)
        })?;
    }
    let wrap_grad = |s, like: &Tensor| {
        Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(s, device.clone())),
            like.dims(),
            BackpropOp::none(),
            false,
        )
    };
    let dqkv = [wrap_grad(dq, q), wrap_grad(dk, k), wrap_grad(dv, v)];
    let d_sinks = match (d_sinks, &sinks) {
        (Some(dz), Some(z)) => Some(Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(dz, device.clone())),
            z.dims(),
            BackpropOp::none(),
            false,
        )),
        _ => None,
    };
    Ok(Grads { dqkv, d_sinks })
}
