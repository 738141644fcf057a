// abi_probe.cu: reports how the device compiler lays out FlashFwdParams, so a Rust test can
// check it against the bindgen struct (src/abi.rs). One thread writes, in order:
//   out[0] = sizeof(FlashFwdParams), out[1] = alignof(FlashFwdParams),
//   out[2 + i] = offsetof(FlashFwdParams, field i) in FLASHMHA_ABI_PROBE_FIELDS order.
#include <stddef.h>
#include <stdint.h>

#include "params.h"

#define FLASHMHA_WRITE_OFFSET(field) out[slot++] = offsetof(FlashFwdParams, field);

// out: [2 + number of fields] uint64
extern "C" __global__ void flashmha_abi_probe(uint64_t *out) {
    if (threadIdx.x != 0 || blockIdx.x != 0) {
        return;
    }
    int slot = 0;
    out[slot++] = sizeof(FlashFwdParams);
    out[slot++] = alignof(FlashFwdParams);
    FLASHMHA_ABI_PROBE_FIELDS(FLASHMHA_WRITE_OFFSET)
}
