/*
 * flash_mla_decode_sm90.cu: the Hopper MLA decode entry points (compute_90a PTX, sm_90a cubin;
 * issue 23 item 3), one per FLASHMHA_MLA_DECODE_KERNELS_SM90 row of kernels/kernel_table.h:
 * paged decode over one shared latent KV head (d_qk 576, d_v 512 read from the same cached row)
 * with TMA page loads and wgmma. CTA body: kernels/sm90/flash_mla_decode_sm90_cta.cuh; tile and
 * budget: kernels/sm90/mla_decode_traits_sm90.cuh. The split combine is the paged decode's
 * (kernels/sm80/merge_states.cu). The params live in the kernel's parameter space
 * (__grid_constant__) because TMA reads the tensor map from there.
 */
#include <stddef.h>

#include "params.h"
#include "kernel_table.h"
#include "sm90/flash_mla_decode_sm90_cta.cuh"

static_assert(sizeof(FlashMlaDecodeTmaParams) == offsetof(FlashMlaDecodeTmaParams, pad) + 4 * sizeof(uint64_t) &&
                  sizeof(FlashMlaDecodeTmaParams) % 64 == 0,
              "FlashMlaDecodeTmaParams must have no implicit padding (params.h)");
static_assert(FLASHMHA_MLA_SM90_KEYS == 64, "params.h tile keys = the traits' kKeys");

/* flashmha_mla_decode_sm90_<dtype>_r<tile_rows>. One CTA per SM (221 KB of shared memory). */
#undef FLASHMHA_MLA_DECODE_KERNEL_SM90
#define FLASHMHA_MLA_DECODE_KERNEL_SM90(dtype, tile_rows, num_warps, kv_bytes, smem_bytes)         \
    FLASHMHA_DEFINE_ENTRY(flashmha_mla_decode_sm90_##dtype##_r##tile_rows,                         \
                          ((num_warps) * flashmha::kWarpSize, 1),                                  \
                          const __grid_constant__ FlashMlaDecodeTmaParams,                         \
                          flash_mla_decode_sm90_cta, smem_bytes,                                   \
                          flashmha::MlaDecodeTraitsSm90<flashmha::Elem_##dtype, tile_rows,         \
                                                        num_warps>)

FLASHMHA_MLA_DECODE_KERNELS_SM90(FLASHMHA_KERNEL_ROW)
