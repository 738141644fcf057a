//! Every op end to end: forward, backward, paged decode, merge_states, KV append and head
//! similarity on the emulator against the candle reference (random property cases, traps, FP8,
//! batch invariance), the ABI probes, the CUDA paths (on the emulated CUDA driver without a
//! GPU), the perf model's hand-counted
//! cases, the CLI and the candle op. One binary (link time dominated CI when each file was one).

#[path = "../support/mod.rs"]
mod emulator_support;

#[path = "../support/cuda.rs"]
mod cuda_support;

#[path = "../support/capi.rs"]
mod capi_support;

#[path = "../support/backward.rs"]
mod backward_support;

mod abi_probe;
mod api;
mod backward_capi;
mod backward_counters;
mod backward_layouts;
mod backward_props;
mod candle_grad;
mod candle_op;
mod cli;
mod decode_append;
mod decode_batch_invariance;
mod decode_cuda;
mod decode_fp8;
mod decode_merge_append;
mod decode_merge_pair;
mod decode_props;
mod decode_traps;
mod decode_wide_tile;
mod forward_props;
mod head_dim_pairs;
mod head_dims;
mod head_similarity;
mod hopper_tma_maps;
mod jvp_counters;
mod jvp_props;
mod mla_decode;
mod perf_model_hopper;
mod probe_cli;
mod robustness;
mod server_loop;
mod sinks;
mod varlen_case;
