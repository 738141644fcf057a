// Emulator fidelity: mma.sync.aligned.m16n8k16 / m16n8k8 fragment layouts.
// Each lane loads its fragment elements straight from row-major global matrices using the index
// formulas of the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type",
// "Matrix Fragments for mma.m16n8k8"), runs one mma, and stores D with the accumulator layout.
// The Rust test compares D with a CPU matmul, so a layout mistake in the emulator shows up.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ uint32_t pack2(const uint16_t *m, int i0, int i1) {
    return (uint32_t)m[i0] | ((uint32_t)m[i1] << 16);
}

// A: 16x16 row-major (b16 bits), B: 16x8 row-major (k x n), C/D: 16x8 row-major f32.
template <bool BF16>
__device__ void mma16816_f32(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    uint32_t ra[4], rb[2];
    // a0,a1: (g, 2t..2t+1); a2,a3: (g+8, ...); a4,a5: (g, 2t+8..); a6,a7: (g+8, 2t+8..)
    ra[0] = pack2(a, g * 16 + 2 * t, g * 16 + 2 * t + 1);
    ra[1] = pack2(a, (g + 8) * 16 + 2 * t, (g + 8) * 16 + 2 * t + 1);
    ra[2] = pack2(a, g * 16 + 2 * t + 8, g * 16 + 2 * t + 9);
    ra[3] = pack2(a, (g + 8) * 16 + 2 * t + 8, (g + 8) * 16 + 2 * t + 9);
    // b0,b1: rows 2t, 2t+1 of column g; b2,b3: rows 2t+8, 2t+9
    rb[0] = pack2(b, (2 * t) * 8 + g, (2 * t + 1) * 8 + g);
    rb[1] = pack2(b, (2 * t + 8) * 8 + g, (2 * t + 9) * 8 + g);
    float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
    if (BF16) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                     : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "r"(rb[0]), "r"(rb[1]));
    } else {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                     : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "r"(rb[0]), "r"(rb[1]));
    }
    d[g * 8 + 2 * t] = acc[0];
    d[g * 8 + 2 * t + 1] = acc[1];
    d[(g + 8) * 8 + 2 * t] = acc[2];
    d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

extern "C" __global__ void mma_f16_f32(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    mma16816_f32<false>(a, b, c, d);
}

extern "C" __global__ void mma_bf16_f32(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    mma16816_f32<true>(a, b, c, d);
}

// f16 accumulate: C/D are 16x8 row-major f16, two elements per register.
extern "C" __global__ void mma_f16_f16(const uint16_t *a, const uint16_t *b, const uint16_t *c, uint16_t *d) {
    int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    uint32_t ra[4], rb[2], rc[2];
    ra[0] = pack2(a, g * 16 + 2 * t, g * 16 + 2 * t + 1);
    ra[1] = pack2(a, (g + 8) * 16 + 2 * t, (g + 8) * 16 + 2 * t + 1);
    ra[2] = pack2(a, g * 16 + 2 * t + 8, g * 16 + 2 * t + 9);
    ra[3] = pack2(a, (g + 8) * 16 + 2 * t + 8, (g + 8) * 16 + 2 * t + 9);
    rb[0] = pack2(b, (2 * t) * 8 + g, (2 * t + 1) * 8 + g);
    rb[1] = pack2(b, (2 * t + 8) * 8 + g, (2 * t + 9) * 8 + g);
    rc[0] = pack2(c, g * 8 + 2 * t, g * 8 + 2 * t + 1);
    rc[1] = pack2(c, (g + 8) * 8 + 2 * t, (g + 8) * 8 + 2 * t + 1);
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0,%1}, {%2,%3,%4,%5}, {%6,%7}, {%0,%1};\n"
                 : "+r"(rc[0]), "+r"(rc[1])
                 : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "r"(rb[0]), "r"(rb[1]));
    d[g * 8 + 2 * t] = (uint16_t)(rc[0] & 0xffff);
    d[g * 8 + 2 * t + 1] = (uint16_t)(rc[0] >> 16);
    d[(g + 8) * 8 + 2 * t] = (uint16_t)(rc[1] & 0xffff);
    d[(g + 8) * 8 + 2 * t + 1] = (uint16_t)(rc[1] >> 16);
}

// m16n8k8, f16 -> f32. A: 16x8 row-major, B: 8x8 row-major (k x n).
extern "C" __global__ void mma_k8_f16_f32(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    uint32_t ra0 = pack2(a, g * 8 + 2 * t, g * 8 + 2 * t + 1);
    uint32_t ra1 = pack2(a, (g + 8) * 8 + 2 * t, (g + 8) * 8 + 2 * t + 1);
    uint32_t rb0 = pack2(b, (2 * t) * 8 + g, (2 * t + 1) * 8 + g);
    float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(ra0), "r"(ra1), "r"(rb0));
    d[g * 8 + 2 * t] = acc[0];
    d[g * 8 + 2 * t + 1] = acc[1];
    d[(g + 8) * 8 + 2 * t] = acc[2];
    d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// Turing's k16 step (kernels/common/mma.cuh, compiled for sm_75): the m16n8k16 fragments above,
// fed to two m16n8k8 through mma_1688_f16 in the order mma.cuh's Turing branch uses (half h takes
// A registers 2h, 2h+1 and B register h). Same inputs and output as mma_f16_f32.
#include "common/mma.cuh"
extern "C" __global__ void mma_k16_as_two_k8(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    uint32_t ra[4], rb[2];
    ra[0] = pack2(a, g * 16 + 2 * t, g * 16 + 2 * t + 1);
    ra[1] = pack2(a, (g + 8) * 16 + 2 * t, (g + 8) * 16 + 2 * t + 1);
    ra[2] = pack2(a, g * 16 + 2 * t + 8, g * 16 + 2 * t + 9);
    ra[3] = pack2(a, (g + 8) * 16 + 2 * t + 8, (g + 8) * 16 + 2 * t + 9);
    rb[0] = pack2(b, (2 * t) * 8 + g, (2 * t + 1) * 8 + g);
    rb[1] = pack2(b, (2 * t + 8) * 8 + g, (2 * t + 9) * 8 + g);
    float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
    for (int h = 0; h < flashmha::kK8Halves; ++h)
        flashmha::mma_1688_f16(acc, ra[flashmha::kK8ARegs * h], ra[flashmha::kK8ARegs * h + 1], rb[h]);
    d[g * 8 + 2 * t] = acc[0];
    d[g * 8 + 2 * t + 1] = acc[1];
    d[(g + 8) * 8 + 2 * t] = acc[2];
    d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}
