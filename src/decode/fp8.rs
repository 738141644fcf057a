//! FP8 KV-cache element types on the host: what a cache page holds ([`KvCacheDType`]), how its
//! scales are laid out ([`KvScaleGranularity`]), and the exact host codec of both formats (PTX ISA
//! 5.2.5.1 "Alternate Floating-Point Data Formats"), written independently of the kernels'
//! bit tricks (kernels/common/fp8.cuh) so the tests compare two implementations:
//! decoding by the definition `(-1)^s 2^(e - bias) (1 + m / 2^M)` (subnormals
//! `2^(1 - bias) m / 2^M`), encoding by picking the nearest representable value (ties to the even
//! code), saturating to the largest finite value (`.satfinite`: +-inf too), NaN to NaN.
//!
//! Scales: dequantised value = code x scale, and the append quantises `x / scale`. A scale must
//! be finite and > 0. Host scales (the emulator runners' `k_scales` / `v_scales`, the GPU check
//! runner) are checked by [`check_scales`] before anything is uploaded ([`Error::InvalidScale`]).
//! Scales already on the device are the caller's to keep valid: like every other float input
//! the kernels read them as they are, and a bad one gives defined but useless results rather
//! than a trap. Decode (kernels/common/flash_decode_cta.cuh) folds the K scale into the score
//! scale and multiplies O by the V scale: a K scale of 0 makes every score 0 (uniform weights
//! over the unmasked keys), a negative one negates the scores, NaN or inf make O and LSE NaN;
//! a V scale of 0 gives O = 0, a negative one -O, NaN or inf NaN / inf in O. The append
//! (kernels/common/kv_append_chunk.cuh) writes the code of `x / scale`: a scale of 0 saturates
//! every non-zero value to the largest code (0 / 0 to NaN), inf gives zero codes, NaN NaN
//! codes, a negative scale flipped signs.

use crate::abi;
use crate::error::{Error, Result, TensorName};

/// What the K and V pages hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvCacheDType {
    /// The problem's dtype (f16 / bf16), no scales.
    #[default]
    Same,
    /// FP8 e4m3 codes (bias 7, max 448, no infinities, `0x7f` / `0xff` NaN).
    Fp8E4M3,
    /// FP8 e5m2 codes (bias 15, max 57344, infinities and NaNs as f16).
    Fp8E5M2,
}

/// One f32 scale per tensor or one per KV head, separately for K and for V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvScaleGranularity {
    #[default]
    PerTensor,
    PerKvHead,
}

impl KvScaleGranularity {
    /// Scales in each of the K and V scale buffers.
    pub fn len(self, num_heads_kv: usize) -> usize {
        match self {
            KvScaleGranularity::PerTensor => 1,
            KvScaleGranularity::PerKvHead => num_heads_kv,
        }
    }
    /// `kv_scale_stride` of the params: scale of KV head `h` at `h * stride`.
    pub fn stride(self) -> i32 {
        match self {
            KvScaleGranularity::PerTensor => 0,
            KvScaleGranularity::PerKvHead => 1,
        }
    }
}

/// Every FP8 scale in `scales` (the `tensor` buffer's host copy) must be finite and > 0: 0 or
/// a negative scale would silently zero or negate the cache, NaN / inf poison it.
pub fn check_scales(tensor: TensorName, scales: &[f32]) -> Result<()> {
    match scales
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > 0.0))
    {
        Some((index, &value)) => Err(Error::InvalidScale {
            tensor,
            index,
            value,
        }),
        None => Ok(()),
    }
}

/// Exponent bits, mantissa bits, bias of a format.
struct Layout {
    mantissa_bits: u32,
    bias: i32,
    /// e4m3 has no infinities and only S.1111.111 is NaN; e5m2 is IEEE-like.
    ieee_specials: bool,
    max_finite: f32,
}

const E4M3: Layout = Layout {
    mantissa_bits: 3,
    bias: 7,
    ieee_specials: false,
    max_finite: 448.0,
};
const E5M2: Layout = Layout {
    mantissa_bits: 2,
    bias: 15,
    ieee_specials: true,
    max_finite: 57344.0,
};
const SIGN: u8 = 0x80;
const MAGNITUDE: u8 = 0x7f;

impl KvCacheDType {
    pub fn is_fp8(self) -> bool {
        !matches!(self, KvCacheDType::Same)
    }
    /// `FLASHMHA_KV_FORMAT_*` of the params.
    pub fn format(self) -> i32 {
        (match self {
            KvCacheDType::Same => abi::FLASHMHA_KV_FORMAT_SAME,
            KvCacheDType::Fp8E4M3 => abi::FLASHMHA_KV_FORMAT_E4M3,
            KvCacheDType::Fp8E5M2 => abi::FLASHMHA_KV_FORMAT_E5M2,
        }) as i32
    }
    /// Bytes per cached element given the problem's 16-bit dtype.
    pub fn element_bytes(self) -> usize {
        if self.is_fp8() {
            1
        } else {
            2
        }
    }
    fn layout(self) -> &'static Layout {
        match self {
            KvCacheDType::Fp8E5M2 => &E5M2,
            _ => &E4M3,
        }
    }

    /// The value of an FP8 code (panics for [`KvCacheDType::Same`]).
    pub fn decode(self, code: u8) -> f32 {
        assert!(self.is_fp8(), "decode of an FP8 code needs an FP8 type");
        let l = self.layout();
        let sign = if code & SIGN != 0 { -1.0f32 } else { 1.0 };
        let mag = code & MAGNITUDE;
        let m = u32::from(mag) & ((1 << l.mantissa_bits) - 1);
        let e = i32::from(mag >> l.mantissa_bits);
        let e_max = (1 << (7 - l.mantissa_bits)) - 1;
        if l.ieee_specials && e == e_max {
            return if m == 0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            };
        }
        if !l.ieee_specials && mag == MAGNITUDE {
            return f32::NAN;
        }
        let frac = m as f32 / (1u32 << l.mantissa_bits) as f32;
        let v = if e == 0 {
            2f32.powi(1 - l.bias) * frac
        } else {
            2f32.powi(e - l.bias) * (1.0 + frac)
        };
        sign * v
    }

    /// The code nearest to `x` (ties to the even code), saturating, NaN to the format's NaN.
    pub fn encode(self, x: f32) -> u8 {
        assert!(self.is_fp8(), "encode to an FP8 code needs an FP8 type");
        let l = self.layout();
        let sign = if x.is_sign_negative() { SIGN } else { 0 };
        if x.is_nan() {
            return sign | MAGNITUDE;
        }
        let a = x.abs();
        if a >= l.max_finite {
            return sign | self.encode_positive_max();
        }
        // Nearest among the non-negative finite codes (monotone in the code), ties to even.
        let max_code = self.encode_positive_max();
        let mut best = 0u8;
        let mut best_err = f64::INFINITY;
        for c in 0..=max_code {
            let err = (f64::from(self.decode(c)) - f64::from(a)).abs();
            if err < best_err || (err == best_err && c % 2 == 0) {
                best = c;
                best_err = err;
            }
        }
        sign | best
    }

    fn encode_positive_max(self) -> u8 {
        match self {
            KvCacheDType::Fp8E5M2 => 0x7b,
            _ => 0x7e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_decode_to_their_values() {
        let e4 = KvCacheDType::Fp8E4M3;
        assert_eq!(e4.decode(0x7e), 448.0);
        assert_eq!(e4.decode(0x01), 2f32.powi(-9));
        assert_eq!(e4.decode(0x08), 2f32.powi(-6));
        assert_eq!(e4.decode(0x38), 1.0);
        assert_eq!(e4.decode(0xb8), -1.0);
        assert!(e4.decode(0x7f).is_nan() && e4.decode(0xff).is_nan());
        assert_eq!(e4.decode(0x78), 256.0); // e = 15 is finite in e4m3
        let e5 = KvCacheDType::Fp8E5M2;
        assert_eq!(e5.decode(0x7b), 57344.0);
        assert_eq!(e5.decode(0x7c), f32::INFINITY);
        assert_eq!(e5.decode(0xfc), f32::NEG_INFINITY);
        assert!(e5.decode(0x7d).is_nan());
        assert_eq!(e5.decode(0x01), 2f32.powi(-16));
        assert_eq!(e5.decode(0x3c), 1.0);
        // e5m2 is the upper byte of an f16.
        for c in 0..=255u8 {
            let h = half::f16::from_bits(u16::from(c) << 8).to_f32();
            let d = e5.decode(c);
            assert!(d == h || (d.is_nan() && h.is_nan()), "code {c:#x}");
        }
    }

    #[test]
    fn encode_rounds_to_nearest_even_and_saturates() {
        for t in [KvCacheDType::Fp8E4M3, KvCacheDType::Fp8E5M2] {
            for c in 0..=255u8 {
                let v = t.decode(c);
                if v.is_finite() {
                    assert_eq!(t.decode(t.encode(v)), v, "{t:?} {c:#x} round trip");
                }
            }
            assert_eq!(t.encode(f32::INFINITY), t.encode_positive_max());
            assert_eq!(t.encode(-1e30), SIGN | t.encode_positive_max());
            assert!(t.decode(t.encode(f32::NAN)).is_nan());
        }
        let e4 = KvCacheDType::Fp8E4M3;
        // 1 + 1/16 lies halfway between 1 (0x38, even) and 1.125 (0x39): ties to even.
        assert_eq!(e4.encode(1.0625), 0x38);
        assert_eq!(e4.encode(1.1875), 0x3a); // halfway 1.125 / 1.25 -> 0x3a
        assert_eq!(e4.encode(2f32.powi(-10)), 0x00); // half the smallest subnormal: to 0 (even)
        assert_eq!(e4.encode(3.0 * 2f32.powi(-10)), 0x02);
        assert_eq!(e4.encode(460.0), 0x7e);
    }
}
