// Emulator fidelity: special-function approximations and IEEE division/sqrt.
#include <stdint.h>

extern "C" __global__ void sfu(const float *in, float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = in[i], r;
    float *o = out + i * 8;
    asm("ex2.approx.f32 %0, %1;" : "=f"(r) : "f"(x)); o[0] = r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x)); o[1] = r;
    asm("lg2.approx.f32 %0, %1;" : "=f"(r) : "f"(fabsf(x))); o[2] = r;
    asm("tanh.approx.f32 %0, %1;" : "=f"(r) : "f"(x)); o[3] = r;
    asm("rcp.approx.f32 %0, %1;" : "=f"(r) : "f"(x)); o[4] = r;
    asm("rsqrt.approx.f32 %0, %1;" : "=f"(r) : "f"(fabsf(x))); o[5] = r;
    o[6] = __fdiv_rn(1.0f + x, 3.0f);
    o[7] = __fsqrt_rn(fabsf(x));
}
