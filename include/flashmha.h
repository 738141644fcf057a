/* flashmha C ABI (Rust feature `capi`).
 *
 * This header is the single definition of the ABI: the Rust side's structs, enums and extern
 * declarations are generated from it by bindgen (build/capi_bindings.rs), and a test puts each
 * generated declaration and the Rust definition in one array, so a signature that drifts from
 * this header does not compile.
 *
 * Conventions: every function returns a flashmha_status; on failure
 * flashmha_last_error_message() describes the error (thread-local, valid until the next
 * flashmha call on the same thread). Lengths are element counts, not bytes. Tensors:
 *   padded:  q, o: [batch, seqlen_q, heads_q, head_dim]; k, v: [batch, seqlen_k, heads_kv, d]
 *            lse, entropy: [batch, heads_q, seqlen_q] (f32)
 *   varlen:  q, o: [total_q, heads_q, d]; k, v: [total_k, heads_kv, d];
 *            lse, entropy: [heads_q, total_q]; cu_seqlens_q/k: [batch + 1] (int32)
 * with the strides given in flashmha_shape (all-zero strides mean contiguous).
 */
#ifndef FLASHMHA_H
#define FLASHMHA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

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

/* A whole forward call without buffers. */
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
    size_t head_dim;
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
 * alibi_slopes ([heads_q]) and head_gates ([heads_q]) are f32; cu_seqlens are int32 and
 * required exactly for varlen shapes. */
typedef struct flashmha_bufs {
    flashmha_buf q;
    flashmha_buf k;
    flashmha_buf v;
    flashmha_buf o;
    flashmha_buf lse;
    flashmha_buf entropy;
    flashmha_buf alibi_slopes;
    flashmha_buf head_gates;
    flashmha_buf cu_seqlens_q;
    flashmha_buf cu_seqlens_k;
} flashmha_bufs;

/* A validated launch plan for one batch shape (pure data, thread-safe, reusable). */
typedef struct flashmha_plan flashmha_plan;
/* One device with the kernels loaded. */
typedef struct flashmha_context flashmha_context;

/* The crate version, e.g. "0.1.0" (static storage). */
const char *flashmha_version(void);

/* The message of the last failed call on this thread ("" if none). Valid until the next
 * flashmha call on this thread. */
const char *flashmha_last_error_message(void);

/* Validates `shape` and plans it for the sm_80+ kernels; on success *out is a plan to free with
 * flashmha_plan_destroy. */
flashmha_status flashmha_plan_create(const flashmha_shape *shape, flashmha_plan **out);
/* The same for the kernels of `ctx`'s device (the Turing ones on sm_75, f16 only; on sm_90 the
 * sm_90a forward at the head dims it was compiled for, the sm_80+ one otherwise); a plan for
 * kernels the device does not run fails flashmha_run with FLASHMHA_ERR_UNSUPPORTED. */
flashmha_status flashmha_plan_create_for_context(const flashmha_context *ctx,
                                                 const flashmha_shape *shape, flashmha_plan **out);
void flashmha_plan_destroy(flashmha_plan *plan);

/* Opens CUDA device `ordinal` and loads the kernels; FLASHMHA_ERR_NO_CUDA_DRIVER without a
 * driver. Free with flashmha_context_destroy. */
flashmha_status flashmha_context_create(int32_t ordinal, flashmha_context **out);
void flashmha_context_destroy(flashmha_context *ctx);

/* Checks `bufs` (device addresses) against `plan` in O(1) (lengths, alignment, aliasing,
 * presence) and launches on `stream` (a CUstream; NULL is the legacy default stream).
 * Asynchronous; no allocation and no synchronisation, so it can be captured in a CUDA graph.
 * The buffers must stay allocated until the stream has run the kernel. */
flashmha_status flashmha_run(const flashmha_context *ctx, const flashmha_plan *plan,
                             const flashmha_bufs *bufs, void *stream);

/* Plans `shape` and runs it: flashmha_plan_create + flashmha_run in one call. */
flashmha_status flashmha_forward(const flashmha_context *ctx, const flashmha_shape *shape,
                                 const flashmha_bufs *bufs, void *stream);

/* Runs `plan` on the PTX emulator with host buffers: copies the inputs in, runs the same
 * kernel the GPU would (every access checked), and copies o (and lse / entropy when given)
 * back. FLASHMHA_ERR_EMULATOR if the kernel reported any finding. Slow: for tests and CI. */
flashmha_status flashmha_emulate_run(const flashmha_plan *plan, const flashmha_bufs *host_bufs);

/* Plans `shape` and runs it on the emulator with host buffers. */
flashmha_status flashmha_emulate_forward(const flashmha_shape *shape,
                                         const flashmha_bufs *host_bufs);

#ifdef __cplusplus
}
#endif

#endif /* FLASHMHA_H */
