//! The C ABI of head similarity: the op's plan ([`HeadSimPlan`], made per call: it is O(1)),
//! bound to the caller's buffers, then gram's sums zeroed and the kernel launched, on a context
//! or on the emulator.

use super::convert;
use super::cuda::backend;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::status::guard;
use crate::common::binding::DevBuf;
use crate::common::launch::Launches;
use crate::common::target::KernelTarget;
use crate::ops::head_similarity::{HeadSimBuffers, HeadSimPlan};
use std::ffi::c_void;

/// `flashmha_status flashmha_head_similarity(const flashmha_context *ctx,
/// const flashmha_head_similarity_shape *shape, const flashmha_head_similarity_bufs *bufs,
/// void *stream)`
///
/// # Safety
/// Pointers NULL or valid (ctx live); `o` and `gram` device memory of the context holding at
/// least their declared lengths, allocated until `stream` has run the kernel; `stream` NULL or
/// a live `CUstream` of the context's device.
#[no_mangle]
pub unsafe extern "C" fn flashmha_head_similarity(
    ctx: *const ffi::flashmha_context,
    shape: *const ffi::flashmha_head_similarity_shape,
    bufs: *const ffi::flashmha_head_similarity_bufs,
    stream: *mut c_void,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (ctx, s, b) = unsafe {
            (
                backend(ctx)?,
                convert::deref(shape, "shape")?,
                convert::deref(bufs, "bufs")?,
            )
        };
        let plan = HeadSimPlan::new_for(ctx.target(), &convert::head_sim_problem(s)?)?;
        let bound = plan.bind(&bufs_of(b))?;
        // SAFETY: `bind` checked both buffers against the plan before anything is written;
        // the rest is forwarded from this function's contract (device memory of the context,
        // alive until the stream has run).
        unsafe {
            ctx.zero_raw(bound.zero.addr, bound.zero_bytes, stream.cast())?;
            ctx.launch_raw(&Launches::one(bound.launch), stream.cast())?;
        }
        Ok(())
    })
}

/// `flashmha_status flashmha_emulate_head_similarity(const flashmha_head_similarity_shape
/// *shape, const flashmha_head_similarity_bufs *host_bufs)`
///
/// # Safety
/// Pointers NULL or valid; `o` readable and `gram` writable host memory of at least their
/// declared lengths.
#[no_mangle]
pub unsafe extern "C" fn flashmha_emulate_head_similarity(
    shape: *const ffi::flashmha_head_similarity_shape,
    host_bufs: *const ffi::flashmha_head_similarity_bufs,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (s, host) = unsafe {
            (
                convert::deref(shape, "shape")?,
                convert::deref(host_bufs, "host_bufs")?,
            )
        };
        let problem = convert::head_sim_problem(s)?;
        let plan = HeadSimPlan::new_for(KernelTarget::Ampere, &problem)?;
        // The GPU's checks on the caller's own addresses first.
        plan.bind(&bufs_of(host))?;
        let mut m = HostMirror::default();
        // SAFETY: the caller's contract (o readable, gram writable). gram is read too: the
        // entries past heads² keep the caller's values, as on the GPU path.
        let mirrored = unsafe {
            ffi::flashmha_head_similarity_bufs {
                o: m.mirror(host.o, problem.dtype.size(), Role::Input)?,
                gram: m.mirror(host.gram, 4, Role::InOut)?,
            }
        };
        let bound = plan.bind(&bufs_of(&mirrored))?;
        // The kernel accumulates into the heads² sums: zero them, as the GPU path does.
        let sums = vec![0u8; bound.zero_bytes as usize];
        m.device()
            .write(crate::emulator::DevicePtr(bound.zero.addr), &sums)
            .map_err(crate::Error::from)?;
        m.launch(&bound.launch)?;
        // SAFETY: gram is writable (caller's contract).
        unsafe { m.copy_back() }
    })
}

/// The C buffers as the plan binds them (address and element count).
fn bufs_of(b: &ffi::flashmha_head_similarity_bufs) -> HeadSimBuffers {
    HeadSimBuffers {
        o: DevBuf::new(b.o.data as u64, b.o.len),
        gram: DevBuf::new(b.gram.data as u64, b.gram.len),
    }
}
