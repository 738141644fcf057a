//! The C ABI (feature `capi`), declared in `include/flashmha.h`. Its structs, enums and extern
//! declarations are generated from that header by bindgen ([`ffi`]); the functions here define
//! them, and `header_check.rs` makes every definition's signature equal to its generated
//! declaration at compile time. The `capi/` workspace member packages these symbols as
//! `libflashmha.a` and `libflashmha.so`.
//!
//! Every op (forward, backward, paged decode, MLA decode, merge_states, KV append, head similarity) converts plain C
//! structs to the Rust API ([`convert`]) and goes through the same path as Rust callers:
//! validate -> plan -> bind (O(1) buffer checks) -> backend, on a CUDA context (raw device
//! addresses, the caller's `CUstream`) or on the emulator with host buffers ([`host`]). Errors
//! come back as a [`ffi::flashmha_status`] code plus a thread-local message ([`status`]); a
//! panic never crosses the boundary.
//!
//! Files: `op.rs` (the one path every op runs through: handles, plan, bind, launch on a context
//! or the emulator), `plan.rs` (the forward's plan and entry points, the handle helpers, the version),
//! `cuda.rs` (contexts), one file per other op (`backward.rs`, `decode.rs`, `mla_decode.rs`, `merge.rs`, `append.rs`, `head_similarity.rs`, each
//! saying only what differs for it).

pub mod append;
pub mod backward;
pub mod convert;
pub mod cuda;
pub mod decode;
pub mod ffi;
pub mod head_similarity;
mod header_check;
pub mod host;
pub mod merge;
pub mod mla_decode;
mod op;
pub mod plan;
pub mod status;

pub use append::{
    flashmha_emulate_kv_append_run, flashmha_kv_append_plan_create,
    flashmha_kv_append_plan_create_for_context, flashmha_kv_append_plan_destroy,
    flashmha_kv_append_run,
};
pub use backward::{
    flashmha_bwd_plan_create, flashmha_bwd_plan_create_for_context, flashmha_bwd_plan_destroy,
    flashmha_bwd_plan_workspace_len, flashmha_bwd_run, flashmha_emulate_bwd_run,
};
pub use decode::{
    flashmha_decode_plan_create, flashmha_decode_plan_create_for_context,
    flashmha_decode_plan_destroy, flashmha_decode_plan_info, flashmha_decode_run,
    flashmha_emulate_decode_run,
};
pub use head_similarity::{flashmha_emulate_head_similarity, flashmha_head_similarity};
pub use merge::{
    flashmha_emulate_merge_run, flashmha_merge_plan_create, flashmha_merge_plan_create_for_context,
    flashmha_merge_plan_destroy, flashmha_merge_run,
};
pub use mla_decode::{
    flashmha_emulate_mla_decode_run, flashmha_mla_decode_plan_create,
    flashmha_mla_decode_plan_create_for_context, flashmha_mla_decode_plan_destroy,
    flashmha_mla_decode_plan_info, flashmha_mla_decode_run,
};

pub use cuda::{flashmha_context_create, flashmha_context_destroy};
pub use plan::{
    flashmha_emulate_forward, flashmha_emulate_run, flashmha_forward, flashmha_plan_create,
    flashmha_plan_create_for_context, flashmha_plan_destroy, flashmha_run, flashmha_version,
};
pub use status::{flashmha_last_error_message, flashmha_status_string};

// The header's thread-safety promises (include/flashmha.h, "Ownership and thread safety"):
// contexts and every plan may be shared between threads.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<crate::cuda::CudaBackend>();
    shared::<plan::Plan>();
    shared::<crate::ops::backward::BwdPlan>();
    shared::<crate::ops::decode::DecodePlan>();
    shared::<crate::ops::mla_decode::MlaDecodePlan>();
    shared::<crate::ops::merge::MergePlan>();
    shared::<crate::ops::kv_append::KvAppendPlan>();
};
