/*
 * decode_table.h: the one list of paged-decode kernel instantiations (kernels/flash_decode.cu).
 * CUDA includes it to define the extern "C" entry points; build/decode_table.rs parses it to
 * generate the Rust registry (src/decode/kernels.rs), so an entry exists on both sides or on
 * neither. Keep one entry per line.
 *
 * X(dtype, head_dim, num_warps, smem_bytes)
 *   dtype       f16 | bf16 (q, o and the K/V cache pages)
 *   head_dim    compiled head dimension d
 *   num_warps   warps per CTA; each streams its own 16-key blocks (DecodeTraits)
 *   smem_bytes  dynamic shared memory = Q tile + num_warps x 2 stages x (K + V) blocks + stats,
 *               rows padded to 2d + 16 bytes; the kernel static_asserts the same number.
 * The entry is named flashmha_decode_<dtype>_d<head_dim>.
 *
 * Warps: 4 everywhere except d256, where 4 warps x 2 stages x (K + V) x 16 x 528 B would exceed
 * the 101376 B of sm_86 / sm_89, so d256 runs 2 warps.
 */
#ifndef FLASHMHA_DECODE_TABLE_H
#define FLASHMHA_DECODE_TABLE_H

#define FLASHMHA_DECODE_KERNELS(X) \
    X(f16, 32, 4, 22272) \
    X(bf16, 32, 4, 22272) \
    X(f16, 64, 4, 39680) \
    X(bf16, 64, 4, 39680) \
    X(f16, 80, 4, 48384) \
    X(bf16, 80, 4, 48384) \
    X(f16, 96, 4, 57088) \
    X(bf16, 96, 4, 57088) \
    X(f16, 128, 4, 74496) \
    X(bf16, 128, 4, 74496) \
    X(f16, 256, 2, 76288) \
    X(bf16, 256, 2, 76288)

#endif /* FLASHMHA_DECODE_TABLE_H */
