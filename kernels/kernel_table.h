/*
 * kernel_table.h: the one list of attention kernel instantiations, forward and paged decode, on
 * every target. CUDA includes it to define the extern "C" entry points; build.rs reads it
 * (build/kernel_table.rs) to generate the Rust registries (src/common/build_info.rs,
 * src/ops/decode/kernels.rs), so an entry exists on both sides or on neither. Keep one row per
 * line: build/kernel_table.rs reads this file line by line. Add a row only once the kernel
 * defines its entry: the build fails when a listed entry is missing.
 *
 * X(group, dtypes, head_dim, rows, block_n, num_warps, kv_bytes, smem_bytes)
 *   group       the entry family, named by its row hook below, and the entries it defines:
 *                 FLASHMHA_FWD_KERNELS          forward, Ampere and newer
 *                                               (kernels/sm80/flash_fwd.cu):
 *                                               flashmha_fwd_<dtype>_d<head_dim>
 *                 FLASHMHA_FWD_KERNELS_SM75     forward, Turing (kernels/sm75/flash_fwd_sm75.cu):
 *                                               flashmha_fwd_sm75_<dtype>_d<head_dim>
 *                 FLASHMHA_FWD_KERNELS_SM90     forward, Hopper (kernels/sm90/flash_fwd_sm90.cu):
 *                                               flashmha_fwd_sm90_<dtype>_d<head_dim>
 *                 FLASHMHA_DECODE_KERNELS       paged decode, Ampere and newer
 *                                               (kernels/sm80/flash_decode.cu):
 *                                               flashmha_decode_<dtype>[_fp8]_d<head_dim>[_r32]
 *                 FLASHMHA_DECODE_KERNELS_SM75  paged decode, Turing
 *                                               (kernels/sm75/flash_decode_sm75.cu):
 *                                               flashmha_decode_sm75_<dtype>_d<head_dim>[_r32]
 *                 FLASHMHA_FWD_DV_KERNELS       forward with d_v != d_qk (issue 23), Ampere
 *                                               and newer (kernels/sm80/flash_fwd.cu):
 *                                               flashmha_fwd_<dtype>_d<head_dim>v<head_dim_v>
 *                 FLASHMHA_FWD_DV_KERNELS_SM90  forward with d_v != d_qk, Hopper
 *                                               (kernels/sm90/flash_fwd_sm90.cu):
 *                                               flashmha_fwd_sm90_<dtype>_d<head_dim>v<head_dim_v>
 *                 FLASHMHA_FWD_TILE_KERNELS     forward, Ampere and newer, at a tile other than
 *                                               its head dim's primary row (issue 20; the
 *                                               plan's choice per SM, src/ops/forward/plan.rs)
 *                                               (kernels/sm80/flash_fwd_tiles.cu):
 *                                               flashmha_fwd_<dtype>_d<head_dim>_<rows>x<block_n>
 *                                               w<num_warps>s<kv_stages>c<min_ctas>
 *                 FLASHMHA_DECODE_DV_KERNELS    paged decode with d_v != d_qk, Ampere and newer
 *                                               (kernels/sm80/flash_decode.cu):
 *                                               flashmha_decode_<dtype>_d<head_dim>v<head_dim_v>
 *               (_fp8 for kv_bytes 1, _r32 for 32-row tiles)
 *   Rows of a *_DV_* group carry one more column after head_dim: head_dim_v (d_v of V and O;
 *   head_dim is d_qk of Q and K). Every other row has d_v = d_qk.
 *   Rows of FLASHMHA_FWD_TILE_KERNELS carry kv_stages (K / V shared-memory stages, 1 or 2) in
 *   place of kv_bytes (2, as every forward row), then min_ctas (CTAs per SM the launch bounds
 *   ask ptxas to fit).
 *   dtypes      f16, or f16_bf16 for two rows alike but for the dtype (f16 first): the element
 *               type of q and o, and of the K / V pages when kv_bytes is 2
 *   head_dim    compiled head dimension d (decode FP8: a multiple of 32, see DecodeTraits)
 *   rows        query rows per CTA. Forward: block_m = num_warps x 16 x (m16 row blocks per
 *               warp). Decode: packed query rows (GQA group x new tokens), 16 (one m16 row block
 *               per warp) or 32 (two; the plan picks it when an item has more than 16 rows per KV
 *               head, so K/V pass through each CTA once for up to 32 rows; 16-bit pages only)
 *   block_n     keys per main-loop tile; decode: 16, each warp streams its own 16-key blocks
 *               (kDecodeKeysPerBlock, kernels/common/decode_traits.cuh)
 *   num_warps   warps per CTA
 *   kv_bytes    bytes per cached K/V element: 2 (the dtype; every forward row) or 1 (decode
 *               over FP8 codes, e4m3 or e5m2 chosen at run time by FlashDecodeParams.kv_format,
 *               dequantised in the kernel with integer arithmetic: kernels/common/fp8.cuh)
 *   smem_bytes  dynamic shared memory the kernel needs; the entry static_asserts that its traits'
 *               layout computes the same number, so host and device cannot drift apart.
 *
 * ---- Forward ------------------------------------------------------------------------------
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
 * recorded figures (bench/results/fwd_tiles_before.tsv), which are given beside it (d64 / d128
 * after issue 23's short loop; registers for sm_80/86/89/90/100/120 as `flashmha info` lists them):
 *   d   tile      Q     regs 80/86/89/90/100/120  main loop: ldsm  wf     non-tensor  whole run: ldsm  wf     non-tensor  (FA2 whole run: tile, ldsm, wf, non-tensor)
 *   32  128x128   regs  254/255/255/254/255/255   0.250            1.250  5.96        0.252            1.281  6.41        (128x128: 0.281, 1.40, 6.91)
 *   64  128x64    regs  255/255/255/254/244/244   0.250            1.250  3.73        0.252            1.281  4.14        (128x128: 0.281, 1.40, 3.80)
 *   80  128x64    regs  255/255/255/255/255/255   0.250            1.250  3.15        0.252            1.281  3.58
 *   96  128x32    regs  255/255/255/255/254/255   0.250            1.250  3.41        0.252            1.281  3.92
 *  128  128x64    smem  255/255/255/255/255/255   0.3125           1.500  2.32        0.3125           1.523  2.66        (128x64:  0.3125, 1.52, 2.72)
 *  256   64x32    regs  255/255/255/255/255/255   0.500            2.500  2.17        0.502            2.531  2.59        (128x64/8w: 0.5625, 2.52, 2.29)
 * Non-tensor counts depend on the inputs (uniform [-1, 1) skips more O rescales: d64 main loop
 * 3.73); the FA2 figures' input distribution was not recorded.
 * Wavefronts equal the conflict-free ideal everywhere; 0 spill bytes everywhere. Rejected (main
 * loop, ptxas 13.5, sm_80 unless said): d64 128x128 (Q smem, 0.281 ldsm/mma, 1.375 wf/mma: worse than 128x64
 * with Q in registers); d96 128x64 (Q smem, 0.3125 ldsm/mma, spills 8 B on sm_90); d128 128x64 with
 * the P pack after both row blocks' softmax (spills 20-36 B: packing each row block right after
 * its softmax is what keeps d128 at 0 spills); d256 at 32 rows per warp (does not fit registers).
 * Before issue 8 (block_m 64, one row block per warp), main loop: 0.50-0.625 ldsm/mma, 2.53-3.02
 * wf/mma.
 *
 * Retile (issue 20; FLASHMHA_FWD_TILE_KERNELS, kernels/sm80/flash_fwd_tiles.cu): candidates
 * compiled as rows and ranked by the SM simulation (src/perf_model/timing.rs, scheduling window
 * 16; modelled, calibration in bench/results/fa2_calibration.md) on the benchmark configurations
 * (bf16, hidden 2048, 16k tokens, seqlen 512 .. 16k, causal and not: 12 per head dim;
 * `flashmha bench --model a100,h100,a10,l4 --head-dims 64,128,256 --candidates`,
 * bench/results/fwd_candidates_bf16.txt). Predicted time / the primary row's, min - max over the
 * 12 configurations; registers sm_80/86/89/90/100/120 (ptxas 13.5); CTAs per SM A100 / H100 /
 * L4 (A10: every tile of a head dim predicts the same time, the DRAM floor binds):
 *   d    tile               smem   regs                     CTAs       A100         H100 (mma.sync)  L4           verdict
 *   128  128x64 1 stage     65536  255 (all six)            2 / 2 / 1  0.741-0.750  0.979-0.983      0.998-1.000  shipped
 *   128  128x64/8w 2 stage  98304  255/218/218/236/218/230  1 / 1 / 1  0.802-0.839  1.035-1.130      0.850-1.000  shipped (L4)
 *   256  64x32 1 stage      65536  255 (all six)            2 / 2 / 1  0.748-0.787  0.971-1.000      0.998-1.000  shipped
 *   128  128x32 1 stage     49152  247/245/245/248/-/240    2 / 2 / 2  0.831-0.853  1.084-1.113      -            dropped
 *   64   128x64/8w 2 stage, 128 registers (launch bounds 2 CTAs): 16 warps per SM
 *                           49152  128 (all six)            2 / 2 / 2  1.012-1.078  0.971-1.066      0.987-1.025  dropped
 *   64   128x64/8w 2 stage  49152  173/184/184/187/-/182    1 / 1 / 1  1.338-1.542  1.315-1.497      -            dropped
 * (- : not measured in that run.) The single-stage tiles double A100's residency (2 x 64 KB of
 * 164 KB) and save up to 2.9% on H100 at equal residency; they run one stage: V[n] lands while
 * S = Q K[n]^T runs and K[n+1] while O += P V[n] (kernels/common/flash_fwd_cta.cuh). The 8-warp
 * d128 tile gives the 100 KB parts two warps per scheduler (one 96 KB CTA at 218-230 registers).
 * The plan's rule (src/ops/forward/tile.rs, TileChoice::ForSm): the most resident warps per SM,
 * ties to the tile rows in table order, then the primary; it picks the fastest 0-spill tile on
 * every A100, H100 and L4 configuration above but ties (the d256 8k / 16k H100 rows at the
 * DRAM floor; L4 d128 512 causal). The primary rows stay for parts the rule does not know. Rejected for spills (ptxas 13.5):
 * d128 64x64 1 stage with 3 CTAs per SM (168 registers: 336 B on sm_80); the 128x64 1-stage
 * loop rolled (40 B on sm_120; unrolled by two, 0) and the d256 one unrolled (464 B on sm_90).
 *
 * Turing (sm_75; kernels/sm75/flash_fwd_sm75.cu), f16 only (sm_75 has no bf16 mma). K / V are
 * register-staged into ONE shared stage, so smem = Q tile + K + V = 2 * d * (block_m + 2 *
 * block_n) bytes <= 65536 (sm_75's whole 64 KiB per SM). One staged K or V tile (4 registers per
 * 16-byte chunk per thread) is live next to S and O, so tiles are smaller than on Ampere. Each is
 * among the largest with 0 spill bytes under ptxas 13.5 sm_75 (registers 241 / 255 / 244 / 214 /
 * 252 for d32 .. d128). Rejected for spills: d32 128x128 (100 B), d80 128x64 (168 B), d96 128x32
 * (28 B), d128 128x32 (104 B) and 64x64 (8 B), d256 64x32 (156 B) and 64x16 (88 B): there is no
 * 0-spill d256 tile with 4 warps on sm_75, so d256 is not offered there (a typed error). d128:
 * 128x16 (two row blocks per warp, 40960 B: one CTA per SM) against 64x32 (one row block, 32768 B:
 * two CTAs), modelled on T4 (`flashmha bench --model t4 --dtype f16`, 1024 x 1024, hidden 2048):
 * tensor 2143 us for both; DRAM 3775 against 7130 us when every K/V re-read is charged to DRAM
 * (the model's upper bound: T4's 4 MB L2 holds the K/V of fewer heads than are in flight), so 56%
 * against 30% of the tensor peak; smem 1231 / 1373, FP32 819 / 513, issue 1100 / 910 us: both
 * tensor-bound when the re-reads hit L2. d96 keeps 64x32 (214 registers, 24576 B; 128x16 also has
 * 0 spills).
 *
 * Hopper (sm_90a; kernels/sm90/flash_fwd_sm90.cu): TMA + wgmma + mbarrier, f16 and bf16. One
 * producer warpgroup (one thread issues the TMA loads) and block_m / 64 consumer warpgroups of 64
 * query rows each. smem = Q tile + 2 stages x (K + V) + the mbarrier block =
 * 2 * d * (block_m + 4 * block_n) + 128 bytes <= 232448 (sm_90's 227 KiB). ptxas 13.5 sm_90a
 * allocates the whole 384-thread kernel within 168 registers (setmaxnreg moves registers at run
 * time, not at allocation): d64 and d128 128 x 128 / 12 warps use 168 with 0 spills; d256 128 x 64
 * / 12 warps spilled 20 bytes, so d256 runs one consumer (64 x 64 / 8 warps, up to 255 registers).
 * Head dims other than these run the Ampere kernels on sm_90.
 *
 * Hopper d_qk != d_v (FLASHMHA_FWD_DV_KERNELS_SM90): K boxes of d_qk, V boxes of d_v and the
 * O += P V wgmma with N = d_v, 128 x 128 / 12 warps as d128. smem = Q + 2 stages x (K + V) +
 * 128 = 2 x 128 x d_qk + 2 x 2 x 128 x (d_qk + d_v) + 128: 192 / 128: 213120; 128 / 64: 131200.
 *
 * Head dims between the rows (issue 23): every multiple of 8 up to a target's widest row runs on
 * the narrowest row at least as wide, forward and 16-bit-page decode alike, its columns past d
 * zero-filled and never written. Where the real width leaves whole 16-column steps empty, a
 * second copy of the main loop skips them. The paged decode (every row) and the forward's d256
 * row (FwdTraits::kBoundedLoop) bound it at run time (codegen.cuh step_runs): the k16 steps of
 * Q K^T and the n16 pairs of P V stop at d rounded up to 16. The forward's d64 and d128 rows,
 * cp.async and Turing's (FwdTraits::kShortLoop), carry a copy one step short, fixed at compile
 * time: the dims they serve leave at most the last step empty (d40 / d48, d104 / d112), and a
 * run-time bound there spilled 4-24 B on sm_80 / sm_86. The sm_90a forward carries a copy per
 * wgmma N of O += P V, every 16 columns (FwdTraitsSm90::LoopWidth: 48 / 64, 112 / 128,
 * 144 .. 256), with S = Q K^T's k16 steps to match, fixed at compile time. tests/ops/head_dims.rs: every off-table forward and
 * decode within 1.1x of the real-width need. Chosen over compiled rows for d40 / d112 / d160 /
 * d192 / d224: no new entry, tile search or ptxas run per architecture, and the compiled width
 * keeps its own loop (its counters unchanged); an off-table CTA pays one uniform branch (per
 * 16-column step when bounded at run time).
 *
 * Head dims d_qk != d_v (issue 23; FLASHMHA_FWD_DV_KERNELS): the same CTA body with FwdTraits'
 * kHeadDimV: K tiles and the k16 steps of Q K^T from d_qk, V tiles, the n16 pairs of P V and the
 * O accumulator / staging from d_v (<= d_qk: O is staged in Q's tile). Such a row serves exactly
 * its pair. Tiles, under the same rules as the rows above (0 spills on sm_80/86/89/90/100,
 * smem <= 101376):
 *   192 / 128  128x32: smem 128 x 192 x 2 + 2 x 32 x (192 + 128) x 2 = 90112 (128x64 needs
 *              131072); Q re-read per k-step (resident O 128 + S 32 + Q 96 > 208)
 *   128 / 64   128x64: smem 32768 + 2 x 64 x (128 + 64) x 2 = 81920; Q in registers (O 64 +
 *              S 64 + Q 64 = 192 <= 208)
 *
 * ---- Paged decode -----------------------------------------------------------------------------
 *
 * smem = Q tile + num_warps x 2 stages x (K + V) blocks + stats, rows padded by 16 bytes (Q:
 * 2d + 16, K/V: kv_bytes x d + 16).
 * Warps: 4 everywhere except d256, where 4 warps x 2 stages x (K + V) x 16 x 528 B would exceed
 * the 101376 B of sm_86 / sm_89, so d256 runs 2 warps; FP8 pages halve the K/V blocks, so FP8
 * d256 keeps 4. FP8 is compiled for the common LLM head dims 64, 128 and 256 only (each entry
 * adds ptxas time for 4 architectures; d80 cannot split a 5-chunk FP8 row over a lane pair);
 * 32-row tiles for d64 and d128 (the GQA-8 shapes of the common models; d256 would need 256
 * accumulator registers per thread).
 *
 * d_qk != d_v (issue 23; FLASHMHA_DECODE_DV_KERNELS), 16-bit pages, 16-row tiles, 4 warps: K
 * pages hold d_qk elements per (slot, head), V pages d_v (two caches, each with its own strides);
 * K blocks [16, d_qk] and V blocks [16, d_v] each padded by 16 bytes per row. smem = Q 16 x
 * (2 d_qk + 16) + 4 warps x 2 stages x 16 x ((2 d_qk + 16) + (2 d_v + 16)) + stats 512:
 * 192 / 128: 6400 + 86016 + 512 = 92928; 128 / 64: 4352 + 53248 + 512 = 58112. Q re-read per
 * k16 step at d_qk 192 (as d256), in registers at 128. FP8 pages with d_v != d_qk: not compiled
 * (a typed error).
 *
 * Turing (sm_75; kernels/sm75/flash_decode_sm75.cu), f16 with 16-bit pages only. Key blocks are
 * register-staged into ONE shared stage per warp, so smem = Q tile + num_warps x max(K + V
 * block, O staging) + stats <= 65536 (sm_75's 64 KiB). One staged K or V row (4 registers per
 * 16-byte chunk of the lane) is live next to O and S. Registers under ptxas 13.5 sm_75, 0 spills:
 * 96 / 144 / 160 / 175 / 211 for d32 .. d128, 211 for d64 r32. Rejected for spills: d256 with
 * 2 warps (148 B: 64 staged registers next to 128 of O), so d256 is not offered on Turing (a
 * typed error); d128 r32 would need 78336 B of shared memory (4 warps x 17408 B of O staging + Q).
 */
#ifndef FLASHMHA_KERNEL_TABLE_H
#define FLASHMHA_KERNEL_TABLE_H

#define FLASHMHA_KERNELS(X) \
    X(FLASHMHA_FWD_KERNELS, f16_bf16, 32, 128, 128, 4, 2, 40960) \
    X(FLASHMHA_FWD_KERNELS, f16_bf16, 64, 128, 64, 4, 2, 49152) \
    X(FLASHMHA_FWD_KERNELS, f16_bf16, 80, 128, 64, 4, 2, 61440) \
    X(FLASHMHA_FWD_KERNELS, f16_bf16, 96, 128, 32, 4, 2, 49152) \
    X(FLASHMHA_FWD_KERNELS, f16_bf16, 128, 128, 64, 4, 2, 98304) \
    X(FLASHMHA_FWD_KERNELS, f16_bf16, 256, 64, 32, 4, 2, 98304) \
    X(FLASHMHA_FWD_DV_KERNELS, f16_bf16, 192, 128, 128, 32, 4, 2, 90112) \
    X(FLASHMHA_FWD_DV_KERNELS, f16_bf16, 128, 64, 128, 64, 4, 2, 81920) \
    X(FLASHMHA_FWD_TILE_KERNELS, f16_bf16, 128, 128, 64, 4, 1, 1, 65536) \
    X(FLASHMHA_FWD_TILE_KERNELS, f16_bf16, 128, 128, 64, 8, 2, 1, 98304) \
    X(FLASHMHA_FWD_TILE_KERNELS, f16_bf16, 256, 64, 32, 4, 1, 1, 65536) \
    X(FLASHMHA_FWD_KERNELS_SM75, f16, 32, 128, 64, 4, 2, 16384) \
    X(FLASHMHA_FWD_KERNELS_SM75, f16, 64, 128, 64, 4, 2, 32768) \
    X(FLASHMHA_FWD_KERNELS_SM75, f16, 80, 128, 32, 4, 2, 30720) \
    X(FLASHMHA_FWD_KERNELS_SM75, f16, 96, 64, 32, 4, 2, 24576) \
    X(FLASHMHA_FWD_KERNELS_SM75, f16, 128, 128, 16, 4, 2, 40960) \
    X(FLASHMHA_FWD_KERNELS_SM90, f16_bf16, 64, 128, 128, 12, 2, 82048) \
    X(FLASHMHA_FWD_KERNELS_SM90, f16_bf16, 128, 128, 128, 12, 2, 163968) \
    X(FLASHMHA_FWD_KERNELS_SM90, f16_bf16, 256, 64, 64, 8, 2, 163968) \
    X(FLASHMHA_FWD_DV_KERNELS_SM90, f16_bf16, 192, 128, 128, 128, 12, 2, 213120) \
    X(FLASHMHA_FWD_DV_KERNELS_SM90, f16_bf16, 128, 64, 128, 128, 12, 2, 131200) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 32, 16, 16, 4, 2, 22272) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 64, 16, 16, 4, 2, 39680) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 80, 16, 16, 4, 2, 48384) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 96, 16, 16, 4, 2, 57088) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 128, 16, 16, 4, 2, 74496) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 256, 16, 16, 2, 2, 76288) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 64, 16, 16, 4, 1, 23296) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 128, 16, 16, 4, 1, 41728) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 256, 16, 16, 4, 1, 78592) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 64, 32, 16, 4, 2, 42496) \
    X(FLASHMHA_DECODE_KERNELS, f16_bf16, 128, 32, 16, 4, 2, 79360) \
    X(FLASHMHA_DECODE_DV_KERNELS, f16_bf16, 192, 128, 16, 16, 4, 2, 92928) \
    X(FLASHMHA_DECODE_DV_KERNELS, f16_bf16, 128, 64, 16, 16, 4, 2, 58112) \
    X(FLASHMHA_DECODE_KERNELS_SM75, f16, 32, 16, 16, 4, 2, 12032) \
    X(FLASHMHA_DECODE_KERNELS_SM75, f16, 64, 16, 16, 4, 2, 21248) \
    X(FLASHMHA_DECODE_KERNELS_SM75, f16, 80, 16, 16, 4, 2, 25856) \
    X(FLASHMHA_DECODE_KERNELS_SM75, f16, 96, 16, 16, 4, 2, 30464) \
    X(FLASHMHA_DECODE_KERNELS_SM75, f16, 128, 16, 16, 4, 2, 39680) \
    X(FLASHMHA_DECODE_KERNELS_SM75, f16, 64, 32, 16, 4, 2, 42496)

/* Backward (issue 21; kernels/sm80/flash_bwd.cu, Ampere and newer; Hopper runs these too):
 * X(group, dtypes, head_dim, block_m, num_warps, smem_bytes), group FLASHMHA_BWD_KERNEL, entry
 * flashmha_bwd_<dtype>_d<head_dim>. block_n = 16 x num_warps keys per CTA (warp pairs on 32 keys,
 * each warp of a pair on half of the block_m query rows of a main-loop step). smem = (K + V) +
 * (Q + dO) + dS^T (+ P^T from d64 on) + lse / delta (+ the f32 dP^T stash above d64) =
 * 2 d (2 block_n + 2 block_m) + 2 block_m block_n (x 2 from d64) + 8 block_m (+ 4 block_m block_n
 * above d64) bytes (BwdTraits); every row must fit the 99 KB of sm_86/89 (one compute_80 PTX).
 * Measured per main-loop mma (emulator, 1024 -> 2048 queries at 1024 keys, f16; non-tensor /
 * ldmatrix / smem wavefronts / warp atomics; bench/results/bwd_per_mma_steps.txt):
 *  - d64, 64 x 128 keys, 8 warps: 3.914 / 0.450 / 2.203 / 0.100 (FA2 2.934 / 0.450 / 2.100).
 *  - d128, 64 x 64 keys, 4 warps: 3.120 / 0.450 / 2.353 / 0.200 (FA2 2.203 / 0.450 / 2.000 /
 *    0.100). 32 rows cost 0.525-0.75 ldmatrix (the fifth session's 32 x 64: 3.642 / 0.525 /
 *    2.453); 128 keys need 164352 B at 64 rows, 114944 B at 32 (over 99 KB).
 *  - d80 / d96 take d128's 64 x 64 (d80 at 128 keys with the stash: 127488 B).
 * 0 spills everywhere (ptxas 13.5, sm_80-sm_120: bench/results/bwd_ptxas.txt). A separate table:
 * build/kernel_table.rs reads FLASHMHA_KERNELS only; the Rust side lists these rows in
 * src/ops/backward/kernels.rs, and a test checks every one of them is compiled. */
#define FLASHMHA_BWD_KERNELS(X) \
    X(FLASHMHA_BWD_KERNEL, f16_bf16, 32, 64, 8, 41472) \
    X(FLASHMHA_BWD_KERNEL, f16_bf16, 64, 64, 8, 82432) \
    X(FLASHMHA_BWD_KERNEL, f16_bf16, 80, 64, 4, 74240) \
    X(FLASHMHA_BWD_KERNEL, f16_bf16, 96, 64, 4, 82432) \
    X(FLASHMHA_BWD_KERNEL, f16_bf16, 128, 64, 4, 98816)

/* Forward-mode JVP (issue 22; kernels/sm80/flash_jvp.cu, Ampere and newer; Hopper runs these
 * too): X(group, dtypes, head_dim, block_n, smem_bytes), group FLASHMHA_JVP_KERNEL, entry
 * flashmha_jvp_<dtype>_d<head_dim>. 4 warps, block_m = 64 query rows (one m16 row block per
 * warp: the second f32 accumulator O' doubles the resident accumulators), block_n keys per tile,
 * one shared stage. smem = (Q + dQ) + (K + dK + V + dV) = 2 d (2 x 64 + 4 block_n) bytes
 * (JvpTraits). d128 takes 32-key tiles (S, S' and both accumulators: 160 registers of f32).
 * Listed in Rust by src/ops/jvp/kernels.rs (a test checks it against these rows). */
#define FLASHMHA_JVP_KERNELS(X) \
    X(FLASHMHA_JVP_KERNEL, f16_bf16, 32, 64, 24576) \
    X(FLASHMHA_JVP_KERNEL, f16_bf16, 64, 64, 49152) \
    X(FLASHMHA_JVP_KERNEL, f16_bf16, 128, 32, 65536)

/* MLA decode (issue 23 item 3; kernels/sm80/flash_mla_decode.cu, Ampere and newer; Hopper runs
 * these too): X(FLASHMHA_MLA_DECODE_KERNEL, dtypes, tile_rows, num_warps, kv_bytes, smem_bytes),
 * entry flashmha_mla_decode_<dtype>[_fp8]_r<tile_rows> (_fp8: kv_bytes 1, e4m3 / e5m2 pages
 * chosen at run time by kv_format, dequantised into the 16-bit stage). d_qk 576 / d_v 512 are fixed
 * (FLASHMHA_MLA_D_QK / _D_V of params.h); tile and budget in kernels/common/mla_decode_traits.cuh.
 * A separate table like the backward's: src/ops/mla_decode/kernels.rs lists these rows and a
 * test checks the list against this header and that every entry is compiled without spills. */
#define FLASHMHA_MLA_DECODE_KERNELS(X) \
    X(FLASHMHA_MLA_DECODE_KERNEL, f16_bf16, 32, 8, 2, 82944) \
    X(FLASHMHA_MLA_DECODE_KERNEL, f16_bf16, 32, 8, 1, 82944)

/* Hopper MLA decode (issue 23 item 3; kernels/sm90/flash_mla_decode_sm90.cu, sm_90a: TMA pages,
 * wgmma): X(FLASHMHA_MLA_DECODE_KERNEL_SM90, dtypes, tile_rows, num_warps, kv_bytes, smem_bytes),
 * entry flashmha_mla_decode_sm90_<dtype>_r<tile_rows>: 64 packed rows, two consumer warpgroups
 * (256 output dims each; thread 0 issues the TMA page loads), 16-bit pages whose size is a multiple of 64
 * (tile and budget in kernels/sm90/mla_decode_traits_sm90.cuh). Listed in Rust by
 * src/ops/mla_decode/kernels.rs beside the sm_80 rows. */
#define FLASHMHA_MLA_DECODE_KERNELS_SM90(X) \
    X(FLASHMHA_MLA_DECODE_KERNEL_SM90, f16_bf16, 64, 8, 2, 230016)

/* Row hooks, one per group, each taking a row without its group column and with one dtype:
 * (dtype, head_dim, rows, block_n, num_warps, kv_bytes, smem_bytes). All expand to nothing
 * here; an entry file #undefs the hook of its own group, defines it as its entry point
 * (FLASHMHA_DEFINE_ENTRY) and expands FLASHMHA_KERNELS(FLASHMHA_KERNEL_ROW), so each .cu
 * defines the entries of its group and no other. */
#define FLASHMHA_FWD_KERNELS(...)
#define FLASHMHA_FWD_DV_KERNELS(...)
#define FLASHMHA_FWD_TILE_KERNELS(...)
#define FLASHMHA_FWD_DV_KERNELS_SM90(...)
#define FLASHMHA_FWD_KERNELS_SM75(...)
#define FLASHMHA_FWD_KERNELS_SM90(...)
#define FLASHMHA_DECODE_KERNELS(...)
#define FLASHMHA_DECODE_DV_KERNELS(...)
#define FLASHMHA_DECODE_KERNELS_SM75(...)
#define FLASHMHA_BWD_KERNEL(...)
#define FLASHMHA_JVP_KERNEL(...)
#define FLASHMHA_MLA_DECODE_KERNEL(...)
#define FLASHMHA_MLA_DECODE_KERNEL_SM90(...)

/* One row: its group's hook once per dtype of `dtypes`. */
#define FLASHMHA_KERNEL_ROW(group, dtypes, ...) FLASHMHA_DTYPES_##dtypes(group, __VA_ARGS__)
#define FLASHMHA_DTYPES_f16(hook, ...) hook(f16, __VA_ARGS__)
#define FLASHMHA_DTYPES_f16_bf16(hook, ...) hook(f16, __VA_ARGS__) hook(bf16, __VA_ARGS__)

/* The extern "C" entry point `name` of one row: `params_type params` is its only parameter (the
 * params.h ABI), `launch_bounds` the parenthesised __launch_bounds__ arguments, and the CTA body
 * flashmha::cta<Traits> runs with Traits = the trailing arguments (a template-id, commas and
 * all). smem_bytes is the row's column, checked against the traits' layout. */
#define FLASHMHA_DEFINE_ENTRY(name, launch_bounds, params_type, cta, smem_bytes, ...)             \
    extern "C" __global__ void __launch_bounds__ launch_bounds name(params_type params) {         \
        using Traits = __VA_ARGS__;                                                               \
        static_assert(Traits::kSmemBytes == (smem_bytes),                                         \
                      "kernel_table.h smem_bytes must equal the traits' shared-memory layout");   \
        flashmha::cta<Traits>(params);                                                            \
    }

#endif /* FLASHMHA_KERNEL_TABLE_H */
