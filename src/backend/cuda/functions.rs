//! The CUDA backend's kernels: which embedded modules a device of a given [`KernelTarget`] loads
//! ([`modules_for`]: each module once, chosen by its PTX architecture, the probes left out), and
//! the table of their functions looked up by entry name at launch. Before this the backend loaded
//! a whole module per entry (about 42 loads of 5 modules; on a device that only has PTX, compute
//! capability 10.x and newer, the driver JIT-compiled the same module once per entry).
//!
//! The choice of modules is pure and unit-tested without a driver.

use crate::common::build_info::{ModuleImage, FWD_KERNELS, MODULES};
use crate::common::target::KernelTarget;
use crate::ops::decode::kernels::DECODE_KERNELS as DECODE_KERNEL_ROWS;

/// The kernel family a module's PTX belongs to (`compute_75` Turing, `compute_80` Ampere and
/// newer, `compute_90a` the Hopper forward).
pub(crate) fn module_target(m: &ModuleImage) -> Option<KernelTarget> {
    match m.ptx_arch {
        "compute_75" => Some(KernelTarget::Turing),
        "compute_80" => Some(KernelTarget::Ampere),
        "compute_90a" => Some(KernelTarget::Hopper),
        _ => None,
    }
}

/// The modules a device running `target` loads: those of its own family and of the families it
/// falls back on or shares (Hopper: its sm_90a forward and the Ampere kernels), each once; the
/// ABI probe modules (tests only) never.
pub fn modules_for(target: KernelTarget) -> impl Iterator<Item = &'static ModuleImage> {
    let families = [
        Some(target),
        target.forward_fallback(),
        Some(target.shared_kernels()),
    ];
    MODULES.iter().filter(move |m| {
        !m.name.starts_with("abi_probe")
            && module_target(m).is_some_and(|t| families.contains(&Some(t)))
    })
}

/// Dynamic shared memory an entry launches with, from the kernel tables (0 for kernels with
/// static shared memory only): the opt-in each function gets at load.
pub(crate) fn dynamic_smem_of(entry: &str) -> u32 {
    FWD_KERNELS
        .iter()
        .map(|r| (r.entry, r.smem_bytes))
        .chain(DECODE_KERNEL_ROWS.iter().map(|r| (r.entry, r.smem_bytes)))
        // The backward's main kernels take more than the default 48 KiB from d64 on; the JVP
        // and the MLA decode (83 KB on sm_80, 230 KB on sm_90a) do too.
        .chain(
            crate::ops::backward::BWD_KERNELS
                .iter()
                .map(|r| (r.entry, r.smem_bytes)),
        )
        .chain(
            crate::ops::jvp::JVP_KERNELS
                .iter()
                .map(|r| (r.entry, r.smem_bytes)),
        )
        .chain(
            crate::ops::mla_decode::MLA_DECODE_KERNELS
                .iter()
                .map(|r| (r.entry, r.smem_bytes)),
        )
        .filter(|(e, _)| *e == entry)
        .map(|(_, s)| s)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::build_info::module_of;
    use std::collections::BTreeSet;

    /// Every entry a target's plans can name lives in exactly one of the modules it loads, each
    /// module is loaded once, and nothing of another family (no JIT of Turing PTX on an Ampere
    /// part) or of the probes is loaded.
    #[test]
    fn each_target_loads_each_of_its_modules_once_and_nothing_else() {
        for target in [
            KernelTarget::Ampere,
            KernelTarget::Turing,
            KernelTarget::Hopper,
        ] {
            let loaded: Vec<&str> = modules_for(target).map(|m| m.name).collect();
            let distinct: BTreeSet<&str> = loaded.iter().copied().collect();
            assert_eq!(
                loaded.len(),
                distinct.len(),
                "{target}: a module loaded twice"
            );
            let families = [
                Some(target),
                target.forward_fallback(),
                Some(target.shared_kernels()),
            ];
            for row in FWD_KERNELS
                .iter()
                .filter(|r| families.contains(&Some(r.target)))
            {
                let m = module_of(row.entry).unwrap();
                assert!(
                    distinct.contains(m.name),
                    "{target}: {} not loaded",
                    row.entry
                );
            }
            for row in DECODE_KERNEL_ROWS
                .iter()
                .filter(|r| r.target == target.shared_kernels())
            {
                let m = module_of(row.entry).unwrap();
                assert!(
                    distinct.contains(m.name),
                    "{target}: {} not loaded",
                    row.entry
                );
            }
            for m in modules_for(target) {
                assert!(!m.name.starts_with("abi_probe"));
                let t = module_target(m).unwrap();
                assert!(
                    families.contains(&Some(t)),
                    "{target} loads {} ({t})",
                    m.name
                );
            }
        }
        let turing: Vec<_> = modules_for(KernelTarget::Turing).collect();
        assert!(turing.iter().all(|m| m.ptx_arch == "compute_75"));
        assert!(modules_for(KernelTarget::Ampere).all(|m| m.ptx_arch == "compute_80"));
    }

    #[test]
    fn table_rows_get_their_dynamic_smem_and_others_none() {
        for row in FWD_KERNELS {
            assert_eq!(dynamic_smem_of(row.entry), row.smem_bytes);
        }
        // The other ops' main kernels: one launched beyond 48 KiB without its opt-in fails on a
        // device (the MLA decode's sm_90a kernel takes 230 KB).
        use crate::ops::{backward::BWD_KERNELS, jvp::JVP_KERNELS, mla_decode::MLA_DECODE_KERNELS};
        assert!(BWD_KERNELS
            .iter()
            .all(|r| dynamic_smem_of(r.entry) == r.smem_bytes));
        assert!(JVP_KERNELS
            .iter()
            .all(|r| dynamic_smem_of(r.entry) == r.smem_bytes));
        assert!(MLA_DECODE_KERNELS
            .iter()
            .all(|r| dynamic_smem_of(r.entry) == r.smem_bytes));
        assert_eq!(dynamic_smem_of("flashmha_merge_states_f16"), 0);
        assert_eq!(dynamic_smem_of("no_such_entry"), 0);
    }
}
