/*
 * kernel_table.h: the one list of forward-attention kernel instantiations. CUDA includes it to
 * define the extern "C" entry points; build.rs parses it to generate the Rust kernel registry,
 * so an entry exists on both sides or on neither.
 *
 * X(dtype, head_dim, block_m, block_n, num_warps, smem_bytes)
 *   dtype       f16 | bf16 (the element type of q, k, v, o)
 *   head_dim    compiled head dimension d
 *   block_m     query rows per CTA: num_warps x 16 x (m16 row blocks per warp)
 *   block_n     key/value rows per main-loop tile
 *   num_warps   warps per CTA
 *   smem_bytes  dynamic shared memory the kernel needs; the kernel static_asserts that its own
 *               layout computes the same number, so host and device cannot drift apart.
 * The entry is named flashmha_fwd_<dtype>_d<head_dim>.
 * Keep one entry per line: build.rs reads this file line by line. Add a row only once the
 * kernel defines its entry: the build fails when a listed entry is missing.
 *
 * Tile choices (kernels/sm80/flash_fwd.cu, kernels/common/fwd_traits.cuh; issue 8). Each warp owns
 * two m16 row blocks (block_m = 128, 4 warps x 32 rows), so every K / V fragment read from
 * shared memory feeds two mma; d256 keeps one row block per warp (64 x 32): at 32 rows its f32 O
 * accumulator alone would need 256 registers per thread. smem = Q tile + 2 stages x (K + V) =
 * 2 * d * (block_m + 4 * block_n) bytes <= 101376 (sm_86 / sm_89). Q stays in registers when the
 * resident accumulators (FwdTraits::kResidentRegs) fit kResidentRegBudget = 208, else each k-step
 * re-reads its Q fragments. block_n is the largest that keeps 0 spill bytes on sm_80/86/89/90
 * with the best ldmatrix/mma. Measured on the emulator with q/k/v drawn from N(0, 1) (`flashmha
 * bench --tiles`, bench/results/fwd_tiles_{f16,bf16}.txt), nvcc/ptxas 13.5, f16 (bf16 within
 * 0.01), per m16n8k16 mma, on two bases never mixed: main loop = key doubling (sq = block_m,
 * sk 1024 -> 2048); whole run = the sk 2048 launch's totals, the basis of FlashAttention-2's
 * recorded figures (bench/results/fwd_tiles_before.tsv), which are given beside it:
 *   d   tile      Q     regs 80/86/89/90  main loop: ldsm  wf     non-tensor  whole run: ldsm  wf     non-tensor  (FA2 whole run: tile, ldsm, wf, non-tensor)
 *   32  128x128   regs  254/255/255/254   0.250            1.250  5.96        0.252            1.281  6.41        (128x128: 0.281, 1.40, 6.91)
 *   64  128x64    regs  255/255/255/255   0.250            1.250  3.78        0.252            1.281  4.17        (128x128: 0.281, 1.40, 3.80)
 *   80  128x64    regs  255/255/255/255   0.250            1.250  3.15        0.252            1.281  3.58
 *   96  128x32    regs  255/255/255/255   0.250            1.250  3.41        0.252            1.281  3.92
 *  128  128x64    smem  255/255/255/255   0.3125           1.500  2.33        0.3125           1.523  2.65        (128x64:  0.3125, 1.52, 2.72)
 *  256   64x32    regs  254/254/254/254   0.500            2.500  2.23        0.502            2.531  2.64        (128x64/8w: 0.5625, 2.52, 2.29)
 * Non-tensor counts depend on the inputs (uniform [-1, 1) skips more O rescales: d64 main loop
 * 3.73); the FA2 figures' input distribution was not recorded.
 * Wavefronts equal the conflict-free ideal everywhere; 0 spill bytes everywhere. Rejected (main
 * loop, ptxas 13.5, sm_80 unless said): d64 128x128 (Q smem, 0.281 ldsm/mma, 1.375 wf/mma: worse than 128x64
 * with Q in registers); d96 128x64 (Q smem, 0.3125 ldsm/mma, spills 8 B on sm_90); d128 128x64 with
 * the P pack after both row blocks' softmax (spills 20-36 B: packing each row block right after
 * its softmax is what keeps d128 at 0 spills); d256 at 32 rows per warp (does not fit registers).
 * Before issue 8 (block_m 64, one row block per warp), main loop: 0.50-0.625 ldsm/mma, 2.53-3.02
 * wf/mma.
 */
#ifndef FLASHMHA_KERNEL_TABLE_H
#define FLASHMHA_KERNEL_TABLE_H

#define FLASHMHA_FWD_KERNELS(X) \
    X(f16, 32, 128, 128, 4, 40960) \
    X(bf16, 32, 128, 128, 4, 40960) \
    X(f16, 64, 128, 64, 4, 49152) \
    X(bf16, 64, 128, 64, 4, 49152) \
    X(f16, 80, 128, 64, 4, 61440) \
    X(bf16, 80, 128, 64, 4, 61440) \
    X(f16, 96, 128, 32, 4, 49152) \
    X(bf16, 96, 128, 32, 4, 49152) \
    X(f16, 128, 128, 64, 4, 98304) \
    X(bf16, 128, 128, 64, 4, 98304) \
    X(f16, 256, 64, 32, 4, 98304) \
    X(bf16, 256, 64, 32, 4, 98304)

/*
 * Turing (sm_75; kernels/sm75/flash_fwd_sm75.cu), f16 only: the same X(...) columns, entries
 * named flashmha_fwd_sm75_<dtype>_d<head_dim>. K / V are register-staged into ONE shared stage,
 * so smem = Q tile + K + V = 2 * d * (block_m + 2 * block_n) bytes <= 65536 (sm_75's whole
 * 64 KiB per SM). One staged K or V tile (4 registers per 16-byte chunk per thread) is live next
 * to S and O, so tiles are smaller than on Ampere. Each is among the largest with 0 spill bytes
 * under ptxas 13.5 sm_75 (registers 241 / 255 / 244 / 214 / 252 for d32 .. d128). Rejected for
 * spills: d32 128x128 (100 B), d80 128x64 (168 B), d96 128x32 (28 B), d128 128x32 (104 B) and
 * 64x64 (8 B), d256 64x32 (156 B) and 64x16 (88 B): there is no 0-spill d256 tile with 4 warps
 * on sm_75, so d256 is not offered there (a typed error). d128: 128x16 (two row blocks per warp,
 * 40960 B: one CTA per SM) against 64x32 (one row block, 32768 B: two CTAs), modelled on T4
 * (`flashmha bench --model t4 --dtype f16`, 1024 x 1024, hidden 2048): tensor 2143 us for both;
 * DRAM 3775 against 7130 us when every K/V re-read is charged to DRAM (the model's upper bound:
 * T4's 4 MB L2 holds the K/V of fewer heads than are in flight), so 56% against 30% of the
 * tensor peak; smem 1231 / 1373, FP32 819 / 513, issue 1100 / 910 us: both tensor-bound when the
 * re-reads hit L2. d96 keeps 64x32 (214 registers, 24576 B; 128x16 also has 0 spills).
 */
#define FLASHMHA_FWD_KERNELS_SM75(X) \
    X(f16, 32, 128, 64, 4, 16384) \
    X(f16, 64, 128, 64, 4, 32768) \
    X(f16, 80, 128, 32, 4, 30720) \
    X(f16, 96, 64, 32, 4, 24576) \
    X(f16, 128, 128, 16, 4, 40960)

/*
 * Hopper (sm_90a; kernels/sm90/flash_fwd_sm90.cu): TMA + wgmma + mbarrier, f16 and bf16, entries
 * named flashmha_fwd_sm90_<dtype>_d<head_dim>, the same X(...) columns. One producer warpgroup
 * (one thread issues the TMA loads) and block_m / 64 consumer warpgroups of 64 query rows each.
 * smem = Q tile + 2 stages x (K + V) + the mbarrier block = 2 * d * (block_m + 4 * block_n) + 128
 * bytes <= 232448 (sm_90's 227 KiB). ptxas 13.5 sm_90a allocates the whole 384-thread kernel
 * within 168 registers (setmaxnreg moves registers at run time, not at allocation): d64 and d128
 * 128 x 128 / 12 warps use 168 with 0 spills; d256 128 x 64 / 12 warps spilled 20 bytes, so d256
 * runs one consumer (64 x 64 / 8 warps, up to 255 registers). Head dims other than these run the
 * Ampere kernels on sm_90.
 */
#define FLASHMHA_FWD_KERNELS_SM90(X) \
    X(f16, 64, 128, 128, 12, 82048) \
    X(bf16, 64, 128, 128, 12, 82048) \
    X(f16, 128, 128, 128, 12, 163968) \
    X(bf16, 128, 128, 128, 12, 163968) \
    X(f16, 256, 64, 64, 8, 163968) \
    X(bf16, 256, 64, 64, 8, 163968)

#endif /* FLASHMHA_KERNEL_TABLE_H */
