/*
 * decode_table.h: the one list of paged-decode kernel instantiations (kernels/sm80/flash_decode.cu).
 * CUDA includes it to define the extern "C" entry points; build/decode_table.rs parses it to
 * generate the Rust registry (src/ops/decode/kernels.rs), so an entry exists on both sides or on
 * neither. Keep one entry per line.
 *
 * X(dtype, kv_bytes, head_dim, tile_rows, num_warps, smem_bytes)
 *   dtype       f16 | bf16 (q and o; the K/V cache pages too when kv_bytes is 2)
 *   kv_bytes    bytes per cached K/V element: 2 (the dtype) or 1 (FP8 codes, e4m3 or e5m2 chosen
 *               at run time by FlashDecodeParams.kv_format, dequantised in the kernel with
 *               integer arithmetic: kernels/common/fp8.cuh)
 *   head_dim    compiled head dimension d (FP8: a multiple of 32, see DecodeTraits)
 *   tile_rows   packed query rows (GQA group x new tokens) per CTA: 16 (one m16 row block per
 *               warp) or 32 (two; the plan picks it when an item has more than 16 rows per KV
 *               head, so K/V pass through each CTA once for up to 32 rows; 16-bit pages only)
 *   num_warps   warps per CTA; each streams its own 16-key blocks (DecodeTraits)
 *   smem_bytes  dynamic shared memory = Q tile + num_warps x 2 stages x (K + V) blocks + stats,
 *               rows padded by 16 bytes (Q: 2d + 16, K/V: kv_bytes x d + 16); the kernel
 *               static_asserts the same number.
 * The entry is named flashmha_decode_<dtype>[_fp8]_d<head_dim>[_r32] (_fp8 for kv_bytes 1, _r32
 * for 32-row tiles).
 *
 * Warps: 4 everywhere except d256, where 4 warps x 2 stages x (K + V) x 16 x 528 B would exceed
 * the 101376 B of sm_86 / sm_89, so d256 runs 2 warps; FP8 pages halve the K/V blocks, so FP8
 * d256 keeps 4. FP8 is compiled for the common LLM head dims 64, 128 and 256 only (each entry
 * adds ptxas time for 4 architectures; d80 cannot split a 5-chunk FP8 row over a lane pair);
 * 32-row tiles for d64 and d128 (the GQA-8 shapes of the common models; d256 would need 256
 * accumulator registers per thread).
 */
#ifndef FLASHMHA_DECODE_TABLE_H
#define FLASHMHA_DECODE_TABLE_H

#define FLASHMHA_DECODE_KERNELS(X) \
    X(f16, 2, 32, 16, 4, 22272) \
    X(bf16, 2, 32, 16, 4, 22272) \
    X(f16, 2, 64, 16, 4, 39680) \
    X(bf16, 2, 64, 16, 4, 39680) \
    X(f16, 2, 80, 16, 4, 48384) \
    X(bf16, 2, 80, 16, 4, 48384) \
    X(f16, 2, 96, 16, 4, 57088) \
    X(bf16, 2, 96, 16, 4, 57088) \
    X(f16, 2, 128, 16, 4, 74496) \
    X(bf16, 2, 128, 16, 4, 74496) \
    X(f16, 2, 256, 16, 2, 76288) \
    X(bf16, 2, 256, 16, 2, 76288) \
    X(f16, 1, 64, 16, 4, 23296) \
    X(bf16, 1, 64, 16, 4, 23296) \
    X(f16, 1, 128, 16, 4, 41728) \
    X(bf16, 1, 128, 16, 4, 41728) \
    X(f16, 1, 256, 16, 4, 78592) \
    X(bf16, 1, 256, 16, 4, 78592) \
    X(f16, 2, 64, 32, 4, 42496) \
    X(bf16, 2, 64, 32, 4, 42496) \
    X(f16, 2, 128, 32, 4, 79360) \
    X(bf16, 2, 128, 32, 4, 79360)

/*
 * Turing (sm_75; kernels/sm75/flash_decode_sm75.cu), f16 with 16-bit pages only: the same X(...)
 * columns, entries named flashmha_decode_sm75_f16_d<head_dim>[_r32]. Key blocks are
 * register-staged into ONE shared stage per warp, so smem = Q tile + num_warps x max(K + V
 * block, O staging) + stats <= 65536 (sm_75's 64 KiB). One staged K or V row (4 registers per
 * 16-byte chunk of the lane) is live next to O and S. Registers under ptxas 13.5 sm_75, 0 spills:
 * 96 / 144 / 160 / 175 / 211 for d32 .. d128, 211 for d64 r32. Rejected for spills: d256 with
 * 2 warps (148 B: 64 staged registers next to 128 of O), so d256 is not offered on Turing (a
 * typed error); d128 r32 would need 78336 B of shared memory (4 warps x 17408 B of O staging + Q).
 */
#define FLASHMHA_DECODE_KERNELS_SM75(X) \
    X(f16, 2, 32, 16, 4, 12032) \
    X(f16, 2, 64, 16, 4, 21248) \
    X(f16, 2, 80, 16, 4, 25856) \
    X(f16, 2, 96, 16, 4, 30464) \
    X(f16, 2, 128, 16, 4, 39680) \
    X(f16, 2, 64, 32, 4, 42496)

#endif /* FLASHMHA_DECODE_TABLE_H */
