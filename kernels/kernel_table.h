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
 *
 * Tile choices (kernels/flash_fwd.cu, kernels/common/fwd_traits.cuh). block_m = 64 (4 warps x 16
 * rows) everywhere; smem = Q tile + 2 stages x (K + V) tiles = 2 * d * (64 + 4 * block_n) bytes.
 * block_n is the one that minimises main-loop PTX instructions per key (runtime features off, as
 * the emulator counts them) among the shapes that fit 101376 B of shared memory (sm_86/sm_89) and
 * stay <= 232 registers (10% below the 255 cap) with 0 spills on sm_80/86/89/90. Measured with
 * nvcc/ptxas 13.5 (regs are sm_80/sm_86/sm_89/sm_90; instr/key = PTX instructions of one main-loop
 * tile / block_n; "Q smem" = Q fragments re-read per k-step, see FwdTraits::kQInRegisters):
 *   d   block_n  smem    regs             instr/key  note
 *   32   64      20480   128/128/128/128  4.21
 *   32  128      36864   168/168/168/167  3.67      chosen
 *   64   64      40960   167/167/167/168  5.34
 *   64  128      73728   223/223/223/222  4.70      chosen (Q smem; 255 regs with Q in registers)
 *   80   32      30720   167/168/168/166  7.86
 *   80   64      51200   173/178/178/179  5.90      chosen
 *   80  128      92160   255/255/255/255  5.21      over the register budget
 *   96   32      36864   168/168/168/168  8.09
 *   96   64      61440   180/179/179/179  6.55      chosen (Q smem; 233 regs in registers)
 *   96  128     110592   -                -         does not fit shared memory
 *  128   32      49152   168/168/168/168  9.72      (Q smem)
 *  128   64      81920   175/174/174/177  7.71      chosen (Q smem; 241 regs in registers)
 *  256   16      40960   244/244/244/246  21.69
 *  256   32      98304   249/244/244/249  15.47     chosen (only 32 fits; over 232 but 0 spills)
 * bf16 rows measure the same as f16 (same registers and instruction counts).
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
