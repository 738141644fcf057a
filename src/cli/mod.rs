//! Subcommands of the `flashmha` binary, one file each; they only call the library's public API.

pub mod bench;
pub mod bench_decode;
pub mod check;
pub mod diagnose;
pub mod emulate;
pub mod info;
pub mod progress;
pub mod table;
