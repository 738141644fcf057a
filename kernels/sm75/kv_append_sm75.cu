/*
 * kv_append_sm75.cu: the Turing (compute_75 PTX, sm_75 cubin) entry point of the KV append
 * (kernels/common/kv_append_chunk.cuh) into 16-bit pages, the only pages the Turing decode reads
 * (FP8 pages are an Ampere-and-newer feature). A compute_80 module does not load on a 7.5
 * device, so the append the Turing decode path needs is compiled here.
 */
#include "common/kv_append_chunk.cuh"

extern "C" __global__ void __launch_bounds__(flashmha::kAppendThreads)
    flashmha_kv_append_sm75_16bit(const KvAppendParams params) {
    flashmha::kv_append_chunk<false>(params);
}
