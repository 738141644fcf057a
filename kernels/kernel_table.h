/*
 * kernel_table.h: the one list of forward-attention kernel instantiations. CUDA includes it to
 * define the extern "C" entry points; build.rs parses it to generate the Rust kernel registry,
 * so an entry exists on both sides or on neither.
 *
 * X(dtype, head_dim, block_m, block_n, num_warps, smem_bytes)
 *   dtype       f16 | bf16 (the element type of q, k, v, o)
 *   head_dim    compiled head dimension d
 *   block_m     query rows per CTA (num_warps x 16: one m16n8k16 row block per warp)
 *   block_n     key/value rows per main-loop tile
 *   num_warps   warps per CTA
 *   smem_bytes  dynamic shared memory the kernel needs; the kernel static_asserts that its own
 *               layout computes the same number, so host and device cannot drift apart.
 * The entry is named flashmha_fwd_<dtype>_d<head_dim>.
 * Keep one entry per line: build.rs reads this file line by line. Add a row only once the
 * kernel defines its entry: the build fails when a listed entry is missing.
 */
#ifndef FLASHMHA_KERNEL_TABLE_H
#define FLASHMHA_KERNEL_TABLE_H

#define FLASHMHA_FWD_KERNELS(X) \
    X(f16, 32, 64, 128, 4, 36864) \
    X(bf16, 32, 64, 128, 4, 36864) \
    X(f16, 64, 64, 128, 4, 73728) \
    X(bf16, 64, 64, 128, 4, 73728) \
    X(f16, 80, 64, 64, 4, 51200) \
    X(bf16, 80, 64, 64, 4, 51200) \
    X(f16, 96, 64, 64, 4, 61440) \
    X(bf16, 96, 64, 64, 4, 61440) \
    X(f16, 128, 64, 64, 4, 81920) \
    X(bf16, 128, 64, 64, 4, 81920) \
    X(f16, 256, 64, 32, 4, 98304) \
    X(bf16, 256, 64, 32, 4, 98304)

#endif /* FLASHMHA_KERNEL_TABLE_H */
