/*
 * tma.cuh: the sm_90 asynchronous-copy building blocks of the Hopper forward: mbarriers
 * (PTX ISA 9.7.13.15 "Parallel Synchronization and Communication Instructions: mbarrier",
 * #parallel-synchronization-and-communication-instructions-mbarrier), tensor copies through a
 * tensor map (PTX ISA 9.7.9.25.5.1 "cp.async.bulk.tensor",
 * #data-movement-and-conversion-instructions-cp-async-bulk-tensor) that complete on an mbarrier
 * by transaction bytes, and the warpgroup register reallocation (PTX ISA "setmaxnreg",
 * #miscellaneous-instructions-setmaxnreg).
 *
 * Phases: an mbarrier initialised with count c completes a phase when c arrivals have been made
 * AND its transaction count (raised by arrive.expect_tx, lowered by the copies' complete_tx) is
 * back to zero. Waiters name the phase by its parity (0 for the first, 1 for the second, ...).
 */
#ifndef FLASHMHA_COMMON_TMA_CUH
#define FLASHMHA_COMMON_TMA_CUH

#include <stdint.h>

#include "params.h"

namespace flashmha {

constexpr int kMbarrierBytes = 8;  // one .b64 mbarrier object, 8-byte aligned

__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
/* Makes the initialised mbarriers visible to the other threads and to the async proxy (the TMA
 * unit performs complete_tx on them); a CTA barrier must follow before any use. */
__device__ __forceinline__ void mbarrier_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* One arrival, and `bytes` more transaction bytes expected in the current phase. */
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/* Blocks until the phase with parity `parity` has completed. try_wait suspends the thread up to
 * a system-dependent time limit (the hint, in ns) before returning false; the loop retries. */
constexpr uint32_t kTryWaitSuspendNs = 1000000;
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1, %2;\n"
        "@!done bra WAIT_%=;\n"
        "}\n" ::"r"(bar),
        "r"(parity), "n"(kTryWaitSuspendNs)
        : "memory");
}

/* TMA load of one box of a rank-4 tensor map (params.h) at coordinates (c0 .. c3), innermost
 * first, into .shared `dst` (1024-byte aligned for the 128-byte swizzle); its bytes complete on
 * the mbarrier `bar`. Out-of-bounds elements arrive as zeros and still count as bytes. */
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void *tensor_map, uint32_t bar,
                                            int c0, int c1, int c2, int c3) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
        "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
        : "memory");
}

/* ---- Thread-block clusters (PTX ISA "Cluster of Cooperative Thread Arrays"; sm_90) ----------
 * The CTAs of a cluster run at once and reach each other's shared memory through
 * shared::cluster addresses (mapa); a tensor load with .multicast::cluster writes the same
 * box at the same offset into every CTA of its mask and performs complete_tx there on the
 * mbarrier at the same offset. */
__device__ __forceinline__ uint32_t cluster_ctarank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
__device__ __forceinline__ uint32_t cluster_nctarank() {
    uint32_t n;
    asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(n));
    return n;
}
/* Every thread of every CTA of the cluster: the arrive releases this thread's prior memory
 * accesses, the wait acquires everyone's (a cluster-wide __syncthreads). */
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
/* The shared::cluster address of this CTA's shared address `addr` in the CTA of rank `rank`. */
__device__ __forceinline__ uint32_t mapa_shared(uint32_t addr, uint32_t rank) {
    uint32_t d;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(d) : "r"(addr), "r"(rank));
    return d;
}
/* One arrival on the mbarrier at shared::cluster address `bar` (another CTA's, through
 * mapa_shared), releasing this thread's prior accesses at cluster scope. */
__device__ __forceinline__ void mbarrier_arrive_cluster(uint32_t bar) {
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
/* tma_load_4d into every CTA of the cluster whose rank bit is set in `cta_mask`: the box lands at
 * `dst` of each and completes on the mbarrier at `bar` of each. */
__device__ __forceinline__ void tma_load_4d_multicast(uint32_t dst, const void *tensor_map, uint32_t bar,
                                                      int c0, int c1, int c2, int c3, uint16_t cta_mask) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
        " [%0], [%1, {%2, %3, %4, %5}], [%6], %7;\n" ::"r"(dst),
        "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar), "h"(cta_mask)
        : "memory");
}

/* Warpgroup register reallocation: the producer gives registers back, the consumers take them
 * (kRegs: a multiple of 8 in 24 .. 256; every thread of the warpgroup executes it). */
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
    static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg range");
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
    static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg range");
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_TMA_CUH
