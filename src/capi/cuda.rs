//! The C ABI's contexts: one device with the kernels loaded, which every op's GPU entry point
//! runs on (with the caller's `CUstream` and raw device pointers, bound by the same O(1) checks
//! as the Rust API before any launch: `op.rs`). Without a driver every entry point returns
//! `FLASHMHA_ERR_NO_CUDA_DRIVER`.

use super::convert;
use super::ffi::{self, flashmha_status};
use super::plan::{create_into, destroy};
use super::status::{guard, CallError};
use crate::cuda::CudaBackend;

/// The backend behind a context handle.
///
/// # Safety
/// A non-NULL `p` must come from `flashmha_context_create` and not have been destroyed.
pub(super) unsafe fn backend<'a>(
    p: *const ffi::flashmha_context,
) -> Result<&'a CudaBackend, CallError> {
    // SAFETY: handles are `Box<CudaBackend>` pointers; the caller's contract says it is live.
    unsafe { convert::deref(p.cast::<CudaBackend>(), "ctx") }
}

/// SMs of `ctx`'s device: the decode split heuristic's input when the caller gives none.
pub(super) fn sm_count(ctx: &CudaBackend) -> Result<u32, CallError> {
    use cudarc::driver::sys::CUdevice_attribute_enum::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
    let n = ctx
        .context()
        .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(crate::common::error::driver_error)?;
    Ok(n.max(1) as u32)
}

/// `flashmha_status flashmha_context_create(int32_t ordinal, flashmha_context **out)`
///
/// # Safety
/// `out` must be NULL or point to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn flashmha_context_create(
    ordinal: i32,
    out: *mut *mut ffi::flashmha_context,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for `out`; context handles are `Box<CudaBackend>`.
        unsafe {
            create_into(out, || {
                let ordinal = usize::try_from(ordinal)
                    .map_err(|_| CallError::InvalidArgument(format!("device ordinal {ordinal}")))?;
                Ok(CudaBackend::new(ordinal)?)
            })
        }
    })
}

/// `void flashmha_context_destroy(flashmha_context *ctx)`
///
/// # Safety
/// `ctx` must be NULL or a live handle from `flashmha_context_create`, not used afterwards,
/// with no kernel of it still running.
#[no_mangle]
pub unsafe extern "C" fn flashmha_context_destroy(ctx: *mut ffi::flashmha_context) {
    // SAFETY: the caller's contract; context handles are `Box<CudaBackend>`.
    unsafe { destroy::<CudaBackend, _>(ctx) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_the_context_is_the_typed_no_driver_code() {
        if crate::cuda::driver_present() {
            eprintln!("skipped: a CUDA driver is present on this machine");
            return;
        }
        let mut ctx: *mut ffi::flashmha_context = std::ptr::null_mut();
        // SAFETY: valid pointer to a local.
        let code = unsafe { flashmha_context_create(0, &mut ctx) };
        assert_eq!(code, ffi::FLASHMHA_ERR_NO_CUDA_DRIVER);
        assert!(ctx.is_null());
        // A run without a context is rejected before anything else.
        let bufs = ffi::flashmha_bufs::default();
        // SAFETY: NULL handles are documented to be rejected.
        let code = unsafe {
            super::super::flashmha_run(ctx, std::ptr::null(), &bufs, std::ptr::null_mut())
        };
        assert_eq!(code, ffi::FLASHMHA_ERR_INVALID_ARGUMENT);
    }
}
