/*
 * mla_decode_traits_sm90.cuh: the compile-time tile of the Hopper MLA decode (issue 23 item 3;
 * CTA body kernels/sm90/flash_mla_decode_sm90_cta.cuh, entries
 * kernels/sm90/flash_mla_decode_sm90.cu). d_qk 576 (512 latent + 64 rope), d_v 512 = the first
 * 512 dims of the same cached row.
 *
 * CTA = (split, tile of 64 packed query rows, batch item); packed row r = query i x hq + head,
 * so 64 heads of one token (or 16 heads x 4 tokens, ...) read each cached row of the split ONCE.
 * 8 warps, 256 threads, two warpgroups. Both hold the same 64 rows; warpgroup g owns output
 * dims [256 g, 256 g + 256). Per 64-key tile each computes the whole S = Q K^T (64 x 64 over
 * 576 dims: 36 wgmma m64n64k16, Q and K from shared memory), the masks and online softmax in
 * registers (the m64nNk16 accumulator is per warp the m16n8 C fragment: common/softmax.cuh and
 * common/mask.cuh apply as they are), then O[:, its 256 dims] += P V with P from registers (4
 * wgmma m64n256k16, V = the first 512 dims of the SAME staged rows, read through an MN-major
 * descriptor). The two warpgroups compute bit-identical S, P, m and l (same operands, same
 * instruction sequence), so they need no exchange; the price is S twice: tensor work
 * 2 x 576 + 512 = 1664 per (row, key) against the 1088 of the product, 1.53x. The decode is
 * memory-bound: at 64 rows per cached row of 1152 bytes that is 185 flop per byte, below the
 * H100's ~295 dense 16-bit flop per DRAM byte (the sm_80 kernel's scheme, S partials summed
 * through shared memory, needs 16-32 KB more than the 11 KB left next to Q and two stages).
 *
 * Pages arrive by TMA: thread 0 looks up the block table and issues, per 64-key tile, 9 boxes
 * (64 columns x 64 rows, 128-byte swizzle) of one page of the latent pool into a two-stage
 * ring; kv_full[stage] completes on the boxes' bytes, kv_empty[stage] when all 256 threads are
 * done with the tile's P V. Thread 0 issues tile i + 1 at the start of tile i, so one tile is in
 * flight while one is computed. No separate producer warp: the register file is split over the
 * SM's 4 sub-partitions, so a ninth warp would put 3 warps on one of them and cap every thread
 * at 168 registers (65536 / 4 / 96; ptxas allocates the whole kernel within it), below O + S;
 * with 8 warps a thread may use 255.
 *
 * Register budget per thread: O 64 rows x 256 dims / 128 threads = 128 f32; S 64 x 64 / 128 =
 * 32 f32; P packed 16; softmax state 6, row masks / heads 12, descriptors and addresses ~10:
 * about 204 live of the 255 a thread may use; ptxas 13.5 sm_90a allocates 252 with 0 spills
 * (figures in `flashmha info`, 0 spills checked by src/ops/mla_decode/kernels.rs).
 *
 * Shared memory (bytes), every tile in 64-column boxes of 128-byte swizzled rows:
 *   Q      9 boxes x 64 rows x 128           = 73728 (written by the consumers, swizzled by hand)
 *   stages 2 x 9 boxes x 64 keys x 128       = 147456
 *   mbarriers kv_full[2], kv_empty[2] in a 128-byte block
 *   total 221312 <= 232448 (sm_90's 227 KiB). A third stage (+73728) does not fit.
 *
 * Pages: one 64-key tile is one TMA box row range of one page, so the kernel serves page sizes
 * that are multiples of 64 (the plan runs the sm_80 kernel otherwise). Slots past the cache
 * length inside the last page may hold anything (NaN): after the tile lands, the consumers zero
 * those rows (generic stores, then fence.proxy.async and a consumer barrier before wgmma reads
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
    static constexpr int kSTiles = kKeys / kMmaN;      // 8 n8 score tiles per warp
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
    static constexpr int kBarOffset = kKvOffset + kStages * kStageBytes;
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
