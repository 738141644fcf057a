/*
 * flash_fwd.cu: the Ampere-and-newer forward flash-attention entry points (compute_80 PTX,
 * sm_80..sm_90 cubins), one per FLASHMHA_FWD_KERNELS row of kernels/kernel_table.h. The CTA
 * body, with its cp.async pipeline and mma.m16n8k16, is kernels/common/flash_fwd_cta.cuh.
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_fwd_cta.cuh"

/* flashmha_fwd_<dtype>_d<head_dim>, its K / V tiles through cp.async (FwdTraits' default path). */
#undef FLASHMHA_FWD_KERNELS
#define FLASHMHA_FWD_KERNELS(dtype, head_dim, block_m, block_n, num_warps, kv_bytes, smem_bytes)   \
    FLASHMHA_DEFINE_ENTRY(flashmha_fwd_##dtype##_d##head_dim, ((num_warps) * flashmha::kWarpSize),  \
                          const FlashFwdParams, flash_fwd_cta, smem_bytes,                         \
                          flashmha::FwdTraits<flashmha::Elem_##dtype, head_dim, block_m, block_n,  \
                                              num_warps>)

/* flashmha_fwd_<dtype>_d<head_dim>v<head_dim_v>: the same body with d_v != d_qk (FwdTraits'
 * kHeadDimV; kernel_table.h, FLASHMHA_FWD_DV_KERNELS). */
#undef FLASHMHA_FWD_DV_KERNELS
#define FLASHMHA_FWD_DV_KERNELS(dtype, head_dim, head_dim_v, block_m, block_n, num_warps, kv_bytes, \
                                smem_bytes)                                                         \
    FLASHMHA_DEFINE_ENTRY(flashmha_fwd_##dtype##_d##head_dim##v##head_dim_v,                        \
                          ((num_warps) * flashmha::kWarpSize), const FlashFwdParams, flash_fwd_cta, \
                          smem_bytes,                                                               \
                          flashmha::FwdTraits<flashmha::Elem_##dtype, head_dim, block_m, block_n,   \
                                              num_warps, flashmha::LoadPath::CpAsync, head_dim_v>)

FLASHMHA_KERNELS(FLASHMHA_KERNEL_ROW)
