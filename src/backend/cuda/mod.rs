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

mod args;
mod decode;
mod functions;
mod image_choice;
mod timing;
mod tma;

pub use args::{Dense, DenseMut, FwdArgs};
pub use decode::{DecodeArgs, KvAppendArgs, MergeArgs};
pub use image_choice::{choose_image, ImageChoice};
pub use timing::time_forward;

use crate::common::binding::DevBuf;
use crate::common::build_info;
use crate::common::element::Element;
use crate::common::error::{driver_error, Error, Result};
use crate::common::launch::{Launch, Launches};
use crate::common::options::AttnOptions;
use crate::common::target::KernelTarget;
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::plan::{FwdLaunch, FwdPlan};
use crate::ops::forward::problem::FwdShape;
use crate::ops::head_similarity::{plan_head_similarity, HeadSimBuffers, HeadSimProblem};
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

    /// Runs `plan` with `args` on `stream`: checks the buffers against the plan in O(1) (length,
    /// alignment, aliasing, presence), binds the context to the calling thread and launches.
    /// Asynchronous: returns once the launch is queued; no allocation, no synchronisation, so
    /// it can be captured in a CUDA graph. Make the plan once per batch shape and call this per
    /// layer with that layer's buffers.
    pub fn run<T: Element>(
        &self,
        stream: &CudaStream,
        plan: &FwdPlan<T>,
        args: FwdArgs<'_, T>,
    ) -> Result<()> {
        let FwdArgs {
            q,
            k,
            v,
            o,
            lse,
            entropy,
            alibi_slopes,
            head_gates,
            cu_seqlens,
        } = args;
        // The guards record cudarc's stream-ordering events once the launch is queued; they
        // live until the end of this function.
        let (q, _q) = read(q, stream);
        let (k, _k) = read(k, stream);
        let (v, _v) = read(v, stream);
        let (o, _o) = write(o, stream);
        let (lse, _lse) = opt_write(lse, stream);
        let (entropy, _entropy) = opt_write(entropy, stream);
        let (alibi_slopes, _alibi) = opt_read(alibi_slopes, stream);
        let (head_gates, _gates) = opt_read(head_gates, stream);
        let (cu_seqlens_q, _cu_q) = opt_read(cu_seqlens.map(|c| c.0), stream);
        let (cu_seqlens_k, _cu_k) = opt_read(cu_seqlens.map(|c| c.1), stream);
        let bufs = FwdBufs {
            q,
            k,
            v,
            o,
            lse,
            entropy,
            alibi_slopes,
            head_gates,
            cu_seqlens_q,
            cu_seqlens_k,
        };
        let launch = plan.bind(&bufs)?;
        // SAFETY: `bind` checked every buffer against the plan's extents, so every address the
        // kernel forms lies inside buffers that the borrows in `args` keep alive for this call
        // and that cudarc's stream ordering keeps alive for the kernel; device-resident indices
        // (cu_seqlens) are checked by the kernel itself.
        unsafe { self.launch_bound(&launch, stream) }
    }

    /// One call for contiguous `[batch, seq, heads, head_dim]` tensors: plans (validating
    /// every dim, see [`FwdShape::from_dense_dims`]) and runs. Servers that call attention per
    /// layer should keep a [`FwdPlan`] and use [`CudaBackend::run`].
    pub fn forward<T: Element>(
        &self,
        stream: &CudaStream,
        q: Dense<'_, T>,
        k: Dense<'_, T>,
        v: Dense<'_, T>,
        o: DenseMut<'_, T>,
        options: &AttnOptions,
    ) -> Result<()> {
        let shape =
            FwdShape::from_dense_dims(q.dims, k.dims, v.dims, o.dims)?.with_options(*options);
        let plan = FwdPlan::<T>::new_for(self.target, &shape)?;
        let args = FwdArgs {
            q: q.buf,
            k: k.buf,
            v: v.buf,
            o: o.buf,
            lse: None,
            entropy: None,
            alibi_slopes: None,
            head_gates: None,
            cu_seqlens: None,
        };
        self.run(stream, &plan, args)
    }

    /// Launches an already bound plan.
    ///
    /// # Safety
    /// `launch` must come from [`FwdPlan::bind`] (which validated the buffers) for device
    /// buffers that stay allocated, and are not otherwise written, until the stream has run the
    /// kernel.
    pub unsafe fn launch_bound(&self, launch: &FwdLaunch, stream: &CudaStream) -> Result<()> {
        // SAFETY: the caller's contract above; `stream` belongs to a live cudarc stream.
        unsafe { self.launch_bound_raw(launch, stream.cu_stream()) }
    }

    /// [`CudaBackend::launch_bound`] on a stream given as a raw `CUstream` (the C ABI's
    /// callers own their streams; NULL is the legacy default stream).
    ///
    /// # Safety
    /// As for [`CudaBackend::launch_bound`], and `stream` must be NULL or a live stream of this
    /// backend's context.
    pub unsafe fn launch_bound_raw(
        &self,
        launch: &FwdLaunch,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<()> {
        // The sm_90a kernels' tensor maps are encoded here by the driver over the bound
        // addresses (tma.rs): a host-only call on the stack, no allocation.
        let l = launch.to_launch(|_, desc, addr| tma::encode(desc, addr))?;
        // SAFETY: the caller's contract above; the maps describe the bound q / k / v over the
        // extents `bind` checked (boxes past them are zero-filled, not read).
        unsafe { self.launch_raw(&Launches::one(l), stream) }
    }

    /// Sums, over the tokens of `o: [tokens, heads, head_dim]` (strides in `problem`), the
    /// cosine similarity of every pair of head outputs into `gram: [heads, heads]`, which this
    /// zeroes first (on `stream`); divide by the token count for the mean. Asynchronous, like
    /// `run`.
    pub fn head_similarity<T: Element>(
        &self,
        stream: &Arc<CudaStream>,
        problem: &HeadSimProblem,
        o: &CudaSlice<T>,
        gram: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if problem.dtype != T::DTYPE {
            return Err(Error::DTypeMismatch {
                tensor: crate::common::error::TensorName::HeadSimInput,
                expected: problem.dtype,
                found: T::DTYPE,
            });
        }
        let mut p = *problem;
        p.o_len = o.len();
        p.gram_len = gram.len();
        let (o_ptr, _o) = o.device_ptr(stream);
        let (gram_ptr, _gram) = gram.device_ptr_mut(stream);
        // SAFETY: both addresses come from the borrowed slices (alive for this call; cudarc's
        // stream ordering keeps them alive for the kernel), whose lengths `p` carries.
        unsafe { self.head_similarity_raw(&p, o_ptr, gram_ptr, stream.cu_stream()) }
    }

    /// [`CudaBackend::head_similarity`] for buffers given as device addresses on a raw
    /// `CUstream` (the C ABI's callers own both; NULL is the legacy default stream), their
    /// lengths in `problem.o_len` / `problem.gram_len`: validates, then zeroes gram's
    /// `heads x heads` sums and launches on `stream`; nothing is written if validation fails.
    ///
    /// # Safety
    /// `o` and `gram` must be device memory of this backend's context holding at least
    /// `problem.o_len` elements of `problem.dtype` and `problem.gram_len` f32, allocated until
    /// `stream` has run the kernel; `stream` must be NULL or a live stream of the context.
    pub unsafe fn head_similarity_raw(
        &self,
        problem: &HeadSimProblem,
        o: u64,
        gram: u64,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<()> {
        let plan = plan_head_similarity(problem, &HeadSimBuffers { o, gram })?;
        if self.target.shared_kernels() != KernelTarget::Ampere {
            return Err(Error::UnsupportedOnTarget {
                what: "head similarity",
                target: self.target,
            });
        }
        self.ctx.bind_to_thread().map_err(driver_error)?;
        // The kernel accumulates into gram's `heads x heads` f32: zero them first, in stream
        // order (validation bounds `heads` by MAX_HEADS, so the product cannot overflow).
        let gram_bytes = problem.num_heads * problem.num_heads * 4;
        // SAFETY: validation proved gram holds at least `heads²` f32 at `gram` (caller's
        // contract: device memory of this context, alive until the stream has run).
        unsafe {
            cudarc::driver::result::memset_d8_async(gram, 0, gram_bytes, stream)
                .map_err(driver_error)?;
        }
        // SAFETY: validation proved every address the kernel forms lies inside `o` and `gram`,
        // which the caller keeps alive until the stream has run the kernel.
        unsafe { self.launch_raw(&Launches::one(plan.launch()), stream) }
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

type Guard<'a> = cudarc::driver::SyncOnDrop<'a>;

// `'b` (the buffer's own lifetime) is kept apart from `'a` (this call's): `&mut dyn` is invariant
// in its object type, so the two cannot be unified through an `Option`.
fn read<'a, 'b: 'a, U>(
    b: &'a (dyn DevicePtr<U> + 'b),
    stream: &'a CudaStream,
) -> (DevBuf, Guard<'a>) {
    let len = b.len();
    let (addr, guard) = b.device_ptr(stream);
    (DevBuf::new(addr, len), guard)
}

fn write<'a, 'b: 'a, U>(
    b: &'a mut (dyn DevicePtrMut<U> + 'b),
    stream: &'a CudaStream,
) -> (DevBuf, Guard<'a>) {
    let len = b.len();
    let (addr, guard) = b.device_ptr_mut(stream);
    (DevBuf::new(addr, len), guard)
}

fn opt_read<'a, 'b: 'a, U>(
    b: Option<&'a (dyn DevicePtr<U> + 'b)>,
    stream: &'a CudaStream,
) -> (DevBuf, Option<Guard<'a>>) {
    b.map(|b| read(b, stream))
        .map_or((DevBuf::ABSENT, None), |(d, g)| (d, Some(g)))
}

fn opt_write<'a, 'b: 'a, U>(
    b: Option<&'a mut (dyn DevicePtrMut<U> + 'b)>,
    stream: &'a CudaStream,
) -> (DevBuf, Option<Guard<'a>>) {
    b.map(|b| write(b, stream))
        .map_or((DevBuf::ABSENT, None), |(d, g)| (d, Some(g)))
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
