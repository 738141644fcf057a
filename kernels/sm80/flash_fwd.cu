/*
 * flash_fwd.cu: the Ampere-and-newer forward flash-attention entry points (compute_80 PTX,
 * sm_80..sm_90 cubins), one per row of FLASHMHA_FWD_KERNELS in kernels/kernel_table.h. The CTA
 * body, with its cp.async pipeline and mma.m16n8k16, is kernels/common/flash_fwd_cta.cuh.
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_fwd_cta.cuh"

/* One entry point per kernel_table.h row: flashmha_fwd_<dtype>_d<head_dim>. */
#define FLASHMHA_DEFINE_FWD_ENTRY(dtype, head_dim, block_m, block_n, num_warps, smem_bytes)        \
    extern "C" __global__ void __launch_bounds__((num_warps) * flashmha::kWarpSize)                 \
        flashmha_fwd_##dtype##_d##head_dim(const FlashFwdParams params) {                          \
        using Traits = flashmha::FwdTraits<flashmha::Elem_##dtype, head_dim, block_m, block_n,      \
                                           num_warps>;                                              \
        static_assert(Traits::kSmemBytes == (smem_bytes),                                           \
                      "kernel_table.h smem_bytes must equal the traits' shared-memory layout");     \
        flashmha::flash_fwd_cta<Traits>(params);                                                    \
    }

FLASHMHA_FWD_KERNELS(FLASHMHA_DEFINE_FWD_ENTRY)
