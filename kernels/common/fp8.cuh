/*
 * fp8.cuh: the two 8-bit floating-point KV-cache formats (PTX ISA 5.2.5.1 "Alternate
 * Floating-Point Data Formats", #alternate-floating-point-data-formats):
 *   e4m3: s eeee mmm, bias 7, no infinities, S.1111.111 (0x7f / 0xff) is NaN, max 448,
 *         subnormals m x 2^-9;
 *   e5m2: s eeeee mm, bias 15 (the upper byte of an f16), infinities and NaNs as in f16,
 *         max 57344, subnormals m x 2^-16.
 * We compile compute_80 PTX, where cvt has no FP8 forms (they need sm_89), so both directions
 * are integer / bit arithmetic here:
 *   - dequantisation to f16 bits (exact for every code: zeros, subnormals, e5m2 inf / NaN,
 *     e4m3 NaN), two codes per .b32 as an f16x2, for the decode kernel's mma operands;
 *   - quantisation of an f32 to a code (round to nearest even, saturating to the largest finite
 *     value like cvt's .satfinite; NaN stays NaN), for the KV-append kernel.
 *
 * Pairing: a .b32 `x` holds codes b0..b3 (b0 in bits 0..7). The dequantisers return the pairs
 * (b0, b2) and (b1, b3) as f16x2 (first of the pair in bits 0..15). That is the pairing both
 * ldmatrix layouts of kernels/sm80/flash_decode.cu need: with .trans on [key][dim] bytes, b0 / b2 are
 * two keys of one dim and b1 / b3 the same keys of the next dim.
 *
 * e4m3 codes become f16 values scaled by 2^-8 (kE4M3ToF16Scale): the 7 magnitude bits shifted
 * into f16's exponent / mantissa fields keep their meaning, subnormals included, only the
 * exponent bias differs (7 against 15). The kernel folds 2^8 into the K / V scales instead of
 * multiplying every element. e5m2 codes are f16's upper byte: exact, scale 1.
 */
#ifndef FLASHMHA_COMMON_FP8_CUH
#define FLASHMHA_COMMON_FP8_CUH

#include <stdint.h>

#include "params.h"

namespace flashmha {

/* ---- Format constants (PTX ISA 5.2.5.1) ---------------------------------------------------- */
constexpr uint32_t kFp8SignBit = 0x80u;
constexpr uint32_t kFp8MagnitudeMask = 0x7fu;   // exponent and mantissa bits of one code
/* 2^e for e >= 0, exact in f32 (the formats' powers of two below). */
constexpr float fp8_exp2(int e) { return e == 0 ? 1.0f : 2.0f * fp8_exp2(e - 1); }

/* One format, from its field widths and its largest codes: the value of a normal code with
 * exponent field E and mantissa M is (1 + M / 2^kMantissaBits) x 2^(E - kBias); subnormals are
 * M x kSubnormalStep. kNaNCode is the magnitude the quantiser gives a NaN. */
template <int kMantissaBits_, int kBias_, uint32_t kNaNCode_, uint32_t kMaxFiniteCode_>
struct Fp8Format {
    static constexpr int kMantissaBits = kMantissaBits_;
    static constexpr int kBias = kBias_;
    static constexpr uint32_t kNaNCode = kNaNCode_;
    static constexpr uint32_t kMaxFiniteCode = kMaxFiniteCode_;
    static constexpr uint32_t kMantissaMask = (1u << kMantissaBits) - 1u;
    static constexpr float kMaxFinite =
        (1.0f + static_cast<float>(kMaxFiniteCode & kMantissaMask) / fp8_exp2(kMantissaBits)) *
        fp8_exp2(static_cast<int>(kMaxFiniteCode >> kMantissaBits) - kBias);
    static constexpr float kSubnormalStepInv = fp8_exp2(kBias - 1 + kMantissaBits);
    static constexpr float kMinNormal = 1.0f / fp8_exp2(kBias - 1);  // 2^(1 - bias)
};
/* e4m3: NaN S.1111.111, max 448 = 1.75 x 2^8 (code 0x7e), subnormal step 2^-9. */
using Fp8E4M3 = Fp8Format<3, 7, 0x7fu, 0x7eu>;
/* e5m2: NaN exponent 11111 mantissa 11, max 57344 = 1.75 x 2^15 (code 0x7b), step 2^-16. */
using Fp8E5M2 = Fp8Format<2, 15, 0x7fu, 0x7bu>;
static_assert(Fp8E4M3::kMaxFinite == 448.0f && Fp8E4M3::kSubnormalStepInv == 512.0f &&
                  Fp8E4M3::kMinNormal == 1.0f / 64.0f,
              "e4m3 constants (PTX ISA 5.2.5.1)");
static_assert(Fp8E5M2::kMaxFinite == 57344.0f && Fp8E5M2::kSubnormalStepInv == 65536.0f &&
                  Fp8E5M2::kMinNormal == 1.0f / 16384.0f,
              "e5m2 constants (PTX ISA 5.2.5.1)");

/* f32 layout (IEEE binary32). */
constexpr int kF32MantissaBits = 23;
constexpr int kF32Bias = 127;
constexpr uint32_t kF32SignBit = 0x80000000u;

/* f16 layout: the magnitude bits of an e4m3 code land at bits 7..13 (mantissa 7..9, exponent
 * 10..13), its sign at bit 15; the f16 value is then code x 2^(7 - 15). */
constexpr int kE4M3ToF16Shift = 10 - Fp8E4M3::kMantissaBits;  // mantissa 3 bits below f16's top
constexpr float kE4M3ToF16Scale = 256.0f;  // 2^(15 - 7): the f16 holds value / 256
constexpr float kE5M2ToF16Scale = 1.0f;

/* ---- prmt selectors (PTX ISA 9.7.9.7 "prmt", default mode): nibble i picks the source byte of
 *      result byte i from {a = bytes 0..3, b = bytes 4..7}; bit 3 of a nibble replicates that
 *      byte's sign bit instead. ----------------------------------------------------------------- */
constexpr uint32_t kPrmtSignOf = 0x8u;
/* (b0, b2) into the upper byte of each half, zero lower bytes (b = 0): e5m2 -> f16 pair. */
constexpr uint32_t kPrmtCodes02High = (2u << 12) | (4u << 8) | (0u << 4) | 4u;
/* e4m3: low byte = magnitude byte of a (b0 / b1, b2 / b3), high byte = the sign of the same code
 * replicated from b (0x00 or 0xff). */
constexpr uint32_t kPrmtMagSign02 =
    ((kPrmtSignOf | 6u) << 12) | (2u << 8) | ((kPrmtSignOf | 4u) << 4) | 0u;
constexpr uint32_t kPrmtMagSign13 =
    ((kPrmtSignOf | 7u) << 12) | (3u << 8) | ((kPrmtSignOf | 5u) << 4) | 1u;

/* Byte-wise masks of a .b32 holding four codes. */
constexpr uint32_t kBytesMagnitude = 0x7f7f7f7fu;
constexpr uint32_t kBytesSign = 0x80808080u;
constexpr uint32_t kBytesOne = 0x01010101u;
constexpr uint32_t kHalvesHighByte = 0xff00ff00u;
/* After shifting [sign byte : magnitude byte] halves left by kE4M3ToF16Shift: keep bits 7..15
 * of each half (magnitude 7..14 with the NaN flag at 14, sign 15). */
constexpr uint32_t kHalvesE4M3Field = 0xff80ff80u;

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}

/* Two f16x2 of the codes (b0, b2) and (b1, b3) of `x`. */
struct Fp8Pairs {
    uint32_t p02;
    uint32_t p13;
};

/* e5m2 -> f16: the code is the f16's upper byte (exact, inf and NaN included). */
__device__ __forceinline__ Fp8Pairs e5m2_pairs_to_f16(uint32_t x) {
    return {prmt(x, 0u, kPrmtCodes02High), x & kHalvesHighByte};
}

/* e4m3 -> f16 x 2^-8. Per code: magnitude m (7 bits); NaN (m = 0x7f) becomes 0xff, i.e. the
 * bit that lands on f16 bit 14 turns the exponent field to all ones with a nonzero mantissa.
 * (m + 1) sets bit 7 exactly when m = 0x7f and never carries into the next byte. The half
 * [sign 0x00 / 0xff : magnitude] shifted left by 7 puts magnitude at 7..14 and the sign at 15;
 * the mask drops the sign byte's other bits. */
__device__ __forceinline__ Fp8Pairs e4m3_pairs_to_f16(uint32_t x) {
    const uint32_t mag = x & kBytesMagnitude;
    const uint32_t nan_flag = (mag + kBytesOne) & kBytesSign;
    const uint32_t mag_nan = mag | nan_flag;
    return {(prmt(mag_nan, x, kPrmtMagSign02) << kE4M3ToF16Shift) & kHalvesE4M3Field,
            (prmt(mag_nan, x, kPrmtMagSign13) << kE4M3ToF16Shift) & kHalvesE4M3Field};
}

/* f16x2 -> bf16x2 (exact here: every dequantised code is representable in both). PTX ISA "cvt":
 * for .bf16x2 the first source goes to the upper half. */
__device__ __forceinline__ uint32_t f16x2_to_bf16x2(uint32_t h) {
    float lo, hi;
    asm("{\n\t.reg .b16 l, u;\n\tmov.b32 {l, u}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, u;\n\t}"
        : "=f"(lo), "=f"(hi)
        : "r"(h));
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* The f16 dequantisation's scale (value = f16 x this) of a FLASHMHA_KV_FORMAT_*. */
__device__ __forceinline__ float fp8_f16_scale(int format) {
    return format == FLASHMHA_KV_FORMAT_E4M3 ? kE4M3ToF16Scale : kE5M2ToF16Scale;
}

/* ---- Quantisation f32 -> code (round to nearest even, .satfinite) -------------------------- */

/* |x| >= 2^(1 - bias) (the normal range): rebias the f32 bits and round away the surplus
 * mantissa bits to nearest even; a carry out of the mantissa bumps the exponent, as it should. */
template <int kMantissaBits, int kBias>
__device__ __forceinline__ uint32_t fp8_round_normal(uint32_t abs_bits) {
    constexpr int kDrop = kF32MantissaBits - kMantissaBits;
    constexpr uint32_t kRebias = static_cast<uint32_t>(kF32Bias - kBias) << kF32MantissaBits;
    constexpr uint32_t kHalfUlpMinus1 = (1u << (kDrop - 1)) - 1u;
    const uint32_t v = abs_bits - kRebias;
    return (v + kHalfUlpMinus1 + ((v >> kDrop) & 1u)) >> kDrop;
}

/* x -> code of format F (Fp8E4M3 or Fp8E5M2). |x| >= max finite (inf included) saturates to it
 * (values between the max and the next would-be step round to the max anyway, so this is
 * .satfinite after rounding). Subnormal targets: |x| times the inverse subnormal step is exact in
 * f32 and cvt.rni rounds it to nearest even; the codes of subnormals are those integers (and the
 * integer 2^mantissa_bits is the smallest normal's code, so a round-up stays correct). */
template <class F>
__device__ __forceinline__ uint32_t f32_to_fp8(float x) {
    const uint32_t bits = __float_as_uint(x);
    const uint32_t sign = (bits & kF32SignBit) ? kFp8SignBit : 0u;
    const float a = fabsf(x);
    uint32_t mag;
    if (a != a)
        mag = F::kNaNCode;
    else if (a >= F::kMaxFinite)
        mag = F::kMaxFiniteCode;
    else if (a < F::kMinNormal)
        mag = static_cast<uint32_t>(__float2int_rn(a * F::kSubnormalStepInv));
    else
        mag = fp8_round_normal<F::kMantissaBits, F::kBias>(__float_as_uint(a));
    return sign | mag;
}

}  // namespace flashmha

#endif  // FLASHMHA_COMMON_FP8_CUH
