//! The emulator backend: executes any op's [`Launch`] on [`crate::emulator`] ([`launch`], the
//! one path), with the same PTX and the same params bytes as the CUDA backend, over buffers
//! allocated on an emulator [`Device`]. Every access the kernel makes is checked by the emulator, so binding emulator
//! allocations is safe whatever their addresses. Touches only the device it is given. For the
//! sm_90a kernels the plan's tensor-map descriptions are encoded here with the emulator's
//! [`TensorMap`] over the bound q / k / v addresses, as the CUDA backend encodes them with the
//! driver.

use crate::common::binding::DevBuf;
use crate::common::build_info;
use crate::common::element::Element;
use crate::common::error::{EmulatorError, Error, Result};
use crate::common::launch::Launch;
use crate::emulator::{
    Device, DevicePtr, LaunchConfig, LaunchReport, Module, TensorMap, TiledTensorMap, TmaDataType,
    TmaInterleave, TmaL2Promotion, TmaOobFill, TmaSwizzle,
};
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::plan::{FwdLaunch, FwdPlan};
use crate::ops::forward::tma::{TmaElement, TmaMapDesc, TmaSwizzleMode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The parsed PTX of the module defining `entry`, parsed once per process (parsing dominates
/// small launches). Shared by every emulated launch of the crate's kernels.
pub fn parsed_module(entry: &str) -> Result<Arc<Module>> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<Module>>>> = OnceLock::new();
    let image = build_info::module_of(entry).ok_or_else(|| Error::NoKernel {
        entry: entry.to_string(),
    })?;
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap().get(image.name) {
        return Ok(m.clone());
    }
    let module = Arc::new(Module::parse(image.ptx)?);
    cache.lock().unwrap().insert(image.name, module.clone());
    Ok(module)
}

/// A buffer of `len` elements at an emulator allocation.
pub fn dev_buf(ptr: DevicePtr, len: usize) -> DevBuf {
    DevBuf::new(ptr.0, len)
}

/// Binds `bufs` to `plan` (the same O(1) checks as on a GPU) and runs it on `dev`; returns
/// the launch that ran and the emulator's findings and counters.
pub fn run<T: Element>(
    dev: &mut Device,
    plan: &FwdPlan<T>,
    bufs: &FwdBufs,
) -> Result<(FwdLaunch, LaunchReport)> {
    let launch = plan.bind(bufs)?;
    let report = launch_bound(dev, &launch)?;
    Ok((launch, report))
}

/// Runs an already bound forward launch on `dev` (its sm_90a tensor maps encoded by the
/// emulator's encoder).
pub fn launch_bound(dev: &mut Device, launch: &FwdLaunch) -> Result<LaunchReport> {
    let l = launch.to_launch(|name, desc, addr| Ok(*encode(desc, addr, name)?.as_bytes()))?;
    self::launch(dev, &l)
}

/// The one launch path of this backend: runs `l` (any op's) on `dev` with its params bytes.
pub fn launch(dev: &mut Device, l: &Launch) -> Result<LaunchReport> {
    let module = parsed_module(l.entry)?;
    let cfg = LaunchConfig {
        grid: l.grid,
        block: l.block,
        dynamic_smem_bytes: l.dynamic_smem_bytes,
    };
    Ok(dev.launch(&module, l.entry, &cfg, l.params())?)
}

/// The emulator's encoding of one planned map over `addr` (the fields `cuTensorMapEncodeTiled`
/// takes on a GPU). Validation checked the plan's maps against the encoder's rules, so an error
/// here is a bug, reported as a launch error rather than a panic.
pub fn encode(desc: &TmaMapDesc, addr: u64, what: impl std::fmt::Display) -> Result<TensorMap> {
    let tiled = TiledTensorMap {
        data_type: match desc.element {
            TmaElement::U16 => TmaDataType::U16,
        },
        global_address: addr,
        global_dim: desc.global_dim.to_vec(),
        global_strides: desc.global_strides.to_vec(),
        box_dim: desc.box_dim.to_vec(),
        element_strides: vec![1; desc.box_dim.len()],
        interleave: TmaInterleave::None,
        swizzle: match desc.swizzle {
            TmaSwizzleMode::B128 => TmaSwizzle::B128,
        },
        // A cache hint only; the CUDA backend asks for the same.
        l2_promotion: TmaL2Promotion::B128,
        // Zeros: rows past the tensor and columns past head_dim must contribute nothing.
        oob_fill: TmaOobFill::None,
    };
    TensorMap::encode_tiled(&tiled).map_err(|e| {
        Error::Emulator(EmulatorError::Launch(format!(
            "encoding the {what} tensor map: {e}"
        )))
    })
}

/// `Ok` when the launch had no findings; otherwise the count and the first one, as an error
/// (for callers that treat any finding, a device-index `trap` included, as a failure).
pub fn require_clean(report: &LaunchReport) -> Result<()> {
    match report.findings.first() {
        None => Ok(()),
        Some(first) => Err(Error::Emulator(
            crate::common::error::EmulatorError::Findings {
                count: report.findings.len(),
                first: first.to_string(),
            },
        )),
    }
}
