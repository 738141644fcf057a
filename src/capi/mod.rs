//! The C ABI (feature `capi`), declared in `include/flashmha.h`. Its structs, enums and extern
//! declarations are generated from that header by bindgen ([`ffi`]); the functions here define
//! them, and [`header_check`] makes every definition's signature equal to its generated
//! declaration at compile time. The `capi/` workspace member packages these symbols as
//! `libflashmha.a` and `libflashmha.so`.
//!
//! Every entry point converts plain C structs to the Rust API ([`convert`]) and goes through the
//! same path as Rust callers: validate -> plan -> bind (O(1) buffer checks) -> backend. Errors
//! come back as a [`ffi::flashmha_status`] code plus a thread-local message ([`status`]); a
//! panic never crosses the boundary.

pub mod convert;
pub mod cuda;
pub mod emulate;
pub mod ffi;
mod header_check;
pub mod plan;
pub mod status;

pub use cuda::{
    flashmha_context_create, flashmha_context_destroy, flashmha_forward,
    flashmha_plan_create_for_context, flashmha_run,
};
pub use emulate::{flashmha_emulate_forward, flashmha_emulate_run};
pub use plan::{flashmha_plan_create, flashmha_plan_destroy, flashmha_version};
pub use status::flashmha_last_error_message;
