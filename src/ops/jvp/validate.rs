//! Validation of a [`JvpShape`] (once per plan): everything the forward's validation checks of
//! its shape (heads, sizes, strides, options, 32-bit index limits; the tangents share their
//! primals' layouts, so those checks cover them too) and the compiled JVP kernel that serves it.
//! Pure: reads descriptions, returns typed errors, launches and writes nothing. Device-resident
//! `cu_seqlens` are checked by the kernel (a violation traps).

use crate::common::build_info::FWD_KERNELS;
use crate::common::dtype::DType;
use crate::common::error::{Error, Result};
use crate::common::target::KernelTarget;
use crate::ops::forward::validate::{
    require_equal_head_dims, validate_shape as validate_forward, FwdExtents,
};
use crate::ops::jvp::kernels::{compiled_head_dims, jvp_kernel_for, JvpKernelRow};
use crate::ops::jvp::problem::JvpShape;

/// The compiled JVP kernel that serves `shape` of element type `dtype` on `target`, and the
/// extents of its buffers (the tangents' equal their primals': dq = q, dk = k, dv = v,
/// o_tangent = o).
pub fn validate_shape(
    target: KernelTarget,
    dtype: DType,
    shape: &JvpShape,
) -> Result<(&'static JvpKernelRow, FwdExtents)> {
    // Hopper runs the Ampere kernels; Turing has none (its m16n8k8 forward would need a
    // register-staged variant of the JVP body).
    target.require_ampere_kernels("the forward-mode (JVP) attention")?;
    require_equal_head_dims(&shape.fwd, target, dtype)?;
    let (_, extents) = validate_forward(FWD_KERNELS, KernelTarget::Ampere, dtype, &shape.fwd)?;
    let d = shape.fwd.head_dim;
    let kernel = jvp_kernel_for(dtype, d).ok_or_else(|| Error::UnsupportedHeadDim {
        dtype,
        head_dim: d,
        target,
        supported: compiled_head_dims(dtype),
    })?;
    Ok((kernel, extents))
}
