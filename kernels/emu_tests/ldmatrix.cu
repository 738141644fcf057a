// Emulator fidelity: ldmatrix x1/x2/x4 with and without .trans.
// 256 b16 values (four 8x8 matrices, matrix j at elements 64j.., row-major) are staged in shared
// memory with a padded row pitch; lane l gives the address of row l%8 of matrix l/8. Every lane
// writes the registers it received to out[lane * 4 + j].
#include <stdint.h>

#define PITCH 24 /* elements per shared row (48 bytes): 16-byte aligned rows, conflict-free */

template <int N, bool TRANS>
__device__ void run(const uint16_t *in, uint32_t *out) {
    __shared__ __align__(16) uint16_t tile[32 * PITCH];
    int lane = threadIdx.x;
    for (int i = lane; i < 256; i += 32) tile[(i / 8) * PITCH + i % 8] = in[i];
    __syncthreads();
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(&tile[lane * PITCH]);
    uint32_t r[4] = {0, 0, 0, 0};
    if (N == 1) {
        if (TRANS) asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
        else asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
    } else if (N == 2) {
        if (TRANS) asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
        else asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
    } else {
        if (TRANS)
            asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                         : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
        else
            asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                         : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
    }
    for (int j = 0; j < 4; j++) out[lane * 4 + j] = r[j];
}

extern "C" __global__ void ldm_x1(const uint16_t *in, uint32_t *out) { run<1, false>(in, out); }
extern "C" __global__ void ldm_x2(const uint16_t *in, uint32_t *out) { run<2, false>(in, out); }
extern "C" __global__ void ldm_x4(const uint16_t *in, uint32_t *out) { run<4, false>(in, out); }
extern "C" __global__ void ldm_x1_trans(const uint16_t *in, uint32_t *out) { run<1, true>(in, out); }
extern "C" __global__ void ldm_x2_trans(const uint16_t *in, uint32_t *out) { run<2, true>(in, out); }
extern "C" __global__ void ldm_x4_trans(const uint16_t *in, uint32_t *out) { run<4, true>(in, out); }
