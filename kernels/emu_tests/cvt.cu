// Emulator fidelity: cvt rounding to f16/bf16 (rn/rz/rm/rp), packed x2 order, float->int rounding
// and saturation. One thread per input; each writes 12 result words.
#include <stdint.h>

extern "C" __global__ void cvt_modes(const float *in, uint32_t *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = in[i];
    float y = in[(i + 1) % n];
    uint16_t h;
    uint32_t *o = out + i * 12;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); o[0] = h;
    asm("cvt.rz.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); o[1] = h;
    asm("cvt.rm.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); o[2] = h;
    asm("cvt.rp.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); o[3] = h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x)); o[4] = h;
    asm("cvt.rz.bf16.f32 %0, %1;" : "=h"(h) : "f"(x)); o[5] = h;
    uint32_t p;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(p) : "f"(x), "f"(y)); o[6] = p;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(p) : "f"(x), "f"(y)); o[7] = p;
    int s;
    asm("cvt.rni.s32.f32 %0, %1;" : "=r"(s) : "f"(x)); o[8] = (uint32_t)s;
    asm("cvt.rzi.s32.f32 %0, %1;" : "=r"(s) : "f"(x)); o[9] = (uint32_t)s;
    asm("cvt.rmi.u32.f32 %0, %1;" : "=r"(s) : "f"(x)); o[10] = (uint32_t)s;
    float back;
    asm("cvt.f32.f16 %0, %1;" : "=f"(back) : "h"((uint16_t)o[0])); o[11] = __float_as_uint(back);
}
