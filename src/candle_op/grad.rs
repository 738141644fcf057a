//! Autograd of the candle op: when q, k or v take part in a candle graph (a `Var`, or computed
//! from one), the op's O is returned as the output of [`AttnGrad`], a `CustomOp3` over (q, k, v)
//! whose `bwd` runs the backward kernels (kernels/sm80/flash_bwd.cu through
//! [`crate::api::Attention::backward`]) with the LSE kept from the forward: CPU tensors on the
//! emulator, CUDA tensors on candle's device (feature `candle-cuda`, `cuda.rs`). So
//! `loss.backward()` through `flashmha::candle::attention` gives dQ, dK, dV.
//!
//! candle's custom ops return one tensor, and the forward returns two (O and the LSE), so the
//! forward runs first (`mod.rs`) and the op's own forward hands back a copy of that O; the copy
//! is made only when a gradient is tracked (an untracked call returns O as before).
//!
//! Sinks: with an LSE that includes the sink, the kernels' dQ, dK, dV are exact (the sink adds
//! no value row). When the sinks tensor itself is tracked, [`SinkGrad`] (an identity on O as a
//! `CustomOp2` over (O, sinks)) adds d(sink): with `L_i = log(exp(z_h) + sum_j exp(s_ij))`,
//! `P_ij = exp(s_ij - L_i)`, `P_sink_i = exp(z_h - L_i)` and `O_i = sum_j P_ij v_j`,
//! `dP_ij / dz_h = -P_ij P_sink_i`, so
//! `d(loss)/dz_h = sum_i sum_j (dO_i . v_j)(-P_ij P_sink_i) = -sum_i P_sink_i (dO_i . O_i)
//! = -sum_i P_sink_i D_i`, summed over the head's rows of every batch item, with
//! `D_i = rowsum(dO_i * O_i)` (the backward's delta). The backward kernels compute it
//! (`BwdArgs::sink_grads`, kernels/common/bwd_rows.cuh). The graph is
//! `(q, k, v) -> AttnGrad -> O_a -> SinkGrad(O_a, sinks) -> O`, and O_a has no other consumer, so
//! candle runs SinkGrad's `bwd` first with the very dO that AttnGrad's `bwd` then receives: the
//! one kernel backward runs there, and its dQ, dK, dV wait in a slot both ops share until
//! AttnGrad's `bwd` takes them (when q, k or v is tracked).

use super::wrap;
use crate::api::{Attention, BwdArgs};
use crate::backend::emulator::EmulatorBackend;
use crate::backend::Backend;
use crate::common::element::Element;
use crate::common::target::KernelTarget;
use crate::ops::backward::{BwdPlan, BwdShape};
use crate::ops::forward::problem::FwdShape;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType as CDType, Device, Layout, Shape};
use candle_core::{Storage, Tensor, WithDType};
use std::sync::{Arc, Mutex};

/// dQ, dK, dV of a backward run by [`SinkGrad`], for [`AttnGrad`]'s `bwd` to take.
type Stash = Arc<Mutex<Option<[Tensor; 3]>>>;

/// One kernel backward's outputs: dQ, dK, dV (q's dtype, q's / k's dims) and, when asked for,
/// d(sink) (`[hq]` f32).
pub(super) struct Grads {
    pub dqkv: [Tensor; 3],
    pub d_sinks: Option<Tensor>,
}

/// What the backward of one forward call needs besides q, k, v and dO.
#[derive(Clone)]
pub(super) struct AttnGrad {
    /// The forward's shape (options included) over contiguous q, k, v, o.
    pub shape: FwdShape,
    /// The forward's O (`[b, sq, hq, d]` or `[total_q, hq, d]`, q's dtype, contiguous).
    pub o: Tensor,
    /// The forward's LSE (`[b, hq, sq]` or `[hq, total_q]`, f32; includes the sinks).
    pub lse: Tensor,
    /// A varlen call's `cu_seqlens_q`, `cu_seqlens_k` (`[batch + 1]`, any integer dtype).
    pub cu_seqlens: Option<(Tensor, Tensor)>,
    /// The forward's sinks (`[hq]` f32, on the tensors' device), when d(sink) is wanted.
    pub sinks: Option<Tensor>,
    /// Filled by [`SinkGrad`]'s `bwd`, emptied by this op's (module docs).
    pub stash: Stash,
}

impl AttnGrad {
    /// `o`, carrying this op's backward when q, k or v is tracked (else `o` itself).
    pub fn attach(self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        if !(q.track_op() || k.track_op() || v.track_op()) {
            return Ok(self.o);
        }
        q.apply_op3(k, v, self)
    }

    /// dQ, dK, dV of `d_o` (and d(sink) with [`AttnGrad::sinks`]) on the tensors' device.
    fn gradients(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        d_o: &Tensor,
    ) -> candle_core::Result<Grads> {
        // The kernels read the contiguous layouts the shape describes; dO arrives in O's dims.
        let [q, k, v, d_o] = [q, k, v, d_o].map(Tensor::contiguous);
        let (q, k, v) = (q?, k?, v?);
        let d_o = d_o?.to_dtype(q.dtype())?;
        let bwd = BwdShape::new(self.shape);
        if q.device().is_cuda() {
            #[cfg(feature = "candle-cuda")]
            return super::cuda::backward(&bwd, self, [&q, &k, &v, &d_o]);
            #[cfg(not(feature = "candle-cuda"))]
            return Err(candle_core::Error::Msg(super::CUDA_UNAVAILABLE.into()));
        }
        match q.dtype() {
            CDType::F16 => self.emulated::<half::f16>(&bwd, [&q, &k, &v, &d_o]),
            CDType::BF16 => self.emulated::<half::bf16>(&bwd, [&q, &k, &v, &d_o]),
            other => candle_core::bail!("flashmha::candle: {other:?} is not a kernel dtype"),
        }
    }

    /// The backward on a fresh emulated device (CPU tensors); any emulator finding is an error.
    fn emulated<T: Element + WithDType>(
        &self,
        shape: &BwdShape,
        [q, k, v, d_o]: [&Tensor; 4],
    ) -> candle_core::Result<Grads> {
        let plan = BwdPlan::new(<T as Element>::DTYPE, shape).map_err(wrap)?;
        let be = EmulatorBackend::new(KernelTarget::Ampere);
        let stream = be.stream().map_err(wrap)?;
        let host = |t: &Tensor| t.flatten_all()?.to_vec1::<T>();
        let up =
            |t: &Tensor| -> candle_core::Result<_> { be.upload(&stream, &host(t)?).map_err(wrap) };
        let (q_d, k_d, v_d, o_d, do_d) = (up(q)?, up(k)?, up(v)?, up(&self.o)?, up(d_o)?);
        let lse = self.lse.flatten_all()?.to_vec1::<f32>()?;
        let lse_d = be.upload(&stream, &lse).map_err(wrap)?;
        let zeros = |n: usize| be.alloc_zeros::<T>(&stream, n).map_err(wrap);
        let (mut dq, mut dk, mut dv) = (
            zeros(q.elem_count())?,
            zeros(k.elem_count())?,
            zeros(v.elem_count())?,
        );
        let mut ws = be
            .alloc_zeros::<f32>(&stream, plan.workspace_len())
            .map_err(wrap)?;
        let cu = match &self.cu_seqlens {
            Some((cq, ck)) => {
                let host_cu = |name, t: &Tensor| super::cu_seqlens(name, t);
                use crate::common::error::TensorName as N;
                let (cq, ck) = (host_cu(N::CuSeqlensQ, cq)?, host_cu(N::CuSeqlensK, ck)?);
                Some((
                    be.upload(&stream, &cq).map_err(wrap)?,
                    be.upload(&stream, &ck).map_err(wrap)?,
                ))
            }
            None => None,
        };
        let sinks = match &self.sinks {
            Some(z) => Some(be.upload(&stream, &z.to_vec1::<f32>()?).map_err(wrap)?),
            None => None,
        };
        let mut d_sinks = match &sinks {
            Some(z) => Some(be.alloc_zeros::<f32>(&stream, z.len()).map_err(wrap)?),
            None => None,
        };
        let mut args = BwdArgs::new(
            (&q_d, &k_d, &v_d),
            (&o_d, &lse_d),
            &do_d,
            (&mut dq, &mut dk, &mut dv),
            &mut ws,
        );
        if let Some((cq, ck)) = &cu {
            args = args.cu_seqlens(cq, ck);
        }
        if let (Some(z), Some(dz)) = (&sinks, d_sinks.as_mut()) {
            args = args.sinks(z).sink_grads(dz);
        }
        be.backward(&stream, &plan, args).map_err(wrap)?;
        let down = |b: &<EmulatorBackend as Backend>::Buffer<T>, like: &Tensor| {
            let x = be.download(&stream, b).map_err(wrap)?;
            Tensor::from_vec(x, like.dims(), &Device::Cpu)
        };
        let d_sinks = match &d_sinks {
            Some(dz) => {
                let x = be.download(&stream, dz).map_err(wrap)?;
                Some(Tensor::from_vec(x, dz.len(), &Device::Cpu)?)
            }
            None => None,
        };
        Ok(Grads {
            dqkv: [down(&dq, q)?, down(&dk, k)?, down(&dv, v)?],
            d_sinks,
        })
    }
}

/// A copy of `t`'s storage (the op's output: the already computed O, contiguous from 0).
fn cpu_copy(t: &Tensor) -> candle_core::Result<(CpuStorage, Shape)> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) if l.is_contiguous() && l.start_offset() == 0 => {
            Ok((c.clone(), l.shape().clone()))
        }
        _ => candle_core::bail!("flashmha::candle: expected a contiguous CPU output"),
    }
}

#[cfg(feature = "candle-cuda")]
fn cuda_copy(t: &Tensor) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cuda(c) => Ok((c.try_clone(l)?, l.shape().clone())),
        _ => candle_core::bail!("flashmha::candle: expected a CUDA output"),
    }
}

impl CustomOp3 for AttnGrad {
    fn name(&self) -> &'static str {
        "flashmha-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_copy(&self.o)
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda_copy(&self.o)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _o: &Tensor,
        d_o: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // SinkGrad's bwd ran the backward with this dO already (module docs).
        let stashed = self
            .stash
            .lock()
            .map_err(|_| {
                candle_core::Error::Msg("flashmha::candle: poisoned gradient slot".into())
            })?
            .take();
        let [dq, dk, dv] = match stashed {
            Some(g) => g,
            None => self.gradients(q, k, v, d_o)?.dqkv,
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// d(sink) for a call with tracked sinks: an identity on O whose backward passes dO on and adds
/// `-sum_i P_sink_i D_i` per head (module docs), from the kernel backward it runs.
pub(super) struct SinkGrad {
    /// The forward's backward data, sinks set, its stash shared with the AttnGrad on O.
    pub grad: AttnGrad,
    /// The forward's q, k, v.
    pub qkv: [Tensor; 3],
}

impl SinkGrad {
    /// `o`, carrying d(sink) when `sinks` is tracked (else `o` itself).
    pub fn attach(self, o: Tensor, sinks: &Tensor) -> candle_core::Result<Tensor> {
        if !sinks.track_op() {
            return Ok(o);
        }
        o.apply_op2(sinks, self)
    }
}

impl CustomOp2 for SinkGrad {
    fn name(&self) -> &'static str {
        "flashmha-attention-sinks"
    }

    fn cpu_fwd(
        &self,
        o: &CpuStorage,
        l: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        // O as the op returned it: contiguous from 0 (the op's own output, or AttnGrad's copy).
        if !(l.is_contiguous() && l.start_offset() == 0) {
            candle_core::bail!("flashmha::candle: expected a contiguous output");
        }
        Ok((o.clone(), l.shape().clone()))
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        o: &candle_core::CudaStorage,
        l: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        Ok((o.try_clone(l)?, l.shape().clone()))
    }

    fn bwd(
        &self,
        _o_in: &Tensor,
        sinks: &Tensor,
        _o: &Tensor,
        d_o: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let [q, k, v] = &self.qkv;
        let g = self.grad.gradients(q, k, v, d_o)?;
        let d_sinks = g.d_sinks.ok_or_else(|| {
            candle_core::Error::Msg("flashmha::candle: the backward wrote no d(sink)".into())
        })?;
        // AttnGrad's bwd follows with this dO when q, k or v is tracked (module docs).
        if q.track_op() || k.track_op() || v.track_op() {
            *self.grad.stash.lock().map_err(|_| {
                candle_core::Error::Msg("flashmha::candle: poisoned gradient slot".into())
            })? = Some(g.dqkv);
        }
        Ok((Some(d_o.clone()), Some(d_sinks.to_dtype(sinks.dtype())?)))
    }
}
