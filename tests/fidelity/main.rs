//! Emulator fidelity on PTX that nvcc compiled: our test kernels (`kernels/emu_tests/`, built by
//! build.rs) against the PTX ISA's documented semantics, the planted-bug kernels that must each
//! produce their finding, and hardware-validated foreign PTX that must run clean. One binary, one
//! module per instruction family.

#[path = "../support/mod.rs"]
mod emulator_support;

mod checks;
mod cvt_sfu;
mod foreign;
mod memory;
mod mma;
mod modules;
mod spaces;
mod warp;
mod wgmma;
