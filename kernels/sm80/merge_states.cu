/*
 * merge_states.cu: the Ampere-and-newer (compute_80) entry points of the state merge
 * (kernels/common/merge_states_warp.cuh): the split-KV combine of f32 partial states and the
 * public merge of f16 / bf16 states.
 */
#include "common/merge_states_warp.cuh"

/* Split-KV combine: f32 partial states -> f16 / bf16 O. */
FLASHMHA_MERGE_ENTRY(flashmha_combine_splits_f16, flashmha::StateF32, flashmha::Out16<flashmha::ElemF16>)
FLASHMHA_MERGE_ENTRY(flashmha_combine_splits_bf16, flashmha::StateF32, flashmha::Out16<flashmha::ElemBF16>)
/* Public merge_states: f16 / bf16 states -> the same type. */
FLASHMHA_MERGE_ENTRY(flashmha_merge_states_f16, flashmha::State16<false>, flashmha::Out16<flashmha::ElemF16>)
FLASHMHA_MERGE_ENTRY(flashmha_merge_states_bf16, flashmha::State16<true>, flashmha::Out16<flashmha::ElemBF16>)
