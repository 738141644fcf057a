/*
 * mla_decode_item.cuh: what the two MLA decode CTA bodies share apart from their tiles
 * (kernels/common/flash_mla_decode_cta.cuh, mma.sync; kernels/sm90/flash_mla_decode_sm90_cta.cuh,
 * wgmma): the batch item's lengths and offsets (device-resident values checked, a violation
 * traps), the split's visible keys and a tile's, the packed-row -> (query, head) mapping of a thread's two
 * C-fragment rows, one Q chunk, and the store of one finished row of O and its stats.
 *
 * Packed row r of an item = query i x hq + head: all hq heads of the one latent KV head.
 */
#ifndef FLASHMHA_COMMON_MLA_DECODE_ITEM_CUH
#define FLASHMHA_COMMON_MLA_DECODE_ITEM_CUH

#include <stdint.h>

#include "params.h"
#include "common/decode_traits.cuh"
#include "common/dtype.cuh"
#include "common/mask.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/state_merge.cuh"

namespace flashmha {

/* One batch item of an MLA decode: its new query rows, where they live, and its cache. */
struct MlaItem {
    int sq;         // new query rows (tokens) of the item
    int q_row0;     // first row in the [total_q] row space
    int rows;       // packed rows: hq x sq
    int cache_len;  // cached keys, checked against the block table's reach
    int64_t q_item, o_item, lse_item;  // element offsets of the item in q, o, lse / entropy
};

__device__ __forceinline__ MlaItem mla_item(const FlashDecodeParams &p, int batch) {
    MlaItem it;
    it.cache_len = p.cache_seqlens[batch];
    if (it.cache_len < 0 ||
        static_cast<int64_t>(it.cache_len) > static_cast<int64_t>(p.max_pages_per_seq) * p.page_size)
        __trap();
    if ((p.opt.flags & FLASHMHA_FLAG_VARLEN) != 0) {
        const SeqRows q = checked_seq_rows(p.cu_seqlens_q, batch, p.total_q, p.seqlen_q);
        it.sq = q.len;
        it.q_row0 = q.start;
        it.q_item = static_cast<int64_t>(q.start) * p.q_row_stride;
        it.o_item = static_cast<int64_t>(q.start) * p.o_row_stride;
        it.lse_item = q.start;
    } else {
        it.sq = p.seqlen_q;
        it.q_row0 = batch * p.seqlen_q;
        it.q_item = batch * p.q_batch_stride;
        it.o_item = batch * p.o_batch_stride;
        it.lse_item = batch * p.opt.lse_batch_stride;
    }
    it.rows = p.num_heads_q * it.sq;
    return it;
}

/* The item's key mask restricted to split `split`'s keys, divided as the paged decode divides
 * them (the combine is shared). */
__device__ __forceinline__ KeyMask mla_split_mask(const FlashDecodeParams &p, const MlaItem &it,
                                                  int split) {
    int per_split = p.split_keys;
    if (per_split <= 0) {
        const int share = (it.cache_len + p.num_splits - 1) / p.num_splits;
        per_split = (share + FLASHMHA_DECODE_SPLIT_ALIGN - 1) / FLASHMHA_DECODE_SPLIT_ALIGN *
                    FLASHMHA_DECODE_SPLIT_ALIGN;
        per_split = max(per_split, FLASHMHA_DECODE_SPLIT_ALIGN);
    }
    KeyMask mask(p.opt, it.sq, it.cache_len);
    const int64_t lo = static_cast<int64_t>(split) * per_split;
    const int64_t len = it.cache_len;
    mask.clamp_keys(static_cast<int>(min(lo, len)), static_cast<int>(min(lo + per_split, len)));
    return mask;
}

/* The keys one CTA of kTileRows packed rows from r0 reads: every row's visible keys lie in
 * [lo, hi) (the first row's query sees the fewest, the last row's the most). */
struct MlaTileKeys {
    int qi_first, qi_last;  // query indices of the tile's first and last rows
    int lo, hi;

    __device__ __forceinline__ MlaTileKeys(const KeyMask &mask, const MlaItem &it, int group, int r0,
                                           int tile_rows) {
        qi_first = r0 / group;
        qi_last = (min(r0 + tile_rows, it.rows) - 1) / group;
        lo = mask.key_lo(qi_first);
        hi = mask.key_hi(qi_last);
    }
};

/* A thread's two C-fragment rows (groupID, groupID + 8 of the m16 block starting at packed
 * row `block_row0`): query index, head, validity and visible keys. */
struct MlaRows {
    int qi[kRowHalves], head[kRowHalves], key_lo[kRowHalves], key_hi[kRowHalves];
    bool valid[kRowHalves];

    __device__ __forceinline__ MlaRows(const KeyMask &mask, const MlaItem &it, int group,
                                       int block_row0, int lane) {
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            const int r = block_row0 + mma_c_row(lane, mma_c_index(h, 0));
            qi[h] = r / group;
            head[h] = r - qi[h] * group;
            valid[h] = r < it.rows;
            key_lo[h] = valid[h] ? mask.key_lo(qi[h]) : 0;
            key_hi[h] = valid[h] ? mask.key_hi(qi[h]) : 0;
        }
    }
};

/* 16-byte chunk c of packed row r's query (576 dims = 72 chunks); zeros past the item. */
__device__ __forceinline__ uint4 mla_q_chunk(const FlashDecodeParams &p, const MlaItem &it, int r, int c) {
    if (r >= it.rows) return make_uint4(0, 0, 0, 0);
    const int qi = r / p.num_heads_q;
    const int head = r - qi * p.num_heads_q;
    const elem_bits_t *src = static_cast<const elem_bits_t *>(p.q) + it.q_item + qi * p.q_row_stride +
                             head * p.q_head_stride;
    return *reinterpret_cast<const uint4 *>(src + c * kDecodeChunkElems);
}

/* Stores row half h of a finished row: this thread's columns of O (o: [kOTiles n8 tiles] of the
 * warp's output dims starting at col_base) and, if `writes_stats` (one slice of the row), its
 * LSE / entropy, either as the split's partial state for the combine or as the final output.
 * The head's sink joins split 0's state only (the combine merges it once). v_mul is the FP8
 * value scale (1 for 16-bit pages). With `stage_row` (the row's 512 dims in shared memory), the
 * final O goes there instead, for the caller's coalesced copy (the sm_90a kernel: 4-byte stores
 * of 8 rows per warp instruction fill half of each 32-byte sector). */
template <class Elem, int kOTiles>
__device__ __forceinline__ void mla_store_row(const FlashDecodeParams &p, const MlaItem &it,
                                              RowResult res, const float (&o)[kOTiles][kCRegs],
                                              int h, int qi, int head, int split, int col_base,
                                              bool writes_stats, float v_mul, int lane,
                                              elem_bits_t *stage_row = nullptr) {
    if (split == 0) res = with_sink(p.opt, head, res);
    const int c0 = mma_c_index(h, 0);
    const int col0 = col_base + mma_c_col(lane, c0);
    const int64_t grow = it.q_row0 + qi;  // row in the [total_q] row space
    if ((p.opt.flags & FLASHMHA_DECODE_FLAG_SPLIT_OUTPUT) != 0) {
        const int64_t state = (static_cast<int64_t>(split) * p.total_q + grow) * p.num_heads_q + head;
        if (res.lse != neg_inf()) {
#pragma unroll
            for (int ot = 0; ot < kOTiles; ++ot)
                *reinterpret_cast<float2 *>(p.partial_o + state * FLASHMHA_MLA_D_V + col0 + ot * kMmaN) =
                    make_float2(o[ot][c0] * res.inv_sum * v_mul, o[ot][c0 + 1] * res.inv_sum * v_mul);
        }
        if (writes_stats && lane_in_quad(lane) == 0) {
            p.partial_lse[state] = res.lse;
            if (p.partial_entropy != nullptr) p.partial_entropy[state] = res.entropy;
        }
    } else {
        const float w = res.inv_sum * v_mul * (p.opt.head_gates != nullptr ? p.opt.head_gates[head] : 1.0f);
        elem_bits_t *dst = stage_row != nullptr ? stage_row + col0
                                                : static_cast<elem_bits_t *>(p.o) + it.o_item +
                                                      qi * p.o_row_stride + head * p.o_head_stride + col0;
#pragma unroll
        for (int ot = 0; ot < kOTiles; ++ot)
            // Adding +0 turns the -0 of a zero gate into +0 (as the paged decode).
            *reinterpret_cast<uint32_t *>(dst + ot * kMmaN) =
                Elem::pack(__fadd_rn(o[ot][c0] * w, 0.0f), __fadd_rn(o[ot][c0 + 1] * w, 0.0f));
        if (writes_stats && lane_in_quad(lane) == 0) {
            const int64_t stat = it.lse_item + head * p.opt.lse_head_stride + qi;
            if (p.opt.lse != nullptr) p.opt.lse[stat] = res.lse;
            if (p.opt.entropy != nullptr) p.opt.entropy[stat] = res.entropy;
        }
    }
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_MLA_DECODE_ITEM_CUH
