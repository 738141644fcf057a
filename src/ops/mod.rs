//! The ops, one folder each: its problem (shapes, no device), validation (typed errors, nothing
//! launched) and plan (pure: kernel row, grid, block, shared memory, split count, workspace; then
//! per run the params bytes from buffer addresses). Nothing here touches a device: backends
//! (`src/backend/`) run what a plan binds, runs from host data live in `src/host/`, checks
//! against the reference in `src/check/`. What every op shares is in `src/common/`.

pub mod backward;
pub mod decode;
pub mod forward;
pub mod head_similarity;
pub mod jvp;
pub mod kernel_rows;
pub mod kv_append;
pub mod merge;
pub mod mla_decode;
