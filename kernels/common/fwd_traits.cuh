/*
 * fwd_traits.cuh: the one compile-time description of a forward-kernel instantiation (element
 * type, head dims, tile shape, warps) and everything derived from it: fragment counts, the
 * shared-memory layout (Q tile, double-buffered K and V tiles) and its size, which must equal the
 * smem_bytes column of kernels/kernel_table.h (static_assert at the entry point).
 *
 * Two head dims (issue 23): kHeadDim (d_qk) of Q and K, and kHeadDimV (d_v) of V and O, equal
 * unless a row of FLASHMHA_FWD_DV_KERNELS says otherwise (DeepSeek's 192 / 128). The K tile and
 * the k16 steps of Q K^T come from d_qk; the V tile, the n8 output tiles of P V and the O
 * staging from d_v <= d_qk (O is staged in the Q tile).
 */
#ifndef FLASHMHA_COMMON_FWD_TRAITS_CUH
#define FLASHMHA_COMMON_FWD_TRAITS_CUH

#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/smem_layout.cuh"
#include "common/load_path.cuh"  // LoadPath: CpAsync (smem_layout.cuh TileCopy) or RegisterStaged

namespace flashmha {

/* Largest dynamic shared memory per block on sm_86 / sm_89 (the smallest of our targets). */
constexpr int kMaxDynamicSmemBytes = FLASHMHA_MAX_DYNAMIC_SMEM_BYTES;  // params.h: 99 KiB

/* kKVStages_: shared-memory stages of K and V; 0 = the load path's own (cp.async 2, register-
 * staged 1). A cp.async row with 1 (issue 20's retile, FLASHMHA_FWD_TILE_KERNELS) single-buffers
 * K and V as FlashAttention-2 does: V[n] lands while S = Q K[n]^T runs and K[n+1] while
 * O += P V[n] runs (flash_fwd_cta.cuh), so the CTA needs Q + K + V only and two fit where one
 * double-buffered CTA did (A100: 2 x 64 KB of 164 KB). */
template <class Elem_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNumWarps_,
          LoadPath kLoadPath_ = LoadPath::CpAsync, int kHeadDimV_ = kHeadDim_, int kKVStages_ = 0>
struct FwdTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;    // d_qk: Q and K rows
    static constexpr int kHeadDimV = kHeadDimV_;  // d_v: V and O rows
    /* A d_v != d_qk row serves exactly its two compiled dims (no narrower head dims: their
     * columns would need a bound per tensor); equal dims serve every multiple of 8 up to d. */
    static constexpr bool kSplitDims = kHeadDimV != kHeadDim;
    static constexpr int kHeadDimStep = kSplitDims ? kHeadDim : kChunkElems;
    static constexpr int kBlockM = kBlockM_;  // query rows per CTA
    static constexpr int kBlockN = kBlockN_;  // keys per main-loop tile
    static constexpr int kNumWarps = kNumWarps_;
    static constexpr int kThreads = kNumWarps * kWarpSize;

    /* Each warp owns kRowBlocks m16 row blocks of Q (and of S, P, O): every K and V fragment a
     * warp reads from shared memory then feeds kRowBlocks mma (DESIGN.md section 2). */
    static constexpr int kRowsPerWarp = kBlockM / kNumWarps;
    static constexpr int kRowBlocks = kRowsPerWarp / kMmaM;
    static_assert(kBlockM == kNumWarps * kRowBlocks * kMmaM, "block_m must be num_warps x 16 x k");
    static_assert(kHeadDim % kMmaK == 0, "head_dim must be a multiple of 16 (k of Q.K^T)");
    static_assert(kHeadDimV % kMmaK == 0 && kHeadDimV <= kHeadDim,
                  "d_v: a multiple of 16 (n16 pairs of P.V), at most d_qk (O is staged in Q's tile)");
    static_assert(kBlockN % kMmaK == 0, "block_n must be a multiple of 16 (k of P.V)");

    static constexpr int kSTiles = kBlockN / kMmaN;    // n8 score tiles per warp
    static constexpr int kOTiles = kHeadDimV / kMmaN;  // n8 output tiles per warp
    static constexpr int kQKSteps = kHeadDim / kMmaK;  // k16 steps of Q.K^T
    static constexpr int kPVSteps = kBlockN / kMmaK;   // k16 steps of P.V
    static constexpr int kChunksPerK16 = kMmaK / kChunkElems;   // 16-byte chunks per k16 step
    static constexpr int kPairTilesN = kBlockN / (2 * kMmaN);   // one ldmatrix.x4 = 2 key tiles
    static constexpr int kPairTilesD = kHeadDimV / (2 * kMmaN);  // one ldmatrix.x4.trans = 2 dim tiles
    /* Whether the CTA carries a second copy of the main loop for head dims that leave whole
     * 16-column steps empty (issue 23; flash_fwd_cta.cuh). Registers: ptxas 13.5, 255 or fewer
     * with 0 spills on sm_80 .. sm_120 for each choice below.
     *  - kBoundedLoop, the d256 tile: steps bounded at run time by the real head dim, saving up
     *    to 7 of 16 (d160 / d192 / d224: 1.6 / 1.33 / 1.14x of the need before). Its Q K^T steps
     *    below kQKAlwaysSteps run unbounded: the tile serves only head dims above 128 (the d128
     *    row, kernels/kernel_table.h), which fill 9 steps. Bounding them too made ptxas spill
     *    8 B on sm_120 (24 B loaded per tile); bounding P V's the same way spilled 68-72 B on
     *    sm_80 and sm_120.
     *  - kShortLoop, the d64 and d128 tiles (cp.async and Turing's register-staged ones): the
     *    copy is one step short at compile time (no per-step test): d40 / d48 on d64 and
     *    d104 / d112 on d128 leave exactly the last step empty (1.45 / 1.14x of the need
     *    before). A run-time bound there spilled 4-24 B on sm_80 / sm_86. d80 / d96 serve
     *    d72 / d88, which fill every step. Neither on a d_v != d_qk row (kSplitDims), which
     *    serves exactly its two compiled dims. */
    static constexpr bool kBoundedLoop = kQKSteps > 8 && !kSplitDims;
    static constexpr int kQKAlwaysSteps = kBoundedLoop ? 128 / kMmaK + 1 : 0;
    static constexpr bool kShortLoop = (kHeadDim == 64 || kHeadDim == 128) && !kSplitDims;

    /* Q A-fragments (4 registers per k16 step and row block) stay in registers for the whole
     * main loop only while the accumulator-resident registers per thread (per row block O: d / 2,
     * S: block_n / 2, Q: d / 4) stay within kResidentRegBudget; otherwise each k-step re-reads
     * its Q fragments with ldmatrix. The budget is measured (ptxas 13.5, sm_80..sm_90, 0 spills;
     * see the table in kernels/kernel_table.h). */
    static constexpr LoadPath kLoadPath = kLoadPath_;
    static constexpr bool kRegisterStaged = kLoadPath == LoadPath::RegisterStaged;
    using QTile = SwizzledTile<kBlockM, kHeadDim>;   // q: [block_m, d_qk]
    using KVTile = SwizzledTile<kBlockN, kHeadDim>;  // k: [block_n, d_qk] (and v when d_v = d_qk)
    using VTile = SwizzledTile<kBlockN, kHeadDimV>;  // v: [block_n, d_v]
    using OTile = SwizzledTile<kBlockM, kHeadDimV>;  // o staging in Q's region: [block_m, d_v]
    /* Register-staged loads hold one K or V tile per thread in flight (4 registers per 16-byte
     * chunk; K during S = Q K^T, V during O += P V); they count against the same budget. */
    static_assert(!(kRegisterStaged && kSplitDims), "Turing rows have d_v = d_qk");
    static constexpr int kStagedRegs =
        kRegisterStaged ? ((KVTile::kChunks + kThreads - 1) / kThreads) * 4 : 0;
    static constexpr int kResidentRegs =
        kRowBlocks * (kOTiles * kCRegs + kSTiles * kCRegs + kQKSteps * kARegs) + kStagedRegs;
    static constexpr int kResidentRegBudget = 208;
    static constexpr bool kQInRegisters = kResidentRegs <= kResidentRegBudget;

    /* Shared memory: [Q | K stage 0 (| K stage 1) | V stage 0 (| V stage 1)]; O is staged
     * through the Q tile in the epilogue (same shape). cp.async double-buffers in shared
     * memory unless the row asks for one stage (kKVStages_); the register-staged path buffers
     * the next tile in registers instead. */
    static constexpr int kStages = kKVStages_ != 0 ? kKVStages_ : (kRegisterStaged ? 1 : 2);
    static_assert(kStages == 1 || (kStages == 2 && !kRegisterStaged), "K / V stages: 1, or 2 with cp.async");
    static_assert(QTile::conflict_free() && KVTile::conflict_free() && VTile::conflict_free() &&
                      OTile::conflict_free(),
                  "swizzle must be conflict-free");
    static_assert(cursor_matches_layout<QTile>() && cursor_matches_layout<KVTile>() &&
                      cursor_matches_layout<VTile>(),
                  "fragment cursors must address the swizzled layout");
    static_assert(OTile::kBytes <= QTile::kBytes, "O is staged in the Q tile");
    static constexpr int kQOffset = 0;
    static constexpr int kKOffset = kQOffset + QTile::kBytes;
    static constexpr int kVOffset = kKOffset + kStages * KVTile::kBytes;
    static constexpr int kSmemBytes = kVOffset + kStages * VTile::kBytes;
    static_assert(kSmemBytes <= kMaxDynamicSmemBytes, "tile does not fit sm_86/sm_89 shared memory");
    static_assert(!kRegisterStaged || kSmemBytes <= FLASHMHA_SM75_MAX_DYNAMIC_SMEM_BYTES,
                  "Turing tile does not fit sm_75 shared memory");
    // mask.cuh forms values up to sq + sk + block_n in int32; validation leaves the params.h
    // headroom above sq + sk.
    static_assert(kBlockN <= FLASHMHA_SEQLEN_HEADROOM, "params.h sequence headroom");
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_FWD_TRAITS_CUH
