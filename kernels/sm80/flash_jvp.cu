/*
 * flash_jvp.cu: the Ampere-and-newer forward-mode (JVP) attention entry points (compute_80 PTX,
 * sm_80..sm_90 cubins; issue 22), one per FLASHMHA_JVP_KERNELS row of kernels/kernel_table.h;
 * the CTA body is kernels/common/flash_jvp_cta.cuh.
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_jvp_cta.cuh"

/* flashmha_jvp_<dtype>_d<head_dim>. */
#undef FLASHMHA_JVP_KERNEL
#define FLASHMHA_JVP_KERNEL(dtype, head_dim, block_n, smem_bytes)                                  \
    FLASHMHA_DEFINE_ENTRY(flashmha_jvp_##dtype##_d##head_dim, (4 * flashmha::kWarpSize, 1),        \
                          const FlashJvpParams, flash_jvp_cta, smem_bytes,                         \
                          flashmha::JvpTraits<flashmha::Elem_##dtype, head_dim, block_n>)

FLASHMHA_JVP_KERNELS(FLASHMHA_KERNEL_ROW)
