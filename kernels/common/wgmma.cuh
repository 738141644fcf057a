/*
 * wgmma.cuh: warpgroup MMA building blocks for sm_90a.
 *   - the shared-memory matrix descriptor (PTX ISA 9.7.15.5.1 "Asynchronous Warpgroup Level
 *     Matrix Shared Memory Layout", "Matrix Descriptor Format",
 *     #asynchronous-warpgroup-level-matrix-shared-memory-layout-matrix-descriptor) for operands
 *     in the 128-byte swizzled layout TMA writes (each row of a tile is 64 16-bit elements =
 *     128 bytes; 8 rows form one 1024-byte swizzle atom);
 *   - wgmma.fence / commit_group / wait_group (PTX ISA 9.7.15.7,
 *     #asynchronous-warpgroup-level-matrix-instructions-wgmma-fence and the two following), and
 *     wgmma_fence_operand, which pins the registers an asynchronous wgmma reads or writes;
 *   - the wgmma.mma_async wrappers themselves (generated: common/wgmma_ops.cuh).
 * The accumulator and register-A fragments of m64nNk16 are, per warp of the warpgroup, the
 * m16n8k16 C and A fragments of common/mma.cuh (PTX ISA "Matrix Fragments for
 * wgmma.mma_async"): warp w of the warpgroup owns rows 16 w .. 16 w + 15, so the softmax, mask
 * and P-packing code of the mma.sync kernels applies unchanged.
 */
#ifndef FLASHMHA_COMMON_WGMMA_CUH
#define FLASHMHA_COMMON_WGMMA_CUH

#include <stdint.h>

#include "params.h"
#include "common/mma.cuh"
#include "common/wgmma_ops.cuh"

namespace flashmha {

constexpr int kWarpgroupWarps = 4;
constexpr int kWarpgroupThreads = kWarpgroupWarps * kWarpSize;
constexpr int kWgmmaM = 64;  // rows of one wgmma: 16 per warp of the warpgroup
constexpr int kWgmmaK = 16;  // k of m64nNk16 for 16-bit inputs
static_assert(kWgmmaM == kWarpgroupWarps * kMmaM, "each warp owns one m16 row block");
static_assert(kWgmmaK == kMmaK, "a wgmma k-step is an m16n8k16 k-step (P reuse)");

__device__ __forceinline__ int warpgroup_of(int tid) { return tid / kWarpgroupThreads; }
/* Warp index inside its warpgroup: the m16 row block it owns. */
__device__ __forceinline__ int warp_in_warpgroup(int tid) {
    return warp_of(tid) % kWarpgroupWarps;
}

/* ---- 128-byte swizzled tiles (TMA box of FLASHMHA_TMA_BOX_COLS columns) -------------------- */
constexpr int kSwizzleRowBytes = 128;   // one row of a swizzle atom: 64 16-bit elements
constexpr int kSwizzleAtomRows = 8;     // rows per atom (the XOR pattern repeats every 8 rows)
constexpr int kSwizzleAtomBytes = kSwizzleRowBytes * kSwizzleAtomRows;  // 1024: TMA dst alignment
constexpr int kColsPerSwizzleRow = kSwizzleRowBytes / kElemBytes;       // 64
constexpr int kKStepBytes = kWgmmaK * kElemBytes;                       // 32: one k16 step in a row
static_assert(kColsPerSwizzleRow == FLASHMHA_TMA_BOX_COLS, "a TMA box row is one swizzle row");
static_assert(kSwizzleRowBytes % kKStepBytes == 0, "k16 steps tile a swizzle row");

/* Descriptor fields: bits 0-13 start address >> 4, 16-29 leading-dimension byte offset >> 4,
 * 32-45 stride-dimension byte offset >> 4, 49-51 base offset, 62-63 swizzle mode. */
constexpr int kDescAddrShift = 4;
constexpr uint64_t kDescFieldMask = 0x3FFF;
constexpr int kDescLboBit = 16;
constexpr int kDescSboBit = 32;
constexpr int kDescSwizzleBit = 62;
constexpr uint64_t kDescSwizzle128B = 1;  // 1 = 128-byte swizzle, 2 = 64, 3 = 32, 0 = none

/* Descriptor of an operand at .shared address `addr`, 128-byte swizzle. Tile bases are
 * 1024-byte aligned, so the base offset (the start's phase in the swizzle pattern) is 0 even
 * when `addr` moves by k-steps of 32 bytes inside a row.
 *   K-major (Q as A, K as B; imm-trans 0): rows of 128 bytes along K; SBO = 1024 (the next 8
 *     rows of M / N); LBO unused while a k16 step stays inside one row (encoded as 1).
 *   MN-major (V as B; imm-trans-b 1): each 128-byte row holds 64 consecutive N (head-dim)
 *     elements of one K (key) row; SBO = 1024 (the next 8 keys), LBO = the distance to the
 *     next 64 head-dim columns (the next TMA box). */
__device__ __forceinline__ uint64_t smem_desc_128b(uint32_t addr, uint32_t lbo_bytes,
                                                   uint32_t sbo_bytes) {
    return ((static_cast<uint64_t>(addr) >> kDescAddrShift) & kDescFieldMask) |
           (((static_cast<uint64_t>(lbo_bytes) >> kDescAddrShift) & kDescFieldMask) << kDescLboBit) |
           (((static_cast<uint64_t>(sbo_bytes) >> kDescAddrShift) & kDescFieldMask) << kDescSboBit) |
           (kDescSwizzle128B << kDescSwizzleBit);
}
constexpr uint32_t kKMajorLbo = 1 << kDescAddrShift;  // ignored by the hardware for this layout
/* The descriptor of the operand `bytes` further on: the start address is the low field, and
 * shared addresses stay below 2^18 bytes, so the add never carries out of it. */
__device__ __forceinline__ uint64_t smem_desc_advance(uint64_t desc, uint32_t bytes) {
    return desc + (bytes >> kDescAddrShift);
}

/* wgmma.fence: orders this warpgroup's register writes (accumulators rescaled, A fragments
 * packed) before the wgmma.mma_async that read them. */
__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
/* Keeps the compiler from moving reads or writes of registers that an asynchronous wgmma reads
 * (A fragments) or writes (accumulators) across the instruction that orders them (wgmma.fence
 * before, wgmma.wait_group after): the empty asm "uses and redefines" each register there. */
__device__ __forceinline__ void wgmma_fence_register(float &x) {
    asm volatile("" : "+f"(x)::"memory");
}
__device__ __forceinline__ void wgmma_fence_register(uint32_t &x) {
    asm volatile("" : "+r"(x)::"memory");
}
template <class Reg, int kRows, int kCols>
__device__ __forceinline__ void wgmma_fence_operand(Reg (&r)[kRows][kCols]) {
#pragma unroll
    for (int i = 0; i < kRows; ++i)
#pragma unroll
        for (int j = 0; j < kCols; ++j) wgmma_fence_register(r[i][j]);
}

/* Waits until at most kPending of the warpgroup's committed wgmma groups are in flight. The
 * accumulator registers of a group must not be touched before it completes: fencing them right
 * after the wait keeps the compiler from moving their uses across it. */
template <int kPending, int kTiles>
__device__ __forceinline__ void wgmma_wait(float (&d)[kTiles][kCRegs]) {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
    wgmma_fence_operand(d);
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_WGMMA_CUH
