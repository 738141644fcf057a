/*
 * mask.cuh: which keys a query row may see, and the score modifiers, for one batch item: the
 * one mask / modifier vocabulary of the forward (Ampere, Turing, sm_90a) and decode CTA bodies.
 *
 * Semantics (src/common/options.rs): rows i in [0, sq), keys j in [0, sk), shift = sk - sq (bottom-right
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
#include "common/codegen.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/state_merge.cuh"

namespace flashmha {

/* Rows and keys of one batch item (padded or varlen layout). */
struct SeqExtent {
    int64_t q_row0;  // first row of the item in the q/o row dimension (varlen: cu_seqlens_q[b])
    int64_t k_row0;  // same for k/v
    int sq;
    int sk;
};

/* Rows [start, start + len) of batch item `batch` from a device-resident cu_seqlens array
 * ([b + 1]), which the host cannot vouch for at launch time: checked against the tensor's rows
 * (total) and the maximum length before any use (params.h); a violation traps instead of
 * reading or writing out of bounds. The forward's q and k rows and decode's q rows. */
struct SeqRows {
    int start;
    int len;
};
__device__ __forceinline__ SeqRows checked_seq_rows(const int32_t *cu_seqlens, int batch, int total,
                                                    int max_len) {
    const int r0 = cu_seqlens[batch];
    const int r1 = cu_seqlens[batch + 1];
    if (!(0 <= r0 && r0 <= r1 && r1 <= total && r1 - r0 <= max_len)) __trap();
    return SeqRows{r0, r1 - r0};
}

/* For any params struct with the forward's sequence fields (FlashFwdParams, FlashBwdParams):
 * cu_seqlens_q / _k, total_q / _k, seqlen_q / _k and opt.flags. */
template <class Params>
__device__ __forceinline__ SeqExtent seq_extent(const Params &p, int batch) {
    SeqExtent e;
    if (p.opt.flags & FLASHMHA_FLAG_VARLEN) {
        const SeqRows q = checked_seq_rows(p.cu_seqlens_q, batch, p.total_q, p.seqlen_q);
        const SeqRows k = checked_seq_rows(p.cu_seqlens_k, batch, p.total_k, p.seqlen_k);
        e.q_row0 = q.start;
        e.k_row0 = k.start;
        e.sq = q.len;
        e.sk = k.len;
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

/* The key mask of one batch item (and, for decode, one split): the forward, sm_90a and decode
 * CTA bodies all build it from their params' option block (params.h, FlashAttnOptions: flags,
 * window_left, window_right). */
struct KeyMask {
    int sk;
    int shift;     // sk - sq
    int left;      // window_left, only if has_left
    int right;     // effective right bound (0 with causal), only if has_right
    bool has_left;
    bool has_right;
    int lo_min;    // keys below it are masked: 0, or the first key of a decode split
    int hi_max;    // keys at or past it are masked: sk, or the end of a decode split

    __device__ __forceinline__ KeyMask(const FlashAttnOptions &p, int sq, int sk_)
        : sk(sk_), lo_min(0), hi_max(sk_) {
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

    /* Restricts the visible keys to [lo, hi) as well (decode's split; 0 <= lo, hi <= sk). */
    __device__ __forceinline__ void clamp_keys(int lo, int hi) {
        lo_min = lo;
        hi_max = hi;
    }

    /* Row i sees keys [key_lo(i), key_hi(i)) (empty if key_hi <= key_lo). */
    __device__ __forceinline__ int key_lo(int i) const {
        return has_left ? max(i + shift - left, lo_min) : lo_min;
    }
    __device__ __forceinline__ int key_hi(int i) const {
        return has_right ? min(i + shift + right + 1, hi_max) : hi_max;
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
 * the tile starts at key n0. Masked scores become -inf. kAbsoluteKeys picks how the test is
 * formed, not what it tests: bounds made relative to the tile once per row (the forward), or
 * each key's absolute index (decode: the relative form costs its FP8 d128 kernel a 12-byte
 * spill at sm_90's 168-register cap). */
template <bool kAbsoluteKeys = false, int kSTiles>
__device__ __forceinline__ void apply_key_mask(float (&s)[kSTiles][kCRegs], const int (&lo)[kRowHalves],
                                               const int (&hi)[kRowHalves], int n0, int lane) {
    if constexpr (kAbsoluteKeys) {
#pragma unroll
        for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
            for (int c = 0; c < kCRegs; ++c) {
                const int h = mma_c_row_half(c);
                const int key = n0 + nt * kMmaN + mma_c_col(lane, c);
                if (key < lo[h] || key >= hi[h]) s[nt][c] = neg_inf();
            }
    } else {
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
}

/* Softcap and ALiBi: turn raw q.k accumulators into log2-domain scores x (then score_mul = 1).
 * Built from the option block of the forward's or decode's params (FlashAttnOptions). The
 * ALiBi slope is per row: one head per CTA in the forward, rows of several query heads in a
 * decode CTA (GQA packing). */
struct ScoreMod {
    bool softcap;
    bool alibi;
    float scale_log2;   // plain path: x = acc * scale log2 e
    float softcap_pre;  // scale / c
    float softcap_post; // c log2 e

    __device__ __forceinline__ explicit ScoreMod(const FlashAttnOptions &p) {
        softcap = p.softcap > 0.0f;
        alibi = p.alibi_slopes != nullptr;
        scale_log2 = p.scale_log2;
        softcap_pre = softcap ? p.scale / p.softcap : 0.0f;
        softcap_post = p.softcap * kLog2e;
    }
    /* slope[head] log2 e: the ALiBi slope of a row of that query head, 0 without ALiBi. */
    __device__ __forceinline__ float alibi_log2(const FlashAttnOptions &p, int head) const {
        return alibi ? p.alibi_slopes[head] * kLog2e : 0.0f;
    }
    /* Every score times k as well (decode's FP8 K scale, fp8.cuh). */
    __device__ __forceinline__ void scale_scores(float k) {
        scale_log2 *= k;
        softcap_pre *= k;
    }
    __device__ __forceinline__ bool any() const { return softcap || alibi; }
    /* What OnlineSoftmax multiplies S by. */
    __device__ __forceinline__ float score_mul() const { return any() ? 1.0f : scale_log2; }

    /* diag[h] = i_h + shift - n0 for the thread's two rows: the ALiBi distance of key n0 + col
     * is |diag - col|; alibi_log2[h]: those rows' slopes (alibi_log2()). The one formula of the
     * modifiers; softcap_on / alibi_on are bool (tested per score: decode, where a variant per
     * modifier mix costs sm_75 registers) or Int<0 / 1> (folded: the forward's variants). */
    template <int kSTiles, class SoftcapOn, class AlibiOn>
    __device__ __forceinline__ void apply(float (&s)[kSTiles][kCRegs], const int (&diag)[kRowHalves],
                                          const float (&alibi_log2)[kRowHalves], int lane,
                                          SoftcapOn softcap_on, AlibiOn alibi_on) const {
#pragma unroll
        for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
            for (int c = 0; c < kCRegs; ++c) {
                float x;
                if (softcap_on) {
                    x = softcap_post * fast_tanh(s[nt][c] * softcap_pre);
                } else {
                    x = s[nt][c] * scale_log2;
                }
                if (alibi_on) {
                    const int h = mma_c_row_half(c);
                    const int col = nt * kMmaN + mma_c_col(lane, c);
                    const int dist = abs(diag[h] - col);
                    x = fmaf(-alibi_log2[h], static_cast<float>(dist), x);
                }
                s[nt][c] = x;
            }
    }

    /* apply() for the modifiers this call has (any() must be true): one compiled variant per
     * mix (kStatic) or one body testing the flags per score. */
    template <bool kStatic, int kSTiles>
    __device__ __forceinline__ void apply_any(float (&s)[kSTiles][kCRegs], const int (&diag)[kRowHalves],
                                              const float (&alibi_log2)[kRowHalves], int lane) const {
        if constexpr (kStatic) {
            if (softcap) {
                if (alibi) apply(s, diag, alibi_log2, lane, Int<1>{}, Int<1>{});
                else apply(s, diag, alibi_log2, lane, Int<1>{}, Int<0>{});
            } else {
                apply(s, diag, alibi_log2, lane, Int<0>{}, Int<1>{});
            }
        } else {
            apply(s, diag, alibi_log2, lane, softcap, alibi);
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

/* One m16 row block's scores s of the tile starting at key n0 through the score modifiers (if
 * want_mod) and the per-element mask (if mask_tile: an edge tile); rows[h]: the thread's two
 * rows' query index within the item, alibi_log2[h] their slopes, shift = sk - sq.
 * bounds(h, lo, hi) gives row h's visible keys [lo, hi) (called only on edge tiles);
 * kStaticModifiers picks ScoreMod::apply_any's dispatch, kAbsoluteKeys apply_key_mask's form
 * (both codegen choices for register pressure). Every CTA body calls this, through the
 * KeyMask overload below (the forward) or, in decode, with bounds it keeps in registers. */
template <bool kStaticModifiers, bool kAbsoluteKeys, int kSTiles, class Bounds>
__device__ __forceinline__ void modify_and_mask(float (&s)[kSTiles][kCRegs], int shift,
                                                const ScoreMod &mod,
                                                const float (&alibi_log2)[kRowHalves],
                                                const int (&rows)[kRowHalves], int n0, bool want_mod,
                                                bool mask_tile, int lane, Bounds &&bounds) {
    if (want_mod) {  // softcap / ALiBi: S -> log2-domain scores
        int diag[kRowHalves];
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) diag[h] = rows[h] + shift - n0;
        mod.template apply_any<kStaticModifiers>(s, diag, alibi_log2, lane);
    }
    if (mask_tile) {  // rare (edge tiles)
        int key_lo[kRowHalves];
        int key_hi[kRowHalves];
#pragma unroll
        for (int h = 0; h < kRowHalves; ++h) bounds(h, key_lo[h], key_hi[h]);
        apply_key_mask<kAbsoluteKeys>(s, key_lo, key_hi, n0, lane);
    }
}
/* The same with the bounds recomputed from the mask on edge tiles (not kept in registers). */
template <int kSTiles>
__device__ __forceinline__ void modify_and_mask(float (&s)[kSTiles][kCRegs], const KeyMask &mask,
                                                const ScoreMod &mod,
                                                const float (&alibi_log2)[kRowHalves],
                                                const int (&rows)[kRowHalves], int n0, bool want_mod,
                                                bool mask_tile, int lane) {
    modify_and_mask<true, false>(s, mask.shift, mod, alibi_log2, rows, n0, want_mod, mask_tile, lane,
                    [&](int h, int &lo, int &hi) {
                        lo = mask.key_lo(rows[h]);
                        hi = mask.key_hi(rows[h]);
                    });
}

/* A finished row with the options' sink of `head` joined (state_merge.cuh, join_sink), or as it
 * is without sinks: every forward epilogue (Ampere / Turing, sm_90a) ends its rows here. */
__device__ __forceinline__ RowResult with_sink(const FlashAttnOptions &o, int head, const RowResult &r) {
    return o.sinks != nullptr ? join_sink(r, o.sinks[head]) : r;
}

/* The forward's row-stats writer (Ampere / Turing and sm_90a epilogues): LSE and entropy of
 * the thread's kN rows rows[i] (within the item; rows >= sq are not written) of query head
 * `head` into lse, entropy: [b, hq, sq] (padded) or [hq, total_q] (varlen; q_row0 =
 * cu_seqlens_q[b]). Every lane of a quad holds its rows' results; lane 0 of the quad writes
 * them. rows / res point at the caller's register arrays (any shape, flattened). */
template <int kN>
__device__ __forceinline__ void write_row_stats(const FlashFwdParams &p, const SeqExtent &ext,
                                                int batch, int head, bool varlen, int lane,
                                                const int *rows, const RowResult *res) {
    const FlashAttnOptions &o = p.opt;
    if (lane_in_quad(lane) == 0 && (o.lse != nullptr || o.entropy != nullptr)) {
        const int64_t stat_off = (varlen ? 0 : batch * o.lse_batch_stride) +
                                 head * o.lse_head_stride + ext.q_row0;
#pragma unroll
        for (int i = 0; i < kN; ++i) {
            if (rows[i] < ext.sq) {
                if (o.lse != nullptr) o.lse[stat_off + rows[i]] = res[i].lse;
                if (o.entropy != nullptr) o.entropy[stat_off + rows[i]] = res[i].entropy;
            }
        }
    }
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_MASK_CUH
