/*
 * head_similarity.cu: the head-similarity diagnostic kernel. For every token t and every pair of
 * heads (i, j) it forms cos(o[t, i, :], o[t, j, :]) and sums it over tokens into gram[i, j]
 * (the host divides by the token count); see HeadSimParams in params.h for the ABI.
 *
 * The sum over tokens of cosines is one Gram matrix: with u[t, h, :] = o[t, h, :] / ||o[t, h, :]||
 * (0 for a zero row),
 *     gram[i, j] = sum_t sum_k u[t, i, k] * u[t, j, k] = (U^T U)[i, j],  U: [(t, k), h].
 * So a CTA normalises its tokens' head vectors (norm pass), streams the unit vectors through
 * shared memory as [(token, dim) rows, heads] chunks, and accumulates U^T U of its rows in
 * registers (an f32 SIMT GEMM); at the end each entry is added to gram with one atomicAdd.
 * The diagonal is cos(x, x) = 1 by definition (and 1 for a zero row by the ABI's convention), so
 * the CTA adds its exact token count there instead of a rounded sum of |u|^2.
 *
 * Why SIMT f32 and not mma.sync: the unit vectors would have to be rounded to f16/bf16 (or tf32)
 * to enter the tensor cores, which perturbs every cosine by up to 2^-8 (bf16) / 2^-11 (tf32)
 * relative, more than the rounding of the kernel's own input; a diagnostic should report the
 * model's heads, not our rounding. The kernel is off the inference path (run once over a batch's
 * outputs), so f32 FMA throughput is enough. mma with a 3xTF32 split would be the upgrade path.
 *
 * Norms: computed in f32 on the row scaled by 1 / max|x| (see Shape::kMaxRowScale), so that
 * neither large bf16 values (|x| > ~1e19 overflow x^2) nor tiny ones (underflow) break them. A
 * non-finite input makes that head's entries NaN (never silently 0).
 *
 * Shared memory: the chunk pitch is kMaxHeads + 1 floats, which makes both the staging stores and
 * the GEMM's reads (one row per step, 2 distinct row addresses and 16 consecutive columns per
 * warp) free of bank conflicts. Global memory: o is read twice (norm pass, then staging); the
 * second read of a group of kTokensPerGroup tokens is served by L2.
 */
#include <stdint.h>

#include "params.h"
#include "common/head_similarity_traits.cuh"

namespace flashmha {
namespace headsim {

/* The 16-byte segment `vec` (8 elements) of row o[token, head, :]. */
__device__ __forceinline__ uint4 load_segment(const HeadSimParams &p, int64_t token, int head,
                                              int vec) {
    const uint16_t *o = static_cast<const uint16_t *>(p.o);  // o: [num_tokens, num_heads, head_dim]
    const uint16_t *seg = o + token * p.token_stride + head * p.head_stride +
                          static_cast<int64_t>(vec) * Shape::kVecElems;
    return __ldg(reinterpret_cast<const uint4 *>(seg));
}

/* Norm pass: sm.scale and sm.inv_len of the group's (token, head) rows. kLanesPerRow lanes share
 * one row (each loads up to kVecsPerLane 16-byte segments, kept in registers), and reduce over
 * the group with shfl.xor. The loop is uniform over the CTA so every lane reaches each shfl. */
template <class T>
__device__ __forceinline__ void norm_pass(const HeadSimParams &p, Smem &sm, int64_t t0,
                                          int group_tokens) {
    using Load = typename T::Load;
    constexpr unsigned kFullMask = 0xffffffffu;  // every lane of the warp takes part
    const int tid = threadIdx.x;
    const int lane = tid % T::kWarpSize;
    const int sub = lane % T::kLanesPerRow;  // lane within the row's group
    const int row_in_warp = lane / T::kLanesPerRow;
    const int warp = tid / T::kWarpSize;
    const int vecs_per_row = p.head_dim / T::kVecElems;
    const int rows = group_tokens * p.num_heads;
    for (int base = 0; base < rows; base += T::kRowsPerPass) {
        const int r = base + warp * T::kRowsPerWarp + row_in_warp;
        const bool valid = r < rows;
        const int tl = valid ? r / p.num_heads : 0;  // token within the group
        const int h = valid ? r % p.num_heads : 0;
        float x[T::kVecsPerLane][T::kVecElems];  // this lane's part of the row, f32
        float max_abs = 0.0f;
#pragma unroll
        for (int i = 0; i < T::kVecsPerLane; ++i) {
            const int vec = sub + i * T::kLanesPerRow;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (valid && vec < vecs_per_row) v = load_segment(p, t0 + tl, h, vec);
            unpack8<Load>(v, x[i]);
#pragma unroll
            for (int e = 0; e < T::kVecElems; ++e) max_abs = fmaxf(max_abs, fabsf(x[i][e]));
        }
#pragma unroll
        for (int off = T::kLanesPerRow / 2; off > 0; off /= 2)
            max_abs = fmaxf(max_abs, __shfl_xor_sync(kFullMask, max_abs, off));
        // 0 for a zero row; inf * 0 and NaN * 0 stay NaN below, so non-finite rows give NaN.
        const float scale = max_abs > 0.0f ? fminf(1.0f / max_abs, T::kMaxRowScale) : 0.0f;
        float sum_sq = 0.0f;
#pragma unroll
        for (int i = 0; i < T::kVecsPerLane; ++i) {
#pragma unroll
            for (int e = 0; e < T::kVecElems; ++e) {
                const float s = x[i][e] * scale;
                sum_sq = fmaf(s, s, sum_sq);
            }
        }
#pragma unroll
        for (int off = T::kLanesPerRow / 2; off > 0; off /= 2)
            sum_sq += __shfl_xor_sync(kFullMask, sum_sq, off);
        if (valid && sub == 0) {
            sm.scale[tl][h] = scale;
            sm.inv_len[tl][h] = sum_sq == 0.0f ? 0.0f : 1.0f / sqrtf(sum_sq);
        }
    }
}

/* Staging: unit-vector rows seg0 .. seg0 + chunk_segs of the group into sm.u, transposed to
 * [(token, dim), head]. A warp's 32 tasks are 8 heads x kSegsPerChunk segments (conflict-free
 * stores, see Shape::kPitch; 64 contiguous bytes per head from global). */
template <class T>
__device__ __forceinline__ void stage_chunk(const HeadSimParams &p, Smem &sm, int64_t t0, int seg0,
                                            int chunk_segs) {
    using Load = typename T::Load;
    const int vecs_per_row = p.head_dim / T::kVecElems;
    const int tasks = p.num_heads * T::kSegsPerChunk;
    for (int task = threadIdx.x; task < tasks; task += T::kThreads) {
        const int seg = task % T::kSegsPerChunk;
        const int h = task / T::kSegsPerChunk;
        if (seg >= chunk_segs) continue;  // past the group's last segment: rows not read
        const int gseg = seg0 + seg;      // segment index within the group
        const int tl = gseg / vecs_per_row;
        const int vec = gseg % vecs_per_row;
        float x[T::kVecElems];
        unpack8<Load>(load_segment(p, t0 + tl, h, vec), x);
        const float scale = sm.scale[tl][h];
        const float inv_len = sm.inv_len[tl][h];
#pragma unroll
        for (int e = 0; e < T::kVecElems; ++e)
            sm.u[seg * T::kVecElems + e][h] = (x[e] * scale) * inv_len;
    }
}

/* acc += U^T U over the chunk's first chunk_segs * kVecElems rows, for this thread's entries. */
template <class T>
__device__ __forceinline__ void gemm_chunk(const Smem &sm, float (&acc)[T::kSlots][T::kSlots],
                                           int chunk_segs, int ty, int tx) {
    for (int seg = 0; seg < chunk_segs; ++seg) {
#pragma unroll
        for (int e = 0; e < T::kVecElems; ++e) {
            const float *row = sm.u[seg * T::kVecElems + e];  // row: [kPitch] heads
            float a[T::kSlots];
            float b[T::kSlots];
#pragma unroll
            for (int s = 0; s < T::kSlots; ++s) {
                a[s] = row[ty + s * T::kTileDim];
                b[s] = row[tx + s * T::kTileDim];
            }
#pragma unroll
            for (int i = 0; i < T::kSlots; ++i) {
#pragma unroll
                for (int j = 0; j < T::kSlots; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
        }
    }
}

/* One CTA: tokens blockIdx.x * tokens_per_cta .. + tokens_per_cta (clipped to num_tokens). */
template <class T>
__device__ __forceinline__ void head_similarity_cta(const HeadSimParams &p, Smem &sm) {
    const int tid = threadIdx.x;
    const int tx = tid % T::kTileDim;
    const int ty = tid / T::kTileDim;
    const int heads = p.num_heads;
    const int64_t t_begin = static_cast<int64_t>(blockIdx.x) * p.tokens_per_cta;
    const int64_t t_end = min(t_begin + p.tokens_per_cta, static_cast<int64_t>(p.num_tokens));
    if (t_begin >= t_end) return;  // CTA-uniform: an over-sized grid has nothing here

    // Columns heads .. kHeadsCovered of the chunk are read by the GEMM but never staged: zero
    // them once (disjoint from the staged columns, so no ordering with the staging is needed).
    // Walking the flat [kChunkRows * kPitch] array keeps a warp's stores on consecutive words
    // (conflict-free) whichever columns it skips.
    for (int i = tid; i < T::kChunkRows * T::kPitch; i += T::kThreads) {
        const int col = i % T::kPitch;
        if (col >= heads && col < T::kHeadsCovered) sm.u[i / T::kPitch][col] = 0.0f;
    }

    float acc[T::kSlots][T::kSlots];  // acc: [kSlots, kSlots] this thread's entries of U^T U
#pragma unroll
    for (int i = 0; i < T::kSlots; ++i) {
#pragma unroll
        for (int j = 0; j < T::kSlots; ++j) acc[i][j] = 0.0f;
    }

    const int vecs_per_row = p.head_dim / T::kVecElems;
    for (int64_t t0 = t_begin; t0 < t_end; t0 += T::kTokensPerGroup) {
        const int group_tokens = static_cast<int>(min(t_end - t0, int64_t{T::kTokensPerGroup}));
        norm_pass<T>(p, sm, t0, group_tokens);
        __syncthreads();  // scale / inv_len of every row are written before any staging reads them
        const int segs = group_tokens * vecs_per_row;
        for (int seg0 = 0; seg0 < segs; seg0 += T::kSegsPerChunk) {
            const int chunk_segs = min(T::kSegsPerChunk, segs - seg0);
            stage_chunk<T>(p, sm, t0, seg0, chunk_segs);
            __syncthreads();  // the chunk is complete before threads read other threads' columns
            gemm_chunk<T>(sm, acc, chunk_segs, ty, tx);
            __syncthreads();  // all reads of u (and of scale / inv_len) are done before the next
                              // chunk or group overwrites them
        }
    }

    const float tokens = static_cast<float>(t_end - t_begin);  // exact: tokens_per_cta < 2^24
    float *gram = p.gram;  // gram: [num_heads, num_heads] f32
#pragma unroll
    for (int i = 0; i < T::kSlots; ++i) {
#pragma unroll
        for (int j = 0; j < T::kSlots; ++j) {
            const int row = ty + i * T::kTileDim;
            const int col = tx + j * T::kTileDim;
            if (row < heads && col < heads)
                atomicAdd(&gram[row * heads + col], row == col ? tokens : acc[i][j]);
        }
    }
}

/* Checks what the host plan guarantees (a bad launch traps instead of reading out of bounds),
 * then runs the instantiation with the fewest slots that covers num_heads (CTA-uniform). */
template <class Load>
__device__ __forceinline__ void head_similarity(const HeadSimParams &p, Smem &sm) {
    const bool ok = p.num_heads >= 1 && p.num_heads <= Shape::kMaxHeads &&
                    p.head_dim >= Shape::kVecElems && p.head_dim <= Shape::kMaxHeadDim &&
                    p.head_dim % Shape::kVecElems == 0 && p.tokens_per_cta >= 1 &&
                    blockDim.x == Shape::kThreads && blockDim.y == 1 && blockDim.z == 1;
    if (!ok) __trap();
    if (p.num_heads <= Traits<Load, 1>::kHeadsCovered)
        head_similarity_cta<Traits<Load, 1>>(p, sm);
    else if (p.num_heads <= Traits<Load, 2>::kHeadsCovered)
        head_similarity_cta<Traits<Load, 2>>(p, sm);
    else if (p.num_heads <= Traits<Load, 4>::kHeadsCovered)
        head_similarity_cta<Traits<Load, 4>>(p, sm);
    else
        head_similarity_cta<Traits<Load, 8>>(p, sm);
}

}  // namespace headsim
}  // namespace flashmha

extern "C" __global__ void __launch_bounds__(flashmha::headsim::Shape::kThreads)
    flashmha_head_similarity_f16(const HeadSimParams p) {
    __shared__ flashmha::headsim::Smem smem;
    flashmha::headsim::head_similarity<flashmha::headsim::LoadF16>(p, smem);
}

extern "C" __global__ void __launch_bounds__(flashmha::headsim::Shape::kThreads)
    flashmha_head_similarity_bf16(const HeadSimParams p) {
    __shared__ flashmha::headsim::Smem smem;
    flashmha::headsim::head_similarity<flashmha::headsim::LoadBF16>(p, smem);
}
