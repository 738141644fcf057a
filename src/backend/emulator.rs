//! The emulator backend: executes a [`FwdPlan`] on [`crate::emulator`], with the same PTX and
//! the same params bytes as the CUDA backend, over buffers allocated on an emulator
//! [`Device`]. Every access the kernel makes is checked by the emulator, so binding emulator
//! allocations is safe whatever their addresses. Touches only the device it is given.

use crate::abi::ParamsBytes;
use crate::build_info;
use crate::element::Element;
use crate::emulator::{Device, DevicePtr, LaunchConfig, LaunchReport, Module};
use crate::error::{Error, Result};
use crate::plan::{FwdLaunch, FwdPlan};
use crate::validate::binding::{DevBuf, FwdBufs};
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
    DevBuf { addr: ptr.0, len }
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

/// Runs an already bound launch on `dev`.
pub fn launch_bound(dev: &mut Device, launch: &FwdLaunch) -> Result<LaunchReport> {
    let module = parsed_module(launch.kernel.entry)?;
    let cfg = LaunchConfig {
        grid: launch.grid,
        block: launch.block,
        dynamic_smem_bytes: launch.dynamic_smem_bytes,
    };
    Ok(dev.launch(&module, launch.kernel.entry, &cfg, launch.params.as_bytes())?)
}

/// `Ok` when the launch had no findings; otherwise the count and the first one, as an error
/// (for callers that treat any finding, a device-index `trap` included, as a failure).
pub fn require_clean(report: &LaunchReport) -> Result<()> {
    match report.findings.first() {
        None => Ok(()),
        Some(first) => Err(Error::Emulator(crate::error::EmulatorError::Findings {
            count: report.findings.len(),
            first: first.to_string(),
        })),
    }
}
