//! The forward-mode (JVP) attention over any backend: the buffers of one run ([`JvpArgs`]) and
//! the run itself ([`super::Attention::jvp`]): one launch queued on the stream, no allocation,
//! no synchronisation.

use crate::backend::{Backend, Binder, Read, Write};
use crate::common::element::Element;
use crate::common::error::{Result, TensorName};
use crate::common::launch::Launches;
use crate::ops::forward::bind::FwdBufs;
use crate::ops::jvp::plan::{JvpBufs, JvpPlan};

/// A varlen run's `cu_seqlens_q` and `cu_seqlens_k`.
type CuSeqlens<'a, B> = (&'a dyn Read<B, i32>, &'a dyn Read<B, i32>);

/// Buffers of one JVP run (layouts in `kernels/params.h`, FlashJvpParams: every tangent like its
/// primal; sizes from the plan).
pub struct JvpArgs<'a, B: Backend + ?Sized, T> {
    q: &'a dyn Read<B, T>,
    k: &'a dyn Read<B, T>,
    v: &'a dyn Read<B, T>,
    dq: &'a dyn Read<B, T>,
    dk: &'a dyn Read<B, T>,
    dv: &'a dyn Read<B, T>,
    o: &'a mut dyn Write<B, T>,
    o_tangent: &'a mut dyn Write<B, T>,
    cu_seqlens: Option<CuSeqlens<'a, B>>,
    alibi_slopes: Option<&'a dyn Read<B, f32>>,
    head_gates: Option<&'a dyn Read<B, f32>>,
    sinks: Option<&'a dyn Read<B, f32>>,
}

impl<'a, B: Backend + ?Sized, T> JvpArgs<'a, B, T> {
    /// The primals q, k, v, their tangents dq, dk, dv; the forward's output o and its tangent
    /// O' out.
    pub fn new(
        (q, k, v): (
            &'a impl Read<B, T>,
            &'a impl Read<B, T>,
            &'a impl Read<B, T>,
        ),
        (dq, dk, dv): (
            &'a impl Read<B, T>,
            &'a impl Read<B, T>,
            &'a impl Read<B, T>,
        ),
        (o, o_tangent): (&'a mut impl Write<B, T>, &'a mut impl Write<B, T>),
    ) -> Self {
        JvpArgs {
            q,
            k,
            v,
            dq,
            dk,
            dv,
            o,
            o_tangent,
            cu_seqlens: None,
            alibi_slopes: None,
            head_gates: None,
            sinks: None,
        }
    }

    /// ALiBi slopes `[hq]` (f32), as the forward's.
    pub fn alibi_slopes(mut self, slopes: &'a impl Read<B, f32>) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }

    /// Per-head output gates `[hq]` (f32): O and O' of head `h` times `gates[h]`.
    pub fn head_gates(mut self, gates: &'a impl Read<B, f32>) -> Self {
        self.head_gates = Some(gates);
        self
    }

    /// Attention-sink logits `[hq]` (f32), as the forward's (the sink has no tangent).
    pub fn sinks(mut self, sinks: &'a impl Read<B, f32>) -> Self {
        self.sinks = Some(sinks);
        self
    }

    /// Device `cu_seqlens_q` and `cu_seqlens_k` (`[batch + 1]` i32 each): required by a varlen
    /// plan, rejected by a padded one. Their contents are checked by the kernel.
    pub fn cu_seqlens(mut self, q: &'a impl Read<B, i32>, k: &'a impl Read<B, i32>) -> Self {
        self.cu_seqlens = Some((q, k));
        self
    }
}

/// [`super::Attention::jvp`]: binds every argument, checks the buffers against the plan in O(1)
/// and queues the launch.
pub(super) fn run<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &JvpPlan,
    args: JvpArgs<'_, B, T>,
) -> Result<()> {
    super::check_dtype::<T>(TensorName::Q, plan.dtype())?;
    let JvpArgs {
        q,
        k,
        v,
        dq,
        dk,
        dv,
        o,
        o_tangent,
        cu_seqlens,
        alibi_slopes,
        head_gates,
        sinks,
    } = args;
    let mut t = Binder::new(be, stream);
    let (q, _q) = t.read(TensorName::Q, Some(q))?;
    let (k, _k) = t.read(TensorName::K, Some(k))?;
    let (v, _v) = t.read(TensorName::V, Some(v))?;
    let (dq, _dq) = t.read(TensorName::DQ, Some(dq))?;
    let (dk, _dk) = t.read(TensorName::DK, Some(dk))?;
    let (dv, _dv) = t.read(TensorName::DV, Some(dv))?;
    let (o, _o) = t.write(TensorName::O, Some(o))?;
    let (o_tangent, _ot) = t.write(TensorName::OTangent, Some(o_tangent))?;
    let (cu_q, cu_k) = cu_seqlens.unzip();
    let (cu_seqlens_q, _cq) = t.read(TensorName::CuSeqlensQ, cu_q)?;
    let (cu_seqlens_k, _ck) = t.read(TensorName::CuSeqlensK, cu_k)?;
    let (alibi_slopes, _al) = t.read(TensorName::AlibiSlopes, alibi_slopes)?;
    let (head_gates, _hg) = t.read(TensorName::HeadGates, head_gates)?;
    let (sinks, _sk) = t.read(TensorName::Sinks, sinks)?;
    let launch = plan.bind(&JvpBufs {
        fwd: FwdBufs {
            q,
            k,
            v,
            o,
            alibi_slopes,
            head_gates,
            sinks,
            cu_seqlens_q,
            cu_seqlens_k,
            ..Default::default()
        },
        dq,
        dk,
        dv,
        o_tangent,
    })?;
    // SAFETY: `bind` checked every buffer against the plan's extents, so every address the
    // kernel forms lies inside buffers that the borrows in `args` keep alive for this call and
    // the guards keep ordered on the stream; cu_seqlens are checked by the kernel.
    unsafe { be.launch(stream, &Launches::one(launch), &t.bound) }
}
