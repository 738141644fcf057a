/*
 * state_merge.cuh: the arithmetic of merging attention states (O_s, LSE_s) of disjoint key sets,
 * used by every merge: decode's cross-warp merge (kernels/common/flash_decode_cta.cuh), the
 * split combine and the public merge_states (kernels/common/merge_states_warp.cuh).
 *
 *   ref = max_s LSE_s (0 when every state is empty), t_s = exp(LSE_s - ref),
 *   total = sum_s t_s, a_s = t_s / total,  O = sum_s a_s O_s,  LSE = ref + ln total,
 *   H = sum_s a_s (H_s - ln a_s).
 * An empty state (LSE_s = -inf: no keys, e.g. an unused split, whose O may be unwritten) gets
 * the weight merge_skip_weight() (-0) and is never read, so it changes no bit of the result; a
 * row with no state left gets O = 0, LSE = -inf, H = 0. A NaN LSE_s (a NaN reached that state: softmax.cuh)
 * is skipped by the max (fmaxf) but makes t_s, total and every weight NaN, so O, LSE and H of
 * the merge are NaN: NaN is never taken for an empty state. A state of finite LSE whose weight
 * underflows to +0 is still accumulated (0 x NaN keeps a NaN of its O).
 *
 * Attention sinks (params.h FlashAttnOptions.sinks): a per-head logit z that joins every row's
 * softmax denominator and carries no value, P_ij = exp(s_ij) / (exp(z) + sum_j exp(s_ij)). It is
 * exactly one more state of the row, with LSE = z, O = 0 and H = 0, merged by the rules above:
 * so LSE and entropy include the sink's mass (H is the entropy of the row's distribution over
 * its keys and the sink), a row with no unmasked key gets O = 0, LSE = z, H = 0, a sink of -inf
 * is no sink, and a NaN sink makes the row's O, LSE and H NaN. Every row joins its sink once:
 * join_sink, called by the forward's epilogue and by the decode after its cross-warp merge (a
 * split decode in split 0's partial state only, never per split: merging is associative, so
 * the split combine then gives the same row). merge_states takes states that already hold
 * their sink: a sink belongs to one of the merged states.
 */
#ifndef FLASHMHA_COMMON_STATE_MERGE_CUH
#define FLASHMHA_COMMON_STATE_MERGE_CUH

#include <stdint.h>

#include "common/softmax.cuh"

namespace flashmha {

/* The weight of an empty state: -0, which no other weight is (t_s >= +0, total >= 1 or NaN). */
__device__ __forceinline__ float merge_skip_weight() { return __uint_as_float(0x80000000u); }
__device__ __forceinline__ bool merge_skipped(float a) {
    return __float_as_uint(a) == __float_as_uint(merge_skip_weight());
}

/* The reference LSE from the max over the states (fmaxf: NaN skipped): 0 for a row whose states
 * are all empty, so that no -inf - (-inf) appears. */
__device__ __forceinline__ float merge_ref(float lse_max) {
    return lse_max == neg_inf() ? 0.0f : lse_max;
}
/* t_s = exp(LSE_s - ref): 0 for an empty state, NaN for a NaN one. */
__device__ __forceinline__ float merge_term(float lse, float ref) {
    return fast_exp2((lse - ref) * kLog2e);
}
/* a_s; merge_skip_weight() for an empty state. */
__device__ __forceinline__ float merge_weight(float lse, float ref, float inv_total) {
    return lse == neg_inf() ? merge_skip_weight() : merge_term(lse, ref) * inv_total;
}
/* LSE of the merge: -inf when total = 0 (every state empty), NaN with a NaN state. */
__device__ __forceinline__ float merge_lse(float ref, float total) {
    return ref + fast_log2(total) * kLn2;
}
/* Adds state s's share a_s (H_s - ln a_s) of the merged entropy: nothing for a weight of +-0
 * (a ln a -> 0; skips the -inf of ln 0), NaN for a NaN weight. */
__device__ __forceinline__ float merge_entropy_add(float ent, float a, float h_s) {
    return a != 0.0f ? fmaf(a, h_s - fast_log2(a) * kLn2, ent) : ent;
}
/* acc += a v over 4 columns. */
__device__ __forceinline__ void merge_accumulate(float4 &acc, float a, const float4 &v) {
    acc.x = fmaf(a, v.x, acc.x);
    acc.y = fmaf(a, v.y, acc.y);
    acc.z = fmaf(a, v.z, acc.z);
    acc.w = fmaf(a, v.w, acc.w);
}

/* A NaN that a sink must force into O even where the row's own weight is skipped (a row with no
 * unmasked key has no O to carry it): NaN for a NaN or +inf sink, else 0. */
__device__ __forceinline__ float sink_nan(float sink) {
    return sink == neg_inf() ? 0.0f : 0.0f * sink;
}

/* A finished row r (softmax.cuh finalize) merged with its sink state (LSE = sink, O = 0, H = 0).
 * inv_sum keeps multiplying the row's unnormalised O accumulators. Not inlined: a call in the
 * epilogue of a kernel with sinks costs a few instructions per row, while inlining it into every
 * forward changed NVVM's choices in a main loop (the Turing d80 forward issued 2.5% more
 * non-tensor instructions per mma without any sink). */
__device__ __noinline__ RowResult join_sink(const RowResult &r, float sink) {
    const float ref = merge_ref(fmaxf(r.lse, sink));
    const float total = merge_term(r.lse, ref) + merge_term(sink, ref);
    const float inv_total = 1.0f / total;
    const float a_row = merge_weight(r.lse, ref, inv_total);
    const float a_sink = merge_weight(sink, ref, inv_total);
    RowResult out;
    out.inv_sum = (merge_skipped(a_row) ? 0.0f : r.inv_sum * a_row) + sink_nan(sink);
    out.lse = merge_lse(ref, total);
    out.entropy = merge_entropy_add(merge_entropy_add(0.0f, a_row, r.entropy), a_sink, 0.0f);
    return out;
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_STATE_MERGE_CUH
