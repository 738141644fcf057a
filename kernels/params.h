/*
 * params.h: the launch-parameter ABI shared by host (Rust, via bindgen in build.rs) and device
 * (CUDA, by #include). Plain C only: no C++ features, no CUDA types, so both compilers read the
 * same bytes. Every kernel entry takes exactly one of these structs by value as its only
 * parameter; there are no positional argument lists.
 *
 * Conventions
 *  - Pointers are device addresses; a NULL optional pointer switches the feature off.
 *  - Strides are in elements (not bytes) and are int64 so that no host-side product overflows;
 *    the last dimension (head dim) is always contiguous (stride 1).
 *  - Lengths are int32: validation guarantees that every index the kernel forms fits in 32 bits
 *    where the kernel uses 32-bit math (see src/ops/forward/validate.rs).
 */
#ifndef FLASHMHA_PARAMS_H
#define FLASHMHA_PARAMS_H

#include <stdint.h>

/* Bits of FlashAttnOptions.flags (the opt of every attention params struct). */
#define FLASHMHA_FLAG_CAUSAL 0x1u /* bottom-right aligned causal mask (when seqlen_q != seqlen_k) */
#define FLASHMHA_FLAG_WINDOW 0x2u /* sliding window [i - window_left, i + window_right] */
#define FLASHMHA_FLAG_VARLEN 0x4u /* packed [total, h, d] layout through cu_seqlens_q / _k */

/*
 * Limits shared by host validation (Rust reads them through bindgen) and the kernels (which
 * static_assert their own constants against them). Defined here once.
 */
/* One cp.async / ldmatrix row: q/k/v/o base addresses, strides and head_dim * element size must be
 * multiples of it. */
#define FLASHMHA_COPY_ALIGN_BYTES 16
/* The mask and ALiBi math forms i + (sk - sq) +- window + 1 in int32 (kernels/common/mask.cuh):
 * seqlen_q + seqlen_k + FLASHMHA_SEQLEN_HEADROOM must stay below 2^31 for every batch item. */
#define FLASHMHA_SEQLEN_HEADROOM 256
/* Largest opt-in dynamic shared memory per CTA on every cubin target: sm_86 / sm_89 allow 99 KiB
 * (CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"). */
#define FLASHMHA_MAX_DYNAMIC_SMEM_BYTES 101376
/* The same on sm_75 (Turing: 64 KiB of shared memory per SM, all of it opt-in to one CTA; same
 * table). The Turing kernels (kernels/sm75/) are tiled to fit it. */
#define FLASHMHA_SM75_MAX_DYNAMIC_SMEM_BYTES 65536

/*
 * The attention options: masks, score modifiers and the optional per-row outputs, one block
 * that every attention params struct embeds as its field `opt` (FlashFwdParams, and through its
 * base FlashFwdTmaParams; FlashDecodeParams), packed by one host function (src/common/options_abi.rs)
 * and read by one device vocabulary (kernels/common/mask.cuh: KeyMask, ScoreMod,
 * write_row_stats). A new option is added here, there and in the packer.
 *   lse, entropy: [b, hq, sq] (padded) or [hq, total_q] (varlen), f32, natural log, at
 *                 b * lse_batch_stride (padded only) + h * lse_head_stride + row; -inf / 0 for a
 *                 row with no unmasked key, NaN / NaN when a NaN reached the row's scores or
 *                 output (src/common/options.rs, kernels/common/softmax.cuh).
 */
typedef struct FlashAttnOptions {
    float *lse;                /* optional: log-sum-exp of each score row (natural log) */
    float *entropy;            /* optional: Shannon entropy of each attention row (nats) */
    const float *alibi_slopes; /* optional: [hq], bias -slope * |i + sk - sq - j| added to scaled scores */
    const float *head_gates;   /* optional: [hq], O of head h is multiplied by gate[h] */
    const float *sinks;        /* optional: [hq], attention-sink logit of head h: one more term
                                  exp(sinks[h]) in every row's softmax denominator, with no value
                                  (kernels/common/state_merge.cuh, join_sink) */
    int64_t lse_batch_stride, lse_head_stride; /* shared by lse and entropy; row stride is 1 */
    float scale;        /* softmax scale applied to q.k (natural domain), usually 1/sqrt(d) */
    float scale_log2;   /* scale * log2(e): the kernel works in the log2 domain */
    float softcap;      /* > 0: scores become softcap * tanh(score * scale / softcap); 0 = off */
    int32_t window_left;  /* with FLASHMHA_FLAG_WINDOW; < 0 means unbounded on that side */
    int32_t window_right;
    uint32_t flags;       /* FLASHMHA_FLAG_* (decode: and FLASHMHA_DECODE_FLAG_*) */
} FlashAttnOptions;

/*
 * Forward attention (prefill). Shapes, in elements:
 *   padded layout:  q: [b, sq, hq, d]   k, v: [b, sk, hkv, d]   o: [b, sq, hq, d]
 *   varlen layout:  q: [total_q, hq, d] k, v: [total_k, hkv, d] o: [total_q, hq, d]
 *                   batch item i owns rows cu_seqlens_q[i] .. cu_seqlens_q[i+1] (same for k);
 *                   the *_batch_stride fields are then ignored. cu_seqlens live in device
 *                   memory the host cannot vouch for at launch time: the kernel checks every
 *                   entry it reads (0 <= start <= end <= total, end - start <= seqlen max)
 *                   against total_q / total_k / seqlen_q / seqlen_k and traps on violation.
 *   lse, entropy:   in opt (FlashAttnOptions).
 */
typedef struct FlashFwdParams {
    const void *q; /* f16 or bf16, as the entry's name says */
    const void *k;
    const void *v;
    void *o;
    const int32_t *cu_seqlens_q; /* [b + 1], required with FLASHMHA_FLAG_VARLEN */
    const int32_t *cu_seqlens_k; /* [b + 1], required with FLASHMHA_FLAG_VARLEN */

    int64_t q_batch_stride, q_row_stride, q_head_stride;
    int64_t k_batch_stride, k_row_stride, k_head_stride;
    int64_t v_batch_stride, v_row_stride, v_head_stride;
    int64_t o_batch_stride, o_row_stride, o_head_stride;
    FlashAttnOptions opt;

    int32_t batch;
    int32_t num_heads_q;
    int32_t num_heads_kv; /* num_heads_q % num_heads_kv == 0 (GQA / MQA) */
    int32_t head_dim;     /* <= the entry's compiled head dim, a multiple of 8: the columns
                             beyond it are predicated off (zero-filled in shared memory, never
                             read from or written to global memory) */
    int32_t seqlen_q;     /* padded: the length; varlen: the maximum over the batch */
    int32_t seqlen_k;
    int32_t total_q;      /* rows of the q / o tensors: varlen total_q, padded b * sq */
    int32_t total_k;      /* rows of the k / v tensors: varlen total_k, padded b * sk */
} FlashFwdParams;

/*
 * Backward attention (kernels/sm80/flash_bwd.cu; issue 21): dQ, dK, dV of the forward above
 * from q, k, v, o, the output gradient d_o and the forward's LSE, in three launches sharing this
 * struct:
 *   1. flashmha_bwd_dot_<dtype>: delta = rowsum(d_o * o) per (row, head), f32, and zeroes the
 *      dq_accum rows it covers (one warp per (row, head) of the q rows);
 *   2. flashmha_bwd_<dtype>_d<head_dim>: one CTA per (block_n keys, kv head, batch item); for
 *      every query head of the kv head's group and every query tile that sees its keys it
 *      recomputes P = exp(S - LSE), accumulates dV += P^T dO and dK += dS^T Q in registers
 *      (dS = P * (dP - delta), dP = dO V^T) and adds dS K into dq_accum with f32 atomics;
 *   3. flashmha_bwd_convert_dq_<dtype>: dq = scale * dq_accum in the element type.
 * Shapes, in elements (padded / varlen as in FlashFwdParams; d_o and dq are laid out like q, dk
 * and dv like k, each through its own strides):
 *   q, o, d_o, dq:  [b, sq, hq, d] or [total_q, hq, d]
 *   k, v, dk, dv:   [b, sk, hkv, d] or [total_k, hkv, d]
 *   opt.lse:        the forward's LSE (input here), [b, hq, sq] or [hq, total_q], f32
 *   delta:          f32 workspace in the LSE's layout (opt.lse_batch_stride / _head_stride)
 *   dq_accum:       f32 workspace [dq_slices, total_q, hq, head_dim], contiguous; total_q = b * sq
 *                   padded
 * cu_seqlens are device data, checked by every kernel that reads them (a violation traps).
 * opt.entropy must be NULL. With GQA the CTA of a kv head sums dK / dV over its query heads.
 * Options as the forward's (opt): masks, scale, softcap (its tanh derivative), ALiBi slopes, head
 * gates (O = gate O_u: dV and dP carry the gate; d_head_gates[h] = sum over head h's rows of
 * dO . O_u: the main kernel adds each warp's partial into it with f32 atomics after the dot kernel
 * zeroed it, or, in deterministic mode (gate_partials set), stores the partial into its own slot
 * and the convert kernel sums the slots in order), sinks (opt.sinks: the forward's LSE includes
 * them, so dQ, dK, dV need nothing more; d_sinks[h] = -sum over head h's rows i of
 * exp(sinks[h] - lse_i) delta_i, an ordered sum in the convert kernel).
 */
typedef struct FlashBwdParams {
    const void *q;
    const void *k;
    const void *v;
    const void *o;
    const void *d_o;
    void *dq;
    void *dk;
    void *dv;
    float *dq_accum;
    float *delta;
    float *d_head_gates;         /* optional, with opt.head_gates: [hq] f32, d(loss) / d(gate) */
    float *d_sinks;              /* optional, with opt.sinks: [hq] f32, d(loss) / d(sink) */
    float *gate_partials;        /* deterministic mode with d_head_gates, else NULL: f32 workspace
                                    [hq, gate_partials_per_head], slot (batch item, key block,
                                    warp) of head h = ((b * key_blocks + n) * warps + w) */
    const int32_t *cu_seqlens_q; /* [b + 1], required with FLASHMHA_FLAG_VARLEN */
    const int32_t *cu_seqlens_k;

    int64_t q_batch_stride, q_row_stride, q_head_stride;
    int64_t k_batch_stride, k_row_stride, k_head_stride;
    int64_t v_batch_stride, v_row_stride, v_head_stride;
    int64_t o_batch_stride, o_row_stride, o_head_stride;
    int64_t do_batch_stride, do_row_stride, do_head_stride;
    int64_t dq_batch_stride, dq_row_stride, dq_head_stride;
    int64_t dk_batch_stride, dk_row_stride, dk_head_stride;
    int64_t dv_batch_stride, dv_row_stride, dv_head_stride;
    FlashAttnOptions opt;

    int32_t batch;
    int32_t num_heads_q;
    int32_t num_heads_kv;
    int32_t head_dim;     /* <= the entry's compiled head dim, a multiple of 8 (as the forward) */
    int32_t seqlen_q;     /* padded: the length; varlen: the maximum over the batch */
    int32_t seqlen_k;
    int32_t total_q;      /* rows of q / o / d_o / dq (padded: b * sq) */
    int32_t total_k;      /* rows of k / v / dk / dv (padded: b * sk) */
    int32_t dq_slices;    /* 1: dq_accum is one accumulator the main kernel adds to with f32
                             atomics; > 1 (deterministic mode): ceil(seqlen_k / block_n) slices
                             of [total_q, hq, head_dim], key block n storing its share into slice
                             n, summed in slice order by the convert kernel: bitwise reproducible */
    int32_t gate_partials_per_head; /* batch * key blocks (the main grid's x) * main-kernel warps;
                                       0 without gate_partials */
} FlashBwdParams;

/*
 * Forward-mode (JVP) attention (kernels/sm80/flash_jvp.cu, kernels/common/flash_jvp_cta.cuh;
 * issue 22): O = attention(q, k, v) and its directional derivative O' along the tangents
 * (dq, dk, dv), in one pass. base: the forward's params (q, k, v, o, cu_seqlens, strides,
 * options, shapes; opt.lse and opt.entropy must be NULL). Every tangent is laid out exactly like
 * its primal, through the primal's strides in base: dq like q, dk like k, dv like v, o_tangent
 * like o. Head gates scale O and O' (the gate is a constant of the JVP).
 */
typedef struct FlashJvpParams {
    FlashFwdParams base;
    const void *dq;
    const void *dk;
    const void *dv;
    void *o_tangent;
} FlashJvpParams;

/* Rows (warps) per CTA of the dot and convert kernels: one warp per (q row, head). */
#define FLASHMHA_BWD_ROW_WARPS 4

/*
 * Hopper forward (kernels/sm90/flash_fwd_sm90.cu, sm_90a: TMA + wgmma + mbarrier). The kernel
 * takes FlashFwdTmaParams: the forward params plus three tensor maps through which its TMA
 * loads Q, K and V tiles. A tensor map is a CUtensorMap (CUDA Driver API, "Tensor Map Object
 * Management", cuTensorMapEncodeTiled): 128 bytes, 64-byte aligned, opaque to the kernel, which
 * only names it in cp.async.bulk.tensor. The host encodes them per launch (the CUDA backend with
 * the driver, the emulator with flashmha::emulator::TensorMap) from the plan's map description:
 *   rank 4, dimensions innermost first: (head_dim, heads, rows, batch)
 *     q_map: heads = num_heads_q,  k_map / v_map: heads = num_heads_kv;
 *     padded layout: rows = seqlen_q (q) / seqlen_k (k, v), batch = batch;
 *     varlen layout: rows = total_q / total_k, batch = 1 (the item's rows start at cu_seqlens);
 *   byte strides of dims 1..3: head, row and batch stride x element size (multiples of 16);
 *   box: (FLASHMHA_TMA_BOX_COLS, 1, block_m (q) or block_n (k, v), 1);
 *   element type u16 (f16 / bf16 bits), 128-byte swizzle, no interleave, zero out-of-bounds
 *   fill (rows past the tensor and columns past head_dim arrive as zeros).
 * The kernel issues one box per 64 columns of its compiled head dim at coordinates
 * (64 * j, head, row, batch). The base params keep every other field's meaning.
 */
#define FLASHMHA_TENSOR_MAP_BYTES 128
#define FLASHMHA_TENSOR_MAP_ALIGN 64
#define FLASHMHA_TMA_BOX_COLS 64 /* one 128-byte swizzle row of 16-bit elements */
#define FLASHMHA_TMA_RANK 4
/* Largest opt-in dynamic shared memory per CTA on sm_90 (227 KiB; CUDA C++ Programming Guide,
 * "Technical Specifications per Compute Capability"). The sm_90a tiles are sized to it. */
#define FLASHMHA_SM90_MAX_DYNAMIC_SMEM_BYTES 232448

typedef struct __attribute__((aligned(64))) FlashTensorMap {
    uint64_t opaque[FLASHMHA_TENSOR_MAP_BYTES / 8];
} FlashTensorMap;

typedef struct FlashFwdTmaParams {
    FlashTensorMap q_map; /* q as (d, hq, rows, batch), box (64, 1, block_m, 1) */
    FlashTensorMap k_map; /* k as (d, hkv, rows, batch), box (64, 1, block_n, 1) */
    FlashTensorMap v_map; /* v as k */
    FlashFwdParams base; /* 256 bytes: the struct ends on its 64-byte alignment with no tail
                            padding, so the host can view it as bytes (static_assert in
                            flash_fwd_sm90.cu) */
} FlashFwdTmaParams;

/*
 * Head similarity (diagnostics). For every token t, the cosine similarity of every pair of head
 * outputs, summed over tokens into an h x h matrix (the host divides by num_tokens):
 *   o:    [num_tokens, num_heads, head_dim] through token_stride / head_stride (f16 or bf16,
 *         as the entry's name says), last dim contiguous
 *   gram: [num_heads, num_heads] f32, zeroed by the caller; CTAs add their partial sums to it.
 * A head whose output is all zeros for a token contributes 0 to its off-diagonal pairs and 1 to
 * its diagonal entry for that token.
 */
/* The head-similarity kernel's fixed shape and limits (kernels/common/head_similarity_traits.cuh
 * static_asserts its constants against these; the Rust plan reads them through bindgen). */
#define FLASHMHA_HEADSIM_THREADS 256          /* threads per CTA; any other block size traps */
#define FLASHMHA_HEADSIM_MAX_HEADS 128        /* largest num_heads */
#define FLASHMHA_HEADSIM_MAX_HEAD_DIM 256     /* largest head_dim */
#define FLASHMHA_HEADSIM_LOAD_BYTES 16        /* one vector load: base, strides, head_dim aligned */
#define FLASHMHA_HEADSIM_TOKENS_PER_GROUP 8   /* tokens per CTA is a multiple of it */

typedef struct HeadSimParams {
    const void *o;
    float *gram;
    int64_t token_stride;
    int64_t head_stride;
    int32_t num_tokens;
    int32_t num_heads;
    int32_t head_dim;
    int32_t tokens_per_cta; /* grid.x = ceil(num_tokens / tokens_per_cta) */
} HeadSimParams;

/*
 * ABI probe: the size, alignment and field offsets of each params struct as the device compiler
 * sees them. kernels/abi_probe.cu writes these, in this order, as uint64 values; the Rust test
 * compares them with the bindgen structs. Keep each list in its struct's field order.
 */
#define FLASHMHA_ABI_PROBE_FIELDS(X)                                                               \
    X(q) X(k) X(v) X(o) X(cu_seqlens_q) X(cu_seqlens_k) X(q_batch_stride) X(q_row_stride)         \
    X(q_head_stride) X(k_batch_stride) X(k_row_stride) X(k_head_stride) X(v_batch_stride)          \
    X(v_row_stride) X(v_head_stride) X(o_batch_stride) X(o_row_stride) X(o_head_stride) X(opt)     \
    X(batch) X(num_heads_q) X(num_heads_kv) X(head_dim) X(seqlen_q) X(seqlen_k) X(total_q)         \
    X(total_k)

/* The same for FlashAttnOptions, written after FlashFwdTmaParams' values. */
#define FLASHMHA_ABI_PROBE_OPTIONS_FIELDS(X)                                                       \
    X(lse) X(entropy) X(alibi_slopes) X(head_gates) X(sinks) X(lse_batch_stride)                  \
    X(lse_head_stride) X(scale) X(scale_log2) X(softcap) X(window_left) X(window_right) X(flags)

/* The same for FlashFwdTmaParams, written after HeadSimParams' values. */
#define FLASHMHA_ABI_PROBE_TMA_FIELDS(X) X(q_map) X(k_map) X(v_map) X(base)

/* The same for HeadSimParams, written after FlashFwdParams' values. */
#define FLASHMHA_ABI_PROBE_HEADSIM_FIELDS(X)                                                       \
    X(o) X(gram) X(token_stride) X(head_stride) X(num_tokens) X(num_heads) X(head_dim)             \
    X(tokens_per_cta)

/* ==== Decode over a paged KV cache (kernels/sm80/flash_decode.cu, sm80/merge_states.cu) ==== */

/* KV-cache element formats (FlashDecodeParams.kv_format, KvAppendParams.kv_format). FP8 pages
 * hold codes of PTX ISA 5.2.5.1 (kernels/common/fp8.cuh) and are dequantised in the kernel as
 * code x scale, with f32 scales for K and for V: one per tensor (kv_scale_stride 0) or one per
 * KV head (kv_scale_stride 1). */
#define FLASHMHA_KV_FORMAT_SAME 0 /* pages hold q's dtype (f16 / bf16); scales unused */
#define FLASHMHA_KV_FORMAT_E4M3 1
#define FLASHMHA_KV_FORMAT_E5M2 2

/* Decode-only bits of FlashAttnOptions.flags (causal / window / varlen as in the forward). */
#define FLASHMHA_DECODE_FLAG_SPLIT_OUTPUT 0x10u /* write partial (O, LSE) per split to the workspace */

/* Split boundaries are multiples of this many keys (4 warps x 16-key blocks), so no key block
 * is read by two splits. */
#define FLASHMHA_DECODE_SPLIT_ALIGN 64
/* Block shapes of the merge and append kernels, which the host launches with (Rust reads them
 * through bindgen; kernels/common/merge_states_warp.cuh and kv_append_chunk.cuh take theirs
 * from here). Merge: warps per CTA (one (row, head) per warp) and O columns per lane per step
 * (so head_dim must be a multiple of it); append: threads per CTA and 16-bit elements per
 * thread (one 16-byte vector, so head_dim must be a multiple of it). */
#define FLASHMHA_MERGE_WARPS 4
#define FLASHMHA_MERGE_COLS 4
#define FLASHMHA_KV_APPEND_THREADS 128
#define FLASHMHA_KV_APPEND_CHUNK_ELEMS 8
/* Largest page size the decode kernels accept (keys per page). */
#define FLASHMHA_DECODE_MAX_PAGE_SIZE 1024
/* Cache lengths (and max_pages_per_seq * page_size) stay below this, so a key index times the
 * page-size divisor fits 64 bits (see page_div_magic) and every key index fits int32. */
#define FLASHMHA_DECODE_MAX_CACHE_KEYS (1 << 30)

/*
 * Paged decode forward. Shapes, in elements:
 *   q, o:          [b, sq_new, hq, d] (padded, *_batch_stride used) or [total_q, hq, d] (varlen:
 *                  item i owns rows cu_seqlens_q[i] .. cu_seqlens_q[i+1], batch strides ignored)
 *   k_cache, v_cache: element (page, slot, kv head, c) at page * page_stride + slot * slot_stride
 *                  + kv_head * head_stride + c: [num_pages, page_size, hkv, d] (NHD) or
 *                  [num_pages, hkv, page_size, d] (HND), both through strides
 *   block_table:   [b, max_pages_per_seq] i32 (row stride block_table_stride), device-resident
 *   cache_seqlens: [b] i32, keys of item i (new tokens included), device-resident
 *   lse, entropy:  in opt (FlashAttnOptions): [b, hq, sq_new] (padded) or [hq, total_q] (varlen)
 *   partial_o:     [num_splits, total_q, hq, d] f32 workspace (with FLASHMHA_DECODE_FLAG_SPLIT_OUTPUT)
 *   partial_lse, partial_entropy: [num_splits, total_q, hq] f32 workspace
 *   k_scales, v_scales: [hkv] (kv_scale_stride 1) or [1] (stride 0) f32, FP8 entries only; each
 *     finite and > 0 (host scales are checked before any launch, Error::InvalidScale; device
 *     scales are the caller's: 0 or a NaN gives uniform weights / O = 0 / NaN, see
 *     src/ops/decode/fp8.rs)
 * Query row i of item b sees key j < cache_seqlens[b]; causal: j <= i + cache_seqlens[b] - sq_b.
 * Every device-resident index is checked against the sizes below; a violation traps.
 */
typedef struct FlashDecodeParams {
    const void *q;
    const void *k_cache;
    const void *v_cache;
    void *o;
    const int32_t *block_table;
    const int32_t *cache_seqlens;
    const int32_t *cu_seqlens_q;  /* [b + 1], with FLASHMHA_FLAG_VARLEN */
    float *partial_o;
    float *partial_lse;
    float *partial_entropy;       /* optional, only with entropy */
    const float *k_scales;        /* FP8 entries: dequantised K = code x k_scales[h * stride] */
    const float *v_scales;

    int64_t q_batch_stride, q_row_stride, q_head_stride;
    int64_t o_batch_stride, o_row_stride, o_head_stride;
    int64_t k_page_stride, k_slot_stride, k_head_stride;
    int64_t v_page_stride, v_slot_stride, v_head_stride;
    int64_t block_table_stride;
    /* key / page_size == (key * page_div_magic) >> page_div_shift for 0 <= key < 2^30 */
    uint64_t page_div_magic;
    FlashAttnOptions opt;

    int32_t batch;
    int32_t num_heads_q;
    int32_t num_heads_kv;      /* num_heads_q % num_heads_kv == 0; grid.y = hkv * row tiles */
    int32_t head_dim;          /* 16-bit pages: <= the entry's compiled head dim, a multiple of 8
                                  (the columns past it zero-filled, never written); FP8 pages:
                                  the compiled head dim */
    int32_t seqlen_q;          /* padded: sq_new; varlen: upper bound of any item's rows */
    int32_t total_q;           /* rows of q / o (padded: batch * sq_new) */
    int32_t num_pages;         /* block_table entries must lie in [0, num_pages) */
    int32_t page_size;         /* 1 .. FLASHMHA_DECODE_MAX_PAGE_SIZE */
    int32_t max_pages_per_seq; /* cache_seqlens[i] <= max_pages_per_seq * page_size */
    int32_t page_div_shift;
    int32_t num_splits;        /* grid.x */
    int32_t split_keys;        /* > 0: fixed keys per split (batch-invariant); 0: from num_splits */
    int32_t kv_format;         /* FLASHMHA_KV_FORMAT_*; FP8 only with an FP8 entry */
    int32_t kv_scale_stride;   /* 0: one scale per tensor; 1: one per KV head */
} FlashDecodeParams;

/*
 * Merge of attention states (kernels/sm80/merge_states.cu): for every (row, head), N states
 * (O_s, LSE_s) of disjoint key sets become O = sum_s w_s O_s, LSE = log sum_s exp(LSE_s),
 * w_s = exp(LSE_s - LSE). States with LSE_s = -inf are skipped; a row whose states are all -inf
 * gets O = 0, LSE = -inf; a NaN LSE_s makes the row's O, LSE and H NaN
 * (kernels/common/state_merge.cuh). With entropies: H = sum_s w_s H_s - sum_s w_s ln w_s.
 *   o_states:   [num_states, rows, heads, d] through the state strides (f32 for the split
 *               combine, f16 / bf16 for merge_states, as the entry says)
 *   lse_states, entropy_states: [num_states, rows, heads] through the lse state strides
 *   o_states_b, lse_states_b, entropy_states_b: optional second buffers (two-state form): when
 *               o_states_b is set, num_states is 2, state 0 is read from o_states / lse_states /
 *               entropy_states and state 1 from the *_b buffers, both at the same row / head
 *               offsets; the o_state_stride and lse_state_stride fields are then ignored
 *   o:          row r at (r / rows_per_batch) * o_batch_stride + (r % rows_per_batch) * o_row_stride
 *   lse, entropy (optional): (r / rows_per_batch) * lse_batch_stride + h * lse_head_stride
 *               + r % rows_per_batch
 */
typedef struct MergeStatesParams {
    const void *o_states;
    const float *lse_states;
    const float *entropy_states; /* optional */
    const void *o_states_b;      /* optional: state 1 of the two-state form */
    const float *lse_states_b;   /* with o_states_b */
    const float *entropy_states_b; /* with o_states_b and entropy_states */
    void *o;
    float *lse;                  /* optional */
    float *entropy;              /* optional (needs entropy_states) */
    const float *head_gates;     /* optional: [heads], O of head h times gate[h] */

    int64_t o_state_stride, o_state_row_stride, o_state_head_stride;
    int64_t lse_state_stride, lse_state_row_stride, lse_state_head_stride;
    int64_t o_batch_stride, o_row_stride, o_head_stride;
    int64_t lse_batch_stride, lse_head_stride;

    int32_t num_states;
    int32_t rows;
    int32_t heads;
    int32_t head_dim;
    int32_t rows_per_batch;
    int32_t pad0;                /* keeps the struct free of implicit padding */
} MergeStatesParams;

/* Bits of KvAppendParams.flags. */
#define FLASHMHA_KV_APPEND_FLAG_SRC_BF16 0x1u /* k_new / v_new are bf16 (else f16) */

/*
 * KV append (kernels/sm80/kv_append.cu): writes new rows of K and V into the paged cache.
 *   k_new, v_new: [num_tokens, hkv, d] through token / head strides (f16 or bf16)
 *   where token t goes, one of:
 *     slot_mapping: [num_tokens] i32, slot = page * page_size + offset; < 0 skips the token;
 *     token_batch, token_pos: [num_tokens] i32 each (slot_mapping NULL): token t is position
 *                   token_pos[t] (< 0 skips it) of item token_batch[t], whose page is
 *                   block_table[token_batch[t] * block_table_stride + pos / page_size]
 *   k_cache, v_cache: as in FlashDecodeParams, of kv_format (FLASHMHA_KV_FORMAT_SAME: the
 *                   source dtype, copied; E4M3 / E5M2: code = round_to_nearest_even(x / scale),
 *                   saturated to the largest finite code, NaN kept: kernels/common/fp8.cuh)
 *   k_scales, v_scales: as in FlashDecodeParams (FP8 only)
 * Every device-resident index is checked: slots against num_pages * page_size, token_batch
 * against batch, token_pos against max_pages_per_seq * page_size, block-table entries against
 * num_pages; a violation traps.
 */
typedef struct KvAppendParams {
    const void *k_new;
    const void *v_new;
    void *k_cache;
    void *v_cache;
    const int32_t *slot_mapping;  /* NULL: token_batch / token_pos through block_table */
    const int32_t *block_table;
    const int32_t *token_batch;
    const int32_t *token_pos;
    const float *k_scales;
    const float *v_scales;

    int64_t k_new_token_stride, k_new_head_stride;
    int64_t v_new_token_stride, v_new_head_stride;
    int64_t k_page_stride, k_slot_stride, k_head_stride;
    int64_t v_page_stride, v_slot_stride, v_head_stride;
    int64_t block_table_stride;

    int32_t num_tokens;
    int32_t num_heads_kv;
    int32_t head_dim;
    int32_t num_pages;
    int32_t page_size;
    int32_t batch;             /* rows of block_table */
    int32_t max_pages_per_seq; /* columns of block_table */
    int32_t kv_format;         /* FLASHMHA_KV_FORMAT_* of the pages */
    int32_t kv_scale_stride;   /* 0: one scale per tensor; 1: one per KV head */
    uint32_t flags;            /* FLASHMHA_KV_APPEND_FLAG_* */
} KvAppendParams;

/*
 * MLA decode (multi-head latent attention with absorbed projections; issue 23 item 3;
 * kernels/sm80/flash_mla_decode.cu): every query head attends to ONE shared latent KV head whose
 * cached row holds d_qk = FLASHMHA_MLA_D_QK elements (512 latent + 64 rope); the value is the
 * first FLASHMHA_MLA_D_V elements of the same row (never stored twice). Shapes, in elements:
 *   q:        [b, sq_new, hq, d_qk] (padded) or [total_q, hq, d_qk] (varlen), as FlashDecodeParams
 *   o:        [b, sq_new, hq, d_v] / [total_q, hq, d_v]
 *   kv_cache: decode.k_cache, element (page, slot, c) at page * k_page_stride + slot *
 *             k_slot_stride + c (num_heads_kv 1; decode.v_cache and the v_* strides unused)
 *   partial_o: [num_splits, total_q, hq, d_v] f32; partial_lse / partial_entropy as decode
 * decode.head_dim is d_qk; every other field means what it means in FlashDecodeParams, and the
 * split combine is the decode's (kernels/sm80/merge_states.cu with head_dim d_v).
 */
#define FLASHMHA_MLA_D_QK 576
#define FLASHMHA_MLA_D_V 512
typedef struct FlashMlaDecodeParams {
    FlashDecodeParams decode;
    int32_t head_dim_v; /* FLASHMHA_MLA_D_V (checked by the kernel) */
    int32_t pad0;
} FlashMlaDecodeParams;

/*
 * Hopper MLA decode (kernels/sm90/flash_mla_decode_sm90.cu, sm_90a: TMA + wgmma + mbarrier): the
 * MLA params plus one tensor map over the latent pool (a FlashTensorMap, encoded per launch as
 * for FlashFwdTmaParams above):
 *   rank 4, dimensions innermost first: (FLASHMHA_MLA_D_QK, 1, page_size, num_pages), byte
 *   strides (the row's span rounded to 16, k_slot_stride x 2, k_page_stride x 2), box
 *   (FLASHMHA_TMA_BOX_COLS, 1, FLASHMHA_MLA_SM90_KEYS, 1), u16 elements, 128-byte swizzle.
 * The kernel loads key tile t of a sequence (keys 64 t ..) as 9 boxes at coordinates
 * (64 j, 0, slot of key 64 t in its page, page), so page_size must be a multiple of
 * FLASHMHA_MLA_SM90_KEYS (the plan picks the sm_80 kernel otherwise). 16-bit pages only.
 */
#define FLASHMHA_MLA_SM90_KEYS 64
typedef struct FlashMlaDecodeTmaParams {
    FlashTensorMap kv_map; /* the latent pool as (576, 1, page_size, num_pages), box (64, 1, 64, 1) */
    FlashMlaDecodeParams mla;
    uint64_t pad[4]; /* 128 + 352 + 32 = 512: ends on the 64-byte alignment, no implicit padding */
} FlashMlaDecodeTmaParams;

#define FLASHMHA_ABI_PROBE_DECODE_FIELDS(X)                                                        \
    X(q) X(k_cache) X(v_cache) X(o) X(block_table) X(cache_seqlens) X(cu_seqlens_q) X(partial_o)   \
    X(partial_lse) X(partial_entropy) X(k_scales) X(v_scales) X(q_batch_stride) X(q_row_stride)    \
    X(q_head_stride) X(o_batch_stride) X(o_row_stride) X(o_head_stride) X(k_page_stride)           \
    X(k_slot_stride) X(k_head_stride) X(v_page_stride) X(v_slot_stride) X(v_head_stride)           \
    X(block_table_stride) X(page_div_magic) X(opt) X(batch) X(num_heads_q) X(num_heads_kv)         \
    X(head_dim) X(seqlen_q) X(total_q) X(num_pages) X(page_size) X(max_pages_per_seq)              \
    X(page_div_shift) X(num_splits) X(split_keys) X(kv_format) X(kv_scale_stride)

#define FLASHMHA_ABI_PROBE_MERGE_FIELDS(X)                                                         \
    X(o_states) X(lse_states) X(entropy_states) X(o_states_b) X(lse_states_b)                     \
    X(entropy_states_b) X(o) X(lse) X(entropy) X(head_gates)                                       \
    X(o_state_stride) X(o_state_row_stride) X(o_state_head_stride) X(lse_state_stride)           \
    X(lse_state_row_stride) X(lse_state_head_stride) X(o_batch_stride) X(o_row_stride)           \
    X(o_head_stride) X(lse_batch_stride) X(lse_head_stride) X(num_states) X(rows) X(heads)       \
    X(head_dim) X(rows_per_batch) X(pad0)

#define FLASHMHA_ABI_PROBE_KV_APPEND_FIELDS(X)                                                     \
    X(k_new) X(v_new) X(k_cache) X(v_cache) X(slot_mapping) X(block_table) X(token_batch)          \
    X(token_pos) X(k_scales) X(v_scales) X(k_new_token_stride) X(k_new_head_stride)                \
    X(v_new_token_stride) X(v_new_head_stride) X(k_page_stride) X(k_slot_stride)                   \
    X(k_head_stride) X(v_page_stride) X(v_slot_stride) X(v_head_stride) X(block_table_stride)      \
    X(num_tokens) X(num_heads_kv) X(head_dim) X(num_pages) X(page_size) X(batch)                   \
    X(max_pages_per_seq) X(kv_format) X(kv_scale_stride) X(flags)

#endif /* FLASHMHA_PARAMS_H */
