//! Status codes and the thread-local last-error message of the C ABI. [`code_of`] maps every
//! [`Error`] variant to its family's code (an exhaustive match: a new variant must be given a
//! code here); [`guard`] runs an entry point's body, records its error and catches panics so
//! that none unwinds into C.

use super::ffi::{self, flashmha_status};
use crate::common::error::Error;
use std::cell::RefCell;
use std::ffi::c_char;

thread_local! {
    /// Message of the last failed call on this thread, NUL-terminated for C; empty after a
    /// successful call. Clearing keeps the capacity, so a successful call (a launch) never
    /// allocates here.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What `flashmha_last_error_message` returns when the last call succeeded.
const NO_ERROR: &[u8] = b"\0";

/// What an entry point can fail with before or after reaching the Rust API.
#[derive(Debug)]
pub enum CallError {
    /// A NULL pointer or a value the C structs cannot express.
    InvalidArgument(String),
    Api(Error),
}

impl From<Error> for CallError {
    fn from(e: Error) -> Self {
        CallError::Api(e)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            CallError::Api(e) => write!(f, "{e}"),
        }
    }
}

/// The code of `e`'s family (see `flashmha_status` in the header).
pub fn code_of(e: &Error) -> flashmha_status {
    match e {
        Error::EmptyDim { .. }
        | Error::DimMismatch { .. }
        | Error::DimTooLarge { .. }
        | Error::HeadsNotDivisible { .. }
        | Error::NegativeStride { .. }
        | Error::StrideTooSmall { .. }
        | Error::OverlappingOutput { .. } => ffi::FLASHMHA_ERR_SHAPE,
        Error::BufferTooSmall { .. }
        | Error::CopyTooLarge { .. }
        | Error::Misaligned { .. }
        | Error::Alias { .. }
        | Error::MissingBuffer { .. }
        | Error::UnexpectedBuffer { .. } => ffi::FLASHMHA_ERR_BUFFER,
        Error::UnsupportedHeadDim { .. }
        | Error::UnsupportedHeadDimPair { .. }
        | Error::UnsupportedDType { .. }
        | Error::UnsupportedOnTarget { .. }
        | Error::TargetMismatch { .. }
        | Error::DTypeMismatch { .. }
        | Error::KvPoolMismatch { .. } => ffi::FLASHMHA_ERR_UNSUPPORTED,
        Error::CuSeqlens { .. } => ffi::FLASHMHA_ERR_CU_SEQLENS,
        Error::Overflow32 { .. } | Error::SizeOverflow { .. } => ffi::FLASHMHA_ERR_OVERFLOW,
        Error::InvalidOption { .. }
        | Error::InvalidSetting { .. }
        | Error::InvalidScale { .. }
        | Error::SplitCount { .. }
        | Error::SplitKeys { .. } => ffi::FLASHMHA_ERR_INVALID_OPTION,
        Error::NoCudaDriver { .. } => ffi::FLASHMHA_ERR_NO_CUDA_DRIVER,
        Error::UnsupportedGpu { .. } => ffi::FLASHMHA_ERR_UNSUPPORTED_GPU,
        Error::Cuda { .. } => ffi::FLASHMHA_ERR_CUDA,
        Error::NoKernel { .. } => ffi::FLASHMHA_ERR_NO_KERNEL,
        Error::Emulator(_) => ffi::FLASHMHA_ERR_EMULATOR,
        Error::Io { .. } | Error::BadInputFile { .. } | Error::NonFinite { .. } => {
            ffi::FLASHMHA_ERR_IO
        }
        // Bad label files or probe settings of `diagnose --probe`: input data, like the above.
        #[cfg(feature = "diagnostics")]
        Error::Probe(_) => ffi::FLASHMHA_ERR_IO,
        Error::Plot { .. } | Error::FontNotFound { .. } | Error::Reference(_) => {
            ffi::FLASHMHA_ERR_INTERNAL
        }
    }
}

fn set_message(msg: &str) {
    LAST_ERROR.with(|m| {
        let mut m = m.borrow_mut();
        m.clear();
        if !msg.is_empty() {
            // An interior NUL would truncate the C string; replace it rather than lose the
            // message.
            m.extend(msg.bytes().map(|b| if b == 0 { b' ' } else { b }));
            m.push(0);
        }
    });
}

/// Runs `body`; records the message of a failure (or clears it on success) and returns the
/// status code. A panic becomes `FLASHMHA_ERR_INTERNAL`.
pub fn guard(body: impl FnOnce() -> Result<(), CallError>) -> flashmha_status {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let (code, msg) = match outcome {
        Ok(Ok(())) => {
            set_message("");
            return ffi::FLASHMHA_OK;
        }
        Ok(Err(CallError::InvalidArgument(m))) => (
            ffi::FLASHMHA_ERR_INVALID_ARGUMENT,
            format!("invalid argument: {m}"),
        ),
        Ok(Err(CallError::Api(e))) => (code_of(&e), e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            (
                ffi::FLASHMHA_ERR_INTERNAL,
                format!("internal error (panic): {what}"),
            )
        }
    };
    set_message(&msg);
    code
}

/// `const char *flashmha_last_error_message(void)`
///
/// # Safety
/// Always safe to call; the returned pointer is valid until the next flashmha call on this
/// thread.
#[no_mangle]
pub unsafe extern "C" fn flashmha_last_error_message() -> *const c_char {
    LAST_ERROR.with(|m| {
        let m = m.borrow();
        if m.is_empty() { NO_ERROR } else { &m[..] }.as_ptr().cast()
    })
}

/// The static description of each status code (NUL-terminated for C).
fn status_text(status: flashmha_status) -> &'static str {
    match status {
        ffi::FLASHMHA_OK => "success\0",
        ffi::FLASHMHA_ERR_INVALID_ARGUMENT => "invalid argument\0",
        ffi::FLASHMHA_ERR_SHAPE => "shape error\0",
        ffi::FLASHMHA_ERR_BUFFER => "buffer error\0",
        ffi::FLASHMHA_ERR_UNSUPPORTED => "unsupported\0",
        ffi::FLASHMHA_ERR_CU_SEQLENS => "malformed cu_seqlens\0",
        ffi::FLASHMHA_ERR_OVERFLOW => "size overflow\0",
        ffi::FLASHMHA_ERR_INVALID_OPTION => "invalid option\0",
        ffi::FLASHMHA_ERR_NO_CUDA_DRIVER => "no CUDA driver\0",
        ffi::FLASHMHA_ERR_UNSUPPORTED_GPU => "unsupported GPU\0",
        ffi::FLASHMHA_ERR_CUDA => "CUDA driver error\0",
        ffi::FLASHMHA_ERR_NO_KERNEL => "kernel missing from this build\0",
        ffi::FLASHMHA_ERR_EMULATOR => "emulator error\0",
        ffi::FLASHMHA_ERR_IO => "I/O error\0",
        ffi::FLASHMHA_ERR_INTERNAL => "internal error\0",
        _ => "unknown flashmha_status\0",
    }
}

/// `const char *flashmha_status_string(flashmha_status status)`
///
/// # Safety
/// Always safe to call; the string is static.
#[no_mangle]
pub unsafe extern "C" fn flashmha_status_string(status: flashmha_status) -> *const c_char {
    status_text(status).as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::error::{Dim, TensorName};

    #[test]
    fn each_family_has_its_own_code_and_the_message_is_kept() {
        let shape = guard(|| {
            Err(Error::EmptyDim {
                tensor: TensorName::Q,
                dim: Dim::Batch,
            }
            .into())
        });
        assert_eq!(shape, ffi::FLASHMHA_ERR_SHAPE);
        // SAFETY: called on this thread; the pointer is read before the next call.
        let msg = unsafe { std::ffi::CStr::from_ptr(flashmha_last_error_message()) };
        assert_eq!(msg.to_str().unwrap(), "q: dimension batch must be >= 1");
        let driver = guard(|| Err(Error::NoCudaDriver { reason: "test" }.into()));
        assert_eq!(driver, ffi::FLASHMHA_ERR_NO_CUDA_DRIVER);
        assert_ne!(shape, driver);
        assert_eq!(guard(|| Ok(())), ffi::FLASHMHA_OK);
        // SAFETY: as above.
        let msg = unsafe { std::ffi::CStr::from_ptr(flashmha_last_error_message()) };
        assert!(msg.to_bytes().is_empty());
    }

    #[test]
    fn every_status_has_its_own_string_and_unknown_codes_are_named() {
        let mut seen = std::collections::HashSet::new();
        for code in ffi::FLASHMHA_OK..=ffi::FLASHMHA_ERR_INTERNAL {
            // SAFETY: static NUL-terminated strings.
            let s = unsafe { std::ffi::CStr::from_ptr(flashmha_status_string(code)) };
            let s = s.to_str().unwrap();
            assert_ne!(s, "unknown flashmha_status", "code {code}");
            assert!(seen.insert(s.to_string()), "{s} used twice");
        }
        // SAFETY: as above.
        let s = unsafe { std::ffi::CStr::from_ptr(flashmha_status_string(99)) };
        assert_eq!(s.to_str().unwrap(), "unknown flashmha_status");
        // The family of an error and its string agree.
        let code = code_of(&Error::NoCudaDriver { reason: "test" });
        // SAFETY: as above.
        let s = unsafe { std::ffi::CStr::from_ptr(flashmha_status_string(code)) };
        assert_eq!(s.to_str().unwrap(), "no CUDA driver");
    }

    #[test]
    fn a_panic_is_caught_and_reported_as_internal() {
        let code = guard(|| panic!("boom"));
        assert_eq!(code, ffi::FLASHMHA_ERR_INTERNAL);
        // SAFETY: as above.
        let msg = unsafe { std::ffi::CStr::from_ptr(flashmha_last_error_message()) };
        assert!(msg.to_str().unwrap().contains("boom"));
    }
}
