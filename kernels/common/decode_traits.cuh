/*
 * decode_traits.cuh: the compile-time shape of one paged-decode instantiation and the small
 * helpers only decode uses: the padded shared-memory row layout, the per-warp K/V block copy
 * from pages (block-table lookup, bounds check, cp.async), and the page-size divisor.
 *
 * Work split (kernels/sm80/flash_decode.cu): a CTA owns one (split, KV head, 16-row tile of packed
 * query rows, batch item). Every warp holds the same 16 packed rows (rows = group x sq_new, GQA
 * packing) in registers and streams its OWN blocks of 16 keys (warp w takes blocks w, w + W, ...)
 * through its own double-buffered shared-memory region; each cached key passes through shared
 * memory once per KV head. Warps only meet in the epilogue, which merges their (O, LSE) states.
 *
 * Shared-memory rows are padded by one 16-byte chunk (pitch = d * 2 + 16 bytes) instead of
 * swizzled: for every compiled head dim (32, 64, 80, 96, 128, 256) the 8 row addresses of an
 * ldmatrix 8x8 matrix then fall in 8 distinct 16-byte bank groups (pitch / 16 is odd, so
 * row * pitch / 16 mod 8 runs over all 8 groups; checked by static_assert below), and the copy
 * needs no XOR on either side. Decode reads each K/V row once, so the 6% larger footprint is
 * cheaper than swizzle arithmetic on the copy path.
 */
#ifndef FLASHMHA_COMMON_DECODE_TRAITS_CUH
#define FLASHMHA_COMMON_DECODE_TRAITS_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/fp8.cuh"
#include "common/load_path.cuh"

namespace flashmha {

constexpr int kDecodeChunkBytes = 16;                           // one cp.async / ldmatrix row
constexpr int kDecodeChunkElems = kDecodeChunkBytes / kElemBytes;
constexpr int kDecodeBankGroups = 8;                            // 32 banks x 4 B / 16 B
constexpr int kDecodeRowsPerBlock = kMmaM;  // packed query rows of one m16 row block
constexpr int kDecodeKeysPerBlock = kMmaK;  // keys per warp block: one k16 step of P.V
/* Lanes that copy one key row: 2 (lanes r and r + 16 copy key row r, chunks 2j and 2j + 1), so
 * the 32 lanes of a warp cover the 16 keys of a block, the two lanes of a row fill one full
 * 32-byte sector per instruction, and each quarter-warp (8 lanes, one shared-memory phase of
 * 16-byte stores) writes 8 different rows at the same chunk: 8 distinct bank groups with the
 * odd-chunk pitch below. (Lane pairs (2r, 2r + 1) measured 12 wavefronts per key against the
 * ideal 8: each phase hit 4 rows x 2 chunks with 2-way conflicts.) */
constexpr int kCopyLanesPerRow = kWarpSize / kDecodeKeysPerBlock;
static_assert(kCopyLanesPerRow == 2, "lanes r and r + 16 copy key row r");

/* Key row (0..15) of the block that `lane` copies, and which chunk of each pair it takes. */
__device__ __forceinline__ int copy_row_of_lane(int lane) { return lane % kDecodeKeysPerBlock; }
__device__ __forceinline__ int copy_half_of_lane(int lane) { return lane / kDecodeKeysPerBlock; }
/* The lane of the pair that loads the block-table entry for both (half 0). */
__device__ __forceinline__ int copy_pair_leader(int lane) { return copy_row_of_lane(lane); }

template <int kPitch>
__host__ __device__ constexpr bool padded_rows_conflict_free() {
    for (int r = 0; r < kDecodeBankGroups; ++r)
        for (int s = r + 1; s < kDecodeBankGroups; ++s)
            if ((r * kPitch / kDecodeChunkBytes) % kDecodeBankGroups ==
                (s * kPitch / kDecodeChunkBytes) % kDecodeBankGroups)
                return false;
    return true;
}

/* Bytes per cached K / V element: q's 16-bit dtype, or an FP8 code (format chosen at run time by
 * FlashDecodeParams.kv_format, dequantised by kernels/common/fp8.cuh). */
constexpr int kKvBytesSame = kElemBytes;
constexpr int kKvBytesFp8 = 1;

/* FP8 K / V through ldmatrix .b16: an 8x8 .b16 matrix of [key][byte] rows covers 8 keys x 16
 * codes, so one .x4 covers 16 keys x 32 dims (two 16-byte chunks). With the pairing of
 * fp8.cuh, lane (groupID, tig) of a K matrix (plain) holds codes 4 tig .. 4 tig + 3 of its
 * chunk: (4 tig, 4 tig + 2) become the B register of k rows 2 tig, 2 tig + 1 and
 * (4 tig + 1, 4 tig + 3) that of k rows 2 tig + 8, 2 tig + 9. So mma k column c of a k16 step
 * is dim 2c (c < 8) or 2(c - 8) + 1 (c >= 8): Q is staged with each 16-dim group's even dims
 * first, then its odd dims (the dot product only needs Q and K in the same order). */
constexpr int kFp8DimsPerLdsmX4 = 2 * kDecodeChunkBytes;
/* ... i.e. two k16 steps of Q.K^T (K) or two 16-dim output chunks (V) per ldmatrix.x4. */
constexpr int kFp8ChunksPerLdsmX4 = kFp8DimsPerLdsmX4 / kMmaK;
__host__ __device__ constexpr int fp8_q_dim_of_k_col(int c) {
    return c < kMmaKHalf ? 2 * c : 2 * (c - kMmaKHalf) + 1;
}
/* V (ldmatrix .trans): lane (groupID, tig) gets bytes (key 2 tig, dims 2 groupID, 2 groupID + 1)
 * and (key 2 tig + 1, same dims): the even-dim pair and the odd-dim pair are two n8 output tiles.
 * Output tile 2 cc + parity of 16-dim chunk cc holds, in C column n, dim 16 cc + 2 n + parity. */
__host__ __device__ constexpr int fp8_o_dim(int tile, int col) {
    return (tile / 2) * kMmaK + 2 * col + (tile % 2);
}

/* f16 / bf16 halves of two .b32 (8 elements each) -> the same 16 elements with the even ones
 * first (fp8_q_dim_of_k_col): PTX ISA prmt selectors picking the low / high half of each. */
constexpr uint32_t kPrmtLowHalves = 0x5410u;   // (a.lo, b.lo)
constexpr uint32_t kPrmtHighHalves = 0x7632u;  // (a.hi, b.hi)
__device__ __forceinline__ void deinterleave_halves(const uint4 &a, const uint4 &b, uint4 &even,
                                                    uint4 &odd) {
    even = make_uint4(prmt(a.x, a.y, kPrmtLowHalves), prmt(a.z, a.w, kPrmtLowHalves),
                      prmt(b.x, b.y, kPrmtLowHalves), prmt(b.z, b.w, kPrmtLowHalves));
    odd = make_uint4(prmt(a.x, a.y, kPrmtHighHalves), prmt(a.z, a.w, kPrmtHighHalves),
                     prmt(b.x, b.y, kPrmtHighHalves), prmt(b.z, b.w, kPrmtHighHalves));
}

/* kHeadDim_ / kHeadDimV_: d_qk of Q and K rows, d_v of V and O rows (issue 23; equal unless a
 * FLASHMHA_DECODE_DV_KERNELS row says otherwise): K blocks and the k16 steps of Q K^T from d_qk;
 * V blocks (their own padded pitch), the n16 pairs of P V, O and its staging from d_v. Such a
 * row serves exactly its pair, over 16-bit pages.
 * kTileRows_: packed query rows per CTA, 16 (one m16 row block) or 32 (two row blocks per warp:
 * GQA group x new tokens up to 32 then reads each K/V row once per KV head instead of twice;
 * every K / V fragment loaded from shared memory feeds the mma of both blocks).
 * kLoadPath_: CpAsync (sm_80+, two stages per warp) or RegisterStaged (sm_75, one stage per warp,
 * the next block staged in registers; f16 16-bit pages only, the Turing table's rows). */
template <class Elem_, int kHeadDim_, int kNumWarps_, int kKvBytes_ = kKvBytesSame,
          int kTileRows_ = kDecodeRowsPerBlock, LoadPath kLoadPath_ = LoadPath::CpAsync,
          int kHeadDimV_ = kHeadDim_>
struct DecodeTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;    // d_qk
    static constexpr int kHeadDimV = kHeadDimV_;  // d_v
    static constexpr bool kSplitDims = kHeadDimV != kHeadDim;
    static constexpr int kNumWarps = kNumWarps_;
    static constexpr int kKvBytes = kKvBytes_;
    static constexpr bool kKvFp8 = kKvBytes == kKvBytesFp8;
    static constexpr int kTileRows = kTileRows_;
    static constexpr int kRowBlocks = kTileRows / kDecodeRowsPerBlock;
    static_assert(kTileRows % kDecodeRowsPerBlock == 0 && kRowBlocks <= 2, "16 or 32 rows");
    static constexpr int kThreads = kNumWarps * kWarpSize;
    static constexpr LoadPath kLoadPath = kLoadPath_;
    static constexpr bool kRegisterStaged = kLoadPath == LoadPath::RegisterStaged;
    static_assert(!kRegisterStaged || (!kKvFp8 && !Elem::kIsBf16),
                  "Turing decode is f16 with 16-bit pages (no bf16 mma on sm_75)");
    static_assert(kHeadDim % kMmaK == 0, "head_dim must be a multiple of 16 (k of Q.K^T)");
    static_assert(kHeadDimV % kMmaK == 0, "head_dim_v must be a multiple of 16 (n16 pairs of P.V)");
    static_assert(!kSplitDims || (!kKvFp8 && !kRegisterStaged),
                  "d_v != d_qk rows: 16-bit pages, cp.async (sm_80+)");
    static_assert(!kKvFp8 || kHeadDim % kFp8DimsPerLdsmX4 == 0,
                  "FP8 K / V rows are read 32 codes per ldmatrix.x4");

    static constexpr int kQChunks = kHeadDim / kDecodeChunkElems;   // 16-byte chunks of a Q row
    static constexpr int kChunks = kHeadDim * kKvBytes / kDecodeChunkBytes;  // ... of a K/V row
    static constexpr int kChunksPerLane = kChunks / kCopyLanesPerRow;
    static constexpr int kChunksV = kHeadDimV * kKvBytes / kDecodeChunkBytes;  // ... of a V row
    static constexpr int kChunksPerLaneV = kChunksV / kCopyLanesPerRow;
    static_assert(kChunksV % kCopyLanesPerRow == 0, "a V row splits evenly over its lane pair");
    static constexpr int kFp8LdsmSteps = kHeadDim / kFp8DimsPerLdsmX4;  // ldmatrix.x4 per K / V
    static_assert(kChunks % kCopyLanesPerRow == 0, "a row splits evenly over its lane pair");
    static constexpr int kSTiles = kDecodeKeysPerBlock / kMmaN;     // n8 score tiles per block
    static constexpr int kOTiles = kHeadDimV / kMmaN;               // n8 output tiles
    static constexpr int kQKSteps = kHeadDim / kMmaK;               // k16 steps of Q.K^T
    static constexpr int kPairTilesD = kHeadDimV / (2 * kMmaN);     // ldmatrix.x4.trans per P.V
    /* Q A-fragments (d / 4 registers) stay in registers beside O (d / 2) up to d128; at d256
     * that is 192 accumulator-resident registers and ptxas (13.5, sm_80) spills at 255, so d256
     * re-reads each k-step's Q fragment from the Q tile (one ldmatrix.x4 per k16 step). */
    static constexpr bool kQInRegisters = kHeadDim * kRowBlocks <= 128;
    /* The K / V fragments of the next k16 step / n16 pair are loaded before the current
     * step's mma (flash_decode_cta.cuh), hiding each ldmatrix's latency behind an mma, up to
     * d128; at d256 (255 registers) the 4 more registers spill. */
    static constexpr bool kFragmentsAhead = kHeadDim <= 128;

    /* Padded rows: pitch / 16 odd => 8 consecutive rows hit 8 distinct bank groups. */
    static constexpr int kQPitch = kHeadDim * kElemBytes + kDecodeChunkBytes;
    static constexpr int kPitch = kHeadDim * kKvBytes + kDecodeChunkBytes;    // K rows
    static constexpr int kPitchV = kHeadDimV * kKvBytes + kDecodeChunkBytes;  // V rows
    static_assert((kPitch / kDecodeChunkBytes) % 2 == 1, "pitch must be an odd number of chunks");
    static_assert((kPitchV / kDecodeChunkBytes) % 2 == 1, "pitch must be an odd number of chunks");
    static_assert((kQPitch / kDecodeChunkBytes) % 2 == 1, "pitch must be an odd number of chunks");
    static constexpr int kBlockBytes = kDecodeKeysPerBlock * kPitch;    // k: [16 keys, d_qk]
    static constexpr int kBlockBytesV = kDecodeKeysPerBlock * kPitchV;  // v: [16 keys, d_v]
    /* cp.async double-buffers in shared memory; the register-staged path buffers the next
     * block in registers instead (sm_75 has 64 KiB of shared memory per CTA, not 99). */
    static constexpr int kStages = kRegisterStaged ? 1 : 2;
    /* Per warp: [K stage 0 (| K stage 1) | V stage 0 (| V stage 1)], at least the O staging
     * below (one stage of 32-row tiles is smaller than their O). */
    static constexpr int kKvStageBytes = kStages * (kBlockBytes + kBlockBytesV);
    static constexpr int kQBytes = kTileRows * kQPitch;              // q: [tile rows, d]
    /* Epilogue: each warp stages its normalised O (f32, [16, d + 8]: the +8 floats make the
     * 8 rows of a float2 C-fragment store hit distinct banks pairwise) in its own region, and
     * its row LSE / entropy in small arrays after all regions. */
    static constexpr int kOStagePitchFloats = kHeadDimV + 8;
    static constexpr int kOStageBytes = kTileRows * kOStagePitchFloats * 4;
    static constexpr int kWarpRegionBytes =
        kKvStageBytes > kOStageBytes ? kKvStageBytes : kOStageBytes;
    static_assert(kRegisterStaged || kOStageBytes <= kKvStageBytes,
                  "Ampere: O staging fits the warp's K/V region (the table's smem_bytes)");
    static constexpr int kQOffset = 0;
    static constexpr int kRegionOffset = kQOffset + kQBytes;
    static constexpr int kStatsOffset = kRegionOffset + kNumWarps * kWarpRegionBytes;
    static constexpr int kStatsBytes = 2 * kNumWarps * kTileRows * 4;  // lse, entropy per warp
    static constexpr int kSmemBytes = kStatsOffset + kStatsBytes;
    static_assert(kPitch % kDecodeChunkBytes == 0, "16-byte aligned rows");
    static_assert(padded_rows_conflict_free<kPitch>(), "ldmatrix rows must be conflict-free");
    static_assert(padded_rows_conflict_free<kPitchV>(), "ldmatrix rows must be conflict-free");
    static_assert(padded_rows_conflict_free<kQPitch>(), "ldmatrix rows must be conflict-free");
    static_assert(kSmemBytes <= FLASHMHA_MAX_DYNAMIC_SMEM_BYTES,
                  "fits sm_86 / sm_89 dynamic shared memory");
    static_assert(!kRegisterStaged || kSmemBytes <= FLASHMHA_SM75_MAX_DYNAMIC_SMEM_BYTES,
                  "Turing tile does not fit sm_75 shared memory");

    __host__ __device__ static constexpr int k_block(int stage) {
        return kRegionOffset + stage * kBlockBytes;
    }
    __host__ __device__ static constexpr int v_block(int stage) {
        return kRegionOffset + kStages * kBlockBytes + stage * kBlockBytesV;
    }
};

/* cp.async.cg 16 bytes, with immediates on both addresses (PTX ISA cp.async: [reg+imm] is a
 * valid address for either space); src_bytes 0 zero-fills and reads nothing. */
template <int kSmemImm, int kGmemImm>
__device__ __forceinline__ void cp_async_16_imm(uint32_t smem, uint64_t gmem, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0+%3], [%1+%4], 16, %2;\n" ::"r"(smem), "l"(gmem),
                 "r"(src_bytes), "n"(kSmemImm), "n"(kGmemImm)
                 : "memory");
}

/* PTX ISA "bar.warp.sync": orders the shared-memory accesses of the warp's lanes (cp.async data
 * waited for by one lane is then visible to ldmatrix of all lanes). */
constexpr unsigned kDecodeWarpMask = 0xffffffffu;
__device__ __forceinline__ void warp_sync() { __syncwarp(kDecodeWarpMask); }

/* key / page_size by the host-computed multiplier (exact for 0 <= key < 2^30, see params.h). */
__device__ __forceinline__ int page_of_key(const FlashDecodeParams &p, int key) {
    return static_cast<int>((static_cast<uint64_t>(key) * p.page_div_magic) >> p.page_div_shift);
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_DECODE_TRAITS_CUH
