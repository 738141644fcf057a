//! The emulator's ISA tests that carry their PTX in the test itself: integer/logic/ALU semantics,
//! the parser and lowering, tensor maps and TMA, and the Hopper families. One test binary, one
//! module per family (link time dominates many small binaries).

mod alu;
mod cluster;
mod hopper;
mod parse;
mod robust;
mod support;
mod timing;
mod timing_async;
mod tma;
mod tma_align;
mod warpgroup;
