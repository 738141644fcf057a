/*
 * flash_bwd_cta.cuh: the body of one backward CTA (FlashAttention-2 style, issue 21), for the
 * Ampere-and-newer entries of kernels/sm80/flash_bwd.cu. Traits: kernels/common/bwd_traits.cuh.
 *
 * One CTA owns block_n = 16 x num_warps keys of one kv head of one batch item
 * (grid = (ceil(seqlen_k / block_n), num_heads_kv, batch)); each warp owns one m16 block of them.
 * K and V are loaded once. For every query head of the kv head's group (GQA: dK and dV are summed
 * over the group in registers, no workspace and no atomics for them) and every query tile of
 * block_m rows that sees one of the CTA's keys, it loads Q, dO, the forward's LSE and delta =
 * rowsum(dO * O) (kernels/common/bwd_rows.cuh), and per warp, all f32-accumulated on mma.m16n8k16:
 *   S^T  = K Q^T              (A: K rows of the warp, ldmatrix; B: Q, ldmatrix)
 *   P^T  = exp(x - LSE), x the forward's score (scale S^T, or through softcap / ALiBi:
 *          score_grad.cuh), masked keys 0 (recomputed, never stored)
 *   dP^T = gate V dO^T            (gate: the head's output gate, 1 without)
 *   dS^T = P^T * (dP^T - delta) * x'   (x' the softcap's derivative, 1 without)
 *   dV  += gate P^T dO,  dK += dS^T Q   (A: straight from the registers: mma.cuh P reuse)
 *   dQ  += dS K: dS goes through shared memory ([block_m, block_n], so each warp reads A
 *          fragments of whole query rows), each warp adds its rows' share into the f32 dq_accum
 *          with atomics (red.global.add.f32).
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

template <class T>
__device__ __forceinline__ void flash_bwd_cta(const FlashBwdParams &params) {
    using Elem = typename T::Elem;
    using RowTile = typename T::RowTile;
    using KVTile = typename T::KVTile;
    using DsTile = typename T::DsTile;
    constexpr int kBlockM = T::kBlockM;
    constexpr int kBlockN = T::kBlockN;

    // [K | V | Q | dO | dS | lse | delta], layout in BwdTraits.
    extern __shared__ __align__(128) unsigned char smem[];

    const int d_real = params.head_dim;
    cta_prologue<T::kSmemBytes, T::kHeadDim, kChunkElems>(d_real);
    const int col8_valid = d_real / kChunkElems;

    const int tid = threadIdx.x;
    const int lane = lane_of(tid);
    const int warp = warp_of(tid);
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

    // Which query rows see which of the CTA's keys: the rows of its first and last key bound
    // the query tiles worth visiting; the rows that see every one of its keys (none when the
    // block has keys past sk) need no per-element mask; the thread's two keys keep their own
    // row ranges for the edge tiles. All fixed for the CTA: the main loop holds no KeyMask.
    RowRange key_rows[kRowHalves];
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
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h)
            key_rows[h] = rows_seeing_key(mask, ext.sq, ext.sk,
                                          n0 + warp * kMmaM + quad_id(lane) + h * kMmaMHalf);
    }
    const int m_begin = row_begin / kBlockM;
    const int m_end = row_end > row_begin ? (row_end + kBlockM - 1) / kBlockM : m_begin;

    // Fragment cursors (mma.cuh patterns). Every d-wide tile (K, V, Q, dO) shares one row
    // layout (BwdTraits static_assert), so one cursor serves them all:
    //  - cur_a: A pattern; plain for the warp's K / V rows (moved by warp_shift), .trans for the
    //    B operands dO, Q (of dV, dK) and K (of dQ), whose k dimension is the tile's rows;
    //  - cur_b: B pattern, plain: Q and dO as the B operands of K Q^T and V dO^T.
    using Cursor = SwizzleCursor<KVTile>;
    using DsCursor = SwizzleCursor<DsTile>;
    const Cursor cur_a(smem_base, ldsm_a_row(lane), ldsm_a_col8(lane));
    const Cursor cur_b(smem_base, ldsm_b_row(lane), ldsm_b_col8(lane));
    const uint32_t warp_shift = static_cast<uint32_t>(warp * kMmaM * KVTile::kRowBytes);
    // dQ: warp (dq_rb, dq_sub) computes query rows dq_rb * 16 .. + 16, dim pairs dp with
    // dp % kDqWarpsPerRow == dq_sub; dS A fragments of its rows (plain, A pattern).
    const int dq_rb = warp / T::kDqWarpsPerRow;
    const int dq_sub = warp % T::kDqWarpsPerRow;
    const DsCursor cur_ds(smem_base, dq_rb * kMmaM + ldsm_a_row(lane), ldsm_a_col8(lane));

    // dK, dV: [16 keys of this warp, d] as n8 C fragments, f32.
    float dk_acc[T::kDTiles][kCRegs];
    float dv_acc[T::kDTiles][kCRegs];
    zero_c_fragments(dk_acc);
    zero_c_fragments(dv_acc);

    const float scale_log2 = params.opt.scale_log2;
    const ScoreModGrad mod_grad(params.opt);
    const bool want_mod = mod_grad.any();
    // The thread's two keys minus shift (the ALiBi diagonal), within the item.
    int key_diag[kRowHalves];
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h)
        key_diag[h] = n0 + warp * kMmaM + quad_id(lane) + h * kMmaMHalf - (ext.sk - ext.sq);
    float *const lse_smem = reinterpret_cast<float *>(smem + T::kLseOffset);
    float *const delta_smem = reinterpret_cast<float *>(smem + T::kDeltaOffset);
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
    const typename RowCopy::Source q_src = row_copy.source(params.q_row_stride, tid);
    const typename RowCopy::Source do_src = row_copy.source(params.do_row_stride, tid);

    for (int hg = 0; hg < group; ++hg) {
        const int head = kv_head * group + hg;
        const float alibi_log2 = mod_grad.alibi_log2(params.opt, head);
        // Head gate (params.h): O = gate O_u, so dV and dP = dO V^T carry the gate; d(gate) =
        // sum over the head's rows of dO . O_u = sum_ij P_ij dP_u,ij, accumulated per thread.
        const float gate = params.opt.head_gates != nullptr ? params.opt.head_gates[head] : 1.0f;
        float gate_grad = 0.0f;
        const int64_t q_off = (varlen ? 0 : batch * params.q_batch_stride) +
                              ext.q_row0 * params.q_row_stride + head * params.q_head_stride;
        const int64_t do_off = (varlen ? 0 : batch * params.do_batch_stride) +
                               ext.q_row0 * params.do_row_stride + head * params.do_head_stride;
        const int64_t stat_off = (varlen ? 0 : batch * params.opt.lse_batch_stride) +
                                 head * params.opt.lse_head_stride + ext.q_row0;
        for (int m_block = m_begin; m_block < m_end; ++m_block) {
            const int m0 = m_block * kBlockM;
            const int rows_valid = min(ext.sq - m0, kBlockM);
            // Q, dO tiles of rows m0 ..; rows past sq zero-filled.
            const uint64_t q_tile = gmem_addr(params.q) + (q_off + m0 * params.q_row_stride) * kElemBytes;
            const uint64_t do_tile =
                gmem_addr(params.d_o) + (do_off + m0 * params.do_row_stride) * kElemBytes;
            row_copy.template copy<T::kQOffset>(q_src, q_tile, rows_valid, col8_valid, q_tile, tid);
            row_copy.template copy<T::kDoOffset>(do_src, do_tile, rows_valid, col8_valid, do_tile, tid);
            cp_async_commit();
            // lse in log2 units (0 for rows past sq and rows with no visible key, whose keys are
            // all masked: exp2(-inf - 0) = 0, never -inf + inf), delta (0 past sq).
            for (int r = tid; r < kBlockM; r += T::kThreads) {
                float l2 = 0.0f;
                float dl = 0.0f;
                if (r < rows_valid) {
                    const float lse = params.opt.lse[stat_off + m0 + r];
                    l2 = lse == neg_inf() ? 0.0f : lse * kLog2e;
                    dl = params.delta[stat_off + m0 + r];
                }
                lse_smem[r] = l2;
                delta_smem[r] = dl;
            }
            cp_async_wait<0>();  // this thread's Q, dO (and, first time, K, V) copies landed
            __syncthreads();     // ... and every thread's, and lse / delta are visible

            // S^T = K Q^T and dP^T = V dO^T: [16 keys of the warp, block_m queries], f32.
            float st[T::kMTiles][kCRegs];
            float dpt[T::kMTiles][kCRegs];
            static_for<T::kDSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                constexpr int kCol8 = kk * (kMmaK / kChunkElems);
                uint32_t a_k[kARegs];
                uint32_t a_v[kARegs];
                ldsm_x4<T::kKOffset + Cursor::template imm<0, kCol8>()>(
                    a_k, pin(cur_a.template reg<kCol8>() + warp_shift));
                ldsm_x4<T::kVOffset + Cursor::template imm<0, kCol8>()>(
                    a_v, pin(cur_a.template reg<kCol8>() + warp_shift));
                static_for<T::kMPairs>([&](auto jp_c) {
                    constexpr int jp = decltype(jp_c)::value;
                    constexpr int kRow = jp * 2 * kMmaN;  // two n8 query tiles per ldmatrix.x4
                    uint32_t b[kLdsmMatrices];
                    ldsm_x4<T::kQOffset + Cursor::template imm<kRow, kCol8>()>(
                        b, cur_b.template reg<kCol8>());
                    if constexpr (kk == 0) {
                        mma_16816_zero_c<Elem>(st[2 * jp], a_k, b[0], b[1]);
                        mma_16816_zero_c<Elem>(st[2 * jp + 1], a_k, b[2], b[3]);
                    } else {
                        mma_16816<Elem>(st[2 * jp], a_k, b[0], b[1]);
                        mma_16816<Elem>(st[2 * jp + 1], a_k, b[2], b[3]);
                    }
                    ldsm_x4<T::kDoOffset + Cursor::template imm<kRow, kCol8>()>(
                        b, cur_b.template reg<kCol8>());
                    if constexpr (kk == 0) {
                        mma_16816_zero_c<Elem>(dpt[2 * jp], a_v, b[0], b[1]);
                        mma_16816_zero_c<Elem>(dpt[2 * jp + 1], a_v, b[2], b[3]);
                    } else {
                        mma_16816<Elem>(dpt[2 * jp], a_v, b[0], b[1]);
                        mma_16816<Elem>(dpt[2 * jp + 1], a_v, b[2], b[3]);
                    }
                });
            });

            // P^T = 2^(x - lse2), x the log2-domain score (scale_log2 S^T, or through the
            // softcap / ALiBi modifiers), and dS^T = P^T (dP^T - delta) times the softcap's
            // derivative (score_grad.cuh), in place. Edge tiles (a key a row of the tile
            // cannot see, keys past sk, rows past sq) mask per element.
            const bool mask_tile = m0 < full_begin || m0 + kBlockM > full_end;
            auto scores_to_grads = [&](auto mod_c) {
                constexpr bool kMod = decltype(mod_c)::value != 0;
#pragma unroll
                for (int nt = 0; nt < T::kMTiles; ++nt) {
                    const int col = nt * kMmaN + mma_c_col(lane, 0);  // the pair's first query
                    const float2 l2 = *reinterpret_cast<const float2 *>(lse_smem + col);
                    const float2 dl = *reinterpret_cast<const float2 *>(delta_smem + col);
#pragma unroll
                    for (int c = 0; c < kCRegs; ++c) {
                        const int e = c & 1;
                        const int h = mma_c_row_half(c);
                        float x;
                        float grad = 1.0f;
                        if constexpr (kMod) {
                            // ALiBi distance |i + shift - j| = |key_diag[h] - (m0 + col + e)|.
                            const ModifiedScore ms = mod_grad.modify(
                                st[nt][c], key_diag[h] - (m0 + col + e), alibi_log2);
                            x = ms.x;
                            grad = ms.grad;
                        } else {
                            x = st[nt][c] * scale_log2;
                        }
                        if (mask_tile) {
                            const int row = m0 + col + e;
                            if (row < key_rows[h].begin || row >= key_rows[h].end) x = neg_inf();
                        }
                        const float p = fast_exp2(x - (e ? l2.y : l2.x));
                        gate_grad = fmaf(p, dpt[nt][c], gate_grad);
                        st[nt][c] = p * gate;
                        dpt[nt][c] = p * fmaf(gate, dpt[nt][c], -(e ? dl.y : dl.x)) * grad;
                    }
                }
            };
            if (want_mod)
                scores_to_grads(Int<1>{});
            else
                scores_to_grads(Int<0>{});

            // P^T, dS^T as the A fragments of the k16 (query) steps of P^T dO and dS^T Q.
            uint32_t p_a[T::kMSteps][kARegs];
            uint32_t ds_a[T::kMSteps][kARegs];
#pragma unroll
            for (int kk = 0; kk < T::kMSteps; ++kk)
#pragma unroll
                for (int r = 0; r < kARegs; ++r) {
                    const int t = p_tile_of_a_reg(kk, r);
                    const int c = p_c_of_a_reg(r);
                    p_a[kk][r] = Elem::pack(st[t][c], st[t][c + 1]);
                    ds_a[kk][r] = Elem::pack(dpt[t][c], dpt[t][c + 1]);
                }

            // dS: [block_m queries, block_n keys] in shared memory for dQ = dS K. Register r of
            // k-step kk holds queries (2kk + r/2) * 8 + 2 * threadID_in_group + {0, 1} of key
            // groupID + 8 (r & 1) of the warp (mma.cuh P reuse).
#pragma unroll
            for (int kk = 0; kk < T::kMSteps; ++kk)
#pragma unroll
                for (int r = 0; r < kARegs; ++r) {
                    const int q = p_tile_of_a_reg(kk, r) * kMmaN + mma_c_col(lane, 0);
                    const int key = warp * kMmaM + mma_c_row(lane, mma_c_index(r & 1, 0));
                    const uint32_t v = ds_a[kk][r];
                    *reinterpret_cast<elem_bits_t *>(smem + T::kDsOffset + DsTile::elem_offset(q, key)) =
                        static_cast<elem_bits_t>(v & 0xffffu);
                    *reinterpret_cast<elem_bits_t *>(smem + T::kDsOffset + DsTile::elem_offset(q + 1, key)) =
                        static_cast<elem_bits_t>(v >> 16);
                }

            // dV += P^T dO and dK += dS^T Q: B = dO / Q [queries, d] through ldmatrix.trans.
            static_for<T::kMSteps>([&](auto kk_c) {
                constexpr int kRow = decltype(kk_c)::value * kMmaK;  // queries of this k16 step
                static_for<T::kDPairs>([&](auto dp_c) {
                    constexpr int dp = decltype(dp_c)::value;
                    constexpr int kCol8 = dp * (kMmaK / kChunkElems);
                    uint32_t b[kLdsmMatrices];
                    ldsm_x4_trans<T::kDoOffset + Cursor::template imm<kRow, kCol8>()>(
                        b, cur_a.template reg<kCol8>());
                    mma_16816<Elem>(dv_acc[2 * dp], p_a[decltype(kk_c)::value], b[0], b[1]);
                    mma_16816<Elem>(dv_acc[2 * dp + 1], p_a[decltype(kk_c)::value], b[2], b[3]);
                    ldsm_x4_trans<T::kQOffset + Cursor::template imm<kRow, kCol8>()>(
                        b, cur_a.template reg<kCol8>());
                    mma_16816<Elem>(dk_acc[2 * dp], ds_a[decltype(kk_c)::value], b[0], b[1]);
                    mma_16816<Elem>(dk_acc[2 * dp + 1], ds_a[decltype(kk_c)::value], b[2], b[3]);
                });
            });
            __syncthreads();  // every warp's dS is in shared memory

            // dQ += dS K for the warp's 16 query rows and its dim pairs, into dq_accum.
            {
                uint32_t a[T::kNSteps][kARegs];
                static_for<T::kNSteps>([&](auto kk_c) {
                    constexpr int kCol8 = decltype(kk_c)::value * (kMmaK / kChunkElems);
                    ldsm_x4<T::kDsOffset + DsCursor::template imm<0, kCol8>()>(
                        a[decltype(kk_c)::value], cur_ds.template reg<kCol8>());
                });
                const int q_local = dq_rb * kMmaM + quad_id(lane);  // + 8 for row half 1
                float *const dq_rows =
                    dq_slice + ((q_item_row0 + m0 + q_local) * params.num_heads_q + head) *
                                   static_cast<int64_t>(d_real);
                const int64_t dq_half_stride =
                    static_cast<int64_t>(kMmaMHalf) * params.num_heads_q * d_real;
                const bool row_ok[kRowHalves] = {q_local < rows_valid, q_local + kMmaMHalf < rows_valid};
                static_for<T::kDqWarpsPerRow>([&](auto sub_c) {
                    if (dq_sub != decltype(sub_c)::value) return;
                    static_for<T::kDPairs>([&](auto dp_c) {
                        constexpr int dp = decltype(dp_c)::value;
                        if constexpr (dp % T::kDqWarpsPerRow == decltype(sub_c)::value) {
                            constexpr int kCol8 = dp * (kMmaK / kChunkElems);
                            float acc[2][kCRegs];
                            static_for<T::kNSteps>([&](auto kk_c) {
                                constexpr int kk = decltype(kk_c)::value;
                                uint32_t b[kLdsmMatrices];
                                ldsm_x4_trans<T::kKOffset + Cursor::template imm<kk * kMmaK, kCol8>()>(
                                    b, cur_a.template reg<kCol8>());
                                if constexpr (kk == 0) {
                                    mma_16816_zero_c<Elem>(acc[0], a[kk], b[0], b[1]);
                                    mma_16816_zero_c<Elem>(acc[1], a[kk], b[2], b[3]);
                                } else {
                                    mma_16816<Elem>(acc[0], a[kk], b[0], b[1]);
                                    mma_16816<Elem>(acc[1], a[kk], b[2], b[3]);
                                }
                            });
#pragma unroll
                            for (int t = 0; t < 2; ++t) {
                                const int col = (2 * dp + t) * kMmaN + mma_c_col(lane, 0);
                                if (col >= d_real) continue;
#pragma unroll
                                for (int h = 0; h < kRowHalves; ++h) {
                                    if (!row_ok[h]) continue;
                                    float *dst = dq_rows + h * dq_half_stride + col;
                                    if (dq_sliced) {  // this CTA's own slice: one writer
                                        *reinterpret_cast<float2 *>(dst) = make_float2(
                                            acc[t][mma_c_index(h, 0)], acc[t][mma_c_index(h, 1)]);
                                    } else {
                                        atomicAdd(dst, acc[t][mma_c_index(h, 0)]);
                                        atomicAdd(dst + 1, acc[t][mma_c_index(h, 1)]);
                                    }
                                }
                            }
                        }
                    });
                });
            }
            __syncthreads();  // every warp is done with Q, dO, dS, lse, delta (refilled next)
        }
        bwd_gate_grad_out(params, head, gate_grad);  // bwd_rows.cuh: atomics or ordered slots
    }
    cp_async_wait<0>();  // K / V copies of a CTA whose keys no query row sees

    // ---- Epilogue: dK (times the softmax scale) and dV, rows past sk and dims past d not written.
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
    for (int h = 0; h < kRowHalves; ++h) {
        const int key = warp * kMmaM + mma_c_row(lane, mma_c_index(h, 0));  // within the tile
        if (key >= keys_valid) continue;
#pragma unroll
        for (int t = 0; t < T::kDTiles; ++t) {
            const int col = t * kMmaN + mma_c_col(lane, 0);
            if (col >= d_real) continue;
            const int c = mma_c_index(h, 0);
            *reinterpret_cast<uint32_t *>(dk_tile + key * params.dk_row_stride + col) =
                Elem::pack(dk_acc[t][c] * scale, dk_acc[t][c + 1] * scale);
            *reinterpret_cast<uint32_t *>(dv_tile + key * params.dv_row_stride + col) =
                Elem::pack(dv_acc[t][c], dv_acc[t][c + 1]);
        }
    }
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_FLASH_BWD_CTA_CUH
