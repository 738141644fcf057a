/*
 * mla_decode_traits_sm90.cuh: the compile-time tile of the Hopper MLA decode (issue 23 item 3;
 * CTA body kernels/sm90/flash_mla_decode_sm90_cta.cuh, entries
 * kernels/sm90/flash_mla_decode_sm90.cu). d_qk 576 (512 latent + 64 rope), d_v 512 = the first
 * 512 dims of the same cached row.
 *
 * CTA = (split, tile of 64 packed query rows, batch item); packed row r = query i x hq + head,
 * so 64 heads of one token (or 16 heads x 4 tokens, ...) read each cached row of the split ONCE.
 * 8 warps, 256 threads, two warpgroups. Both hold the same 64 rows; warpgroup g owns keys
 * [32 g, 32 g + 32) of every 64-key tile for S and output dims [256 g, 256 g + 256) for O.
 * Per tile:
 *   - S_g = Q K_g^T: 64 rows x its 32 keys over 576 dims, 36 wgmma m64n32k16 with Q and K from
 *     shared memory (the m64nNk16 accumulator is per warp the m16n8 C fragment, so
 *     common/mask.cuh and common/softmax.cuh apply as they are);
 *   - masks and modifiers on S_g; each row's max over its 32 keys goes through shared memory
 *     (xmax), __syncthreads, and both warpgroups fold their half with the max over all 64 keys
 *     (OnlineSoftmax::fold_with_max): m and the O rescale are identical in both, while l and e
 *     hold each half's share, summed once through shared memory before the epilogue;
 *   - P_g packed into A fragments in registers AND stored to the shared P tile; __syncthreads;
 *     the other half's A fragments come back with ldmatrix;
 *   - O[:, its 256 dims] += P V: 4 wgmma m64n256k16 (its own 2 k-steps, then the other's), V
 *     = the first 512 dims of the SAME staged rows through an MN-major descriptor.
 * Tensor work equals the product (576 + 512 per row and key, nothing computed twice); the
 * price is two CTA barriers per tile and 8 KB of P through shared memory. (Both warpgroups
 * computing the whole S, no exchange at all, issues 1.53x the tensor work and reads K twice
 * from shared memory: the first version of this kernel.)
 *
 * Pages arrive by TMA: thread 0 looks up the block table and issues, per 64-key tile, 9 boxes
 * (64 columns x 64 rows, 128-byte swizzle) of one page of the latent pool into a two-stage
 * ring; kv_full[stage] completes on the boxes' bytes, kv_empty[stage] when all 256 threads are
 * done with the tile's P V (in a cluster of two: the 512 threads of both CTAs, each CTA's thread
 * 0 issuing half of the boxes with multicast into both; see the CTA body). Thread 0 issues tile i + 1 at the start of tile i, so one tile is in
 * flight while one is computed. No separate producer warp: the register file is split over the
 * SM's 4 sub-partitions, so a ninth warp would put 3 warps on one of them and cap every thread
 * at 168 registers (65536 / 4 / 96; ptxas allocates the whole kernel within it), below O + S;
 * with 8 warps a thread may use 255.
 *
 * Register budget per thread: O 64 rows x 256 dims / 128 threads = 128 f32; S 64 x 32 / 128 =
 * 16 f32; P 2 x 2 k-steps x 4 = 16 packed; softmax state 6, row masks / heads 12, descriptors
 * and addresses ~10: about 190 live of the 255 a thread may use; ptxas 13.5 sm_90a allocates
 * 228 with 0 spills (figures in `flashmha info`, 0 spills checked by
 * src/ops/mla_decode/kernels.rs).
 *
 * Shared memory (bytes), Q and the stages in 64-column boxes of 128-byte swizzled rows:
 *   Q      9 boxes x 64 rows x 128           = 73728 (written by all threads, swizzled by hand)
 *   stages 2 x 9 boxes x 64 keys x 128       = 147456
 *   P      64 rows x 64 keys x 2             = 8192 (the same swizzle; reused for the l / e shares)
 *   xmax   2 warpgroups x 64 rows x 4        = 512
 *   mbarriers kv_full[2], kv_empty[2] in a 128-byte block
 *   total 230016 <= 232448 (sm_90's 227 KiB). A third stage (+73728) does not fit.
 *
 * Pages: one 64-key tile is one TMA box row range of one page, so the kernel serves page sizes
 * that are multiples of 64 (the plan runs the sm_80 kernel otherwise). Slots past the cache
 * length inside the last page may hold anything (NaN): after the tile lands, all threads zero
 * those rows (generic stores, then fence.proxy.async and a CTA barrier before wgmma reads
 * them), so P = 0 never meets a NaN in V.
 */
#ifndef FLASHMHA_SM90_MLA_DECODE_TRAITS_SM90_CUH
#define FLASHMHA_SM90_MLA_DECODE_TRAITS_SM90_CUH

#include "params.h"
#include "common/decode_traits.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

namespace flashmha {

template <class Elem_, int kTileRows_, int kNumWarps_>
struct MlaDecodeTraitsSm90 {
    using Elem = Elem_;
    static constexpr int kDQk = FLASHMHA_MLA_D_QK;
    static constexpr int kDV = FLASHMHA_MLA_D_V;
    static constexpr int kTileRows = kTileRows_;
    static_assert(kTileRows == kWgmmaM, "one wgmma row block of packed rows");
    static constexpr int kConsumerWarpgroups = 2;  // every warp computes
    static constexpr int kConsumerThreads = kConsumerWarpgroups * kWarpgroupThreads;
    static constexpr int kNumWarps = kNumWarps_;
    static_assert(kNumWarps == kConsumerWarpgroups * kWarpgroupWarps, "two warpgroups, no other warp");
    static constexpr int kThreads = kNumWarps * kWarpSize;

    static constexpr int kKeys = 64;  // keys per tile: one box row range
    static constexpr int kBoxes = kDQk / kColsPerSwizzleRow;         // 9 per row
    static constexpr int kWgDV = kDV / kConsumerWarpgroups;          // 256 output dims each
    static constexpr int kWgVBoxes = kWgDV / kColsPerSwizzleRow;     // 4
    static_assert(kBoxes * kColsPerSwizzleRow == kDQk && kWgVBoxes * kColsPerSwizzleRow == kWgDV,
                  "whole 64-column boxes");
    static constexpr int kWgKeys = kKeys / kConsumerWarpgroups;  // 32 keys of S per warpgroup
    static constexpr int kSTiles = kWgKeys / kMmaN;    // 4 n8 score tiles per warp
    static constexpr int kWgPVSteps = kWgKeys / kWgmmaK;  // 2 P V k-steps of each warpgroup's P
    static constexpr int kOTiles = kWgDV / kMmaN;      // 32 n8 output tiles per warp
    static constexpr int kQKSteps = kDQk / kWgmmaK;    // 36
    static constexpr int kPVSteps = kKeys / kWgmmaK;   // 4
    static constexpr int kKStepsPerBox = kSwizzleRowBytes / kKStepBytes;  // 4
    static constexpr int kChunksPerRow = kSwizzleRowBytes / kDecodeChunkBytes;  // 8 per box row

    static constexpr int kStages = 2;
    static constexpr int kQBoxBytes = kTileRows * kSwizzleRowBytes;
    static constexpr int kKvBoxBytes = kKeys * kSwizzleRowBytes;
    static constexpr int kQBytes = kBoxes * kQBoxBytes;
    static constexpr int kStageBytes = kBoxes * kKvBoxBytes;
    static constexpr int kQOffset = 0;
    static constexpr int kKvOffset = kQOffset + kQBytes;
    static constexpr int kPOffset = kKvOffset + kStages * kStageBytes;
    static constexpr int kPBytes = kTileRows * kSwizzleRowBytes;  // P: [64 rows][64 keys] 16-bit
    static_assert(kPBytes >= kThreads * 2 * kRowHalves * 4, "the l / e shares fit in the P tile");
    static constexpr int kMaxOffset = kPOffset + kPBytes;
    static constexpr int kMaxBytes = kConsumerWarpgroups * kTileRows * 4;  // row maxima, f32
    static constexpr int kBarOffset = kMaxOffset + kMaxBytes;
    static constexpr int kBarBlockBytes = 128;
    static_assert(2 * kStages * kMbarrierBytes <= kBarBlockBytes, "mbarrier block too small");
    static constexpr int kSmemBytes = kBarOffset + kBarBlockBytes;
    static_assert(kQBoxBytes % kSwizzleAtomBytes == 0 && kKvBoxBytes % kSwizzleAtomBytes == 0,
                  "every box starts on a 1024-byte swizzle atom");
    static_assert(kSmemBytes <= FLASHMHA_SM90_MAX_DYNAMIC_SMEM_BYTES, "tile does not fit sm_90 shared memory");

    __device__ static uint32_t stage(uint32_t base, int s) { return base + kKvOffset + s * kStageBytes; }
    __device__ static uint32_t kv_full(uint32_t base, int s) { return base + kBarOffset + s * kMbarrierBytes; }
    __device__ static uint32_t kv_empty(uint32_t base, int s) {
        return base + kBarOffset + (kStages + s) * kMbarrierBytes;
    }
};

}  // namespace flashmha

#endif  // FLASHMHA_SM90_MLA_DECODE_TRAITS_SM90_CUH
