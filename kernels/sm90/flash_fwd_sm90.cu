/*
 * flash_fwd_sm90.cu: the Hopper forward flash-attention entry points (compute_90a PTX, sm_90a
 * cubin), one per FLASHMHA_FWD_KERNELS_SM90 row of kernels/kernel_table.h. The CTA body (TMA
 * producer, wgmma consumers) is kernels/sm90/flash_fwd_sm90_cta.cuh. The params live in the
 * kernel's parameter space (__grid_constant__) because TMA reads the tensor maps from there.
 */
#include <stddef.h>

#include "params.h"
#include "kernel_table.h"
#include "sm90/flash_fwd_sm90_cta.cuh"

static_assert(sizeof(FlashFwdTmaParams) == offsetof(FlashFwdTmaParams, base) + sizeof(FlashFwdParams),
              "FlashFwdTmaParams must have no implicit tail padding (params.h)");

/* flashmha_fwd_sm90_<dtype>_d<head_dim>. One CTA per SM (its shared memory and the consumers'
 * 240 registers), hence the minimum of 1 block. */
#undef FLASHMHA_FWD_KERNELS_SM90
#define FLASHMHA_FWD_KERNELS_SM90(dtype, head_dim, block_m, block_n, num_warps, kv_bytes,          \
                                  smem_bytes)                                                      \
    FLASHMHA_DEFINE_ENTRY(flashmha_fwd_sm90_##dtype##_d##head_dim,                                 \
                          ((num_warps) * flashmha::kWarpSize, 1),                                  \
                          const __grid_constant__ FlashFwdTmaParams, flash_fwd_sm90_cta,           \
                          smem_bytes,                                                              \
                          flashmha::FwdTraitsSm90<flashmha::Elem_##dtype, head_dim, block_m,       \
                                                  block_n, num_warps>)

/* flashmha_fwd_sm90_<dtype>_d<head_dim>v<head_dim_v>: the same body with d_v != d_qk
 * (FwdTraitsSm90's kHeadDimV; kernel_table.h, FLASHMHA_FWD_DV_KERNELS_SM90). */
#undef FLASHMHA_FWD_DV_KERNELS_SM90
#define FLASHMHA_FWD_DV_KERNELS_SM90(dtype, head_dim, head_dim_v, block_m, block_n, num_warps,     \
                                     kv_bytes, smem_bytes)                                         \
    FLASHMHA_DEFINE_ENTRY(flashmha_fwd_sm90_##dtype##_d##head_dim##v##head_dim_v,                  \
                          ((num_warps) * flashmha::kWarpSize, 1),                                  \
                          const __grid_constant__ FlashFwdTmaParams, flash_fwd_sm90_cta,           \
                          smem_bytes,                                                              \
                          flashmha::FwdTraitsSm90<flashmha::Elem_##dtype, head_dim, block_m,       \
                                                  block_n, num_warps, head_dim_v>)

FLASHMHA_KERNELS(FLASHMHA_KERNEL_ROW)
