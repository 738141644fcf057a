/*
 * flash_mla_decode_sm90_cta.cuh: the CTA body of the Hopper MLA decode (issue 23 item 3) for
 * kernels/sm90/flash_mla_decode_sm90.cu: paged decode over one shared latent KV head, d_qk 576,
 * d_v 512 = the first 512 dims of the same cached row. Tile, warp roles and budget:
 * kernels/sm90/mla_decode_traits_sm90.cuh; what it shares with the sm_80 MLA kernel (item,
 * split, rows, epilogue): kernels/common/mla_decode_item.cuh.
 *
 * Flow: thread 0 initialises the mbarriers and issues the first tile's TMA loads; all threads
 * stage Q (64 packed rows x 576) into the swizzled layout wgmma reads. Per tile i, thread 0
 * first issues tile i + 1 into the other stage (once every thread released that stage's tile
 * i - 1); then all wait kv_full; on the tile holding the cache's end, the rows past it are
 * zeroed (spare slots may hold NaN); each warpgroup computes S for its 32 keys (36 wgmma), masks
 * and modifiers, exchanges row maxima with the other warpgroup, folds its half into the online
 * softmax, exchanges P, and adds P V over the 64 keys to its 256 output dims (4 wgmma); all
 * arrive kv_empty. The next tile's load overlaps the current one's compute. Epilogue as the
 * sm_80 kernel: l and e shares summed, each warpgroup writes its half of O, warpgroup 0 the row
 * stats; split-KV writes the partial states for the decode combine
 * (kernels/sm80/merge_states.cu), split 0 holding the sink.
 *
 * Cluster of two (more heads than one tile's rows, an even number of row tiles: the plan
 * launches clusters of 2 CTAs along the row tiles, src/ops/mla_decode/plan.rs): both CTAs of a
 * cluster read the same keys, so each page is read from global memory ONCE for the pair. The
 * pipeline runs over the union of the two tiles' visible keys; thread 0 of rank r issues the
 * boxes j = r, r + 2, .. of every tile with .multicast::cluster into both CTAs' stage, and each
 * CTA's kv_full expects the whole tile's bytes. A stage is overwritten only once the consumers of
 * BOTH CTAs released it: every thread arrives on its own CTA's kv_empty and on the peer's
 * (count 2 x 256). Cluster barriers after the mbarrier init (no multicast reaches an
 * uninitialised peer barrier) and before exit (no remote arrive or multicast reaches an exited
 * CTA). A CTA whose own tile has no rows still runs the pipeline for its peer and stores nothing.
 * Without a cluster shape every CTA is its own producer, as before.
 *
 * Device-resident indices are checked as in the sm_80 kernel: the cache length and cu_seqlens
 * in mla_item, every block-table entry against num_pages before its page is loaded (trap).
 * Tiles wholly outside the CTA's visible keys are never loaded.
 */
#ifndef FLASHMHA_SM90_FLASH_MLA_DECODE_SM90_CTA_CUH
#define FLASHMHA_SM90_FLASH_MLA_DECODE_SM90_CTA_CUH

#include <stdint.h>

#include "params.h"
#include "common/codegen.cuh"
#include "common/cta_prologue.cuh"
#include "common/dtype.cuh"
#include "common/mask.cuh"
#include "common/mla_decode_item.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/staged_copy.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"
#include "sm90/mla_decode_traits_sm90.cuh"

namespace flashmha {

/* Orders this thread's generic-proxy shared-memory writes before later async-proxy reads
 * (wgmma operands) of the same bytes (PTX ISA "Memory Consistency Model: Proxies"). */
__device__ __forceinline__ void fence_proxy_async_shared() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

template <class T>
__device__ __forceinline__ void flash_mla_decode_sm90_cta(const FlashMlaDecodeTmaParams &tp) {
    using Elem = typename T::Elem;
    const FlashDecodeParams &p = tp.mla.decode;
    extern __shared__ __align__(1024) unsigned char smem[];
    const uint32_t smem_base = smem_addr(smem);

    cta_prologue<T::kSmemBytes, T::kDQk, T::kDQk>(p.head_dim);
    if (tp.mla.head_dim_v != T::kDV || p.num_heads_kv != 1 || p.kv_format != FLASHMHA_KV_FORMAT_SAME ||
        p.page_size % T::kKeys != 0)
        __trap();
    // The 128-byte swizzle of TMA and of the wgmma descriptors needs 1024-byte aligned tiles.
    if (smem_base % kSwizzleAtomBytes != 0) __trap();

    const int tid = threadIdx.x;
    const int lane = lane_of(tid);
    const int row_tile = blockIdx.x;
    const int split = blockIdx.y;
    const int batch = blockIdx.z;
    const int group = p.num_heads_q;  // every query head shares the one latent KV head

    const MlaItem it = mla_item(p, batch);  // traps on bad lengths
    const int r0 = row_tile * T::kTileRows;
    // 1 or 2 CTAs (the plan's cluster shape); the pipeline serves the cluster's rows from
    // lead_r0 (rank 0's tile) on, and both CTAs leave together when there are none.
    const uint32_t cta_rank = cluster_ctarank();
    const uint32_t cluster_ctas = cluster_nctarank();
    if (cluster_ctas > 2) __trap();  // the pipeline pairs rank r with rank r ^ 1
    const int lead_r0 = r0 - static_cast<int>(cta_rank) * T::kTileRows;
    if (lead_r0 >= it.rows) return;  // cluster-uniform
    const KeyMask mask = mla_split_mask(p, it, split);
    const MlaTileKeys tile(mask, it, group, lead_r0, static_cast<int>(cluster_ctas) * T::kTileRows);
    const int blk_begin = tile.lo / T::kKeys;
    const int blk_end = tile.hi > tile.lo ? (tile.hi + T::kKeys - 1) / T::kKeys : blk_begin;
    const int num_blocks = blk_end - blk_begin;

    if (tid == 0) {
        for (int s = 0; s < T::kStages; ++s) {
            mbarrier_init(T::kv_full(smem_base, s), 1);  // the producer's arrive.expect_tx
            // Every consumer thread of the cluster releases every CTA's copy of a stage.
            mbarrier_init(T::kv_empty(smem_base, s), T::kConsumerThreads * cluster_ctas);
        }
        mbarrier_init_fence();
    }
    // The mbarriers are initialised before any thread (or a peer's multicast) uses them.
    if (cluster_ctas > 1)
        cluster_sync();
    else
        __syncthreads();

    // Producer: thread 0 issues tile i into stage i % 2 (9 boxes of one page) once the stage's
    // tile i - 2 was released by every consumer thread.
    const int32_t *table = p.block_table + batch * p.block_table_stride;
    auto issue_tile = [&](int i) {
        const int stage = i % T::kStages;
        const int fill = i / T::kStages;
        if (fill > 0) mbarrier_wait(T::kv_empty(smem_base, stage), (fill - 1) & 1);
        const int key0 = (blk_begin + i) * T::kKeys;
        const int page_slot = page_of_key(p, key0);  // < max_pages_per_seq (cache_len checked)
        const int page = table[page_slot];
        if (static_cast<uint32_t>(page) >= static_cast<uint32_t>(p.num_pages)) __trap();
        const int slot0 = key0 - page_slot * p.page_size;  // a multiple of 64: one page
        const uint32_t dst = T::stage(smem_base, stage);
        // The whole tile's bytes: with a cluster, the peer's boxes land here too.
        mbarrier_arrive_expect_tx(T::kv_full(smem_base, stage), T::kStageBytes);
        if (cluster_ctas == 1) {
#pragma unroll
            for (int j = 0; j < T::kBoxes; ++j)
                tma_load_4d(dst + j * T::kKvBoxBytes, &tp.kv_map, T::kv_full(smem_base, stage),
                            j * kColsPerSwizzleRow, 0, slot0, page);
        } else {
            const uint16_t both = static_cast<uint16_t>((1u << cluster_ctas) - 1);
            for (int j = static_cast<int>(cta_rank); j < T::kBoxes; j += static_cast<int>(cluster_ctas))
                tma_load_4d_multicast(dst + j * T::kKvBoxBytes, &tp.kv_map, T::kv_full(smem_base, stage),
                                      j * kColsPerSwizzleRow, 0, slot0, page, both);
        }
    };
    if (tid == 0 && num_blocks > 0) issue_tile(0);

    // ---- Both warpgroups ----------------------------------------------------------------------
    const int wg = warpgroup_of(tid);  // keys [32 wg, +32) of each tile's S, output dims [256 wg, +256)
    const MlaRows rows(mask, it, group, r0 + warp_in_warpgroup(tid) * kMmaM, lane);

    // Q tile: q: [64 packed rows, 576] -> 9 boxes of [64 rows][128 B], the 16-byte chunk c of
    // a box row r at chunk c ^ (r % 8) (the 128-byte swizzle TMA would write).
    for (int flat = tid; flat < T::kTileRows * T::kBoxes * T::kChunksPerRow; flat += T::kThreads) {
        const int row = flat / (T::kBoxes * T::kChunksPerRow);
        const int c = flat - row * (T::kBoxes * T::kChunksPerRow);
        const int box = c / T::kChunksPerRow;
        const int cc = c % T::kChunksPerRow;
        const uint32_t dst = smem_base + T::kQOffset + box * T::kQBoxBytes + row * kSwizzleRowBytes +
                             ((cc ^ (row % kSwizzleAtomRows)) * kDecodeChunkBytes);
        st_shared_16<0>(dst, mla_q_chunk(p, it, r0 + row, c));
    }
    fence_proxy_async_shared();
    __syncthreads();

    ScoreMod mod(p.opt);
    float alibi_log2[kRowHalves];
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h)
        alibi_log2[h] = rows.valid[h] ? mod.alibi_log2(p.opt, rows.head[h]) : 0.0f;
    const float score_mul = pin(mod.score_mul());
    const bool want_entropy = p.opt.entropy != nullptr || p.partial_entropy != nullptr;
    const bool want_mod = mod.any();
    const auto needs_mask = mask.template partial_tile_test<T::kKeys>(tile.qi_first, tile.qi_last);

    // O: [16 rows of this warp, the warpgroup's 256 dims] as n8 C fragments (the wgmma
    // accumulator), f32.
    float o_acc[T::kOTiles][kCRegs];
    zero_c_fragments(o_acc);
    OnlineSoftmax<T::kSTiles, T::kOTiles> softmax;

    const uint64_t q_desc0 = smem_desc_128b(smem_base + T::kQOffset, kKMajorLbo, kSwizzleAtomBytes);
    const uint64_t k_desc0 = smem_desc_128b(T::stage(smem_base, 0), kKMajorLbo, kSwizzleAtomBytes);
    // V (MN-major): this warpgroup's first box; the next 64 dims are one box further (LBO).
    const uint64_t v_desc0 = smem_desc_128b(T::stage(smem_base, 0) + wg * T::kWgVBoxes * T::kKvBoxBytes,
                                            T::kKvBoxBytes, kSwizzleAtomBytes);

    // Exchange buffers: each row's max over the warpgroup's 32 keys, xmax: [2 warpgroups][64
    // rows] f32; the tile's P, p_tile: [64 rows][64 keys] 16-bit, 128-byte rows with the
    // 16-byte chunk c of row r at c ^ (r % 8) (conflict-free stores and ldmatrix).
    float *const xmax = reinterpret_cast<float *>(smem + T::kMaxOffset);
    const uint32_t p_tile = smem_base + T::kPOffset;
    auto p_addr = [](int row, int key) {
        return row * kSwizzleRowBytes + (((key / kDecodeChunkElems) ^ (row % kSwizzleAtomRows)) * kDecodeChunkBytes) +
               (key % kDecodeChunkElems) * kElemBytes;
    };
    const int warp_row0 = warp_in_warpgroup(tid) * kMmaM;  // the warp's 16 rows of the tile
    const int wg_key0 = wg * T::kWgKeys;                   // the warpgroup's keys of a tile

    for (int i = 0; i < num_blocks; ++i) {
        const int stage = i % T::kStages;
        const int n0 = (blk_begin + i) * T::kKeys;  // first key of the tile
        // The next tile streams in while this one is computed.
        if (tid == 0 && i + 1 < num_blocks) issue_tile(i + 1);
        mbarrier_wait(T::kv_full(smem_base, stage), (i / T::kStages) & 1);
        if (n0 + T::kKeys > it.cache_len) {
            // The cache ends inside this tile (CTA-uniform): rows past it are spare slots of the
            // page, zeroed in every box before either warpgroup's wgmma reads the stage. A whole
            // 128-byte box row is one row whatever the swizzle.
            const int first = it.cache_len - n0;
            const int n_zero = (T::kKeys - first) * T::kBoxes * T::kChunksPerRow;
            for (int flat = tid; flat < n_zero; flat += T::kThreads) {
                const int row = first + flat / (T::kBoxes * T::kChunksPerRow);
                const int c = flat % (T::kBoxes * T::kChunksPerRow);
                st_shared_16<0>(T::stage(smem_base, stage) + (c / T::kChunksPerRow) * T::kKvBoxBytes +
                                    row * kSwizzleRowBytes + (c % T::kChunksPerRow) * kDecodeChunkBytes,
                                make_uint4(0, 0, 0, 0));
            }
            fence_proxy_async_shared();
            __syncthreads();
        }

        // S = Q K^T over the warpgroup's 32 keys: s: [16 rows, 32 keys] per warp, f32; k-step
        // kk is 32 bytes into the rows of box kk / 4; the keys start 32 rows (4 atoms) in.
        float s[T::kSTiles][kCRegs];
        {
            const uint64_t qd = pin(q_desc0);
            const uint64_t kd = smem_desc_advance(pin(k_desc0), stage * T::kStageBytes + wg_key0 * kSwizzleRowBytes);
            wgmma_fence();
            static_for<T::kQKSteps>([&](auto kk_c) {
                constexpr int kk = decltype(kk_c)::value;
                constexpr int kBox = kk / T::kKStepsPerBox;
                constexpr int kInRow = (kk % T::kKStepsPerBox) * kKStepBytes;
                wgmma_ss<T::kWgKeys, Elem>(s, smem_desc_advance(qd, kBox * T::kQBoxBytes + kInRow),
                                           smem_desc_advance(kd, kBox * T::kKvBoxBytes + kInRow),
                                           kk == 0 ? 0u : 1u);
            });
            wgmma_commit();
            wgmma_wait<0>(s);
        }

        modify_and_mask<false, true>(s, mask.shift, mod, alibi_log2, rows.qi, n0 + wg_key0, want_mod,
                                     needs_mask(n0), lane, [&](int h, int &lo, int &hi) {
                                         lo = rows.key_lo[h];
                                         hi = rows.key_hi[h];
                                     });
        // The rows' max over all 64 keys: each warpgroup's half through shared memory.
        float m[kRowHalves];
        softmax.tile_max(s, m);
        if (lane_in_quad(lane) == 0) {
#pragma unroll
            for (int h = 0; h < kRowHalves; ++h)
                xmax[wg * T::kTileRows + warp_row0 + mma_c_row(lane, mma_c_index(h, 0))] = m[h];
        }
        __syncthreads();  // both halves' maxima written; the last tile's P all read
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h)
            m[h] = fmaxf(m[h], xmax[(wg ^ 1) * T::kTileRows + warp_row0 + mma_c_row(lane, mma_c_index(h, 0))]);
        float alpha[kRowHalves];
        if (want_entropy)
            softmax.template fold_with_max<true>(s, m, score_mul, alpha);
        else
            softmax.template fold_with_max<false>(s, m, score_mul, alpha);
        softmax.rescale(o_acc, alpha);

        // P of this warpgroup's keys: A fragments in registers for its own P V k-steps, and
        // into the shared tile for the other warpgroup's.
        uint32_t p_own[T::kWgPVSteps][kARegs];
#pragma unroll
        for (int kk = 0; kk < T::kWgPVSteps; ++kk)
#pragma unroll
            for (int r = 0; r < kARegs; ++r) {
                const float(&st)[kCRegs] = s[p_tile_of_a_reg(kk, r)];
                p_own[kk][r] = Elem::pack(st[p_c_of_a_reg(r)], st[p_c_of_a_reg(r) + 1]);
            }
#pragma unroll
        for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
            for (int h = 0; h < kRowHalves; ++h) {
                const int c0 = mma_c_index(h, 0);
                const int row = warp_row0 + mma_c_row(lane, c0);
                const int key = wg_key0 + nt * kMmaN + mma_c_col(lane, c0);
                *reinterpret_cast<uint32_t *>(smem + T::kPOffset + p_addr(row, key)) =
                    Elem::pack(s[nt][c0], s[nt][c0 + 1]);
            }
        __syncthreads();  // both halves of P written
        uint32_t p_other[T::kWgPVSteps][kARegs];
#pragma unroll
        for (int kk = 0; kk < T::kWgPVSteps; ++kk)
            ldsm_x4<0>(p_other[kk], p_tile + p_addr(warp_row0 + ldsm_a_row(lane),
                                                    (wg ^ 1) * T::kWgKeys + kk * kWgmmaK +
                                                        ldsm_a_col8(lane) * kDecodeChunkElems));

        // O += P V over the 64 keys, own keys first: k-step kk is keys 16 kk .., 16 rows (two
        // swizzle atoms) into every box.
        {
            const uint64_t vd = smem_desc_advance(pin(v_desc0), stage * T::kStageBytes);
            const int own = wg * T::kWgPVSteps;
            const int other = (wg ^ 1) * T::kWgPVSteps;
            wgmma_fence_operand(o_acc);
            wgmma_fence_operand(p_own);
            wgmma_fence_operand(p_other);
            wgmma_fence();  // O rescaled and P packed before the wgmma read them
#pragma unroll
            for (int kk = 0; kk < T::kWgPVSteps; ++kk)
                wgmma_rs<T::kWgDV, Elem>(o_acc, p_own[kk],
                                         smem_desc_advance(vd, (own + kk) * kWgmmaK * kSwizzleRowBytes), 1u);
#pragma unroll
            for (int kk = 0; kk < T::kWgPVSteps; ++kk)
                wgmma_rs<T::kWgDV, Elem>(o_acc, p_other[kk],
                                         smem_desc_advance(vd, (other + kk) * kWgmmaK * kSwizzleRowBytes), 1u);
            wgmma_commit();
            wgmma_wait<0>(o_acc);
            wgmma_fence_operand(p_own);
            wgmma_fence_operand(p_other);
        }
        mbarrier_arrive(T::kv_empty(smem_base, stage));
        if (cluster_ctas > 1) mbarrier_arrive_cluster(mapa_shared(T::kv_empty(smem_base, stage), cta_rank ^ 1u));
    }

    // l and e: each warpgroup holds its keys' share; the thread of the other warpgroup at the
    // same warp and lane holds the same rows' other share (same quad position). Summed through
    // the (now free) P tile: own + other is the same float in both warpgroups.
    {
        float *const shares = reinterpret_cast<float *>(smem + T::kPOffset);  // [256 threads][4]
        __syncthreads();  // every thread is done reading the last P tile
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            shares[tid * 2 * kRowHalves + h] = softmax.row_sum[h];
            shares[tid * 2 * kRowHalves + kRowHalves + h] = softmax.row_ent[h];
        }
        __syncthreads();
        const int partner = tid ^ kWarpgroupThreads;
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            softmax.row_sum[h] += shares[partner * 2 * kRowHalves + h];
            softmax.row_ent[h] += shares[partner * 2 * kRowHalves + kRowHalves + h];
        }
    }

    // ---- Epilogue: the warpgroup's half of O; warpgroup 0 writes the row stats ---------------
    // The final O is staged in the (now free) Q tile, o_stage: [64 rows][512] 16-bit, and then
    // copied out by whole rows, so every warp store fills its 32-byte sectors; split partials
    // (f32 pairs of a quad: whole sectors already) are stored directly.
    const bool stage_o = (p.opt.flags & FLASHMHA_DECODE_FLAG_SPLIT_OUTPUT) == 0;
    elem_bits_t *const o_stage = reinterpret_cast<elem_bits_t *>(smem + T::kQOffset);
    static_assert(T::kTileRows * T::kDV * kElemBytes <= T::kQBytes, "O fits in the Q tile");
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h) {
        const RowResult res = softmax.finalize(h, score_mul, o_acc);
        if (!rows.valid[h]) continue;
        const int local_row = warp_row0 + mma_c_row(lane, mma_c_index(h, 0));
        mla_store_row<Elem>(p, it, res, o_acc, h, rows.qi[h], rows.head[h], split, wg * T::kWgDV, wg == 0,
                            1.0f, lane, stage_o ? o_stage + local_row * T::kDV : nullptr);
    }
    if (stage_o) {
        __syncthreads();  // every row half staged
        constexpr int kWordsPerRow = T::kDV * kElemBytes / 4;
        for (int flat = tid; flat < T::kTileRows * kWordsPerRow; flat += T::kThreads) {
            const int row = flat / kWordsPerRow;
            const int word = flat - row * kWordsPerRow;
            const int r = r0 + row;
            if (r >= it.rows) break;  // rows only grow with flat
            const int qi = r / group;
            const int head = r - qi * group;
            elem_bits_t *dst = static_cast<elem_bits_t *>(p.o) + it.o_item + qi * p.o_row_stride +
                               head * p.o_head_stride;
            reinterpret_cast<uint32_t *>(dst)[word] = reinterpret_cast<const uint32_t *>(o_stage + row * T::kDV)[word];
        }
    }
    // No peer may still multicast into, or arrive on, this CTA's shared memory once it exits.
    if (cluster_ctas > 1) cluster_sync();
}

}  // namespace flashmha

#endif  // FLASHMHA_SM90_FLASH_MLA_DECODE_SM90_CTA_CUH
