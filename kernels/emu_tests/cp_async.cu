// Emulator fidelity: cp.async with src-size < cp-size (zero fill) and the ignore-src predicate.
// Thread t copies 16 bytes from src + 16 t with src-size sizes[t] into shared memory, waits,
// synchronises, and copies the shared row back out.
#include <stdint.h>

extern "C" __global__ void cp_async_zfill(const uint8_t *src, const uint32_t *sizes, uint8_t *out) {
    __shared__ __align__(16) uint8_t buf[64 * 16];
    int t = threadIdx.x;
    uint32_t dst = (uint32_t)__cvta_generic_to_shared(buf + 16 * t);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src + 16 * t), "r"(sizes[t]));
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
    for (int k = 0; k < 16; k++) out[16 * t + k] = buf[16 * ((t + 1) % blockDim.x) + k];
}

// 4-byte copies (ca) with the ignore-src predicate form, two commit groups, wait_group 1 then 0.
extern "C" __global__ void cp_async_groups(const uint32_t *src, uint32_t *out) {
    __shared__ uint32_t a[64], b[64];
    int t = threadIdx.x;
    uint32_t da = (uint32_t)__cvta_generic_to_shared(a + t);
    uint32_t db = (uint32_t)__cvta_generic_to_shared(b + t);
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %2, 0;\n cp.async.ca.shared.global [%0], [%1], 4, p; }\n" ::"r"(da), "l"(src + t), "r"(t & 1));
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(db), "l"(src + 64 + t));
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 1;\n" ::);
    out[t] = a[t];
    asm volatile("cp.async.wait_all;\n" ::);
    out[64 + t] = b[t];
}
