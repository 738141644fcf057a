/* flashmha C ABI (Rust feature `capi`; built as libflashmha.a / libflashmha.so by the `capi/`
 * workspace member: `cargo build --release -p flashmha-capi`).
 *
 * This header is the single definition of the ABI: the Rust side's structs, enums and extern
 * declarations are generated from it by bindgen (build/capi.rs), and a compile-time check
 * (src/capi/header_check.rs) puts each generated declaration and the Rust definition in one
 * array, so a signature that drifts from this header does not compile.
 *
 * Linking. The CUDA driver is opened with dlopen at run time, so no CUDA library is needed to
 * link, nor to run without a GPU (the context calls then return FLASHMHA_ERR_NO_CUDA_DRIVER).
 *   shared: -lflashmha
 *   static: libflashmha.a bundles the Rust standard library, which needs the C runtime:
 *           -lflashmha -lm                       glibc >= 2.34 (threads, dl, rt in libc)
 *           -lflashmha -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc   any glibc (the list
 *                                                `rustc --print native-static-libs` gives)
 *   A C++ program linked with g++ / clang++ needs nothing beyond -lflashmha (libstdc++ pulls
 *   in libm). Checked on glibc 2.36 by linking a C program (gcc ... -lflashmha -lm) and the C++
 *   client capi/tests/client.cpp against libflashmha.a; without -lm a C link fails on exp2,
 *   log2, tanh, sin, cos.
 *
 * Conventions: every function but the getters returns a flashmha_status; on failure
 * flashmha_last_error_message() describes the error (thread-local, valid until the next
 * flashmha call on the same thread). No entry point lets a panic escape (it becomes
 * FLASHMHA_ERR_INTERNAL). Bad input is rejected before any launch and nothing is written.
 * Lengths are element counts, not bytes. An optional buffer is absent when its data is NULL.
 *
 * Ownership and thread safety:
 *  - Plans (flashmha_plan, flashmha_decode_plan, flashmha_mla_decode_plan, flashmha_merge_plan,
 *    flashmha_kv_append_plan) are created by their *_create function and owned by the caller,
 *    who frees each exactly once with its *_destroy (NULL is accepted and ignored). A plan is
 *    immutable: any number of
 *    threads may use one plan at the same time, on the emulator or on any context whose
 *    kernels it was planned for; destroy it after the last call that uses it has returned (a
 *    queued kernel does not reference it).
 *  - A context (flashmha_context) is created by flashmha_context_create and owned by the caller
 *    (flashmha_context_destroy, once, after every kernel launched through it has completed).
 *    Calls on one context from several threads at the same time are safe; each launch makes
 *    the context's CUDA context current on the calling thread.
 *  - Buffers and streams are always the caller's. The launching calls (flashmha_run,
 *    flashmha_forward, flashmha_decode_run, flashmha_mla_decode_run, flashmha_merge_run,
 *    flashmha_kv_append_run, flashmha_head_similarity) neither allocate (host or device memory) nor synchronise when
 *    they succeed, so they can be captured in a CUDA graph; the split workspace is the
 *    caller's too. Device buffers must stay allocated until the stream has run the kernels.
 *  - The emulator entry points (flashmha_emulate_*) use a private emulated device per call and
 *    touch only the host buffers given; they are safe to call from several threads. They
 *    check the host buffers by the GPU's rules first (sizes, 16-byte alignment where the
 *    kernels need it, no output overlapping another buffer), so a call that fails writes
 *    nothing. An output is copied back over its whole declared length: elements the kernels
 *    do not write come back as NaN (the emulator's poison), never as stale data; buffers
 *    updated in place (the KV append's pools, head similarity's gram) keep them instead.
 *
 * Forward tensors:
 *   padded:  q: [batch, seqlen_q, heads_q, d]; k: [batch, seqlen_k, heads_kv, d];
 *            v: [batch, seqlen_k, heads_kv, d_v]; o: [batch, seqlen_q, heads_q, d_v];
 *            lse, entropy: [batch, heads_q, seqlen_q] (f32)
 *   varlen:  q: [total_q, heads_q, d]; k: [total_k, heads_kv, d]; v: [total_k, heads_kv, d_v];
 *            o: [total_q, heads_q, d_v]; lse, entropy: [heads_q, total_q];
 *            cu_seqlens_q/k: [batch + 1] (int32)
 * with d = head_dim and d_v = head_dim_v (0: d), and the strides given in flashmha_shape
 * (all-zero strides mean contiguous).
 */
#ifndef FLASHMHA_H
#define FLASHMHA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Version and errors
 * ------------------------------------------------------------------------------------------ */

/* The version of this header; flashmha_version() is the library's (a test keeps both equal to
 * the crate's Cargo version). */
#define FLASHMHA_VERSION_MAJOR 0
#define FLASHMHA_VERSION_MINOR 1
#define FLASHMHA_VERSION_PATCH 0
#define FLASHMHA_VERSION_STRING "0.1.0"

/* One code per family of errors of the Rust API (flashmha::Error). */
typedef enum flashmha_status {
    FLASHMHA_OK = 0,
    /* A NULL handle or struct pointer, or a value the C structs cannot express. */
    FLASHMHA_ERR_INVALID_ARGUMENT = 1,
    /* A dimension is zero, too large, inconsistent between tensors, or heads_q % heads_kv != 0;
     * a negative stride, or an output whose elements overlap. */
    FLASHMHA_ERR_SHAPE = 2,
    /* A buffer is missing, too small, misaligned, unexpected, or aliases another. */
    FLASHMHA_ERR_BUFFER = 3,
    /* No compiled kernel for this dtype and head dim, or a dtype mismatch. */
    FLASHMHA_ERR_UNSUPPORTED = 4,
    /* A host cu_seqlens is malformed. */
    FLASHMHA_ERR_CU_SEQLENS = 5,
    /* A size overflows the kernels' 32-bit index math or CUDA's grid limits. */
    FLASHMHA_ERR_OVERFLOW = 6,
    /* softmax_scale or softcap is not finite and > 0. */
    FLASHMHA_ERR_INVALID_OPTION = 7,
    /* The NVIDIA driver library cannot be loaded (no GPU on this machine). */
    FLASHMHA_ERR_NO_CUDA_DRIVER = 8,
    /* No cubin or PTX in this build runs on the device. */
    FLASHMHA_ERR_UNSUPPORTED_GPU = 9,
    /* The CUDA driver returned an error. */
    FLASHMHA_ERR_CUDA = 10,
    /* A kernel is missing from this build. */
    FLASHMHA_ERR_NO_KERNEL = 11,
    /* The emulator failed to run the kernel, or the kernel reported findings. */
    FLASHMHA_ERR_EMULATOR = 12,
    /* Reading or writing a file failed, or a file's content is invalid. */
    FLASHMHA_ERR_IO = 13,
    /* A bug in flashmha (a Rust panic caught at the boundary), or an error of an optional
     * feature (plots, reference) that the C ABI does not use. */
    FLASHMHA_ERR_INTERNAL = 14
} flashmha_status;

typedef enum flashmha_dtype {
    FLASHMHA_DTYPE_F16 = 0,
    FLASHMHA_DTYPE_BF16 = 1
} flashmha_dtype;

/* Strides of one q/k/v/o tensor, in elements; the head dim is contiguous. */
typedef struct flashmha_strides {
    int64_t batch; /* ignored for varlen */
    int64_t row;
    int64_t head;
} flashmha_strides;

/* Scalar options; the zero-initialised struct is the default (see flashmha::AttnOptions). */
typedef struct flashmha_options {
    /* 0 = 1/sqrt(head_dim); otherwise must be finite and > 0. */
    float softmax_scale;
    /* 0 = off; otherwise must be finite and > 0. */
    float softcap;
    /* Non-zero: causal mask, bottom-right aligned. */
    int32_t causal;
    /* Non-zero: sliding window of window_left / window_right keys around the diagonal, each
     * negative for unbounded on that side. */
    int32_t window;
    int64_t window_left;
    int64_t window_right;
} flashmha_options;

/* A whole forward call without buffers (see "Forward (prefill) attention" below). */
typedef struct flashmha_shape {
    flashmha_dtype dtype;
    /* 0: padded layout; non-zero: varlen (packed rows, cu_seqlens at run time). */
    int32_t varlen;
    size_t batch;
    /* Padded: each item's lengths. Varlen: upper bounds of any item's lengths. */
    size_t seqlen_q;
    size_t seqlen_k;
    /* Varlen only: rows of the packed q/o and k/v tensors. */
    size_t total_q;
    size_t total_k;
    size_t heads_q;
    size_t heads_kv;
    /* d_qk: the head dim of q and k. */
    size_t head_dim;
    /* d_v: the head dim of v and o; 0 means head_dim (so a zero-initialised shape keeps one
     * head dim). A value other than head_dim needs a compiled (d_qk, d_v) pair, e.g. (192, 128)
     * or (128, 64); any other pair is FLASHMHA_ERR_UNSUPPORTED, and so is a pair for the
     * backward. */
    size_t head_dim_v;
    /* All four all-zero: contiguous. Otherwise each is used as given. */
    flashmha_strides q_strides;
    flashmha_strides k_strides;
    flashmha_strides v_strides;
    flashmha_strides o_strides;
    flashmha_options options;
} flashmha_shape;

/* A buffer: its base address (device memory for flashmha_run / flashmha_forward, host memory
 * for the emulator entry points) and how many elements are available from there. An optional
 * buffer is absent when data is NULL. */
typedef struct flashmha_buf {
    void *data;
    size_t len;
} flashmha_buf;

/* The buffers of one forward run. q/k/v/o hold elements of the shape's dtype; lse, entropy,
 * alibi_slopes ([heads_q]), head_gates ([heads_q]) and sinks ([heads_q]) are f32; cu_seqlens
 * are int32 and required exactly for varlen shapes. sinks: attention-sink logits, exp(sinks[h])
 * joins every softmax denominator of head h and carries no value (lse and entropy include it). */
typedef struct flashmha_bufs {
    flashmha_buf q;
    flashmha_buf k;
    flashmha_buf v;
    flashmha_buf o;
    flashmha_buf lse;
    flashmha_buf entropy;
    flashmha_buf alibi_slopes;
    flashmha_buf head_gates;
    flashmha_buf sinks;
    flashmha_buf cu_seqlens_q;
    flashmha_buf cu_seqlens_k;
} flashmha_bufs;

/* One device with the kernels of its architecture loaded (see "Ownership and thread safety"). */
typedef struct flashmha_context flashmha_context;

/* The library's version, e.g. "0.1.0" (static storage); equals FLASHMHA_VERSION_STRING when
 * the header and the library match. */
const char *flashmha_version(void);

/* The message of the last failed call on this thread ("" if none). Valid until the next
 * flashmha call on this thread. */
const char *flashmha_last_error_message(void);

/* A short static description of a status code ("success", "shape error", ...); an unknown
 * value gives "unknown flashmha_status". Never NULL, never freed. */
const char *flashmha_status_string(flashmha_status status);

/* ---------------------------------------------------------------------------------------------
 * Contexts (CUDA)
 * ------------------------------------------------------------------------------------------ */

/* Opens CUDA device `ordinal` and loads the kernels; FLASHMHA_ERR_NO_CUDA_DRIVER without a
 * driver. Free with flashmha_context_destroy. */
flashmha_status flashmha_context_create(int32_t ordinal, flashmha_context **out);
void flashmha_context_destroy(flashmha_context *ctx);

/* ---------------------------------------------------------------------------------------------
 * Forward (prefill) attention: flashmha_shape, flashmha_bufs above
 * ------------------------------------------------------------------------------------------ */

/* A validated forward launch plan for one batch shape (immutable, reusable, thread-safe). */
typedef struct flashmha_plan flashmha_plan;

/* Validates `shape` and plans it for the sm_80+ kernels; on success *out is a plan to free with
 * flashmha_plan_destroy. */
flashmha_status flashmha_plan_create(const flashmha_shape *shape, flashmha_plan **out);
/* The same for the kernels of `ctx`'s device (the Turing ones on sm_75, f16 only; on sm_90 the
 * sm_90a forward at the head dims it was compiled for, the sm_80+ one otherwise); a plan for
 * kernels the device does not run fails flashmha_run with FLASHMHA_ERR_UNSUPPORTED. */
flashmha_status flashmha_plan_create_for_context(const flashmha_context *ctx,
                                                 const flashmha_shape *shape, flashmha_plan **out);
void flashmha_plan_destroy(flashmha_plan *plan);

/* Checks `bufs` (device addresses) against `plan` in O(1) (lengths, alignment, aliasing,
 * presence) and launches on `stream` (a CUstream; NULL is the legacy default stream).
 * Asynchronous; no allocation and no synchronisation, so it can be captured in a CUDA graph.
 * The buffers must stay allocated until the stream has run the kernel. */
flashmha_status flashmha_run(const flashmha_context *ctx, const flashmha_plan *plan,
                             const flashmha_bufs *bufs, void *stream);

/* Plans `shape` and runs it: flashmha_plan_create + flashmha_run in one call. */
flashmha_status flashmha_forward(const flashmha_context *ctx, const flashmha_shape *shape,
                                 const flashmha_bufs *bufs, void *stream);

/* Runs `plan` on the PTX emulator with host buffers: checks them against the plan as
 * flashmha_run does (the same rules: lengths, 16-byte alignment, no output overlapping another
 * buffer), copies the inputs in, runs the same kernel the GPU would (every access checked), and
 * copies o (and lse / entropy when given) back. FLASHMHA_ERR_EMULATOR if the kernel reported
 * any finding. Slow: for tests and CI. */
flashmha_status flashmha_emulate_run(const flashmha_plan *plan, const flashmha_bufs *host_bufs);

/* Plans `shape` and runs it on the emulator with host buffers. */
flashmha_status flashmha_emulate_forward(const flashmha_shape *shape,
                                         const flashmha_bufs *host_bufs);

/* ---------------------------------------------------------------------------------------------
 * Backward attention: dQ, dK, dV of a forward call (flashmha_shape) from its q, k, v, o, the
 * forward's lse and the output gradient d_o; three launches (delta = rowsum(d_o * o), the main
 * kernel, the dQ conversion). sm_80+ kernels (sm_90 runs them); sm_75 has none
 * (FLASHMHA_ERR_UNSUPPORTED). With attention sinks in the forward, pass its lse (which includes
 * them): dQ, dK, dV are exact; pass the sinks and d_sinks too for d(sink).
 * ------------------------------------------------------------------------------------------ */

/* A whole backward call without buffers. */
typedef struct flashmha_bwd_shape {
    /* The forward this is the gradient of (its dtype, layout, heads, head dim, strides of q, k,
     * v, o, options). */
    flashmha_shape fwd;
    /* All four all-zero: each gradient laid out like its tensor (d_o like o, dq like q, dk like
     * k, dv like v). Otherwise each is used as given. */
    flashmha_strides d_o_strides;
    flashmha_strides dq_strides;
    flashmha_strides dk_strides;
    flashmha_strides dv_strides;
    /* Non-zero: bitwise reproducible dQ and d_head_gates (ordered per-key-block slices and
     * per-warp partials instead of f32 atomics; a larger workspace). */
    int32_t deterministic;
} flashmha_bwd_shape;

/* The buffers of one backward run. q, k, v, o, d_o, dq, dk, dv hold elements of the shape's
 * dtype; lse (the forward's, [batch, heads_q, seqlen_q] padded, [heads_q, total_q] varlen),
 * workspace (flashmha_bwd_plan_workspace_len elements, any contents), alibi_slopes, head_gates
 * d_head_gates, sinks and d_sinks ([heads_q]) are f32; cu_seqlens int32, required exactly for
 * varlen. d_head_gates (optional, needs head_gates) receives d(loss)/d(gate) (bitwise
 * reproducible in deterministic mode); d_sinks (optional, needs sinks: the forward's sink
 * logits) receives d(loss)/d(sink) = -sum over the head's rows i of exp(sinks[h] - lse_i) *
 * rowsum(d_o_i * o_i) (an ordered sum: bitwise reproducible). Outputs: dq, dk, dv,
 * d_head_gates, d_sinks; the workspace is scratch (its contents afterwards are unspecified). */
typedef struct flashmha_bwd_bufs {
    flashmha_buf q;
    flashmha_buf k;
    flashmha_buf v;
    flashmha_buf o;
    flashmha_buf d_o;
    flashmha_buf lse;
    flashmha_buf dq;
    flashmha_buf dk;
    flashmha_buf dv;
    flashmha_buf workspace;
    flashmha_buf cu_seqlens_q;
    flashmha_buf cu_seqlens_k;
    flashmha_buf alibi_slopes;
    flashmha_buf head_gates;
    flashmha_buf d_head_gates;
    flashmha_buf sinks;
    flashmha_buf d_sinks;
} flashmha_bwd_bufs;

/* A validated backward plan (immutable, reusable, thread-safe). */
typedef struct flashmha_bwd_plan flashmha_bwd_plan;

/* Validates `shape` and plans it for the sm_80+ kernels; free with flashmha_bwd_plan_destroy. */
flashmha_status flashmha_bwd_plan_create(const flashmha_bwd_shape *shape, flashmha_bwd_plan **out);
/* The same for `ctx`'s device (FLASHMHA_ERR_UNSUPPORTED on sm_75). */
flashmha_status flashmha_bwd_plan_create_for_context(const flashmha_context *ctx,
                                                     const flashmha_bwd_shape *shape,
                                                     flashmha_bwd_plan **out);
/* f32 elements of the workspace a run of `plan` needs. */
flashmha_status flashmha_bwd_plan_workspace_len(const flashmha_bwd_plan *plan, size_t *out);
void flashmha_bwd_plan_destroy(flashmha_bwd_plan *plan);

/* Checks `bufs` (device addresses) against `plan` in O(1) and launches the backward on
 * `stream`. Asynchronous; no allocation, no synchronisation. */
flashmha_status flashmha_bwd_run(const flashmha_context *ctx, const flashmha_bwd_plan *plan,
                                 const flashmha_bwd_bufs *bufs, void *stream);
/* Runs `plan` on the emulator with host buffers (the same checks; nothing is written when they
 * fail or the kernels report a finding; dq, dk, dv, d_head_gates, d_sinks copied back). */
flashmha_status flashmha_emulate_bwd_run(const flashmha_bwd_plan *plan,
                                         const flashmha_bwd_bufs *host_bufs);

/* ---------------------------------------------------------------------------------------------
 * Paged decode: new query tokens attend to K/V held in fixed-size pages through a block table
 *
 *   q:           padded [batch, seqlen_q, heads_q, d]; varlen [total_q, heads_q, d] (shape's dtype)
 *   o:           the same with d_v
 *   k/v pages:   element (page, slot, kv_head, c) at page*k_strides.page + slot*k_strides.slot +
 *                kv_head*k_strides.head + c (v: v_strides), c < d (k) or d_v (v); num_pages
 *                pages; elements of the shape's dtype, or one FP8 code byte each (kv_dtype),
 *                then strides count bytes
 * with d = head_dim and d_v = head_dim_v (0: d).
 *   block_table: [batch, block_table_stride] int32, entries < num_pages (device-resident)
 *   cache_seqlens: [batch] int32, keys of item i with its new tokens included (device-resident)
 *   cu_seqlens_q:  [batch + 1] int32, varlen only (device-resident)
 *   lse, entropy:  f32, padded [batch, heads_q, seqlen_q], varlen [heads_q, total_q]
 *   alibi_slopes, head_gates: f32 [heads_q]; k_scales, v_scales: f32, 1 or heads_kv (FP8 only)
 *   workspace:   f32, flashmha_decode_info.workspace_elems (0: the plan needs none)
 * Query row i of item b sees key j < cache_seqlens[b]; causal: j <= i + cache_seqlens[b] - sq_b
 * (the new tokens are the last keys of their item). Device-resident indices are checked by the
 * kernel, which traps on a bad one (the CUDA context is then unusable: recreate it).
 * ------------------------------------------------------------------------------------------ */

/* What the K and V pages hold. */
typedef enum flashmha_kv_dtype {
    /* Elements of the shape's dtype. */
    FLASHMHA_KV_SAME = 0,
    /* FP8 e4m3 codes with f32 scales (k_scales / v_scales). */
    FLASHMHA_KV_FP8_E4M3 = 1,
    /* FP8 e5m2 codes with f32 scales. */
    FLASHMHA_KV_FP8_E5M2 = 2
} flashmha_kv_dtype;

/* One FP8 scale per tensor or one per KV head (each of K and V separately). */
typedef enum flashmha_kv_scales {
    FLASHMHA_KV_SCALES_PER_TENSOR = 0,
    FLASHMHA_KV_SCALES_PER_KV_HEAD = 1
} flashmha_kv_scales;

/* Strides of one page pool, in elements of the pool's type; the head dim is contiguous. */
typedef struct flashmha_page_strides {
    int64_t page;
    int64_t slot;
    int64_t head;
} flashmha_page_strides;

/* How the keys of a sequence are divided among CTAs (split-KV). Splits write partial states to
 * the caller's workspace and a second kernel combines them, on the same stream. */
typedef enum flashmha_split_mode {
    /* The heuristic for split_value SMs (0 with a context: the device's SM count; 0 without
     * one: FLASHMHA_ERR_INVALID_ARGUMENT). */
    FLASHMHA_SPLIT_AUTO = 0,
    /* Exactly split_value splits (1 = no workspace, no combine). */
    FLASHMHA_SPLIT_COUNT = 1,
    /* Every split holds split_value keys (a positive multiple of 64): a sequence's output bits
     * do not depend on the rest of the batch. */
    FLASHMHA_SPLIT_FIXED_KEYS = 2
} flashmha_split_mode;

/* A paged decode call without buffers, and the page pools a KV append writes. The plan uses
 * only host-side upper bounds, so one plan made for the engine's largest batch serves every
 * step and layer. Zero-initialised fields marked "0:" take the stated default. */
typedef struct flashmha_decode_shape {
    flashmha_dtype dtype;
    /* 0: padded q/o; non-zero: varlen (cu_seqlens_q at run time). */
    int32_t varlen;
    size_t batch;
    /* Padded: new tokens per item. Varlen: upper bound of any item's new tokens. */
    size_t seqlen_q;
    /* Varlen only: rows of q/o. */
    size_t total_q;
    size_t heads_q;
    size_t heads_kv;
    /* d_qk: the head dim of q and of the K pages. */
    size_t head_dim;
    /* d_v: the head dim of the V pages and of o; 0 means head_dim. A value other than head_dim
     * needs a compiled (d_qk, d_v) pair with 16-bit pages, e.g. (192, 128) or (128, 64) (else
     * FLASHMHA_ERR_UNSUPPORTED); a KV append into such pools is FLASHMHA_ERR_UNSUPPORTED. */
    size_t head_dim_v;
    /* Both all-zero: contiguous. Otherwise each is used as given. */
    flashmha_strides q_strides;
    flashmha_strides o_strides;
    size_t num_pages;
    /* Keys per page, 1..1024. */
    size_t page_size;
    /* Used when both page strides are all-zero: 0 = NHD pages [num_pages, page_size, heads_kv,
     * d], non-zero = HND pages [num_pages, heads_kv, page_size, d], contiguous (V pages: d_v). */
    int32_t head_major_pages;
    flashmha_page_strides k_strides;
    flashmha_page_strides v_strides;
    flashmha_kv_dtype kv_dtype;
    flashmha_kv_scales kv_scales;
    /* Columns of the block table used per item. */
    size_t max_pages_per_seq;
    /* 0: max_pages_per_seq. */
    size_t block_table_stride;
    /* Upper bound of every cache_seqlens[i] (drives the split heuristic); 0: max_pages_per_seq *
     * page_size. */
    size_t max_cache_len;
    flashmha_options options;
    /* Non-zero: the run reads alibi_slopes / head_gates / sinks, writes lse / entropy. */
    int32_t alibi;
    int32_t head_gates;
    int32_t sinks;
    int32_t lse;
    int32_t entropy;
    flashmha_split_mode split_mode;
    uint32_t split_value;
} flashmha_decode_shape;

/* The buffers of one decode run (see the section's layouts). */
typedef struct flashmha_decode_bufs {
    flashmha_buf q;
    flashmha_buf k_cache;
    flashmha_buf v_cache;
    flashmha_buf o;
    flashmha_buf block_table;
    flashmha_buf cache_seqlens;
    flashmha_buf cu_seqlens_q;
    flashmha_buf lse;
    flashmha_buf entropy;
    flashmha_buf alibi_slopes;
    flashmha_buf head_gates;
    flashmha_buf sinks;
    flashmha_buf k_scales;
    flashmha_buf v_scales;
    /* One f32 buffer of at least workspace_elems, owned by the caller; ignored (may be NULL)
     * when the plan needs none, so one workspace sized for the largest plan serves all. Its
     * contents are scratch, undefined after a run. */
    flashmha_buf workspace;
} flashmha_decode_bufs;

/* What a decode plan chose. */
typedef struct flashmha_decode_info {
    uint32_t num_splits;
    /* Keys per split with FLASHMHA_SPLIT_FIXED_KEYS, else 0. */
    uint32_t split_keys;
    /* The workspace the caller must pass: f32 elements and bytes (both 0: none). */
    size_t workspace_elems;
    size_t workspace_bytes;
} flashmha_decode_info;

/* A validated decode plan (immutable, reusable, thread-safe). */
typedef struct flashmha_decode_plan flashmha_decode_plan;

/* Validates `shape` and plans it for the sm_80+ kernels (FLASHMHA_SPLIT_AUTO needs
 * split_value > 0 here); free with flashmha_decode_plan_destroy. */
flashmha_status flashmha_decode_plan_create(const flashmha_decode_shape *shape,
                                            flashmha_decode_plan **out);
/* The same for `ctx`'s device (its kernels; FLASHMHA_SPLIT_AUTO with split_value 0 uses its SM
 * count). */
flashmha_status flashmha_decode_plan_create_for_context(const flashmha_context *ctx,
                                                        const flashmha_decode_shape *shape,
                                                        flashmha_decode_plan **out);
/* The plan's split count and workspace size. */
flashmha_status flashmha_decode_plan_info(const flashmha_decode_plan *plan,
                                          flashmha_decode_info *out);
void flashmha_decode_plan_destroy(flashmha_decode_plan *plan);

/* Checks `bufs` (device addresses) against `plan` in O(1) and launches the decode (and the split
 * combine, if planned) on `stream`. Asynchronous; no allocation, no synchronisation. */
flashmha_status flashmha_decode_run(const flashmha_context *ctx, const flashmha_decode_plan *plan,
                                    const flashmha_decode_bufs *bufs, void *stream);
/* Runs `plan` on the emulator with host buffers (the same checks; o, lse and entropy copied
 * back). */
flashmha_status flashmha_emulate_decode_run(const flashmha_decode_plan *plan,
                                            const flashmha_decode_bufs *host_bufs);

/* ---------------------------------------------------------------------------------------------
 * MLA decode (DeepSeek-V2/V3 absorbed multi-head latent attention): every query head attends
 * to ONE shared latent KV head; a cached row is the key (FLASHMHA_MLA_DIM_QK = 512 latent + 64
 * rope dims) and its first FLASHMHA_MLA_DIM_V = 512 dims are the value (stored once). The
 * sm_80+ mma.sync kernel; a Turing context gets FLASHMHA_ERR_UNSUPPORTED.
 *
 *   q:         padded [batch, seqlen_q, heads_q, 576]; varlen [total_q, heads_q, 576]
 *   o:         padded [batch, seqlen_q, heads_q, 512]; varlen [total_q, heads_q, 512]
 *   kv_cache:  element (page, slot, c) at page*cache_strides.page + slot*cache_strides.slot + c
 *              (cache_strides.head is not used); elements of the shape's dtype, or FP8 code bytes
 *              (kv_dtype), then strides count bytes
 *   kv_scale:  f32 [1], the pool's one scale, finite and > 0 (FP8 only)
 *   block_table, cache_seqlens, cu_seqlens_q, lse, entropy, alibi_slopes, head_gates, sinks,
 *   workspace: as for the paged decode above (workspace_elems from flashmha_mla_decode_plan_info)
 * The default softmax scale is 1/sqrt(576). Masks, options and the split combine are the paged
 * decode's.
 * ------------------------------------------------------------------------------------------ */

#define FLASHMHA_MLA_DIM_QK 576
#define FLASHMHA_MLA_DIM_V 512

/* An MLA decode call without buffers. Zero-initialised fields marked "0:" take the stated
 * default; the plan uses only host-side upper bounds, as flashmha_decode_shape. */
typedef struct flashmha_mla_decode_shape {
    flashmha_dtype dtype;
    /* 0: padded q/o; non-zero: varlen (cu_seqlens_q at run time). */
    int32_t varlen;
    size_t batch;
    /* Padded: new tokens per item. Varlen: upper bound of any item's new tokens. */
    size_t seqlen_q;
    /* Varlen only: rows of q/o. */
    size_t total_q;
    /* Query heads, all on the one latent head (16-128 in the common models). */
    size_t heads_q;
    /* Both all-zero: contiguous. Otherwise each is used as given (q's rows hold 576 elements,
     * o's 512). */
    flashmha_strides q_strides;
    flashmha_strides o_strides;
    size_t num_pages;
    /* Keys per page, 1..1024 (64 in the common deployments). */
    size_t page_size;
    /* All-zero: contiguous pages [num_pages, page_size, 576]. */
    flashmha_page_strides cache_strides;
    /* FLASHMHA_KV_SAME, FLASHMHA_KV_FP8_E4M3 or FLASHMHA_KV_FP8_E5M2 (one scale per pool). */
    flashmha_kv_dtype kv_dtype;
    /* Columns of the block table used per item. */
    size_t max_pages_per_seq;
    /* 0: max_pages_per_seq. */
    size_t block_table_stride;
    /* Upper bound of every cache_seqlens[i]; 0: max_pages_per_seq * page_size. */
    size_t max_cache_len;
    flashmha_options options;
    /* Non-zero: the run reads alibi_slopes / head_gates / sinks, writes lse / entropy. */
    int32_t alibi;
    int32_t head_gates;
    int32_t sinks;
    int32_t lse;
    int32_t entropy;
    flashmha_split_mode split_mode;
    uint32_t split_value;
} flashmha_mla_decode_shape;

/* The buffers of one MLA decode run (see the section's layouts). */
typedef struct flashmha_mla_decode_bufs {
    flashmha_buf q;
    flashmha_buf kv_cache;
    flashmha_buf o;
    flashmha_buf block_table;
    flashmha_buf cache_seqlens;
    flashmha_buf cu_seqlens_q;
    flashmha_buf lse;
    flashmha_buf entropy;
    flashmha_buf alibi_slopes;
    flashmha_buf head_gates;
    flashmha_buf sinks;
    flashmha_buf kv_scale;
    /* As flashmha_decode_bufs.workspace. */
    flashmha_buf workspace;
} flashmha_mla_decode_bufs;

/* A validated MLA decode plan (immutable, reusable, thread-safe). */
typedef struct flashmha_mla_decode_plan flashmha_mla_decode_plan;

/* Validates `shape` and plans it for the sm_80+ kernels (FLASHMHA_SPLIT_AUTO needs
 * split_value > 0 here); free with flashmha_mla_decode_plan_destroy. */
flashmha_status flashmha_mla_decode_plan_create(const flashmha_mla_decode_shape *shape,
                                                flashmha_mla_decode_plan **out);
/* The same for `ctx`'s device (FLASHMHA_ERR_UNSUPPORTED on sm_75; FLASHMHA_SPLIT_AUTO with
 * split_value 0 uses its SM count). */
flashmha_status flashmha_mla_decode_plan_create_for_context(const flashmha_context *ctx,
                                                            const flashmha_mla_decode_shape *shape,
                                                            flashmha_mla_decode_plan **out);
/* The plan's split count and workspace size (partial O of 512 dims per row and split). */
flashmha_status flashmha_mla_decode_plan_info(const flashmha_mla_decode_plan *plan,
                                              flashmha_decode_info *out);
void flashmha_mla_decode_plan_destroy(flashmha_mla_decode_plan *plan);

/* Checks `bufs` (device addresses) against `plan` in O(1) and launches the MLA decode (and the
 * split combine, if planned) on `stream`. Asynchronous; no allocation, no synchronisation. */
flashmha_status flashmha_mla_decode_run(const flashmha_context *ctx,
                                        const flashmha_mla_decode_plan *plan,
                                        const flashmha_mla_decode_bufs *bufs, void *stream);
/* Runs `plan` on the emulator with host buffers (the same checks; o, lse and entropy copied
 * back). */
flashmha_status flashmha_emulate_mla_decode_run(const flashmha_mla_decode_plan *plan,
                                                const flashmha_mla_decode_bufs *host_bufs);

/* ---------------------------------------------------------------------------------------------
 * Merge of attention states (cascade / shared-prefix attention, split results)
 *
 * States (O_s, LSE_s) over disjoint key sets become O = sum_s exp(LSE_s - LSE) O_s,
 * LSE = log sum_s exp(LSE_s); a state with LSE = -inf (no keys) weighs 0.
 *   o_states: stacked [num_states, rows, heads, d], pair form [rows, heads, d] (state A);
 *   o_b: [rows, heads, d] (pair form only); o: [rows, heads, d]; all of the shape's dtype.
 *   lse_states (per state), lse_b, lse: f32 in lse_layout ([rows, heads] or [heads, rows]).
 * The forward's padded output of one batch item is rows = seqlen_q with FLASHMHA_STATS_HEADS_ROWS.
 * ------------------------------------------------------------------------------------------ */

typedef enum flashmha_merge_form {
    /* num_states states stacked in o_states / lse_states, state outermost. */
    FLASHMHA_MERGE_STACKED = 0,
    /* Two states in separate buffers: (o_states, lse_states) and (o_b, lse_b). */
    FLASHMHA_MERGE_PAIR = 1
} flashmha_merge_form;

typedef enum flashmha_stats_layout {
    FLASHMHA_STATS_ROWS_HEADS = 0,
    FLASHMHA_STATS_HEADS_ROWS = 1
} flashmha_stats_layout;

typedef struct flashmha_merge_shape {
    flashmha_dtype dtype;
    flashmha_merge_form form;
    /* Stacked form only. */
    size_t num_states;
    size_t rows;
    size_t heads;
    /* A multiple of 4. */
    size_t head_dim;
    flashmha_stats_layout lse_layout;
} flashmha_merge_shape;

/* lse is optional (NULL: the merged LSE is not written). */
typedef struct flashmha_merge_bufs {
    flashmha_buf o_states;
    flashmha_buf lse_states;
    flashmha_buf o_b;
    flashmha_buf lse_b;
    flashmha_buf o;
    flashmha_buf lse;
} flashmha_merge_bufs;

typedef struct flashmha_merge_plan flashmha_merge_plan;

flashmha_status flashmha_merge_plan_create(const flashmha_merge_shape *shape,
                                           flashmha_merge_plan **out);
flashmha_status flashmha_merge_plan_create_for_context(const flashmha_context *ctx,
                                                       const flashmha_merge_shape *shape,
                                                       flashmha_merge_plan **out);
void flashmha_merge_plan_destroy(flashmha_merge_plan *plan);
/* Asynchronous on `stream`, like flashmha_run. */
flashmha_status flashmha_merge_run(const flashmha_context *ctx, const flashmha_merge_plan *plan,
                                   const flashmha_merge_bufs *bufs, void *stream);
/* On the emulator with host buffers; o (and lse when given) copied back. */
flashmha_status flashmha_emulate_merge_run(const flashmha_merge_plan *plan,
                                           const flashmha_merge_bufs *host_bufs);

/* ---------------------------------------------------------------------------------------------
 * KV append: writes the K and V rows of num_tokens new tokens into the page pools that a
 * flashmha_decode_shape describes (16-bit pages: copied; FP8 pages: quantised with k_scales /
 * v_scales, nearest-even, saturating)
 *
 *   k_new, v_new: [num_tokens, heads_kv, d] contiguous, of the shape's dtype
 *   FLASHMHA_APPEND_SLOTS:     slot_mapping [num_tokens] int32, slot = page * page_size +
 *                              offset; < 0 skips the token
 *   FLASHMHA_APPEND_POSITIONS: block_table [batch, block_table_stride], token_batch and
 *                              token_pos [num_tokens] int32; token t is position token_pos[t]
 *                              (< 0 skips it) of item token_batch[t]
 * Indices are device-resident and checked by the kernel (out of range traps).
 * ------------------------------------------------------------------------------------------ */

typedef enum flashmha_append_index {
    FLASHMHA_APPEND_SLOTS = 0,
    FLASHMHA_APPEND_POSITIONS = 1
} flashmha_append_index;

typedef struct flashmha_kv_append_bufs {
    flashmha_buf k_new;
    flashmha_buf v_new;
    flashmha_buf k_cache;
    flashmha_buf v_cache;
    flashmha_buf slot_mapping;
    flashmha_buf block_table;
    flashmha_buf token_batch;
    flashmha_buf token_pos;
    flashmha_buf k_scales;
    flashmha_buf v_scales;
} flashmha_kv_append_bufs;

typedef struct flashmha_kv_append_plan flashmha_kv_append_plan;

/* Validates the pool geometry of `pools` (its query fields and split are not used) and plans
 * an append of `num_tokens` tokens addressed by `index`. */
flashmha_status flashmha_kv_append_plan_create(const flashmha_decode_shape *pools,
                                               size_t num_tokens, flashmha_append_index index,
                                               flashmha_kv_append_plan **out);
flashmha_status flashmha_kv_append_plan_create_for_context(const flashmha_context *ctx,
                                                           const flashmha_decode_shape *pools,
                                                           size_t num_tokens,
                                                           flashmha_append_index index,
                                                           flashmha_kv_append_plan **out);
void flashmha_kv_append_plan_destroy(flashmha_kv_append_plan *plan);
/* Asynchronous on `stream`, like flashmha_run. */
flashmha_status flashmha_kv_append_run(const flashmha_context *ctx,
                                       const flashmha_kv_append_plan *plan,
                                       const flashmha_kv_append_bufs *bufs, void *stream);
/* On the emulator with host buffers: the pools are copied in and back (updated in place). */
flashmha_status flashmha_emulate_kv_append_run(const flashmha_kv_append_plan *plan,
                                               const flashmha_kv_append_bufs *host_bufs);

/* ---------------------------------------------------------------------------------------------
 * Head similarity (diagnostics): gram[i][j] = sum over tokens of the cosine similarity of head
 * outputs i and j of o: [num_tokens, num_heads, head_dim]; divide by num_tokens for the mean.
 * No plan split (the Rust side validates and plans per call, O(1)).
 *   o: elements of the shape's dtype; gram: f32 [num_heads, num_heads] (zeroed by the call)
 * ------------------------------------------------------------------------------------------ */

typedef struct flashmha_head_similarity_shape {
    flashmha_dtype dtype;
    size_t num_tokens;
    size_t num_heads;
    size_t head_dim;
    /* Both 0: contiguous ([num_tokens, num_heads, head_dim]). In elements. */
    int64_t token_stride;
    int64_t head_stride;
} flashmha_head_similarity_shape;

typedef struct flashmha_head_similarity_bufs {
    flashmha_buf o;
    flashmha_buf gram;
} flashmha_head_similarity_bufs;

/* Validates, zeroes gram's num_heads^2 sums and launches on `stream` (asynchronous, no
 * allocation, no synchronisation). Not on sm_75 (FLASHMHA_ERR_UNSUPPORTED). */
flashmha_status flashmha_head_similarity(const flashmha_context *ctx,
                                         const flashmha_head_similarity_shape *shape,
                                         const flashmha_head_similarity_bufs *bufs, void *stream);
/* On the emulator with host buffers; gram copied back. */
flashmha_status flashmha_emulate_head_similarity(const flashmha_head_similarity_shape *shape,
                                                 const flashmha_head_similarity_bufs *host_bufs);

#ifdef __cplusplus
}
#endif

#endif /* FLASHMHA_H */
