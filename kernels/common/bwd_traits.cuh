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
    /* Warps work in pairs. Pair g owns keys 32g .. 32g + 31 of the CTA; warp x of the pair
     * computes S^T = K Q^T and dP^T = V dO^T for those keys and the query half x of the tile
     * (a 32 x 32 tile: one ldmatrix per two mma), so P^T and dS^T of its half are A fragments of
     * dV += P^T dO and dK += dS^T Q straight from its registers (mma.cuh P reuse).
     *  - kDSplit 1 (d <= 64): each warp accumulates dK / dV of its keys over the whole head dim
     *    and its own query half; the pair's two partial sums are added in the epilogue.
     *  - kDSplit 2 (d > 64, where 32 keys x d of both would not fit the registers): warp x
     *    accumulates the dim pairs p with p % 2 == x over every query of the tile, the other
     *    half's P^T and dS^T read from shared memory (written there by the partner). */
    static constexpr int kPairKeys = 2 * kMmaM;  // keys of a warp pair: two m16 blocks
    static constexpr int kKeyBlocks = kPairKeys / kMmaM;
    static constexpr int kHalfRows = kBlockM / 2;  // queries of a warp
    static_assert(kNumWarps % 2 == 0, "warps work in pairs");
    static constexpr int kBlockN = kNumWarps / 2 * kPairKeys;  // keys per CTA
    static_assert(kHeadDim % kMmaK == 0, "head_dim must be a multiple of 16");
    static_assert(kHalfRows % kMmaK == 0, "a warp's query half is whole k16 steps");
    static constexpr int kDSplit = kHeadDim >= 64 ? 2 : 1;
    /* Above d64 the f32 dP^T waits in shared memory while S^T is computed (one f32 tile live
     * beside the accumulators: 0 spills) and is read back exact, so dS^T, gate P^T and d(gate)
     * are formed in f32 and rounded once (P^T packed to 16 bits before dP^T, the fifth
     * session's way to the same registers, put a second rounding into dS^T and gate P^T: 4 of
     * 200 random `check --backward` cases over tolerance). The stash is thread-private
     * ([warp][C pair][lane] float2: 2 wavefronts a warp store / load, no conflicts). */
    static constexpr bool kStashP = kHeadDim > 64;

    static constexpr int kDSteps = kHeadDim / kMmaK;        // k16 steps of K Q^T and V dO^T
    static constexpr int kDPairs = kHeadDim / (2 * kMmaN);  // one ldmatrix.x4.trans = 2 dim tiles
    static constexpr int kWarpPairs = (kDPairs + kDSplit - 1) / kDSplit;  // dim pairs of a warp
    static constexpr int kQTiles = kHalfRows / kMmaN;       // n8 query tiles of a warp's S^T
    static constexpr int kQSteps = kHalfRows / kMmaK;       // k16 query steps of a half
    static constexpr int kNSteps = kBlockN / kMmaK;         // k16 key steps of dQ = dS K

    /* dQ = dS K in items of 32 query rows x (up to) two dim pairs, dealt to the warps in turn. */
    static constexpr int kDqRowBlocks = kBlockM / kPairKeys;
    static_assert(kBlockM % kPairKeys == 0, "dQ items are 32 query rows");
    static constexpr int kDqChunks = (kDPairs + 1) / 2;
    static constexpr int kDqItems = kDqRowBlocks * kDqChunks;

    using RowTile = SwizzledTile<kBlockM, kHeadDim>;  // q, d_o: [block_m, d]
    using KVTile = SwizzledTile<kBlockN, kHeadDim>;   // k, v: [block_n, d]
    using DsTile = SwizzledTile<kBlockN, kBlockM>;    // dS^T, P^T: [block_n keys, block_m queries]
    static_assert(RowTile::kRowBytes == KVTile::kRowBytes,
                  "one cursor addresses both d-wide tiles");
    static_assert(RowTile::conflict_free() && KVTile::conflict_free() && DsTile::conflict_free(),
                  "swizzle must be conflict-free");
    static_assert(cursor_matches_layout<RowTile>() && cursor_matches_layout<KVTile>() &&
                      cursor_matches_layout<DsTile>(),
                  "fragment cursors must address the swizzled layout");

    /* Shared memory: [K | V | Q | dO | dS^T | P^T (kDSplit 2) | lse (log2 units) | delta |
     * f32 P^T stash (kStashP)]; K and V stay for the whole CTA, the rest is refilled per query
     * tile. */
    static constexpr int kKOffset = 0;
    static constexpr int kVOffset = kKOffset + KVTile::kBytes;
    static constexpr int kQOffset = kVOffset + KVTile::kBytes;
    static constexpr int kDoOffset = kQOffset + RowTile::kBytes;
    static constexpr int kDsOffset = kDoOffset + RowTile::kBytes;
    static constexpr int kPOffset = kDsOffset + DsTile::kBytes;
    static constexpr int kLseOffset = kPOffset + (kDSplit == 2 ? DsTile::kBytes : 0);
    static constexpr int kDeltaOffset = kLseOffset + kBlockM * 4;
    static constexpr int kStashOffset = kDeltaOffset + kBlockM * 4;
    static constexpr int kStashBytes = kStashP ? kBlockN * kBlockM * 4 : 0;
    static constexpr int kSmemBytes = kStashOffset + kStashBytes;
    /* kDSplit 1: the epilogue adds the pair's partial dK / dV through shared memory (f32, both
     * tensors of every pair at once), over the whole layout. */
    static constexpr int kReduceBytes = kDSplit == 1 ? 2 * kBlockN * kHeadDim * 4 : 0;
    static_assert(kReduceBytes <= kSmemBytes, "the epilogue reduction must fit the layout");
    static_assert(kSmemBytes <= FLASHMHA_MAX_DYNAMIC_SMEM_BYTES,
                  "tile does not fit sm_86/sm_89 shared memory");
    // The mask math forms values up to sq + sk + block (params.h headroom).
    static_assert(kBlockN <= FLASHMHA_SEQLEN_HEADROOM && kBlockM <= FLASHMHA_SEQLEN_HEADROOM,
                  "params.h sequence headroom");
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_BWD_TRAITS_CUH
