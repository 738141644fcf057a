// abi_probe_decode.cu: the decode params structs as the device compiler lays them out (see
// abi_probe.cu). One thread writes, in order, for FlashDecodeParams, MergeStatesParams and
// KvAppendParams: sizeof, alignof, then offsetof of every field of FLASHMHA_ABI_PROBE_DECODE_FIELDS,
// _MERGE_FIELDS and _KV_APPEND_FIELDS; tests/ops/abi_probe.rs compares with bindgen.
#include <stddef.h>
#include <stdint.h>

#include "params.h"

#define FLASHMHA_WRITE_DECODE_OFFSET(field) out[slot++] = offsetof(FlashDecodeParams, field);
#define FLASHMHA_WRITE_MERGE_OFFSET(field) out[slot++] = offsetof(MergeStatesParams, field);
#define FLASHMHA_WRITE_APPEND_OFFSET(field) out[slot++] = offsetof(KvAppendParams, field);

extern "C" __global__ void flashmha_abi_probe_decode(uint64_t *out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) {
        return;
    }
    int slot = 0;
    out[slot++] = sizeof(FlashDecodeParams);
    out[slot++] = alignof(FlashDecodeParams);
    FLASHMHA_ABI_PROBE_DECODE_FIELDS(FLASHMHA_WRITE_DECODE_OFFSET)
    out[slot++] = sizeof(MergeStatesParams);
    out[slot++] = alignof(MergeStatesParams);
    FLASHMHA_ABI_PROBE_MERGE_FIELDS(FLASHMHA_WRITE_MERGE_OFFSET)
    out[slot++] = sizeof(KvAppendParams);
    out[slot++] = alignof(KvAppendParams);
    FLASHMHA_ABI_PROBE_KV_APPEND_FIELDS(FLASHMHA_WRITE_APPEND_OFFSET)
}
