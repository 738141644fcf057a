//! The forward over any backend: the buffers of one run ([`FwdArgs`]) and the run itself
//! ([`super::Attention::run`], and the one-call [`super::Attention::forward`] for dense tensors).
//! Any buffer of the backend works: on CUDA a whole `CudaSlice`, or a `CudaView` / `CudaViewMut`
//! carved from an arena; on the emulator an `EmuBuffer` or its views. Required tensors go to
//! [`FwdArgs::new`]; each optional one is a builder method, so a call states each buffer once.
//! [`Dense`] / [`DenseMut`] add the dims for the one-call form.

use crate::backend::{self, Backend, BoundTensors, Read, Write};
use crate::common::element::Element;
use crate::common::error::{Result, TensorName};
use crate::common::launch::Launches;
use crate::common::options::AttnOptions;
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::plan::FwdPlan;
use crate::ops::forward::problem::FwdShape;

/// A varlen run's `cu_seqlens_q` and `cu_seqlens_k`.
type CuSeqlens<'a, B> = (&'a dyn Read<B, i32>, &'a dyn Read<B, i32>);

/// Buffers of one forward run (layouts in `kernels/params.h`; sizes from the plan).
pub struct FwdArgs<'a, B: Backend + ?Sized, T> {
    q: &'a dyn Read<B, T>,
    k: &'a dyn Read<B, T>,
    v: &'a dyn Read<B, T>,
    o: &'a mut dyn Write<B, T>,
    lse: Option<&'a mut dyn Write<B, f32>>,
    entropy: Option<&'a mut dyn Write<B, f32>>,
    alibi_slopes: Option<&'a dyn Read<B, f32>>,
    head_gates: Option<&'a dyn Read<B, f32>>,
    cu_seqlens: Option<CuSeqlens<'a, B>>,
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
            lse: None,
            entropy: None,
            alibi_slopes: None,
            head_gates: None,
            cu_seqlens: None,
        }
    }

    /// Also write the log-sum-exp of each score row (natural log, f32; `[b, hq, sq]` padded,
    /// `[hq, total_q]` varlen).
    pub fn lse(mut self, lse: &'a mut impl Write<B, f32>) -> Self {
        self.lse = Some(lse);
        self
    }

    /// Also write the Shannon entropy of each attention row (nats, f32; same layout as LSE).
    pub fn entropy(mut self, entropy: &'a mut impl Write<B, f32>) -> Self {
        self.entropy = Some(entropy);
        self
    }

    /// ALiBi slopes `[hq]` (f32): bias `-slope * |i + sk - sq - j|` on the scaled scores.
    pub fn alibi_slopes(mut self, slopes: &'a impl Read<B, f32>) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }

    /// Per-head output gates `[hq]` (f32): O of head `h` is multiplied by `gates[h]`.
    pub fn head_gates(mut self, gates: &'a impl Read<B, f32>) -> Self {
        self.head_gates = Some(gates);
        self
    }

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
    plan: &FwdPlan<T>,
    args: FwdArgs<'_, B, T>,
) -> Result<()> {
    let FwdArgs {
        q,
        k,
        v,
        o,
        lse,
        entropy,
        alibi_slopes,
        head_gates,
        cu_seqlens,
    } = args;
    let mut t = BoundTensors::default();
    // The guards order each buffer's use on the stream once the launch is queued; they live
    // until the end of this function.
    let (q, _q) = backend::read(be, stream, &mut t, TensorName::Q, q)?;
    let (k, _k) = backend::read(be, stream, &mut t, TensorName::K, k)?;
    let (v, _v) = backend::read(be, stream, &mut t, TensorName::V, v)?;
    let (o, _o) = backend::write(be, stream, &mut t, TensorName::O, o)?;
    let (lse, _lse) = backend::opt_write(be, stream, &mut t, TensorName::Lse, lse)?;
    let (entropy, _ent) = backend::opt_write(be, stream, &mut t, TensorName::Entropy, entropy)?;
    let (alibi_slopes, _al) =
        backend::opt_read(be, stream, &mut t, TensorName::AlibiSlopes, alibi_slopes)?;
    let (head_gates, _hg) =
        backend::opt_read(be, stream, &mut t, TensorName::HeadGates, head_gates)?;
    let (cu_q, cu_k) = cu_seqlens.unzip();
    let (cu_seqlens_q, _cq) = backend::opt_read(be, stream, &mut t, TensorName::CuSeqlensQ, cu_q)?;
    let (cu_seqlens_k, _ck) = backend::opt_read(be, stream, &mut t, TensorName::CuSeqlensK, cu_k)?;
    let bufs = FwdBufs {
        q,
        k,
        v,
        o,
        lse,
        entropy,
        alibi_slopes,
        head_gates,
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
    unsafe { be.launch(stream, &Launches::one(launch), &t) }
}

/// [`super::Attention::forward`]: plans contiguous tensors (validating every dim, see
/// [`FwdShape::from_dense_dims`]) and runs.
pub(super) fn forward<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    q: Dense<'_, B, T>,
    k: Dense<'_, B, T>,
    v: Dense<'_, B, T>,
    o: DenseMut<'_, B, T>,
    options: &AttnOptions,
) -> Result<()> {
    let shape = FwdShape::from_dense_dims(q.dims, k.dims, v.dims, o.dims)?.with_options(*options);
    let plan = FwdPlan::<T>::new_for(be.target(), &shape)?;
    let args = FwdArgs {
        q: q.buf,
        k: k.buf,
        v: v.buf,
        o: o.buf,
        lse: None,
        entropy: None,
        alibi_slopes: None,
        head_gates: None,
        cu_seqlens: None,
    };
    run(be, stream, &plan, args)
}
