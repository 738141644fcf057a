/*
 * arch.cuh: the one compile-time switch between the Ampere-and-newer code (the compute_80 PTX
 * and its sm_80..sm_90 cubins) and the Turing code (kernels/sm75/, compute_75 PTX and the sm_75
 * cubin). Building blocks that exist on both but are spelled differently (mma k16 steps, f32 ->
 * f16x2 packing) branch on FLASHMHA_SM75 once, here and in the file that defines them; kernels
 * do not test __CUDA_ARCH__ themselves.
 */
#ifndef FLASHMHA_COMMON_ARCH_CUH
#define FLASHMHA_COMMON_ARCH_CUH

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define FLASHMHA_SM75 1  // no m16n8k16, no cp.async, no cvt to .f16x2 from two f32 (PTX ISA)
#else
#define FLASHMHA_SM75 0
#endif

#endif  // FLASHMHA_COMMON_ARCH_CUH
