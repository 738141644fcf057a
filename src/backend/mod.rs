//! The two backends that execute a launch plan: [`cuda`] (cudarc, a real GPU) and
//! [`emulator`] (our PTX interpreter, anywhere). Both take the same [`crate::ops::forward::plan::FwdPlan`] and
//! launch the same module bytes with the same params bytes.

pub mod cuda;
#[cfg(feature = "emulator")]
pub mod emulator;
