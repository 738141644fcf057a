/*
 * flash_fwd_tiles.cu: the Ampere-and-newer forward at tiles other than its head dim's primary
 * row (issue 20, "retile by it"): one entry per FLASHMHA_FWD_TILE_KERNELS row of
 * kernels/kernel_table.h, the same CTA body (kernels/common/flash_fwd_cta.cuh) with the row's
 * block_m, block_n, warps and K / V stages. A module of its own, so its candidates cost their
 * own ptxas runs and an edit here does not reassemble the primary rows (kernels/sm80/flash_fwd.cu).
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_fwd_cta.cuh"

/* flashmha_fwd_<dtype>_d<head_dim>_<block_m>x<block_n>w<num_warps>s<kv_stages>c<min_ctas>, K / V
 * through cp.async in kv_stages shared-memory stages (FwdTraits' kKVStages_), launch bounds
 * asking ptxas to fit min_ctas CTAs per SM (registers <= 64 K / (min_ctas x threads)). */
#undef FLASHMHA_FWD_TILE_KERNELS
#define FLASHMHA_FWD_TILE_KERNELS(dtype, head_dim, block_m, block_n, num_warps, kv_stages,         \
                                  min_ctas, smem_bytes)                                             \
    FLASHMHA_DEFINE_ENTRY(                                                                          \
        flashmha_fwd_##dtype##_d##head_dim##_##block_m##x##block_n##w##num_warps##s##kv_stages##c##min_ctas, \
        ((num_warps) * flashmha::kWarpSize, min_ctas), const FlashFwdParams, flash_fwd_cta,        \
        smem_bytes,                                                                                 \
        flashmha::FwdTraits<flashmha::Elem_##dtype, head_dim, block_m, block_n, num_warps,         \
                            flashmha::LoadPath::CpAsync, head_dim, kv_stages>)

FLASHMHA_KERNELS(FLASHMHA_KERNEL_ROW)
