//! Which family of compiled kernels a plan launches: the Ampere-and-newer kernels (compute_80
//! PTX, sm_80 / 86 / 89 / 90 cubins: `cp.async`, `mma.m16n8k16`, f16 and bf16), the Turing ones
//! (compute_75 PTX, sm_75 cubin: register-staged loads, two `mma.m16n8k8` per k16 step, f16
//! only) or the Hopper forward (compute_90a PTX, sm_90a cubin: TMA, `wgmma`, `mbarrier`; f16 and
//! bf16 at the head dims of FLASHMHA_FWD_KERNELS_SM90). A Hopper device runs the Ampere kernels
//! for everything else: decode, merge, KV append, head similarity, and the forward at head dims
//! without an sm_90a row ([`KernelTarget::shared_kernels`]). A plan is made for one target; the
//! CUDA backend picks its device's target ([`KernelTarget::for_compute_capability`]), the
//! emulator runs any.

use std::fmt;

use crate::common::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KernelTarget {
    /// sm_80 and newer (A100, RTX 30xx/40xx, L4, H100's mma.sync path).
    #[default]
    Ampere,
    /// sm_75 (T4, RTX 20xx, Quadro RTX): f16 only, since Turing has no bf16 `mma`.
    Turing,
    /// sm_90 (H100, H200, GH200): the sm_90a forward where it has a row, the Ampere kernels
    /// otherwise. Arch-specific (`a`) code runs on compute capability 9.x only, so sm_100 and
    /// newer stay [`KernelTarget::Ampere`].
    Hopper,
}

impl KernelTarget {
    /// The target whose kernels run best on a device of compute capability `major.minor`;
    /// `None` below 7.5 (no kernel of this build runs there).
    pub fn for_compute_capability(major: i32, minor: i32) -> Option<KernelTarget> {
        match (major, minor) {
            (9, _) => Some(KernelTarget::Hopper),
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
            KernelTarget::Hopper => 90,
        }
    }

    /// Whether the target has kernels for `dtype` at all.
    pub fn supports(self, dtype: crate::common::dtype::DType) -> bool {
        self != KernelTarget::Turing || dtype == crate::common::dtype::DType::F16
    }

    /// The target whose decode, split-combine, merge, KV-append and head-similarity kernels
    /// this one runs: Hopper has only a forward of its own and runs the Ampere ones.
    pub fn shared_kernels(self) -> KernelTarget {
        match self {
            KernelTarget::Hopper => KernelTarget::Ampere,
            other => other,
        }
    }

    /// `Ok` when the target runs the Ampere (sm_80+ `mma.sync`, `cp.async`) kernels, as Hopper
    /// does; for the ops that have only those (`what` names the op), Turing is
    /// [`Error::UnsupportedOnTarget`].
    pub fn require_ampere_kernels(self, what: &'static str) -> Result<()> {
        if self.shared_kernels() == KernelTarget::Ampere {
            Ok(())
        } else {
            Err(Error::UnsupportedOnTarget { what, target: self })
        }
    }

    /// The target whose forward row serves a (dtype, head dim) this one has no row for: the
    /// sm_90a table covers d64 / d128 / d256, so e.g. d32 / d80 / d96 on Hopper run the Ampere
    /// forward. `None` when the target's own table is the only one it can run.
    pub fn forward_fallback(self) -> Option<KernelTarget> {
        match self {
            KernelTarget::Hopper => Some(KernelTarget::Ampere),
            KernelTarget::Ampere | KernelTarget::Turing => None,
        }
    }
}

impl fmt::Display for KernelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelTarget::Ampere => "sm_80+",
            KernelTarget::Turing => "sm_75",
            KernelTarget::Hopper => "sm_90a",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::dtype::DType;

    #[test]
    fn devices_map_to_targets() {
        let t = KernelTarget::for_compute_capability;
        for (cc, want) in [
            ((7, 0), None),
            ((7, 2), None),
            ((7, 5), Some(KernelTarget::Turing)),
            ((8, 0), Some(KernelTarget::Ampere)),
            ((8, 9), Some(KernelTarget::Ampere)),
            ((8, 7), Some(KernelTarget::Ampere)),
            ((9, 0), Some(KernelTarget::Hopper)),
            // sm_90a code does not run on sm_100+: Blackwell keeps the compute_80 kernels.
            ((10, 0), Some(KernelTarget::Ampere)),
            ((12, 0), Some(KernelTarget::Ampere)),
        ] {
            assert_eq!(t(cc.0, cc.1), want, "{cc:?}");
        }
        assert!(!KernelTarget::Turing.supports(DType::Bf16));
        assert!(KernelTarget::Turing.supports(DType::F16));
        assert!(KernelTarget::Ampere.supports(DType::Bf16));
        assert!(KernelTarget::Hopper.supports(DType::Bf16));
        assert_eq!(KernelTarget::Hopper.min_sm(), 90);
        assert_eq!(KernelTarget::Hopper.to_string(), "sm_90a");
    }

    #[test]
    fn hopper_shares_the_ampere_kernels_beyond_its_forward() {
        assert_eq!(KernelTarget::Hopper.shared_kernels(), KernelTarget::Ampere);
        assert_eq!(KernelTarget::Turing.shared_kernels(), KernelTarget::Turing);
        assert_eq!(KernelTarget::Ampere.shared_kernels(), KernelTarget::Ampere);
        assert_eq!(
            KernelTarget::Hopper.forward_fallback(),
            Some(KernelTarget::Ampere)
        );
        assert_eq!(KernelTarget::Turing.forward_fallback(), None);
        assert_eq!(KernelTarget::Ampere.forward_fallback(), None);
    }
}
