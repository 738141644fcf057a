//! The C ABI's emulator entry points of the forward: a plan run on the PTX emulator with host
//! buffers, so C and C++ clients (and CI) exercise the exact kernels without a GPU. The shared
//! path (`op.rs`) first binds the host buffers to the plan at their own addresses (the GPU's
//! rules: lengths, alignment, no output overlapping another buffer, presence), then mirrors
//! them on an emulator device (`host.rs`), binds again there and runs; o, lse and entropy are
//! copied back.

use super::ffi::{self, flashmha_status};
use super::op;
use super::plan::{make, Forward};

/// `flashmha_status flashmha_emulate_run(const flashmha_plan *plan,
/// const flashmha_bufs *host_bufs)`
///
/// # Safety
/// `plan` is NULL or a live handle; `host_bufs` is NULL or valid, and each buffer in it is
/// host memory of at least its declared length; inputs are not written during the call.
#[no_mangle]
pub unsafe extern "C" fn flashmha_emulate_run(
    plan: *const ffi::flashmha_plan,
    host_bufs: *const ffi::flashmha_bufs,
) -> flashmha_status {
    // SAFETY: the caller's contract; forward handles are `Box<Plan>`.
    unsafe { op::emulate_handle::<Forward, _>(plan, host_bufs) }
}

/// `flashmha_status flashmha_emulate_forward(const flashmha_shape *shape,
/// const flashmha_bufs *host_bufs)`
///
/// # Safety
/// As for `flashmha_emulate_run`, with `shape` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn flashmha_emulate_forward(
    shape: *const ffi::flashmha_shape,
    host_bufs: *const ffi::flashmha_bufs,
) -> flashmha_status {
    // SAFETY: the caller's contract for each pointer.
    unsafe { op::emulate::<Forward, _, _>(shape, "shape", host_bufs, |s| make(s, None)) }
}
