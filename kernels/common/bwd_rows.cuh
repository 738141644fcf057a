/*
 * bwd_rows.cuh: the backward's per-row pieces (params.h, FlashBwdParams): where a batch item's
 * rows are (the forward's SeqExtent, from the backward params), the 16-bit -> f32 unpack, and the
 * two row kernels around the main one (kernels/common/flash_bwd_cta.cuh):
 *  - flash_bwd_dot: delta = rowsum(d_o * o) in f32 per (q row, head), and zeroes that row's
 *    dq_accum (so no separate memset is launched);
 *  - flash_bwd_convert_dq: dq = scale * dq_accum (the sum of its slices, in order, in
 *    deterministic mode), rounded once to the element type; and the per-head sums
 *    (bwd_head_sums): d(sink) from delta and the LSE, d(gate) from the deterministic mode's
 *    per-warp partials.
 * One warp per (q row, head); lane l owns the 16-byte chunk l of the row (head_dim <= 256 =
 * 32 chunks), so every load and store is one 16-byte access per lane. The main kernel's d(gate)
 * output (bwd_gate_grad_out) is here too: it is what the convert kernel sums.
 */
#ifndef FLASHMHA_COMMON_BWD_ROWS_CUH
#define FLASHMHA_COMMON_BWD_ROWS_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/mask.cuh"
#include "common/smem_layout.cuh"

namespace flashmha {

/* seq_extent (mask.cuh) serves the backward's params too: the same sequence fields. */

/* The two elements of a packed 16-bit pair as f32 (lo = bits 0..15). */
template <class Elem>
__device__ __forceinline__ void unpack_pair(uint32_t bits, float &lo, float &hi) {
    if constexpr (Elem::kIsBf16) {
        lo = __uint_as_float(bits << 16);
        hi = __uint_as_float(bits & 0xffff0000u);
    } else {
        const uint16_t l = static_cast<uint16_t>(bits & 0xffffu);
        const uint16_t h = static_cast<uint16_t>(bits >> 16);
        asm("cvt.f32.f16 %0, %1;" : "=f"(lo) : "h"(l));
        asm("cvt.f32.f16 %0, %1;" : "=f"(hi) : "h"(h));
    }
}

/* Sum over the 32 lanes of a warp (every lane gets it). */
__device__ __forceinline__ float warp_allreduce_sum(float v) {
#pragma unroll
    for (int bit = kWarpSize / 2; bit > 0; bit /= 2) v += __shfl_xor_sync(kFullWarpMask, v, bit);
    return v;
}

/* One (q row, head) of the row kernels: the row within its tensors, and its LSE-layout index. */
struct BwdRow {
    int row;       // row of the q-side tensors (0 .. total_q)
    int head;
    int64_t stat;  // index into delta (the LSE layout)
    int64_t batch; // padded: the item (strides apply), varlen: 0
    int64_t in_item; // padded: row within the item, varlen: the row itself
};

/* The warp's (q row, head), or false past the last one. Traps on a block size other than
 * FLASHMHA_BWD_ROW_WARPS warps (the grid is sized for it). */
__device__ __forceinline__ bool bwd_row_of_warp(const FlashBwdParams &p, BwdRow &r) {
    if (blockDim.x != FLASHMHA_BWD_ROW_WARPS * kWarpSize || blockDim.y != 1 || blockDim.z != 1)
        __trap();
    const int64_t pair =
        static_cast<int64_t>(blockIdx.x) * FLASHMHA_BWD_ROW_WARPS + warp_of(threadIdx.x);
    if (pair >= static_cast<int64_t>(p.total_q) * p.num_heads_q) return false;
    r.row = static_cast<int>(pair / p.num_heads_q);
    r.head = static_cast<int>(pair % p.num_heads_q);
    if (p.opt.flags & FLASHMHA_FLAG_VARLEN) {
        r.batch = 0;
        r.in_item = r.row;
        r.stat = r.head * p.opt.lse_head_stride + r.row;
    } else {
        r.batch = r.row / p.seqlen_q;
        r.in_item = r.row % p.seqlen_q;
        r.stat = r.batch * p.opt.lse_batch_stride + r.head * p.opt.lse_head_stride + r.in_item;
    }
    return true;
}

/* The end of one query head's work in a main-kernel CTA (kernels/common/flash_bwd_cta.cuh): the
 * warp's d(gate) partial (each thread's own sum in `partial`). Default: summed over the warp and
 * added into d_head_gates with an f32 atomic (zeroed by the dot kernel; the order of the adds,
 * hence the rounding, varies run to run). Deterministic mode (gate_partials set): stored into the
 * warp's own slot, which bwd_head_sums adds up in slot order. Call CTA-uniformly (shuffles). */
__device__ __forceinline__ void bwd_gate_grad_out(const FlashBwdParams &p, int head, float partial) {
    if (p.d_head_gates == nullptr) return;
    const float g = warp_allreduce_sum(partial);
    if (lane_of(threadIdx.x) != 0) return;
    if (p.gate_partials != nullptr) {
        // (batch item, key block, warp) of this CTA's warp; gridDim.x = the key blocks. The
        // special registers are read here through volatile moves, so that nothing of the slot is
        // hoisted into the main kernel's head loop (whose d64 entry runs at 255 registers).
        uint32_t cta_x, cta_z, ctas_x, threads, tid;
        asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(cta_x));
        asm volatile("mov.u32 %0, %%ctaid.z;" : "=r"(cta_z));
        asm volatile("mov.u32 %0, %%nctaid.x;" : "=r"(ctas_x));
        asm volatile("mov.u32 %0, %%ntid.x;" : "=r"(threads));
        asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tid));
        const int64_t slot = (static_cast<int64_t>(cta_z) * ctas_x + cta_x) * (threads / kWarpSize) +
                             tid / kWarpSize;
        p.gate_partials[static_cast<int64_t>(head) * p.gate_partials_per_head + slot] = g;
    } else {
        atomicAdd(p.d_head_gates + head, g);
    }
}

/* Every thread of the grid once, as a flat index, and the grid's thread count. */
__device__ __forceinline__ int64_t grid_thread() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
    return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

/* delta[row, head] = sum_c d_o[c] o[c] (f32), and dq_accum[row, head, :] = 0. */
template <class Elem>
__device__ __forceinline__ void flash_bwd_dot(const FlashBwdParams &p) {
    // d(gate) is accumulated by the main kernel (launched after this one): zero it first, or, in
    // deterministic mode, every per-warp slot (a CTA past a short varlen item's keys stores none).
    if (p.d_head_gates != nullptr) {
        if (p.gate_partials != nullptr) {
            const int64_t n = static_cast<int64_t>(p.num_heads_q) * p.gate_partials_per_head;
            for (int64_t i = grid_thread(); i < n; i += grid_threads()) p.gate_partials[i] = 0.0f;
        } else if (blockIdx.x == 0) {
            for (int h = threadIdx.x; h < p.num_heads_q; h += blockDim.x) p.d_head_gates[h] = 0.0f;
        }
    }
    BwdRow r;
    if (!bwd_row_of_warp(p, r)) return;
    const int lane = lane_of(threadIdx.x);
    const int c0 = lane * kChunkElems;
    float acc = 0.0f;
    if (c0 < p.head_dim) {
        const int64_t o_off = r.batch * p.o_batch_stride + r.in_item * p.o_row_stride +
                              r.head * p.o_head_stride + c0;
        const int64_t do_off = r.batch * p.do_batch_stride + r.in_item * p.do_row_stride +
                               r.head * p.do_head_stride + c0;
        const uint4 o = *reinterpret_cast<const uint4 *>(static_cast<const elem_bits_t *>(p.o) + o_off);
        const uint4 g = *reinterpret_cast<const uint4 *>(static_cast<const elem_bits_t *>(p.d_o) + do_off);
        const uint32_t ow[4] = {o.x, o.y, o.z, o.w};
        const uint32_t gw[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float o_lo, o_hi, g_lo, g_hi;
            unpack_pair<Elem>(ow[i], o_lo, o_hi);
            unpack_pair<Elem>(gw[i], g_lo, g_hi);
            acc = fmaf(g_lo, o_lo, acc);
            acc = fmaf(g_hi, o_hi, acc);
        }
        // Every dQ slice of the row (one per key block in deterministic mode): a key block
        // whose CTA never sees the row leaves its slice's zeros.
        const int64_t slice = static_cast<int64_t>(p.total_q) * p.num_heads_q * p.head_dim;
        float *dq = p.dq_accum + (static_cast<int64_t>(r.row) * p.num_heads_q + r.head) * p.head_dim + c0;
        for (int s = 0; s < p.dq_slices; ++s, dq += slice) {
            reinterpret_cast<float4 *>(dq)[0] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            reinterpret_cast<float4 *>(dq)[1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }
    acc = warp_allreduce_sum(acc);
    if (lane == 0) p.delta[r.stat] = acc;
}

/* The per-head sums of the convert kernel, warp w of the grid taking heads w, w + warps, ...
 * (every head, whatever the grid: a varlen batch of empty items has one CTA). Each is an ordered
 * sum (lane l adds its elements in increasing order, then the fixed shuffle tree), so it is
 * bitwise the same run to run:
 *  - d_sinks[h] = -sum over the head's rows i of exp(z_h - lse_i) delta_i (the sink column's
 *    softmax gradient: its P is exp(z - lse) and its dP is 0, no value; src/candle_op/grad.rs
 *    derives it). A sink of -inf is no column (0); a NaN sink or LSE propagates;
 *  - deterministic mode: d_head_gates[h] = the sum of the head's per-warp partials. */
__device__ __forceinline__ void bwd_head_sums(const FlashBwdParams &p) {
    const bool sinks = p.d_sinks != nullptr;
    const bool gates = p.d_head_gates != nullptr && p.gate_partials != nullptr;
    if (!sinks && !gates) return;
    const int lane = lane_of(threadIdx.x);
    const int64_t warps = static_cast<int64_t>(gridDim.x) * FLASHMHA_BWD_ROW_WARPS;
    for (int64_t h = static_cast<int64_t>(blockIdx.x) * FLASHMHA_BWD_ROW_WARPS + warp_of(threadIdx.x);
         h < p.num_heads_q; h += warps) {
        if (sinks) {
            const float z = p.opt.sinks[h];
            const bool varlen = (p.opt.flags & FLASHMHA_FLAG_VARLEN) != 0;
            // The LSE layout: [hq, total_q] varlen, [b, hq, sq] padded.
            const int items = varlen ? 1 : p.batch;
            const int rows = varlen ? p.total_q : p.seqlen_q;
            float acc = 0.0f;
            for (int b = 0; b < items; ++b) {
                const int64_t base = (varlen ? 0 : b * p.opt.lse_batch_stride) + h * p.opt.lse_head_stride;
                for (int i = lane; i < rows; i += kWarpSize) {
                    const float ps = z == neg_inf() ? 0.0f : expf(z - p.opt.lse[base + i]);
                    acc = fmaf(ps, p.delta[base + i], acc);
                }
            }
            acc = warp_allreduce_sum(acc);
            if (lane == 0) p.d_sinks[h] = -acc;
        }
        if (gates) {
            const float *part = p.gate_partials + h * p.gate_partials_per_head;
            float acc = 0.0f;
            for (int i = lane; i < p.gate_partials_per_head; i += kWarpSize) acc += part[i];
            acc = warp_allreduce_sum(acc);
            if (lane == 0) p.d_head_gates[h] = acc;
        }
    }
}

/* dq[row, head, :] = scale * dq_accum[row, head, :] in the element type. */
template <class Elem>
__device__ __forceinline__ void flash_bwd_convert_dq(const FlashBwdParams &p) {
    BwdRow r;
    const bool has_row = bwd_row_of_warp(p, r);  // traps on a wrong block size first
    bwd_head_sums(p);
    if (!has_row) return;
    const int c0 = lane_of(threadIdx.x) * kChunkElems;
    if (c0 >= p.head_dim) return;
    // The sum of the dQ slices in slice order (deterministic mode), or the one accumulator.
    const int64_t slice = static_cast<int64_t>(p.total_q) * p.num_heads_q * p.head_dim;
    const float *acc = p.dq_accum + (static_cast<int64_t>(r.row) * p.num_heads_q + r.head) * p.head_dim + c0;
    float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 b = a;
    for (int s = 0; s < p.dq_slices; ++s, acc += slice) {
        const float4 x = reinterpret_cast<const float4 *>(acc)[0];
        const float4 y = reinterpret_cast<const float4 *>(acc)[1];
        a = make_float4(a.x + x.x, a.y + x.y, a.z + x.z, a.w + x.w);
        b = make_float4(b.x + y.x, b.y + y.y, b.z + y.z, b.w + y.w);
    }
    const float s = p.opt.scale;
    uint4 out;
    out.x = Elem::pack(a.x * s, a.y * s);
    out.y = Elem::pack(a.z * s, a.w * s);
    out.z = Elem::pack(b.x * s, b.y * s);
    out.w = Elem::pack(b.z * s, b.w * s);
    const int64_t dq_off = r.batch * p.dq_batch_stride + r.in_item * p.dq_row_stride +
                           r.head * p.dq_head_stride + c0;
    *reinterpret_cast<uint4 *>(static_cast<elem_bits_t *>(p.dq) + dq_off) = out;
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_BWD_ROWS_CUH
