/*
 * flash_bwd_cta.cuh: the body of one backward CTA (FlashAttention-2 style, issue 21), for the
 * Ampere-and-newer entries of kernels/sm80/flash_bwd.cu. Traits: kernels/common/bwd_traits.cuh.
 *
 * One CTA owns block_n = 16 x num_warps keys of one kv head of one batch item
 * (grid = (ceil(seqlen_k / block_n), num_heads_kv, batch)); warps work in pairs, pair g on keys
 * 32g .. 32g + 31, warp x of a pair on query half x of every block_m-row tile (BwdTraits).
 * K and V are loaded once. For every query head of the kv head's group (GQA: dK and dV are summed
 * over the group in registers, no workspace and no atomics for them) and every query tile of
 * block_m rows that sees one of the CTA's keys, it loads Q, dO, the forward's LSE and delta =
 * rowsum(dO * O) (kernels/common/bwd_rows.cuh), and per warp, all f32-accumulated on mma.m16n8k16
 * over a 32-key x (block_m / 2)-query tile (one ldmatrix per two mma):
 *   S^T  = K Q^T              (A: the pair's K rows; B: the half's Q rows, both ldmatrix)
 *   P^T  = exp(x - LSE), x the forward's score (scale S^T, or through softcap / ALiBi:
 *          score_grad.cuh), masked keys 0 (recomputed, never stored in global memory)
 *   dP^T = gate V dO^T            (gate: the head's output gate, 1 without)
 *   dS^T = P^T * (dP^T - delta) * x'   (x' the softcap's derivative, 1 without)
 *          (dP^T first, then S^T; above d64 dP^T waits in an f32 shared-memory stash meanwhile;
 *          P^T, dS^T and gate P^T formed in f32 and rounded once)
 *   dV  += gate P^T dO,  dK += dS^T Q   (own half: A straight from the registers, mma.cuh P
 *          reuse; from d64 on each warp of a pair keeps half of the dims and also takes the
 *          partner's half, P^T and dS^T read from shared memory; up to d32 each keeps all dims
 *          of its own half and the pair adds up in the epilogue)
 *   dQ  += dS K: dS^T is stored once ([block_n, block_m], 32-bit stores of the C pairs) and read
 *          back as dS through ldmatrix.trans, in items of 32 query rows x 32 dims dealt to the
 *          warps, added into the f32 dq_accum with atomics (red.global.add.f32) or stored into
 *          this key block's slice (deterministic mode).
 * The epilogue writes dK (times the softmax scale: S = scale Q K^T) and dV in the element type;
 * the caller's third launch converts dq_accum (flash_bwd_convert_dq).
 * Masks: the forward's KeyMask (kernels/common/mask.cuh), bottom-right aligned. Query tiles that
 * see none of the CTA's keys are skipped; keys past seqlen_k and query rows past seqlen_q are
 * zero-filled and masked; a row whose forward LSE is -inf (no visible key) gets P = 0.
 */
#ifndef FLASHMHA_COMMON_FLASH_BWD_CTA_CUH
#define FLASHMHA_COMMON_FLASH_BWD_CTA_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/smem_layout.cuh"
#include "common/softmax.cuh"
#include "common/mask.cuh"
#include "common/codegen.cuh"
#include "common/cta_prologue.cuh"
#include "common/bwd_traits.cuh"
#include "common/bwd_rows.cuh"
#include "common/score_grad.cuh"

namespace flashmha {

/* Query rows [begin, end) of an item (sq rows, sk keys) that see key j under `mask`: row i sees
 * j iff key_lo(i) <= j < key_hi(i) (mask.cuh), and both bounds are nondecreasing in i, so the
 * rows are an interval, itself nondecreasing in j. Empty for j >= sk (a zero-filled key). 64-bit
 * before the clamp: j - shift + left may exceed int32. */
struct RowRange {
    int begin;
    int end;
};
__device__ __forceinline__ RowRange rows_seeing_key(const KeyMask &mask, int sq, int sk, int j) {
    if (j >= sk) return RowRange{0, 0};
    int64_t b = 0;
    int64_t e = sq;
    // key_hi(i) = min(i + shift + right + 1, sk) > j  <=>  i >= j - shift - right
    if (mask.has_right) b = max(b, static_cast<int64_t>(j) - mask.shift - mask.right);
    // key_lo(i) = max(i + shift - left, 0) <= j  <=>  i <= j - shift + left
    if (mask.has_left) e = max(min(e, static_cast<int64_t>(j) - mask.shift + mask.left + 1),
                               static_cast<int64_t>(0));
    return RowRange{static_cast<int>(min(b, e)), static_cast<int>(e)};
}

/* Byte offsets, within a [kRows x kCols] swizzled tile, of the 32-bit stores of one thread's
 * C fragments: element (row0 + r, col0 + nt * 8 + 2 * threadID_in_group) for the n8 tiles nt of
 * a warp, row0 and r multiples of 8 apart from groupID (so the swizzle is that of groupID). */
template <class Tile, int kTiles>
struct CStoreOffsets {
    uint32_t off[kTiles];
    __device__ __forceinline__ CStoreOffsets(int row, int col0, int lane) {
#pragma unroll
        for (int nt = 0; nt < kTiles; ++nt)
            off[nt] = Tile::elem_offset(row, col0 + nt * kMmaN + mma_c_col(lane, 0));
    }
};

template <class T>
__device__ __forceinline__ void flash_bwd_cta(const FlashBwdParams &params) {
    using Elem = typename T::Elem;
    using RowTile = typename T::RowTile;
    using KVTile = typename T::KVTile;
    using DsTile = typename T::DsTile;
    constexpr int kBlockM = T::kBlockM;
    constexpr int kBlockN = T::kBlockN;
    constexpr int kHalf = T::kHalfRows;
    constexpr int kKB = T::kKeyBlocks;
    constexpr int kQT = T::kQTiles;
    constexpr int kSplit = T::kDSplit;
    constexpr int kWP = T::kWarpPairs;

    // [K | V | Q | dO | dS^T | P^T | lse | delta], layout in BwdTraits.
    extern __shared__ __align__(128) unsigned char smem[];

    const int d_real = params.head_dim;
    cta_prologue<T::kSmemBytes, T::kHeadDim, kChunkElems>(d_real);
    const int col8_valid = d_real / kChunkElems;

    const int tid = threadIdx.x;
    const int lane = lane_of(tid);
    const int warp = warp_of(tid);
    const int kg = warp / 2;     // the warp pair: keys 32 kg .. + 32 of the CTA
    const int half = warp % 2;   // the warp's query half of every tile (and dim-pair parity)
    const int n_block = blockIdx.x;
    const int kv_head = blockIdx.y;
    const int batch = blockIdx.z;

    const SeqExtent ext = seq_extent(params, batch);
    const int n0 = n_block * kBlockN;  // first key of this CTA within the item
    if (n0 >= ext.sk) return;          // varlen: item shorter than the grid (CTA-uniform)
    const int keys_valid = min(ext.sk - n0, kBlockN);
    const bool varlen = (params.opt.flags & FLASHMHA_FLAG_VARLEN) != 0;
    const int group = params.num_heads_q / params.num_heads_kv;

    // k, v, dk, dv: [block_n, d] tiles of this CTA (64-bit element offsets of their row 0).
    const int64_t k_off = (varlen ? 0 : batch * params.k_batch_stride) +
                          (ext.k_row0 + n0) * params.k_row_stride + kv_head * params.k_head_stride;
    const int64_t v_off = (varlen ? 0 : batch * params.v_batch_stride) +
                          (ext.k_row0 + n0) * params.v_row_stride + kv_head * params.v_head_stride;
    const uint64_t k_tile = gmem_addr(params.k) + k_off * kElemBytes;
    const uint64_t v_tile = gmem_addr(params.v) + v_off * kElemBytes;
    const uint32_t smem_base = smem_addr(smem);

    // K and V once (one cp.async group; waited for with the first query tile, or at the end).
    using KVCopy = TileCopy<KVTile, T::kThreads>;
    {
        const KVCopy kv_copy(smem_base, tid);
        kv_copy.template copy<T::kKOffset>(kv_copy.source(params.k_row_stride, tid), k_tile,
                                           keys_valid, col8_valid, k_tile, tid);
        kv_copy.template copy<T::kVOffset>(kv_copy.source(params.v_row_stride, tid), v_tile,
                                           keys_valid, col8_valid, v_tile, tid);
        cp_async_commit();
    }

    // The thread's four keys within the CTA: 32 kg + 16 kb + groupID + 8 h.
    auto key_of = [&](int kb, int h) { return kg * T::kPairKeys + kb * kMmaM + quad_id(lane) + h * kMmaMHalf; };

    // Which query rows see which of the CTA's keys: the rows of its first and last key bound
    // the query tiles worth visiting; the rows that see every one of its keys (none when the
    // block has keys past sk) need no per-element mask; edge tiles find the row ranges of the
    // thread's keys again (from the params: no registers held through the main loop).
    int row_begin, row_end, full_begin, full_end;  // query rows, within the item
    {
        const KeyMask mask(params.opt, ext.sq, ext.sk);
        const RowRange first = rows_seeing_key(mask, ext.sq, ext.sk, n0);
        const RowRange last = rows_seeing_key(mask, ext.sq, ext.sk, n0 + keys_valid - 1);
        const RowRange last_padded = rows_seeing_key(mask, ext.sq, ext.sk, n0 + kBlockN - 1);
        // Both ends are nondecreasing in the key (empty ranges included: [e, e) with e the
        // clamped end), so the first and last keys bound the union and the intersection.
        row_begin = first.begin;
        row_end = last.end;
        full_begin = last_padded.begin;
        full_end = min(first.end, last_padded.end);
    }
    const int m_begin = row_begin / kBlockM;
    const int m_end = row_end > row_begin ? (row_end + kBlockM - 1) / kBlockM : m_begin;

    // Fragment cursors (mma.cuh patterns; every d-wide tile shares one row layout, BwdTraits).
    // Row offsets that are multiples of 8 and chunk offsets whose bits lie above the cursor's
    // low chunk bit (2 half, 4 half) fold into the constructor: no carries, so the XOR of the
    // swizzle distributes (smem_layout.cuh cursor algebra).
    using Cursor = SwizzleCursor<KVTile>;
    using DsCursor = SwizzleCursor<DsTile>;
    //  - K / V rows of the pair (A, plain); Q / dO rows of the half as B of S^T / dP^T through
    //    the same cursor moved to the half's rows (the A pattern delivers the B fragments of
    //    two n8 query tiles in registers (0, 2) and (1, 3));
    const Cursor cur_kv(smem_base, kg * T::kPairKeys + ldsm_a_row(lane), ldsm_a_col8(lane));
    //  - dO / Q rows of the own and the partner half as B of dV / dK (.trans), at the warp's
    //    dim pairs: all (split 1), p = 2j + half (split 2);
    constexpr int kPairStep = 2 * kSplit;  // chunks between the warp's dim pairs
    const int pair_col8 = kSplit == 2 ? 2 * half : 0;
    const Cursor cur_own(smem_base, half * kHalf + ldsm_a_row(lane), ldsm_a_col8(lane) + pair_col8);
    //  - the partner's P^T / dS^T (A, plain: the pair's keys, the other query half) and dQ's
    //    dS (A, as dS^T through .trans, B pattern) and K (B, .trans) cursors are formed where
    //    used, from an opaque copy of the lane (a few instructions a tile instead of registers
    //    held through the loop: the d80-d128 entries are at the 255-register edge).

    // dK, dV: [32 keys of the pair, the warp's dim pairs] as n8 C fragments, f32.
    float dk_acc[kKB][2 * kWP][kCRegs];
    float dv_acc[kKB][2 * kWP][kCRegs];
    zero_c_fragments(dk_acc);
    zero_c_fragments(dv_acc);

    const float scale_log2 = params.opt.scale_log2;
    const ScoreModGrad mod_grad(params.opt);
    const bool want_mod = mod_grad.any();
    // First q row of the item in the q-side tensors' row numbering (dq_accum's rows).
    const int64_t q_item_row0 = varlen ? ext.q_row0 : static_cast<int64_t>(batch) * params.seqlen_q;
    // Deterministic mode (dq_slices > 1, params.h): this key block's own dQ slice, plain
    // stores; otherwise the one accumulator, f32 atomics.
    const bool dq_sliced = params.dq_slices > 1;
    float *const dq_slice =
        params.dq_accum + (dq_sliced ? n_block * static_cast<int64_t>(params.total_q) *
                                           params.num_heads_q * d_real
                                     : 0);


    using RowCopy = TileCopy<RowTile, T::kThreads>;
    const RowCopy row_copy(smem_base, tid);

    for (int hg = 0; hg < group; ++hg) {
        const int head = kv_head * group + hg;
        const float alibi_log2 = mod_grad.alibi_log2(params.opt, head);
        // Head gate (params.h): O = gate O_u, so dV and dP = dO V^T carry the gate; d(gate) =
        // sum over the head's rows of dO . O_u = sum_ij P_ij dP_u,ij, accumulated per thread.
        const bool gated = params.opt.head_gates != nullptr || params.d_head_gates != nullptr;
        const float gate = params.opt.head_gates != nullptr ? params.opt.head_gates[head] : 1.0f;
        float gate_grad = 0.0f;
        for (int m_block = m_begin; m_block < m_end; ++m_block) {
            const int m0 = m_block * kBlockM;
            // The head's 64-bit offsets, formed again per tile from an opaque copy of the head
            // (a few instructions a tile): held through the loop they cost registers the
            // accumulators need (0 spills).
            int hb = head;
            asm volatile("" : "+r"(hb));
            const int64_t q_off = (varlen ? 0 : batch * params.q_batch_stride) +
                                  ext.q_row0 * params.q_row_stride + hb * params.q_head_stride;
            const int64_t do_off = (varlen ? 0 : batch * params.do_batch_stride) +
                                   ext.q_row0 * params.do_row_stride + hb * params.do_head_stride;
            const int64_t stat_off = (varlen ? 0 : batch * params.opt.lse_batch_stride) +
                                     hb * params.opt.lse_head_stride + ext.q_row0;
            const int rows_valid = min(ext.sq - m0, kBlockM);
            // Q, dO tiles of rows m0 ..; rows past sq zero-filled.
            const uint64_t q_tile = gmem_addr(params.q) + (q_off + m0 * params.q_row_stride) * kElemBytes;
            const uint64_t do_tile =
                gmem_addr(params.d_o) + (do_off + m0 * params.do_row_stride) * kElemBytes;
            row_copy.template copy<T::kQOffset>(row_copy.source(params.q_row_stride, tid), q_tile,
                                                rows_valid, col8_valid, q_tile, tid);
            row_copy.template copy<T::kDoOffset>(row_copy.source(params.do_row_stride, tid),
                                                 do_tile, rows_valid, col8_valid, do_tile, tid);
            cp_async_commit();
            // -lse in log2 units (0 for rows past sq and rows with no visible key, whose keys are
            // all masked: exp2(-inf + 0) = 0, never -inf + inf), delta (0 past sq).
            for (int r = tid; r < kBlockM; r += T::kThreads) {
                float l2 = 0.0f;
                float dl = 0.0f;
                if (r < rows_valid) {
                    const float lse = params.opt.lse[stat_off + m0 + r];
                    l2 = lse == neg_inf() ? 0.0f : -lse * kLog2e;
                    dl = params.delta[stat_off + m0 + r];
                }
                reinterpret_cast<float *>(smem + T::kLseOffset)[r] = l2;
                reinterpret_cast<float *>(smem + T::kDeltaOffset)[r] = dl;
            }
            cp_async_wait<0>();  // this thread's Q, dO (and, first time, K, V) copies landed
            __syncthreads();     // ... and every thread's, and lse / delta are visible

            // dP^T = V dO^T, then S^T = K Q^T: [32 keys of the pair, block_m / 2 queries of the
            // half], f32.
            // The half's first Q / dO row relative to the pair's first K / V row.
            const uint32_t q_shift =
                static_cast<uint32_t>((half * kHalf - kg * T::kPairKeys) * KVTile::kRowBytes);
            auto tile_mma = [&](auto off_a_c, auto off_b_c, float (&acc)[kKB][kQT][kCRegs]) {
                constexpr int kOffA = decltype(off_a_c)::value;
                constexpr int kOffB = decltype(off_b_c)::value;
                static_for<T::kDSteps>([&](auto kk_c) {
                    constexpr int kk = decltype(kk_c)::value;
                    constexpr int kCol8 = kk * (kMmaK / kChunkElems);
                    uint32_t a[kKB][kARegs];
                    static_for<kKB>([&](auto kb_c) {
                        constexpr int kb = decltype(kb_c)::value;
                        ldsm_x4<kOffA + Cursor::template imm<kb * kMmaM, kCol8>()>(
                            a[kb], cur_kv.template reg<kCol8>());
                    });
                    static_for<kQT / 2>([&](auto jp_c) {
                        constexpr int jp = decltype(jp_c)::value;
                        constexpr int kRow = jp * 2 * kMmaN;  // two n8 query tiles per ldmatrix.x4
                        uint32_t b[kLdsmMatrices];
                        ldsm_x4<kOffB + Cursor::template imm<kRow, kCol8>()>(
                            b, cur_kv.template reg<kCol8>() + q_shift);
                        static_for<kKB>([&](auto kb_c) {
                            constexpr int kb = decltype(kb_c)::value;
                            if constexpr (kk == 0) {
                                mma_16816_zero_c<Elem>(acc[kb][2 * jp], a[kb], b[0], b[2]);
                                mma_16816_zero_c<Elem>(acc[kb][2 * jp + 1], a[kb], b[1], b[3]);
                            } else {
                                mma_16816<Elem>(acc[kb][2 * jp], a[kb], b[0], b[2]);
                                mma_16816<Elem>(acc[kb][2 * jp + 1], a[kb], b[1], b[3]);
                            }
                        });
                    });
                });
            };
            const int q_half0 = m0 + half * kHalf;  // the half's first query within the item
            int lane_o = lane;  // opaque: what is formed from it stays in the tile
            asm volatile("" : "+r"(lane_o));
            // -lse2 and delta of the half's queries (formed per tile, like everything from lane_o)
            const float *const lse_smem =
                reinterpret_cast<const float *>(smem + T::kLseOffset) + half * kHalf + mma_c_col(lane_o, 0);
            const float *const delta_smem =
                reinterpret_cast<const float *>(smem + T::kDeltaOffset) + half * kHalf + mma_c_col(lane_o, 0);
            // The thread's 32-bit stores of its C pairs into [keys, queries] tiles: rows
            // key_of(kb, h), its half's queries (the tile's n8 query tile t).
            const CStoreOffsets<DsTile, kQT> st_off(kg * T::kPairKeys + quad_id(lane_o), half * kHalf, lane_o);
            // Register r of A k-step kk of key block kb: rows + 16 kb + 8 (r & 1) (mma.cuh P reuse).
            auto c_pair_offset = [&](int kb, int kk, int r) {
                return st_off.off[p_tile_of_a_reg(kk, r)] +
                       static_cast<uint32_t>((kb * kMmaM + (r & 1) * kMmaMHalf) * DsTile::kRowBytes);
            };
            // f(kb, kk, r, t, c) for every A register r of k-step kk of key block kb, packing C
            // pair c, c + 1 of n8 query tile t (mma.cuh P reuse).
            auto for_each_a_reg = [&](auto f) {
#pragma unroll
                for (int kb = 0; kb < kKB; ++kb)
#pragma unroll
                    for (int kk = 0; kk < T::kQSteps; ++kk)
#pragma unroll
                        for (int r = 0; r < kARegs; ++r) f(kb, kk, r, p_tile_of_a_reg(kk, r), p_c_of_a_reg(r));
            };

            // dP_u^T = V dO^T first; above d64 (BwdTraits::kStashP) it waits in the f32 stash
            // while S^T is computed (one f32 tile live beside the dK / dV accumulators: 0 spills
            // at d80-d128); up to d64 both tiles stay in registers.
            // The thread's stash slot of C pair i (for_each_a_reg order): [warp][i][lane] float2.
            auto stash_of = [&](int kb, int kk, int r) {
                const int i = (kb * T::kQSteps + kk) * kARegs + r;
                return reinterpret_cast<float2 *>(smem + T::kStashOffset) +
                       (warp * kKB * T::kQSteps * kARegs + i) * kWarpSize + lane_o;
            };
            float dpt[kKB][kQT][kCRegs];
            tile_mma(Int<T::kVOffset>{}, Int<T::kDoOffset>{}, dpt);
            if constexpr (T::kStashP)
                for_each_a_reg([&](int kb, int kk, int r, int t, int c) {
                    *stash_of(kb, kk, r) = make_float2(dpt[kb][t][c], dpt[kb][t][c + 1]);
                });
            float st[kKB][kQT][kCRegs];
            tile_mma(Int<T::kKOffset>{}, Int<T::kQOffset>{}, st);

            // Edge tiles first set the raw scores of the keys a row cannot see to -inf (keys past
            // sk, rows past sq included), so that P = 0 there below.
            if (m0 < full_begin || m0 + kBlockM > full_end) {
                const KeyMask mask(params.opt, ext.sq, ext.sk);
#pragma unroll
                for (int kb = 0; kb < kKB; ++kb)
#pragma unroll
                    for (int h = 0; h < kRowHalves; ++h) {
                        const RowRange rr = rows_seeing_key(mask, ext.sq, ext.sk, n0 + key_of(kb, h));
#pragma unroll
                        for (int nt = 0; nt < kQT; ++nt)
#pragma unroll
                            for (int e = 0; e < kPairElems; ++e) {
                                const int row = q_half0 + nt * kMmaN + mma_c_col(lane, 0) + e;
                                if (row < rr.begin || row >= rr.end)
                                    st[kb][nt][mma_c_index(h, e)] = neg_inf();
                            }
                    }
            }

            // Per element, all in f32 and rounded once into the A fragments of dK / dV:
            //   P^T  = 2^(x - lse2), x the log2-domain score (scale_log2 S^T, or through the
            //          softcap / ALiBi modifiers, x' their derivative: score_grad.cuh);
            //   dS^T = P^T (gate dP_u^T - delta) x', gate P^T, d(gate) += P^T dP_u^T
            // (gate: the head's output gate); both stored as they are formed into shared memory
            // as 32-bit C pairs: dS^T for dQ, gate P^T (split 2) for dV of the pair's warps.
            uint32_t ds_a[kKB][T::kQSteps][kARegs];
            uint32_t p_a[kKB][T::kQSteps][kARegs];
            auto scores_to_ds = [&](auto mod_c, auto gate_c) {
                constexpr bool kMod = decltype(mod_c)::value != 0;
                constexpr bool kGate = decltype(gate_c)::value != 0;
                // -lse2 and delta of the thread's query pairs, loaded once: the pass's shared
                // stores could alias them, so the compiler would reload them per key block.
                float2 l2s[kQT];
                float2 dls[kQT];
#pragma unroll
                for (int t = 0; t < kQT; ++t) {
                    l2s[t] = *reinterpret_cast<const float2 *>(lse_smem + t * kMmaN);
                    dls[t] = *reinterpret_cast<const float2 *>(delta_smem + t * kMmaN);
                }
                for_each_a_reg([&](int kb, int kk, int r, int t, int c) {
                            const int col = t * kMmaN + mma_c_col(lane, 0);  // the pair's first query
                            const float2 l2 = l2s[t];
                            const float2 dl = dls[t];
                            float dp[kPairElems];
                            if constexpr (T::kStashP) {
                                const float2 v = *stash_of(kb, kk, r);
                                dp[0] = v.x;
                                dp[1] = v.y;
                            } else {
                                dp[0] = dpt[kb][t][c];
                                dp[1] = dpt[kb][t][c + 1];
                            }
                            float p[kPairElems];
                            float ds[kPairElems];
#pragma unroll
                            for (int e = 0; e < kPairElems; ++e) {
                                const float s_raw = st[kb][t][c + e];
                                const float neg_l2 = e ? l2.y : l2.x;
                                float x;
                                float grad = 1.0f;
                                if constexpr (kMod) {
                                    // ALiBi distance |i + shift - j| with shift = sk - sq.
                                    const ModifiedScore ms = mod_grad.modify(
                                        s_raw, n0 + key_of(kb, r & 1) - (ext.sk - ext.sq) - (q_half0 + col + e),
                                        alibi_log2);
                                    // a masked score (-inf) stays -inf through the softcap
                                    x = s_raw == neg_inf() ? neg_inf() : ms.x + neg_l2;
                                    grad = ms.grad;
                                } else {
                                    x = fmaf(s_raw, scale_log2, neg_l2);
                                }
                                p[e] = fast_exp2(x);
                                const float d = e ? dl.y : dl.x;
                                if constexpr (kGate) {
                                    gate_grad = fmaf(p[e], dp[e], gate_grad);
                                    ds[e] = p[e] * fmaf(gate, dp[e], -d);
                                } else {
                                    ds[e] = p[e] * (dp[e] - d);
                                }
                                if constexpr (kMod) ds[e] *= grad;
                            }
                            ds_a[kb][kk][r] = Elem::pack(ds[0], ds[1]);
                            // dV takes gate P^T
                            if constexpr (kGate)
                                p_a[kb][kk][r] = Elem::pack(p[0] * gate, p[1] * gate);
                            else
                                p_a[kb][kk][r] = Elem::pack(p[0], p[1]);
                            const uint32_t off = c_pair_offset(kb, kk, r);
                            *reinterpret_cast<uint32_t *>(smem + T::kDsOffset + off) = ds_a[kb][kk][r];
                            if constexpr (kSplit == 2)
                                *reinterpret_cast<uint32_t *>(smem + T::kPOffset + off) = p_a[kb][kk][r];
                });
            };
            auto ds_with_gate = [&](auto mod_c) {
                if (gated)
                    scores_to_ds(mod_c, Int<1>{});
                else
                    scores_to_ds(mod_c, Int<0>{});
            };
            if (want_mod)
                ds_with_gate(Int<1>{});
            else
                ds_with_gate(Int<0>{});
            // dV += P^T dO and dK += dS^T Q over a query half: B = dO / Q [queries, d] through
            // ldmatrix.trans, A from `a_of`.
            auto accumulate_half = [&](uint32_t shift, auto a_of) {
                static_for<T::kQSteps>([&](auto kk_c) {
                    constexpr int kk = decltype(kk_c)::value;
                    constexpr int kRow = kk * kMmaK;  // queries of this k16 step, in the half
                    uint32_t pa[kKB][kARegs];
                    uint32_t da[kKB][kARegs];
                    a_of(Int<kk>{}, pa, da);
                    static_for<kWP>([&](auto j_c) {
                        constexpr int j = decltype(j_c)::value;
                        constexpr int kCol8 = j * kPairStep;
                        if (kSplit * j + half * (kSplit - 1) >= T::kDPairs) return;  // d80 tail
                        uint32_t b[kLdsmMatrices];
                        ldsm_x4_trans<T::kDoOffset + Cursor::template imm<kRow, kCol8>()>(
                            b, cur_own.template reg<kCol8>() + shift);
                        static_for<kKB>([&](auto kb_c) {
                            constexpr int kb = decltype(kb_c)::value;
                            mma_16816<Elem>(dv_acc[kb][2 * j], pa[kb], b[0], b[1]);
                            mma_16816<Elem>(dv_acc[kb][2 * j + 1], pa[kb], b[2], b[3]);
                        });
                        ldsm_x4_trans<T::kQOffset + Cursor::template imm<kRow, kCol8>()>(
                            b, cur_own.template reg<kCol8>() + shift);
                        static_for<kKB>([&](auto kb_c) {
                            constexpr int kb = decltype(kb_c)::value;
                            mma_16816<Elem>(dk_acc[kb][2 * j], da[kb], b[0], b[1]);
                            mma_16816<Elem>(dk_acc[kb][2 * j + 1], da[kb], b[2], b[3]);
                        });
                    });
                });
            };
            // A of a half's P^T / dS^T from shared memory (plain: the pair's keys, the half's
            // queries), the half's Q / dO rows through the own cursor moved by +-32 rows.
            auto accumulate_half_from_smem = [&](int h) {
                const DsCursor cur_pt(smem_base, kg * T::kPairKeys + ldsm_a_row(lane_o),
                                      ldsm_a_col8(lane_o) + h * (kHalf / kChunkElems));
                const uint32_t shift = static_cast<uint32_t>((h - half) * kHalf * KVTile::kRowBytes);
                accumulate_half(shift, [&](auto kk_c, uint32_t (&pa)[kKB][kARegs], uint32_t (&da)[kKB][kARegs]) {
                    constexpr int kCol8 = decltype(kk_c)::value * (kMmaK / kChunkElems);
                    static_for<kKB>([&](auto kb_c) {
                        constexpr int kb = decltype(kb_c)::value;
                        ldsm_x4<T::kPOffset + DsCursor::template imm<kb * kMmaM, kCol8>()>(
                            pa[kb], cur_pt.template reg<kCol8>());
                        ldsm_x4<T::kDsOffset + DsCursor::template imm<kb * kMmaM, kCol8>()>(
                            da[kb], cur_pt.template reg<kCol8>());
                    });
                });
            };
            if constexpr (T::kStashP) {
                // Above d64 the own half's fragments come back from shared memory too (held in
                // registers from the elementwise pass on, the 64-row tile spills 12 B): both
                // halves after the barrier.
                __syncthreads();  // every warp's dS^T and P^T are in shared memory
                accumulate_half_from_smem(half);
                accumulate_half_from_smem(1 - half);
            } else {
                // The own half straight from the registers (mma.cuh P reuse), then (split 2) the
                // partner's.
                accumulate_half(0u, [&](auto kk_c, uint32_t (&pa)[kKB][kARegs], uint32_t (&da)[kKB][kARegs]) {
#pragma unroll
                    for (int kb = 0; kb < kKB; ++kb)
#pragma unroll
                        for (int r = 0; r < kARegs; ++r) {
                            pa[kb][r] = p_a[kb][decltype(kk_c)::value][r];
                            da[kb][r] = ds_a[kb][decltype(kk_c)::value][r];
                        }
                });
                __syncthreads();  // every warp's dS^T (and P^T) is in shared memory
                if constexpr (kSplit == 2) accumulate_half_from_smem(1 - half);
            }

            // dQ += dS K in items of 32 query rows x two dim pairs, dealt to the warps in turn,
            // into dq_accum (atomics, or this key block's slice).
            // A rolled loop over the warp's items (unrolled, the compiler overlaps them and the
            // d128 entry spills): row block and dim chunk are runtime offsets folded into the
            // item's cursors (whole 8-row and 4-chunk steps: the swizzle algebra above).
#pragma unroll 1
            for (int item = warp; item < T::kDqItems; item += T::kNumWarps) {
                const int rb = item / T::kDqChunks;
                const int chunk = item % T::kDqChunks;
                const bool second_pair = 2 * chunk + 1 < T::kDPairs;  // d80: the last chunk has one
                constexpr int kPairs = 2;
                const DsCursor cur_dq(smem_base, ldsm_b_row(lane_o),
                                      ldsm_b_col8(lane_o) + rb * (T::kPairKeys / kChunkElems));
                const Cursor cur_kc(smem_base, ldsm_a_row(lane_o), ldsm_a_col8(lane_o) + chunk * 4);
                float acc[kKB][2 * kPairs][kCRegs];
                // One k16 key step (dS^T rows and K rows from `ks`). The steps after the first run
                // as a rolled loop: unrolled, the compiler hoists every step's fragments at once
                // and the d128 entry spills; rolled, a step costs two adds.
                auto key_step = [&](int ks, auto first_c) {
                    const uint32_t ds_rows = static_cast<uint32_t>(ks * kMmaK * DsTile::kRowBytes);
                    const uint32_t k_rows = static_cast<uint32_t>(ks * kMmaK * KVTile::kRowBytes);
                    uint32_t a[kKB][kARegs];
                    static_for<kKB>([&](auto mb_c) {
                        constexpr int mb = decltype(mb_c)::value;
                        constexpr int kQCol8 = mb * kMmaM / kChunkElems;
                        ldsm_x4_trans<T::kDsOffset + DsCursor::template imm<0, kQCol8>()>(
                            a[mb], cur_dq.template reg<kQCol8>() + ds_rows);
                    });
                    static_for<kPairs>([&](auto pp_c) {
                        constexpr int pp = decltype(pp_c)::value;
                        constexpr int kCol8 = pp * (kMmaK / kChunkElems);
                        if (pp == 1 && !second_pair) return;
                        uint32_t b[kLdsmMatrices];
                        ldsm_x4_trans<T::kKOffset + Cursor::template imm<0, kCol8>()>(
                            b, cur_kc.template reg<kCol8>() + k_rows);
                        static_for<kKB>([&](auto mb_c) {
                            constexpr int mb = decltype(mb_c)::value;
                            if constexpr (decltype(first_c)::value != 0) {
                                mma_16816_zero_c<Elem>(acc[mb][2 * pp], a[mb], b[0], b[1]);
                                mma_16816_zero_c<Elem>(acc[mb][2 * pp + 1], a[mb], b[2], b[3]);
                            } else {
                                mma_16816<Elem>(acc[mb][2 * pp], a[mb], b[0], b[1]);
                                mma_16816<Elem>(acc[mb][2 * pp + 1], a[mb], b[2], b[3]);
                            }
                        });
                    });
                };
                key_step(0, Int<1>{});
#pragma unroll 1
                for (int ks = 1; ks < T::kNSteps; ++ks) key_step(ks, Int<0>{});
                // Rows rb * 32 + 16 mb + groupID + 8 h of the tile, dims of the chunk: row pointers
                // 8 rows apart, columns as address immediates; edge tiles (rows past sq, dims
                // past d) and the sliced mode take their own loops.
                const int col0 = chunk * 2 * kMmaK + mma_c_col(lane, 0);
                const int q0 = rb * T::kPairKeys + quad_id(lane);
                const int64_t dq_row_stride = static_cast<int64_t>(params.num_heads_q) * d_real;
                float *const rows = dq_slice + (q_item_row0 + m0 + q0) * dq_row_stride +
                                    hb * static_cast<int64_t>(d_real) + col0;
                const int64_t dq_row8_stride = kMmaMHalf * dq_row_stride;
                auto put = [&](auto sliced_c, auto edge_c) {
#pragma unroll
                    for (int mb = 0; mb < kKB; ++mb)
#pragma unroll
                        for (int h = 0; h < kRowHalves; ++h) {
                            const int r8 = 2 * mb + h;  // 8-row step
                            if constexpr (decltype(edge_c)::value != 0)
                                if (q0 + r8 * kMmaMHalf >= rows_valid) continue;
                            float *const dst_row = rows + r8 * dq_row8_stride;
#pragma unroll
                            for (int t = 0; t < 2 * kPairs; ++t) {
                                if constexpr (decltype(edge_c)::value != 0)
                                    if (col0 + t * kMmaN >= d_real) continue;
                                const float v0 = acc[mb][t][mma_c_index(h, 0)];
                                const float v1 = acc[mb][t][mma_c_index(h, 1)];
                                if constexpr (decltype(sliced_c)::value != 0) {
                                    // this CTA's own slice: one writer
                                    *reinterpret_cast<float2 *>(dst_row + t * kMmaN) = make_float2(v0, v1);
                                } else {
                                    atomicAdd(dst_row + t * kMmaN, v0);
                                    atomicAdd(dst_row + t * kMmaN + 1, v1);
                                }
                            }
                        }
                };
                const bool edge = m0 + kBlockM > ext.sq || d_real < T::kHeadDim || !second_pair;
                if (dq_sliced) {
                    if (edge) put(Int<1>{}, Int<1>{}); else put(Int<1>{}, Int<0>{});
                } else {
                    if (edge) put(Int<0>{}, Int<1>{}); else put(Int<0>{}, Int<0>{});
                }
            }
            __syncthreads();  // every warp is done with Q, dO, dS^T, P^T, lse, delta (refilled next)
        }
        bwd_gate_grad_out(params, head, gate_grad);  // bwd_rows.cuh: atomics or ordered slots
    }
    cp_async_wait<0>();  // K / V copies of a CTA whose keys no query row sees

    // ---- Epilogue: split 1 adds the partner's partial sums (warp 1 of each pair hands its dK,
    // dV to warp 0 through shared memory: [pair][tensor][fragment register][lane], f32, one
    // 128-byte row per store); then dK (times the softmax scale) and dV in the element type,
    // rows past sk and dims past d not written.
    constexpr int kAccRegs = kKB * 2 * kWP * kCRegs;
    if constexpr (kSplit == 1) {
        __syncthreads();  // the whole layout is free (K / V copies waited for above)
        float *const red = reinterpret_cast<float *>(smem) + kg * 2 * kAccRegs * kWarpSize + lane;
        if (half == 1) {
#pragma unroll
            for (int i = 0; i < kAccRegs; ++i) {
                red[i * kWarpSize] = (&dk_acc[0][0][0])[i];
                red[(kAccRegs + i) * kWarpSize] = (&dv_acc[0][0][0])[i];
            }
        }
        __syncthreads();
        if (half == 1) return;
#pragma unroll
        for (int i = 0; i < kAccRegs; ++i) {
            (&dk_acc[0][0][0])[i] += red[i * kWarpSize];
            (&dv_acc[0][0][0])[i] += red[(kAccRegs + i) * kWarpSize];
        }
    }
    const float scale = params.opt.scale;
    elem_bits_t *const dk_tile = static_cast<elem_bits_t *>(params.dk) +
                                 (varlen ? 0 : batch * params.dk_batch_stride) +
                                 (ext.k_row0 + n0) * params.dk_row_stride +
                                 kv_head * params.dk_head_stride;
    elem_bits_t *const dv_tile = static_cast<elem_bits_t *>(params.dv) +
                                 (varlen ? 0 : batch * params.dv_batch_stride) +
                                 (ext.k_row0 + n0) * params.dv_row_stride +
                                 kv_head * params.dv_head_stride;
#pragma unroll
    for (int kb = 0; kb < kKB; ++kb)
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            const int key = key_of(kb, h);  // within the tile
            if (key >= keys_valid) continue;
#pragma unroll
            for (int j = 0; j < kWP; ++j) {
                const int pair = kSplit * j + half * (kSplit - 1);
                if (pair >= T::kDPairs) continue;
#pragma unroll
                for (int t = 0; t < 2; ++t) {
                    const int col = (2 * pair + t) * kMmaN + mma_c_col(lane, 0);
                    if (col >= d_real) continue;
                    const int c = mma_c_index(h, 0);
                    const float *const dk = dk_acc[kb][2 * j + t];
                    const float *const dv = dv_acc[kb][2 * j + t];
                    *reinterpret_cast<uint32_t *>(dk_tile + key * params.dk_row_stride + col) =
                        Elem::pack(dk[c] * scale, dk[c + 1] * scale);
                    *reinterpret_cast<uint32_t *>(dv_tile + key * params.dv_row_stride + col) =
                        Elem::pack(dv[c], dv[c + 1]);
                }
            }
        }
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_FLASH_BWD_CTA_CUH
