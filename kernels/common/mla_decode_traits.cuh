/*
 * mla_decode_traits.cuh: the compile-time tile of the MLA decode (issue 23 item 3; CTA body
 * kernels/common/flash_mla_decode_cta.cuh, entries kernels/sm80/flash_mla_decode.cu).
 *
 * Why a tile of its own: the paged decode (decode_traits.cuh) gives each warp whole rows of O
 * and its own key blocks. An MLA row has d_v = 512: one m16 row block of O in f32 C fragments is
 * 512 / 8 x 4 = 256 registers per thread, more than a thread has. So here the 512 output dims are
 * split across warps, and the warps of one row block share each key block instead:
 *
 *   CTA = (split, tile of kTileRows packed query rows, batch item); packed row r = query
 *   i x hq + head (all hq heads of the one latent KV head, so a CTA reads each cached row of its
 *   split once for kTileRows rows). Warp w = (row block rb = w / kSlices, dim slice
 *   s = w % kSlices). For each 16-key block, staged once in shared memory for the whole CTA:
 *     - S partial: warp (rb, s) computes Q K^T over dims [s x 144, s x 144 + 144) of the 576
 *       (9 k16 steps), for its 16 rows x 16 keys;
 *     - exchange: the 4 partials of a row block go through shared memory and every warp of the
 *       row block sums them in the same order (slice 0 + 1 + 2 + 3), so all 4 hold bit-identical
 *       S, run the same masks and online softmax, and agree on P, m and l without more traffic;
 *     - O += P V over dims [s x 128, s x 128 + 128) of the first 512 dims of the SAME staged
 *       rows (V is never copied or stored apart from K).
 *   Tensor work equals the unsplit product: 576 + 512 dims per (row, key), no duplicated mma.
 *
 * Register budget per thread (one warp's view): O 16 x 128 f32 = 16 n8 tiles x 4 = 64; S 2 n8
 * tiles = 8; softmax state 6; per-row masks / heads 12; Q is NOT held in registers (its 9 k-step
 * fragments would add 36): each k-step re-reads it with one ldmatrix.x4 from the Q tile, the
 * same ldmatrix count as the K fragment it pairs with. ptxas 13.5 figures for each arch are in
 * the build's ptxas report (`flashmha info`) and checked to be 0 spill bytes by
 * src/ops/mla_decode/kernels.rs.
 *
 * FP8 pages (kv_bytes 1): each thread loads its 16-code chunks with ld.global.nc, dequantises
 * them (kernels/common/fp8.cuh, the paged decode's scale convention: the K scale joins the
 * softmax scale, the V scale - the same single scale here - multiplies O in the epilogue) and
 * stores 16-bit elements into the same staged layout, so the compute path is the 16-bit one.
 *
 * Shared memory (bytes): Q tile kTileRows x (2 x 576 + 16) = 37376; K/V blocks 2 stages x 16
 * keys x (2 x 576 + 16) = 37376 (16-bit elements for either page type); S exchange kNumWarps x 8 floats x 32 lanes x 4 =
 * 8192; total 82944 <= 101376 (sm_86 / sm_89 dynamic limit). Rows are padded by one 16-byte
 * chunk (pitch / 16 odd: conflict-free ldmatrix, decode_traits.cuh's padded_rows_conflict_free).
 */
#ifndef FLASHMHA_COMMON_MLA_DECODE_TRAITS_CUH
#define FLASHMHA_COMMON_MLA_DECODE_TRAITS_CUH

#include "params.h"
#include "common/decode_traits.cuh"

namespace flashmha {

template <class Elem_, int kTileRows_, int kNumWarps_, int kKvBytes_>
struct MlaDecodeTraits {
    using Elem = Elem_;
    static constexpr int kDQk = FLASHMHA_MLA_D_QK;
    static constexpr int kDV = FLASHMHA_MLA_D_V;
    static constexpr int kTileRows = kTileRows_;
    static constexpr int kNumWarps = kNumWarps_;
    static constexpr int kThreads = kNumWarps * kWarpSize;
    static constexpr int kKvBytes = kKvBytes_;
    static constexpr bool kKvFp8 = kKvBytes == kKvBytesFp8;
    static_assert(kKvBytes == kKvBytesSame || kKvFp8, "16-bit or FP8 pages");
    static constexpr int kRowBlocks = kTileRows / kDecodeRowsPerBlock;
    static_assert(kTileRows % kDecodeRowsPerBlock == 0, "whole m16 row blocks");
    static constexpr int kSlices = kNumWarps / kRowBlocks;  // warps sharing one row block
    static_assert(kSlices * kRowBlocks == kNumWarps, "every row block has the same slices");
    static constexpr int kKeys = kDecodeKeysPerBlock;       // keys per block: one k16 of P V

    // Q K^T: k16 steps per slice; P V: n8 output tiles per slice.
    static constexpr int kQKSteps = kDQk / kMmaK / kSlices;
    static_assert(kQKSteps * kMmaK * kSlices == kDQk, "the 576 dims split evenly");
    static constexpr int kSliceDV = kDV / kSlices;
    static_assert(kSliceDV % (2 * kMmaN) == 0, "each slice of O is whole ldmatrix.x4.trans");
    static constexpr int kOTiles = kSliceDV / kMmaN;
    static constexpr int kPairTiles = kSliceDV / (2 * kMmaN);
    static constexpr int kSTiles = kKeys / kMmaN;

    static constexpr int kQPitch = kDQk * kElemBytes + kDecodeChunkBytes;
    /* Staged rows are 16-bit for both page types: FP8 codes are dequantised on their way in. */
    static constexpr int kPitch = kDQk * kElemBytes + kDecodeChunkBytes;
    static_assert(padded_rows_conflict_free<kQPitch>(), "ldmatrix rows must be conflict-free");
    static_assert(padded_rows_conflict_free<kPitch>(), "ldmatrix rows must be conflict-free");
    static constexpr int kChunks = kDQk * kKvBytes / kDecodeChunkBytes;  // per cached row (source)
    /* 16-byte shared chunks one source chunk fills: 1, or 2 for 16 FP8 codes -> 16 elements. */
    static constexpr int kStagedPerSource = kKvFp8 ? 2 : 1;
    static constexpr int kQChunks = kDQk / kDecodeChunkElems;            // per Q row
    /* Copy of one block: thread t copies row t % 16, chunks t / 16 + 16 j (adjacent chunk pairs
     * per warp fill 32-byte sectors; each quarter-warp stores 8 rows at one chunk). */
    static constexpr int kCopyParts = kThreads / kKeys;
    static_assert(kThreads % kKeys == 0, "whole rows per copy pass");
    static constexpr int kCopySteps = (kChunks + kCopyParts - 1) / kCopyParts;

    static constexpr int kStages = 2;
    static constexpr int kBlockBytes = kKeys * kPitch;
    static constexpr int kQOffset = 0;
    static constexpr int kQBytes = kTileRows * kQPitch;
    static constexpr int kKvOffset = kQOffset + kQBytes;
    static constexpr int kXchOffset = kKvOffset + kStages * kBlockBytes;
    /* S exchange: [warp][S register][lane] f32, each lane's fragment where the other slices of
     * its row block read it (same lane, same register: identical layout). */
    static constexpr int kSRegs = kSTiles * kCRegs;
    static constexpr int kXchBytes = kNumWarps * kSRegs * kWarpSize * 4;
    static constexpr int kSmemBytes = kXchOffset + kXchBytes;
    static_assert(kSmemBytes <= FLASHMHA_MAX_DYNAMIC_SMEM_BYTES,
                  "fits sm_86 / sm_89 dynamic shared memory");

    __host__ __device__ static constexpr int kv_block(int stage) {
        return kKvOffset + stage * kBlockBytes;
    }
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_MLA_DECODE_TRAITS_CUH
