/*
 * fwd_traits_sm90.cuh: the compile-time description of one Hopper forward instantiation
 * (element type, head dim, tile shape) and everything derived from it: warpgroup roles, the
 * shared-memory layout of TMA boxes and mbarriers, fragment counts. Its smem size must equal the
 * smem_bytes column of FLASHMHA_FWD_KERNELS_SM90 (static_assert at the entry point).
 * kHeadDim is d_qk (Q and K boxes, the k16 steps of S = Q K^T); kHeadDimV is d_v (V boxes, the N
 * of O += P V, O), equal unless a FLASHMHA_FWD_DV_KERNELS_SM90 row says otherwise (issue 23).
 */
#ifndef FLASHMHA_SM90_FWD_TRAITS_SM90_CUH
#define FLASHMHA_SM90_FWD_TRAITS_SM90_CUH

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

namespace flashmha {

template <class Elem_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNumWarps_,
          int kHeadDimV_ = kHeadDim_>
struct FwdTraitsSm90 {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;    // d_qk
    static constexpr int kHeadDimV = kHeadDimV_;  // d_v
    /* A d_v != d_qk row serves exactly its pair (FwdTraits::kHeadDimStep, fwd_traits.cuh). */
    static constexpr bool kSplitDims = kHeadDimV != kHeadDim;
    static constexpr int kHeadDimStep = kSplitDims ? kHeadDim : kChunkElems;
    static constexpr int kBlockM = kBlockM_;  // query rows per CTA: 64 per consumer warpgroup
    static constexpr int kBlockN = kBlockN_;  // keys per K / V tile (the N of S = Q K^T)
    static constexpr int kNumWarps = kNumWarps_;
    static constexpr int kThreads = kNumWarps * kWarpSize;

    /* Warpgroup 0 produces (one thread issues every TMA load); warpgroups 1.. consume, each
     * computing 64 query rows with wgmma. */
    static constexpr int kConsumerWarpgroups = kBlockM / kWgmmaM;
    static constexpr int kConsumerThreads = kConsumerWarpgroups * kWarpgroupThreads;
    static_assert(kBlockM == kConsumerWarpgroups * kWgmmaM, "block_m must be 64 per consumer warpgroup");
    static_assert(kNumWarps == (1 + kConsumerWarpgroups) * kWarpgroupWarps,
                  "one producer warpgroup plus the consumers");
    /* setmaxnreg budgets with two consumer warpgroups (384 threads launch at 168 registers):
     * the producer keeps the minimum, the consumers take the rest of the 64K-register file (one
     * CTA per SM). With one consumer (256 threads, 255 registers each from the launch) there is
     * nothing to move. ptxas 13.5 still allocates the whole kernel within the launch bound, so
     * the consumer code must fit 168 registers at 384 threads: d256 (O alone is 128 f32 per
     * thread) spills 20 bytes at 128 x 64 / 12 warps and runs 64 x 64 / 8 warps instead. */
    static constexpr bool kReallocRegs = kConsumerWarpgroups > 1;
    static constexpr int kProducerRegs = 24;
    static constexpr int kConsumerRegs = 240;
    static_assert(!kReallocRegs ||
                      kWarpgroupThreads * (kProducerRegs + kConsumerWarpgroups * kConsumerRegs) <= 65536,
                  "register budgets exceed the SM's register file");

    static_assert(kHeadDim % kColsPerSwizzleRow == 0 && kHeadDimV % kColsPerSwizzleRow == 0,
                  "head dims must be whole 64-column TMA boxes");
    static_assert(kBlockN % kWgmmaK == 0 && kBlockN <= 256, "block_n: a legal wgmma N, whole k16 steps");
    static_assert(kBlockM <= 256 && kBlockN <= 256, "TMA box dimensions are at most 256");

    static constexpr int kSTiles = kBlockN / kMmaN;    // n8 score tiles per warp
    static constexpr int kOTiles = kHeadDimV / kMmaN;  // n8 output tiles per warp
    static constexpr int kQKSteps = kHeadDim / kWgmmaK;  // k16 steps of S = Q K^T
    static constexpr int kPVSteps = kBlockN / kWgmmaK;   // k16 steps of O += P V
    static constexpr int kKStepsPerBox = kSwizzleRowBytes / kKStepBytes;  // 4

    /* Copies of the consumer main loop for head dims below the compiled one (issue 23: no
     * wgmma on all-zero columns). Copy c has O += P V at N = kNarrowestLoop + 16 c (any multiple
     * of 8 is a legal wgmma N; V's 64-column boxes are addressed through the descriptor's LBO
     * whatever N is) and S = Q K^T over N / 16 k16 steps; a CTA runs the narrowest copy at
     * least as wide as its real head dim (one uniform branch per CTA), so both GEMMs stop at
     * the real width rounded up to 16. The narrowest copy follows the dims a row serves on
     * sm_90 (src/ops/forward/validate.rs forward_kernel_for: the Ampere d32 / d96 rows take the
     * dims below 40 / 104): d64 48 / 64, d128 112 / 128, d256 144 .. 256 (8 copies). The
     * widths are compile-time: a run-time bound on a k16 step (as the Ampere d256 tile's,
     * codegen.cuh step_runs) put a wgmma on a path ptxas cannot prove uniform, and ptxas 13.5
     * then serialised every wgmma of the kernel (C7519). The full-width copy is the loop as it
     * was (its counters unchanged). A d_v != d_qk row serves exactly its pair: one copy. */
    static constexpr int kNarrowestLoop = kSplitDims        ? kHeadDimV
                                          : kHeadDim == 64  ? 48
                                          : kHeadDim == 128 ? 112
                                          : kHeadDim == 256 ? 144
                                                            : kHeadDim;
    static constexpr int kLoopCopies = (kHeadDimV - kNarrowestLoop) / kWgmmaK + 1;
    static_assert(kNarrowestLoop % kWgmmaK == 0 && kHeadDimV % kWgmmaK == 0,
                  "loop copies tile the widths up to d_v in k16 steps");
    template <int kCopy>
    struct LoopWidth {
        static constexpr int kN = kNarrowestLoop + kCopy * kWgmmaK;  // N of O += P V
        static constexpr int kOTiles = kN / kMmaN;                   // n8 tiles of O it writes
        static constexpr int kQKSteps = kSplitDims ? FwdTraitsSm90::kQKSteps : kN / kWgmmaK;
    };
    /* The copy a CTA with real head dim `d` (at most kHeadDim) runs. */
    __device__ static int loop_copy(int d) {
        return kSplitDims || d <= kNarrowestLoop ? 0 : (d - kNarrowestLoop + kWgmmaK - 1) / kWgmmaK;
    }

    /* Shared memory, every tile in 64-column TMA boxes of 128-byte swizzled rows:
     *   q: [d_qk / 64 boxes][block_m rows][128 B]
     *   k (per stage): [d_qk / 64 boxes][block_n rows][128 B]
     *   v (per stage): [d_v / 64 boxes][block_n rows][128 B]
     *   then the mbarriers: q_full, k_full[stages], v_full[stages], kv_empty[stages]. */
    static constexpr int kStages = 2;
    static constexpr int kBoxes = kHeadDim / kColsPerSwizzleRow;    // of Q and K rows
    static constexpr int kBoxesV = kHeadDimV / kColsPerSwizzleRow;  // of V rows
    static constexpr int kQBoxBytes = kBlockM * kSwizzleRowBytes;
    static constexpr int kKVBoxBytes = kBlockN * kSwizzleRowBytes;
    static constexpr int kQBytes = kBoxes * kQBoxBytes;
    static constexpr int kKVTileBytes = kBoxes * kKVBoxBytes;   // one K tile (and V when d_v = d_qk)
    static constexpr int kVTileBytes = kBoxesV * kKVBoxBytes;   // one V tile
    static constexpr int kQOffset = 0;
    static constexpr int kKOffset = kQOffset + kQBytes;
    static constexpr int kVOffset = kKOffset + kStages * kKVTileBytes;
    static constexpr int kBarOffset = kVOffset + kStages * kVTileBytes;
    static constexpr int kNumBarriers = 1 + 3 * kStages;
    static constexpr int kBarBlockBytes = 128;
    static_assert(kNumBarriers * kMbarrierBytes <= kBarBlockBytes, "mbarrier block too small");
    static constexpr int kSmemBytes = kBarOffset + kBarBlockBytes;
    static_assert(kQBoxBytes % kSwizzleAtomBytes == 0 && kKVBoxBytes % kSwizzleAtomBytes == 0,
                  "every TMA box starts on a 1024-byte swizzle atom");
    static_assert(kSmemBytes <= FLASHMHA_SM90_MAX_DYNAMIC_SMEM_BYTES, "tile does not fit sm_90 shared memory");
    static_assert(kBlockN <= FLASHMHA_SEQLEN_HEADROOM, "params.h sequence headroom");

    __device__ static uint32_t q_full(uint32_t base) { return base + kBarOffset; }
    __device__ static uint32_t k_full(uint32_t base, int s) {
        return base + kBarOffset + (1 + s) * kMbarrierBytes;
    }
    __device__ static uint32_t v_full(uint32_t base, int s) {
        return base + kBarOffset + (1 + kStages + s) * kMbarrierBytes;
    }
    __device__ static uint32_t kv_empty(uint32_t base, int s) {
        return base + kBarOffset + (1 + 2 * kStages + s) * kMbarrierBytes;
    }
};

}  // namespace flashmha

#endif  // FLASHMHA_SM90_FWD_TRAITS_SM90_CUH
