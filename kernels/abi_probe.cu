// abi_probe.cu: reports how the device compiler lays out the params structs, so a Rust test can
// check them against the bindgen structs (src/common/abi.rs, tests/ops/abi_probe.rs). One thread writes, in
// order, for FlashFwdParams, HeadSimParams, FlashFwdTmaParams and then FlashAttnOptions: sizeof,
// alignof, then offsetof of every field in the order of FLASHMHA_ABI_PROBE_FIELDS /
// _HEADSIM_FIELDS / _TMA_FIELDS / _OPTIONS_FIELDS.
#include <stddef.h>
#include <stdint.h>

#include "params.h"

#define FLASHMHA_WRITE_FWD_OFFSET(field) out[slot++] = offsetof(FlashFwdParams, field);
#define FLASHMHA_WRITE_HEADSIM_OFFSET(field) out[slot++] = offsetof(HeadSimParams, field);
#define FLASHMHA_WRITE_TMA_OFFSET(field) out[slot++] = offsetof(FlashFwdTmaParams, field);
#define FLASHMHA_WRITE_OPTIONS_OFFSET(field) out[slot++] = offsetof(FlashAttnOptions, field);

// out: [2 + fwd fields + 2 + headsim fields + 2 + tma fields + 2 + options fields] uint64
extern "C" __global__ void flashmha_abi_probe(uint64_t *out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) {
        return;
    }
    int slot = 0;
    out[slot++] = sizeof(FlashFwdParams);
    out[slot++] = alignof(FlashFwdParams);
    FLASHMHA_ABI_PROBE_FIELDS(FLASHMHA_WRITE_FWD_OFFSET)
    out[slot++] = sizeof(HeadSimParams);
    out[slot++] = alignof(HeadSimParams);
    FLASHMHA_ABI_PROBE_HEADSIM_FIELDS(FLASHMHA_WRITE_HEADSIM_OFFSET)
    out[slot++] = sizeof(FlashFwdTmaParams);
    out[slot++] = alignof(FlashFwdTmaParams);
    FLASHMHA_ABI_PROBE_TMA_FIELDS(FLASHMHA_WRITE_TMA_OFFSET)
    out[slot++] = sizeof(FlashAttnOptions);
    out[slot++] = alignof(FlashAttnOptions);
    FLASHMHA_ABI_PROBE_OPTIONS_FIELDS(FLASHMHA_WRITE_OPTIONS_OFFSET)
}
