/*
 * merge_states_sm75.cu: the Turing (compute_75 PTX, sm_75 cubin) entry points of the state merge
 * (kernels/common/merge_states_warp.cuh), f16 only like every Turing kernel: the split-KV
 * combine behind flashmha_decode_sm75_* and the public f16 merge. A compute_80 module does not
 * load on a 7.5 device, and ElemF16::pack takes its sm_75 spelling here (arch.cuh).
 */
#include "common/merge_states_warp.cuh"

/* Split-KV combine: f32 partial states -> f16 O. */
FLASHMHA_MERGE_ENTRY(flashmha_combine_splits_sm75_f16, flashmha::StateF32, flashmha::Out16<flashmha::ElemF16>)
/* Public merge_states: f16 states -> f16. */
FLASHMHA_MERGE_ENTRY(flashmha_merge_states_sm75_f16, flashmha::State16<false>, flashmha::Out16<flashmha::ElemF16>)
