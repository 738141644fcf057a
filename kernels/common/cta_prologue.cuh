/*
 * cta_prologue.cuh: the launch checks every attention CTA body runs first (kernels/common/
 * flash_fwd_cta.cuh, kernels/common/flash_decode_cta.cuh, kernels/sm90/flash_fwd_sm90_cta.cuh).
 * A host that launches with less dynamic shared memory than the body's layout, or with a head
 * dim the entry does not serve, gets a trap instead of corrupted memory.
 */
#ifndef FLASHMHA_COMMON_CTA_PROLOGUE_CUH
#define FLASHMHA_COMMON_CTA_PROLOGUE_CUH

#include <stdint.h>

namespace flashmha {

/* Traps unless the launch gave at least kSmemBytes of dynamic shared memory and
 * 0 < head_dim <= kHeadDim with head_dim a multiple of kHeadDimStep: the forward serves every
 * multiple of 8 up to its compiled dim (the extra columns predicated off, params.h), and so does
 * the decode over 16-bit pages; the decode over FP8 pages serves its compiled dim only
 * (kHeadDimStep = kHeadDim). */
template <int kSmemBytes, int kHeadDim, int kHeadDimStep>
__device__ __forceinline__ void cta_prologue(int head_dim) {
    uint32_t dynamic_smem_bytes;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dynamic_smem_bytes));
    if (dynamic_smem_bytes < static_cast<uint32_t>(kSmemBytes)) __trap();
    if (head_dim <= 0 || head_dim > kHeadDim || head_dim % kHeadDimStep != 0) __trap();
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_CTA_PROLOGUE_CUH
