//! The C ABI of head similarity. The Rust side has no plan/bind split
//! (`plan_head_similarity(problem, buffers)` validates both and plans in O(1)), so each path
//! is one call: on a context (`CudaBackend::head_similarity_raw`) or on the emulator.

use super::convert;
use super::cuda::backend;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::status::guard;
use crate::ops::head_similarity::{plan_head_similarity, HeadSimBuffers};
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
        let problem = convert::head_sim_problem(s, b)?;
        let (o, gram) = (b.o.data as u64, b.gram.data as u64);
        // SAFETY: forwarded from this function's contract; `head_similarity_raw` validates the
        // problem and both buffers before writing anything.
        unsafe { ctx.head_similarity_raw(&problem, o, gram, stream.cast()) }?;
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
        let problem = convert::head_sim_problem(s, host)?;
        // The GPU's checks on the caller's own addresses first.
        let addrs = |b: &ffi::flashmha_head_similarity_bufs| HeadSimBuffers {
            o: b.o.data as u64,
            gram: b.gram.data as u64,
        };
        plan_head_similarity(&problem, &addrs(host))?;
        let mut m = HostMirror::default();
        // SAFETY: the caller's contract (o readable, gram writable). gram is read too: the
        // entries past heads² keep the caller's values, as on the GPU path.
        let mirrored = unsafe {
            ffi::flashmha_head_similarity_bufs {
                o: m.mirror(host.o, problem.dtype.size(), Role::Input)?,
                gram: m.mirror(host.gram, 4, Role::InOut)?,
            }
        };
        let plan = plan_head_similarity(&problem, &addrs(&mirrored))?;
        // The kernel accumulates into the heads² sums: zero them, as the GPU path does.
        let sums = vec![0u8; problem.num_heads * problem.num_heads * 4];
        let gram_at = crate::emulator::DevicePtr(plan.params.gram as u64);
        m.device()
            .write(gram_at, &sums)
            .map_err(crate::Error::from)?;
        m.launch(&plan.launch())?;
        // SAFETY: gram is writable (caller's contract).
        unsafe { m.copy_back() }
    })
}
