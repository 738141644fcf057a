/*
 * flash_mla_decode.cu: the Ampere-and-newer (compute_80 PTX, sm_80..sm_100 cubins) MLA decode
 * entry points (issue 23 item 3), one per FLASHMHA_MLA_DECODE_KERNELS row of
 * kernels/kernel_table.h: paged decode over one shared latent KV head (d_qk 576, d_v 512 read
 * from the same cached row). CTA body: kernels/common/flash_mla_decode_cta.cuh; tile and budget:
 * kernels/common/mla_decode_traits.cuh. The split combine is the paged decode's
 * (kernels/sm80/merge_states.cu).
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_mla_decode_cta.cuh"

/* flashmha_mla_decode_<dtype>[_fp8]_r<tile_rows> (_fp8: kv_bytes 1). */
#define FLASHMHA_MLA_DECODE_NAME_2(dtype, tile_rows) flashmha_mla_decode_##dtype##_r##tile_rows
#define FLASHMHA_MLA_DECODE_NAME_1(dtype, tile_rows) flashmha_mla_decode_##dtype##_fp8_r##tile_rows
#undef FLASHMHA_MLA_DECODE_KERNEL
#define FLASHMHA_MLA_DECODE_KERNEL(dtype, tile_rows, num_warps, kv_bytes, smem_bytes)              \
    FLASHMHA_DEFINE_ENTRY(FLASHMHA_MLA_DECODE_NAME_##kv_bytes(dtype, tile_rows),                   \
                          ((num_warps) * flashmha::kWarpSize, 1), const FlashMlaDecodeParams,      \
                          flash_mla_decode_cta, smem_bytes,                                        \
                          flashmha::MlaDecodeTraits<flashmha::Elem_##dtype, tile_rows, num_warps,  \
                                                    kv_bytes>)

FLASHMHA_MLA_DECODE_KERNELS(FLASHMHA_KERNEL_ROW)
