/*
 * softmax.cuh: online softmax in registers, in the log2 domain, plus the online Shannon entropy.
 *
 * Each thread owns two rows of its warp's 16 (groupID and groupID + 8, see mma_c_row) and, of
 * each, 2 columns per 8-column score tile; the 4 threads of a quad together hold whole rows, so
 * row reductions are a local pass plus shfl.xor over lane bits 0 and 1.
 *
 * Domain: the softmax multiplies the score accumulators S by `score_mul` (= scale * log2 e when
 * scores are raw q.k, 1 when a score modifier already produced log2-domain values x = s * log2 e)
 * so that exp(s - M) = 2^(x - m) with x = s log2 e, m = M log2 e. Per row it keeps
 *   m (running max of S, raw units), l = sum 2^(x - m), and, for the entropy,
 *   e = sum 2^(x - m) * (x - m)  (log2 units, relative to the running max so it stays small).
 * On a new max m' the state is rescaled with alpha = 2^(m - m'):
 *   l' = alpha l,  e' = alpha (e + (m - m') l),  O' = alpha O.
 * Finally  lse = ln 2 (m + log2 l),  H = -sum p ln p = ln l + M - E_p[s] = ln 2 (log2 l - e / l).
 * A row with no unmasked key keeps m = -inf and l = 0: every -inf is guarded (no NaN) and the
 * row ends with O = 0, lse = -inf, H = 0.
 * NaN (src/common/options.rs): a NaN score (NaN or inf in q or k) is skipped by the max (fmaxf) but
 * not by 2^(x - m), so l, e and O turn NaN and stay NaN through every rescale (alpha * NaN);
 * finalize() then gives lse = NaN, H = NaN, never the "no keys" -inf. A non-finite O with finite
 * scores (NaN or inf in v) is caught by finalize()'s probe of the O accumulators. The main loop
 * carries no test for either: the NaN rides the arithmetic it already does.
 */
#ifndef FLASHMHA_COMMON_SOFTMAX_CUH
#define FLASHMHA_COMMON_SOFTMAX_CUH

#include <stdint.h>

#include "common/mma.cuh"

namespace flashmha {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kRowHalves = 2;  // rows groupID and groupID + 8 of the warp's 16
/* Entropy terms p * (x - m) with x - m below this are dropped: ex2.approx.ftz already returns
 * exactly 0 there (results below 2^-126 flush to zero), and the clamp keeps -inf out (0 * -inf). */
constexpr float kEntropyMinLog2 = -128.0f;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000u); }

/* PTX ISA "ex2" (#floating-point-instructions-ex2): 2^x, ex2(-inf) = +0. */
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
/* PTX ISA "lg2" (#floating-point-instructions-lg2). */
__device__ __forceinline__ float fast_log2(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Reductions over the 4 threads of a quad (lanes differing in bits 0 and 1, i.e. the same
 * groupID: one full score row). PTX ISA "shfl.sync" .bfly (#data-movement-and-conversion-
 * instructions-shfl-sync); lane mask, clamp (0x1f: whole warp) and member mask are immediates. */
template <int kLaneBit>
__device__ __forceinline__ float shfl_xor(float v) {
    float r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "n"(kLaneBit));
    return r;
}
constexpr unsigned kFullWarpMask = 0xffffffffu;
static_assert(kQuadSize == 4, "quad reductions below shuffle over lane bits 0 and 1 (xor 1, 2)");
__device__ __forceinline__ float quad_allreduce_max(float v) {
    v = fmaxf(v, shfl_xor<1>(v));
    return fmaxf(v, shfl_xor<2>(v));
}
__device__ __forceinline__ float quad_allreduce_sum(float v) {
    v += shfl_xor<1>(v);
    return v + shfl_xor<2>(v);
}

/* What the epilogue needs of one row. */
struct RowResult {
    float inv_sum;  // 1 / l, or 0 for a fully masked row (so O = 0); NaN with a NaN score
    float lse;      // natural log-sum-exp of the (scaled, modified) scores, -inf if fully
                    // masked, NaN if a NaN reached the row's scores or O
    float entropy;  // nats, 0 if fully masked, NaN with lse
};

/* max(x, 0) that keeps a NaN (fmaxf would return 0). */
__device__ __forceinline__ float clamp_nonneg_keep_nan(float x) { return x < 0.0f ? 0.0f : x; }

/* kSTiles: 8-column score tiles per KV tile; kOTiles: 8-column output tiles (head_dim / 8). */
template <int kSTiles, int kOTiles>
struct OnlineSoftmax {
    float row_max[kRowHalves];  // raw S units; -inf until the row sees an unmasked key
    float row_sum[kRowHalves];  // this thread's share of l (quad-reduced in finalize)
    float row_ent[kRowHalves];  // this thread's share of e

    __device__ __forceinline__ OnlineSoftmax() {
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            row_max[h] = neg_inf();
            row_sum[h] = 0.0f;
            row_ent[h] = 0.0f;
        }
    }

    /* Folds one KV tile of scores into the state: S becomes P (unnormalised, in f32) in place,
     * O is rescaled. kEntropy adds one FFMA + FMNMX per score. The O rescale (d / 2 multiplies
     * per thread) is skipped when no row of the warp changed its max (alpha == 1 everywhere),
     * the common case once the running max has settled; the vote keeps the branch uniform. */
    template <bool kEntropy>
    __device__ __forceinline__ void update(float (&s)[kSTiles][kCRegs],
                                           float (&o)[kOTiles][kCRegs], float score_mul) {
        float alpha[kRowHalves];
        fold<kEntropy>(s, score_mul, alpha);
        rescale(o, alpha);
    }

    /* The score half of update(): S becomes P in place, l and e are rescaled and extended, and
     * alpha (the factor O must be rescaled by) is returned. Split out for kernels whose O is
     * still being accumulated asynchronously (wgmma) while the next scores are folded. */
    template <bool kEntropy>
    __device__ __forceinline__ void fold(float (&s)[kSTiles][kCRegs], float score_mul,
                                         float (&alpha)[kRowHalves]) {
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            float m_new = row_max[h];
#pragma unroll
            for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
                for (int e = 0; e < kPairElems; ++e) m_new = fmaxf(m_new, s[nt][mma_c_index(h, e)]);
            fold_row<kEntropy>(s, h, quad_allreduce_max(m_new), score_mul, alpha);
        }
    }

    /* This thread's max of each of its two rows over the tile `s` (quad-reduced; -inf for a
     * fully masked row), for kernels whose rows span several warps' tiles (the sm_90a MLA
     * decode): they combine the maxima and fold with fold_with_max. */
    __device__ __forceinline__ void tile_max(const float (&s)[kSTiles][kCRegs], float (&m)[kRowHalves]) const {
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) {
            float v = neg_inf();
#pragma unroll
            for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
                for (int e = 0; e < kPairElems; ++e) v = fmaxf(v, s[nt][mma_c_index(h, e)]);
            m[h] = quad_allreduce_max(v);
        }
    }

    /* fold() with the rows' maximum over the whole key tile given (>= this thread's part of
     * it): the state's l and e then hold this part's share only, and the parts' shares add. */
    template <bool kEntropy>
    __device__ __forceinline__ void fold_with_max(float (&s)[kSTiles][kCRegs], const float (&m)[kRowHalves],
                                                  float score_mul, float (&alpha)[kRowHalves]) {
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) fold_row<kEntropy>(s, h, fmaxf(row_max[h], m[h]), score_mul, alpha);
    }

    /* Row half h of fold: m_new is the row's new running max (the old one included). */
    template <bool kEntropy>
    __device__ __forceinline__ void fold_row(float (&s)[kSTiles][kCRegs], int h, float m_new, float score_mul,
                                             float (&alpha)[kRowHalves]) {
        const float m_old = row_max[h];
        row_max[h] = m_new;
        // Guard: a still fully masked row subtracts 0, so 2^(-inf - 0) = 0, never -inf + inf.
        const float m_new_scaled = m_new == neg_inf() ? 0.0f : m_new * score_mul;
        const float m_old_scaled = m_old * score_mul;  // -inf stays -inf (score_mul > 0)
        alpha[h] = fast_exp2(m_old_scaled - m_new_scaled);
        float sum = 0.0f;
        float ent = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
            for (int e = 0; e < kPairElems; ++e) {
                float &v = s[nt][mma_c_index(h, e)];
                const float y = fmaf(v, score_mul, -m_new_scaled);  // x - m, log2 units
                const float p = fast_exp2(y);
                v = p;
                sum += p;
                if constexpr (kEntropy) ent = fmaf(p, fmaxf(y, kEntropyMinLog2), ent);
            }
        if constexpr (kEntropy) {
            // m_old = -inf means l = e = 0 so far: skip the (m - m') l term (-inf * 0).
            const float shift = m_old == neg_inf() ? 0.0f : m_old_scaled - m_new_scaled;
            row_ent[h] = alpha[h] * fmaf(shift, row_sum[h], row_ent[h]) + ent;
        }
        row_sum[h] = fmaf(alpha[h], row_sum[h], sum);
    }

    /* The O half of update(): O *= alpha per row. */
    __device__ __forceinline__ void rescale(float (&o)[kOTiles][kCRegs],
                                            const float (&alpha)[kRowHalves]) const {
        if (__any_sync(kFullWarpMask, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
            for (int ot = 0; ot < kOTiles; ++ot)
#pragma unroll
                for (int c = 0; c < kCRegs; ++c) o[ot][c] *= alpha[mma_c_row_half(c)];
        }
    }

    /* Row results after the last tile (quad-reduces l and e; every thread of the quad gets
     * them). o: the row block's O accumulators, probed for a non-finite value (see below). */
    __device__ __forceinline__ RowResult finalize(int h, float score_mul,
                                                  const float (&o)[kOTiles][kCRegs]) const {
        const float l = quad_allreduce_sum(row_sum[h]);
        const float e = quad_allreduce_sum(row_ent[h]);
        // 0 * o is +-0 for finite o and NaN for NaN or inf: summed over the quad's share of the
        // row, a NaN exactly when some O element of the row is not finite (a NaN or inf in v,
        // which leaves l finite). Adding it to lse makes that row's lse NaN, so no merge can
        // weigh the row's O by 0 and drop the NaN (+-0 leaves every other lse, -inf included,
        // unchanged). Epilogue only: d / 4 FFMA per row.
        float probe = 0.0f;
#pragma unroll
        for (int ot = 0; ot < kOTiles; ++ot)
#pragma unroll
            for (int i = 0; i < kPairElems; ++i) probe = fmaf(0.0f, o[ot][mma_c_index(h, i)], probe);
        probe = quad_allreduce_sum(probe);
        RowResult r;
        // l >= ~1 whenever the row saw an unmasked key (its max gives 2^0); l is 0 for a fully
        // masked row and NaN when a NaN score reached it (l > 0 would take NaN for "no keys").
        if (l != 0.0f) {
            const float log2_l = fast_log2(l);
            r.inv_sum = 1.0f / l;
            r.lse = (row_max[h] * score_mul + log2_l) * kLn2 + probe;
            r.entropy = clamp_nonneg_keep_nan((log2_l - e * r.inv_sum) * kLn2) + probe;
        } else {
            r.inv_sum = 0.0f;
            r.lse = neg_inf() + probe;
            r.entropy = 0.0f + probe;
        }
        return r;
    }
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_SOFTMAX_CUH
