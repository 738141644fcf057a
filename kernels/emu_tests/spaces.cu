// Emulator fidelity: local memory (a dynamically indexed per-thread array lives in .local and is
// reached through generic addressing), dynamic shared memory with %dynamic_smem_size, and
// 8-/16-byte vector loads and stores.
#include <stdint.h>

extern "C" __global__ void local_array(const uint32_t *idx, uint32_t *out) {
    uint32_t a[32];
    int t = threadIdx.x;
    for (int i = 0; i < 32; i++) a[i] = (uint32_t)(i * 131 + t);
    // data-dependent index defeats register promotion
    out[t] = a[idx[t] % 32] + a[(idx[t] + 7) % 32];
}

extern "C" __global__ void dyn_smem(const float4 *in, float4 *out, uint32_t *size_out) {
    extern __shared__ __align__(16) float4 dsm[];
    int t = threadIdx.x;
    dsm[t] = in[t];
    __syncthreads();
    float4 v = dsm[blockDim.x - 1 - t];
    out[t] = make_float4(v.w, v.z, v.y, v.x);
    if (t == 0) {
        uint32_t s;
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(s));
        size_out[0] = s;
    }
}
