/*
 * flash_decode_cta.cuh: the CTA body of the paged-decode kernels, shared by the Ampere entry
 * points (kernels/sm80/flash_decode.cu: cp.async into two per-warp stages, mma.m16n8k16) and the
 * Turing ones (kernels/sm75/flash_decode_sm75.cu: register-staged key blocks into one per-warp
 * stage, each k16 step two mma.m16n8k8), so both offer every option with the same code.
 *
 * Grid (num_splits, hkv x row tiles, batch). A CTA computes, for one KV head of one batch item,
 * a tile of 16 or 32 packed query rows (packed row R = query i x group + g, the group = hq / hkv
 * query heads sharing the KV head, so each K/V row is read once per KV head; 32-row tiles are
 * two m16 row blocks per warp, for group x new tokens up to 32), over the keys of one split.
 * Each warp holds the same rows of Q (registers or the Q tile) and streams its own 16-key blocks
 * (block-table lookup, bounds check, copy into its shared-memory region: DecodeTraits), runs
 * S = Q K^T, the masks and modifiers, the online softmax and O += P V on them, and keeps its
 * own (O, m, l) state. The epilogue merges the warps' states through shared memory and writes
 * either O (and LSE / entropy) directly, or, with FLASHMHA_DECODE_FLAG_SPLIT_OUTPUT, the split's
 * partial O (f32) and LSE to the workspace for kernels/sm80/merge_states.cu.
 *
 * Key-block pipeline (DecodeTraits::kLoadPath):
 *  - CpAsync (sm_80+): block i+1 is copied by cp.async into the other stage while block i is
 *    computed; cp.async.wait_group + bar.warp.sync make it visible.
 *  - RegisterStaged (sm_75 has no cp.async): one stage per warp. The next block's K chunks are
 *    loaded (ld.global.nc) into registers before S = Q K^T of the current block and stored to
 *    the K stage right after it; its V chunks are loaded then, in flight during the softmax and
 *    P V, and stored to the V stage after them. Only one of K or V is in registers at a time,
 *    which keeps the loop within sm_75's registers without spills.
 *
 * FP8 pages (kv_bytes 1, Ampere only): K / V codes go from shared memory through ldmatrix
 * straight into registers and are dequantised there (kernels/common/fp8.cuh), the scales folded
 * into the softmax scale (K) and the epilogue (V).
 *
 * Device-resident indices are never trusted: cache_seqlens[b] against max_pages_per_seq x
 * page_size, cu_seqlens_q against total_q and seqlen_q, every block-table entry used against
 * num_pages; a violation executes trap. Keys at or past the row's visible range are zero-filled
 * (cp.async src-size 0, or a zero register block without a load; their pages are neither looked
 * up nor read), so unused pages are never touched.
 */
#ifndef FLASHMHA_COMMON_FLASH_DECODE_CTA_CUH
#define FLASHMHA_COMMON_FLASH_DECODE_CTA_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/state_merge.cuh"
#include "common/codegen.cuh"
#include "common/cta_prologue.cuh"
#include "common/decode_traits.cuh"
#include "common/fp8.cuh"
#include "common/staged_copy.cuh"
#include "common/mask.cuh"

namespace flashmha {

/* The FP8 K or V block of one warp, kSteps ldmatrix.x4 of [16 keys, kFp8DimsPerLdsmX4 dims] of
 * codes from the stage cursor + kBase: for each 16-dim chunk c (2 per ldmatrix), calls
 * f(Int<c>, keys 0..7, keys 8..15) with the chunk's codes dequantised (fp8.cuh pairing). K
 * (kTrans false, mma.cuh "B pattern" in 16-byte units): register m holds keys 8 (m >> 1) +
 * groupID of dim chunk 2j + (m & 1). V (ldmatrix .trans): register m holds keys 8 (m & 1) .. of
 * dim chunk 2j + (m >> 1). */
template <int kSteps, bool kTrans, int kBase, class Dequant, class F>
__device__ __forceinline__ void for_each_fp8_chunk(uint32_t cursor, Dequant &dequant, F &&f) {
    static_for<kSteps>([&](auto j_c) {
        constexpr int j = decltype(j_c)::value;
        uint32_t b[kLdsmMatrices];
        if constexpr (kTrans)
            ldsm_x4_trans<kBase + j * kFp8DimsPerLdsmX4>(b, cursor);
        else
            ldsm_x4<kBase + j * kFp8DimsPerLdsmX4>(b, cursor);
        static_for<kFp8ChunksPerLdsmX4>([&](auto half_c) {
            constexpr int kHalf = decltype(half_c)::value;
            const Fp8Pairs lo = dequant(b[kTrans ? 2 * kHalf : kHalf]);
            const Fp8Pairs hi = dequant(b[kTrans ? 2 * kHalf + 1 : 2 + kHalf]);
            f(Int<2 * j + kHalf>{}, lo, hi);
        });
    });
}

template <class T>
__device__ __forceinline__ void flash_decode_cta(const FlashDecodeParams &p) {
    using Elem = typename T::Elem;
    constexpr int kW = T::kNumWarps;
    extern __shared__ __align__(128) unsigned char smem[];

    // 16-bit pages: every multiple of 8 up to the compiled dim, the columns past the real one
    // zero-filled in shared memory and never written; FP8 pages and d_v != d_qk rows: the
    // compiled dim only.
    cta_prologue<T::kSmemBytes, T::kHeadDim,
                 (T::kKvFp8 || T::kSplitDims) ? T::kHeadDim : kDecodeChunkElems>(p.head_dim);
    const int d_real = p.head_dim;
    const int col8_valid = d_real / kDecodeChunkElems;  // 16-byte chunks of a row in global
    const int dv_real = T::kSplitDims ? T::kHeadDimV : d_real;  // O's columns (d_v)
    static_assert(T::kSplitDims || T::kQKSteps == T::kPairTilesD,
                  "one 16-column bound serves Q K^T and P V");

    const int tid = threadIdx.x;
    const int lane = lane_of(tid);
    const int warp = warp_of(tid);
    const int split = blockIdx.x;
    const int row_tiles = gridDim.y / p.num_heads_kv;
    const int kv_head = blockIdx.y / row_tiles;
    const int row_tile = blockIdx.y - kv_head * row_tiles;
    const int batch = blockIdx.z;
    const int group = p.num_heads_q / p.num_heads_kv;
    const bool varlen = (p.opt.flags & FLASHMHA_FLAG_VARLEN) != 0;

    // Device-resident lengths: checked before any use (the cache length's check waits until
    // the Q tile's loads, which do not depend on it, are in flight).
    const int cache_len = p.cache_seqlens[batch];
    int sq;
    int q_row0;  // row of the item's first query in the [total_q] row space (lse, workspace)
    int64_t q_item, o_item, lse_item;  // element offsets of the item's row 0
    if (varlen) {
        const SeqRows q = checked_seq_rows(p.cu_seqlens_q, batch, p.total_q, p.seqlen_q);
        sq = q.len;
        q_row0 = q.start;
        q_item = static_cast<int64_t>(q.start) * p.q_row_stride;
        o_item = static_cast<int64_t>(q.start) * p.o_row_stride;
        lse_item = q.start;
    } else {
        sq = p.seqlen_q;
        q_row0 = batch * p.seqlen_q;
        q_item = batch * p.q_batch_stride;
        o_item = batch * p.o_batch_stride;
        lse_item = batch * p.opt.lse_batch_stride;
    }
    const int rows_item = group * sq;
    constexpr int kRB = T::kRowBlocks;
    const int r0 = row_tile * T::kTileRows;
    if (r0 >= rows_item) return;  // CTA-uniform: varlen item shorter than the grid

    // Q tile: q: [tile rows (16 or 32 packed rows), d], loaded into registers here (rows past
    // the item and columns past d zero) and stored to shared memory once the first key pages
    // are requested, so the Q, cache-length and block-table latencies overlap. FP8 K/V: each
    // 16-dim group is stored even dims first (fp8_q_dim_of_k_col), so the chunks go in pairs
    // (the even / odd split spans one k16 step: two 16-byte chunks of 16-bit Q).
    constexpr int kQChunksPerItem = T::kKvFp8 ? kMmaK / kDecodeChunkElems : 1;
    constexpr int kQItemsPerRow = T::kQChunks / kQChunksPerItem;
    constexpr int kQItems = T::kTileRows * kQItemsPerRow;
    constexpr int kQIters = (kQItems + T::kThreads - 1) / T::kThreads;
    uint4 q_in[kQIters][kQChunksPerItem];  // item tid + it x threads of the tile
#pragma unroll
    for (int it = 0; it < kQIters; ++it) {
        const int flat = tid + it * T::kThreads;
        const int row = flat / kQItemsPerRow;
        const int c = (flat - row * kQItemsPerRow) * kQChunksPerItem;
        const int r = r0 + row;
#pragma unroll
        for (int i = 0; i < kQChunksPerItem; ++i) q_in[it][i] = make_uint4(0, 0, 0, 0);
        if (flat < kQItems && r < rows_item) {
            const int qi = r / group;
            const int head = kv_head * group + (r - qi * group);
            const elem_bits_t *src = static_cast<const elem_bits_t *>(p.q) + q_item +
                                     qi * p.q_row_stride + head * p.q_head_stride;
#pragma unroll
            for (int i = 0; i < kQChunksPerItem; ++i)
                if (c + i < col8_valid)  // columns past d stay zero
                    q_in[it][i] = *reinterpret_cast<const uint4 *>(src + (c + i) * kDecodeChunkElems);
        }
    }
    if (cache_len < 0 ||
        static_cast<int64_t>(cache_len) > static_cast<int64_t>(p.max_pages_per_seq) * p.page_size)
        __trap();

    // Keys of this split: [split_lo, split_hi). Fixed split size (batch-invariant) or an even
    // share of this item's keys, rounded to FLASHMHA_DECODE_SPLIT_ALIGN.
    int per_split = p.split_keys;
    if (per_split <= 0) {
        const int share = (cache_len + p.num_splits - 1) / p.num_splits;
        per_split = (share + FLASHMHA_DECODE_SPLIT_ALIGN - 1) / FLASHMHA_DECODE_SPLIT_ALIGN *
                    FLASHMHA_DECODE_SPLIT_ALIGN;
        per_split = max(per_split, FLASHMHA_DECODE_SPLIT_ALIGN);
    }
    // The keys each row sees (mask.cuh semantics with sk = cache_len), within this split's keys.
    KeyMask mask(p.opt, sq, cache_len);
    {
        const int64_t lo = static_cast<int64_t>(split) * per_split;
        mask.clamp_keys(static_cast<int>(min(lo, static_cast<int64_t>(cache_len))),
                        static_cast<int>(min(lo + per_split, static_cast<int64_t>(cache_len))));
    }

    // Bounds are nondecreasing in the query index: the CTA's keys and its fully visible keys.
    const int qi_first = r0 / group;
    const int qi_last = (min(r0 + T::kTileRows, rows_item) - 1) / group;
    const int cta_lo = mask.key_lo(qi_first);
    const int cta_hi = mask.key_hi(qi_last);
    const auto needs_mask = mask.template partial_tile_test<kDecodeKeysPerBlock>(qi_first, qi_last);

    // This warp's key blocks: blk_first, blk_first + W, ... < blk_end (blocks of 16 keys).
    const int blk_begin = cta_lo / kDecodeKeysPerBlock;
    const int blk_end = cta_hi > cta_lo ? (cta_hi + kDecodeKeysPerBlock - 1) / kDecodeKeysPerBlock
                                        : blk_begin;
    const int blk_first = blk_begin + warp;
    const int num_blocks = blk_first < blk_end ? (blk_end - blk_first + kW - 1) / kW : 0;

    // Copy roles: lanes r and r + 16 copy key row r of a block, lane r + 16h the chunks 2j + h
    // (adjacent chunks of a pair fill one 32-byte sector); the pair's leader looks up the page.
    const int copy_row = copy_row_of_lane(lane);
    const int copy_half = copy_half_of_lane(lane);
    const int32_t *table = p.block_table + batch * p.block_table_stride;
    // The block-table entry of the lane's key row of block `blk` (read by the pair leader, 0
    // for keys outside [cta_lo, cta_hi), whose page is neither looked up nor read). Entries are
    // fetched a block ahead of their use (locate_row), so no lookup waits in the key loop
    // (looked up where used, each cost a block a full memory latency).
    auto fetch_page = [&](int blk) -> int {
        const int key = blk * kDecodeKeysPerBlock + copy_row;
        const bool in = key >= cta_lo && key < cta_hi;
        return in && copy_half == 0 ? table[page_of_key(p, key)] : 0;  // page slot < max_pages_per_seq
    };
    // The entry of the warp's next block to locate (its first here, requested before the Q
    // tile is stored).
    int page_ahead = num_blocks > 0 ? fetch_page(blk_first) : 0;

    // The thread's two packed rows (groupID, groupID + 8) of each row block and what they see
    // (kept in registers: recomputing them from the mask costs sm_75 a spill); rows past the
    // item (r >= rows_item) see no key and are never written.
    int qi_of[kRB][kRowHalves];
    int head_of[kRB][kRowHalves];
    bool row_valid[kRB][kRowHalves];
    int key_lo[kRB][kRowHalves];
    int key_hi[kRB][kRowHalves];
#pragma unroll
    for (int rb = 0; rb < kRB; ++rb)
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            const int r = r0 + rb * kDecodeRowsPerBlock + mma_c_row(lane, mma_c_index(h, 0));
            qi_of[rb][h] = r / group;
            head_of[rb][h] = kv_head * group + (r - qi_of[rb][h] * group);
            row_valid[rb][h] = r < rows_item;
            key_lo[rb][h] = row_valid[rb][h] ? mask.key_lo(qi_of[rb][h]) : 0;
            key_hi[rb][h] = row_valid[rb][h] ? mask.key_hi(qi_of[rb][h]) : 0;
        }

    const uint32_t smem_base = smem_addr(smem);

#pragma unroll
    for (int it = 0; it < kQIters; ++it) {
        const int flat = tid + it * T::kThreads;
        if (flat >= kQItems) continue;
        const int row = flat / kQItemsPerRow;
        const int c = (flat - row * kQItemsPerRow) * kQChunksPerItem;
        unsigned char *dst = smem + T::kQOffset + row * T::kQPitch + c * kDecodeChunkBytes;
        if constexpr (T::kKvFp8) {
            uint4 even, odd;
            deinterleave_halves(q_in[it][0], q_in[it][1], even, odd);
            *reinterpret_cast<uint4 *>(dst) = even;
            *reinterpret_cast<uint4 *>(dst + kDecodeChunkBytes) = odd;
        } else {
            *reinterpret_cast<uint4 *>(dst) = q_in[it][0];
        }
    }
    __syncthreads();  // the Q tile comes from all threads; every warp reads all of it
    // Q A-fragments of each row block, one per k16 step (see DecodeTraits::kQInRegisters).
    const uint32_t q_cur = smem_base + T::kQOffset + ldsm_a_row(lane) * T::kQPitch +
                           ldsm_a_col8(lane) * kDecodeChunkBytes;
    constexpr int kQRegSteps = T::kQInRegisters ? T::kQKSteps : 1;
    constexpr int kQBlockBytes = kDecodeRowsPerBlock * T::kQPitch;  // one row block of the Q tile
    uint32_t q_frag[kRB][kQRegSteps][kARegs];
    if constexpr (T::kQInRegisters) {
        static_for<kRB>([&](auto rb_c) {
            constexpr int rb = decltype(rb_c)::value;
            static_for<T::kQKSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                ldsm_x4<rb * kQBlockBytes + kk * 2 * kDecodeChunkBytes>(q_frag[rb][kk], q_cur);
            });
        });
    }

    ScoreMod mod(p.opt);
    float alibi_log2[kRB][kRowHalves];  // per row: the rows of a CTA belong to several heads
#pragma unroll
    for (int rb = 0; rb < kRB; ++rb)
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h)
            alibi_log2[rb][h] = row_valid[rb][h] ? mod.alibi_log2(p.opt, head_of[rb][h]) : 0.0f;
    // FP8: the K scale (times the dequantiser's 2^8 for e4m3, fp8.cuh) multiplies every score,
    // so it joins the softmax scale; the V scale multiplies O once in the epilogue.
    float v_mul = 1.0f;
    if constexpr (T::kKvFp8) {
        if (p.kv_format != FLASHMHA_KV_FORMAT_E4M3 && p.kv_format != FLASHMHA_KV_FORMAT_E5M2)
            __trap();
        const float to_value = fp8_f16_scale(p.kv_format);
        const int scale_index = kv_head * p.kv_scale_stride;
        const float k_mul = p.k_scales[scale_index] * to_value;
        v_mul = p.v_scales[scale_index] * to_value;
        mod.scale_scores(k_mul);
    }
    const float score_mul = pin(mod.score_mul());

    // O: [16 rows, d_v] per row block of this warp's keys, f32 C fragments.
    float o_acc[kRB][T::kOTiles][kCRegs];
    zero_c_fragments(o_acc);
    OnlineSoftmax<T::kSTiles, T::kOTiles> softmax[kRB];

    if (num_blocks > 0) {
        const bool want_entropy = p.opt.entropy != nullptr || p.partial_entropy != nullptr;
        const int copy_leader = copy_pair_leader(lane);
        // k, v of this KV head: element (page, slot, c) at page * page_stride + slot * slot_stride
        const uint64_t k_head = gmem_addr(p.k_cache) + kv_head * p.k_head_stride * T::kKvBytes +
                                copy_half * kDecodeChunkBytes;
        const uint64_t v_head = gmem_addr(p.v_cache) + kv_head * p.v_head_stride * T::kKvBytes +
                                copy_half * kDecodeChunkBytes;
        const uint32_t region = smem_base + T::kRegionOffset + warp * T::kWarpRegionBytes;
        const uint32_t copy_dst = region + copy_row * T::kPitch + copy_half * kDecodeChunkBytes;
        // ... of its V row (V rows have their own pitch when d_v != d_qk; else the same address,
        // spelled as K's so that those entries compile exactly as before).
        const uint32_t copy_dst_v =
            T::kSplitDims ? region + copy_row * T::kPitchV + copy_half * kDecodeChunkBytes : copy_dst;

        // Where the lane's key row of the warp's block i lives, from its fetched table entry
        // (page_ahead); the entry of block i + 1 (if the warp has it) is requested in turn, a
        // block's compute before its use. Called once per block, in block order. Returns the row's byte count per chunk: 16, or 0 for
        // keys outside [cta_lo, cta_hi) (zero-filled).
        auto locate_row = [&](int i, uint64_t &k_src, uint64_t &v_src) -> uint32_t {
            const int blk = blk_first + i * kW;
            const int key = blk * kDecodeKeysPerBlock + copy_row;
            const bool in = key >= cta_lo && key < cta_hi;
            const int page_slot = page_of_key(p, key);
            const int page = __shfl_sync(kDecodeWarpMask, page_ahead, copy_leader);
            page_ahead = i + 1 < num_blocks ? fetch_page(blk + kW) : 0;
            k_src = k_head;
            v_src = v_head;
            uint32_t bytes = 0;
            if (in) {
                if (static_cast<uint32_t>(page) >= static_cast<uint32_t>(p.num_pages)) __trap();
                const int slot = key - page_slot * p.page_size;
                k_src += (page * p.k_page_stride + slot * p.k_slot_stride) * T::kKvBytes;
                v_src += (page * p.v_page_stride + slot * p.v_slot_stride) * T::kKvBytes;
                bytes = kDecodeChunkBytes;
            }
            return bytes;
        };
        // The bytes the lane copies of its chunk j (2 j + copy_half of the row) given its row's
        // `bytes`: below the compiled width (kBounded) the chunks past d are zero-filled without
        // a read; at the compiled width the bound folds away.
        auto chunk_bytes = [&](auto bounded_c, auto j_c, uint32_t bytes) -> uint32_t {
            if constexpr (decltype(bounded_c)::value != 0)
                return (decltype(j_c)::value * kCopyLanesPerRow + copy_half) * kDecodeChunkElems < p.head_dim
                           ? bytes
                           : 0u;
            else
                return bytes;
        };
        // cp.async: copies the warp's block i into stage kStage.
        auto issue_block = [&](auto stage_c, auto bounded_c, int i) {
            constexpr int kStage = decltype(stage_c)::value;
            uint64_t k_src, v_src;
            const uint32_t bytes = locate_row(i, k_src, v_src);
            static_for<T::kChunksPerLane>([&](auto j_c) {
                constexpr int kOff = decltype(j_c)::value * kCopyLanesPerRow * kDecodeChunkBytes;
                cp_async_16_imm<T::k_block(kStage) - T::kRegionOffset + kOff, kOff>(
                    copy_dst, k_src, chunk_bytes(bounded_c, j_c, bytes));
            });
            static_for<T::kChunksPerLaneV>([&](auto j_c) {
                constexpr int kOff = decltype(j_c)::value * kCopyLanesPerRow * kDecodeChunkBytes;
                cp_async_16_imm<T::v_block(kStage) - T::kRegionOffset + kOff, kOff>(
                    copy_dst_v, v_src, chunk_bytes(bounded_c, j_c, bytes));
            });
            cp_async_commit();
        };
        // Register-staged: the lane's chunks of one K or V row in flight (4 registers each);
        // zero for keys outside [cta_lo, cta_hi), without a load, as cp.async's src-size 0.
        struct StagedRow {
            uint4 chunk[T::kChunksPerLane];
        };
        // The next block of a register-staged warp: where its K / V rows are, and the one of
        // them in flight.
        struct StagedNext {
            uint64_t k = 0;
            uint64_t v = 0;
            uint32_t bytes = 0;
            StagedRow row;
        };
        auto load_row = [&](auto bounded_c, uint64_t src, uint32_t bytes, StagedRow &st) {
            static_for<T::kChunksPerLane>([&](auto j_c) {
                constexpr int j = decltype(j_c)::value;
                constexpr int kOff = j * kCopyLanesPerRow * kDecodeChunkBytes;
                st.chunk[j] = make_uint4(0u, 0u, 0u, 0u);
                if (chunk_bytes(bounded_c, j_c, bytes) != 0) st.chunk[j] = ld_global_nc_16(src + kOff);
            });
        };
        // Stores a staged row into the K (kBlock = k_block(0)) or V block of the single stage.
        auto store_row = [&](auto block_c, const StagedRow &st) {
            constexpr int kBlock = decltype(block_c)::value - T::kRegionOffset;
            static_for<T::kChunksPerLane>([&](auto j_c) {
                constexpr int j = decltype(j_c)::value;
                st_shared_16<kBlock + j * kCopyLanesPerRow * kDecodeChunkBytes>(copy_dst,
                                                                                 st.chunk[j]);
            });
        };

        // Fragment cursors into this warp's region (ldmatrix patterns of mma.cuh).
        const uint32_t k_cur = region + ldsm_b_row(lane) * T::kPitch + ldsm_b_col8(lane) * kDecodeChunkBytes;
        const uint32_t v_cur = region + ldsm_a_row(lane) * T::kPitchV + ldsm_a_col8(lane) * kDecodeChunkBytes;

        // FP8 code pairs of one ldmatrix register as two B registers of Elem (fp8.cuh pairing).
        auto kv_pairs = [&](auto format_c, uint32_t x) {
            constexpr int kFormat = decltype(format_c)::value;
            Fp8Pairs r = kFormat == FLASHMHA_KV_FORMAT_E5M2 ? e5m2_pairs_to_f16(x) : e4m3_pairs_to_f16(x);
            if constexpr (Elem::kIsBf16) {
                r.p02 = f16x2_to_bf16x2(r.p02);
                r.p13 = f16x2_to_bf16x2(r.p13);
            }
            return r;
        };

        auto process_block = [&](auto format_c, auto bounded_c, auto stage_c, int i) {
            constexpr int kStage = decltype(stage_c)::value;
            // (unused by the FP8 loop, which runs its compiled width only)
            [[maybe_unused]] constexpr bool kBounded = decltype(bounded_c)::value != 0;
            constexpr int kK = T::k_block(kStage) - T::kRegionOffset;
            constexpr int kV = T::v_block(kStage) - T::kRegionOffset;
            auto dequant = [&](uint32_t x) { return kv_pairs(format_c, x); };
            const int blk = blk_first + i * kW;
            const bool has_next = i + 1 < num_blocks;
            // Register-staged: the next block's location and its K row, loading during S.
            StagedNext next;
            if constexpr (T::kRegisterStaged) {
                if (has_next) {
                    next.bytes = locate_row(i + 1, next.k, next.v);
                    load_row(bounded_c, next.k, next.bytes, next.row);
                }
            } else {
                (void)next;  // the cp.async path stages nothing in registers
                if (has_next) issue_block(Int<kStage ^ 1>{}, bounded_c, i + 1);  // stage freed by warp_sync
                if (has_next)
                    cp_async_wait<1>();  // this block's group landed (the next may be in flight)
                else
                    cp_async_wait<0>();
            }
            warp_sync();  // every lane's copies of this block are visible to the warp's ldmatrix

            // S = Q K^T: s: [16 rows, 16 keys] per row block as two n8 C fragments, f32. Every
            // K fragment feeds the mma of each row block.
            float s[kRB][T::kSTiles][kCRegs];
            auto q_fragment = [&](auto rb_c, auto kk_c, uint32_t(&q_step)[kARegs]) {
                constexpr int rb = decltype(rb_c)::value;
                constexpr int kk = decltype(kk_c)::value;
                if constexpr (T::kQInRegisters) {
#pragma unroll
                    for (int r = 0; r < kARegs; ++r) q_step[r] = q_frag[rb][kk][r];
                } else {
                    ldsm_x4<rb * kQBlockBytes + kk * 2 * kDecodeChunkBytes>(q_step, q_cur);
                }
            };
            if constexpr (T::kKvFp8) {
                // k: kk = dim chunk, k0 / k1 = keys 0..7 / 8..15 (for_each_fp8_chunk).
                for_each_fp8_chunk<T::kFp8LdsmSteps, false, kK>(
                    k_cur, dequant, [&](auto kk_c, const Fp8Pairs &k0, const Fp8Pairs &k1) {
                        constexpr int kk = decltype(kk_c)::value;
                        static_for<kRB>([&](auto rb_c) {
                            constexpr int rb = decltype(rb_c)::value;
                            uint32_t q_step[kARegs];
                            q_fragment(rb_c, kk_c, q_step);
                            if constexpr (kk == 0) {
                                mma_16816_zero_c<Elem>(s[rb][0], q_step, k0.p02, k0.p13);
                                mma_16816_zero_c<Elem>(s[rb][1], q_step, k1.p02, k1.p13);
                            } else {
                                mma_16816<Elem>(s[rb][0], q_step, k0.p02, k0.p13);
                                mma_16816<Elem>(s[rb][1], q_step, k1.p02, k1.p13);
                            }
                        });
                    });
            } else {
            // K fragments one k16 step ahead of their mma (kb[kk & 1]), so a step's ldmatrix
            // latency hides behind the previous step's mma instead of stalling each step.
            // (T::kFragmentsAhead false, where the 4 registers would spill: each step loads its own.)
            constexpr int kAhead = T::kFragmentsAhead ? 1 : 0;
            uint32_t kb[2][kLdsmMatrices];
            if constexpr (kAhead) ldsm_x4<kK>(kb[0], k_cur);
            static_for<T::kQKSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                if (!step_runs<kBounded, kk>(p.head_dim)) return;  // Q and K columns past d are zero
                if constexpr (kk + kAhead < T::kQKSteps)
                    if (step_runs<kBounded, kk + kAhead>(p.head_dim))
                        ldsm_x4<kK + (kk + kAhead) * 2 * kDecodeChunkBytes>(kb[(kk + kAhead) & 1], k_cur);
                const uint32_t(&b)[kLdsmMatrices] = kb[kk & 1];
                static_for<kRB>([&](auto rb_c) {
                    constexpr int rb = decltype(rb_c)::value;
                    uint32_t q_step[kARegs];
                    q_fragment(rb_c, kk_c, q_step);
                    if constexpr (kk == 0) {
                        mma_16816_zero_c<Elem>(s[rb][0], q_step, b[0], b[1]);
                        mma_16816_zero_c<Elem>(s[rb][1], q_step, b[2], b[3]);
                    } else {
                        mma_16816<Elem>(s[rb][0], q_step, b[0], b[1]);
                        mma_16816<Elem>(s[rb][1], q_step, b[2], b[3]);
                    }
                });
            });
            }

            if constexpr (T::kRegisterStaged) {
                // The K stage is free once every lane's ldmatrix of it is done: the next K row
                // goes in, and the next V row's loads fly during the softmax and P V.
                warp_sync();
                if (has_next) {
                    store_row(Int<T::k_block(0)>{}, next.row);
                    load_row(bounded_c, next.v, next.bytes, next.row);
                }
            }

            const int n0 = blk * kDecodeKeysPerBlock;
            const bool partial = needs_mask(n0);  // uniform
            // O += P V: P (the S registers, converted) is the A operand; V via ldmatrix.trans.
            uint32_t pa[kRB][kARegs];
#pragma unroll
            for (int rb = 0; rb < kRB; ++rb) {
                modify_and_mask<false, true>(s[rb], mask.shift, mod, alibi_log2[rb], qi_of[rb], n0,
                                             mod.any(), partial, lane, [&](int h, int &lo, int &hi) {
                                                 lo = key_lo[rb][h];
                                                 hi = key_hi[rb][h];
                                             });
                if (want_entropy)
                    softmax[rb].template update<true>(s[rb], o_acc[rb], score_mul);
                else
                    softmax[rb].template update<false>(s[rb], o_acc[rb], score_mul);
#pragma unroll
                for (int r = 0; r < kARegs; ++r) {
                    const float(&st)[kCRegs] = s[rb][p_tile_of_a_reg(0, r)];
                    pa[rb][r] = Elem::pack(st[p_c_of_a_reg(r)], st[p_c_of_a_reg(r) + 1]);
                }
            }
            if constexpr (T::kKvFp8) {
                // v: cc = dim chunk, lo / hi = keys 0..7 / 8..15 (for_each_fp8_chunk); the even /
                // odd dims of chunk cc feed tiles 2 cc, 2 cc + 1.
                for_each_fp8_chunk<T::kFp8LdsmSteps, true, kV>(
                    v_cur, dequant, [&](auto cc_c, const Fp8Pairs &lo, const Fp8Pairs &hi) {
                        constexpr int cc = decltype(cc_c)::value;
#pragma unroll
                        for (int rb = 0; rb < kRB; ++rb) {
                            mma_16816<Elem>(o_acc[rb][2 * cc], pa[rb], lo.p02, hi.p02);
                            mma_16816<Elem>(o_acc[rb][2 * cc + 1], pa[rb], lo.p13, hi.p13);
                        }
                    });
            } else {
            // V fragments one n16 pair ahead of their mma, as K's above.
            constexpr int kAheadV = T::kFragmentsAhead ? 1 : 0;
            uint32_t vb[2][kLdsmMatrices];
            if constexpr (kAheadV) ldsm_x4_trans<kV>(vb[0], v_cur);
            static_for<T::kPairTilesD>([&](auto dp_c) {
                constexpr int dp = decltype(dp_c)::value;
                if (!step_runs<kBounded, dp>(p.head_dim)) return;  // O columns past d: never written
                if constexpr (dp + kAheadV < T::kPairTilesD)
                    if (step_runs<kBounded, dp + kAheadV>(p.head_dim))
                        ldsm_x4_trans<kV + (dp + kAheadV) * 2 * kDecodeChunkBytes>(vb[(dp + kAheadV) & 1], v_cur);
                const uint32_t(&b)[kLdsmMatrices] = vb[dp & 1];
#pragma unroll
                for (int rb = 0; rb < kRB; ++rb) {
                    mma_16816<Elem>(o_acc[rb][2 * dp], pa[rb], b[0], b[1]);
                    mma_16816<Elem>(o_acc[rb][2 * dp + 1], pa[rb], b[2], b[3]);
                }
            });
            }
            warp_sync();  // every lane is done reading this stage before it is refilled
            if constexpr (T::kRegisterStaged) {
                if (has_next) store_row(Int<T::v_block(0)>{}, next.row);
            }
        };

        auto run_blocks = [&](auto format_c, auto bounded_c) {
            if constexpr (T::kRegisterStaged) {
                // Prologue: the first block through registers into the single stage.
                uint64_t k_src, v_src;
                const uint32_t bytes = locate_row(0, k_src, v_src);
                StagedRow row;
                load_row(bounded_c, k_src, bytes, row);
                store_row(Int<T::k_block(0)>{}, row);
                load_row(bounded_c, v_src, bytes, row);
                store_row(Int<T::v_block(0)>{}, row);
                for (int i = 0; i < num_blocks; ++i) process_block(format_c, bounded_c, Int<0>{}, i);
            } else {
                issue_block(Int<0>{}, bounded_c, 0);
                for (int i = 0; i < num_blocks; i += T::kStages) {
                    process_block(format_c, bounded_c, Int<0>{}, i);
                    if (i + 1 < num_blocks) process_block(format_c, bounded_c, Int<1>{}, i + 1);
                }
            }
        };
        // One CTA-uniform branch on the FP8 format, and one on the head dim: a head dim below
        // the compiled one (16-bit pages only) runs the bounded loop, which zero-fills the
        // columns past d and skips the steps they alone would need; the compiled width runs
        // the same code as without a bound. Each side is the whole key loop.
        if constexpr (T::kKvFp8) {
            if (p.kv_format == FLASHMHA_KV_FORMAT_E5M2)
                run_blocks(Int<FLASHMHA_KV_FORMAT_E5M2>{}, Int<0>{});
            else
                run_blocks(Int<FLASHMHA_KV_FORMAT_E4M3>{}, Int<0>{});
        } else if (T::kSplitDims || d_real == T::kHeadDim) {
            run_blocks(Int<FLASHMHA_KV_FORMAT_SAME>{}, Int<0>{});
        } else if constexpr (!T::kSplitDims) {  // (d_v != d_qk rows run their exact dims only)
            run_blocks(Int<FLASHMHA_KV_FORMAT_SAME>{}, Int<1>{});
        }
    }

    // ---- Epilogue: merge the warps' states --------------------------------------------------
    constexpr int kRows = T::kTileRows;
    float *const stats_lse = reinterpret_cast<float *>(smem + T::kStatsOffset);  // [W][rows]
    float *const stats_ent = stats_lse + kW * kRows;                             // [W][rows]
    {
        // o staging of this warp: [rows, d_v + 8] f32 in its own region (its copies are all done).
        float *const o_stage = reinterpret_cast<float *>(smem + T::kRegionOffset + warp * T::kWarpRegionBytes);
#pragma unroll
        for (int rbh = 0; rbh < kRB * kRowHalves; ++rbh) {
            const int rb = rbh / kRowHalves;
            const int h = rbh % kRowHalves;
            const RowResult res = softmax[rb].finalize(h, score_mul, o_acc[rb]);
            const int c0 = mma_c_index(h, 0);
            const int row = rb * kDecodeRowsPerBlock + mma_c_row(lane, c0);
            if constexpr (T::kKvFp8) {
                // Tiles 2cc (even dims) and 2cc + 1 (odd dims): columns c0, c0 + 1 of both are
                // the 4 consecutive dims fp8_o_dim(2cc, col(c0)) .. + 3.
                const float w = res.inv_sum * v_mul;
#pragma unroll
                for (int cc = 0; cc < T::kOTiles / 2; ++cc) {
                    const int dim = fp8_o_dim(2 * cc, mma_c_col(lane, c0));
                    *reinterpret_cast<float4 *>(o_stage + row * T::kOStagePitchFloats + dim) =
                        make_float4(o_acc[rb][2 * cc][c0] * w, o_acc[rb][2 * cc + 1][c0] * w,
                                    o_acc[rb][2 * cc][c0 + 1] * w, o_acc[rb][2 * cc + 1][c0 + 1] * w);
                }
            } else {
#pragma unroll
                for (int ot = 0; ot < T::kOTiles; ++ot) {
                    const int col = ot * kMmaN + mma_c_col(lane, c0);
                    *reinterpret_cast<float2 *>(o_stage + row * T::kOStagePitchFloats + col) =
                        make_float2(o_acc[rb][ot][c0] * res.inv_sum, o_acc[rb][ot][c0 + 1] * res.inv_sum);
                }
            }
            if (lane_in_quad(lane) == 0) {
                stats_lse[warp * kRows + row] = res.lse;
                stats_ent[warp * kRows + row] = res.entropy;
            }
        }
    }
    __syncthreads();  // every warp's staged state is complete before the cross-warp merge

    const bool split_out = (p.opt.flags & FLASHMHA_DECODE_FLAG_SPLIT_OUTPUT) != 0;
    const bool want_entropy = p.opt.entropy != nullptr || p.partial_entropy != nullptr;
    constexpr int kCol4 = T::kHeadDimV / 4;  // float4 column groups per O row
    for (int flat = tid; flat < kRows * kCol4; flat += T::kThreads) {
        const int row = flat / kCol4;
        const int c4 = flat - row * kCol4;
        const int r = r0 + row;
        if (r >= rows_item || c4 * 4 >= dv_real) continue;  // columns past d_v are not written
        const int qi = r / group;
        const int head = kv_head * group + (r - qi * group);
        // The warps' states merged (state_merge.cuh): an empty warp (LSE -inf) weighs -0 and
        // its staged O is 0, a NaN LSE makes the row NaN.
        float m = neg_inf();
#pragma unroll
        for (int w = 0; w < kW; ++w) m = fmaxf(m, stats_lse[w * kRows + row]);
        const float ref = merge_ref(m);
        float weight[kW];
        float total = 0.0f;
#pragma unroll
        for (int w = 0; w < kW; ++w) {
            weight[w] = merge_term(stats_lse[w * kRows + row], ref);
            total += weight[w];
        }
        const float inv_total = 1.0f / total;
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
        float ent = 0.0f;
#pragma unroll
        for (int w = 0; w < kW; ++w) {
            const float l = stats_lse[w * kRows + row];
            const float a = l == neg_inf() ? merge_skip_weight() : weight[w] * inv_total;
            const float4 ow = *reinterpret_cast<const float4 *>(
                smem + T::kRegionOffset + w * T::kWarpRegionBytes +
                (row * T::kOStagePitchFloats + c4 * 4) * 4);
            merge_accumulate(acc, a, ow);
            if (want_entropy) ent = merge_entropy_add(ent, a, stats_ent[w * kRows + row]);
        }
        float lse = merge_lse(ref, total);
        // The head's sink joins the merged row once (state_merge.cuh, join_sink): the whole
        // row, or split 0's partial state of a split decode (the combine then merges it like
        // any other state).
        if (p.opt.sinks != nullptr && split == 0) {
            const RowResult r = join_sink(RowResult{1.0f, lse, ent}, p.opt.sinks[head]);
            acc.x *= r.inv_sum;
            acc.y *= r.inv_sum;
            acc.z *= r.inv_sum;
            acc.w *= r.inv_sum;
            lse = r.lse;
            ent = r.entropy;
        }
        const int64_t grow = q_row0 + qi;  // row in the [total_q] row space
        if (split_out) {
            const int64_t state = (static_cast<int64_t>(split) * p.total_q + grow) * p.num_heads_q + head;
            if (lse != neg_inf())
                *reinterpret_cast<float4 *>(p.partial_o + state * dv_real + c4 * 4) = acc;
            if (c4 == 0) {
                p.partial_lse[state] = lse;
                if (p.partial_entropy != nullptr) p.partial_entropy[state] = ent;
            }
        } else {
            const float gate = p.opt.head_gates != nullptr ? p.opt.head_gates[head] : 1.0f;
            // Adding +0 turns the -0 of a zero gate into +0.
            const uint32_t lo = Elem::pack(__fadd_rn(acc.x * gate, 0.0f), __fadd_rn(acc.y * gate, 0.0f));
            const uint32_t hi = Elem::pack(__fadd_rn(acc.z * gate, 0.0f), __fadd_rn(acc.w * gate, 0.0f));
            elem_bits_t *dst = static_cast<elem_bits_t *>(p.o) + o_item + qi * p.o_row_stride +
                               head * p.o_head_stride + c4 * 4;
            *reinterpret_cast<uint2 *>(dst) = make_uint2(lo, hi);
            if (c4 == 0) {
                const int64_t stat = lse_item + head * p.opt.lse_head_stride + qi;
                if (p.opt.lse != nullptr) p.opt.lse[stat] = lse;
                if (p.opt.entropy != nullptr) p.opt.entropy[stat] = ent;
            }
        }
    }
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_FLASH_DECODE_CTA_CUH
