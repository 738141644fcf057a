// Emulator checks: each kernel plants one bug the emulator must report, plus a clean control.
#include <stdint.h>

// Writes n + 1 elements of an n-element buffer: the last thread writes out of bounds.
extern "C" __global__ void bug_oob_write(float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = (float)i;
}

// Missing __syncthreads between the shared write and the read of another warp's element.
extern "C" __global__ void bug_missing_sync(const float *in, float *out) {
    __shared__ float s[128];
    int t = threadIdx.x;
    s[t] = in[t] * 2.0f;
    // (no barrier here)
    out[t] = s[(t + 32) % 128];
}

// The same kernel with the barrier: must be clean.
extern "C" __global__ void clean_with_sync(const float *in, float *out) {
    __shared__ float s[128];
    int t = threadIdx.x;
    s[t] = in[t] * 2.0f;
    __syncthreads();
    out[t] = s[(t + 32) % 128];
}

// Reads its own cp.async destination before cp.async.wait_group.
extern "C" __global__ void bug_cp_async_no_wait(const float4 *in, float4 *out) {
    __shared__ __align__(16) float4 s[64];
    int t = threadIdx.x;
    uint32_t dst = (uint32_t)__cvta_generic_to_shared(&s[t]);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(in + t));
    asm volatile("cp.async.commit_group;\n" ::);
    float4 early = s[t];  // bug: not yet waited for
    asm volatile("cp.async.wait_group 0;\n" ::);
    out[t] = early;
}

// Reads a shared element that no thread wrote.
extern "C" __global__ void bug_uninit_shared(float *out) {
    __shared__ float s[64];
    int t = threadIdx.x;
    if (t < 32) s[t] = (float)t;
    __syncthreads();
    out[t] = s[t];  // threads 32..63 read never-written elements
}

// __syncthreads inside a branch only some threads take; the others exit.
extern "C" __global__ void bug_divergent_syncthreads(float *out) {
    int t = threadIdx.x;
    if (t < 64) {
        __syncthreads();
        out[t] = 1.0f;
    }
}

// Two different barriers for the two halves of the block.
extern "C" __global__ void bug_divergent_barriers(float *out) {
    int t = threadIdx.x;
    if (t < 64) {
        out[t] = 1.0f;
        asm volatile("bar.sync 0;" ::: "memory");
    } else {
        out[t] = 2.0f;
        asm volatile("bar.sync 0;" ::: "memory");
    }
    out[t] += 1.0f;
}

// A shuffle whose member mask names lanes that never get there.
extern "C" __global__ void bug_divergent_shfl(const uint32_t *in, uint32_t *out) {
    int t = threadIdx.x;
    uint32_t v = in[t];
    if (t < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[t] = v;
}

extern "C" __global__ void bug_trap(int *out) {
    if (threadIdx.x == 5) __trap();
    out[threadIdx.x] = 1;
}

// Misaligned 4-byte load.
extern "C" __global__ void bug_misaligned(const char *in, float *out) {
    out[threadIdx.x] = *(const float *)(in + 1 + 4 * threadIdx.x);
}

// Shared-memory tree reduction done right: must produce no finding.
extern "C" __global__ void clean_reduce(const float *in, float *out) {
    __shared__ float s[256];
    int t = threadIdx.x;
    s[t] = in[blockIdx.x * 256 + t];
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// Every CTA writes the same words: CTAs are unordered, so which CTA's value remains depends on
// the schedule (a cross-CTA write-write race). `stride` = 0 plants it; `stride` = blockDim.x
// gives each CTA its own words (the clean control) and bytes 2..3 of a word written by the next
// CTA's bytes 0..1 stay clean too (disjoint bytes of one 8-byte word).
extern "C" __global__ void bug_cross_cta_write(unsigned short *out, int stride) {
    out[blockIdx.x * stride + threadIdx.x] = (unsigned short)blockIdx.x;
}
