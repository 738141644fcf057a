/*
 * mask.cuh: which keys a query row may see, and the score modifiers, for one batch item.
 *
 * Semantics (src/options.rs): rows i in [0, sq), keys j in [0, sk), shift = sk - sq (bottom-right
 * aligned diagonal). Causal masks j > i + shift; the window masks j < i + shift - window_left
 * (window_left >= 0) and j > i + shift + window_right (window_right >= 0); keys j >= sk are always
 * masked. So row i sees exactly the keys [key_lo(i), key_hi(i)); both bounds are nondecreasing in
 * i, which gives the KV tile range of a CTA and the test for tiles that need no per-element mask.
 * Score modifiers, applied to s = scale q.k in this order: softcap c > 0: s = c tanh(s / c);
 * ALiBi: s -= slope[h] |i + shift - j|. The kernel keeps scores in log2 units (x = s log2 e).
 *
 * 32-bit arithmetic: every value formed here lies in (-(sq + sk), sq + sk + block_n]: a window
 * bound that cannot bind (right >= sq, left >= sk) is dropped before use, so window sizes never
 * enter a sum unclamped. Validation guarantees sq + sk + FLASHMHA_SEQLEN_HEADROOM < 2^31 per batch
 * item (params.h), and fwd_traits.cuh asserts block_n <= that headroom.
 */
#ifndef FLASHMHA_COMMON_MASK_CUH
#define FLASHMHA_COMMON_MASK_CUH

#include <stdint.h>

#include "params.h"
#include "common/mma.cuh"
#include "common/softmax.cuh"

namespace flashmha {

/* Rows and keys of one batch item (padded or varlen layout). */
struct SeqExtent {
    int64_t q_row0;  // first row of the item in the q/o row dimension (varlen: cu_seqlens_q[b])
    int64_t k_row0;  // same for k/v
    int sq;
    int sk;
};

__device__ __forceinline__ SeqExtent seq_extent(const FlashFwdParams &p, int batch) {
    SeqExtent e;
    if (p.flags & FLASHMHA_FLAG_VARLEN) {
        // Device-resident indices: checked against the tensor sizes in params before any use
        // (DESIGN.md section 2); a violation traps instead of reading or writing out of bounds.
        const int q0 = p.cu_seqlens_q[batch];
        const int q1 = p.cu_seqlens_q[batch + 1];
        const int k0 = p.cu_seqlens_k[batch];
        const int k1 = p.cu_seqlens_k[batch + 1];
        const bool q_ok = 0 <= q0 && q0 <= q1 && q1 <= p.total_q && q1 - q0 <= p.seqlen_q;
        const bool k_ok = 0 <= k0 && k0 <= k1 && k1 <= p.total_k && k1 - k0 <= p.seqlen_k;
        if (!(q_ok && k_ok)) __trap();
        e.q_row0 = q0;
        e.k_row0 = k0;
        e.sq = q1 - q0;
        e.sk = k1 - k0;
    } else {
        e.q_row0 = 0;
        e.k_row0 = 0;
        e.sq = p.seqlen_q;
        e.sk = p.seqlen_k;
    }
    return e;
}

/* A KV tile starting at key n0 needs per-element masking unless every row of the CTA sees all of
 * it; the visible-key bounds being nondecreasing in the row, checking the first row's key_hi and
 * the last row's key_lo suffices (two compares per tile). */
template <int kBlockN>
struct PartialTileTest {
    int key_hi_first;
    int key_lo_last;
    __device__ __forceinline__ bool operator()(int n0) const {
        return n0 + kBlockN > key_hi_first || n0 < key_lo_last;
    }
};

struct KeyMask {
    int sk;
    int shift;     // sk - sq
    int left;      // window_left, only if has_left
    int right;     // effective right bound (0 with causal), only if has_right
    bool has_left;
    bool has_right;

    __device__ __forceinline__ KeyMask(const FlashFwdParams &p, int sq, int sk_) : sk(sk_) {
        shift = sk - sq;
        const bool causal = (p.flags & FLASHMHA_FLAG_CAUSAL) != 0;
        const bool window = (p.flags & FLASHMHA_FLAG_WINDOW) != 0;
        has_left = window && p.window_left >= 0 && p.window_left < sk;  // >= sk never binds
        left = has_left ? p.window_left : 0;
        // Causal is the window right bound 0, and min(right, 0) = 0 for any right >= 0.
        const bool window_right = window && p.window_right >= 0;
        right = causal ? 0 : (window_right ? p.window_right : 0);
        has_right = (causal || window_right) && right < sq;  // >= sq never binds
    }

    /* Row i sees keys [key_lo(i), key_hi(i)) (empty if key_hi <= key_lo). */
    __device__ __forceinline__ int key_lo(int i) const {
        return has_left ? max(i + shift - left, 0) : 0;
    }
    __device__ __forceinline__ int key_hi(int i) const {
        return has_right ? min(i + shift + right + 1, sk) : sk;
    }

    /* KV tiles [begin, end) that rows [row_first, row_last] can see (end <= begin: none). */
    template <int kBlockN>
    __device__ __forceinline__ int kv_tile_begin(int row_first) const {
        return key_lo(row_first) / kBlockN;
    }
    template <int kBlockN>
    __device__ __forceinline__ int kv_tile_end(int row_last) const {
        const int hi = key_hi(row_last);
        return hi > 0 ? (hi + kBlockN - 1) / kBlockN : 0;
    }
    /* The per-CTA test for tiles that need per-element masking (see PartialTileTest). */
    template <int kBlockN>
    __device__ __forceinline__ struct PartialTileTest<kBlockN> partial_tile_test(int row_first,
                                                                                 int row_last) const;
};

template <int kBlockN>
__device__ __forceinline__ PartialTileTest<kBlockN> KeyMask::partial_tile_test(int row_first,
                                                                              int row_last) const {
    return PartialTileTest<kBlockN>{key_hi(row_first), key_lo(row_last)};
}

/* Per-element mask of one score tile: the thread's rows have visible keys [lo, hi) (absolute),
 * the tile starts at key n0. Masked scores become -inf. */
template <int kSTiles>
__device__ __forceinline__ void apply_key_mask(float (&s)[kSTiles][kCRegs], const int (&lo)[kRowHalves],
                                               const int (&hi)[kRowHalves], int n0, int lane) {
#pragma unroll
    for (int h = 0; h < kRowHalves; ++h) {
        const int lo_rel = lo[h] - n0;
        const int hi_rel = hi[h] - n0;
#pragma unroll
        for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
            for (int e = 0; e < kPairElems; ++e) {
                const int c = mma_c_index(h, e);
                const int col = nt * kMmaN + mma_c_col(lane, c);
                if (col < lo_rel || col >= hi_rel) s[nt][c] = neg_inf();
            }
    }
}

/* Softcap and ALiBi: turn raw q.k accumulators into log2-domain scores x (then score_mul = 1). */
struct ScoreMod {
    bool softcap;
    bool alibi;
    float scale_log2;   // plain path: x = acc * scale log2 e
    float softcap_pre;  // scale / c
    float softcap_post; // c log2 e
    float alibi_log2;   // slope[h] log2 e

    __device__ __forceinline__ ScoreMod(const FlashFwdParams &p, int head) {
        softcap = p.softcap > 0.0f;
        alibi = p.alibi_slopes != nullptr;
        scale_log2 = p.scale_log2;
        softcap_pre = softcap ? p.scale / p.softcap : 0.0f;
        softcap_post = p.softcap * kLog2e;
        alibi_log2 = alibi ? p.alibi_slopes[head] * kLog2e : 0.0f;
    }
    __device__ __forceinline__ bool any() const { return softcap || alibi; }
    /* What OnlineSoftmax multiplies S by. */
    __device__ __forceinline__ float score_mul() const { return any() ? 1.0f : scale_log2; }

    /* diag[h] = i_h + shift - n0 for the thread's two rows: the ALiBi distance of key n0 + col
     * is |diag - col|. */
    template <bool kSoftcap, bool kAlibi, int kSTiles>
    __device__ __forceinline__ void apply(float (&s)[kSTiles][kCRegs], const int (&diag)[kRowHalves],
                                          int lane) const {
#pragma unroll
        for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
            for (int c = 0; c < kCRegs; ++c) {
                float x;
                if constexpr (kSoftcap) {
                    x = softcap_post * fast_tanh(s[nt][c] * softcap_pre);
                } else {
                    x = s[nt][c] * scale_log2;
                }
                if constexpr (kAlibi) {
                    const int col = nt * kMmaN + mma_c_col(lane, c);
                    const int dist = abs(diag[mma_c_row_half(c)] - col);
                    x = fmaf(-alibi_log2, static_cast<float>(dist), x);
                }
                s[nt][c] = x;
            }
    }

    template <int kSTiles>
    __device__ __forceinline__ void apply_any(float (&s)[kSTiles][kCRegs], const int (&diag)[kRowHalves],
                                              int lane) const {
        if (softcap) {
            if (alibi) apply<true, true>(s, diag, lane);
            else apply<true, false>(s, diag, lane);
        } else {
            apply<false, true>(s, diag, lane);
        }
    }

  private:
    /* PTX ISA "tanh" (#floating-point-instructions-tanh), sm_75+. */
    static __device__ __forceinline__ float fast_tanh(float x) {
        float y;
        asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
        return y;
    }
};

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_MASK_CUH
