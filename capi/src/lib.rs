//! `libflashmha.a` / `libflashmha.so`: the C ABI declared in `include/flashmha.h`, defined in
//! `flashmha::capi`. This crate only packages it; it adds no code.

pub use flashmha::capi::*;
