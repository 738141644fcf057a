/*
 * codegen.cuh: code-generation helpers, nothing numerical.
 *  - static_for<N>(f) calls f(Int<0>{}), ..., f(Int<N-1>{}), so the index is a constant expression
 *    inside f: needed where it feeds an inline-PTX immediate ("n" constraint, e.g. the
 *    [reg + imm] address of ldmatrix / cp.async) or a template argument, which #pragma unroll
 *    cannot provide.
 *  - pin(x) returns x through an opaque register move, so the compiler keeps the value in a
 *    register instead of re-deriving it (rematerialising) inside the main loop.
 *  - step_runs<kBounded, kStep>(head_dim) bounds an unrolled fragment loop at run time (issue 23:
 *    a head dim below the compiled one issues only the k16 / n16 steps its real width needs).
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

/* Whether step kStep of an unrolled loop over the compiled head dim runs. kBounded false is the
 * compiled-width path: always (the loop compiles exactly as without a bound). kBounded true:
 * while its 16 columns hold one of the real head dim's, a warp-uniform run-time bound (read
 * from the params where it is tested: one register fewer at the register peak); step 0 always
 * runs (it starts the accumulators and every served head dim reaches it). */
template <bool kBounded, int kStep>
__device__ __forceinline__ bool step_runs(int head_dim) {
    return !kBounded || kStep == 0 || kStep * 16 < head_dim;  // 16 columns: one k16 step / n16 pair
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
