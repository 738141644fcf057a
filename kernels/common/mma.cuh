/*
 * mma.cuh: warp-level tensor-core building blocks for sm_80+.
 *   - the mma.m16n8k16 fragment layouts, written once as named index functions;
 *   - mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, and on sm_75 (Turing,
 *     which has no m16n8k16) the same k16 step as two f16 m16n8k8, proven equivalent below;
 *   - ldmatrix .m8n8.x4 (plain and .trans) and the lane -> row-address helpers that make its
 *     result match the mma A / B fragments (checked by static_asserts below);
 *   - cp.async.cg 16-byte copies (zero-fill through src-size) with commit / wait_group.
 * Section numbers are those of the PTX ISA 9.2 document
 * (https://docs.nvidia.com/cuda/parallel-thread-execution/); the #anchor given next to each is
 * stable across ISA versions where the numbering shifts.
 */
#ifndef FLASHMHA_COMMON_MMA_CUH
#define FLASHMHA_COMMON_MMA_CUH

#include <stdint.h>

#include "common/arch.cuh"
#include "common/dtype.cuh"

namespace flashmha {

constexpr int kWarpSize = 32;

__device__ __forceinline__ int lane_of(int tid) { return tid & (kWarpSize - 1); }
__device__ __forceinline__ int warp_of(int tid) { return tid / kWarpSize; }

/* ---- mma.m16n8k16 fragments: PTX ISA 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with
 *      floating point type" (#warp-level-matrix-fragment-mma-16816-float) ---------------------- */
constexpr int kMmaM = 16;
constexpr int kMmaN = 8;
constexpr int kMmaK = 16;
constexpr int kMmaMHalf = kMmaM / 2;  // rows groupID and groupID + 8
constexpr int kMmaKHalf = kMmaK / 2;  // cols (A) / rows (B) +8 for the upper register pair
constexpr int kQuadSize = 4;          // threads sharing one groupID (threadID_in_group 0..3)
constexpr int kPairElems = 2;         // two 16-bit elements per .b32 (f16x2 / bf16x2) register
constexpr int kARegs = 4;             // a0..a7 in four .b32
constexpr int kBRegs = 2;             // b0..b3 in two .b32
constexpr int kCRegs = 4;             // c0..c3 as four .f32

/* groupID = %laneid >> 2 */
__host__ __device__ constexpr int quad_id(int lane) { return lane >> 2; }
/* threadID_in_group = %laneid % 4 */
__host__ __device__ constexpr int lane_in_quad(int lane) { return lane & (kQuadSize - 1); }

/* A (16x16, .row), element a_i, i = 0..7 (register i / 2, half i % 2):
 *   row = groupID for 0 <= i < 2 || 4 <= i < 6, groupID + 8 otherwise
 *   col = threadID_in_group * 2 + (i & 1), + 8 for i >= 4 */
__host__ __device__ constexpr int mma_a_row(int lane, int i) {
    return quad_id(lane) + ((i >> 1) & 1) * kMmaMHalf;
}
__host__ __device__ constexpr int mma_a_col(int lane, int i) {
    return lane_in_quad(lane) * kPairElems + (i & 1) + (i >= 4 ? kMmaKHalf : 0);
}
/* B (16x8, .col), element b_i, i = 0..3:
 *   row (k) = threadID_in_group * 2 + (i & 1), + 8 for i >= 2;  col (n) = groupID */
__host__ __device__ constexpr int mma_b_row(int lane, int i) {
    return lane_in_quad(lane) * kPairElems + (i & 1) + (i >= 2 ? kMmaKHalf : 0);
}
__host__ __device__ constexpr int mma_b_col(int lane, int /*i*/) { return quad_id(lane); }
/* C / D (16x8, f32), element c_i, i = 0..3:
 *   row = groupID for i < 2, groupID + 8 for i >= 2;  col = threadID_in_group * 2 + (i & 1) */
__host__ __device__ constexpr int mma_c_row(int lane, int i) {
    return quad_id(lane) + (i >= 2 ? kMmaMHalf : 0);
}
__host__ __device__ constexpr int mma_c_col(int lane, int i) {
    return lane_in_quad(lane) * kPairElems + (i & 1);
}
/* Which of the thread's two rows (groupID, groupID + 8) accumulator c_i belongs to. */
__host__ __device__ constexpr int mma_c_row_half(int i) { return i >= 2 ? 1 : 0; }
/* Accumulator index of row half h, pair element e (c_{2h+e}). */
__host__ __device__ constexpr int mma_c_index(int h, int e) { return h * kPairElems + e; }

/* ---- P reuse: the C fragments of two adjacent n8 score tiles ARE the A fragment of one k16
 *      step of P.V, element for element (FA2's register-resident P). A register r of k-step kk
 *      packs c_{2(r&1)}, c_{2(r&1)+1} of score tile 2kk + (r >> 1). ------------------------- */
__host__ __device__ constexpr int p_tile_of_a_reg(int kstep, int r) { return 2 * kstep + (r >> 1); }
__host__ __device__ constexpr int p_c_of_a_reg(int r) { return mma_c_index(r & 1, 0); }

__host__ __device__ constexpr bool p_reuse_layout_holds() {
    for (int lane = 0; lane < kWarpSize; ++lane)
        for (int r = 0; r < kARegs; ++r)
            for (int e = 0; e < kPairElems; ++e) {
                const int i = r * kPairElems + e;
                const int c = p_c_of_a_reg(r) + e;
                const int tile_col0 = (p_tile_of_a_reg(0, r)) * kMmaN;
                if (mma_a_row(lane, i) != mma_c_row(lane, c)) return false;
                if (mma_a_col(lane, i) != tile_col0 + mma_c_col(lane, c)) return false;
            }
    return true;
}
static_assert(p_reuse_layout_holds(), "P (score C fragments) must equal the A fragment of P.V");

/* ---- mma.m16n8k8 (Turing): PTX ISA 9.7.14.5.7 "Matrix Fragments for mma.m16n8k8"
 *      (#warp-level-matrix-fragment-mma-1688). A (16x8, .row), a0..a3 in two .b32:
 *      row = groupID for a0,a1, groupID + 8 for a2,a3; col = threadID_in_group * 2 + (i & 1).
 *      B (8x8, .col), b0,b1 in one .b32: row (k) = threadID_in_group * 2 + i; col = groupID.
 *      C / D: as m16n8k16. A k16 step is two k8 halves: half h takes A registers
 *      {kK8ARegs * h, kK8ARegs * h + 1} and B register h of the k16 fragments. -------------- */
constexpr int kMmaK8 = 8;
constexpr int kK8ARegs = 2;  // a0..a3 in two .b32
constexpr int kK8Halves = kMmaK / kMmaK8;
__host__ __device__ constexpr int mma_k8_a_row(int lane, int i) {
    return quad_id(lane) + (i >> 1) * kMmaMHalf;
}
__host__ __device__ constexpr int mma_k8_a_col(int lane, int i) {
    return lane_in_quad(lane) * kPairElems + (i & 1);
}
__host__ __device__ constexpr int mma_k8_b_row(int lane, int i) {
    return lane_in_quad(lane) * kPairElems + i;
}
__host__ __device__ constexpr bool k8_halves_match_k16() {
    for (int lane = 0; lane < kWarpSize; ++lane)
        for (int h = 0; h < kK8Halves; ++h)
            for (int r = 0; r < kK8ARegs; ++r)
                for (int e = 0; e < kPairElems; ++e) {
                    const int i8 = r * kPairElems + e;                        // k8 element
                    const int i16 = (h * kK8ARegs + r) * kPairElems + e;      // k16 element
                    if (mma_k8_a_row(lane, i8) != mma_a_row(lane, i16)) return false;
                    if (mma_k8_a_col(lane, i8) + h * kMmaK8 != mma_a_col(lane, i16)) return false;
                    // B: k16 register h holds b_{2h}, b_{2h+1}; k8 register 0 holds b0, b1.
                    if (mma_k8_b_row(lane, e) + h * kMmaK8 != mma_b_row(lane, h * kPairElems + e))
                        return false;
                }
    return true;
}
static_assert(k8_halves_match_k16(), "two m16n8k8 must compute one m16n8k16 step");

/* ---- ldmatrix: PTX ISA 9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix"
 *      (#warp-level-matrix-instructions-ldmatrix). For .m8n8.x4.b16, threads 8m .. 8m+7 give
 *      the 8 row addresses (16 bytes each) of matrix m; register m of each thread receives, of
 *      matrix m, the pair (row groupID, cols threadID_in_group*2 + {0,1}); with .trans the pair
 *      (rows threadID_in_group*2 + {0,1}, col groupID), i.e. the transposed matrix. ---------- */
constexpr int kLdsmRows = 8;     // rows per 8x8 matrix, one address per thread
constexpr int kLdsmMatrices = 4; // .x4
__host__ __device__ constexpr int ldsm_matrix(int lane) { return lane / kLdsmRows; }
__host__ __device__ constexpr int ldsm_row(int lane) { return lane % kLdsmRows; }
/* Position in matrix m of the pair element e delivered to `lane` (plain / .trans). */
__host__ __device__ constexpr int ldsm_frag_row(int lane, int e, bool trans) {
    return trans ? lane_in_quad(lane) * kPairElems + e : quad_id(lane);
}
__host__ __device__ constexpr int ldsm_frag_col(int lane, int e, bool trans) {
    return trans ? quad_id(lane) : lane_in_quad(lane) * kPairElems + e;
}

/* Two address patterns for one .x4 (in 8-row / 8-column steps of the source tile):
 *  "A pattern" (Q as A operand, plain; V as B operand, .trans): matrix m covers rows +8*(m&1),
 *      columns +8*(m>>1). Plain: registers 0..3 = a0a1, a2a3, a4a5, a6a7 of one 16x16 A tile.
 *      .trans on V[key][dim]: registers (0,1) = b of dims 0..7, (2,3) = b of dims 8..15.
 *  "B pattern" (K as B operand, plain): matrix m covers rows (keys) +8*(m>>1), columns (dims)
 *      +8*(m&1): registers (0,1) = b of keys 0..7, (2,3) = b of keys 8..15. */
__host__ __device__ constexpr int ldsm_a_row(int lane) {
    return ldsm_row(lane) + (ldsm_matrix(lane) & 1) * kLdsmRows;
}
__host__ __device__ constexpr int ldsm_a_col8(int lane) { return ldsm_matrix(lane) >> 1; }
__host__ __device__ constexpr int ldsm_b_row(int lane) {
    return ldsm_row(lane) + (ldsm_matrix(lane) >> 1) * kLdsmRows;
}
__host__ __device__ constexpr int ldsm_b_col8(int lane) { return ldsm_matrix(lane) & 1; }

/* Static proof that the patterns above deliver exactly the mma fragments. Each matrix m is
 * addressed by the lanes with ldsm_matrix(lane) == m; its rows/cols offsets are those of any of
 * them (here lane 8m). */
__host__ __device__ constexpr int ldsm_a_row_of_matrix(int m) { return ldsm_a_row(m * kLdsmRows); }
__host__ __device__ constexpr int ldsm_a_col_of_matrix(int m) {
    return ldsm_a_col8(m * kLdsmRows) * kLdsmRows;
}
__host__ __device__ constexpr int ldsm_b_row_of_matrix(int m) { return ldsm_b_row(m * kLdsmRows); }
__host__ __device__ constexpr int ldsm_b_col_of_matrix(int m) {
    return ldsm_b_col8(m * kLdsmRows) * kLdsmRows;
}
__host__ __device__ constexpr bool ldsm_layouts_hold() {
    for (int lane = 0; lane < kWarpSize; ++lane)
        for (int m = 0; m < kLdsmMatrices; ++m)
            for (int e = 0; e < kPairElems; ++e) {
                // Q, plain, A pattern: register m holds a_{2m+e}.
                const int i = m * kPairElems + e;
                if (ldsm_a_row_of_matrix(m) + ldsm_frag_row(lane, e, false) != mma_a_row(lane, i))
                    return false;
                if (ldsm_a_col_of_matrix(m) + ldsm_frag_col(lane, e, false) != mma_a_col(lane, i))
                    return false;
                // K[key][dim], plain, B pattern: register m holds b_{2(m&1)+e} of key tile m>>1.
                // B[k][n] = K[n][k]: tile row (key) = n, tile col (dim) = k.
                const int bi = (m & 1) * kPairElems + e;
                const int key_tile = (m >> 1) * kMmaN;
                if (ldsm_b_row_of_matrix(m) + ldsm_frag_row(lane, e, false) !=
                    key_tile + mma_b_col(lane, bi))
                    return false;
                if (ldsm_b_col_of_matrix(m) + ldsm_frag_col(lane, e, false) != mma_b_row(lane, bi))
                    return false;
                // V[key][dim], .trans, A pattern: register m holds b_{2(m&1)+e} of dim tile m>>1.
                // B[k][n] = V[k][n]: tile row (key) = k, tile col (dim) = n.
                const int dim_tile = (m >> 1) * kMmaN;
                if (ldsm_a_row_of_matrix(m) + ldsm_frag_row(lane, e, true) != mma_b_row(lane, bi))
                    return false;
                if (ldsm_a_col_of_matrix(m) + ldsm_frag_col(lane, e, true) !=
                    dim_tile + mma_b_col(lane, bi))
                    return false;
            }
    return true;
}
static_assert(ldsm_layouts_hold(), "ldmatrix address patterns must deliver the mma fragments");

/* ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 from the .shared address base + kImm (the
 * immediate rides in the address operand, so unrolled fragment loads need no address
 * arithmetic). One definition for both forms: the qualifier is the only difference, and asm
 * needs it spelled in the string literal. */
#define FLASHMHA_DEFINE_LDSM_X4(name, qualifier)                                                   \
    template <int kImm>                                                                            \
    __device__ __forceinline__ void name(uint32_t(&r)[kLdsmMatrices], uint32_t base) {             \
        asm volatile("ldmatrix.sync.aligned.m8n8.x4" qualifier                                     \
                     ".shared.b16 {%0, %1, %2, %3}, [%4+%5];\n"                                    \
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                              \
                     : "r"(base), "n"(kImm)                                                        \
                     : "memory");                                                                  \
    }
FLASHMHA_DEFINE_LDSM_X4(ldsm_x4, "")
FLASHMHA_DEFINE_LDSM_X4(ldsm_x4_trans, ".trans")
#undef FLASHMHA_DEFINE_LDSM_X4

/* Zeroes f32 C fragments, kTiles n8 tiles (one m16 row block), or kRowBlocks x kTiles: the
 * O accumulators every attention CTA body starts from. */
template <int kTiles>
__device__ __forceinline__ void zero_c_fragments(float (&c)[kTiles][kCRegs]) {
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
#pragma unroll
        for (int i = 0; i < kCRegs; ++i) c[t][i] = 0.0f;
}
template <int kRowBlocks, int kTiles>
__device__ __forceinline__ void zero_c_fragments(float (&c)[kRowBlocks][kTiles][kCRegs]) {
#pragma unroll
    for (int rb = 0; rb < kRowBlocks; ++rb) zero_c_fragments(c[rb]);
}

/* ---- mma.sync: PTX ISA 9.7.14.5.14 "Multiply-and-Accumulate Instruction: mma"
 *      (#warp-level-matrix-instructions-mma). d = a * b + d, f32 accumulate. ------------------ */
/* Turing: d += a * b over one k8 half (f16 only: sm_75 has no bf16 mma). */
__device__ __forceinline__ void mma_1688_f16(float (&d)[kCRegs], uint32_t a0, uint32_t a1,
                                             uint32_t b) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(b));
}

/* The m16n8k16 asm with A / B of PTX type `ab` ("f16" or "bf16"), read from the caller's d, a,
 * b0, b1: the type must be spelled inside the string literal, so one macro writes every form.
 * c_operands is the C operand ("{%0, %1, %2, %3}": accumulate into d, d_constraint "+f"; or four
 * copies of an extra input, d_constraint "=f"); the trailing arguments are extra inputs, each
 * after a comma. */
#define FLASHMHA_MMA_16816_ASM(ab, c_operands, d_constraint, ...)                                  \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ab "." ab ".f32 "                        \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, " c_operands ";\n"                 \
                 : d_constraint(d[0]), d_constraint(d[1]), d_constraint(d[2]), d_constraint(d[3])  \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1) __VA_ARGS__)

template <class Elem>
__device__ __forceinline__ void mma_16816(float (&d)[kCRegs], const uint32_t (&a)[kARegs],
                                          uint32_t b0, uint32_t b1) {
#if FLASHMHA_SM75
    static_assert(!Elem::kIsBf16, "sm_75 has no bf16 mma: Turing kernels are f16 only");
    mma_1688_f16(d, a[0], a[1], b0);  // k 0..7   (k8_halves_match_k16)
    mma_1688_f16(d, a[2], a[3], b1);  // k 8..15
#else
    if constexpr (Elem::kIsBf16)
        FLASHMHA_MMA_16816_ASM("bf16", "{%0, %1, %2, %3}", "+f", );
    else
        FLASHMHA_MMA_16816_ASM("f16", "{%0, %1, %2, %3}", "+f", );
#endif
}
/* d = a * b (C = 0): the first k-step of a fresh accumulator, without zeroing d first. */
template <class Elem>
__device__ __forceinline__ void mma_16816_zero_c(float (&d)[kCRegs], const uint32_t (&a)[kARegs],
                                                 uint32_t b0, uint32_t b1) {
    const float zero = 0.0f;
#if FLASHMHA_SM75
    static_assert(!Elem::kIsBf16, "sm_75 has no bf16 mma: Turing kernels are f16 only");
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%7, %7, %7, %7};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b0), "f"(zero));
    mma_1688_f16(d, a[2], a[3], b1);
#else
    if constexpr (Elem::kIsBf16)
        FLASHMHA_MMA_16816_ASM("bf16", "{%10, %10, %10, %10}", "=f", , "f"(zero));
    else
        FLASHMHA_MMA_16816_ASM("f16", "{%10, %10, %10, %10}", "=f", , "f"(zero));
#endif
}
#undef FLASHMHA_MMA_16816_ASM

/* ---- cp.async: PTX ISA "Data Movement and Conversion Instructions: cp.async" (9.7.9.x)
 *      (#data-movement-and-conversion-instructions-cp-async), commit_group / wait_group
 *      (#data-movement-and-conversion-instructions-cp-async-commit-group, -wait-group). ----- */
constexpr int kCopyBytes = 16;  // cp.async.cg supports only cp-size 16

/* 16-byte global -> shared copy to .shared address smem + kImm; src_bytes < 16 zero-fills the
 * rest (0: the whole chunk, the source is then not read). `gmem` is a .global address (see
 * gmem_addr), valid either way. */
template <int kImm>
__device__ __forceinline__ void cp_async_16(uint32_t smem, uint64_t gmem, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0+%3], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem),
                 "r"(src_bytes), "n"(kImm)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
/* Wait until at most kPending of this thread's committed groups are still in flight. */
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

/* .global address of a generic pointer to global memory (cvta.to.global), formed once per CTA. */
__device__ __forceinline__ uint64_t gmem_addr(const void *p) {
    return static_cast<uint64_t>(__cvta_generic_to_global(p));
}
/* Shared-window address of a generic pointer into shared memory (cvta.to.shared). */
__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_MMA_CUH
