//! Random-case checks of the kernels against the candle reference (feature `reference`): the
//! forward ([`forward`]) and paged decode ([`decode`]), run through the one host runner
//! ([`crate::host::runner`]) on the emulator or a GPU, and judged by the one judge ([`judge`]).

pub mod decode;
pub mod forward;
pub mod judge;
