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

// The fragments of mma.m16n8k16 for lane (g = lane / 4, t = lane % 4), loaded straight from
// row-major global matrices with the ISA's index formulas; every kernel below uses these.
// A: 16x16 row-major (b16 bits). a0,a1: (g, 2t..2t+1); a2,a3: (g+8, ...); a4,a5: (g, 2t+8..);
// a6,a7: (g+8, 2t+8..).
__device__ __forceinline__ void load_a_k16(const uint16_t *a, int g, int t, uint32_t (&ra)[4]) {
    ra[0] = pack2(a, g * 16 + 2 * t, g * 16 + 2 * t + 1);
    ra[1] = pack2(a, (g + 8) * 16 + 2 * t, (g + 8) * 16 + 2 * t + 1);
    ra[2] = pack2(a, g * 16 + 2 * t + 8, g * 16 + 2 * t + 9);
    ra[3] = pack2(a, (g + 8) * 16 + 2 * t + 8, (g + 8) * 16 + 2 * t + 9);
}
// B: 16x8 row-major (k x n). b0,b1: rows 2t, 2t+1 of column g; b2,b3: rows 2t+8, 2t+9.
__device__ __forceinline__ void load_b_k16(const uint16_t *b, int g, int t, uint32_t (&rb)[2]) {
    rb[0] = pack2(b, (2 * t) * 8 + g, (2 * t + 1) * 8 + g);
    rb[1] = pack2(b, (2 * t + 8) * 8 + g, (2 * t + 9) * 8 + g);
}
// C/D: 16x8 row-major (f32, or f16 two per register), element c of the lane's four:
// c0,c1: (g, 2t..2t+1); c2,c3: (g+8, 2t..2t+1).
__device__ __forceinline__ int c_index(int g, int t, int c) {
    return (g + 8 * (c / 2)) * 8 + 2 * t + c % 2;
}
__device__ __forceinline__ void load_c_f32(const float *c, int g, int t, float (&acc)[4]) {
    for (int i = 0; i < 4; ++i) acc[i] = c[c_index(g, t, i)];
}
__device__ __forceinline__ void store_d_f32(float *d, int g, int t, const float (&acc)[4]) {
    for (int i = 0; i < 4; ++i) d[c_index(g, t, i)] = acc[i];
}

// A: 16x16, B: 16x8, C/D: 16x8 f32: loads the fragments, runs mma(acc, ra, rb), stores D.
template <class Mma>
__device__ __forceinline__ void run_k16_f32(const uint16_t *a, const uint16_t *b, const float *c, float *d,
                                            Mma mma) {
    int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    uint32_t ra[4], rb[2];
    float acc[4];
    load_a_k16(a, g, t, ra);
    load_b_k16(b, g, t, rb);
    load_c_f32(c, g, t, acc);
    mma(acc, ra, rb);
    store_d_f32(d, g, t, acc);
}

extern "C" __global__ void mma_f16_f32(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    run_k16_f32(a, b, c, d, [](float (&acc)[4], const uint32_t (&ra)[4], const uint32_t (&rb)[2]) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                     : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "r"(rb[0]), "r"(rb[1]));
    });
}

extern "C" __global__ void mma_bf16_f32(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    run_k16_f32(a, b, c, d, [](float (&acc)[4], const uint32_t (&ra)[4], const uint32_t (&rb)[2]) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                     : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "r"(rb[0]), "r"(rb[1]));
    });
}

// f16 accumulate: C/D are 16x8 row-major f16, two elements per register.
extern "C" __global__ void mma_f16_f16(const uint16_t *a, const uint16_t *b, const uint16_t *c, uint16_t *d) {
    int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    uint32_t ra[4], rb[2], rc[2];
    load_a_k16(a, g, t, ra);
    load_b_k16(b, g, t, rb);
    rc[0] = pack2(c, c_index(g, t, 0), c_index(g, t, 1));
    rc[1] = pack2(c, c_index(g, t, 2), c_index(g, t, 3));
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0,%1}, {%2,%3,%4,%5}, {%6,%7}, {%0,%1};\n"
                 : "+r"(rc[0]), "+r"(rc[1])
                 : "r"(ra[0]), "r"(ra[1]), "r"(ra[2]), "r"(ra[3]), "r"(rb[0]), "r"(rb[1]));
    for (int i = 0; i < 4; ++i) d[c_index(g, t, i)] = (uint16_t)(rc[i / 2] >> (16 * (i % 2)));
}

// m16n8k8, f16 -> f32. A: 16x8 row-major, B: 8x8 row-major (k x n): the first k8 halves of the
// k16 formulas with row pitch 8 (a0,a1: (g, 2t..); a2,a3: (g+8, 2t..); b0,b1: rows 2t, 2t+1).
extern "C" __global__ void mma_k8_f16_f32(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    uint32_t ra0 = pack2(a, g * 8 + 2 * t, g * 8 + 2 * t + 1);
    uint32_t ra1 = pack2(a, (g + 8) * 8 + 2 * t, (g + 8) * 8 + 2 * t + 1);
    uint32_t rb0 = pack2(b, (2 * t) * 8 + g, (2 * t + 1) * 8 + g);
    float acc[4];
    load_c_f32(c, g, t, acc);
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(ra0), "r"(ra1), "r"(rb0));
    store_d_f32(d, g, t, acc);
}

// Turing's k16 step (kernels/common/mma.cuh, compiled for sm_75): the m16n8k16 fragments above,
// fed to two m16n8k8 through mma_1688_f16 in the order mma.cuh's Turing branch uses (half h takes
// A registers 2h, 2h+1 and B register h). Same inputs and output as mma_f16_f32.
#include "common/mma.cuh"
extern "C" __global__ void mma_k16_as_two_k8(const uint16_t *a, const uint16_t *b, const float *c, float *d) {
    run_k16_f32(a, b, c, d, [](float (&acc)[4], const uint32_t (&ra)[4], const uint32_t (&rb)[2]) {
        for (int h = 0; h < flashmha::kK8Halves; ++h)
            flashmha::mma_1688_f16(acc, ra[flashmha::kK8ARegs * h], ra[flashmha::kK8ARegs * h + 1], rb[h]);
    });
}
