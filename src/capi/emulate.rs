//! The C ABI's emulator entry point of the forward: a plan run on the PTX emulator with host
//! buffers, so C and C++ clients (and CI) exercise the exact kernels without a GPU. The host
//! buffers are first bound to the plan at their own addresses (the GPU's rules: lengths,
//! alignment, no output overlapping another buffer, presence), then mirrored on an emulator
//! device ([`HostMirror`]), bound again there and run; o, lse and entropy are copied back.

use super::convert;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::plan::Plan;
use super::status::{guard, CallError};
use crate::backend::emulator as backend;

/// Runs `plan` on host buffers `host` (see the module docs).
///
/// # Safety
/// Each buffer in `host` must be host memory of at least its declared length (elements of its
/// type); the inputs must not be written during the call.
unsafe fn emulate_plan(plan: &Plan, host: &ffi::flashmha_bufs) -> Result<(), CallError> {
    plan.bind(&convert::bufs(host)?)?;
    let e = plan.dtype().size();
    let mut m = HostMirror::default();
    // SAFETY: the caller's contract for each buffer (inputs readable, outputs writable).
    let mirrored = unsafe {
        ffi::flashmha_bufs {
            q: m.mirror(host.q, e, Role::Input)?,
            k: m.mirror(host.k, e, Role::Input)?,
            v: m.mirror(host.v, e, Role::Input)?,
            o: m.mirror(host.o, e, Role::Output)?,
            lse: m.mirror(host.lse, 4, Role::Output)?,
            entropy: m.mirror(host.entropy, 4, Role::Output)?,
            alibi_slopes: m.mirror(host.alibi_slopes, 4, Role::Input)?,
            head_gates: m.mirror(host.head_gates, 4, Role::Input)?,
            cu_seqlens_q: m.mirror(host.cu_seqlens_q, 4, Role::Input)?,
            cu_seqlens_k: m.mirror(host.cu_seqlens_k, 4, Role::Input)?,
        }
    };
    let launch = plan.bind(&convert::bufs(&mirrored)?)?;
    let report = backend::launch_bound(m.device(), &launch)?;
    HostMirror::clean(&report)?;
    // SAFETY: the output buffers are writable (caller's contract).
    unsafe { m.copy_back() }
}

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
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (plan, host) = unsafe {
            (
                Plan::from_handle(plan)?,
                convert::deref(host_bufs, "host_bufs")?,
            )
        };
        // SAFETY: forwarded from this function's contract.
        unsafe { emulate_plan(plan, host) }
    })
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
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (shape, host) = unsafe {
            (
                convert::deref(shape, "shape")?,
                convert::deref(host_bufs, "host_bufs")?,
            )
        };
        let (dtype, shape) = convert::shape(shape)?;
        let plan = Plan::new(dtype, &shape)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { emulate_plan(&plan, host) }
    })
}
