/*
 * kv_append.cu: writes the K and V rows of new tokens into the paged cache (params.h,
 * KvAppendParams). One thread copies one 16-byte chunk of K and the same chunk of V of one
 * (token, KV head); grid.x = ceil(num_tokens x hkv x d / 8 / kAppendThreads).
 *
 * slot_mapping is device-resident and never trusted: a slot < 0 skips the token (a padding
 * token), a slot >= num_pages x page_size traps. The copy is of 16-bit element bits, so one
 * entry serves f16 and bf16.
 */
#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"

namespace flashmha {

constexpr int kAppendThreads = 128;
constexpr int kAppendChunkElems = 16 / kElemBytes;  // one 16-byte vector per thread

__device__ __forceinline__ void kv_append_chunk(const KvAppendParams &p) {
    const int64_t flat = static_cast<int64_t>(blockIdx.x) * kAppendThreads + threadIdx.x;
    const int chunks = p.head_dim / kAppendChunkElems;
    const int64_t per_token = static_cast<int64_t>(p.num_heads_kv) * chunks;
    if (flat >= per_token * p.num_tokens) return;
    const int token = static_cast<int>(flat / per_token);
    const int rest = static_cast<int>(flat - token * per_token);
    const int head = rest / chunks;
    const int c = (rest - head * chunks) * kAppendChunkElems;

    const int slot = p.slot_mapping[token];
    if (slot < 0) return;  // padding token: nothing to write
    if (static_cast<int64_t>(slot) >= static_cast<int64_t>(p.num_pages) * p.page_size) __trap();
    const int page = slot / p.page_size;
    const int offset = slot - page * p.page_size;

    const elem_bits_t *k_src = static_cast<const elem_bits_t *>(p.k_new) +
                               token * p.k_new_token_stride + head * p.k_new_head_stride + c;
    const elem_bits_t *v_src = static_cast<const elem_bits_t *>(p.v_new) +
                               token * p.v_new_token_stride + head * p.v_new_head_stride + c;
    elem_bits_t *k_dst = static_cast<elem_bits_t *>(p.k_cache) + page * p.k_page_stride +
                         offset * p.k_slot_stride + head * p.k_head_stride + c;
    elem_bits_t *v_dst = static_cast<elem_bits_t *>(p.v_cache) + page * p.v_page_stride +
                         offset * p.v_slot_stride + head * p.v_head_stride + c;
    *reinterpret_cast<uint4 *>(k_dst) = *reinterpret_cast<const uint4 *>(k_src);
    *reinterpret_cast<uint4 *>(v_dst) = *reinterpret_cast<const uint4 *>(v_src);
}

}  // namespace flashmha

extern "C" __global__ void __launch_bounds__(flashmha::kAppendThreads)
    flashmha_kv_append_16bit(const KvAppendParams params) {
    flashmha::kv_append_chunk(params);
}
