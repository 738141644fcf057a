/*
 * kv_append_chunk.cuh: the thread body of the KV append, shared by the Ampere entry points
 * (kernels/sm80/kv_append.cu, compute_80) and the Turing 16-bit one (kernels/sm75/kv_append_sm75.cu,
 * compute_75: a compute_80 module does not load on a 7.5 device).
 *
 * kv_append.cu: writes the K and V rows of new tokens into the paged cache (params.h,
 * KvAppendParams). One thread handles one 16-byte chunk (8 elements) of K and the same chunk of
 * V of one (token, KV head); grid.x = ceil(num_tokens x hkv x d / 8 / kAppendThreads).
 *
 * Where a token goes is device-resident and never trusted:
 *   - slot_mapping[t]: < 0 skips the token (a padding token), >= num_pages x page_size traps;
 *   - else token_batch[t], token_pos[t]: pos < 0 skips the token; batch outside [0, batch) or
 *     pos >= max_pages_per_seq x page_size traps, and so does a block-table entry outside
 *     [0, num_pages).
 * Entries: flashmha_kv_append_16bit copies element bits (one entry serves f16 and bf16);
 * flashmha_kv_append_fp8 quantises f16 / bf16 (FLASHMHA_KV_APPEND_FLAG_SRC_BF16) to e4m3 / e5m2
 * (kv_format): code = round_to_nearest_even(x / scale) saturated to the largest finite code, NaN
 * kept (kernels/common/fp8.cuh). The division is IEEE (div.rn), so the host reference that divides
 * in f32 and rounds the same way reproduces every code.
 */
#ifndef FLASHMHA_COMMON_KV_APPEND_CHUNK_CUH
#define FLASHMHA_COMMON_KV_APPEND_CHUNK_CUH

#include <stdint.h>

#include "params.h"
#include "common/dtype.cuh"
#include "common/fp8.cuh"

namespace flashmha {

constexpr int kAppendThreads = FLASHMHA_KV_APPEND_THREADS;
constexpr int kAppendChunkElems = FLASHMHA_KV_APPEND_CHUNK_ELEMS;  // one 16-byte vector per thread
static_assert(kAppendChunkElems * kElemBytes == 16, "one 16-byte vector of the source per thread");
constexpr int kAppendWordsPerChunk = kAppendChunkElems / 2;  // .b32 words: two elements each
constexpr int kFp8CodesPerWord = 4;
constexpr int kBitsPerByte = 8;
constexpr uint32_t kLowHalf = 0xffffu;
constexpr int kHalfBits = 16;

/* Where token `token` goes: the slot (page * page_size + offset), or -1 to skip it. Traps on
 * any out-of-range device value. */
__device__ __forceinline__ int64_t append_slot(const KvAppendParams &p, int token) {
    const int64_t pool_slots = static_cast<int64_t>(p.num_pages) * p.page_size;
    if (p.slot_mapping != nullptr) {
        const int slot = p.slot_mapping[token];
        if (slot < 0) return -1;  // padding token: nothing to write
        if (slot >= pool_slots) __trap();
        return slot;
    }
    const int pos = p.token_pos[token];
    if (pos < 0) return -1;
    const int b = p.token_batch[token];
    if (b < 0 || b >= p.batch) __trap();
    if (static_cast<int64_t>(pos) >= static_cast<int64_t>(p.max_pages_per_seq) * p.page_size)
        __trap();
    const int column = pos / p.page_size;
    const int page = p.block_table[b * p.block_table_stride + column];
    if (page < 0 || page >= p.num_pages) __trap();
    return static_cast<int64_t>(page) * p.page_size + (pos - column * p.page_size);
}

/* f32 value of element `e` (0 low, 1 high) of a .b32 pair of the source dtype. */
__device__ __forceinline__ float source_value(uint32_t pair, int e, bool bf16) {
    const uint32_t bits = (pair >> (e * kHalfBits)) & kLowHalf;
    if (bf16) return __uint_as_float(bits << kHalfBits);  // bf16 is f32's upper half
    float x;
    asm("{\n\t.reg .b16 h;\n\tcvt.u16.u32 h, %1;\n\tcvt.f32.f16 %0, h;\n\t}" : "=f"(x) : "r"(bits));
    return x;
}

/* Eight source elements -> eight codes (two .b32, code i in byte i % 4 of word i / 4). */
__device__ __forceinline__ uint2 quantise_chunk(const uint4 &src, float scale, int format,
                                                bool bf16) {
    const uint32_t words[kAppendWordsPerChunk] = {src.x, src.y, src.z, src.w};
    uint32_t out[2] = {0u, 0u};
#pragma unroll
    for (int i = 0; i < kAppendChunkElems; ++i) {
        const float x = __fdiv_rn(source_value(words[i / 2], i % 2, bf16), scale);
        const uint32_t code = format == FLASHMHA_KV_FORMAT_E5M2 ? f32_to_fp8<Fp8E5M2>(x)
                                                                  : f32_to_fp8<Fp8E4M3>(x);
        out[i / kFp8CodesPerWord] |= code << (kBitsPerByte * (i % kFp8CodesPerWord));
    }
    return make_uint2(out[0], out[1]);
}

template <bool kFp8>
__device__ __forceinline__ void kv_append_chunk(const KvAppendParams &p) {
    const int64_t flat = static_cast<int64_t>(blockIdx.x) * kAppendThreads + threadIdx.x;
    const int chunks = p.head_dim / kAppendChunkElems;
    const int64_t per_token = static_cast<int64_t>(p.num_heads_kv) * chunks;
    if (flat >= per_token * p.num_tokens) return;
    const int token = static_cast<int>(flat / per_token);
    const int rest = static_cast<int>(flat - token * per_token);
    const int head = rest / chunks;
    const int c = (rest - head * chunks) * kAppendChunkElems;

    const int64_t slot = append_slot(p, token);
    if (slot < 0) return;
    const int64_t page = slot / p.page_size;
    const int64_t offset = slot - page * p.page_size;

    // k_new, v_new: [num_tokens, hkv, d]; caches: element (page, offset, head, c).
    const uint4 k = *reinterpret_cast<const uint4 *>(static_cast<const elem_bits_t *>(p.k_new) +
                                                     token * p.k_new_token_stride +
                                                     head * p.k_new_head_stride + c);
    const uint4 v = *reinterpret_cast<const uint4 *>(static_cast<const elem_bits_t *>(p.v_new) +
                                                     token * p.v_new_token_stride +
                                                     head * p.v_new_head_stride + c);
    const int64_t k_dst = page * p.k_page_stride + offset * p.k_slot_stride +
                          head * p.k_head_stride + c;
    const int64_t v_dst = page * p.v_page_stride + offset * p.v_slot_stride +
                          head * p.v_head_stride + c;
    if constexpr (kFp8) {
        if (p.kv_format != FLASHMHA_KV_FORMAT_E4M3 && p.kv_format != FLASHMHA_KV_FORMAT_E5M2)
            __trap();
        const bool bf16 = (p.flags & FLASHMHA_KV_APPEND_FLAG_SRC_BF16) != 0;
        const int scale_index = head * p.kv_scale_stride;
        *reinterpret_cast<uint2 *>(static_cast<uint8_t *>(p.k_cache) + k_dst) =
            quantise_chunk(k, p.k_scales[scale_index], p.kv_format, bf16);
        *reinterpret_cast<uint2 *>(static_cast<uint8_t *>(p.v_cache) + v_dst) =
            quantise_chunk(v, p.v_scales[scale_index], p.kv_format, bf16);
    } else {
        *reinterpret_cast<uint4 *>(static_cast<elem_bits_t *>(p.k_cache) + k_dst) = k;
        *reinterpret_cast<uint4 *>(static_cast<elem_bits_t *>(p.v_cache) + v_dst) = v;
    }
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_KV_APPEND_CHUNK_CUH
