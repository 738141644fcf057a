/*
 * flash_bwd.cu: the Ampere-and-newer backward entry points (compute_80 PTX, sm_80..sm_90
 * cubins; issue 21): the main kernel per FLASHMHA_BWD_KERNELS row of kernels/kernel_table.h
 * (kernels/common/flash_bwd_cta.cuh), and per dtype the two row kernels around it
 * (kernels/common/bwd_rows.cuh): flashmha_bwd_dot_<dtype> before, flashmha_bwd_convert_dq_<dtype>
 * after.
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_bwd_cta.cuh"

/* flashmha_bwd_<dtype>_d<head_dim>. */
#undef FLASHMHA_BWD_KERNEL
#define FLASHMHA_BWD_KERNEL(dtype, head_dim, block_m, num_warps, smem_bytes)                       \
    FLASHMHA_DEFINE_ENTRY(flashmha_bwd_##dtype##_d##head_dim, ((num_warps) * flashmha::kWarpSize, 1), \
                          const FlashBwdParams, flash_bwd_cta, smem_bytes,                         \
                          flashmha::BwdTraits<flashmha::Elem_##dtype, head_dim, block_m, num_warps>)

FLASHMHA_BWD_KERNELS(FLASHMHA_KERNEL_ROW)

/* flashmha_bwd_dot_<dtype> and flashmha_bwd_convert_dq_<dtype>. */
#define FLASHMHA_BWD_ROW_ENTRIES(dtype)                                                            \
    extern "C" __global__ void __launch_bounds__(FLASHMHA_BWD_ROW_WARPS * flashmha::kWarpSize)    \
        flashmha_bwd_dot_##dtype(const FlashBwdParams params) {                                    \
        flashmha::flash_bwd_dot<flashmha::Elem_##dtype>(params);                                   \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(FLASHMHA_BWD_ROW_WARPS * flashmha::kWarpSize)    \
        flashmha_bwd_convert_dq_##dtype(const FlashBwdParams params) {                             \
        flashmha::flash_bwd_convert_dq<flashmha::Elem_##dtype>(params);                            \
    }
FLASHMHA_BWD_ROW_ENTRIES(f16)
FLASHMHA_BWD_ROW_ENTRIES(bf16)
