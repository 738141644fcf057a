//! Which embedded image a device runs: a cubin is binary-compatible with devices of the same
//! major compute capability and an equal or higher minor one (CUDA C Programming Guide, "Binary
//! Compatibility"); otherwise the module's PTX (compute_80, or compute_75 for kernels/sm75/) is
//! JIT-compiled by the driver, which works on any device at least as new as its virtual
//! architecture. Arch-specific code (`sm_90a` / `compute_90a`, kernels/sm90/) is the exception:
//! it runs on exactly that compute capability and has no forward compatibility (CUDA C
//! Programming Guide, "Feature Availability": architecture-specific features), so its PTX is
//! never chosen for a newer device.

use crate::common::build_info::{CubinImage, ModuleImage};

#[derive(Debug, Clone, Copy)]
pub enum ImageChoice {
    Cubin(&'static CubinImage),
    Ptx(&'static str),
    /// The device is older than the PTX's virtual architecture.
    None,
}

/// The best image of `module` for a device of capability `major.minor`.
pub fn choose_image(module: &'static ModuleImage, major: i32, minor: i32) -> ImageChoice {
    let device = (major * 10 + minor) as u32;
    let best = module
        .cubins
        .iter()
        .filter(|c| c.sm / 10 == device / 10 && c.sm <= device)
        .max_by_key(|c| c.sm);
    let arch_specific = module.ptx_arch.ends_with('a');
    match best {
        Some(c) => ImageChoice::Cubin(c),
        None if arch_specific && device != module.ptx_sm => ImageChoice::None,
        None if device >= module.ptx_sm => ImageChoice::Ptx(module.ptx),
        None => ImageChoice::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::build_info::MODULES;

    #[test]
    fn devices_get_the_newest_compatible_cubin_then_ptx() {
        let m = &MODULES[0];
        let arch = |c: ImageChoice| match c {
            ImageChoice::Cubin(c) => c.arch,
            ImageChoice::Ptx(_) => "ptx",
            ImageChoice::None => "none",
        };
        assert_eq!(arch(choose_image(m, 8, 0)), "sm_80");
        assert_eq!(arch(choose_image(m, 8, 6)), "sm_86");
        assert_eq!(arch(choose_image(m, 8, 7)), "sm_86"); // Orin: 8.7 runs sm_86 code
        assert_eq!(arch(choose_image(m, 8, 9)), "sm_89");
        assert_eq!(arch(choose_image(m, 9, 0)), "sm_90");
        // Blackwell: B200 / B300 run the sm_100 cubin, RTX 50xx / RTX PRO (12.0) and GB10
        // (12.1) the sm_120 one; a major without a cubin (11.x Thor) JIT-compiles the
        // compute_80 PTX.
        assert_eq!(arch(choose_image(m, 10, 0)), "sm_100");
        assert_eq!(arch(choose_image(m, 10, 3)), "sm_100");
        assert_eq!(arch(choose_image(m, 11, 0)), "ptx");
        assert_eq!(arch(choose_image(m, 12, 0)), "sm_120");
        assert_eq!(arch(choose_image(m, 12, 1)), "sm_120");
        assert_eq!(arch(choose_image(m, 7, 5)), "none");
        // The Turing modules: the sm_75 cubin on 7.5, their compute_75 PTX on newer majors.
        let t = MODULES
            .iter()
            .find(|m| m.ptx_arch == "compute_75")
            .expect("a Turing module");
        assert_eq!(arch(choose_image(t, 7, 5)), "sm_75");
        assert_eq!(arch(choose_image(t, 8, 0)), "ptx");
        assert_eq!(arch(choose_image(t, 7, 0)), "none");
        // The sm_90a modules (once compiled): their cubin on 9.0, nothing elsewhere (an
        // arch-specific PTX does not JIT for sm_100 or sm_89).
        if let Some(h) = MODULES.iter().find(|m| m.ptx_arch == "compute_90a") {
            assert_eq!(arch(choose_image(h, 9, 0)), "sm_90a");
            assert_eq!(arch(choose_image(h, 10, 0)), "none");
            assert_eq!(arch(choose_image(h, 12, 0)), "none");
            assert_eq!(arch(choose_image(h, 8, 9)), "none");
        }
    }
}
