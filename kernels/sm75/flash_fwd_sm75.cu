/*
 * flash_fwd_sm75.cu: the Turing forward flash-attention entry points (compute_75 PTX, sm_75
 * cubin), one per FLASHMHA_FWD_KERNELS_SM75 row of kernels/kernel_table.h: f16 only (sm_75
 * has no bf16 mma), K / V tiles register-staged into one shared-memory stage (no cp.async on
 * sm_75), each k16 step two mma.m16n8k8 (kernels/common/mma.cuh). The CTA body is the Ampere
 * one (kernels/common/flash_fwd_cta.cuh), so every option behaves identically.
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_fwd_cta.cuh"

/* flashmha_fwd_sm75_<dtype>_d<head_dim>. */
#undef FLASHMHA_FWD_KERNELS_SM75
#define FLASHMHA_FWD_KERNELS_SM75(dtype, head_dim, block_m, block_n, num_warps, kv_bytes,          \
                                  smem_bytes)                                                      \
    FLASHMHA_DEFINE_ENTRY(flashmha_fwd_sm75_##dtype##_d##head_dim,                                 \
                          ((num_warps) * flashmha::kWarpSize), const FlashFwdParams, flash_fwd_cta, \
                          smem_bytes,                                                              \
                          flashmha::FwdTraits<flashmha::Elem_##dtype, head_dim, block_m, block_n,  \
                                              num_warps, flashmha::LoadPath::RegisterStaged>)

FLASHMHA_KERNELS(FLASHMHA_KERNEL_ROW)
