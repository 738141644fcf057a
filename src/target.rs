//! Which family of compiled kernels a plan launches: the Ampere-and-newer kernels (compute_80
//! PTX, sm_80 / 86 / 89 / 90 cubins: `cp.async`, `mma.m16n8k16`, f16 and bf16) or the Turing ones
//! (compute_75 PTX, sm_75 cubin: register-staged loads, two `mma.m16n8k8` per k16 step, f16
//! only). A plan is made for one target; the CUDA backend picks its device's target
//! ([`KernelTarget::for_compute_capability`]), the emulator runs either.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KernelTarget {
    /// sm_80 and newer (A100, RTX 30xx/40xx, L4, H100's mma.sync path).
    #[default]
    Ampere,
    /// sm_75 (T4, RTX 20xx, Quadro RTX): f16 only, since Turing has no bf16 `mma`.
    Turing,
}

impl KernelTarget {
    /// The target whose kernels run best on a device of compute capability `major.minor`;
    /// `None` below 7.5 (no kernel of this build runs there).
    pub fn for_compute_capability(major: i32, minor: i32) -> Option<KernelTarget> {
        match (major, minor) {
            (m, _) if m >= 8 => Some(KernelTarget::Ampere),
            (7, n) if n >= 5 => Some(KernelTarget::Turing),
            _ => None,
        }
    }

    /// The lowest compute capability (major * 10 + minor) the target's PTX runs on.
    pub fn min_sm(self) -> u32 {
        match self {
            KernelTarget::Ampere => 80,
            KernelTarget::Turing => 75,
        }
    }

    /// Whether the target has kernels for `dtype` at all.
    pub fn supports(self, dtype: crate::dtype::DType) -> bool {
        self == KernelTarget::Ampere || dtype == crate::dtype::DType::F16
    }
}

impl fmt::Display for KernelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelTarget::Ampere => "sm_80+",
            KernelTarget::Turing => "sm_75",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn devices_map_to_targets() {
        let t = KernelTarget::for_compute_capability;
        for (cc, want) in [
            ((7, 0), None),
            ((7, 2), None),
            ((7, 5), Some(KernelTarget::Turing)),
            ((8, 0), Some(KernelTarget::Ampere)),
            ((8, 9), Some(KernelTarget::Ampere)),
            ((9, 0), Some(KernelTarget::Ampere)),
            ((12, 0), Some(KernelTarget::Ampere)),
        ] {
            assert_eq!(t(cc.0, cc.1), want, "{cc:?}");
        }
        assert!(!KernelTarget::Turing.supports(DType::Bf16));
        assert!(KernelTarget::Turing.supports(DType::F16));
        assert!(KernelTarget::Ampere.supports(DType::Bf16));
    }
}
