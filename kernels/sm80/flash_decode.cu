/*
 * flash_decode.cu: the Ampere-and-newer (compute_80 PTX, sm_80..sm_90 cubins) paged-decode entry
 * points: attention of new query tokens over a paged KV cache (decode, speculative decode,
 * chunked prefill), with GQA packing and split-KV, one entry per row of FLASHMHA_DECODE_KERNELS
 * in kernels/decode_table.h. Key blocks are copied by cp.async into two per-warp stages; the CTA
 * body (work split, masks, FP8 pages, epilogue) is kernels/common/flash_decode_cta.cuh, shared
 * with the Turing entries of kernels/sm75/flash_decode_sm75.cu.
 */
#include "params.h"
#include "decode_table.h"
#include "common/flash_decode_cta.cuh"

/* One entry point per decode_table.h row: flashmha_decode_<dtype>[_fp8]_d<head_dim>[_r32] (_fp8:
 * kv_bytes 1; _r32: 32-row tiles). */
#define FLASHMHA_DECODE_ENTRY_NAME_2_16(dtype, head_dim) flashmha_decode_##dtype##_d##head_dim
#define FLASHMHA_DECODE_ENTRY_NAME_1_16(dtype, head_dim) flashmha_decode_##dtype##_fp8_d##head_dim
#define FLASHMHA_DECODE_ENTRY_NAME_2_32(dtype, head_dim) flashmha_decode_##dtype##_d##head_dim##_r32
#define FLASHMHA_DEFINE_DECODE_ENTRY(dtype, kv_bytes, head_dim, tile_rows, num_warps, smem_bytes)  \
    extern "C" __global__ void __launch_bounds__((num_warps) * flashmha::kWarpSize)                 \
        FLASHMHA_DECODE_ENTRY_NAME_##kv_bytes##_##tile_rows(dtype,                                  \
                                                            head_dim)(const FlashDecodeParams params) { \
        using Traits = flashmha::DecodeTraits<flashmha::Elem_##dtype, head_dim, num_warps,         \
                                              kv_bytes, tile_rows>;                                 \
        static_assert(Traits::kSmemBytes == (smem_bytes),                                           \
                      "decode_table.h smem_bytes must equal the traits' shared-memory layout");     \
        flashmha::flash_decode_cta<Traits>(params);                                                 \
    }

FLASHMHA_DECODE_KERNELS(FLASHMHA_DEFINE_DECODE_ENTRY)
