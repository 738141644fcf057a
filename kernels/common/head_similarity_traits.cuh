/*
 * head_similarity_traits.cuh: the compile-time shape of the head-similarity kernel
 * (kernels/sm80/head_similarity.cu), its shared-memory layout, and the 16-bit -> f32 element loads it
 * needs. Used by that kernel only; the forward kernels' building blocks live in the other files of
 * kernels/common/.
 *
 * Work decomposition (see the kernel file for the why):
 *   - the CTA's kThreads threads form a kTileDim x kTileDim grid over the [heads, heads] output;
 *     thread (ty, tx) owns the kSlots x kSlots entries (ty + a * kTileDim, tx + b * kTileDim),
 *     so every thread has work even for few heads, and the entries of one row of threads are
 *     consecutive columns (conflict-free shared reads, coalesced atomics);
 *   - tokens are taken kTokensPerGroup at a time (norms first, then the products), and the
 *     products stream through shared memory kSegsPerChunk 8-element segments at a time.
 */
#ifndef FLASHMHA_COMMON_HEAD_SIMILARITY_TRAITS_CUH
#define FLASHMHA_COMMON_HEAD_SIMILARITY_TRAITS_CUH

#include <stdint.h>

#include "params.h"

namespace flashmha {
namespace headsim {

/* The kernel's limits and fixed tiling; none depends on the launch. */
struct Shape {
    static constexpr int kWarpSize = 32;        // PTX ISA: threads per warp
    static constexpr int kThreads = 256;        // one CTA = 8 warps
    static constexpr int kTileDim = 16;         // kThreads = kTileDim x kTileDim thread grid
    static constexpr int kMaxHeads = 128;       // largest num_heads: kTileDim x the largest kSlots (8)
    static constexpr int kMaxHeadDim = 256;     // largest head_dim
    static constexpr int kVecElems = 8;         // one 16-byte load of 16-bit elements
    static constexpr int kTokensPerGroup = 8;   // tokens whose norms are held in shared memory at once
    static constexpr int kSegsPerChunk = 4;     // 8-element segments per shared-memory chunk
    static constexpr int kChunkRows = kSegsPerChunk * kVecElems;  // 32 (token, dim) rows
    /* Row pitch of the chunk in floats: one more than the widest row, so that row r starts at
     * bank r mod 32. The staging stores of a warp (8 heads x 4 segments, element e) then hit
     * banks (8 * segment + e + head) mod 32: all 32 distinct. */
    static constexpr int kPitch = kMaxHeads + 1;
    static constexpr int kLanesPerRow = 8;      // lanes that share one (token, head) norm
    static constexpr int kVecsPerLane = kMaxHeadDim / kVecElems / kLanesPerRow;  // 4 loads max
    static constexpr int kRowsPerWarp = kWarpSize / kLanesPerRow;                 // 4 norms per warp
    static constexpr int kRowsPerPass = kThreads / kLanesPerRow;                  // 32 per CTA pass
    /* Upper bound of the per-row rescaling 1 / max|x|: reached only when max|x| is below the
     * smallest normal f32 (bf16 subnormals), where 1 / max|x| would overflow. With it the scaled
     * maximum is still >= 2^-7 (bf16's smallest subnormal is 2^-133), far from underflow. */
    static constexpr float kMaxRowScale = 0x1p126f;

    static_assert(kThreads == kTileDim * kTileDim, "thread grid covers the CTA exactly");
    // The host plans with the limits in params.h: they must be these.
    static_assert(kThreads == FLASHMHA_HEADSIM_THREADS, "params.h block size");
    static_assert(kMaxHeads == FLASHMHA_HEADSIM_MAX_HEADS, "params.h head limit");
    static_assert(kMaxHeadDim == FLASHMHA_HEADSIM_MAX_HEAD_DIM, "params.h head-dim limit");
    static_assert(kVecElems * 2 == FLASHMHA_HEADSIM_LOAD_BYTES, "params.h load width (16-bit)");
    static_assert(kTokensPerGroup == FLASHMHA_HEADSIM_TOKENS_PER_GROUP, "params.h token group");
    static_assert(kThreads % kWarpSize == 0, "whole warps");
    static_assert(kWarpSize % kLanesPerRow == 0, "norm groups do not straddle warps");
    static_assert(kMaxHeadDim % (kVecElems * kLanesPerRow) == 0, "every lane loads kVecsPerLane");
};

/* Shared memory of one CTA (static, 24.6 KB: below the 48 KB that needs no opt-in). */
struct Smem {
    // u: [kChunkRows (token, dim) rows, kPitch heads], the chunk of unit vectors, f32
    float u[Shape::kChunkRows][Shape::kPitch];
    // scale: [kTokensPerGroup, kMaxHeads], 1 / max|o[t, h, :]| (0 for a zero row)
    float scale[Shape::kTokensPerGroup][Shape::kMaxHeads];
    // inv_len: [kTokensPerGroup, kMaxHeads], 1 / ||o[t, h, :] * scale|| (0 for a zero row)
    float inv_len[Shape::kTokensPerGroup][Shape::kMaxHeads];
};

/* Per-instantiation traits: the element type and how many output entries a thread owns. */
template <class Load_, int kSlots_>
struct Traits : Shape {
    using Load = Load_;
    static constexpr int kSlots = kSlots_;               // per thread: kSlots x kSlots entries
    static constexpr int kHeadsCovered = kSlots * kTileDim;  // largest num_heads served
    static_assert(kHeadsCovered <= kMaxHeads, "shared chunk is kMaxHeads wide");
};

/* f16 elements: PTX ISA "cvt" f16 -> f32 is exact. */
struct LoadF16 {
    static __device__ __forceinline__ float lo(uint32_t pair) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(static_cast<unsigned short>(pair & 0xffffu)));
        return f;
    }
    static __device__ __forceinline__ float hi(uint32_t pair) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(static_cast<unsigned short>(pair >> 16)));
        return f;
    }
};

/* bf16 elements: a bf16 is the upper half of an f32, so widening is a shift (exact). */
struct LoadBF16 {
    static constexpr uint32_t kHighHalf = 0xffff0000u;
    static __device__ __forceinline__ float lo(uint32_t pair) { return __uint_as_float(pair << 16); }
    static __device__ __forceinline__ float hi(uint32_t pair) {
        return __uint_as_float(pair & kHighHalf);
    }
};

/* The 8 elements of one 16-byte load, in memory order ("low to high" within each .b32). */
template <class Load>
__device__ __forceinline__ void unpack8(const uint4 &v, float (&x)[Shape::kVecElems]) {
    x[0] = Load::lo(v.x);
    x[1] = Load::hi(v.x);
    x[2] = Load::lo(v.y);
    x[3] = Load::hi(v.y);
    x[4] = Load::lo(v.z);
    x[5] = Load::hi(v.z);
    x[6] = Load::lo(v.w);
    x[7] = Load::hi(v.w);
}

}  // namespace headsim
}  // namespace flashmha

#endif  // FLASHMHA_COMMON_HEAD_SIMILARITY_TRAITS_CUH
