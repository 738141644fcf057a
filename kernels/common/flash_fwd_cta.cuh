/*
 * flash_fwd_cta.cuh: the body of one forward flash-attention CTA (FlashAttention-2 style), shared
 * by the Ampere entry points (kernels/sm80/flash_fwd.cu: cp.async, mma.m16n8k16) and the Turing ones
 * (kernels/sm75/flash_fwd_sm75.cu: register-staged loads, two mma.m16n8k8 per k16 step). The
 * traits' LoadPath picks the K / V pipeline; everything else (masks, modifiers, online softmax,
 * entropy, epilogue) is the same code on both.
 *
 * A head dim below the compiled one runs with its extra columns zero-filled; when that leaves
 * whole 16-column steps empty, a second copy of the main loop skips them: one step short at
 * compile time (FwdTraits::kShortLoop) or bounded at run time (FwdTraits::kBoundedLoop,
 * codegen.cuh step_runs); kernel_table.h, "Head dims between the rows".
 *
 * One CTA computes one tile of block_m query rows of one query head of one batch item
 * (grid = (ceil(seqlen_q / block_m), num_heads_q, batch)); each warp owns kRowBlocks m16 row
 * blocks (32 rows for block_m = 128 and 4 warps), so every K / V fragment it reads from shared
 * memory feeds kRowBlocks mma. Q is loaded once; K and V tiles of block_n keys stream through
 * shared memory, the next tile's loads overlapping this tile's math:
 *  - cp.async: two shared-memory stages, the copies of tile n+1 land in the stage tile n does
 *    not use; or (FwdTraits::kStages == 1) one stage, V[n] landing during S = Q K[n]^T and
 *    K[n+1] during O += P V[n];
 *  - register-staged: one stage; tile n+1's global loads are issued into registers before tile
 *    n's math and stored to shared memory once every warp is done with tile n (K after S, V
 *    after O += P V).
 * Per tile a warp computes S = Q K^T (f32 accumulate), applies the score modifiers / masks,
 * folds S into the online softmax (log2 domain), and accumulates O += P V with P taken straight
 * from the S registers. The epilogue normalises O, applies the head gate, stages O through shared
 * memory for coalesced 16-byte stores, and writes LSE and entropy when asked. Everything optional
 * is a runtime flag or null pointer, tested once per CTA or once per tile (uniform branches).
 */
#ifndef FLASHMHA_COMMON_FLASH_FWD_CTA_CUH
#define FLASHMHA_COMMON_FLASH_FWD_CTA_CUH

#include <stdint.h>
#include <type_traits>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/smem_layout.cuh"
#include "common/staged_copy.cuh"
#include "common/softmax.cuh"
#include "common/mask.cuh"
#include "common/fwd_traits.cuh"
#include "common/codegen.cuh"
#include "common/cta_prologue.cuh"

namespace flashmha {

/* `existing` when it already has type Own (no second set of per-thread registers for the same
 * tile shape: d_v = d_qk rows compile as before), else a new Own(args...) (d_v != d_qk rows,
 * whose V tile or Q rows differ from K's / V's). */
template <class Own, class Existing, class... Args>
__device__ __forceinline__ std::conditional_t<std::is_same_v<Own, Existing>, const Existing &, Own>
reuse_or_make(const Existing &existing, Args... args) {
    if constexpr (std::is_same_v<Own, Existing>)
        return existing;
    else
        return Own(args...);
}

/* Width of one copy of the forward main loop (issue 23): its first kSteps 16-column steps (the
 * k16 steps of Q K^T, the n16 pairs of P V); with kRunTime, those past T::kQKAlwaysSteps (Q K^T)
 * or past step 0 (P V) also stop at the real head dim (codegen.cuh step_runs). */
template <int kSteps_, bool kRunTime_>
struct FwdLoopWidth {
    static constexpr int kSteps = kSteps_;
    static constexpr bool kRunTime = kRunTime_;
};

template <class T>
__device__ __forceinline__ void flash_fwd_cta(const FlashFwdParams &params) {
    using Elem = typename T::Elem;
    using QTile = typename T::QTile;
    using KVTile = typename T::KVTile;  // k: [block_n, d_qk]
    using VTile = typename T::VTile;    // v: [block_n, d_v] (KVTile when d_v = d_qk)
    using OTile = typename T::OTile;    // o staging: [block_m, d_v] (QTile when d_v = d_qk)
    constexpr int kBlockN = T::kBlockN;

    // [Q | K0 | K1 | V0 | V1] ([Q | K | V] with one stage), layout in FwdTraits; 128-byte
    // alignment keeps the swizzle exact.
    extern __shared__ __align__(128) unsigned char smem[];

    // Head dims below the compiled one run with their extra columns predicated off (params.h).
    const int d_real = params.head_dim;
    cta_prologue<T::kSmemBytes, T::kHeadDim, T::kHeadDimStep>(d_real);
    const int col8_valid = d_real / kChunkElems;  // 16-byte column chunks that exist in global
    // ... of V and O rows: d_v is the compiled one on a d_v != d_qk row (FwdTraits::kSplitDims).
    const int col8_valid_v = T::kSplitDims ? T::kHeadDimV / kChunkElems : col8_valid;
    // Q K^T's k16 steps and P V's n16 pairs stop at the real head dim rounded up to 16 (issue
    // 23: no mma on all-zero columns): a narrower head dim runs the bounded main loop.
    static_assert(!(T::kBoundedLoop || T::kShortLoop) || T::kQKSteps == T::kPairTilesD,
                  "one 16-column bound serves Q K^T and P V");

    const int tid = threadIdx.x;
    const int lane = lane_of(tid);
    const int warp = warp_of(tid);
    const int m_block = blockIdx.x;
    const int head = blockIdx.y;
    const int batch = blockIdx.z;

    const SeqExtent ext = seq_extent(params, batch);
    const int m0 = m_block * T::kBlockM;  // first query row of this CTA within the item
    if (m0 >= ext.sq) return;             // varlen: item shorter than the grid (CTA-uniform)
    const int rows_valid = min(ext.sq - m0, T::kBlockM);
    const int kv_head = head / (params.num_heads_q / params.num_heads_kv);  // GQA / MQA
    const bool varlen = (params.opt.flags & FLASHMHA_FLAG_VARLEN) != 0;

    // 64-bit element offsets of (batch, row 0, head); tile-local offsets below are small.
    // q: [b, sq, hq, d_qk] or varlen [total_q, hq, d_qk]; o: the same with d_v
    // k: [b, sk, hkv, d_qk] or varlen [total_k, hkv, d_qk]; v: the same with d_v
    const int64_t q_off = (varlen ? 0 : batch * params.q_batch_stride) +
                          (ext.q_row0 + m0) * params.q_row_stride + head * params.q_head_stride;
    const int64_t o_off = (varlen ? 0 : batch * params.o_batch_stride) +
                          (ext.q_row0 + m0) * params.o_row_stride + head * params.o_head_stride;
    const int64_t k_off = (varlen ? 0 : batch * params.k_batch_stride) +
                          ext.k_row0 * params.k_row_stride + kv_head * params.k_head_stride;
    const int64_t v_off = (varlen ? 0 : batch * params.v_batch_stride) +
                          ext.k_row0 * params.v_row_stride + kv_head * params.v_head_stride;
    // .global byte addresses of row 0 of: q: [block_m, d_qk] (this CTA's tile), k: [sk, d_qk],
    // v: [sk, d_v].
    const uint64_t q_tile = gmem_addr(params.q) + q_off * kElemBytes;
    const uint64_t k_seq = gmem_addr(params.k) + k_off * kElemBytes;
    const uint64_t v_seq = gmem_addr(params.v) + v_off * kElemBytes;
    elem_bits_t *o_tile = static_cast<elem_bits_t *>(params.o) + o_off;  // o: [block_m, d_v]

    const KeyMask mask(params.opt, ext.sq, ext.sk);
    const int row_first = m0;
    const int row_last = m0 + rows_valid - 1;
    const int n_begin = mask.template kv_tile_begin<kBlockN>(row_first);
    const int n_end = mask.template kv_tile_end<kBlockN>(row_last);
    // Pinned: NVVM would otherwise re-derive key_lo(row_last) in every tile of the main loop.
    const PartialTileTest<kBlockN> needs_mask{pin(mask.key_hi(row_first)), pin(mask.key_lo(row_last))};

    // .shared base of [Q | K0 | K1 | V0 | V1]; tile and stage offsets ride in address immediates.
    const uint32_t smem_base = smem_addr(smem);

    constexpr int kRB = T::kRowBlocks;
    // The thread's two query rows (groupID, groupID + 8) of each of the warp's m16 row blocks,
    // within the item; the warp's first row within the CTA tile is warp_row0.
    const int warp_row0 = warp * T::kRowsPerWarp;
    int row_of[kRB][kRowHalves];
#pragma unroll
    for (int mb = 0; mb < kRB; ++mb)
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h)
            row_of[mb][h] = m0 + warp_row0 + mb * kMmaM + mma_c_row(lane, mma_c_index(h, 0));

    // O: [kRB m16 row blocks of this warp, d_v] as n8 C fragments, f32
    float o_acc[kRB][T::kOTiles][kCRegs];
    zero_c_fragments(o_acc);

    OnlineSoftmax<T::kSTiles, T::kOTiles> softmax[kRB];
    const ScoreMod mod(params.opt);
    const float score_mul = pin(mod.score_mul());
    const float head_alibi = mod.alibi_log2(params.opt, head);
    const float alibi_log2[kRowHalves] = {head_alibi, head_alibi};  // one head per CTA

    if (n_begin < n_end) {
        const bool want_entropy = params.opt.entropy != nullptr;
        const bool want_mod = mod.any();

        // K / V tile copies: tile n (keys n * block_n ..) into a stage; rows past sk zero-filled.
        // k_next / v_next: .global address of the next tile to prefetch. (StagedTileCopy is a
        // TileCopy: cp.async kernels use its copy(), register-staged ones its load / store.)
        using KVCopy = StagedTileCopy<KVTile, T::kThreads>;
        using VCopy = StagedTileCopy<VTile, T::kThreads>;
        const KVCopy kv_copy(smem_base, tid);
        decltype(auto) v_copy = reuse_or_make<VCopy>(kv_copy, smem_base, tid);
        typename KVCopy::Source k_src = kv_copy.source(params.k_row_stride, tid);
        typename VCopy::Source v_src = v_copy.source(params.v_row_stride, tid);
        // The thread's first-chunk offset rides in the running tile address (two 64-bit
        // registers fewer in the main loop); zero-filled chunks point at the tensor's base,
        // a valid address the copy does not read.
        uint64_t k_next = k_seq + n_begin * k_src.tile_bytes() + k_src.off0;
        uint64_t v_next = v_seq + n_begin * v_src.tile_bytes() + v_src.off0;
        k_src.off0 = 0;
        v_src.off0 = 0;
        auto prefetch_kv = [&](auto stage_c, int n) {
            constexpr int kStage = decltype(stage_c)::value;
            const int valid_keys = ext.sk - n * kBlockN;
            kv_copy.template copy<T::kKOffset + kStage * KVTile::kBytes>(
                k_src, k_next, valid_keys, col8_valid, gmem_addr(params.k), tid);
            cp_async_commit();
            v_copy.template copy<T::kVOffset + kStage * VTile::kBytes>(
                v_src, v_next, valid_keys, col8_valid_v, gmem_addr(params.v), tid);
            cp_async_commit();
            k_next += k_src.tile_bytes();
            v_next += v_src.tile_bytes();
        };
        // Single-stage cp.async (T::kStages == 1): K and V tiles issued apart, each as one group
        // (the prologue still issues K[n_begin], V[n_begin] through prefetch_kv).
        auto prefetch_k = [&](int n) {
            kv_copy.template copy<T::kKOffset>(k_src, k_next, ext.sk - n * kBlockN, col8_valid,
                                               gmem_addr(params.k), tid);
            cp_async_commit();
            k_next += k_src.tile_bytes();
        };
        auto prefetch_v = [&](int n) {
            v_copy.template copy<T::kVOffset>(v_src, v_next, ext.sk - n * kBlockN, col8_valid_v,
                                              gmem_addr(params.v), tid);
            cp_async_commit();
            v_next += v_src.tile_bytes();
        };
        // Register-staged: issue the global loads of K[n] / V[n] into `st` (LoadPath).
        using Staged = typename KVCopy::Staged;
        auto load_k = [&](int n, Staged &st) {
            kv_copy.load(k_src, k_next, ext.sk - n * kBlockN, col8_valid, tid, st);
            k_next += k_src.tile_bytes();
        };
        using VStaged = typename VCopy::Staged;
        auto load_v = [&](int n, VStaged &st) {
            v_copy.load(v_src, v_next, ext.sk - n * kBlockN, col8_valid_v, tid, st);
            v_next += v_src.tile_bytes();
        };

        if constexpr (T::kRegisterStaged) {
            // Prologue: Q, K[n_begin], V[n_begin] through registers into the single stage.
            {
                using QCopy = StagedTileCopy<QTile, T::kThreads>;
                const QCopy q_copy(smem_base, tid);
                q_copy.template copy_via_registers<T::kQOffset>(
                    q_copy.source(params.q_row_stride, tid), q_tile, rows_valid, col8_valid, tid);
            }
            Staged ks;
            VStaged vs;
            load_k(n_begin, ks);
            load_v(n_begin, vs);
            kv_copy.template store<T::kKOffset>(ks, tid);
            v_copy.template store<T::kVOffset>(vs, tid);
            __syncthreads();  // every thread's Q, K[n_begin], V[n_begin] stores are visible
        } else {
            // Prologue: group 1 = Q + K[n_begin], group 2 = V[n_begin].
            {
                using QCopy = TileCopy<QTile, T::kThreads>;
                const QCopy q_copy(smem_base, tid);
                q_copy.template copy<T::kQOffset>(q_copy.source(params.q_row_stride, tid), q_tile,
                                                  rows_valid, col8_valid, q_tile, tid);
            }
            prefetch_kv(Int<0>{}, n_begin);
            cp_async_wait<1>();  // this thread's Q and K[n_begin] copies have landed
            __syncthreads();     // ... and every thread's: Q and K[n_begin] are complete
        }

        // Fragment cursors (ldmatrix row addresses; see the A / B patterns in mma.cuh).
        using QCursor = SwizzleCursor<QTile>;
        using KVCursor = SwizzleCursor<KVTile>;
        using VCursor = SwizzleCursor<VTile>;
        // Q uses V's cursor when their rows are alike (same lane pattern, same swizzle: Q and V
        // rows are both d wide and warp_row0 is a multiple of the swizzle period) moved by the
        // warp's row offset: one add per Q fragment load instead of kVariants more live
        // registers. A d_v != d_qk row keeps a cursor of its own for Q.
        static_assert(T::kRowsPerWarp % kSwizzleRowPeriod == 0, "Q cursors move by whole periods");
        using QRegCursor =
            std::conditional_t<QTile::kRowBytes == VTile::kRowBytes, VCursor, SwizzleCursor<QTile>>;
        const uint32_t q_shift = static_cast<uint32_t>(warp_row0 * QTile::kRowBytes);
        const KVCursor k_cur(smem_base, ldsm_b_row(lane), ldsm_b_col8(lane));
        const VCursor v_cur(smem_base, ldsm_a_row(lane), ldsm_a_col8(lane));
        decltype(auto) q_cur = reuse_or_make<QRegCursor>(v_cur, smem_base, ldsm_a_row(lane), ldsm_a_col8(lane));

        // Q A-fragments of this warp's row blocks, one per k16 step (kept only if kQInRegisters).
        constexpr int kQRegSteps = T::kQInRegisters ? T::kQKSteps : 1;
        uint32_t q_frag[kQRegSteps][kRB][kARegs];
        // Loads the A fragments of k16 step kk for every row block of the warp.
        auto load_q = [&](auto kk_c, uint32_t(&a)[kRB][kARegs]) {
            constexpr int kCol8 = decltype(kk_c)::value * T::kChunksPerK16;
            static_for<kRB>([&](auto mb_c) {
                constexpr int kRow = decltype(mb_c)::value * kMmaM;
                ldsm_x4<T::kQOffset + QCursor::template imm<kRow, kCol8>()>(
                    a[decltype(mb_c)::value], pin(q_cur.template reg<kCol8>() + q_shift));
            });
        };
        if constexpr (T::kQInRegisters) {
            static_for<T::kQKSteps>([&](auto kk_c) { load_q(kk_c, q_frag[decltype(kk_c)::value]); });
        }

        // One KV tile in pipeline stage kStage (compile time, so all shared addresses are
        // register + immediate): prefetch tile n+1 (into the other stage, or into registers),
        // S = Q K^T, modifiers and masks, online softmax, O += P V.
        auto process_tile = [&](auto stage_c, auto width, int n) {
            constexpr int kStage = decltype(stage_c)::value;
            using Width = decltype(width);  // FwdLoopWidth
            constexpr int kKTile = T::kKOffset + kStage * KVTile::kBytes;
            constexpr int kVTile = T::kVOffset + kStage * VTile::kBytes;
            const bool has_next = n + 1 < n_end;
            [[maybe_unused]] Staged k_stage;  // register-staged: K / V[n+1] in flight (unused otherwise)
            [[maybe_unused]] VStaged v_stage;
            if constexpr (T::kRegisterStaged) {
                if (has_next) load_k(n + 1, k_stage);  // lands while S = Q K^T runs
            } else if constexpr (T::kStages == 2) {
                if (has_next) prefetch_kv(Int<kStage ^ 1>{}, n + 1);  // stage freed by the last barrier
            }  // one stage: V[n] was issued after the previous tile's O += P V (or in the prologue)

            // S = Q K^T: s: [kRB x 16 rows, block_n keys] as n8 C fragments, f32 (the k-step 0
            // mma starts from C = 0, so s needs no zeroing). Each K fragment feeds kRB mma.
            float s[kRB][T::kSTiles][kCRegs];
            static_for<T::kQKSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                constexpr int kCol8 = kk * T::kChunksPerK16;
                // Q and K columns past d are zero.
                if constexpr (kk >= Width::kSteps) return;
                else if (!step_runs<Width::kRunTime && kk >= T::kQKAlwaysSteps, kk>(params.head_dim)) return;
                auto qk_step = [&](const uint32_t(&a)[kRB][kARegs]) {
                    static_for<T::kPairTilesN>([&](auto jp_c) {
                        constexpr int jp = decltype(jp_c)::value;
                        constexpr int kRow = jp * 2 * kMmaN;  // two n8 key tiles per ldmatrix.x4
                        uint32_t b[kLdsmMatrices];
                        ldsm_x4<kKTile + KVCursor::template imm<kRow, kCol8>()>(
                            b, k_cur.template reg<kCol8>());
#pragma unroll
                        for (int mb = 0; mb < kRB; ++mb) {
                            if constexpr (kk == 0) {
                                mma_16816_zero_c<Elem>(s[mb][2 * jp], a[mb], b[0], b[1]);
                                mma_16816_zero_c<Elem>(s[mb][2 * jp + 1], a[mb], b[2], b[3]);
                            } else {
                                mma_16816<Elem>(s[mb][2 * jp], a[mb], b[0], b[1]);
                                mma_16816<Elem>(s[mb][2 * jp + 1], a[mb], b[2], b[3]);
                            }
                        }
                    });
                };
                if constexpr (T::kQInRegisters) {
                    qk_step(q_frag[kk]);
                } else {  // re-read this k-step's Q fragments (see FwdTraits::kQInRegisters)
                    uint32_t a[kRB][kARegs];
                    load_q(kk_c, a);
                    qk_step(a);
                }
            });

            const int n0 = n * kBlockN;  // first key of the tile
            const bool mask_tile = needs_mask(n0);
            // P: [kRB x 16 rows, block_n keys] as 16-bit pairs in A-fragment order. Each row
            // block's scores are packed right after its softmax, so at most one row block's f32
            // scores are live next to O (the register peak of 32-row warps).
            uint32_t p_all[T::kPVSteps][kRB][kARegs];
#pragma unroll
            for (int mb = 0; mb < kRB; ++mb) {
                modify_and_mask(s[mb], mask, mod, alibi_log2, row_of[mb], n0, want_mod, mask_tile, lane);
                if (want_entropy)
                    softmax[mb].template update<true>(s[mb], o_acc[mb], score_mul);
                else
                    softmax[mb].template update<false>(s[mb], o_acc[mb], score_mul);
#pragma unroll
                for (int kk = 0; kk < T::kPVSteps; ++kk)
#pragma unroll
                    for (int r = 0; r < kARegs; ++r) {
                        const float(&st)[kCRegs] = s[mb][p_tile_of_a_reg(kk, r)];
                        p_all[kk][mb][r] = Elem::pack(st[p_c_of_a_reg(r)], st[p_c_of_a_reg(r) + 1]);
                    }
            }

            if constexpr (T::kRegisterStaged) {
                __syncthreads();  // every warp is done reading K[n] (overwritten below), and
                                  // V[n]'s stores (previous tile / prologue) are visible
                if (has_next) {
                    kv_copy.template store<kKTile>(k_stage, tid);
                    // V[n+1] lands while O += P V runs; loaded only now so that one staged
                    // tile, not two, is live at a time (the register peak is S and O).
                    load_v(n + 1, v_stage);
                }
            } else {
                if (T::kStages == 2 && has_next)
                    cp_async_wait<2>();  // V[n] landed (K[n+1], V[n+1] may still be in flight)
                else
                    cp_async_wait<0>();  // (one stage: V[n] is the only group in flight)
                __syncthreads();  // every thread's V[n] copies are complete before any warp reads V[n]
                // One stage: every warp is done reading K[n], so K[n+1] lands while O += P V runs.
                if constexpr (T::kStages == 1)
                    if (has_next) prefetch_k(n + 1);
            }

            // O += P V: P (registers, converted) is the A operand; V via ldmatrix.trans.
            static_for<T::kPVSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                constexpr int kRow = kk * kMmaK;  // keys of this k16 step
                const uint32_t(&p)[kRB][kARegs] = p_all[kk];
                static_for<T::kPairTilesD>([&](auto dp_c) {
                    constexpr int dp = decltype(dp_c)::value;
                    constexpr int kCol8 = dp * T::kChunksPerK16;  // two n8 dim tiles per ldmatrix.x4
                    // O columns past d: never written.
                    if constexpr (dp >= Width::kSteps) return;
                    else if (!step_runs<Width::kRunTime, dp>(params.head_dim)) return;
                    uint32_t b[kLdsmMatrices];
                    ldsm_x4_trans<kVTile + VCursor::template imm<kRow, kCol8>()>(
                        b, v_cur.template reg<kCol8>());
#pragma unroll
                    for (int mb = 0; mb < kRB; ++mb) {  // each V fragment feeds kRB mma
                        mma_16816<Elem>(o_acc[mb][2 * dp], p[mb], b[0], b[1]);
                        mma_16816<Elem>(o_acc[mb][2 * dp + 1], p[mb], b[2], b[3]);
                    }
                });
            });

            if constexpr (T::kRegisterStaged) {
                if (has_next) {
                    __syncthreads();  // every warp is done reading V[n] (overwritten below);
                                      // K[n+1]'s stores are visible to the next S = Q K^T
                    v_copy.template store<kVTile>(v_stage, tid);
                }
            } else if constexpr (T::kStages == 2) {
                if (has_next) {
                    cp_async_wait<1>();  // K[n+1] landed (V[n+1] may still be in flight)
                    __syncthreads();     // K[n+1] complete for all; all warps are done with this
                                         // stage, which the next tile's prefetch overwrites
                }
            } else {
                if (has_next) {
                    cp_async_wait<0>();  // K[n+1] landed (the only group in flight)
                    __syncthreads();     // K[n+1] complete for all; every warp is done reading
                                         // V[n], so V[n+1] lands while the next S = Q K^T runs
                    prefetch_v(n + 1);
                }
            }
        };

        // Two stages alternate, unrolled by two so the stage is static. One cp.async stage
        // unrolls the same way (rolled, ptxas 13.5 spilled 40 B on sm_120 for the d128 64 KB
        // tile), except with the run-time bounded loop (the d256 tile: unrolled, 464 B on
        // sm_90; rolled, 0 everywhere).
        constexpr bool kUnrollTwo =
            T::kStages == 2 || (!T::kRegisterStaged && !T::kBoundedLoop);
        auto run_tiles = [&](auto width) {
            if constexpr (!kUnrollTwo) {
                for (int n = n_begin; n < n_end; ++n) process_tile(Int<0>{}, width, n);
            } else {
                for (int n = n_begin; n < n_end; n += 2) {
                    process_tile(Int<0>{}, width, n);
                    if (n + 1 < n_end) process_tile(Int<T::kStages - 1>{}, width, n + 1);
                }
            }
        };
        // One CTA-uniform branch (FwdTraits::kShortLoop / kBoundedLoop): the compiled width's
        // loop is the same code as without them (its counters unchanged); a head dim that
        // leaves the last 16-column step empty runs the narrower copy.
        if (!(T::kShortLoop || T::kBoundedLoop) || d_real > T::kHeadDim - kMmaK)
            run_tiles(FwdLoopWidth<T::kQKSteps, false>{});
        else if constexpr (T::kShortLoop)
            run_tiles(FwdLoopWidth<T::kQKSteps - 1, false>{});
        else if constexpr (T::kBoundedLoop)
            run_tiles(FwdLoopWidth<T::kQKSteps, true>{});
    }

    // ---- Epilogue ---------------------------------------------------------------------------
    const float gate = params.opt.head_gates != nullptr ? params.opt.head_gates[head] : 1.0f;
    RowResult res[kRB][kRowHalves];
    float row_scale[kRB][kRowHalves];
#pragma unroll
    for (int mb = 0; mb < kRB; ++mb)
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            res[mb][h] = with_sink(params.opt, head, softmax[mb].finalize(h, score_mul, o_acc[mb]));
            row_scale[mb][h] = res[mb][h].inv_sum * gate;
        }

    __syncthreads();  // O is staged in the Q tile: every warp must be done reading Q
    // o staging: [block_m, d_v] in the swizzled layout of its own width, in the Q tile's region.
    // Adding +0 turns -0 (zero gate) into +0.
#pragma unroll
    for (int mb = 0; mb < kRB; ++mb)
#pragma unroll
        for (int ot = 0; ot < T::kOTiles; ++ot)
#pragma unroll
            for (int h = 0; h < kRowHalves; ++h) {
                const int c = mma_c_index(h, 0);
                const int row = warp_row0 + mb * kMmaM + mma_c_row(lane, c);
                const int col = ot * kMmaN + mma_c_col(lane, c);
                const float lo = __fadd_rn(o_acc[mb][ot][c] * row_scale[mb][h], 0.0f);
                const float hi = __fadd_rn(o_acc[mb][ot][c + 1] * row_scale[mb][h], 0.0f);
                *reinterpret_cast<uint32_t *>(smem + T::kQOffset + OTile::elem_offset(row, col)) =
                    Elem::pack(lo, hi);
            }
    __syncthreads();  // staged O rows come from all warps; the copy-out below crosses warps

    constexpr int kOutIters = (OTile::kChunks + T::kThreads - 1) / T::kThreads;
#pragma unroll
    for (int it = 0; it < kOutIters; ++it) {
        const int flat = tid + it * T::kThreads;
        if (OTile::kChunks % T::kThreads == 0 || flat < OTile::kChunks) {
            const int row = OTile::flat_chunk_row(flat);
            const int col8 = OTile::flat_chunk_col8(flat);
            if (row < rows_valid && col8 < col8_valid_v) {  // rows >= sq, cols >= d not written
                const uint4 v = *reinterpret_cast<const uint4 *>(
                    smem + T::kQOffset + OTile::chunk_offset(row, col8));
                *reinterpret_cast<uint4 *>(o_tile + row * params.o_row_stride + col8 * kChunkElems) = v;
            }
        }
    }

    write_row_stats<kRB * kRowHalves>(params, ext, batch, head, varlen, lane, &row_of[0][0], &res[0][0]);
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_FLASH_FWD_CTA_CUH
