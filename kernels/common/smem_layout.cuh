/*
 * smem_layout.cuh: the XOR-swizzled shared-memory layout of one [rows x head_dim] tile of 16-bit
 * elements, and the cp.async tile copy into it.
 *
 * A tile is row-major in 16-byte chunks (8 elements). Shared memory has 32 banks x 4 bytes, i.e.
 * 8 "bank groups" of 16 bytes; a 16-byte-per-thread access (cp.async, ldmatrix row, ld.shared.v4)
 * is conflict-free when each 8 threads of a phase hit 8 distinct bank groups. The chunk of
 * (row, col8) is stored at chunk position  col8 ^ xor_mask(row)  within its row, where
 *   span      = largest power of two dividing chunks_per_row, capped at 8
 *   xor_mask  = (row >> log2(8 / span)) & (span - 1)
 * Why it works: row * chunks_per_row mod 8 runs over the multiples of `span` as row runs over
 * 8 / span consecutive rows, and the XOR (which only touches the low log2(span) bits, so it never
 * leaves the row nor an aligned group of `span` chunks) separates the `span` rows that share such
 * a multiple. Hence
 *   - 8 consecutive rows at the same logical chunk (one ldmatrix 8x8 matrix, or one 8-row column
 *     of 4-byte stores) hit 8 distinct bank groups;
 *   - 8 consecutive chunks in flat order starting at a multiple of 8 (one cp.async phase) stay
 *     within the same aligned 8-chunk group, i.e. 8 distinct bank groups.
 * Both facts are checked exhaustively at compile time (conflict_free()). The mask depends only
 * on row mod 8, so stepping rows by multiples of 8 never changes it (SwizzleCursor relies on it).
 * Head dims: 32 (4 chunks/row, span 4), 64/128/256 (span 8), 80 (10 chunks, span 2),
 * 96 (12 chunks, span 4).
 */
#ifndef FLASHMHA_COMMON_SMEM_LAYOUT_CUH
#define FLASHMHA_COMMON_SMEM_LAYOUT_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/mma.cuh"
#include "common/codegen.cuh"

namespace flashmha {

constexpr int kChunkBytes = 16;                          // one cp.async / one ldmatrix row
// Host validation aligns bases, strides and head dims to this (params.h): they must agree.
static_assert(kChunkBytes == FLASHMHA_COPY_ALIGN_BYTES, "params.h copy alignment");
constexpr int kChunkElems = kChunkBytes / kElemBytes;    // 8 elements
constexpr int kBankGroups = 8;                           // 32 banks * 4 B / 16 B
constexpr int kSwizzleRowPeriod = kBankGroups;           // xor_mask depends on row mod 8 only

__host__ __device__ constexpr int pow2_part_capped(int n, int cap) {
    int p = 1;
    while (p < cap && n % (p * 2) == 0) p *= 2;
    return p;
}
__host__ __device__ constexpr int log2_exact(int n) {
    int l = 0;
    while ((1 << l) < n) ++l;
    return l;
}

template <int kRows_, int kCols_>
struct SwizzledTile {
    static constexpr int kRows = kRows_;
    static constexpr int kCols = kCols_;  // elements per row (head dim)
    static_assert(kCols % kChunkElems == 0, "rows must be whole 16-byte chunks");
    static constexpr int kChunksPerRow = kCols / kChunkElems;
    static constexpr int kChunks = kRows * kChunksPerRow;
    static constexpr int kRowBytes = kChunksPerRow * kChunkBytes;
    static constexpr int kBytes = kChunks * kChunkBytes;
    static constexpr int kXorSpan = pow2_part_capped(kChunksPerRow, kBankGroups);
    static constexpr int kXorShift = log2_exact(kBankGroups / kXorSpan);
    static_assert(kRows % kSwizzleRowPeriod == 0, "tile rows must be a multiple of 8");
    static_assert(kBytes % (kBankGroups * kChunkBytes) == 0, "tiles keep 128-byte alignment");

    static __host__ __device__ constexpr int xor_mask(int row) {
        return (row >> kXorShift) & (kXorSpan - 1);
    }
    /* Byte offset of logical chunk `col8` of `row`. */
    static __host__ __device__ constexpr uint32_t chunk_offset(int row, int col8) {
        return static_cast<uint32_t>(row * kRowBytes + (col8 ^ xor_mask(row)) * kChunkBytes);
    }
    /* Byte offset of element (row, col). */
    static __host__ __device__ constexpr uint32_t elem_offset(int row, int col) {
        return chunk_offset(row, col / kChunkElems) + (col % kChunkElems) * kElemBytes;
    }
    /* Row / chunk of flat chunk index `c` (the order in which threads copy a tile). */
    static __host__ __device__ constexpr int flat_chunk_row(int c) { return c / kChunksPerRow; }
    static __host__ __device__ constexpr int flat_chunk_col8(int c) { return c % kChunksPerRow; }

    static __host__ __device__ constexpr int bank_group(int row, int col8) {
        return static_cast<int>(chunk_offset(row, col8) / kChunkBytes) % kBankGroups;
    }
    /* Exhaustive check of the two conflict-freedom facts in the header comment. */
    static __host__ __device__ constexpr bool conflict_free() {
        for (int r0 = 0; r0 + kSwizzleRowPeriod <= kRows; ++r0)
            for (int c = 0; c < kChunksPerRow; ++c) {
                unsigned seen = 0;
                for (int r = r0; r < r0 + kSwizzleRowPeriod; ++r) seen |= 1u << bank_group(r, c);
                if (seen != (1u << kBankGroups) - 1) return false;
            }
        for (int f0 = 0; f0 < kChunks; f0 += kBankGroups) {
            unsigned seen = 0;
            for (int f = f0; f < f0 + kBankGroups && f < kChunks; ++f)
                seen |= 1u << bank_group(flat_chunk_row(f), flat_chunk_col8(f));
            if (f0 + kBankGroups <= kChunks && seen != (1u << kBankGroups) - 1) return false;
        }
        for (int r = 0; r < kRows; ++r)  // the XOR keeps every chunk inside its row
            for (int c = 0; c < kChunksPerRow; ++c)
                if ((c ^ xor_mask(r)) >= kChunksPerRow) return false;
        return true;
    }
    static_assert(kRows > 0 && kChunksPerRow > 0, "empty tile");
};

/* Per-thread cursor for fragment loads (ldmatrix): fixes the thread's row (mod 8) and its low
 * chunk bit (0/1). For a row step that is a multiple of 8 and an even chunk step,
 *   chunk_offset(row + row_step, col8_low + col8_step)
 *     = row * kRowBytes + ((2v) ^ y) * 16                  (register: kVariants per thread)
 *     + row_step * kRowBytes + (col8_step & ~kLow) * 16   (compile time: the address immediate)
 * with v = (col8_step & kLow) / 2, y = col8_low ^ xor_mask(row), kLow = kXorSpan - 1: the XOR
 * only touches the low bits, and xor_mask depends on row mod 8 only. The registers also hold the
 * shared base address, so a fragment load is `ldmatrix [reg + imm]` with no arithmetic; the
 * caller adds the tile's own offset (e.g. the pipeline stage) to the immediate. */
template <class Tile>
class SwizzleCursor {
  public:
    static constexpr int kLow = Tile::kXorSpan - 1;
    static constexpr int kVariants = Tile::kXorSpan > 1 ? Tile::kXorSpan / 2 : 1;

    __device__ __forceinline__ SwizzleCursor(uint32_t smem_base, int row, int col8_low) {
        const int y = col8_low ^ Tile::xor_mask(row);
#pragma unroll
        for (int v = 0; v < kVariants; ++v)
            reg_[v] = pin(smem_base +
                          static_cast<uint32_t>(row * Tile::kRowBytes + ((2 * v) ^ y) * kChunkBytes));
    }
    /* Register part of the address. */
    template <int kCol8Step>
    __device__ __forceinline__ uint32_t reg() const {
        static_assert(kCol8Step % 2 == 0, "even chunk steps only");
        return reg_[(kCol8Step & kLow) / 2];
    }
    /* Immediate part of the address, relative to the tile. */
    template <int kRowStep, int kCol8Step>
    static __host__ __device__ constexpr int imm() {
        static_assert(kRowStep % kSwizzleRowPeriod == 0 && kCol8Step % 2 == 0, "see above");
        return kRowStep * Tile::kRowBytes + (kCol8Step & ~kLow) * kChunkBytes;
    }

  private:
    uint32_t reg_[kVariants];
};

/* The cursor arithmetic reproduces chunk_offset for every row, low bit and step (checked for the
 * steps the kernels use: rows 0..kRows-1 in multiples of 8, chunks across the whole row). */
template <class Tile>
__host__ __device__ constexpr bool cursor_matches_layout() {
    constexpr int kLow = Tile::kXorSpan - 1;
    for (int row = 0; row < Tile::kRows; ++row)
        for (int low = 0; low < 2; ++low)
            for (int rs = 0; row + rs < Tile::kRows; rs += kSwizzleRowPeriod)
                for (int cs = 0; cs + low < Tile::kChunksPerRow; cs += 2) {
                    const int y = low ^ Tile::xor_mask(row);
                    const int reg = row * Tile::kRowBytes + (((cs & kLow)) ^ y) * kChunkBytes;
                    const int imm = rs * Tile::kRowBytes + (cs & ~kLow) * kChunkBytes;
                    if (static_cast<uint32_t>(reg + imm) != Tile::chunk_offset(row + rs, cs + low))
                        return false;
                }
    return true;
}

__host__ __device__ constexpr int gcd_int(int a, int b) { return b == 0 ? a : gcd_int(b, a % b); }
__host__ __device__ constexpr int min_int(int a, int b) { return a < b ? a : b; }

/* Asynchronous global -> shared copy of one [Tile::kRows x Tile::kCols] tile into its swizzled
 * layout, rows >= valid_rows and 16-byte column chunks >= valid_col8 (head dims below the
 * compiled one) zero-filled: cp.async src-size 0, the source is then not read, and the address
 * used is the caller's `safe_src`, a valid global address (no extra global traffic).
 * Threads take flat chunks tid, tid + kThreads, ...: each 8-thread phase writes one aligned
 * 8-chunk group (conflict-free) and reads 128 contiguous global bytes of one row.
 * Construct once per CTA (per tensor: the offsets depend on its row stride); copy() per tile then
 * costs, per 16-byte chunk, one cp.async and one or two adds:
 *  - when kThreads is a multiple of the chunks per row (d = 32, 64, 128, 256) a thread keeps one
 *    column and steps rows by kRowStep: a 64-bit pointer increment per chunk; the smem offsets
 *    repeat with period kPeriod (the swizzle depends on row mod 8 only);
 *  - otherwise (d = 80, 96) each chunk's offsets are precomputed (kIters registers each); the
 *    global one is 32-bit: row * row_stride + col with row < kRows (validation bounds
 *    kRows * row_stride < 2^31).
 * Full tiles (valid_rows >= kRows: every KV tile but the last) skip the row test. */
template <class Tile, int kThreads>
class TileCopy {
  public:
    static constexpr int kIters = (Tile::kChunks + kThreads - 1) / kThreads;
    static constexpr bool kFixedColumn = kThreads % Tile::kChunksPerRow == 0;
    static constexpr int kRowStep = kFixedColumn ? kThreads / Tile::kChunksPerRow : 1;
    static constexpr int kPeriod =
        kFixedColumn ? min_int(kIters, kSwizzleRowPeriod / gcd_int(kRowStep, kSwizzleRowPeriod))
                     : kIters;
    static_assert(!kFixedColumn || Tile::kChunks % kThreads == 0, "fixed-column tiles split evenly");

    /* Global side, per tensor (it depends on the row stride): byte offsets of the thread's
     * chunks from the tile's row 0. */
    struct Source {
        int64_t off0;                                // fixed column: the first chunk
        int64_t step;                                // fixed column: bytes between its rows;
                                                     // otherwise: bytes of one whole tile
        int32_t off32[kFixedColumn ? 1 : kIters];    // otherwise: every chunk (32-bit)
        /* Bytes from one tile's row 0 to the next's (kIters * kRowStep = kRows when fixed). */
        __device__ __forceinline__ int64_t tile_bytes() const {
            return kFixedColumn ? kIters * step : step;
        }
    };

    /* Shared side: smem_base is the .shared address the tile offsets are relative to (the tile
     * itself is placed by copy's immediate). */
    __device__ __forceinline__ TileCopy(uint32_t smem_base, int tid) {
        if constexpr (kFixedColumn) {
            row0_ = Tile::flat_chunk_row(tid);
#pragma unroll
            for (int p = 0; p < kPeriod; ++p)
                smem_off_[p] = pin(smem_base + Tile::chunk_offset(row0_ + p * kRowStep,
                                                                  Tile::flat_chunk_col8(tid)));
        } else {
            row0_ = 0;
#pragma unroll
            for (int it = 0; it < kIters; ++it) {
                const int flat = tail_clamped(tid + it * kThreads);
                smem_off_[it] = pin(smem_base + Tile::chunk_offset(Tile::flat_chunk_row(flat),
                                                                   Tile::flat_chunk_col8(flat)));
            }
        }
    }

    /* row_stride in elements. */
    __device__ __forceinline__ Source source(int64_t row_stride, int tid) const {
        Source src;
        if constexpr (kFixedColumn) {
            src.off0 = (Tile::flat_chunk_row(tid) * row_stride +
                        Tile::flat_chunk_col8(tid) * kChunkElems) * kElemBytes;
            src.step = kRowStep * row_stride * kElemBytes;
            src.off32[0] = 0;
        } else {
            src.off0 = 0;
            src.step = Tile::kRows * row_stride * kElemBytes;
#pragma unroll
            for (int it = 0; it < kIters; ++it) {
                const int flat = tail_clamped(tid + it * kThreads);
                src.off32[it] = (static_cast<int32_t>(Tile::flat_chunk_row(flat) * row_stride) +
                                 Tile::flat_chunk_col8(flat) * kChunkElems) * kElemBytes;
            }
        }
        return src;
    }

    /* Copies the tile whose row 0 (plus from.off0) is at .global address `gmem_tile` into the
     * shared tile at smem_base + kTileOffset; see the class comment for valid_rows, valid_col8
     * and safe_src. */
    template <int kTileOffset>
    __device__ __forceinline__ void copy(const Source &from, uint64_t gmem_tile, int valid_rows,
                                         int valid_col8, uint64_t safe_src, int tid) const {
        for_each_chunk<kTileOffset>(from, gmem_tile, valid_rows, valid_col8, tid,
                                    [&](auto imm_c, auto /*it_c*/, uint32_t dst, uint64_t src,
                                        bool valid) {
                                        cp_async_16<decltype(imm_c)::value>(
                                            dst, valid ? src : safe_src, valid ? kChunkBytes : 0);
                                    });
    }

  protected:
    uint32_t smem_off_[kPeriod];  // .shared addresses of the thread's chunk(s), tile at 0
    int row0_;                    // fixed column: the thread's first row

    /* The last iteration of an uneven split has idle threads; they compute (unused) offsets of
     * the tile's last chunk. */
    static __device__ __forceinline__ int tail_clamped(int flat) {
        return min_int(flat, Tile::kChunks - 1);
    }

    /* Calls chunk(Int<imm>, Int<it>, dst, src, valid) for each of the thread's chunks: dst + imm
     * is its .shared address, src its .global address, valid false for chunks past valid_rows /
     * valid_col8 (to be zero-filled, src not to be read). The branches pick a variant per call,
     * so full tiles (every KV tile but the last) skip the row test. */
    template <int kTileOffset, class Chunk>
    __device__ __forceinline__ void for_each_chunk(const Source &from, uint64_t gmem_tile,
                                                   int valid_rows, int valid_col8, int tid,
                                                   Chunk &&chunk) const {
        if constexpr (kFixedColumn) {
            // The thread's column is fixed: past valid_col8 all its chunks zero-fill, as if the
            // tile had no valid rows (no extra code path in the main loop).
            const int rows = Tile::flat_chunk_col8(tid) < valid_col8 ? valid_rows : 0;
            if (rows >= Tile::kRows)
                run<kTileOffset, false, false>(from, gmem_tile, rows, valid_col8, tid, chunk);
            else
                run<kTileOffset, true, false>(from, gmem_tile, rows, valid_col8, tid, chunk);
        } else if (valid_col8 < Tile::kChunksPerRow) {
            run<kTileOffset, true, true>(from, gmem_tile, valid_rows, valid_col8, tid, chunk);
        } else if (valid_rows >= Tile::kRows) {
            run<kTileOffset, false, false>(from, gmem_tile, valid_rows, valid_col8, tid, chunk);
        } else {
            run<kTileOffset, true, false>(from, gmem_tile, valid_rows, valid_col8, tid, chunk);
        }
    }

    /* The .shared address and immediate of chunk `it` (the same for every tile). */
    template <int kTileOffset, int it>
    __host__ __device__ static constexpr int chunk_imm() {
        return kTileOffset +
               (kFixedColumn ? (it / kPeriod) * kPeriod * kRowStep * Tile::kRowBytes : 0);
    }
    template <int it>
    __device__ __forceinline__ uint32_t chunk_dst() const {
        return smem_off_[kFixedColumn ? it % kPeriod : it];
    }

    template <int kTileOffset, bool kPartial, bool kPartialCols, class Chunk>
    __device__ __forceinline__ void run(const Source &from, uint64_t gmem_tile, int valid_rows,
                                        int valid_col8, int tid, Chunk &chunk) const {
        uint64_t src = gmem_tile + from.off0;
        static_for<kIters>([&](auto it_c) {
            constexpr int it = decltype(it_c)::value;
            int row;
            int col8;
            if constexpr (kFixedColumn) {
                row = row0_ + it * kRowStep;
                col8 = Tile::flat_chunk_col8(tid);
            } else {
                const int flat = tid + it * kThreads;
                if (Tile::kChunks % kThreads != 0 && flat >= Tile::kChunks) return;
                row = Tile::flat_chunk_row(flat);
                col8 = Tile::flat_chunk_col8(flat);
                src = gmem_tile + from.off32[it];  // sign-extended
            }
            const bool valid =
                !kPartial || (row < valid_rows && (!kPartialCols || col8 < valid_col8));
            chunk(Int<chunk_imm<kTileOffset, it>()>{}, it_c, chunk_dst<it>(), src, valid);
            if constexpr (kFixedColumn) src += from.step;
        });
    }
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_SMEM_LAYOUT_CUH
