/*
 * codegen.cuh: code-generation helpers, nothing numerical.
 *  - static_for<N>(f) calls f(Int<0>{}), ..., f(Int<N-1>{}), so the index is a constant expression
 *    inside f: needed where it feeds an inline-PTX immediate ("n" constraint, e.g. the
 *    [reg + imm] address of ldmatrix / cp.async) or a template argument, which #pragma unroll
 *    cannot provide.
 *  - pin(x) returns x through an opaque register move, so the compiler keeps the value in a
 *    register instead of re-deriving it (rematerialising) inside the main loop.
 */
#ifndef FLASHMHA_COMMON_CODEGEN_CUH
#define FLASHMHA_COMMON_CODEGEN_CUH

#include <stdint.h>

namespace flashmha {

template <int I>
struct Int {
    static constexpr int value = I;
    __host__ __device__ constexpr operator int() const { return I; }
};

template <int N, int I = 0, class F>
__device__ __forceinline__ void static_for(F &&f) {
    if constexpr (I < N) {
        f(Int<I>{});
        static_for<N, I + 1>(f);
    }
}

__device__ __forceinline__ uint32_t pin(uint32_t x) {
    uint32_t r;
    asm volatile("mov.b32 %0, %1;" : "=r"(r) : "r"(x));
    return r;
}
__device__ __forceinline__ int pin(int x) { return static_cast<int>(pin(static_cast<uint32_t>(x))); }
__device__ __forceinline__ float pin(float x) {
    float r;
    asm volatile("mov.b32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ uint64_t pin(uint64_t x) {
    uint64_t r;
    asm volatile("mov.b64 %0, %1;" : "=l"(r) : "l"(x));
    return r;
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_CODEGEN_CUH
