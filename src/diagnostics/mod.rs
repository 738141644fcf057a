//! Head diagnostics: how alike a model's attention heads are, and how focused their attention is.
//!
//! - [`emulated`]: the head-similarity kernel (`kernels/sm80/head_similarity.cu`, planned by
//!   [`crate::ops::head_similarity`]), which sums per-token cosine similarities of every pair of
//!   head outputs into an `H × H` matrix, run on the PTX emulator ([`head_similarity_emulated`]).
//! - [`similarity`]: host analysis of the mean matrix: eigen spectrum, effective number of
//!   distinct heads (participation ratio), near-duplicate clusters.
//! - [`entropy`]: per-head statistics of the forward kernel's per-row attention entropy.
//! - [`probe`]: the probing map: cross-validated linear probes of per-token properties on each
//!   head's outputs, with majority and random-projection baselines.
//! - [`robustness`]: per-head Jacobian gains (worst-case, random, non-linear) by subspace
//!   iteration over the JVP and backward kernels, and each head's contribution to the layer's.
//! - [`report`], [`plots`]: the report folder of `flashmha diagnose` (CSV, Markdown, PNG, SVG).
//! - [`npy`]: reading `.npy` / raw f32 inputs for the CLI.
//!
//! Everything except the emulator run and the report writer is pure.

pub mod emulated;
pub mod entropy;
pub mod npy;
pub mod plots;
pub mod probe;
pub mod report;
pub mod robustness;
pub mod similarity;

pub use crate::ops::head_similarity::{HeadSimBuffers, HeadSimLaunch, HeadSimPlan, HeadSimProblem};
pub use emulated::{
    describe_launch, head_similarity_emulated, head_similarity_emulated_f32,
    head_similarity_emulated_view, head_similarity_on_f32,
};
pub use entropy::{per_head_entropy, EntropySource, HeadEntropy};
pub use similarity::{
    analyze, duplicate_clusters, participation_ratio, spectrum, Cluster, SimilarityAnalysis,
    SimilarityMatrix, Spectrum, DEFAULT_DUPLICATE_THRESHOLD,
};
