//! The C caller's host buffers mirrored on a private emulator device, for every
//! `flashmha_emulate_*` entry point: each buffer of a C struct gets an emulator allocation of
//! its declared length (inputs copied in; outputs left as the emulator's NaN poison, so an
//! element the kernel does not write cannot pass for a result), and the op's entry point runs
//! the same convert -> bind -> launch path on the mirrored struct as the CUDA path runs on
//! device addresses. After the launches, the outputs the plan wrote are copied back. Any
//! finding of the emulator (an out-of-bounds access, a race, a trap) fails the call.

use super::ffi;
use super::status::CallError;
use crate::backend::emulator::require_clean;
use crate::common::launch::Launch;
use crate::emulator::{Device, DevicePtr, LaunchReport};
use std::ffi::c_void;

/// What the kernel does with a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read only: copied in.
    Input,
    /// Written: poisoned, copied back.
    Output,
    /// Read and written in place (the pools of a KV append): copied in and back.
    InOut,
    /// The kernels' scratch (the split workspace): poisoned, not copied back.
    Scratch,
    /// Passed by the caller but unused by this plan: neither copied in nor back.
    Unused,
}

impl Role {
    /// This role when the plan uses the buffer (`on`), else [`Role::Unused`].
    pub fn when(self, on: bool) -> Role {
        if on {
            self
        } else {
            Role::Unused
        }
    }
}

/// An emulator device holding mirrors of one call's host buffers.
#[derive(Default)]
pub struct HostMirror {
    dev: Device,
    /// (emulator address, host destination, bytes) of every buffer copied back.
    back: Vec<(DevicePtr, *mut u8, usize)>,
}

impl HostMirror {
    pub fn device(&mut self) -> &mut Device {
        &mut self.dev
    }

    /// The mirror of host buffer `b` of `elem`-byte elements: an emulator address with the
    /// same length. NULL (absent) stays NULL, so binding reports it as the host call would.
    ///
    /// # Safety
    /// A non-NULL `b.data` must point to `b.len * elem` bytes that are readable (inputs) and
    /// writable (outputs) during the call and that nothing else writes meanwhile.
    pub unsafe fn mirror(
        &mut self,
        b: ffi::flashmha_buf,
        elem: usize,
        role: Role,
    ) -> Result<ffi::flashmha_buf, CallError> {
        if b.data.is_null() || role == Role::Unused {
            return Ok(ffi::flashmha_buf {
                data: std::ptr::null_mut(),
                len: if role == Role::Unused { 0 } else { b.len },
            });
        }
        let bytes = b.len.checked_mul(elem).ok_or_else(|| {
            CallError::InvalidArgument(format!("a buffer of {} elements overflows", b.len))
        })?;
        // A zero-length allocation still gets its own address (bind then reports the size).
        let at = self.dev.alloc(bytes.max(1));
        if matches!(role, Role::Input | Role::InOut) {
            // SAFETY: the caller's contract: `bytes` readable bytes at `b.data`.
            let host = unsafe { std::slice::from_raw_parts(b.data as *const u8, bytes) };
            self.dev.write(at, host).map_err(crate::Error::from)?;
        }
        if matches!(role, Role::Output | Role::InOut) {
            self.back.push((at, b.data.cast::<u8>(), bytes));
        }
        Ok(ffi::flashmha_buf {
            // An emulator address, only ever read back as a number by the binding checks.
            data: at.0 as *mut c_void,
            len: b.len,
        })
    }

    /// Runs one planned launch; any finding is an error.
    pub fn launch(&mut self, l: &Launch) -> Result<(), CallError> {
        let report = crate::backend::emulator::launch(&mut self.dev, l)?;
        Self::clean(&report)
    }

    /// `Ok` when `report` has no finding.
    pub fn clean(report: &LaunchReport) -> Result<(), CallError> {
        Ok(require_clean(report)?)
    }

    /// Copies every output back to its host buffer.
    ///
    /// # Safety
    /// The host buffers given to [`HostMirror::mirror`] as outputs are still writable.
    pub unsafe fn copy_back(self) -> Result<(), CallError> {
        for (at, host, bytes) in &self.back {
            let data = self.dev.read(*at, *bytes).map_err(crate::Error::from)?;
            // SAFETY: `data` is a fresh buffer of exactly the host buffer's size; the caller's
            // contract makes the destination writable; a fresh Vec cannot overlap it.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), *host, *bytes) };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_is_never_null_and_an_unwritten_output_comes_back_poisoned() {
        let mut m = HostMirror::default();
        let mut x = [1u16, 2, 3];
        let mut y = [5u16; 2];
        let b = ffi::flashmha_buf {
            data: x.as_mut_ptr().cast(),
            len: x.len(),
        };
        // SAFETY: `x` holds 3 u16 and outlives the mirror.
        let first = unsafe { m.mirror(b, 2, Role::Output) }.unwrap();
        assert!(
            !first.data.is_null(),
            "the first allocation reads as absent"
        );
        assert_eq!(first.len, 3);
        // SAFETY: as above.
        let unused = unsafe { m.mirror(b, 2, Role::Unused) }.unwrap();
        assert!(unused.data.is_null());
        let c = ffi::flashmha_buf {
            data: y.as_mut_ptr().cast(),
            len: y.len(),
        };
        // SAFETY: `y` holds 2 u16 and outlives the mirror.
        let inout = unsafe { m.mirror(c, 2, Role::InOut) }.unwrap();
        assert_ne!(inout.data, first.data);
        // SAFETY: `x` and `y` are still writable.
        unsafe { m.copy_back() }.unwrap();
        // Nothing ran: the output is the emulator's NaN poison, the in-out buffer unchanged.
        assert_eq!(x, [u16::MAX; 3]);
        assert_eq!(y, [5u16; 2]);
    }
}
