/*
 * flash_decode.cu: the Ampere-and-newer (compute_80 PTX, sm_80..sm_90 cubins) paged-decode entry
 * points: attention of new query tokens over a paged KV cache (decode, speculative decode,
 * chunked prefill), with GQA packing and split-KV, one entry per FLASHMHA_DECODE_KERNELS row
 * of kernels/kernel_table.h. Key blocks are copied by cp.async into two per-warp stages; the CTA
 * body (work split, masks, FP8 pages, epilogue) is kernels/common/flash_decode_cta.cuh, shared
 * with the Turing entries of kernels/sm75/flash_decode_sm75.cu.
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_decode_cta.cuh"

/* The entries' __launch_bounds__ minimum of CTAs per SM. d32: its 22 KB tile makes ptxas 13.5 on
 * sm_90 / sm_100 aim at 4 CTAs per SM (128 registers), where the bounded key loop of issue 23
 * spills 8 B; with a hint of 3 it allocates 115 registers, 0 spills. The others: 2. Without a
 * hint ptxas aims some rows at 3 CTAs (168 registers) and, with the key loop's block-table entry
 * fetched a block ahead, spills 8-20 B (d96 on sm_90, FP8 d64 on sm_86, FP8 d128 on sm_120);
 * their shared memory holds at most 2 per SM of the smallest sm_80+ SM anyway (DecodeTraits). */
constexpr int decode_min_ctas_per_sm(int head_dim) { return head_dim == 32 ? 3 : 2; }

/* flashmha_decode_<dtype>[_fp8]_d<head_dim>[_r32] (_fp8: kv_bytes 1; _r32: 32-row tiles). */
#define FLASHMHA_DECODE_ENTRY_NAME_2_16(dtype, head_dim) flashmha_decode_##dtype##_d##head_dim
#define FLASHMHA_DECODE_ENTRY_NAME_1_16(dtype, head_dim) flashmha_decode_##dtype##_fp8_d##head_dim
#define FLASHMHA_DECODE_ENTRY_NAME_2_32(dtype, head_dim) flashmha_decode_##dtype##_d##head_dim##_r32
#undef FLASHMHA_DECODE_KERNELS
#define FLASHMHA_DECODE_KERNELS(dtype, head_dim, tile_rows, block_n, num_warps, kv_bytes,          \
                                smem_bytes)                                                        \
    static_assert((block_n) == flashmha::kDecodeKeysPerBlock,                                      \
                  "kernel_table.h block_n of a decode row is the warp's key block");               \
    FLASHMHA_DEFINE_ENTRY(FLASHMHA_DECODE_ENTRY_NAME_##kv_bytes##_##tile_rows(dtype, head_dim),    \
                          ((num_warps) * flashmha::kWarpSize, decode_min_ctas_per_sm(head_dim)),   \
                          const FlashDecodeParams,                                                 \
                          flash_decode_cta, smem_bytes,                                            \
                          flashmha::DecodeTraits<flashmha::Elem_##dtype, head_dim, num_warps,      \
                                                 kv_bytes, tile_rows>)

/* flashmha_decode_<dtype>_d<head_dim>v<head_dim_v>: d_v != d_qk over 16-bit pages (DecodeTraits'
 * kHeadDimV; kernel_table.h, FLASHMHA_DECODE_DV_KERNELS). */
#undef FLASHMHA_DECODE_DV_KERNELS
#define FLASHMHA_DECODE_DV_KERNELS(dtype, head_dim, head_dim_v, tile_rows, block_n, num_warps,     \
                                   kv_bytes, smem_bytes)                                           \
    static_assert((block_n) == flashmha::kDecodeKeysPerBlock && (kv_bytes) == 2,                   \
                  "kernel_table.h: a d_v decode row streams 16-key blocks of 16-bit pages");       \
    FLASHMHA_DEFINE_ENTRY(flashmha_decode_##dtype##_d##head_dim##v##head_dim_v,                    \
                          ((num_warps) * flashmha::kWarpSize, decode_min_ctas_per_sm(head_dim)),   \
                          const FlashDecodeParams, flash_decode_cta, smem_bytes,                   \
                          flashmha::DecodeTraits<flashmha::Elem_##dtype, head_dim, num_warps,      \
                                                 kv_bytes, tile_rows, flashmha::LoadPath::CpAsync, \
                                                 head_dim_v>)

FLASHMHA_KERNELS(FLASHMHA_KERNEL_ROW)
