//! Random-case checks of the kernels against the candle reference (feature `reference`): the
//! forward ([`forward`]) and paged decode ([`decode`]), on the emulator or a GPU.

pub mod decode;
pub mod forward;
