/*
 * flash_mla_decode_cta.cuh: the CTA body of the MLA decode (issue 23 item 3): paged decode over
 * one shared latent KV head, d_qk 576, d_v 512 = the first 512 dims of the same cached row. The
 * tile (warps = row block x dim slice, one staged key block per CTA, S partials exchanged in
 * shared memory) and its budget are in kernels/common/mla_decode_traits.cuh.
 *
 * Grid (row tiles, num_splits, batch): the row tiles of one split are adjacent in launch order,
 * so with more than 32 heads (several row tiles per sequence) the tiles reading the same keys
 * run together and their repeated reads of a key block can hit L2. Per 16-key block: every thread waits for its own copies
 * of the block, __syncthreads (the block is visible to all warps; every warp is done with the
 * previous block, so its stage and the S exchange are free), the next block's copy is issued
 * into the other stage, S partials, __syncthreads, sum of the partials, masks and modifiers
 * (mask.cuh), online softmax (softmax.cuh), O += P V on the warp's slice of the 512 dims.
 * Epilogue: every warp writes its slice of O directly (no cross-warp merge: the slices are
 * disjoint and the softmax state is identical in all of them); the row stats come from slice 0.
 * Split-KV writes the partial (O, LSE) of each split for the decode combine
 * (kernels/sm80/merge_states.cu), split 0 holding the sink (state_merge.cuh, join_sink).
 *
 * Device-resident indices are checked as in the paged decode (flash_decode_cta.cuh): the cache
 * length against max_pages_per_seq x page_size, cu_seqlens_q against total_q / seqlen_q, every
 * block-table entry used against num_pages; a violation traps. Keys outside the CTA's visible
 * range are zero-filled without a table lookup or a read, so spare pages are never touched.
 */
#ifndef FLASHMHA_COMMON_FLASH_MLA_DECODE_CTA_CUH
#define FLASHMHA_COMMON_FLASH_MLA_DECODE_CTA_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/state_merge.cuh"
#include "common/codegen.cuh"
#include "common/cta_prologue.cuh"
#include "common/mla_decode_item.cuh"
#include "common/mla_decode_traits.cuh"
#include "common/mask.cuh"
#include "common/fp8.cuh"
#include "common/staged_copy.cuh"

namespace flashmha {

template <class T>
__device__ __forceinline__ void flash_mla_decode_cta(const FlashMlaDecodeParams &mp) {
    using Elem = typename T::Elem;
    const FlashDecodeParams &p = mp.decode;
    extern __shared__ __align__(128) unsigned char smem[];

    cta_prologue<T::kSmemBytes, T::kDQk, T::kDQk>(p.head_dim);
    if (mp.head_dim_v != T::kDV || p.num_heads_kv != 1) __trap();

    const int tid = threadIdx.x;
    const int lane = lane_of(tid);
    const int warp = warp_of(tid);
    const int rb = warp / T::kSlices;     // the warp's m16 row block of the tile
    const int slice = warp % T::kSlices;  // ... and its slice of the dims
    const int row_tile = blockIdx.x;
    const int split = blockIdx.y;
    const int batch = blockIdx.z;
    const int group = p.num_heads_q;  // every query head shares the one latent KV head

    const MlaItem it = mla_item(p, batch);  // traps on bad lengths
    const int r0 = row_tile * T::kTileRows;
    if (r0 >= it.rows) return;  // CTA-uniform
    const KeyMask mask = mla_split_mask(p, it, split);
    // The thread's two packed rows (groupID, groupID + 8) of its row block.
    const MlaRows rows(mask, it, group, r0 + rb * kDecodeRowsPerBlock, lane);
    const MlaTileKeys tile(mask, it, group, r0, T::kTileRows);
    const int cta_lo = tile.lo;
    const int cta_hi = tile.hi;
    const auto needs_mask = mask.template partial_tile_test<T::kKeys>(tile.qi_first, tile.qi_last);

    const uint32_t smem_base = smem_addr(smem);

    // Q tile: q: [tile rows, 576] -> shared (rows past the item zero-filled).
    for (int flat = tid; flat < T::kTileRows * T::kQChunks; flat += T::kThreads) {
        const int row = flat / T::kQChunks;
        const int c = flat - row * T::kQChunks;
        *reinterpret_cast<uint4 *>(smem + T::kQOffset + row * T::kQPitch + c * kDecodeChunkBytes) =
            mla_q_chunk(p, it, r0 + row, c);
    }
    // (Read only inside the key loop, after its first __syncthreads.)

    ScoreMod mod(p.opt);
    float alibi_log2[kRowHalves];
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h)
        alibi_log2[h] = rows.valid[h] ? mod.alibi_log2(p.opt, rows.head[h]) : 0.0f;
    // FP8: the one latent scale (times the dequantiser's 2^8 for e4m3, fp8.cuh) multiplies
    // every score, so it joins the softmax scale, and O once in the epilogue.
    float v_mul = 1.0f;
    if constexpr (T::kKvFp8) {
        if (p.kv_format != FLASHMHA_KV_FORMAT_E4M3 && p.kv_format != FLASHMHA_KV_FORMAT_E5M2)
            __trap();
        const float to_value = fp8_f16_scale(p.kv_format);
        mod.scale_scores(p.k_scales[0] * to_value);
        v_mul = p.v_scales[0] * to_value;
    }
    const float score_mul = pin(mod.score_mul());

    // O: [16 rows, the slice's 128 dims] f32 C fragments.
    float o_acc[T::kOTiles][kCRegs];
    zero_c_fragments(o_acc);
    OnlineSoftmax<T::kSTiles, T::kOTiles> softmax;

    const int blk_begin = cta_lo / T::kKeys;
    const int blk_end = cta_hi > cta_lo ? (cta_hi + T::kKeys - 1) / T::kKeys : blk_begin;
    const int num_blocks = blk_end - blk_begin;
    const bool want_entropy = p.opt.entropy != nullptr || p.partial_entropy != nullptr;

    // Copy roles: row copy_row of each block, chunks copy_part + kCopyParts j.
    const int copy_row = tid % T::kKeys;
    const int copy_part = tid / T::kKeys;
    const int32_t *table = p.block_table + batch * p.block_table_stride;
    const uint64_t cache = gmem_addr(p.k_cache);
    const uint32_t copy_dst = smem_base + T::kKvOffset + copy_row * T::kPitch +
                              copy_part * T::kStagedPerSource * kDecodeChunkBytes;
    auto issue_block = [&](auto stage_c, int blk) {
        constexpr int kStage = decltype(stage_c)::value;
        const int key = blk * T::kKeys + copy_row;
        uint64_t src = cache + copy_part * kDecodeChunkBytes;
        uint32_t bytes = 0;
        if (key >= cta_lo && key < cta_hi) {
            const int page_slot = page_of_key(p, key);  // < max_pages_per_seq (cache_len checked)
            const int page = table[page_slot];
            if (static_cast<uint32_t>(page) >= static_cast<uint32_t>(p.num_pages)) __trap();
            const int slot = key - page_slot * p.page_size;
            src += (page * p.k_page_stride + slot * p.k_slot_stride) * T::kKvBytes;
            bytes = kDecodeChunkBytes;
        }
        static_for<T::kCopySteps>([&](auto j_c) {
            constexpr int j = decltype(j_c)::value;
            constexpr int kOff = j * T::kCopyParts * kDecodeChunkBytes;  // source bytes
            constexpr int kDst = kStage * T::kBlockBytes + kOff * T::kStagedPerSource;
            if (j + 1 < T::kCopySteps || copy_part + j * T::kCopyParts < T::kChunks) {
                if constexpr (T::kKvFp8) {
                    // 16 codes -> 16 elements in dim order (fp8.cuh pairs (0, 2), (1, 3)).
                    uint4 codes = make_uint4(0u, 0u, 0u, 0u);
                    if (bytes != 0) codes = ld_global_nc_16(src + kOff);
                    uint32_t w[8];
                    const uint32_t c[4] = {codes.x, codes.y, codes.z, codes.w};
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const Fp8Pairs r = p.kv_format == FLASHMHA_KV_FORMAT_E5M2
                                               ? e5m2_pairs_to_f16(c[i])
                                               : e4m3_pairs_to_f16(c[i]);
                        uint32_t lo = prmt(r.p02, r.p13, kPrmtLowHalves);   // dims 4i, 4i + 1
                        uint32_t hi = prmt(r.p02, r.p13, kPrmtHighHalves);  // dims 4i + 2, 4i + 3
                        if constexpr (Elem::kIsBf16) {
                            lo = f16x2_to_bf16x2(lo);
                            hi = f16x2_to_bf16x2(hi);
                        }
                        w[2 * i] = lo;
                        w[2 * i + 1] = hi;
                    }
                    st_shared_16<kDst>(copy_dst, make_uint4(w[0], w[1], w[2], w[3]));
                    st_shared_16<kDst + kDecodeChunkBytes>(copy_dst, make_uint4(w[4], w[5], w[6], w[7]));
                } else {
                    cp_async_16_imm<kDst, kOff>(copy_dst, src, bytes);
                }
            }
        });
        cp_async_commit();
    };

    // Fragment cursors: Q rows of the warp's row block at its slice's first dim; K (B pattern)
    // at the slice's first Q.K dim, V (.trans, A pattern) at its first output dim.
    const uint32_t q_cur = smem_base + T::kQOffset +
                           (rb * kDecodeRowsPerBlock + ldsm_a_row(lane)) * T::kQPitch +
                           ldsm_a_col8(lane) * kDecodeChunkBytes + slice * T::kQKSteps * 2 * kDecodeChunkBytes;
    const uint32_t kv_base = smem_base + T::kKvOffset;
    const uint32_t k_cur = kv_base + ldsm_b_row(lane) * T::kPitch + ldsm_b_col8(lane) * kDecodeChunkBytes +
                           slice * T::kQKSteps * 2 * kDecodeChunkBytes;
    const uint32_t v_cur = kv_base + ldsm_a_row(lane) * T::kPitch + ldsm_a_col8(lane) * kDecodeChunkBytes +
                           slice * T::kSliceDV * kElemBytes;
    float *const xch = reinterpret_cast<float *>(smem + T::kXchOffset);  // [warp][reg][lane]

    auto process_block = [&](auto stage_c, int i) {
        constexpr int kStage = decltype(stage_c)::value;
        constexpr int kK = kStage * T::kBlockBytes;
        const int blk = blk_begin + i;
        cp_async_wait<0>();  // this thread's copies of block i landed
        __syncthreads();     // ... and everyone's; every warp is done with block i - 1
        if (i + 1 < num_blocks) issue_block(Int<kStage ^ 1>{}, blk + 1);

        // S partial over the slice's dims: s: [16 rows, 16 keys] as two n8 C fragments, f32.
        float s[T::kSTiles][kCRegs];
        static_for<T::kQKSteps>([&](auto kk_c) {
            constexpr int kk = decltype(kk_c)::value;
            uint32_t a[kARegs], b[kLdsmMatrices];
            ldsm_x4<kk * 2 * kDecodeChunkBytes>(a, q_cur);
            ldsm_x4<kK + kk * 2 * kDecodeChunkBytes>(b, k_cur);
            if constexpr (kk == 0) {
                mma_16816_zero_c<Elem>(s[0], a, b[0], b[1]);
                mma_16816_zero_c<Elem>(s[1], a, b[2], b[3]);
            } else {
                mma_16816<Elem>(s[0], a, b[0], b[1]);
                mma_16816<Elem>(s[1], a, b[2], b[3]);
            }
        });
#pragma unroll
        for (int t = 0; t < T::kSTiles; ++t)
#pragma unroll
            for (int c = 0; c < kCRegs; ++c)
                xch[(warp * T::kSRegs + t * kCRegs + c) * kWarpSize + lane] = s[t][c];
        __syncthreads();  // every slice's partial is in the exchange
        // Full S: the row block's slices summed in slice order (the same bits in every slice).
#pragma unroll
        for (int t = 0; t < T::kSTiles; ++t)
#pragma unroll
            for (int c = 0; c < kCRegs; ++c) {
                float sum = xch[((rb * T::kSlices) * T::kSRegs + t * kCRegs + c) * kWarpSize + lane];
#pragma unroll
                for (int j = 1; j < T::kSlices; ++j)
                    sum += xch[((rb * T::kSlices + j) * T::kSRegs + t * kCRegs + c) * kWarpSize + lane];
                s[t][c] = sum;
            }

        const int n0 = blk * T::kKeys;
        modify_and_mask<false, true>(s, mask.shift, mod, alibi_log2, rows.qi, n0, mod.any(),
                                     needs_mask(n0), lane, [&](int h, int &lo, int &hi) {
                                         lo = rows.key_lo[h];
                                         hi = rows.key_hi[h];
                                     });
        if (want_entropy)
            softmax.template update<true>(s, o_acc, score_mul);
        else
            softmax.template update<false>(s, o_acc, score_mul);
        uint32_t pa[kARegs];
#pragma unroll
        for (int r = 0; r < kARegs; ++r) {
            const float(&st)[kCRegs] = s[p_tile_of_a_reg(0, r)];
            pa[r] = Elem::pack(st[p_c_of_a_reg(r)], st[p_c_of_a_reg(r) + 1]);
        }
        // O += P V: V = dims [slice x 128, + 128) of the staged rows.
        static_for<T::kPairTiles>([&](auto dp_c) {
            constexpr int dp = decltype(dp_c)::value;
            uint32_t b[kLdsmMatrices];
            ldsm_x4_trans<kK + dp * 2 * kDecodeChunkBytes>(b, v_cur);
            mma_16816<Elem>(o_acc[2 * dp], pa, b[0], b[1]);
            mma_16816<Elem>(o_acc[2 * dp + 1], pa, b[2], b[3]);
        });
    };

    if (num_blocks > 0) {
        issue_block(Int<0>{}, blk_begin);
        for (int i = 0; i < num_blocks; i += T::kStages) {
            process_block(Int<0>{}, i);
            if (i + 1 < num_blocks) process_block(Int<1>{}, i + 1);
        }
    }

    // ---- Epilogue: the warp's slice of O, and (slice 0) the row stats ----------------------
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h) {
        const RowResult res = softmax.finalize(h, score_mul, o_acc);
        if (!rows.valid[h]) continue;
        mla_store_row<Elem>(p, it, res, o_acc, h, rows.qi[h], rows.head[h], split, slice * T::kSliceDV,
                            slice == 0, v_mul, lane);
    }
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_FLASH_MLA_DECODE_CTA_CUH
