/*
 * score_grad.cuh: the score modifiers of mask.cuh (ScoreMod: softcap, ALiBi) with their
 * derivative, for the backward (kernels/common/flash_bwd_cta.cuh) and any kernel that
 * differentiates through the scores. Same formula as ScoreMod::apply: from the raw q.k
 * accumulator s, the log2-domain score x = c log2e tanh(scale s / c) (softcap c) or
 * s scale log2e, minus slope log2e |i + shift - j| (ALiBi). The gradient of the natural-domain
 * score with respect to scale * s is 1 - tanh^2 under a softcap and 1 otherwise (the ALiBi bias
 * is constant); the caller applies the scale once per gradient (dK, dQ).
 */
#ifndef FLASHMHA_COMMON_SCORE_GRAD_CUH
#define FLASHMHA_COMMON_SCORE_GRAD_CUH

#include "params.h"
#include "common/mask.cuh"

namespace flashmha {

/* One modified score and its derivative factor. */
struct ModifiedScore {
    float x;     // log2-domain score, as the forward's online softmax saw it
    float grad;  // d(natural score) / d(scale q.k): 1 - tanh^2 with a softcap, else 1
};

struct ScoreModGrad {
    ScoreMod mod;

    __device__ __forceinline__ explicit ScoreModGrad(const FlashAttnOptions &p) : mod(p) {}
    __device__ __forceinline__ bool any() const { return mod.any(); }
    __device__ __forceinline__ float alibi_log2(const FlashAttnOptions &p, int head) const {
        return mod.alibi_log2(p, head);
    }

    /* s: raw q.k; dist: i + shift - j (signed); alibi_log2: the head's slope times log2 e. */
    __device__ __forceinline__ ModifiedScore modify(float s, int dist, float alibi_log2) const {
        ModifiedScore r;
        r.grad = 1.0f;
        if (mod.softcap) {
            const float t = tanh_approx(s * mod.softcap_pre);
            r.x = mod.softcap_post * t;
            r.grad = fmaf(-t, t, 1.0f);
        } else {
            r.x = s * mod.scale_log2;
        }
        if (mod.alibi) r.x = fmaf(-alibi_log2, static_cast<float>(abs(dist)), r.x);
        return r;
    }

  private:
    /* PTX ISA "tanh" (#floating-point-instructions-tanh), sm_75+: the forward's softcap uses the
     * same instruction (ScoreMod), so P is recomputed from the same scores. */
    static __device__ __forceinline__ float tanh_approx(float x) {
        float y;
        asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
        return y;
    }
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_SCORE_GRAD_CUH
