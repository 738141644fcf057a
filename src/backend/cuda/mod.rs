//! The CUDA backend: loads the embedded kernels of the device's [`KernelTarget`] into a device
//! context (the cubin built for the device's architecture, the target's PTX otherwise) and runs
//! plans on the caller's stream. On sm_75 (Turing) that is the forward, paged decode, combine,
//! merge and KV-append kernels of kernels/sm75/ (f16); head similarity has no Turing kernel and
//! returns [`Error::UnsupportedOnTarget`] there. On sm_90 (Hopper) the forward runs the sm_90a
//! kernels of kernels/sm90/ where the table has a row (their Q / K / V tensor maps encoded by
//! the driver per launch, `tma.rs`) and the Ampere ones otherwise; everything else is Ampere's.
//! No host-device synchronisation and no heap allocation in the launch path, so launches can be
//! captured in CUDA graphs. Without a driver every entry point returns
//! [`Error::NoCudaDriver`]; nothing here panics for lack of a GPU.
//!
//! Traps: the kernels check device-resident indices (`cu_seqlens`, `cache_seqlens`,
//! block-table entries, append slots) and `trap` on a bad one before any access it guards. A
//! trap poisons the whole CUDA context: that launch and every later call on the context fail
//! with [`Error::Cuda`]. A server recovers by dropping this backend and every buffer of its
//! context, creating a new one ([`CudaBackend::new`]) and re-uploading its state (README,
//! "Correctness", says why there is no non-fatal mode).

mod functions;
mod image_choice;
mod timing;
mod tma;

pub use functions::modules_for;
pub use image_choice::{choose_image, ImageChoice};
pub use timing::time_forward;

use super::{Backend, BoundTensors, Pod, Read, Write};
use crate::common::binding::DevBuf;
use crate::common::build_info;
use crate::common::error::{driver_error, Error, Result};
use crate::common::launch::{Launch, Launches};
use crate::common::target::KernelTarget;
use crate::ops::forward::tma::TmaMapDesc;
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    #[cfg(not(feature = "candle-cuda"))]
    // SAFETY: only probes whether libcuda can be dlopen'ed; it calls no driver function.
    return unsafe { cudarc::driver::sys::is_culib_present() };
    // candle-core's `cuda` feature links cudarc against libcuda at build time (cudarc's
    // `dynamic-linking`, which takes precedence over our `fallback-dynamic-loading`): a program
    // built so cannot start without the driver library, so a running one has it.
    #[cfg(feature = "candle-cuda")]
    return true;
}

/// A device with every kernel of its target loaded.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    compute_capability: (i32, i32),
    target: KernelTarget,
    /// Every function of every module this device's target runs (functions.rs), looked up by
    /// entry name at launch (a few dozen entries: a linear scan, no allocation).
    functions: Vec<(&'static str, CudaFunction)>,
    /// Modules loaded into the context (each once).
    modules_loaded: usize,
}

impl CudaBackend {
    /// Opens device `ordinal` and loads the kernels. Errors (never panics) without a driver.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        if !driver_present() {
            return Err(Error::NoCudaDriver {
                reason: "libcuda.so (the NVIDIA driver library) cannot be loaded",
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_error)?;
        Self::on_context(ctx)
    }

    /// The kernels loaded into an existing context (e.g. the one a candle device or another
    /// library already uses, so that their streams and allocations are ours too).
    pub fn on_context(ctx: Arc<CudaContext>) -> Result<CudaBackend> {
        let (major, minor) = ctx.compute_capability().map_err(driver_error)?;
        let target = KernelTarget::for_compute_capability(major, minor)
            .ok_or(Error::UnsupportedGpu { major, minor })?;
        // Each module the target runs is loaded once (functions.rs), then every entry of it is
        // looked up and opted into the dynamic shared memory its table row launches with (above
        // 48 KiB that opt-in is required, up to the device's limit: 227 KiB on sm_90).
        let mut functions = Vec::new();
        let mut modules_loaded = 0;
        for image in functions::modules_for(target) {
            let ptx = match choose_image(image, major, minor) {
                // cudarc takes the image by value: one copy per module.
                ImageChoice::Cubin(c) => cudarc::nvrtc::Ptx::from_binary(c.bytes.to_vec()),
                ImageChoice::Ptx(ptx) => cudarc::nvrtc::Ptx::from_src(ptx),
                // Arch-specific code for another minor version: its plans get TargetMismatch.
                ImageChoice::None => {
                    tracing::warn!(
                        module = image.name,
                        major,
                        minor,
                        "no image for this device"
                    );
                    continue;
                }
            };
            let module = ctx.load_module(ptx).map_err(driver_error)?;
            modules_loaded += 1;
            for &entry in image.entries {
                let func = module.load_function(entry).map_err(driver_error)?;
                let smem = functions::dynamic_smem_of(entry);
                if smem > 0 {
                    func.set_attribute(
                        CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        smem as i32,
                    )
                    .map_err(driver_error)?;
                }
                functions.push((entry, func));
            }
        }
        tracing::info!(
            major,
            minor,
            %target,
            kernels = functions.len(),
            modules = modules_loaded,
            "cuda backend ready"
        );
        Ok(CudaBackend {
            ctx,
            compute_capability: (major, minor),
            target,
            functions,
            modules_loaded,
        })
    }

    /// Modules loaded into the context: each module of the target's families once.
    pub fn modules_loaded(&self) -> usize {
        self.modules_loaded
    }

    /// The loaded function of `entry`: [`Error::TargetMismatch`] when the build has it for
    /// another kernel family than this device runs, [`Error::NoKernel`] when it has none.
    fn function(&self, entry: &str) -> Result<&CudaFunction> {
        if let Some((_, f)) = self.functions.iter().find(|(e, _)| *e == entry) {
            return Ok(f);
        }
        match build_info::module_of(entry).and_then(functions::module_target) {
            Some(plan) => Err(Error::TargetMismatch {
                plan,
                device: self.target,
            }),
            None => Err(Error::NoKernel {
                entry: entry.to_string(),
            }),
        }
    }

    /// The one launch path: every launch of `launches` in order on `stream`, with no allocation
    /// and no synchronisation. All functions are resolved before the first launch, so an
    /// unknown or foreign entry launches nothing.
    ///
    /// # Safety
    /// `launches` must come from a plan's `bind` (which checked every buffer against the plan)
    /// over device memory of this context that stays allocated, and is not otherwise written,
    /// until `stream` has run the kernels; `stream` must be NULL or a live stream of the context.
    pub unsafe fn launch_raw(
        &self,
        launches: &Launches,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<()> {
        let mut funcs: [Option<&CudaFunction>; Launches::CAPACITY] = [None; Launches::CAPACITY];
        for (slot, l) in funcs.iter_mut().zip(launches.iter()) {
            *slot = Some(self.function(l.entry)?);
        }
        self.ctx.bind_to_thread().map_err(driver_error)?;
        for (l, f) in launches.iter().zip(funcs.into_iter().flatten()) {
            // SAFETY: the caller's contract above.
            unsafe { launch_one(f, l, stream)? };
        }
        Ok(())
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Streaming multiprocessors of the device: the input of decode's split heuristic
    /// ([`SplitPolicy::Auto`](crate::ops::decode::SplitPolicy::Auto)). A host-only query.
    pub fn sm_count(&self) -> Result<u32> {
        use cudarc::driver::sys::CUdevice_attribute_enum::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        let n = self
            .ctx
            .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_error)?;
        Ok(n.max(1) as u32)
    }

    /// The kernels this device runs: make plans with `FwdPlan::new_for(backend.target(), ..)`.
    pub fn target(&self) -> KernelTarget {
        self.target
    }

    /// Zeroes `bytes` bytes at `addr` in stream order on a raw `CUstream` (what a plan's
    /// launch may need first, e.g. [`crate::ops::head_similarity::HeadSimLaunch::zero`]).
    ///
    /// # Safety
    /// `addr` must be device memory of this backend's context holding at least `bytes` bytes,
    /// allocated until `stream` has run the write; `stream` must be NULL or a live stream of
    /// the context.
    pub unsafe fn zero_raw(
        &self,
        addr: u64,
        bytes: u64,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver_error)?;
        let bytes = usize::try_from(bytes).map_err(|_| Error::SizeOverflow {
            what: "bytes to zero",
        })?;
        // SAFETY: the caller's contract above.
        unsafe {
            cudarc::driver::result::memset_d8_async(addr, 0, bytes, stream).map_err(driver_error)
        }
    }
}

/// Launches `func` with `l`'s geometry and its one by-value params struct.
///
/// # Safety
/// `l.entry` must be `func`'s entry (its params are the struct that kernel declares; the ABI
/// probe test checks the layouts against nvcc's), and every device address inside the params
/// must stay valid for what the kernel does with it until the stream has run the kernel.
unsafe fn launch_one(
    func: &CudaFunction,
    l: &Launch,
    stream: cudarc::driver::sys::CUstream,
) -> Result<()> {
    let mut args = [l.params_ptr().cast_mut().cast::<std::ffi::c_void>()];
    if l.is_cluster() {
        return unsafe { launch_cluster(func, l, stream, &mut args) };
    }
    // SAFETY: `args` points at `l`'s params bytes for the duration of the call
    // (cuLaunchKernel copies kernel parameters before it returns); the rest is the caller's
    // contract above.
    unsafe {
        cudarc::driver::result::launch_kernel(
            func.cu_function(),
            (l.grid[0], l.grid[1], l.grid[2]),
            (l.block[0], l.block[1], l.block[2]),
            l.dynamic_smem_bytes,
            stream,
            &mut args,
        )
        .map_err(driver_error)?;
    }
    Ok(())
}

/// [`launch_one`] for a launch in thread-block clusters: `cuLaunchKernelEx` with the
/// cluster-dimension attribute (CUDA Driver API "cuLaunchKernelEx"; sm_90+).
///
/// # Safety
/// As [`launch_one`]; `args` holds the pointer to `l`'s params bytes.
unsafe fn launch_cluster(
    func: &CudaFunction,
    l: &Launch,
    stream: cudarc::driver::sys::CUstream,
    args: &mut [*mut std::ffi::c_void; 1],
) -> Result<()> {
    use cudarc::driver::sys;
    let mut attr = sys::CUlaunchAttribute {
        id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
        pad: [0; 4],
        value: sys::CUlaunchAttributeValue {
            clusterDim: sys::CUlaunchAttributeValue_union__bindgen_ty_1 {
                x: l.cluster[0],
                y: l.cluster[1],
                z: l.cluster[2],
            },
        },
    };
    let config = sys::CUlaunchConfig {
        gridDimX: l.grid[0],
        gridDimY: l.grid[1],
        gridDimZ: l.grid[2],
        blockDimX: l.block[0],
        blockDimY: l.block[1],
        blockDimZ: l.block[2],
        sharedMemBytes: l.dynamic_smem_bytes,
        hStream: stream,
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: `config` and `attr` live for the call, `args` points at `l`'s params bytes
    // (copied before the call returns); the rest is the caller's contract.
    unsafe {
        sys::cuLaunchKernelEx(
            &config,
            func.cu_function(),
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        )
        .result()
        .map_err(driver_error)
    }
}

impl Backend for CudaBackend {
    type Stream = Arc<CudaStream>;
    type Buffer<T: Pod> = CudaSlice<T>;
    type Guard<'a> = cudarc::driver::SyncOnDrop<'a>;

    fn target(&self) -> KernelTarget {
        self.target
    }

    fn sm_count(&self) -> Result<u32> {
        CudaBackend::sm_count(self)
    }

    fn stream(&self) -> Result<Arc<CudaStream>> {
        Ok(self.ctx.default_stream())
    }

    fn alloc_zeros<T: Pod>(&self, stream: &Arc<CudaStream>, n: usize) -> Result<CudaSlice<T>> {
        stream.alloc_zeros(n).map_err(driver_error)
    }

    fn upload<T: Pod>(&self, stream: &Arc<CudaStream>, data: &[T]) -> Result<CudaSlice<T>> {
        stream.clone_htod(data).map_err(driver_error)
    }

    fn copy_in<T: Pod>(
        &self,
        stream: &Arc<CudaStream>,
        data: &[T],
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        super::fits(data.len(), dst.len())?;
        let mut view = dst.slice_mut(..data.len());
        stream.memcpy_htod(data, &mut view).map_err(driver_error)
    }

    fn download<T: Pod>(&self, stream: &Arc<CudaStream>, src: &CudaSlice<T>) -> Result<Vec<T>> {
        let out = stream.clone_dtoh(src).map_err(driver_error)?;
        stream.synchronize().map_err(driver_error)?;
        Ok(out)
    }

    fn synchronize(&self, stream: &Arc<CudaStream>) -> Result<()> {
        stream.synchronize().map_err(driver_error)
    }

    unsafe fn launch(
        &self,
        stream: &Arc<CudaStream>,
        launches: &Launches,
        _bound: &BoundTensors,
    ) -> Result<()> {
        // SAFETY: the trait's contract is launch_raw's; the stream is a live cudarc stream.
        unsafe { self.launch_raw(launches, stream.cu_stream()) }
    }

    unsafe fn zero(&self, stream: &Arc<CudaStream>, buf: DevBuf, bytes: u64) -> Result<()> {
        // SAFETY: the trait's contract is zero_raw's; the stream is a live cudarc stream.
        unsafe { self.zero_raw(buf.addr, bytes, stream.cu_stream()) }
    }

    fn encode_tensor_map(&self, _name: &str, desc: &TmaMapDesc, addr: u64) -> Result<[u8; 128]> {
        tma::encode(desc, addr)
    }
}

/// Any cudarc buffer a launch reads (a `CudaSlice`, `CudaView`, `CudaViewMut`).
impl<T, P: DevicePtr<T>> Read<CudaBackend, T> for P {
    fn bind_read<'a>(
        &'a self,
        _: &CudaBackend,
        stream: &'a Arc<CudaStream>,
    ) -> Result<(DevBuf, cudarc::driver::SyncOnDrop<'a>)> {
        let len = self.len();
        let (addr, guard) = self.device_ptr(stream);
        Ok((DevBuf::new(addr, len), guard))
    }
}

/// Any cudarc buffer a launch writes (a `CudaSlice`, `CudaViewMut`).
impl<T, P: DevicePtrMut<T>> Write<CudaBackend, T> for P {
    fn bind_write<'a>(
        &'a mut self,
        _: &CudaBackend,
        stream: &'a Arc<CudaStream>,
    ) -> Result<(DevBuf, cudarc::driver::SyncOnDrop<'a>)> {
        let len = self.len();
        let (addr, guard) = self.device_ptr_mut(stream);
        Ok((DevBuf::new(addr, len), guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_the_backend_is_a_typed_error_not_a_panic() {
        if driver_present() {
            // A driver without a usable device is still a typed error, never a panic.
            match CudaBackend::new(0) {
                Ok(b) => assert!(b.compute_capability().0 >= 7),
                Err(e) => assert!(!matches!(e, Error::NoCudaDriver { .. }), "{e}"),
            }
            return;
        }
        match CudaBackend::new(0) {
            Err(Error::NoCudaDriver { reason }) => assert!(reason.contains("libcuda")),
            Err(e) => panic!("expected NoCudaDriver, got {e}"),
            Ok(_) => panic!("a backend without a driver"),
        }
    }
}
