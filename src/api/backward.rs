//! The backward over any backend: the buffers of one run ([`BwdArgs`]) and the run itself
//! ([`super::Attention::backward`]): three launches queued on the stream (delta, the main
//! kernel, the dQ conversion), no allocation, no synchronisation.

use crate::backend::{Backend, Binder, Read, Write};
use crate::common::element::Element;
use crate::common::error::{Result, TensorName};
use crate::common::launch::Launches;
use crate::ops::backward::plan::{BwdBufs, BwdPlan};

/// A varlen run's `cu_seqlens_q` and `cu_seqlens_k`.
type CuSeqlens<'a, B> = (&'a dyn Read<B, i32>, &'a dyn Read<B, i32>);

/// Buffers of one backward run (layouts in `kernels/params.h`, FlashBwdParams; sizes from the
/// plan).
pub struct BwdArgs<'a, B: Backend + ?Sized, T> {
    q: &'a dyn Read<B, T>,
    k: &'a dyn Read<B, T>,
    v: &'a dyn Read<B, T>,
    o: &'a dyn Read<B, T>,
    d_o: &'a dyn Read<B, T>,
    lse: &'a dyn Read<B, f32>,
    dq: &'a mut dyn Write<B, T>,
    dk: &'a mut dyn Write<B, T>,
    dv: &'a mut dyn Write<B, T>,
    workspace: &'a mut dyn Write<B, f32>,
    cu_seqlens: Option<CuSeqlens<'a, B>>,
    alibi_slopes: Option<&'a dyn Read<B, f32>>,
    head_gates: Option<&'a dyn Read<B, f32>>,
    d_head_gates: Option<&'a mut dyn Write<B, f32>>,
    sinks: Option<&'a dyn Read<B, f32>>,
    d_sinks: Option<&'a mut dyn Write<B, f32>>,
}

impl<'a, B: Backend + ?Sized, T> BwdArgs<'a, B, T> {
    /// The forward's q, k, v, its output o and LSE (f32), the output gradient `d_o`; the
    /// gradients dq, dk, dv out; an f32 `workspace` of [`BwdPlan::workspace_len`] elements
    /// (any contents: the run initialises what it reads).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (q, k, v): (
            &'a impl Read<B, T>,
            &'a impl Read<B, T>,
            &'a impl Read<B, T>,
        ),
        (o, lse): (&'a impl Read<B, T>, &'a impl Read<B, f32>),
        d_o: &'a impl Read<B, T>,
        (dq, dk, dv): (
            &'a mut impl Write<B, T>,
            &'a mut impl Write<B, T>,
            &'a mut impl Write<B, T>,
        ),
        workspace: &'a mut impl Write<B, f32>,
    ) -> Self {
        BwdArgs {
            q,
            k,
            v,
            o,
            d_o,
            lse,
            dq,
            dk,
            dv,
            workspace,
            cu_seqlens: None,
            alibi_slopes: None,
            head_gates: None,
            d_head_gates: None,
            sinks: None,
            d_sinks: None,
        }
    }

    /// The forward's ALiBi slopes `[hq]` (f32).
    pub fn alibi_slopes(mut self, slopes: &'a impl Read<B, f32>) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }

    /// The forward's per-head output gates `[hq]` (f32): dV and dQ, dK see the gated output.
    pub fn head_gates(mut self, gates: &'a impl Read<B, f32>) -> Self {
        self.head_gates = Some(gates);
        self
    }

    /// Also write d(loss) / d(gate) `[hq]` (f32; needs [`BwdArgs::head_gates`]).
    pub fn head_gate_grads(mut self, d_gates: &'a mut impl Write<B, f32>) -> Self {
        self.d_head_gates = Some(d_gates);
        self
    }

    /// The forward's attention-sink logits `[hq]` (f32). Its LSE already includes them, so
    /// dQ, dK, dV do not need them; they are read for [`BwdArgs::sink_grads`].
    pub fn sinks(mut self, sinks: &'a impl Read<B, f32>) -> Self {
        self.sinks = Some(sinks);
        self
    }

    /// Also write d(loss) / d(sink) `[hq]` (f32; needs [`BwdArgs::sinks`]): per head,
    /// `-sum_i exp(sink - lse_i) D_i` over its rows, `D_i = rowsum(dO_i * O_i)`, an ordered
    /// (bitwise reproducible) sum on the device.
    pub fn sink_grads(mut self, d_sinks: &'a mut impl Write<B, f32>) -> Self {
        self.d_sinks = Some(d_sinks);
        self
    }

    /// Device `cu_seqlens_q` and `cu_seqlens_k` (`[batch + 1]` i32 each): required by a varlen
    /// plan, rejected by a padded one. Their contents are checked by the kernels.
    pub fn cu_seqlens(mut self, q: &'a impl Read<B, i32>, k: &'a impl Read<B, i32>) -> Self {
        self.cu_seqlens = Some((q, k));
        self
    }
}

/// [`super::Attention::backward`]: binds every argument, checks the buffers against the plan in
/// O(1) and queues the three launches.
pub(super) fn run<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &BwdPlan,
    args: BwdArgs<'_, B, T>,
) -> Result<()> {
    super::check_dtype::<T>(TensorName::Q, plan.dtype())?;
    let BwdArgs {
        q,
        k,
        v,
        o,
        d_o,
        lse,
        dq,
        dk,
        dv,
        workspace,
        cu_seqlens,
        alibi_slopes,
        head_gates,
        d_head_gates,
        sinks,
        d_sinks,
    } = args;
    let mut t = Binder::new(be, stream);
    let (q, _q) = t.read(TensorName::Q, Some(q))?;
    let (k, _k) = t.read(TensorName::K, Some(k))?;
    let (v, _v) = t.read(TensorName::V, Some(v))?;
    let (o, _o) = t.read(TensorName::O, Some(o))?;
    let (d_o, _do) = t.read(TensorName::DOut, Some(d_o))?;
    let (lse, _lse) = t.read(TensorName::Lse, Some(lse))?;
    let (dq, _dq) = t.write(TensorName::DQ, Some(dq))?;
    let (dk, _dk) = t.write(TensorName::DK, Some(dk))?;
    let (dv, _dv) = t.write(TensorName::DV, Some(dv))?;
    let (workspace, _ws) = t.write(TensorName::Workspace, Some(workspace))?;
    let (cu_q, cu_k) = cu_seqlens.unzip();
    let (cu_seqlens_q, _cq) = t.read(TensorName::CuSeqlensQ, cu_q)?;
    let (cu_seqlens_k, _ck) = t.read(TensorName::CuSeqlensK, cu_k)?;
    let (alibi_slopes, _al) = t.read(TensorName::AlibiSlopes, alibi_slopes)?;
    let (head_gates, _hg) = t.read(TensorName::HeadGates, head_gates)?;
    let (d_head_gates, _dg) = t.write(TensorName::DHeadGates, d_head_gates)?;
    let (sinks, _sk) = t.read(TensorName::Sinks, sinks)?;
    let (d_sinks, _ds) = t.write(TensorName::DSinks, d_sinks)?;
    let [dot, main, convert] = plan.bind(&BwdBufs {
        q,
        k,
        v,
        o,
        d_o,
        lse,
        dq,
        dk,
        dv,
        workspace,
        cu_seqlens_q,
        cu_seqlens_k,
        alibi_slopes,
        head_gates,
        d_head_gates,
        sinks,
        d_sinks,
    })?;
    // SAFETY: `bind` checked every buffer against the plan's extents (the workspace included),
    // so every address the kernels form lies inside buffers that the borrows in `args` keep
    // alive for this call and the guards keep ordered on the stream; cu_seqlens are checked by
    // the kernels. The three launches are queued in order on the one stream.
    unsafe {
        be.launch(stream, &Launches::two(dot, Some(main)), &t.bound)?;
        be.launch(stream, &Launches::one(convert), &t.bound)
    }
}
