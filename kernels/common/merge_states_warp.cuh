/*
 * merge_states_warp.cuh: the warp body of the state merge, shared by the Ampere entry points
 * (kernels/sm80/merge_states.cu, compute_80) and the Turing f16 ones (kernels/sm75/
 * merge_states_sm75.cu, compute_75: a compute_80 module does not load on a 7.5 device).
 *
 * merge_states.cu: merges N attention states (O_s, LSE_s) of disjoint key sets into one
 * (params.h, MergeStatesParams): the combine step of split-KV decode (f32 partial states from
 * the workspace) and the public merge of f16 / bf16 states (cascade / shared-prefix attention).
 *
 * One warp per (row, head); CTAs of kMergeWarps warps. Each state's LSE is read by one lane
 * (lane s holds state s of each chunk of 32), reduced with shfl, turned into a weight there and
 * broadcast with shfl to the lanes, each of which owns 4 consecutive columns of O. Two layouts
 * of the states: stacked in one buffer (the split combine, N-state merges) or two separate
 * buffers (o_states_b set: merging a cached-prefix state with a fresh one needs no copy).
 * The merge arithmetic (empty states skipped, NaN kept) is kernels/common/state_merge.cuh.
 * Merge order is the state order, whatever the batch: the split combine is bitwise reproducible.
 */
#ifndef FLASHMHA_COMMON_MERGE_STATES_WARP_CUH
#define FLASHMHA_COMMON_MERGE_STATES_WARP_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/state_merge.cuh"

namespace flashmha {

constexpr int kMergeWarps = FLASHMHA_MERGE_WARPS;
constexpr int kMergeCols = FLASHMHA_MERGE_COLS;  // columns of O per lane per step (float4 / 8 bytes)
static_assert(kMergeCols == 4, "StateF32 / State16 load and Out16 stores 4 columns");
constexpr unsigned kMergeWarpMask = 0xffffffffu;
/* States whose O loads are in flight together (merge_states_warp's weighted sum). 16 covers
 * every split count the timed rule picks for a d128 decode on an A100 or H100 in one batch. */
constexpr int kMergeBatch = 16;

/* State element readers: 4 consecutive columns as f32. */
struct StateF32 {
    static __device__ __forceinline__ float4 load4(const void *base, int64_t off) {
        return *reinterpret_cast<const float4 *>(static_cast<const float *>(base) + off);
    }
};
template <bool kBf16>
struct State16 {
    /* The element in the low (kHigh = false) or high half of a packed pair, as f32. */
    template <bool kHigh>
    static __device__ __forceinline__ float to_f32(uint32_t pair) {
        if constexpr (kBf16) return __uint_as_float(kHigh ? (pair & 0xffff0000u) : (pair << 16));
        float f;
        if constexpr (kHigh)
            asm("{ .reg .b16 lo, hi; mov.b32 {lo, hi}, %1; cvt.f32.f16 %0, hi; }" : "=f"(f) : "r"(pair));
        else
            asm("{ .reg .b16 lo, hi; mov.b32 {lo, hi}, %1; cvt.f32.f16 %0, lo; }" : "=f"(f) : "r"(pair));
        return f;
    }
    static __device__ __forceinline__ float4 load4(const void *base, int64_t off) {
        const uint2 v = *reinterpret_cast<const uint2 *>(static_cast<const elem_bits_t *>(base) + off);
        return make_float4(to_f32<false>(v.x), to_f32<true>(v.x), to_f32<false>(v.y), to_f32<true>(v.y));
    }
};

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int b = kWarpSize / 2; b > 0; b /= 2) v = fmaxf(v, __shfl_xor_sync(kMergeWarpMask, v, b));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int b = kWarpSize / 2; b > 0; b /= 2) v += __shfl_xor_sync(kMergeWarpMask, v, b);
    return v;
}

/* Where state s lives: the stacked form adds s times the state strides to the first buffer; the
 * two-buffer form (o_states_b set) reads state 1 from the second buffers at the same row/head
 * offsets. */
struct StateAt {
    const void *o;
    const float *lse;
    const float *entropy;
    int64_t o_off;
    int64_t lse_off;
};
__device__ __forceinline__ StateAt state_at(const MergeStatesParams &p, int s) {
    const bool second = p.o_states_b != nullptr && s == 1;
    const int64_t stacked = p.o_states_b != nullptr ? 0 : s;
    return StateAt{second ? p.o_states_b : p.o_states, second ? p.lse_states_b : p.lse_states,
                   second ? p.entropy_states_b : p.entropy_states, stacked * p.o_state_stride,
                   stacked * p.lse_state_stride};
}

/* LSE of state s (-inf for lanes past the last state, which then weigh 0). */
__device__ __forceinline__ float state_lse(const MergeStatesParams &p, int s, int64_t lse_rh) {
    if (s >= p.num_states) return neg_inf();
    const StateAt at = state_at(p, s);
    return at.lse[at.lse_off + lse_rh];
}

template <class State, class Out>
__device__ __forceinline__ void merge_states_warp(const MergeStatesParams &p) {
    const int lane = lane_of(threadIdx.x);
    const int64_t item = static_cast<int64_t>(blockIdx.x) * kMergeWarps + warp_of(threadIdx.x);
    if (item >= static_cast<int64_t>(p.rows) * p.heads) return;  // warp-uniform
    const int row = static_cast<int>(item / p.heads);
    const int head = static_cast<int>(item - static_cast<int64_t>(row) * p.heads);
    const int64_t lse_rh = row * p.lse_state_row_stride + head * p.lse_state_head_stride;
    const int64_t o_rh = row * p.o_state_row_stride + head * p.o_state_head_stride;

    // Each LSE is read by one lane only: lane l holds state l of every chunk of kWarpSize states.
    // The first chunk stays in a register (l_first), so with <= 32 states (every split count the
    // heuristic picks below 32, and any merge of a few states) each LSE crosses memory once;
    // O's weights are then broadcast with shfl instead of 32 lanes re-reading the LSE.
    const float l_first = state_lse(p, lane, lse_rh);
    float m = l_first;
    for (int s = lane + kWarpSize; s < p.num_states; s += kWarpSize) m = fmaxf(m, state_lse(p, s, lse_rh));
    const float ref = merge_ref(warp_max(m));
    float part = merge_term(l_first, ref);  // -inf gives 0
    for (int s = lane + kWarpSize; s < p.num_states; s += kWarpSize)
        part += merge_term(state_lse(p, s, lse_rh), ref);
    const float total = warp_sum(part);
    const float inv_total = 1.0f / total;
    auto weight = [&](float l) { return merge_weight(l, ref, inv_total); };
    const float a_first = weight(l_first);

    // Entropy of the merged row: H = sum_s a_s (H_s - ln a_s), each lane its own states.
    float ent = 0.0f;
    if (p.entropy != nullptr) {
        for (int s = lane; s < p.num_states; s += kWarpSize) {
            const float a = s < kWarpSize ? a_first : weight(state_lse(p, s, lse_rh));
            if (a != 0.0f) {  // not an empty state (NaN weights included)
                const StateAt at = state_at(p, s);
                ent = merge_entropy_add(ent, a, at.entropy[at.lse_off + lse_rh]);
            }
        }
        ent = warp_sum(ent);
    }

    // O = sum_s a_s O_s over the non-empty states, in state order (the split combine is
    // bitwise reproducible whatever the batch); lane l owns kMergeCols consecutive columns.
    const int row_out_batch = row / p.rows_per_batch;
    const int row_in_batch = row - row_out_batch * p.rows_per_batch;
    const float gate = p.head_gates != nullptr ? p.head_gates[head] : 1.0f;
    for (int c0 = lane * kMergeCols; c0 - lane * kMergeCols < p.head_dim; c0 += kWarpSize * kMergeCols) {
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
        const bool in_row = c0 < p.head_dim;  // lanes past d still shuffle the weights
        for (int base = 0; base < p.num_states; base += kWarpSize) {
            const float a_lane = base == 0 ? a_first : weight(state_lse(p, base + lane, lse_rh));
            const int chunk = min(kWarpSize, p.num_states - base);
            // kMergeBatch states at a time: every load of a batch is issued before the first
            // is consumed, so a batch costs one memory latency instead of one per state; the
            // sum still runs in state order. (A fully unrolled state loop made ptxas 13.5
            // spill 16-bit states on sm_80; a fixed batch of float4s does not.)
#pragma unroll 1
            for (int j0 = 0; j0 < chunk; j0 += kMergeBatch) {
                float a[kMergeBatch];
                float4 v[kMergeBatch];
#pragma unroll
                for (int j = 0; j < kMergeBatch; ++j) {
                    // Warp-uniform; states past the chunk weigh like empty ones and are not read.
                    a[j] = __shfl_sync(kMergeWarpMask, a_lane, min(j0 + j, kWarpSize - 1));
                    if (j0 + j >= chunk) a[j] = merge_skip_weight();
                    v[j] = make_float4(0.f, 0.f, 0.f, 0.f);
                    if (!merge_skipped(a[j]) && in_row) {
                        const StateAt at = state_at(p, base + j0 + j);
                        v[j] = State::load4(at.o, at.o_off + o_rh + c0);
                    }
                }
#pragma unroll
                for (int j = 0; j < kMergeBatch; ++j)
                    if (!merge_skipped(a[j])) merge_accumulate(acc, a[j], v[j]);
            }
        }
        if (in_row)
            Out::store4(p.o, row_out_batch * p.o_batch_stride + row_in_batch * p.o_row_stride +
                                 head * p.o_head_stride + c0,
                        acc, gate);
    }
    if (lane == 0) {
        const int64_t stat = row_out_batch * p.lse_batch_stride + head * p.lse_head_stride + row_in_batch;
        if (p.lse != nullptr) p.lse[stat] = merge_lse(ref, total);
        if (p.entropy != nullptr) p.entropy[stat] = ent;
    }
}

/* Output writers: 4 columns times the head gate, rounded to the output type (+0 for -0). */
template <class Elem>
struct Out16 {
    static __device__ __forceinline__ void store4(void *base, int64_t off, float4 v, float gate) {
        const uint32_t lo = Elem::pack(__fadd_rn(v.x * gate, 0.0f), __fadd_rn(v.y * gate, 0.0f));
        const uint32_t hi = Elem::pack(__fadd_rn(v.z * gate, 0.0f), __fadd_rn(v.w * gate, 0.0f));
        *reinterpret_cast<uint2 *>(static_cast<elem_bits_t *>(base) + off) = make_uint2(lo, hi);
    }
};

}  // namespace flashmha

/* One entry point `name` merging `state` elements into `out` elements. */
#define FLASHMHA_MERGE_ENTRY(name, state, out)                                                     \
    extern "C" __global__ void __launch_bounds__(flashmha::kMergeWarps * flashmha::kWarpSize)      \
        name(const MergeStatesParams params) {                                                     \
        flashmha::merge_states_warp<state, out>(params);                                           \
    }

#endif  // FLASHMHA_COMMON_MERGE_STATES_WARP_CUH
