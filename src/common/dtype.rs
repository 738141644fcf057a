//! Element types the kernels take for q, k, v and o.

/// The 16-bit floating-point formats of the tensor-core kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        2
    }

    /// The 16-bit pattern of `x` rounded (to nearest even) to this type.
    pub fn bits_from_f32(self, x: f32) -> u16 {
        match self {
            DType::F16 => half::f16::from_f32(x).to_bits(),
            DType::Bf16 => half::bf16::from_f32(x).to_bits(),
        }
    }

    /// The value of a 16-bit pattern of this type.
    pub fn f32_from_bits(self, bits: u16) -> f32 {
        match self {
            DType::F16 => half::f16::from_bits(bits).to_f32(),
            DType::Bf16 => half::bf16::from_bits(bits).to_f32(),
        }
    }

    /// Rounds one value to this type (round to nearest even) and back to f32.
    pub fn round(self, x: f32) -> f32 {
        self.f32_from_bits(self.bits_from_f32(x))
    }

    /// Unit roundoff `u`: the largest relative error of rounding a normal value to this type,
    /// half the distance from 1 to the next representable number (`2^-p` for `p` significant
    /// bits: 11 for f16, 8 for bf16).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            DType::F16 => 2f64.powi(-11),
            DType::Bf16 => 2f64.powi(-8),
        }
    }

    /// The name used in kernel entry names and the CLI (`f16`, `bf16`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f16" => Ok(DType::F16),
            "bf16" => Ok(DType::Bf16),
            other => Err(format!("unknown dtype `{other}` (expected f16 or bf16)")),
        }
    }
}
