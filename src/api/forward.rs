//! The forward over any backend: the buffers of one run ([`FwdArgs`]) and the run itself
//! ([`super::Attention::run`]; the one-call [`super::Attention::forward`] builds one from [`Dense`] tensors).
//! Any buffer of the backend works: on CUDA a whole `CudaSlice`, or a `CudaView` / `CudaViewMut`
//! carved from an arena; on the emulator an `EmuBuffer` or its views. Required tensors go to
//! [`FwdArgs::new`]; each optional one is a builder method, so a call states each buffer once.
//! [`Dense`] / [`DenseMut`] add the dims for the one-call form.

use super::RowExtras;
use crate::backend::{Backend, Binder, Read, Write};
use crate::common::element::Element;
use crate::common::error::{Result, TensorName};
use crate::common::launch::Launches;
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::plan::FwdPlan;

/// A varlen run's `cu_seqlens_q` and `cu_seqlens_k`.
type CuSeqlens<'a, B> = (&'a dyn Read<B, i32>, &'a dyn Read<B, i32>);

/// Buffers of one forward run (layouts in `kernels/params.h`; sizes from the plan).
pub struct FwdArgs<'a, B: Backend + ?Sized, T> {
    pub(super) q: &'a dyn Read<B, T>,
    pub(super) k: &'a dyn Read<B, T>,
    pub(super) v: &'a dyn Read<B, T>,
    pub(super) o: &'a mut dyn Write<B, T>,
    pub(super) extras: RowExtras<'a, B>,
    pub(super) cu_seqlens: Option<CuSeqlens<'a, B>>,
}

impl<'a, B: Backend + ?Sized, T> FwdArgs<'a, B, T> {
    /// q, k, v in; o out. Elements of the plan's type.
    pub fn new(
        q: &'a impl Read<B, T>,
        k: &'a impl Read<B, T>,
        v: &'a impl Read<B, T>,
        o: &'a mut impl Write<B, T>,
    ) -> Self {
        FwdArgs {
            q,
            k,
            v,
            o,
            extras: RowExtras::default(),
            cu_seqlens: None,
        }
    }

    super::row_extras_builders!();

    /// Device `cu_seqlens_q` and `cu_seqlens_k` (`[batch + 1]` i32 each): required by a varlen
    /// plan, rejected by a padded one. Their contents are checked by the kernel.
    pub fn cu_seqlens(mut self, q: &'a impl Read<B, i32>, k: &'a impl Read<B, i32>) -> Self {
        self.cu_seqlens = Some((q, k));
        self
    }
}

/// A contiguous `[batch, seq, heads, head_dim]` input tensor on the device.
pub struct Dense<'a, B: Backend + ?Sized, T> {
    pub(super) buf: &'a dyn Read<B, T>,
    pub(super) dims: [usize; 4],
}

impl<'a, B: Backend + ?Sized, T> Dense<'a, B, T> {
    /// `buf` read as `[batch, seq, heads, head_dim]`, row-major.
    pub fn new(buf: &'a impl Read<B, T>, dims: [usize; 4]) -> Self {
        Dense { buf, dims }
    }
}

/// A contiguous `[batch, seq, heads, head_dim]` output tensor on the device.
pub struct DenseMut<'a, B: Backend + ?Sized, T> {
    pub(super) buf: &'a mut dyn Write<B, T>,
    pub(super) dims: [usize; 4],
}

impl<'a, B: Backend + ?Sized, T> DenseMut<'a, B, T> {
    /// `buf` written as `[batch, seq, heads, head_dim]`, row-major.
    pub fn new(buf: &'a mut impl Write<B, T>, dims: [usize; 4]) -> Self {
        DenseMut { buf, dims }
    }
}

/// [`super::Attention::run`]: binds every argument (recording it for error messages), checks
/// the buffers against the plan in O(1) (length, alignment, aliasing, presence), and launches.
pub(super) fn run<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &FwdPlan,
    args: FwdArgs<'_, B, T>,
) -> Result<()> {
    super::check_dtype::<T>(TensorName::Q, plan.dtype())?;
    let FwdArgs {
        q,
        k,
        v,
        o,
        extras,
        cu_seqlens,
    } = args;
    let mut t = Binder::new(be, stream);
    // The guards order each buffer's use on the stream once the launch is queued; they live
    // until the end of this function.
    let (q, _q) = t.read(TensorName::Q, Some(q))?;
    let (k, _k) = t.read(TensorName::K, Some(k))?;
    let (v, _v) = t.read(TensorName::V, Some(v))?;
    let (o, _o) = t.write(TensorName::O, Some(o))?;
    let ([lse, entropy, alibi_slopes, head_gates, sinks], _extras) = extras.bind(&mut t)?;
    let (cu_q, cu_k) = cu_seqlens.unzip();
    let (cu_seqlens_q, _cq) = t.read(TensorName::CuSeqlensQ, cu_q)?;
    let (cu_seqlens_k, _ck) = t.read(TensorName::CuSeqlensK, cu_k)?;
    let bufs = FwdBufs {
        q,
        k,
        v,
        o,
        lse,
        entropy,
        alibi_slopes,
        head_gates,
        sinks,
        cu_seqlens_q,
        cu_seqlens_k,
    };
    // The sm_90a kernels' tensor maps are encoded over the bound addresses by the backend's
    // encoder (a host-only call on the stack, no allocation).
    let launch = plan
        .bind(&bufs)?
        .to_launch(|name, desc, addr| be.encode_tensor_map(&name.to_string(), desc, addr))?;
    // SAFETY: `bind` checked every buffer against the plan's extents, so every address the
    // kernel forms lies inside buffers that the borrows in `args` keep alive for this call and
    // that the guards keep ordered on the stream; device-resident indices (cu_seqlens) are
    // checked by the kernel itself.
    unsafe { be.launch(stream, &Launches::one(launch), &t.bound) }
}
