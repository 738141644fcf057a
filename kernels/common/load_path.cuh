/*
 * load_path.cuh: how a kernel's K / V tiles reach shared memory, the one choice that differs
 * between the Ampere-and-newer and the Turing instantiations of the same CTA body (forward:
 * fwd_traits.cuh, decode: decode_traits.cuh).
 */
#ifndef FLASHMHA_COMMON_LOAD_PATH_CUH
#define FLASHMHA_COMMON_LOAD_PATH_CUH

namespace flashmha {

enum class LoadPath {
    CpAsync,         // sm_80+: cp.async into two shared-memory stages
    RegisterStaged,  // sm_75: ld.global into registers, then st.shared into one stage
                     // (staged_copy.cuh), the next tile's loads in flight during this tile's math
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_LOAD_PATH_CUH
