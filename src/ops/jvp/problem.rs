//! What a JVP call computes, without any device buffer: the forward's shape (sequence layout,
//! heads, head dim, options, strides of q, k, v, o). The tangents dq, dk, dv and the output
//! tangent are laid out exactly like their primals (q, k, v, o), through the same strides: the
//! kernel reads them with the primals' offsets (kernels/params.h, FlashJvpParams). Plain data.

use crate::ops::forward::problem::FwdShape;

/// A whole JVP call without buffers: the plan's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JvpShape {
    /// The forward whose directional derivative is taken.
    pub fwd: FwdShape,
}

impl JvpShape {
    /// The JVP of `fwd`, each tangent laid out like its primal.
    pub fn new(fwd: FwdShape) -> JvpShape {
        JvpShape { fwd }
    }
}
