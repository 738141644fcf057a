/*
 * bwd_traits.cuh: the one compile-time description of a backward main-kernel instantiation
 * (kernels/common/flash_bwd_cta.cuh): element type, head dim, query rows per main-loop step,
 * warps; and everything derived from it: fragment counts, the shared-memory layout and its size,
 * which must equal the smem_bytes column of FLASHMHA_BWD_KERNELS in kernels/kernel_table.h
 * (static_assert at the entry point).
 */
#ifndef FLASHMHA_COMMON_BWD_TRAITS_CUH
#define FLASHMHA_COMMON_BWD_TRAITS_CUH

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/smem_layout.cuh"

namespace flashmha {

template <class Elem_, int kHeadDim_, int kBlockM_, int kNumWarps_>
struct BwdTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kBlockM = kBlockM_;  // query rows per main-loop step
    static constexpr int kNumWarps = kNumWarps_;
    static constexpr int kThreads = kNumWarps * kWarpSize;
    /* Each warp owns one m16 block of the CTA's keys: the rows of its dK / dV accumulators and
     * of its S^T = K Q^T and dP^T = V dO^T tiles, so P^T and dS^T are A fragments of
     * dV += P^T dO and dK += dS^T Q straight from the registers (mma.cuh, P reuse). */
    static constexpr int kBlockN = kNumWarps * kMmaM;  // keys per CTA
    static_assert(kHeadDim % kMmaK == 0, "head_dim must be a multiple of 16");
    static_assert(kBlockM % kMmaK == 0, "block_m must be a multiple of 16");

    static constexpr int kDTiles = kHeadDim / kMmaN;     // n8 tiles of dK / dV per warp
    static constexpr int kDSteps = kHeadDim / kMmaK;     // k16 steps of K Q^T and V dO^T
    static constexpr int kDPairs = kHeadDim / (2 * kMmaN);  // one ldmatrix.x4.trans = 2 dim tiles
    static constexpr int kMTiles = kBlockM / kMmaN;      // n8 query tiles of S^T per warp
    static constexpr int kMSteps = kBlockM / kMmaK;      // k16 steps of P^T dO and dS^T Q
    static constexpr int kMPairs = kBlockM / (2 * kMmaN);   // one ldmatrix.x4 = 2 query tiles
    static constexpr int kNSteps = kBlockN / kMmaK;      // k16 steps of dQ = dS K

    /* dQ = dS K: m16 query row blocks, each split over kDqWarpsPerRow warps by dim pairs. */
    static constexpr int kDqRowBlocks = kBlockM / kMmaM;
    static_assert(kNumWarps % kDqRowBlocks == 0, "warps must split the dQ row blocks evenly");
    static constexpr int kDqWarpsPerRow = kNumWarps / kDqRowBlocks;

    using RowTile = SwizzledTile<kBlockM, kHeadDim>;  // q, d_o: [block_m, d]
    using KVTile = SwizzledTile<kBlockN, kHeadDim>;   // k, v: [block_n, d]
    using DsTile = SwizzledTile<kBlockM, kBlockN>;    // dS: [block_m queries, block_n keys]
    static_assert(RowTile::kRowBytes == KVTile::kRowBytes,
                  "one cursor addresses both d-wide tiles");
    static_assert(RowTile::conflict_free() && KVTile::conflict_free() && DsTile::conflict_free(),
                  "swizzle must be conflict-free");
    static_assert(cursor_matches_layout<RowTile>() && cursor_matches_layout<KVTile>() &&
                      cursor_matches_layout<DsTile>(),
                  "fragment cursors must address the swizzled layout");

    /* Shared memory: [K | V | Q | dO | dS | lse (log2 units) | delta]; K and V stay for the
     * whole CTA, the rest is refilled per query tile. */
    static constexpr int kKOffset = 0;
    static constexpr int kVOffset = kKOffset + KVTile::kBytes;
    static constexpr int kQOffset = kVOffset + KVTile::kBytes;
    static constexpr int kDoOffset = kQOffset + RowTile::kBytes;
    static constexpr int kDsOffset = kDoOffset + RowTile::kBytes;
    static constexpr int kLseOffset = kDsOffset + DsTile::kBytes;
    static constexpr int kDeltaOffset = kLseOffset + kBlockM * 4;
    static constexpr int kSmemBytes = kDeltaOffset + kBlockM * 4;
    static_assert(kSmemBytes <= FLASHMHA_MAX_DYNAMIC_SMEM_BYTES,
                  "tile does not fit sm_86/sm_89 shared memory");
    // The mask math forms values up to sq + sk + block (params.h headroom).
    static_assert(kBlockN <= FLASHMHA_SEQLEN_HEADROOM && kBlockM <= FLASHMHA_SEQLEN_HEADROOM,
                  "params.h sequence headroom");
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_BWD_TRAITS_CUH
