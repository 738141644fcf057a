/*
 * flash_decode_sm75.cu: the Turing paged-decode entry points (compute_75 PTX, sm_75 cubin), one
 * per FLASHMHA_DECODE_KERNELS_SM75 row of kernels/kernel_table.h: f16 queries over f16 pages
 * only (sm_75 has no bf16 mma; FP8 pages are an Ampere feature), key blocks register-staged into
 * one per-warp shared-memory stage (no cp.async on sm_75), each k16 step two mma.m16n8k8
 * (kernels/common/mma.cuh). The CTA body is the Ampere one (kernels/common/flash_decode_cta.cuh),
 * so masks, softcap, ALiBi, GQA packing, split-KV, varlen, LSE and entropy behave identically.
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_decode_cta.cuh"

/* flashmha_decode_sm75_<dtype>_d<head_dim>[_r32] (kv_bytes is always 2 here). */
#define FLASHMHA_DECODE_SM75_ENTRY_NAME_16(dtype, head_dim) flashmha_decode_sm75_##dtype##_d##head_dim
#define FLASHMHA_DECODE_SM75_ENTRY_NAME_32(dtype, head_dim)                                         \
    flashmha_decode_sm75_##dtype##_d##head_dim##_r32
#undef FLASHMHA_DECODE_KERNELS_SM75
#define FLASHMHA_DECODE_KERNELS_SM75(dtype, head_dim, tile_rows, block_n, num_warps, kv_bytes,     \
                                     smem_bytes)                                                   \
    static_assert((kv_bytes) == 2 && (block_n) == flashmha::kDecodeKeysPerBlock,                   \
                  "Turing decode reads 16-bit pages, in blocks of the warp's 16 keys");            \
    FLASHMHA_DEFINE_ENTRY(FLASHMHA_DECODE_SM75_ENTRY_NAME_##tile_rows(dtype, head_dim),            \
                          ((num_warps) * flashmha::kWarpSize), const FlashDecodeParams,            \
                          flash_decode_cta, smem_bytes,                                            \
                          flashmha::DecodeTraits<flashmha::Elem_##dtype, head_dim, num_warps,      \
                                                 kv_bytes, tile_rows,                              \
                                                 flashmha::LoadPath::RegisterStaged>)

FLASHMHA_KERNELS(FLASHMHA_KERNEL_ROW)
