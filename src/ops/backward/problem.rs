//! What a backward call computes, without any device buffer: the forward's shape (sequence
//! layout, heads, head dim, options, the strides of q, k, v, o) and the strides of the gradients.
//! Plain data; touches nothing. The element type is the plan's, as for every op.

use crate::common::geometry::Strides;
use crate::ops::forward::problem::FwdShape;

/// Strides of the gradient tensors: `d_o` and `dq` index like q / o, `dk` and `dv` like k / v.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GradStrides {
    pub d_o: Strides,
    pub dq: Strides,
    pub dk: Strides,
    pub dv: Strides,
}

/// A whole backward call without buffers: the plan's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BwdShape {
    /// The forward this is the gradient of (its o and LSE are inputs here).
    pub fwd: FwdShape,
    pub grads: GradStrides,
    /// Bitwise reproducible dQ and d(gate): each key block stores its share of dQ into its own
    /// f32 slice of the workspace and each main-kernel warp its d(gate) partial into its own
    /// slot, and the conversion sums both in order, instead of f32 atomics into one accumulator
    /// (whose order, hence rounding, varies run to run on a GPU). Costs a workspace of
    /// `ceil(seqlen_k / block_n)` dQ-sized f32 slices plus `hq x batch x key blocks x warps`
    /// partials. dK and dV are always reproducible (each CTA owns its keys and sums a GQA group
    /// in a fixed order), and so is d(sink) (an ordered sum in every mode).
    pub deterministic: bool,
}

impl BwdShape {
    /// The backward of `fwd`, each gradient laid out like its tensor (`d_o` like o, `dq` like q,
    /// `dk` like k, `dv` like v).
    pub fn new(fwd: FwdShape) -> BwdShape {
        let s = fwd.strides;
        BwdShape {
            fwd,
            grads: GradStrides {
                d_o: s.o,
                dq: s.q,
                dk: s.k,
                dv: s.v,
            },
            deterministic: false,
        }
    }

    /// The same shape in deterministic mode (see [`BwdShape::deterministic`]).
    pub fn with_deterministic(mut self, deterministic: bool) -> BwdShape {
        self.deterministic = deterministic;
        self
    }

    /// The same shape with other gradient strides.
    pub fn with_grad_strides(mut self, grads: GradStrides) -> BwdShape {
        self.grads = grads;
        self
    }
}
