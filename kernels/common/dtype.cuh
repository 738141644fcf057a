/*
 * dtype.cuh: the two 16-bit element types of the forward kernels (f16, bf16). Elements are stored
 * as raw 16-bit words; this file names, per type, the PTX type suffix used by mma.sync and the
 * f32 -> packed pair conversion used for P (the A operand of P.V) and for the output O.
 */
#ifndef FLASHMHA_COMMON_DTYPE_CUH
#define FLASHMHA_COMMON_DTYPE_CUH

#include <stdint.h>

#include "common/arch.cuh"

namespace flashmha {

using elem_bits_t = uint16_t;  // storage of one f16 / bf16 element
constexpr int kElemBytes = 2;

/* Packs two f32 values into one .b32 register, `lo` in bits 0..15 (the lower-indexed element of a
 * fragment pair, PTX ISA 9.7.14.5.8 "Elements (low to high)"). PTX ISA "cvt": for .f16x2/.bf16x2
 * the value converted from the FIRST source goes to the UPPER half, hence the operand order. */
struct ElemF16 {
    static constexpr bool kIsBf16 = false;
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        uint32_t r;
#if FLASHMHA_SM75
        // cvt.rn.f16x2.f32 needs sm_80 (PTX ISA "cvt", target ISA notes): two scalar cvt.
        asm("{\n\t.reg .b16 l, h;\n\tcvt.rn.f16.f32 l, %1;\n\tcvt.rn.f16.f32 h, %2;\n\t"
            "mov.b32 %0, {l, h};\n\t}"
            : "=r"(r)
            : "f"(lo), "f"(hi));
#else
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
        return r;
    }
};

struct ElemBF16 {
    static constexpr bool kIsBf16 = true;
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        uint32_t r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
};

/* Names used by kernel_table.h tokens (X(f16, ...), X(bf16, ...)). */
using Elem_f16 = ElemF16;
using Elem_bf16 = ElemBF16;

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_DTYPE_CUH
