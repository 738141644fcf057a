//! FP8 KV-cache element types on the host: what a cache page holds ([`KvCacheDType`]), how its
//! scales are laid out ([`KvScaleGranularity`]), and (feature `reference`) the host codec of
//! both formats (PTX ISA 5.2.5.1 "Alternate Floating-Point Data Formats"), independent of the
//! kernels' bit tricks (kernels/common/fp8.cuh) so that the tests compare two implementations.
//! Decoding is the `float8` crate's (already in the tree through candle-core: a port of
//! NVIDIA's `cuda_fp8.hpp` conversions; exact for every code). Encoding is ours (see
//! [`KvCacheDType::encode`] for why): the nearest code, ties to the even code, saturating to
//! the largest finite value (`.satfinite`: +-inf too), every NaN to the format's one NaN code,
//! as the append kernel does.
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

use crate::common::abi;
use crate::common::error::{Error, Result, TensorName};

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

#[cfg(feature = "reference")]
const SIGN: u8 = 0x80;
#[cfg(feature = "reference")]
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
    /// The value of an FP8 code; [`KvCacheDType::Same`] has no codes, so NaN (never a panic).
    #[cfg(feature = "reference")]
    pub fn decode(self, code: u8) -> f32 {
        match self {
            KvCacheDType::Fp8E4M3 => float8::F8E4M3::from_bits(code).to_f32(),
            KvCacheDType::Fp8E5M2 => float8::F8E5M2::from_bits(code).to_f32(),
            KvCacheDType::Same => f32::NAN,
        }
    }

    /// The code nearest to `x` (ties to the even code), saturating, NaN to the format's NaN.
    /// Ours rather than `float8`'s encoder: the append kernel writes the one NaN code
    /// S.1111111 for every NaN (`cvt.satfinite`'s), where `float8` keeps e5m2 NaN payload bits,
    /// and the tests compare the kernel's pools with this bit for bit.
    #[cfg(feature = "reference")]
    /// [`KvCacheDType::Same`] has no codes: every value gives the NaN pattern 0x7f.
    pub fn encode(self, x: f32) -> u8 {
        let Some(max_code) = self.encode_positive_max() else {
            return MAGNITUDE;
        };
        let sign = if x.is_sign_negative() { SIGN } else { 0 };
        if x.is_nan() {
            return sign | MAGNITUDE;
        }
        let a = x.abs();
        if a >= self.decode(max_code) {
            return sign | max_code;
        }
        // Nearest among the non-negative finite codes (monotone in the code), ties to even.
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

    /// The largest finite positive code (panics for [`KvCacheDType::Same`]).
    #[cfg(feature = "reference")]
    fn encode_positive_max(self) -> Option<u8> {
        match self {
            KvCacheDType::Fp8E5M2 => Some(0x7b),
            KvCacheDType::Fp8E4M3 => Some(0x7e),
            KvCacheDType::Same => None,
        }
    }
}

#[cfg(all(test, feature = "reference"))]
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
            assert_eq!(t.encode(f32::INFINITY), t.encode_positive_max().unwrap());
            assert_eq!(t.encode(-1e30), SIGN | t.encode_positive_max().unwrap());
            assert!(t.decode(t.encode(f32::NAN)).is_nan());
            // A 16-bit cache has no codes: NaN both ways, never a panic.
            let same = KvCacheDType::Same;
            assert!(same.decode(t.encode(1.0)).is_nan() && same.encode(1.0) == MAGNITUDE);
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
