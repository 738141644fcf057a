//! CPU reference: the judge every kernel output is compared against.
//!
//! Computed with `candle-core` on the CPU, in f64 internally, from inputs that the caller has
//! already rounded to the kernel's input dtype (see [`rounding`]). The mask semantics are the
//! ones documented in [`crate::common::options`]; nothing here is tuned to a kernel's tiling or order of
//! operations, so a match means the kernel computes the documented function.
//!
//! - [`mod@attention`]: forward attention (O, LSE, entropy) for padded and varlen layouts.
//! - [`mod@backward`]: backward attention (dQ, dK, dV) by candle autograd, with per-element
//!   tolerances.
//! - [`mod@head_similarity`]: cosine similarity between head outputs, averaged over tokens.
//! - [`tolerance`]: the error measures and the tolerances every comparison uses.
//! - [`rounding`]: rounding f32 data through `half::f16` / `half::bf16`.

pub mod attention;
pub mod backward;
pub mod head_similarity;
pub mod jvp;
pub mod paged;
pub mod rounding;
pub mod tolerance;

#[cfg(test)]
mod naive;

pub use attention::{attention, attention_with_v_dim, Layout, ReferenceInputs, ReferenceOutputs};
pub use backward::{attention_backward, BackwardOutputs};
pub use head_similarity::head_similarity;
pub use jvp::{attention_jvp, JvpOutputs, Tangents};
pub use rounding::round_slice;
pub use tolerance::{
    check_each, compare, score_bound, BwdErrorModel, Comparison, EntropyTerms, ErrorModel,
    Tolerance,
};

/// Why the reference could not run: inconsistent inputs, or a candle failure.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The inputs do not describe a valid problem (lengths, heads, cu_seqlens, options).
    #[error("invalid reference input: {0}")]
    Invalid(String),
    /// candle reported an error while computing.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
