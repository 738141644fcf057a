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

mod decode;
mod forward;
mod paged;

pub use decode::{DecodeArgs, KvAppendArgs, MergeArgs};
pub use forward::{Dense, DenseMut, FwdArgs};
pub use paged::{BatchBounds, PagedAttention, PagedKv, RowStats};

use crate::backend::{self, Backend, BoundTensors, Read, Write};
use crate::common::element::Element;
use crate::common::error::{Error, Result, TensorName};
use crate::common::launch::Launches;
use crate::common::options::AttnOptions;
use crate::common::target::KernelTarget;
use crate::ops::decode::plan::DecodePlan;
use crate::ops::forward::plan::FwdPlan;
use crate::ops::head_similarity::{plan_head_similarity, HeadSimBuffers, HeadSimProblem};
use crate::ops::kv_append::KvAppendPlan;
use crate::ops::merge::MergePlan;

/// Every op on every backend (implemented for all `B: Backend`). Plans come from the ops'
/// `Plan::new_for(backend.target(), ..)`; each method checks its buffers against the plan and
/// launches asynchronously on `stream`.
pub trait Attention: Backend {
    /// Runs a forward plan (made once per batch shape, run per layer).
    fn run<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &FwdPlan<T>,
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
        forward::forward(self, stream, q, k, v, o, options)
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
    fn kv_append<T: Element>(
        &self,
        stream: &Self::Stream,
        plan: &KvAppendPlan,
        args: KvAppendArgs<'_, Self, T>,
    ) -> Result<()> {
        decode::kv_append(self, stream, plan, args)
    }

    /// Sums, over the tokens of `o: [tokens, heads, head_dim]` (strides in `problem`), the
    /// cosine similarity of every pair of head outputs into `gram: [heads, heads]` f32, which
    /// this zeroes first (in stream order); divide by the token count for the mean.
    fn head_similarity<T: Element>(
        &self,
        stream: &Self::Stream,
        problem: &HeadSimProblem,
        o: &dyn Read<Self, T>,
        gram: &mut dyn Write<Self, f32>,
    ) -> Result<()> {
        head_similarity(self, stream, problem, o, gram)
    }
}

impl<B: Backend + ?Sized> Attention for B {}

fn head_similarity<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    problem: &HeadSimProblem,
    o: &dyn Read<B, T>,
    gram: &mut dyn Write<B, f32>,
) -> Result<()> {
    if problem.dtype != T::DTYPE {
        return Err(Error::DTypeMismatch {
            tensor: TensorName::HeadSimInput,
            expected: problem.dtype,
            found: T::DTYPE,
        });
    }
    if be.target().shared_kernels() != KernelTarget::Ampere {
        return Err(Error::UnsupportedOnTarget {
            what: "head similarity",
            target: be.target(),
        });
    }
    let mut t = BoundTensors::default();
    let (o, _o) = backend::read(be, stream, &mut t, TensorName::HeadSimInput, o)?;
    let (gram, _g) = backend::write(be, stream, &mut t, TensorName::Gram, gram)?;
    let mut p = *problem;
    p.o_len = usize::try_from(o.len).map_err(|_| Error::SizeOverflow { what: "o length" })?;
    p.gram_len = usize::try_from(gram.len).map_err(|_| Error::SizeOverflow {
        what: "gram length",
    })?;
    let plan = plan_head_similarity(
        &p,
        &HeadSimBuffers {
            o: o.addr,
            gram: gram.addr,
        },
    )?;
    // Validation bounds `heads` by MAX_HEADS, so the product cannot overflow.
    let gram_bytes = (p.num_heads * p.num_heads * 4) as u64;
    // SAFETY: validation proved gram holds at least `heads²` f32 and every address the kernel
    // forms lies inside `o` and `gram`, which the borrows keep alive for this call and the
    // guards keep ordered on the stream.
    unsafe {
        be.zero(stream, gram, gram_bytes)?;
        be.launch(stream, &Launches::one(plan.launch()), &t)
    }
}
