/*
 * flash_jvp_cta.cuh: the body of one forward-mode (JVP) attention CTA (issue 22), for the
 * Ampere-and-newer entries of kernels/sm80/flash_jvp.cu. Given q, k, v and tangents dq, dk, dv it
 * computes O and its directional derivative O' in one flash-style pass, never forming the
 * N x N matrices. With S = scale Q K^T (through the score modifiers), P = softmax(S) and
 *   S' = dS/d(scale q.k) * scale (dQ K^T + Q dK^T)     (natural units; the softcap's 1 - tanh^2)
 *   O' = P dV + (P o (S' - r)) V,   r = rowsum(P o S'),
 * the online softmax (softmax.cuh) keeps, per row and with unnormalised p = exp(s - m):
 *   A = sum p v (the forward's O accumulator),  B = sum p (dv + s' v)  (a second f32
 *   accumulator), l = sum p and R = sum p s', all four rescaled by the same alpha on a new max;
 * then O = A / l and O' = (B - (R / l) A) / l. A sink (state_merge.cuh join_sink) only grows l:
 * its score has no tangent and no value, so the same two lines hold with the sink's l.
 *
 * One CTA computes block_m = 16 x num_warps query rows of one query head of one batch item
 * (grid = (ceil(seqlen_q / block_m), num_heads_q, batch)); each warp owns one m16 row block.
 * Q and dQ are loaded once; K, dK, V, dV tiles of block_n keys stream through ONE shared stage
 * (cp.async, no overlap of copies and math: the kernel is a diagnostics tool, see the cost in
 * bench/results/jvp_counters.txt). Per tile a warp computes, f32-accumulated on mma.m16n8k16:
 *   S = Q K^T,  S'_raw = dQ K^T + Q dK^T            (one accumulator, two mma per fragment pair)
 *   x, x' = the forward's modifiers and their derivative (score_grad.cuh), key mask (mask.cuh)
 *   fold x into the online softmax (S becomes p), rescale A, B, R
 *   A += P V,  B += P dV + (P o S') V                (P, P o S' packed to 16 bits: A operands)
 * Masks, softcap, ALiBi, GQA, varlen (cu_seqlens checked in the kernel: seq_extent traps),
 * head gates (O and O' times the gate; the gate is a constant of the JVP) and sinks as in the
 * forward. The tangents are laid out like their primals (params.h FlashJvpParams).
 */
#ifndef FLASHMHA_COMMON_FLASH_JVP_CTA_CUH
#define FLASHMHA_COMMON_FLASH_JVP_CTA_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/smem_layout.cuh"
#include "common/softmax.cuh"
#include "common/mask.cuh"
#include "common/score_grad.cuh"
#include "common/codegen.cuh"
#include "common/cta_prologue.cuh"

namespace flashmha {

/* The compile-time description of one JVP instantiation; kSmemBytes must equal the smem_bytes
 * column of FLASHMHA_JVP_KERNELS in kernels/kernel_table.h (static_assert at the entry). */
template <class Elem_, int kHeadDim_, int kBlockN_>
struct JvpTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kNumWarps = 4;
    static constexpr int kThreads = kNumWarps * kWarpSize;
    static constexpr int kBlockM = kNumWarps * kMmaM;  // one m16 row block per warp
    static constexpr int kBlockN = kBlockN_;
    static_assert(kHeadDim % kMmaK == 0 && kBlockN % kMmaK == 0, "k16 steps");

    static constexpr int kSTiles = kBlockN / kMmaN;     // n8 score tiles per warp
    static constexpr int kOTiles = kHeadDim / kMmaN;    // n8 output tiles per warp
    static constexpr int kQKSteps = kHeadDim / kMmaK;   // k16 steps of Q K^T
    static constexpr int kPVSteps = kBlockN / kMmaK;    // k16 steps of P V
    static constexpr int kChunksPerK16 = kMmaK / kChunkElems;
    static constexpr int kPairTilesN = kBlockN / (2 * kMmaN);   // one ldmatrix.x4 = 2 key tiles
    static constexpr int kPairTilesD = kHeadDim / (2 * kMmaN);  // one ldmatrix.x4.trans = 2 dim tiles

    using RowTile = SwizzledTile<kBlockM, kHeadDim>;  // q, dq: [block_m, d]
    using KVTile = SwizzledTile<kBlockN, kHeadDim>;   // k, dk, v, dv: [block_n, d]
    static_assert(RowTile::kRowBytes == KVTile::kRowBytes, "one cursor addresses every tile");
    static_assert(RowTile::conflict_free() && KVTile::conflict_free(), "swizzle must be conflict-free");
    static_assert(cursor_matches_layout<RowTile>() && cursor_matches_layout<KVTile>(),
                  "fragment cursors must address the swizzled layout");
    static_assert(kMmaM % kSwizzleRowPeriod == 0, "warp row offsets keep the swizzle phase");

    /* Shared memory: [Q | dQ | K | dK | V | dV], one stage. */
    static constexpr int kQOffset = 0;
    static constexpr int kDqOffset = kQOffset + RowTile::kBytes;
    static constexpr int kKOffset = kDqOffset + RowTile::kBytes;
    static constexpr int kDkOffset = kKOffset + KVTile::kBytes;
    static constexpr int kVOffset = kDkOffset + KVTile::kBytes;
    static constexpr int kDvOffset = kVOffset + KVTile::kBytes;
    static constexpr int kSmemBytes = kDvOffset + KVTile::kBytes;
    static_assert(kSmemBytes <= FLASHMHA_MAX_DYNAMIC_SMEM_BYTES, "tile does not fit sm_86/sm_89 shared memory");
    static_assert(kBlockN <= FLASHMHA_SEQLEN_HEADROOM && kBlockM <= FLASHMHA_SEQLEN_HEADROOM,
                  "params.h sequence headroom");
};

template <class T>
__device__ __forceinline__ void flash_jvp_cta(const FlashJvpParams &jp) {
    using Elem = typename T::Elem;
    using RowTile = typename T::RowTile;
    using KVTile = typename T::KVTile;
    constexpr int kBlockN = T::kBlockN;
    const FlashFwdParams &params = jp.base;

    extern __shared__ __align__(128) unsigned char smem[];

    const int d_real = params.head_dim;
    cta_prologue<T::kSmemBytes, T::kHeadDim, kChunkElems>(d_real);
    const int col8_valid = d_real / kChunkElems;

    const int tid = threadIdx.x;
    const int lane = lane_of(tid);
    const int warp = warp_of(tid);
    const int head = blockIdx.y;
    const int batch = blockIdx.z;

    const SeqExtent ext = seq_extent(params, batch);
    const int m0 = blockIdx.x * T::kBlockM;  // first query row of this CTA within the item
    if (m0 >= ext.sq) return;                // varlen: item shorter than the grid (CTA-uniform)
    const int rows_valid = min(ext.sq - m0, T::kBlockM);
    const int kv_head = head / (params.num_heads_q / params.num_heads_kv);  // GQA / MQA
    const bool varlen = (params.opt.flags & FLASHMHA_FLAG_VARLEN) != 0;

    // 64-bit element offsets of (batch, row 0, head); the tangents use their primals' strides.
    // q, dq, o, o_tangent: [b, sq, hq, d] or [total_q, hq, d]; k, dk, v, dv: [b, sk, hkv, d] or
    // [total_k, hkv, d].
    const int64_t q_off = (varlen ? 0 : batch * params.q_batch_stride) +
                          (ext.q_row0 + m0) * params.q_row_stride + head * params.q_head_stride;
    const int64_t o_off = (varlen ? 0 : batch * params.o_batch_stride) +
                          (ext.q_row0 + m0) * params.o_row_stride + head * params.o_head_stride;
    const int64_t k_off = (varlen ? 0 : batch * params.k_batch_stride) +
                          ext.k_row0 * params.k_row_stride + kv_head * params.k_head_stride;
    const int64_t v_off = (varlen ? 0 : batch * params.v_batch_stride) +
                          ext.k_row0 * params.v_row_stride + kv_head * params.v_head_stride;
    const uint64_t q_tile = gmem_addr(params.q) + q_off * kElemBytes;
    const uint64_t dq_tile = gmem_addr(jp.dq) + q_off * kElemBytes;
    const uint64_t k_seq = gmem_addr(params.k) + k_off * kElemBytes;
    const uint64_t dk_seq = gmem_addr(jp.dk) + k_off * kElemBytes;
    const uint64_t v_seq = gmem_addr(params.v) + v_off * kElemBytes;
    const uint64_t dv_seq = gmem_addr(jp.dv) + v_off * kElemBytes;

    const KeyMask mask(params.opt, ext.sq, ext.sk);
    const int n_begin = mask.template kv_tile_begin<kBlockN>(m0);
    const int n_end = mask.template kv_tile_end<kBlockN>(m0 + rows_valid - 1);
    const PartialTileTest<kBlockN> needs_mask = mask.template partial_tile_test<kBlockN>(m0, m0 + rows_valid - 1);

    const uint32_t smem_base = smem_addr(smem);
    const int warp_row0 = warp * kMmaM;
    // The thread's two query rows (groupID, groupID + 8) within the item.
    int row_of[kRowHalves];
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h) row_of[h] = m0 + warp_row0 + mma_c_row(lane, mma_c_index(h, 0));

    // A = sum p v, B = sum p (dv + s' v): [16 rows of this warp, d] as n8 C fragments, f32.
    float o_acc[T::kOTiles][kCRegs];
    float t_acc[T::kOTiles][kCRegs];
    zero_c_fragments(o_acc);
    zero_c_fragments(t_acc);
    float r_sum[kRowHalves] = {0.0f, 0.0f};  // this thread's share of R = sum p s'

    OnlineSoftmax<T::kSTiles, T::kOTiles> softmax;
    const ScoreModGrad mod_grad(params.opt);
    const bool want_mod = mod_grad.any();
    const float score_mul = mod_grad.mod.score_mul();
    const float scale = params.opt.scale;
    const float alibi_log2 = mod_grad.alibi_log2(params.opt, head);

    if (n_begin < n_end) {
        // Q and dQ once (rows past sq zero-filled), committed with the first K / V tile.
        using RowCopy = TileCopy<RowTile, T::kThreads>;
        {
            const RowCopy row_copy(smem_base, tid);
            const typename RowCopy::Source q_src = row_copy.source(params.q_row_stride, tid);
            row_copy.template copy<T::kQOffset>(q_src, q_tile, rows_valid, col8_valid, q_tile, tid);
            row_copy.template copy<T::kDqOffset>(q_src, dq_tile, rows_valid, col8_valid, dq_tile, tid);
        }
        using KVCopy = TileCopy<KVTile, T::kThreads>;
        const KVCopy kv_copy(smem_base, tid);
        const typename KVCopy::Source k_src = kv_copy.source(params.k_row_stride, tid);
        const typename KVCopy::Source v_src = kv_copy.source(params.v_row_stride, tid);

        using Cursor = SwizzleCursor<KVTile>;
        const Cursor cur_a(smem_base, ldsm_a_row(lane), ldsm_a_col8(lane));  // Q, dQ; V, dV (.trans)
        const Cursor cur_b(smem_base, ldsm_b_row(lane), ldsm_b_col8(lane));  // K, dK
        const uint32_t warp_shift = static_cast<uint32_t>(warp_row0 * RowTile::kRowBytes);

        for (int n = n_begin; n < n_end; ++n) {
            if (n > n_begin) __syncthreads();  // every warp is done reading tile n - 1's stage
            {
                const int valid_keys = ext.sk - n * kBlockN;
                const int64_t k_step = static_cast<int64_t>(n) * kBlockN * params.k_row_stride * kElemBytes;
                const int64_t v_step = static_cast<int64_t>(n) * kBlockN * params.v_row_stride * kElemBytes;
                kv_copy.template copy<T::kKOffset>(k_src, k_seq + k_step, valid_keys, col8_valid, k_seq, tid);
                kv_copy.template copy<T::kDkOffset>(k_src, dk_seq + k_step, valid_keys, col8_valid, dk_seq, tid);
                kv_copy.template copy<T::kVOffset>(v_src, v_seq + v_step, valid_keys, col8_valid, v_seq, tid);
                kv_copy.template copy<T::kDvOffset>(v_src, dv_seq + v_step, valid_keys, col8_valid, dv_seq, tid);
                cp_async_commit();
            }
            cp_async_wait<0>();  // this thread's copies (and, first time, Q / dQ) landed
            __syncthreads();     // ... and every thread's

            // S = Q K^T and S'_raw = dQ K^T + Q dK^T: [16 rows, block_n keys], f32.
            float s[T::kSTiles][kCRegs];
            float sp[T::kSTiles][kCRegs];
            static_for<T::kQKSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                constexpr int kCol8 = kk * T::kChunksPerK16;
                uint32_t a_q[kARegs];
                uint32_t a_dq[kARegs];
                ldsm_x4<T::kQOffset + Cursor::template imm<0, kCol8>()>(
                    a_q, pin(cur_a.template reg<kCol8>() + warp_shift));
                ldsm_x4<T::kDqOffset + Cursor::template imm<0, kCol8>()>(
                    a_dq, pin(cur_a.template reg<kCol8>() + warp_shift));
                static_for<T::kPairTilesN>([&](auto jp_c) {
                    constexpr int jt = decltype(jp_c)::value;
                    constexpr int kRow = jt * 2 * kMmaN;  // two n8 key tiles per ldmatrix.x4
                    uint32_t b[kLdsmMatrices];
                    uint32_t db[kLdsmMatrices];
                    ldsm_x4<T::kKOffset + Cursor::template imm<kRow, kCol8>()>(b, cur_b.template reg<kCol8>());
                    ldsm_x4<T::kDkOffset + Cursor::template imm<kRow, kCol8>()>(db, cur_b.template reg<kCol8>());
                    if constexpr (kk == 0) {
                        mma_16816_zero_c<Elem>(s[2 * jt], a_q, b[0], b[1]);
                        mma_16816_zero_c<Elem>(s[2 * jt + 1], a_q, b[2], b[3]);
                        mma_16816_zero_c<Elem>(sp[2 * jt], a_dq, b[0], b[1]);
                        mma_16816_zero_c<Elem>(sp[2 * jt + 1], a_dq, b[2], b[3]);
                    } else {
                        mma_16816<Elem>(s[2 * jt], a_q, b[0], b[1]);
                        mma_16816<Elem>(s[2 * jt + 1], a_q, b[2], b[3]);
                        mma_16816<Elem>(sp[2 * jt], a_dq, b[0], b[1]);
                        mma_16816<Elem>(sp[2 * jt + 1], a_dq, b[2], b[3]);
                    }
                    mma_16816<Elem>(sp[2 * jt], a_q, db[0], db[1]);
                    mma_16816<Elem>(sp[2 * jt + 1], a_q, db[2], db[3]);
                });
            });

            // Modifiers with their derivative: S' into natural units of the softmax's score.
            const int n0 = n * kBlockN;
            if (want_mod) {
#pragma unroll
                for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
                    for (int c = 0; c < kCRegs; ++c) {
                        const int h = mma_c_row_half(c);
                        const int key = n0 + nt * kMmaN + mma_c_col(lane, c);
                        const ModifiedScore ms =
                            mod_grad.modify(s[nt][c], row_of[h] + mask.shift - key, alibi_log2);
                        s[nt][c] = ms.x;
                        sp[nt][c] *= ms.grad * scale;
                    }
            } else {
#pragma unroll
                for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
                    for (int c = 0; c < kCRegs; ++c) sp[nt][c] *= scale;
            }
            if (needs_mask(n0)) {  // edge tiles: masked keys get p = 0 and no tangent
                int lo[kRowHalves];
                int hi[kRowHalves];
#pragma unroll
                for (int h = 0; h < kRowHalves; ++h) {
                    lo[h] = mask.key_lo(row_of[h]);
                    hi[h] = mask.key_hi(row_of[h]);
                }
                apply_key_mask(s, lo, hi, n0, lane);
#pragma unroll
                for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
                    for (int c = 0; c < kCRegs; ++c)
                        if (s[nt][c] == neg_inf()) sp[nt][c] = 0.0f;
            }

            // Online softmax: S becomes p; A, B and R take the same rescale as l.
            float alpha[kRowHalves];
            softmax.template fold<false>(s, score_mul, alpha);
            softmax.rescale(o_acc, alpha);
            softmax.rescale(t_acc, alpha);
#pragma unroll
            for (int h = 0; h < kRowHalves; ++h) {
                float acc = 0.0f;
#pragma unroll
                for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
                    for (int e = 0; e < kPairElems; ++e) {
                        const int c = mma_c_index(h, e);
                        sp[nt][c] *= s[nt][c];  // p s'
                        acc += sp[nt][c];
                    }
                r_sum[h] = fmaf(alpha[h], r_sum[h], acc);
            }

            // P and P o S' as A fragments of the k16 (key) steps (mma.cuh P reuse).
            uint32_t p_a[T::kPVSteps][kARegs];
            uint32_t ps_a[T::kPVSteps][kARegs];
#pragma unroll
            for (int kk = 0; kk < T::kPVSteps; ++kk)
#pragma unroll
                for (int r = 0; r < kARegs; ++r) {
                    const int t = p_tile_of_a_reg(kk, r);
                    const int c = p_c_of_a_reg(r);
                    p_a[kk][r] = Elem::pack(s[t][c], s[t][c + 1]);
                    ps_a[kk][r] = Elem::pack(sp[t][c], sp[t][c + 1]);
                }

            // A += P V, B += P dV + (P o S') V: V, dV via ldmatrix.trans (B operands).
            static_for<T::kPVSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                constexpr int kRow = kk * kMmaK;  // keys of this k16 step
                static_for<T::kPairTilesD>([&](auto dp_c) {
                    constexpr int dp = decltype(dp_c)::value;
                    constexpr int kCol8 = dp * T::kChunksPerK16;
                    uint32_t b[kLdsmMatrices];
                    ldsm_x4_trans<T::kVOffset + Cursor::template imm<kRow, kCol8>()>(b, cur_a.template reg<kCol8>());
                    mma_16816<Elem>(o_acc[2 * dp], p_a[kk], b[0], b[1]);
                    mma_16816<Elem>(o_acc[2 * dp + 1], p_a[kk], b[2], b[3]);
                    mma_16816<Elem>(t_acc[2 * dp], ps_a[kk], b[0], b[1]);
                    mma_16816<Elem>(t_acc[2 * dp + 1], ps_a[kk], b[2], b[3]);
                    ldsm_x4_trans<T::kDvOffset + Cursor::template imm<kRow, kCol8>()>(b, cur_a.template reg<kCol8>());
                    mma_16816<Elem>(t_acc[2 * dp], p_a[kk], b[0], b[1]);
                    mma_16816<Elem>(t_acc[2 * dp + 1], p_a[kk], b[2], b[3]);
                });
            });
        }
    }

    // ---- Epilogue: O = A / l, O' = (B - (R / l) A) / l, both times the head gate; rows past sq
    // and dims past d are not written. Adding +0 turns -0 (zero gate) into +0.
    const float gate = params.opt.head_gates != nullptr ? params.opt.head_gates[head] : 1.0f;
    elem_bits_t *const o_rows = static_cast<elem_bits_t *>(params.o) + o_off;
    elem_bits_t *const ot_rows = static_cast<elem_bits_t *>(jp.o_tangent) + o_off;
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h) {
        const RowResult res = with_sink(params.opt, head, softmax.finalize(h, score_mul, o_acc));
        const float r_mean = quad_allreduce_sum(r_sum[h]) * res.inv_sum;  // rowsum(P o S')
        const float mul = res.inv_sum * gate;
        const int row = warp_row0 + mma_c_row(lane, mma_c_index(h, 0));  // within the CTA tile
        if (row >= rows_valid) continue;
#pragma unroll
        for (int ot = 0; ot < T::kOTiles; ++ot) {
            const int c = mma_c_index(h, 0);
            const int col = ot * kMmaN + mma_c_col(lane, c);
            if (col >= d_real) continue;
            const int64_t at = row * params.o_row_stride + col;
            *reinterpret_cast<uint32_t *>(o_rows + at) = Elem::pack(
                __fadd_rn(o_acc[ot][c] * mul, 0.0f), __fadd_rn(o_acc[ot][c + 1] * mul, 0.0f));
            *reinterpret_cast<uint32_t *>(ot_rows + at) =
                Elem::pack(__fadd_rn(fmaf(-r_mean, o_acc[ot][c], t_acc[ot][c]) * mul, 0.0f),
                           __fadd_rn(fmaf(-r_mean, o_acc[ot][c + 1], t_acc[ot][c + 1]) * mul, 0.0f));
        }
    }
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_FLASH_JVP_CTA_CUH
