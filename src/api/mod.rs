//! The ops' calls, written once for every [`Backend`]: [`Attention`] is implemented for any
//! backend, so `backend.decode(&stream, &plan, args)` is the same line on
//! [`crate::cuda::CudaBackend`] in production and on
//! [`crate::backend::emulator::EmulatorBackend`] in a server's CI. Each call binds its arguments
//! (every buffer of the backend, whole or a view), checks them against the plan in O(1) with
//! typed errors before anything is launched, and queues the plan's launches on the stream: no
//! allocation, no synchronisation, so the calls can be captured in a CUDA graph.
//!
//! ```no_run
//! use flashmha::api::{Attention, DecodeArgs};
//! use flashmha::backend::Backend;
//! use flashmha::ops::decode::DecodePlan;
//!
//! /// One decode step, generic over the backend: the emulator in CI, CUDA in production.
//! fn step<B: Backend>(
//!     backend: &B,
//!     stream: &B::Stream,
//!     plan: &DecodePlan,
//!     q: &B::Buffer<half::f16>,
//!     (k_pages, v_pages): (&B::Buffer<half::f16>, &B::Buffer<half::f16>),
//!     o: &mut B::Buffer<half::f16>,
//!     (block_table, lens): (&B::Buffer<i32>, &B::Buffer<i32>),
//!     workspace: &mut B::Buffer<f32>,
//! ) -> flashmha::Result<()> {
//!     let args = DecodeArgs::new(q, k_pages, v_pages, o, block_table, lens).workspace(workspace);
//!     backend.decode(stream, plan, args)
//! }
//! ```

mod backward;
mod decode;
mod forward;
mod jvp;
mod paged;

/// The optional per-row outputs (LSE, entropy: f32, one per query row and head) and per-head
/// inputs (ALiBi slopes, output gates: f32 `[hq]`) that the forward and the decode share, with
/// the same meaning and layouts relative to their rows.
pub(crate) struct RowExtras<'a, B: Backend + ?Sized> {
    lse: Option<&'a mut dyn Write<B, f32>>,
    entropy: Option<&'a mut dyn Write<B, f32>>,
    alibi_slopes: Option<&'a dyn Read<B, f32>>,
    head_gates: Option<&'a dyn Read<B, f32>>,
    sinks: Option<&'a dyn Read<B, f32>>,
}

impl<B: Backend + ?Sized> Default for RowExtras<'_, B> {
    fn default() -> Self {
        RowExtras {
            lse: None,
            entropy: None,
            alibi_slopes: None,
            head_gates: None,
            sinks: None,
        }
    }
}

/// The bound [`RowExtras`]: lse, entropy, alibi slopes, head gates, sinks.
pub(crate) type BoundExtras = [DevBuf; 5];

impl<'a, B: Backend + ?Sized> RowExtras<'a, B> {
    /// Binds the given ones (absent ones stay absent); the guards live as long as the call.
    pub(crate) fn bind<'s>(
        self,
        t: &mut Binder<'s, B>,
    ) -> Result<(BoundExtras, [Option<B::Guard<'s>>; 5])>
    where
        'a: 's,
    {
        let (lse, g0) = t.write(TensorName::Lse, self.lse)?;
        let (entropy, g1) = t.write(TensorName::Entropy, self.entropy)?;
        let (alibi, g2) = t.read(TensorName::AlibiSlopes, self.alibi_slopes)?;
        let (gates, g3) = t.read(TensorName::HeadGates, self.head_gates)?;
        let (sinks, g4) = t.read(TensorName::Sinks, self.sinks)?;
        Ok(([lse, entropy, alibi, gates, sinks], [g0, g1, g2, g3, g4]))
    }
}

/// The builder methods of [`RowExtras`] on an args struct with an `extras` field.
macro_rules! row_extras_builders {
    () => {
        /// Also write the log-sum-exp of each score row (natural log, f32; `[b, hq, sq]`
        /// padded, `[hq, total_q]` varlen).
        pub fn lse(mut self, lse: &'a mut impl Write<B, f32>) -> Self {
            self.extras.lse = Some(lse);
            self
        }

        /// Also write the Shannon entropy of each attention row (nats, f32; same layout as
        /// LSE).
        pub fn entropy(mut self, entropy: &'a mut impl Write<B, f32>) -> Self {
            self.extras.entropy = Some(entropy);
            self
        }

        /// ALiBi slopes `[hq]` (f32): bias `-slope * |i + sk - sq - j|` on the scaled scores.
        pub fn alibi_slopes(mut self, slopes: &'a impl Read<B, f32>) -> Self {
            self.extras.alibi_slopes = Some(slopes);
            self
        }

        /// Per-head output gates `[hq]` (f32): O of head `h` is multiplied by `gates[h]`.
        pub fn head_gates(mut self, gates: &'a impl Read<B, f32>) -> Self {
            self.extras.head_gates = Some(gates);
            self
        }

        /// Attention-sink logits `[hq]` (f32): `exp(sinks[h])` joins every row's softmax
        /// denominator of head `h` and contributes no value, so `P_ij = exp(s_ij) /
        /// (exp(sinks[h]) + sum_j exp(s_ij))`; LSE and entropy include the sink's mass.
        pub fn sinks(mut self, sinks: &'a impl Read<B, f32>) -> Self {
            self.extras.sinks = Some(sinks);
            self
        }
    };
}
pub(crate) use row_extras_builders;

pub use backward::BwdArgs;

/// MLA decode (issue 23 item 3) over any backend, beside the paged decode: the MLA decode, then
/// the paged decode's split combine over 512 dims if the plan has one, queued on `stream` (O(1)
/// typed buffer checks first; no allocation, no sync). `args` come from [`DecodeArgs::mla`]
/// (16-bit latent pages) or [`DecodeArgs::mla_fp8`], plus the optional tensors and the
/// workspace of [`crate::ops::mla_decode::MlaDecodePlan::workspace`] elements.
pub fn mla_decode<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &crate::ops::mla_decode::MlaDecodePlan,
    args: DecodeArgs<'_, B, T>,
) -> Result<()> {
    decode::decode(be, stream, plan, args)
}
pub use decode::{DecodeArgs, KvAppendArgs, MergeArgs};
pub use forward::{Dense, DenseMut, FwdArgs};
pub use jvp::JvpArgs;
pub use paged::{BatchBounds, PagedAttention, PagedKv, RowStats};

use crate::backend::{Backend, Binder, Read, Write};
use crate::common::binding::DevBuf;
use crate::common::element::Element;
use crate::common::error::{Error, Result, TensorName};
use crate::common::launch::Launches;
use crate::common::options::AttnOptions;
use crate::ops::backward::plan::BwdPlan;
use crate::ops::decode::plan::DecodePlan;
use crate::ops::forward::plan::FwdPlan;
use crate::ops::forward::problem::FwdShape;
use crate::ops::head_similarity::{HeadSimBuffers, HeadSimPlan};
use crate::ops::jvp::plan::JvpPlan;
use crate::ops::kv_append::KvAppendPlan;
use crate::ops::merge::MergePlan;

/// Every op on every backend (implemented for all `B: Backend`). Plans come from the ops'
/// `Plan::new_for(backend.target(), ..)`; each method checks its buffers against the plan and
/// launches asynchronously on `stream`.
pub trait Attention: Backend {
    /// Runs a forward plan (made once per batch shape, run per layer).
    ///
    /// ```
    /// use flashmha::api::{Attention, FwdArgs};
    /// use flashmha::backend::{emulator::EmulatorBackend, Backend};
    /// use flashmha::{DType, FwdPlan, FwdShape, Heads, KernelTarget};
    /// use half::f16;
    ///
    /// # fn main() -> flashmha::Result<()> {
    /// let be = EmulatorBackend::new(KernelTarget::Ampere); // CudaBackend::new(0)? on a GPU
    /// let stream = be.stream()?;
    /// // q, o: [1, 8, 2, 64]; k, v: [1, 16, 2, 64].
    /// let plan = FwdPlan::new_for(be.target(), DType::F16, &FwdShape::padded(1, 8, 16, Heads::mha(2), 64))?;
    /// let x: Vec<f16> = (0..16 * 2 * 64).map(|i| f16::from_f32((i % 7) as f32 / 7.0)).collect();
    /// let (q, k, v) = (be.upload(&stream, &x[..8 * 128])?, be.upload(&stream, &x)?, be.upload(&stream, &x)?);
    /// let mut o = be.alloc_zeros::<f16>(&stream, 8 * 2 * 64)?;
    /// be.run(&stream, &plan, FwdArgs::new(&q, &k, &v, &mut o))?;
    /// assert!(be.download(&stream, &o)?.iter().all(|x| x.is_finite()));
    /// # Ok(()) }
    /// ```
    fn run<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &FwdPlan,
        args: FwdArgs<'_, Self, T>,
    ) -> Result<()> {
        forward::run(self, stream, plan, args)
    }

    /// Plans and runs contiguous `[batch, seq, heads, head_dim]` tensors in one call. Servers
    /// that call attention per layer keep a [`FwdPlan`] and use [`Attention::run`].
    fn forward<T: Element>(
        &self,
        stream: &Self::Stream,
        q: Dense<'_, Self, T>,
        k: Dense<'_, Self, T>,
        v: Dense<'_, Self, T>,
        o: DenseMut<'_, Self, T>,
        options: &AttnOptions,
    ) -> Result<()> {
        // Validates every dim (see `FwdShape::from_dense_dims`), plans, runs.
        let shape =
            FwdShape::from_dense_dims(q.dims, k.dims, v.dims, o.dims)?.with_options(*options);
        let plan = FwdPlan::new_for(self.target(), T::DTYPE, &shape)?;
        let args = FwdArgs {
            q: q.buf,
            k: k.buf,
            v: v.buf,
            o: o.buf,
            extras: RowExtras::default(),
            cu_seqlens: None,
        };
        forward::run(self, stream, &plan, args)
    }

    /// The backward of a forward call: dQ, dK, dV from the forward's q, k, v, o, its LSE and
    /// the output gradient dO (three launches queued on `stream`, into the caller's f32
    /// workspace of [`BwdPlan::workspace_len`] elements; no allocation, no sync).
    fn backward<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &BwdPlan,
        args: BwdArgs<'_, Self, T>,
    ) -> Result<()> {
        backward::run(self, stream, plan, args)
    }

    /// Forward-mode (JVP) attention: the forward's O and its directional derivative O' along
    /// the tangents dq, dk, dv, in one fused launch queued on `stream` (no allocation, no sync).
    fn jvp<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &JvpPlan,
        args: JvpArgs<'_, Self, T>,
    ) -> Result<()> {
        jvp::run(self, stream, plan, args)
    }

    /// Paged decode: the decode, then the split combine if the plan has one.
    fn decode<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &DecodePlan,
        args: DecodeArgs<'_, Self, T>,
    ) -> Result<()> {
        decode::decode(self, stream, plan, args)
    }

    /// Merges attention states (stacked or a pair, as the plan says).
    ///
    /// ```
    /// use flashmha::api::{Attention, MergeArgs};
    /// use flashmha::backend::{emulator::EmulatorBackend, Backend};
    /// use flashmha::ops::merge::{MergePlan, MergeProblem, MergeStates, StatsLayout};
    /// use flashmha::{DType, KernelTarget};
    /// use half::f16;
    ///
    /// # fn main() -> flashmha::Result<()> {
    /// let be = EmulatorBackend::new(KernelTarget::Ampere);
    /// let stream = be.stream()?;
    /// // Two states of 4 rows x 2 heads x d64, LSE [rows, heads].
    /// let problem = MergeProblem { dtype: DType::F16, states: MergeStates::Pair, rows: 4,
    ///                              heads: 2, head_dim: 64, lse_layout: StatsLayout::RowsHeads };
    /// let plan = MergePlan::new_for(be.target(), &problem)?;
    /// let oa = be.upload(&stream, &vec![f16::from_f32(1.0); 4 * 2 * 64])?;
    /// let ob = be.upload(&stream, &vec![f16::from_f32(3.0); 4 * 2 * 64])?;
    /// let equal = be.upload(&stream, &[0.5f32; 8])?; // equal weights
    /// let mut o = be.alloc_zeros::<f16>(&stream, 4 * 2 * 64)?;
    /// be.merge_states(&stream, &plan, MergeArgs::pair(&oa, &equal, &ob, &equal, &mut o))?;
    /// assert!(be.download(&stream, &o)?.iter().all(|x| x.to_f32() == 2.0));
    /// # Ok(()) }
    /// ```
    fn merge_states<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &MergePlan,
        args: MergeArgs<'_, Self, T>,
    ) -> Result<()> {
        decode::merge_states(self, stream, plan, args)
    }

    /// Writes new K/V rows into the page pools (slots are checked by the kernel, which traps).
    /// A plan for zero tokens launches nothing.
    ///
    /// ```
    /// use flashmha::api::{Attention, KvAppendArgs};
    /// use flashmha::backend::{emulator::EmulatorBackend, Backend};
    /// use flashmha::ops::decode::DecodeProblem;
    /// use flashmha::ops::kv_append::{AppendIndex, KvAppendPlan};
    /// use flashmha::{DType, KernelTarget};
    /// use half::f16;
    ///
    /// # fn main() -> flashmha::Result<()> {
    /// let be = EmulatorBackend::new(KernelTarget::Ampere);
    /// let stream = be.stream()?;
    /// // Pools of 4 pages x 16 slots x 2 KV heads x d64; two new tokens.
    /// let pools = DecodeProblem::contiguous(DType::F16, 1, 1, 2, 2, 64, 4, 16, 4, false);
    /// let plan = KvAppendPlan::new_for(be.target(), &pools, 2, AppendIndex::Slots)?;
    /// let rows = be.upload(&stream, &vec![f16::from_f32(0.25); 2 * 2 * 64])?;
    /// let (mut k, mut v) = (be.alloc_zeros::<f16>(&stream, 4 * 16 * 128)?,
    ///                       be.alloc_zeros::<f16>(&stream, 4 * 16 * 128)?);
    /// let slots = be.upload(&stream, &[17i32, 40])?; // page 1 slot 1, page 2 slot 8
    /// be.kv_append(&stream, &plan, KvAppendArgs::new(&rows, &rows, &mut k, &mut v).slots(&slots))?;
    /// let k = be.download(&stream, &k)?;
    /// assert_eq!(k[17 * 128].to_f32(), 0.25);
    /// assert_eq!(k[16 * 128].to_f32(), 0.0); // untouched
    /// # Ok(()) }
    /// ```
    fn kv_append<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &KvAppendPlan,
        args: KvAppendArgs<'_, Self, T>,
    ) -> Result<()> {
        decode::kv_append(self, stream, plan, args)
    }

    /// Sums, over the tokens of `o: [tokens, heads, head_dim]` (strides in the plan), the
    /// cosine similarity of every pair of head outputs into `gram: [heads, heads]` f32, which
    /// this zeroes first (in stream order); divide by the token count for the mean.
    ///
    /// ```
    /// use flashmha::api::Attention;
    /// use flashmha::backend::{emulator::EmulatorBackend, Backend};
    /// use flashmha::ops::head_similarity::{HeadSimPlan, HeadSimProblem};
    /// use flashmha::{DType, KernelTarget};
    /// use half::f16;
    ///
    /// # fn main() -> flashmha::Result<()> {
    /// let be = EmulatorBackend::new(KernelTarget::Ampere);
    /// let stream = be.stream()?;
    /// // 8 tokens x 2 heads x d8, both heads the same vector: cosine 1 everywhere.
    /// let o = be.upload(&stream, &vec![f16::from_f32(0.5); 8 * 2 * 8])?;
    /// let mut gram = be.alloc_zeros::<f32>(&stream, 4)?;
    /// let plan = HeadSimPlan::new_for(be.target(), &HeadSimProblem::contiguous(DType::F16, 8, 2, 8))?;
    /// be.head_similarity(&stream, &plan, &o, &mut gram)?;
    /// for sum in be.download(&stream, &gram)? {
    ///     assert!((sum / 8.0 - 1.0).abs() < 1e-3);
    /// }
    /// # Ok(()) }
    /// ```
    fn head_similarity<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &HeadSimPlan,
        o: &dyn Read<Self, T>,
        gram: &mut dyn Write<Self, f32>,
    ) -> Result<()> {
        head_similarity(self, stream, plan, o, gram)
    }
}

impl<B: Backend + ?Sized> Attention for B {}

/// The buffers' element type must be the plan's ([`Error::DTypeMismatch`] naming `tensor`).
fn check_dtype<T: Element>(
    tensor: TensorName,
    plan_dtype: crate::common::dtype::DType,
) -> Result<()> {
    if plan_dtype != T::DTYPE {
        return Err(Error::DTypeMismatch {
            tensor,
            expected: plan_dtype,
            found: T::DTYPE,
        });
    }
    Ok(())
}

fn head_similarity<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &HeadSimPlan,
    o: &dyn Read<B, T>,
    gram: &mut dyn Write<B, f32>,
) -> Result<()> {
    check_dtype::<T>(TensorName::HeadSimInput, plan.problem.dtype)?;
    let mut t = Binder::new(be, stream);
    let (o, _o) = t.read(TensorName::HeadSimInput, Some(o))?;
    let (gram, _g) = t.write(TensorName::Gram, Some(gram))?;
    let bound = plan.bind(&HeadSimBuffers { o, gram })?;
    // SAFETY: `bind` checked both buffers against the plan (extent, alignment, no overlap), so
    // the zeroed bytes and every address the kernel forms lie inside `o` and `gram`, which the
    // borrows keep alive for this call and the guards keep ordered on the stream.
    unsafe {
        be.zero(stream, bound.zero, bound.zero_bytes)?;
        be.launch(stream, &Launches::one(bound.launch), &t.bound)
    }
}
