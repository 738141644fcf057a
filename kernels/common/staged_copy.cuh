/*
 * staged_copy.cuh: the register-staged tile copy of the Turing (sm_75) kernels. sm_75 has no
 * cp.async (PTX ISA "cp.async": requires sm_80), so a tile travels global -> registers -> shared:
 * load() issues the 16-byte ld.global.nc of every chunk of the thread into a Staged register
 * block and returns at once (the loads complete in the background; only a use of the registers
 * waits for them), store() writes the block into the swizzled shared tile. A kernel issues the
 * next tile's load() before the current tile's math and its store() after it: software
 * pipelining in registers, with one shared-memory stage instead of cp.async's two.
 * Chunk assignment, zero-fill rules and shared-memory offsets are TileCopy's (smem_layout.cuh),
 * so both paths write byte-identical tiles.
 */
#ifndef FLASHMHA_COMMON_STAGED_COPY_CUH
#define FLASHMHA_COMMON_STAGED_COPY_CUH

#include <stdint.h>

#include "common/codegen.cuh"
#include "common/smem_layout.cuh"

namespace flashmha {

/* ld.global.nc.v4.u32: a 16-byte read-only global load (K, V, Q are never written by the
 * forward kernel, so the non-coherent path is legal; PTX ISA "ld.global.nc"). */
__device__ __forceinline__ uint4 ld_global_nc_16(uint64_t gmem) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(gmem));
    return v;
}

/* st.shared.v4.u32 to .shared address smem + kImm. */
template <int kImm>
__device__ __forceinline__ void st_shared_16(uint32_t smem, const uint4 &v) {
    asm volatile("st.shared.v4.u32 [%0+%5], {%1, %2, %3, %4};\n" ::"r"(smem), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w), "n"(kImm)
                 : "memory");
}

template <class Tile, int kThreads>
class StagedTileCopy : public TileCopy<Tile, kThreads> {
    using Base = TileCopy<Tile, kThreads>;

  public:
    using Source = typename Base::Source;
    /* The thread's chunks of one tile in flight: 4 registers per chunk. */
    struct Staged {
        uint4 chunk[Base::kIters];
    };
    static constexpr int kStagedRegs = Base::kIters * 4;

    __device__ __forceinline__ StagedTileCopy(uint32_t smem_base, int tid) : Base(smem_base, tid) {}

    /* Issues the loads of the tile whose row 0 (plus from.off0) is at .global `gmem_tile`;
     * chunks past valid_rows / valid_col8 become zeros without a load. */
    __device__ __forceinline__ void load(const Source &from, uint64_t gmem_tile, int valid_rows,
                                         int valid_col8, int tid, Staged &st) const {
        this->template for_each_chunk<0>(
            from, gmem_tile, valid_rows, valid_col8, tid,
            [&](auto /*imm_c*/, auto it_c, uint32_t /*dst*/, uint64_t src, bool valid) {
                uint4 v = make_uint4(0u, 0u, 0u, 0u);
                if (valid) v = ld_global_nc_16(src);
                st.chunk[decltype(it_c)::value] = v;
            });
    }

    /* Writes a loaded tile into the shared tile at smem_base + kTileOffset. */
    template <int kTileOffset>
    __device__ __forceinline__ void store(const Staged &st, int tid) const {
        static_for<Base::kIters>([&](auto it_c) {
            constexpr int it = decltype(it_c)::value;
            store_chunk<kTileOffset, it>(st.chunk[it], tid);
        });
    }

    /* load + store of a tile nothing else overlaps (the Q tile in the prologue), kGroup chunks
     * at a time so that at most 4 * kGroup registers hold it: a whole d256 Q tile would need 64
     * next to the zeroed O accumulators. */
    template <int kTileOffset, int kGroup = 4>
    __device__ __forceinline__ void copy_via_registers(const Source &from, uint64_t gmem_tile,
                                                       int valid_rows, int valid_col8,
                                                       int tid) const {
        static_for<(Base::kIters + kGroup - 1) / kGroup>([&](auto g_c) {
            constexpr int g = decltype(g_c)::value;
            uint4 part[kGroup];
            this->template for_each_chunk<0>(
                from, gmem_tile, valid_rows, valid_col8, tid,
                [&](auto /*imm_c*/, auto it_c, uint32_t /*dst*/, uint64_t src, bool valid) {
                    constexpr int it = decltype(it_c)::value;
                    if constexpr (it / kGroup == g) {
                        uint4 v = make_uint4(0u, 0u, 0u, 0u);
                        if (valid) v = ld_global_nc_16(src);
                        part[it % kGroup] = v;
                    }
                });
            static_for<kGroup>([&](auto j_c) {
                constexpr int it = g * kGroup + decltype(j_c)::value;
                if constexpr (it < Base::kIters) store_chunk<kTileOffset, it>(part[it % kGroup], tid);
            });
        });
    }

  private:
    template <int kTileOffset, int it>
    __device__ __forceinline__ void store_chunk(const uint4 &v, int tid) const {
        if constexpr (!Base::kFixedColumn && Tile::kChunks % kThreads != 0) {
            if (tid + it * kThreads >= Tile::kChunks) return;  // idle in the last round
        }
        st_shared_16<Base::template chunk_imm<kTileOffset, it>()>(this->template chunk_dst<it>(),
                                                                  v);
    }
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_STAGED_COPY_CUH
