/*
 * kv_append.cu: the Ampere-and-newer (compute_80) entry points of the KV append
 * (kernels/common/kv_append_chunk.cuh): flashmha_kv_append_16bit copies element bits (one entry
 * serves f16 and bf16), flashmha_kv_append_fp8 quantises into FP8 pages.
 */
#include "common/kv_append_chunk.cuh"

extern "C" __global__ void __launch_bounds__(flashmha::kAppendThreads)
    flashmha_kv_append_16bit(const KvAppendParams params) {
    flashmha::kv_append_chunk<false>(params);
}

extern "C" __global__ void __launch_bounds__(flashmha::kAppendThreads)
    flashmha_kv_append_fp8(const KvAppendParams params) {
    flashmha::kv_append_chunk<true>(params);
}
