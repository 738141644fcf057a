//! Exact rounding of real values to IEEE binary formats (f16, bf16, tf32, f32, f64) in all four
//! PTX rounding modes, with optional saturation to the largest finite value. Host floating-point
//! only rounds to nearest, so every directed-rounding or narrowing operation of the emulator
//! funnels through [`round_pack`].

/// PTX rounding modifier (`.rn`, `.rz`, `.rm`, `.rp`; `.rna` = nearest, ties away from zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rnd {
    Rn,
    Rz,
    Rm,
    Rp,
    Rna,
}

/// An IEEE binary format: exponent bits and explicit fraction bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fmt {
    pub ebits: u32,
    pub mbits: u32,
}

pub const F16: Fmt = Fmt {
    ebits: 5,
    mbits: 10,
};
pub const BF16: Fmt = Fmt { ebits: 8, mbits: 7 };
pub const TF32: Fmt = Fmt {
    ebits: 8,
    mbits: 10,
};
pub const F32: Fmt = Fmt {
    ebits: 8,
    mbits: 23,
};
pub const F64: Fmt = Fmt {
    ebits: 11,
    mbits: 52,
};

impl Fmt {
    fn bias(self) -> i32 {
        (1 << (self.ebits - 1)) - 1
    }
    pub fn sign_bit(self) -> u64 {
        1u64 << (self.ebits + self.mbits)
    }
    pub fn inf(self, neg: bool) -> u64 {
        (((1u64 << self.ebits) - 1) << self.mbits) | if neg { self.sign_bit() } else { 0 }
    }
    pub fn max_finite(self, neg: bool) -> u64 {
        self.inf(neg) - 1
    }
    /// The canonical NaN NVIDIA hardware produces (all fraction bits set, sign clear).
    pub fn canonical_nan(self) -> u64 {
        self.inf(false) | ((1u64 << self.mbits) - 1)
    }
    pub fn is_nan(self, bits: u64) -> bool {
        let e = (bits >> self.mbits) & ((1 << self.ebits) - 1);
        e == (1 << self.ebits) - 1 && bits & ((1 << self.mbits) - 1) != 0
    }
    /// Widens a value of this format to f64 (exact for every format here).
    pub fn to_f64(self, bits: u64) -> f64 {
        match self {
            F64 => f64::from_bits(bits),
            F32 => f32::from_bits(bits as u32) as f64,
            BF16 => f32::from_bits((bits as u32 & 0xFFFF) << 16) as f64,
            F16 => half::f16::from_bits(bits as u16).to_f64(),
            _ => {
                let neg = bits & self.sign_bit() != 0;
                let e = ((bits >> self.mbits) & ((1 << self.ebits) - 1)) as i32;
                let f = bits & ((1 << self.mbits) - 1);
                let mag = if e == (1 << self.ebits) - 1 {
                    if f == 0 {
                        f64::INFINITY
                    } else {
                        f64::NAN
                    }
                } else if e == 0 {
                    f as f64 * 2f64.powi(1 - self.bias() - self.mbits as i32)
                } else {
                    ((1u64 << self.mbits) | f) as f64
                        * 2f64.powi(e - self.bias() - self.mbits as i32)
                };
                if neg {
                    -mag
                } else {
                    mag
                }
            }
        }
    }
}

/// Rounds the exact value `(-1)^neg * (mant * 2^exp + tiny)` to `fmt`, where `tiny` is a
/// positive amount smaller than `2^exp` present when `sticky` is set. Returns the encoding.
pub fn round_pack(
    neg: bool,
    mant: u64,
    exp: i32,
    sticky: bool,
    fmt: Fmt,
    rnd: Rnd,
    satfinite: bool,
) -> u64 {
    let sign = if neg { fmt.sign_bit() } else { 0 };
    if mant == 0 && !sticky {
        return sign;
    }
    let (mut m, mut e2, mut sticky) = (mant, exp, sticky);
    if m == 0 {
        // Only a sub-ulp remainder: model it as one unit far below every representable value.
        m = 1;
        e2 = -4000;
        sticky = false;
    }
    let lz = m.leading_zeros();
    m <<= lz;
    e2 -= lz as i32;
    // value = m * 2^e2 with m in [2^63, 2^64): unbiased exponent e = e2 + 63
    let e = e2 + 63;
    let bias = fmt.bias();
    let emin = 1 - bias;
    let p = fmt.mbits as i32 + 1;
    let keep = if e >= emin { p } else { p - (emin - e) };
    let (mut q, guard, rest) = if keep <= 0 {
        if keep == 0 {
            (0u64, m >> 63 != 0, (m << 1) != 0 || sticky)
        } else {
            (0u64, false, true)
        }
    } else {
        let shift = (64 - keep) as u32;
        let q = m >> shift;
        let guard = (m >> (shift - 1)) & 1 != 0;
        let rest = (m & ((1u64 << (shift - 1)) - 1)) != 0 || sticky;
        (q, guard, rest)
    };
    let inexact = guard || rest;
    let up = match rnd {
        Rnd::Rn => guard && (rest || q & 1 != 0),
        Rnd::Rna => guard,
        Rnd::Rz => false,
        Rnd::Rm => neg && inexact,
        Rnd::Rp => !neg && inexact,
    };
    q += up as u64;
    let overflow = |fmt: Fmt| -> u64 {
        let to_inf = !satfinite
            && match rnd {
                Rnd::Rn | Rnd::Rna => true,
                Rnd::Rz => false,
                Rnd::Rm => neg,
                Rnd::Rp => !neg,
            };
        if to_inf {
            fmt.inf(neg)
        } else {
            fmt.max_finite(neg)
        }
    };
    if e >= emin {
        let mut e = e;
        if q >> p != 0 {
            q >>= 1;
            e += 1;
        }
        let be = e + bias;
        if be >= (1 << fmt.ebits) - 1 {
            return overflow(fmt);
        }
        sign | ((be as u64) << fmt.mbits) | (q & ((1u64 << fmt.mbits) - 1))
    } else {
        // Subnormal (a carry into bit mbits yields the smallest normal, which the encoding
        // represents naturally).
        sign | q
    }
}

/// Splits a finite nonzero f64 into (neg, mantissa, exponent).
pub fn decompose(v: f64) -> (bool, u64, i32) {
    let b = v.to_bits();
    let neg = b >> 63 != 0;
    let e = ((b >> 52) & 0x7ff) as i32;
    let f = b & ((1u64 << 52) - 1);
    if e == 0 {
        (neg, f, -1074)
    } else {
        (neg, f | (1u64 << 52), e - 1075)
    }
}

/// Rounds `v + resid` (exactly, where `|resid|` is below half an ulp of `v`, as produced by an
/// error-free transformation) to `fmt`. NaN and infinities pass through.
pub fn round_f64(v: f64, resid: f64, fmt: Fmt, rnd: Rnd, satfinite: bool) -> u64 {
    if fmt == F32 && rnd == Rnd::Rn && resid == 0.0 && !satfinite && !v.is_nan() {
        // the host conversion is exactly IEEE round-to-nearest-even
        return (v as f32).to_bits() as u64;
    }
    if v.is_nan() {
        return fmt.canonical_nan();
    }
    if v.is_infinite() {
        return if satfinite {
            fmt.max_finite(v < 0.0)
        } else {
            fmt.inf(v < 0.0)
        };
    }
    if v == 0.0 {
        if resid == 0.0 {
            return if v.is_sign_negative() {
                fmt.sign_bit()
            } else {
                0
            };
        }
        let (neg, m, e) = decompose(resid);
        return round_pack(neg, m, e, false, fmt, rnd, satfinite);
    }
    let (neg, m, e) = decompose(v);
    if resid == 0.0 {
        return round_pack(neg, m, e, false, fmt, rnd, satfinite);
    }
    let same = (resid < 0.0) == neg;
    let m4 = m << 2;
    if same {
        round_pack(neg, m4, e - 2, true, fmt, rnd, satfinite)
    } else {
        round_pack(neg, m4 - 1, e - 2, true, fmt, rnd, satfinite)
    }
}

/// Error-free sum: returns (s, err) with s = fl(a+b) and a + b = s + err exactly.
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    if !s.is_finite() {
        return (s, 0.0);
    }
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    (s, err)
}

/// Rounds an f64 to f32 with a rounding mode (exact input).
pub fn f64_to_f32(v: f64, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn {
        return v as f32;
    }
    f32::from_bits(round_f64(v, 0.0, F32, rnd, false) as u32)
}

/// Flushes an f32 subnormal to a zero of the same sign (`.ftz`).
#[inline(always)]
pub fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// Rounds an f64 in a directed mode to the neighbouring f64 given the exact residual.
pub fn adjust_f64(s: f64, err: f64, rnd: Rnd) -> f64 {
    if err == 0.0 || !s.is_finite() {
        return s;
    }
    let up = |x: f64| next_toward(x, f64::INFINITY);
    let down = |x: f64| next_toward(x, f64::NEG_INFINITY);
    match rnd {
        Rnd::Rn | Rnd::Rna => s,
        Rnd::Rp => {
            if err > 0.0 {
                up(s)
            } else {
                s
            }
        }
        Rnd::Rm => {
            if err < 0.0 {
                down(s)
            } else {
                s
            }
        }
        Rnd::Rz => {
            if s > 0.0 && err < 0.0 {
                down(s)
            } else if s < 0.0 && err > 0.0 {
                up(s)
            } else {
                s
            }
        }
    }
}

fn next_toward(x: f64, dir: f64) -> f64 {
    if x == 0.0 {
        let tiny = f64::from_bits(1);
        return if dir > 0.0 { tiny } else { -tiny };
    }
    let b = x.to_bits();
    let away = (dir > x) == (x > 0.0);
    f64::from_bits(if away { b + 1 } else { b - 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn to16(v: f32, fmt: Fmt, r: Rnd) -> u16 {
        round_f64(v as f64, 0.0, fmt, r, false) as u16
    }

    #[test]
    fn nearest_even_matches_half_crate() {
        let mut x = 0x1234_5678u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = f32::from_bits(x);
            if v.is_nan() {
                continue;
            }
            assert_eq!(to16(v, F16, Rnd::Rn), f16::from_f32(v).to_bits(), "{v:e}");
            assert_eq!(to16(v, BF16, Rnd::Rn), bf16::from_f32(v).to_bits(), "{v:e}");
            let d = f64::from_bits(((x as u64) << 32) | x.rotate_left(7) as u64);
            if d.is_finite() {
                assert_eq!(
                    round_f64(d, 0.0, F32, Rnd::Rn, false) as u32,
                    (d as f32).to_bits()
                );
            }
        }
    }

    #[test]
    fn ties_and_directed_modes() {
        // 1 + 2^-11 is exactly halfway between two f16 values: ties to even goes down.
        let tie = 1.0 + 2f32.powi(-11);
        assert_eq!(to16(tie, F16, Rnd::Rn), 0x3C00);
        assert_eq!(to16(tie, F16, Rnd::Rp), 0x3C01);
        assert_eq!(to16(tie, F16, Rnd::Rz), 0x3C00);
        assert_eq!(to16(-tie, F16, Rnd::Rm), 0xBC01);
        // odd neighbour: tie goes up
        let tie2 = 1.0 + 3.0 * 2f32.powi(-11);
        assert_eq!(to16(tie2, F16, Rnd::Rn), 0x3C02);
        // overflow
        assert_eq!(to16(70000.0, F16, Rnd::Rn), 0x7C00);
        assert_eq!(to16(70000.0, F16, Rnd::Rz), 0x7BFF);
        assert_eq!(round_f64(70000.0, 0.0, F16, Rnd::Rn, true) as u16, 0x7BFF);
        // subnormal f16
        assert_eq!(to16(2f32.powi(-24), F16, Rnd::Rn), 0x0001);
        assert_eq!(to16(2f32.powi(-26), F16, Rnd::Rp), 0x0001);
        assert_eq!(to16(2f32.powi(-26), F16, Rnd::Rn), 0x0000);
    }

    #[test]
    fn residual_decides_directed_rounding() {
        // 1 + tiny rounds up under Rp and stays under Rz; 1 - tiny goes below 1 under Rm.
        assert_eq!(
            round_f64(1.0, 1e-30, F32, Rnd::Rp, false) as u32,
            0x3F80_0001
        );
        assert_eq!(
            round_f64(1.0, 1e-30, F32, Rnd::Rz, false) as u32,
            0x3F80_0000
        );
        assert_eq!(
            round_f64(1.0, -1e-30, F32, Rnd::Rm, false) as u32,
            0x3F7F_FFFF
        );
        assert_eq!(
            round_f64(1.0, -1e-30, F32, Rnd::Rz, false) as u32,
            0x3F7F_FFFF
        );
        assert_eq!(
            round_f64(1.0, -1e-30, F32, Rnd::Rn, false) as u32,
            0x3F80_0000
        );
        let (s, e) = two_sum(1.0, 1e-20);
        assert_eq!(adjust_f64(s, e, Rnd::Rp), next_toward(1.0, 2.0));
    }

    #[test]
    fn widening_is_exact() {
        for b in [0x0001u64, 0x03FF, 0x3C00, 0x7BFF, 0xFC00] {
            assert_eq!(F16.to_f64(b) as f32, f16::from_bits(b as u16).to_f32());
        }
        assert_eq!(BF16.to_f64(0x3F80), 1.0);
    }
}
