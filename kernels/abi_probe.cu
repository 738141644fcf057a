// abi_probe.cu: reports how the device compiler lays out the params structs, so a Rust test can
// check them against the bindgen structs (src/common/abi.rs, tests/ops/abi_probe.rs). One thread writes, in
// order, for FlashFwdParams, HeadSimParams, FlashFwdTmaParams and then FlashAttnOptions: sizeof,
// alignof, then offsetof of every field in the order of FLASHMHA_ABI_PROBE_FIELDS /
// _HEADSIM_FIELDS / _TMA_FIELDS / _OPTIONS_FIELDS (the body: kernels/common/abi_probe.cuh).
#include "common/abi_probe.cuh"

// out: [2 + fwd fields + 2 + headsim fields + 2 + tma fields + 2 + options fields] uint64
#define FLASHMHA_FWD_PROBED_STRUCTS(X)                                                             \
    X(FlashFwdParams, FLASHMHA_ABI_PROBE_FIELDS)                                                   \
    X(HeadSimParams, FLASHMHA_ABI_PROBE_HEADSIM_FIELDS)                                            \
    X(FlashFwdTmaParams, FLASHMHA_ABI_PROBE_TMA_FIELDS)                                            \
    X(FlashAttnOptions, FLASHMHA_ABI_PROBE_OPTIONS_FIELDS)

FLASHMHA_DEFINE_ABI_PROBE(flashmha_abi_probe, FLASHMHA_FWD_PROBED_STRUCTS)
