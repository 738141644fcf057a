/*
 * flash_decode_sm75.cu: the Turing paged-decode entry points (compute_75 PTX, sm_75 cubin), one
 * per row of FLASHMHA_DECODE_KERNELS_SM75 in kernels/decode_table.h: f16 queries over f16 pages
 * only (sm_75 has no bf16 mma; FP8 pages are an Ampere feature), key blocks register-staged into
 * one per-warp shared-memory stage (no cp.async on sm_75), each k16 step two mma.m16n8k8
 * (kernels/common/mma.cuh). The CTA body is the Ampere one (kernels/common/flash_decode_cta.cuh),
 * so masks, softcap, ALiBi, GQA packing, split-KV, varlen, LSE and entropy behave identically.
 */
#include "params.h"
#include "decode_table.h"
#include "common/flash_decode_cta.cuh"

/* One entry point per FLASHMHA_DECODE_KERNELS_SM75 row: flashmha_decode_sm75_<dtype>_d<head_dim>
 * [_r32] (kv_bytes is always 2 here). */
#define FLASHMHA_DECODE_SM75_ENTRY_NAME_16(dtype, head_dim) flashmha_decode_sm75_##dtype##_d##head_dim
#define FLASHMHA_DECODE_SM75_ENTRY_NAME_32(dtype, head_dim)                                         \
    flashmha_decode_sm75_##dtype##_d##head_dim##_r32
#define FLASHMHA_DEFINE_DECODE_SM75_ENTRY(dtype, kv_bytes, head_dim, tile_rows, num_warps,          \
                                          smem_bytes)                                               \
    extern "C" __global__ void __launch_bounds__((num_warps) * flashmha::kWarpSize)                 \
        FLASHMHA_DECODE_SM75_ENTRY_NAME_##tile_rows(dtype, head_dim)(const FlashDecodeParams params) { \
        static_assert((kv_bytes) == 2, "Turing decode reads 16-bit pages only");                     \
        using Traits = flashmha::DecodeTraits<flashmha::Elem_##dtype, head_dim, num_warps,         \
                                              kv_bytes, tile_rows,                                  \
                                              flashmha::LoadPath::RegisterStaged>;                  \
        static_assert(Traits::kSmemBytes == (smem_bytes),                                           \
                      "decode_table.h smem_bytes must equal the traits' shared-memory layout");     \
        flashmha::flash_decode_cta<Traits>(params);                                                 \
    }

FLASHMHA_DECODE_KERNELS_SM75(FLASHMHA_DEFINE_DECODE_SM75_ENTRY)
