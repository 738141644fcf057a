// abi_probe_decode.cu: the decode params structs as the device compiler lays them out (see
// abi_probe.cu). One thread writes, in order, for FlashDecodeParams, MergeStatesParams and
// KvAppendParams: sizeof, alignof, then offsetof of every field of FLASHMHA_ABI_PROBE_DECODE_FIELDS,
// _MERGE_FIELDS and _KV_APPEND_FIELDS; tests/ops/abi_probe.rs compares with bindgen.
#include "common/abi_probe.cuh"

#define FLASHMHA_DECODE_PROBED_STRUCTS(X)                                                          \
    X(FlashDecodeParams, FLASHMHA_ABI_PROBE_DECODE_FIELDS)                                         \
    X(MergeStatesParams, FLASHMHA_ABI_PROBE_MERGE_FIELDS)                                          \
    X(KvAppendParams, FLASHMHA_ABI_PROBE_KV_APPEND_FIELDS)

FLASHMHA_DEFINE_ABI_PROBE(flashmha_abi_probe_decode, FLASHMHA_DECODE_PROBED_STRUCTS)
