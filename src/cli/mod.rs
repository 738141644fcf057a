//! Subcommands of the `flashmha` binary, one file each; they only call the library's public API.

pub mod diagnose;
pub mod info;
pub mod table;
