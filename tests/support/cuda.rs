//! The CUDA devices the GPU tests run on. Without `FLASHMHA_REAL_GPU=1` they run on the emulated
//! driver (the flashmha-cuda-emu crate, cudaemu/): loaded into the test process before cudarc
//! first loads a driver, with every embedded cubin registered against the PTX it was assembled
//! from, so `CudaBackend` runs unchanged (the same cudarc calls, the same images) on emulated
//! sm_80 (ordinal 0), sm_75 (1) and sm_90 (2) devices. With `FLASHMHA_REAL_GPU=1` (a GPU runner)
//! nothing is loaded here, cudarc loads the system's libcuda, and the tests run on every real
//! device.

#![allow(dead_code)]

use flashmha::common::build_info::MODULES;
use flashmha::cuda::CudaBackend;
use flashmha::KernelTarget;
use flashmha_cuda_emu::EmulatedDriver;
use std::sync::OnceLock;

/// Whether the tests must use the machine's real driver (`FLASHMHA_REAL_GPU=1`).
pub fn real_gpu() -> bool {
    std::env::var("FLASHMHA_REAL_GPU").is_ok_and(|v| v == "1")
}

/// The emulated driver, loaded (once) with every embedded cubin registered; `None` on a GPU
/// runner. Call before anything touches cudarc's driver module.
pub fn emulated() -> Option<&'static EmulatedDriver> {
    static DRIVER: OnceLock<Option<&'static EmulatedDriver>> = OnceLock::new();
    *DRIVER.get_or_init(|| {
        if real_gpu() {
            return None;
        }
        let driver = EmulatedDriver::load().expect("the emulated CUDA driver");
        for m in MODULES {
            for c in m.cubins {
                driver
                    .register_cubin(c.bytes, c.arch, m.ptx)
                    .expect("registering a cubin");
            }
        }
        Some(driver)
    })
}

/// Device ordinals to run on: the emulated sm_80, sm_75 and sm_90, or every real device.
pub fn devices() -> Vec<usize> {
    match emulated() {
        Some(_) => vec![0, 1, 2],
        None => {
            let n =
                cudarc::driver::CudaContext::device_count().expect("a CUDA driver with devices");
            (0..n as usize).collect()
        }
    }
}

/// A backend on each device whose target satisfies `wanted` (e.g. Hopper only).
pub fn backends(wanted: impl Fn(KernelTarget) -> bool) -> Vec<CudaBackend> {
    let all: Vec<CudaBackend> = devices()
        .into_iter()
        .map(|d| CudaBackend::new(d).unwrap_or_else(|e| panic!("device {d}: {e}")))
        .collect();
    let chosen: Vec<CudaBackend> = all.into_iter().filter(|b| wanted(b.target())).collect();
    if chosen.is_empty() {
        // Only a real machine can lack a device of a family; the emulated driver has each.
        assert!(real_gpu(), "no emulated device of the wanted family");
        eprintln!("skipped: no device of the wanted kernel family");
    }
    chosen
}

/// Whether a child process (the CLI) finds a CUDA driver: the emulated one is loaded into this
/// process only, so a child sees the system's.
pub fn driver_in_a_child_process() -> bool {
    if emulated().is_some() {
        flashmha_cuda_emu::system_driver_present()
    } else {
        flashmha::cuda::driver_present()
    }
}

/// The findings the emulated driver recorded (for failure messages; empty on a GPU).
pub fn findings() -> String {
    emulated().map(|d| d.findings()).unwrap_or_default()
}
