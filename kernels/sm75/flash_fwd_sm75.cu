/*
 * flash_fwd_sm75.cu: the Turing forward flash-attention entry points (compute_75 PTX, sm_75
 * cubin), one per row of FLASHMHA_FWD_KERNELS_SM75 in kernels/kernel_table.h: f16 only (sm_75
 * has no bf16 mma), K / V tiles register-staged into one shared-memory stage (no cp.async on
 * sm_75), each k16 step two mma.m16n8k8 (kernels/common/mma.cuh). The CTA body is the Ampere
 * one (kernels/common/flash_fwd_cta.cuh), so every option behaves identically.
 */
#include "params.h"
#include "kernel_table.h"
#include "common/flash_fwd_cta.cuh"

/* One entry point per FLASHMHA_FWD_KERNELS_SM75 row: flashmha_fwd_sm75_<dtype>_d<head_dim>. */
#define FLASHMHA_DEFINE_FWD_SM75_ENTRY(dtype, head_dim, block_m, block_n, num_warps, smem_bytes)   \
    extern "C" __global__ void __launch_bounds__((num_warps) * flashmha::kWarpSize)                 \
        flashmha_fwd_sm75_##dtype##_d##head_dim(const FlashFwdParams params) {                     \
        using Traits = flashmha::FwdTraits<flashmha::Elem_##dtype, head_dim, block_m, block_n,      \
                                           num_warps, flashmha::LoadPath::RegisterStaged>;          \
        static_assert(Traits::kSmemBytes == (smem_bytes),                                           \
                      "kernel_table.h smem_bytes must equal the traits' shared-memory layout");     \
        flashmha::flash_fwd_cta<Traits>(params);                                                    \
    }

FLASHMHA_FWD_KERNELS_SM75(FLASHMHA_DEFINE_FWD_SM75_ENTRY)
