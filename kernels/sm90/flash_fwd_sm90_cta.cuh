/*
 * flash_fwd_sm90_cta.cuh: the body of one Hopper forward CTA (FlashAttention-3 style
 * warp specialisation) for kernels/sm90/flash_fwd_sm90.cu.
 *
 * One CTA computes block_m query rows (64 per consumer warpgroup) of one query head of one batch
 * item (grid as the Ampere forward). Its warps form warpgroups:
 *  - warpgroup 0, the producer: one thread issues TMA loads, Q once, then K and V tile by tile
 *    into a two-stage ring; k_full / v_full[stage] complete when a tile's bytes have landed,
 *    kv_empty[stage] when every consumer thread is done reading the stage. The producer gives
 *    its registers up (setmaxnreg.dec) and the rest of the warpgroup exits.
 *  - warpgroups 1 (and 2), the consumers (setmaxnreg.inc when there are two), 64 query rows each: per tile,
 *    S = Q K^T by wgmma with both operands in shared memory, the score modifiers, masks and the
 *    online softmax in registers (the accumulator of m64nNk16 is, per warp, the m16n8 C fragment
 *    of the mma.sync kernels, so common/softmax.cuh and common/mask.cuh apply as they are), and
 *    O += P V by wgmma with P from registers and V from shared memory.
 * Overlap inside a consumer warpgroup: tile n's S = Q K^T and tile n-1's O += P V are issued
 * together; the softmax of tile n runs while the P V of tile n-1 is still on the tensor cores,
 * and only the O rescale and the P packing wait for it. The two consumer warpgroups run
 * independently, so one's softmax also overlaps the other's GEMMs (d64 / d128: two consumers).
 * Epilogue: O normalised and gated in registers, stored straight to global (each quad writes 16
 * contiguous bytes of a row), LSE / entropy as the Ampere kernel.
 */
#ifndef FLASHMHA_SM90_FLASH_FWD_SM90_CTA_CUH
#define FLASHMHA_SM90_FLASH_FWD_SM90_CTA_CUH

#include <stdint.h>

#include "params.h"
#include "common/codegen.cuh"
#include "common/cta_prologue.cuh"
#include "common/dtype.cuh"
#include "common/mask.cuh"
#include "common/mma.cuh"
#include "common/smem_layout.cuh"
#include "common/softmax.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"
#include "sm90/fwd_traits_sm90.cuh"

namespace flashmha {

/* The first kTiles n8 tiles of an accumulator (the columns a narrower loop copy writes), as the
 * array the wgmma wrappers take. */
template <int kTiles, int kAll>
__device__ __forceinline__ float (&leading_tiles(float (&acc)[kAll][kCRegs]))[kTiles][kCRegs] {
    static_assert(kTiles <= kAll, "a leading part of the accumulator");
    return *reinterpret_cast<float(*)[kTiles][kCRegs]>(&acc[0]);
}

template <class T>
__device__ __forceinline__ void flash_fwd_sm90_cta(const FlashFwdTmaParams &tp) {
    using Elem = typename T::Elem;
    constexpr int kBlockN = T::kBlockN;
    constexpr int kStages = T::kStages;
    const FlashFwdParams &params = tp.base;

    // [Q boxes | K stages | V stages | mbarriers], layout in FwdTraitsSm90.
    extern __shared__ __align__(1024) unsigned char smem[];
    const uint32_t smem_base = smem_addr(smem);

    // Head dims below the compiled one: the tensor maps' dimension 0 is head_dim, so TMA fills
    // the missing columns with zeros; the epilogue does not store them, and the consumers run
    // the loop copy that stops both GEMMs at the real width rounded up to 16
    // (FwdTraitsSm90::LoopWidth).
    const int d_real = params.head_dim;
    cta_prologue<T::kSmemBytes, T::kHeadDim, T::kHeadDimStep>(d_real);
    const int dv_real = T::kSplitDims ? T::kHeadDimV : d_real;  // O's columns (d_v)
    // The 128-byte swizzle of TMA and of the wgmma descriptors needs 1024-byte aligned tiles.
    if (smem_base % kSwizzleAtomBytes != 0) __trap();

    const int tid = threadIdx.x;
    const int lane = lane_of(tid);
    const int m_block = blockIdx.x;
    const int head = blockIdx.y;
    const int batch = blockIdx.z;

    const SeqExtent ext = seq_extent(params, batch);  // traps on bad cu_seqlens
    const int m0 = m_block * T::kBlockM;  // first query row of this CTA within the item
    if (m0 >= ext.sq) return;             // varlen: item shorter than the grid (CTA-uniform)
    const int rows_valid = min(ext.sq - m0, T::kBlockM);
    const int kv_head = head / (params.num_heads_q / params.num_heads_kv);  // GQA / MQA
    const bool varlen = (params.opt.flags & FLASHMHA_FLAG_VARLEN) != 0;

    const KeyMask mask(params.opt, ext.sq, ext.sk);
    const int n_begin = mask.template kv_tile_begin<kBlockN>(m0);
    const int n_end = mask.template kv_tile_end<kBlockN>(m0 + rows_valid - 1);
    const bool has_tiles = n_begin < n_end;

    if (tid == 0) {
        mbarrier_init(T::q_full(smem_base), 1);
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(T::k_full(smem_base, s), 1);  // the producer's arrive.expect_tx
            mbarrier_init(T::v_full(smem_base, s), 1);
            mbarrier_init(T::kv_empty(smem_base, s), T::kConsumerThreads);
        }
        mbarrier_init_fence();
    }
    __syncthreads();  // the mbarriers are initialised before any thread arrives or waits on them

    // TMA coordinates (params.h): rows of the item start at row 0 of its batch slice (padded)
    // or at cu_seqlens (varlen, one batch slice).
    const int q_row = static_cast<int>(ext.q_row0) + m0;
    const int k_row0 = static_cast<int>(ext.k_row0);
    const int tma_batch = varlen ? 0 : batch;

    if (warpgroup_of(tid) == 0) {
        if constexpr (T::kReallocRegs) setmaxnreg_dec<T::kProducerRegs>();
        if (tid != 0 || !has_tiles) return;
        // Producer: Q, then K[n] and V[n] into stage (n - n_begin) % kStages once the consumers
        // released that stage's previous tile.
        mbarrier_arrive_expect_tx(T::q_full(smem_base), T::kQBytes);
#pragma unroll
        for (int j = 0; j < T::kBoxes; ++j)
            tma_load_4d(smem_base + T::kQOffset + j * T::kQBoxBytes, &tp.q_map, T::q_full(smem_base),
                        j * kColsPerSwizzleRow, head, q_row, tma_batch);
        for (int n = n_begin; n < n_end; ++n) {
            const int i = n - n_begin;
            const int stage = i % kStages;
            const int fill = i / kStages;
            if (fill > 0) mbarrier_wait(T::kv_empty(smem_base, stage), (fill - 1) & 1);
            const int row = k_row0 + n * kBlockN;
            const uint32_t k_tile = smem_base + T::kKOffset + stage * T::kKVTileBytes;
            const uint32_t v_tile = smem_base + T::kVOffset + stage * T::kVTileBytes;
            mbarrier_arrive_expect_tx(T::k_full(smem_base, stage), T::kKVTileBytes);
#pragma unroll
            for (int j = 0; j < T::kBoxes; ++j)
                tma_load_4d(k_tile + j * T::kKVBoxBytes, &tp.k_map, T::k_full(smem_base, stage),
                            j * kColsPerSwizzleRow, kv_head, row, tma_batch);
            mbarrier_arrive_expect_tx(T::v_full(smem_base, stage), T::kVTileBytes);
#pragma unroll
            for (int j = 0; j < T::kBoxesV; ++j)
                tma_load_4d(v_tile + j * T::kKVBoxBytes, &tp.v_map, T::v_full(smem_base, stage),
                            j * kColsPerSwizzleRow, kv_head, row, tma_batch);
        }
        return;
    }

    // ---- Consumers ---------------------------------------------------------------------------
    if constexpr (T::kReallocRegs) setmaxnreg_inc<T::kConsumerRegs>();
    const int wg = warpgroup_of(tid) - 1;  // consumer index: rows wg * 64 .. of the CTA tile
    const int warp_row0 = wg * kWgmmaM + warp_in_warpgroup(tid) * kMmaM;  // within the CTA tile
    // The thread's two query rows (groupID, groupID + 8 of its warp's 16), within the item.
    int row_of[kRowHalves];
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h) row_of[h] = m0 + warp_row0 + mma_c_row(lane, mma_c_index(h, 0));

    // O: [16 rows of this warp, d_v] as n8 C fragments (the wgmma accumulator), f32
    float o_acc[T::kOTiles][kCRegs];
    zero_c_fragments(o_acc);

    OnlineSoftmax<T::kSTiles, T::kOTiles> softmax;
    const ScoreMod mod(params.opt);
    const float score_mul = pin(mod.score_mul());
    const float head_alibi = mod.alibi_log2(params.opt, head);
    const float alibi_log2[kRowHalves] = {head_alibi, head_alibi};  // one head per CTA

    if (has_tiles) {
        const bool want_entropy = params.opt.entropy != nullptr;
        const bool want_mod = mod.any();
        const auto needs_mask = mask.template partial_tile_test<kBlockN>(m0, m0 + rows_valid - 1);

        // Descriptors of this warpgroup's 64 rows of Q box 0, of K and V box 0 of stage 0; each
        // k-step advances them by a constant. They are re-pinned per tile so the compiler does
        // not hoist d / 16 precomputed descriptors out of the main loop (registers).
        const uint64_t q_desc0 = smem_desc_128b(
            smem_base + T::kQOffset + wg * kWgmmaM * kSwizzleRowBytes, kKMajorLbo, kSwizzleAtomBytes);
        const uint64_t k_desc0 = smem_desc_128b(smem_base + T::kKOffset, kKMajorLbo, kSwizzleAtomBytes);
        const uint64_t v_desc0 = smem_desc_128b(smem_base + T::kVOffset, T::kKVBoxBytes, kSwizzleAtomBytes);
        // S = Q K^T over the width's k16 steps (Width: FwdTraitsSm90::LoopWidth): k-step kk is
        // 32 bytes into the rows of box kk / 4.
        auto s_gemm = [&](auto width, float(&s)[T::kSTiles][kCRegs], int stage) {
            using Width = decltype(width);
            const uint64_t qd = pin(q_desc0);
            const uint64_t kd = smem_desc_advance(pin(k_desc0), stage * T::kKVTileBytes);
            static_for<Width::kQKSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                constexpr int kBox = kk / T::kKStepsPerBox;
                constexpr int kInRow = (kk % T::kKStepsPerBox) * kKStepBytes;
                wgmma_ss<kBlockN, Elem>(s, smem_desc_advance(qd, kBox * T::kQBoxBytes + kInRow),
                                        smem_desc_advance(kd, kBox * T::kKVBoxBytes + kInRow),
                                        kk == 0 ? 0u : 1u);  // kk 0: S = Q K^T, no zeroing
            });
        };
        // O += P V over block_n / 16 k-steps into the width's first N columns of O (the others
        // stay zero and are not stored): k-step kk is keys 16 kk .., i.e. 16 rows (two swizzle
        // atoms) into every V box; the next 64 head-dim columns are one box further (the
        // descriptor's LBO).
        auto pv_gemm = [&](auto width, const uint32_t(&p)[T::kPVSteps][kARegs], int stage) {
            using Width = decltype(width);
            auto &o = leading_tiles<Width::kOTiles>(o_acc);
            const uint64_t vd = smem_desc_advance(pin(v_desc0), stage * T::kVTileBytes);
            static_for<T::kPVSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                wgmma_rs<Width::kN, Elem>(o, p[kk],
                                          smem_desc_advance(vd, kk * kWgmmaK * kSwizzleRowBytes), 1u);
            });
        };
        // Scores of tile n -> P (f32, in place): modifiers, masks, online softmax; alpha is the
        // factor O must be rescaled by before it accumulates this tile's P V.
        auto fold_scores = [&](float(&s)[T::kSTiles][kCRegs], int n, float(&alpha)[kRowHalves]) {
            const int n0 = n * kBlockN;  // first key of the tile
            // Edge tiles (keys past sk, causal diagonal, window edges) are masked per element.
            modify_and_mask(s, mask, mod, alibi_log2, row_of, n0, want_mod, needs_mask(n0), lane);
            if (want_entropy)
                softmax.template fold<true>(s, score_mul, alpha);
            else
                softmax.template fold<false>(s, score_mul, alpha);
        };
        // P: [16 rows, block_n keys] as 16-bit pairs in A-fragment order (mma.cuh P reuse).
        auto pack_p = [&](const float(&s)[T::kSTiles][kCRegs], uint32_t(&p)[T::kPVSteps][kARegs]) {
#pragma unroll
            for (int kk = 0; kk < T::kPVSteps; ++kk)
#pragma unroll
                for (int r = 0; r < kARegs; ++r) {
                    const float(&st)[kCRegs] = s[p_tile_of_a_reg(kk, r)];
                    p[kk][r] = Elem::pack(st[p_c_of_a_reg(r)], st[p_c_of_a_reg(r) + 1]);
                }
        };
        auto parity = [](int i) { return static_cast<uint32_t>((i / kStages) & 1); };

        // Every K / V tile of the CTA at one loop width (a copy per width: FwdTraitsSm90).
        auto run_tiles = [&](auto width) {
            float s[T::kSTiles][kCRegs];
            uint32_t p[T::kPVSteps][kARegs];
            float alpha[kRowHalves];

            mbarrier_wait(T::q_full(smem_base), 0);
            // Tile n_begin: S alone (O is still zero, so its rescale is skipped).
            mbarrier_wait(T::k_full(smem_base, 0), 0);
            wgmma_fence();
            s_gemm(width, s, 0);
            wgmma_commit();
            wgmma_wait<0>(s);
            fold_scores(s, n_begin, alpha);
            pack_p(s, p);

            for (int n = n_begin + 1; n < n_end; ++n) {
                const int i = n - n_begin;
                const int stage = i % kStages;
                const int prev = (i - 1) % kStages;
                mbarrier_wait(T::k_full(smem_base, stage), parity(i));
                wgmma_fence_operand(o_acc);
                wgmma_fence_operand(p);
                wgmma_fence();  // O rescaled and P packed (by this thread) before the wgmma read them
                s_gemm(width, s, stage);
                wgmma_commit();
                mbarrier_wait(T::v_full(smem_base, prev), parity(i - 1));
                pv_gemm(width, p, prev);
                wgmma_commit();
                wgmma_wait<1>(s);  // S of tile n is ready; tile n-1's P V may still be running
                fold_scores(s, n, alpha);
                wgmma_wait<0>(o_acc);  // tile n-1's P V is done: V[prev] and P are free
                wgmma_fence_operand(p);
                mbarrier_arrive(T::kv_empty(smem_base, prev));
                softmax.rescale(o_acc, alpha);
                pack_p(s, p);
            }
            const int last = (n_end - 1 - n_begin) % kStages;
            mbarrier_wait(T::v_full(smem_base, last), parity(n_end - 1 - n_begin));
            wgmma_fence_operand(o_acc);
            wgmma_fence_operand(p);
            wgmma_fence();
            pv_gemm(width, p, last);
            wgmma_commit();
            wgmma_wait<0>(o_acc);
            wgmma_fence_operand(p);
        };
        const int copy = T::loop_copy(d_real);
        static_for<T::kLoopCopies>([&](auto c) {
            if (copy == decltype(c)::value) run_tiles(typename T::template LoopWidth<decltype(c)::value>{});
        });
    }

    // ---- Epilogue ---------------------------------------------------------------------------
    const float gate = params.opt.head_gates != nullptr ? params.opt.head_gates[head] : 1.0f;
    RowResult res[kRowHalves];
    float row_scale[kRowHalves];
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h) {
        res[h] = with_sink(params.opt, head, softmax.finalize(h, score_mul, o_acc));
        row_scale[h] = res[h].inv_sum * gate;
    }

    // o: [b, sq, hq, d_v] or varlen [total_q, hq, d_v]; this CTA's rows from (ext.q_row0 + m0).
    const int64_t o_off = (varlen ? 0 : batch * params.o_batch_stride) +
                          (ext.q_row0 + m0) * params.o_row_stride + head * params.o_head_stride;
    elem_bits_t *o_tile = static_cast<elem_bits_t *>(params.o) + o_off;  // o: [block_m, d_v]
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h) {
        const int row = warp_row0 + mma_c_row(lane, mma_c_index(h, 0));  // within the CTA tile
        if (row >= rows_valid) continue;  // rows >= sq are not written
#pragma unroll
        for (int ot = 0; ot < T::kOTiles; ++ot) {
            const int c = mma_c_index(h, 0);
            const int col = ot * kMmaN + mma_c_col(lane, c);
            if (col >= dv_real) continue;  // columns >= d_v are not written
            // Adding +0 turns -0 (zero gate) into +0.
            const float lo = __fadd_rn(o_acc[ot][c] * row_scale[h], 0.0f);
            const float hi = __fadd_rn(o_acc[ot][c + 1] * row_scale[h], 0.0f);
            *reinterpret_cast<uint32_t *>(o_tile + row * params.o_row_stride + col) = Elem::pack(lo, hi);
        }
    }

    write_row_stats<kRowHalves>(params, ext, batch, head, varlen, lane, row_of, res);
}

}  // namespace flashmha

#endif  // FLASHMHA_SM90_FLASH_FWD_SM90_CTA_CUH
