/*
 * abi_probe.cuh: the one body of the ABI probe kernels (kernels/abi_probe.cu,
 * kernels/abi_probe_decode.cu), which report how the device compiler lays out the params.h
 * structs so tests/ops/abi_probe.rs can compare them with the bindgen structs field by field.
 */
#ifndef FLASHMHA_COMMON_ABI_PROBE_CUH
#define FLASHMHA_COMMON_ABI_PROBE_CUH

#include <stddef.h>
#include <stdint.h>

#include "params.h"

/* Writes, for one struct: sizeof, alignof, then the offsetof of each field that FIELDS(X)
 * names (a FLASHMHA_ABI_PROBE_*_FIELDS list of params.h), one uint64 each. */
#define FLASHMHA_ABI_PROBE_OFFSET(field) out[slot++] = offsetof(Probed, field);
#define FLASHMHA_ABI_PROBE_STRUCT(Struct, FIELDS)                                                  \
    {                                                                                              \
        using Probed = Struct;                                                                     \
        out[slot++] = sizeof(Probed);                                                              \
        out[slot++] = alignof(Probed);                                                             \
        FIELDS(FLASHMHA_ABI_PROBE_OFFSET)                                                          \
    }

/* Entry `name(uint64_t *out)`: one thread writes the layout of every struct of STRUCTS(X), a
 * list of X(Struct, FIELDS), in that order; the Rust test reads them back in the same order. */
#define FLASHMHA_DEFINE_ABI_PROBE(name, STRUCTS)                                                   \
    extern "C" __global__ void name(uint64_t *out) {                                               \
        if (threadIdx.x != 0 || blockIdx.x != 0) {                                                 \
            return;                                                                                \
        }                                                                                          \
        int slot = 0;                                                                              \
        STRUCTS(FLASHMHA_ABI_PROBE_STRUCT)                                                         \
    }

#endif  // FLASHMHA_COMMON_ABI_PROBE_CUH
