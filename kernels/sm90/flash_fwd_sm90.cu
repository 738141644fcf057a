/*
 * flash_fwd_sm90.cu: the Hopper forward flash-attention entry points (compute_90a PTX, sm_90a
 * cubin), one per row of FLASHMHA_FWD_KERNELS_SM90 in kernels/kernel_table.h. The CTA body (TMA
 * producer, wgmma consumers) is kernels/sm90/flash_fwd_sm90_cta.cuh. The params live in the
 * kernel's parameter space (__grid_constant__) because TMA reads the tensor maps from there.
 */
#include <stddef.h>

#include "params.h"
#include "kernel_table.h"
#include "sm90/flash_fwd_sm90_cta.cuh"

static_assert(sizeof(FlashFwdTmaParams) == offsetof(FlashFwdTmaParams, pad0) + sizeof(uint64_t),
              "FlashFwdTmaParams must have no implicit tail padding (params.h pad0)");

/* One entry point per row: flashmha_fwd_sm90_<dtype>_d<head_dim>. One CTA per SM (its shared
 * memory and the consumers' 240 registers), hence the minimum of 1 block. */
#define FLASHMHA_DEFINE_FWD_SM90_ENTRY(dtype, head_dim, block_m, block_n, num_warps, smem_bytes)   \
    extern "C" __global__ void __launch_bounds__((num_warps) * flashmha::kWarpSize, 1)              \
        flashmha_fwd_sm90_##dtype##_d##head_dim(const __grid_constant__ FlashFwdTmaParams params) { \
        using Traits = flashmha::FwdTraitsSm90<flashmha::Elem_##dtype, head_dim, block_m, block_n,  \
                                               num_warps>;                                          \
        static_assert(Traits::kSmemBytes == (smem_bytes),                                           \
                      "kernel_table.h smem_bytes must equal the traits' shared-memory layout");     \
        flashmha::flash_fwd_sm90_cta<Traits>(params);                                               \
    }

FLASHMHA_FWD_KERNELS_SM90(FLASHMHA_DEFINE_FWD_SM90_ENTRY)
