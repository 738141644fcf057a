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
mod image_choice;
mod timing;
mod tma;

pub use args::{Dense, DenseMut, FwdArgs};
pub use decode::{DecodeArgs, KvAppendArgs, MergeArgs};
pub use image_choice::{choose_image, ImageChoice};
pub use timing::time_forward;

use crate::build_info::{self, FWD_KERNELS};
use crate::element::Element;
use crate::error::{driver_error, Error, Result};
use crate::options::AttnOptions;
use crate::plan::head_similarity::{
    plan_head_similarity, HeadSimBuffers, HeadSimProblem, ENTRY_BF16, ENTRY_F16,
};
use crate::plan::{FwdLaunch, FwdParamsAbi, FwdPlan};
use crate::shape::FwdShape;
use crate::target::KernelTarget;
use crate::validate::binding::{DevBuf, FwdBufs};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

/// One slot per kernel-table row `(target, entry, dynamic smem bytes)`, in table order: the
/// function loaded with `load` and opted into its dynamic shared memory for the rows of
/// `targets`, None for the others'.
pub(super) fn load_rows(
    rows: impl Iterator<Item = (KernelTarget, &'static str, u32)>,
    targets: &[KernelTarget],
    load: &dyn Fn(&str) -> Result<CudaFunction>,
) -> Result<Vec<Option<CudaFunction>>> {
    rows.map(|(row_target, entry, smem_bytes)| {
        if !targets.contains(&row_target) {
            return Ok(None);
        }
        let func = load(entry)?;
        // Above 48 KiB, dynamic shared memory must be opted into per function (up to the
        // device's limit: 227 KiB on sm_90, which the sm_90a rows are sized to).
        func.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem_bytes as i32,
        )
        .map_err(driver_error)?;
        Ok(Some(func))
    })
    .collect()
}

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
    /// One slot per row of the kernel table, in table order; rows of other targets are None.
    forward: Vec<Option<CudaFunction>>,
    /// Head-similarity kernels: (f16, bf16); None where the target has none (Turing).
    head_similarity: Option<(CudaFunction, CudaFunction)>,
    /// Paged decode, split combine, merge_states and KV append of the target (Turing: f16 over
    /// 16-bit pages).
    decode: decode::DecodeFunctions,
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
        let load = |entry: &str| -> Result<CudaFunction> {
            let module = build_info::module_of(entry).ok_or_else(|| Error::NoKernel {
                entry: entry.to_string(),
            })?;
            let image = match choose_image(module, major, minor) {
                ImageChoice::Cubin(c) => cudarc::nvrtc::Ptx::from_binary(c.bytes.to_vec()),
                ImageChoice::Ptx(ptx) => cudarc::nvrtc::Ptx::from_src(ptx),
                ImageChoice::None => return Err(Error::UnsupportedGpu { major, minor }),
            };
            ctx.load_module(image)
                .map_err(driver_error)?
                .load_function(entry)
                .map_err(driver_error)
        };
        // The target's forward rows, and those of its fallback (Hopper: the Ampere rows serve
        // the head dims without an sm_90a row).
        let forward_targets: Vec<KernelTarget> = std::iter::once(target)
            .chain(target.forward_fallback())
            .collect();
        let forward = load_rows(
            FWD_KERNELS
                .iter()
                .map(|r| (r.target, r.entry, r.smem_bytes)),
            &forward_targets,
            &load,
        )?;
        // Head similarity has no Turing kernels; decode, the split combine, merge_states and
        // the 16-bit KV append do (f16 only there: decode::DecodeFunctions::load). Hopper runs
        // the Ampere ones of all of these.
        let head_similarity = if target.shared_kernels() == KernelTarget::Ampere {
            Some((load(ENTRY_F16)?, load(ENTRY_BF16)?))
        } else {
            None
        };
        let decode = decode::DecodeFunctions::load(target, &load)?;
        let loaded = forward.iter().flatten().count() + decode.decode.iter().flatten().count();
        tracing::info!(major, minor, %target, kernels = loaded, "cuda backend ready");
        Ok(CudaBackend {
            ctx,
            compute_capability: (major, minor),
            target,
            forward,
            head_similarity,
            decode,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
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
        let (cu_q, _cu_q) = opt_read(cu_seqlens.map(|c| c.0), stream);
        let (cu_k, _cu_k) = opt_read(cu_seqlens.map(|c| c.1), stream);
        let bufs = FwdBufs {
            q,
            k,
            v,
            o,
            lse,
            entropy,
            alibi_slopes,
            head_gates,
            cu_seqlens: cu_q.zip(cu_k),
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
        let index = FWD_KERNELS
            .iter()
            .position(|r| r.entry == launch.kernel.entry)
            .ok_or_else(|| Error::NoKernel {
                entry: launch.kernel.entry.to_string(),
            })?;
        let func = self.forward[index].as_ref().ok_or(Error::TargetMismatch {
            plan: launch.kernel.target,
            device: self.target,
        })?;
        self.ctx.bind_to_thread().map_err(driver_error)?;
        let (grid, block, smem) = (launch.grid, launch.block, launch.dynamic_smem_bytes);
        match &launch.abi {
            // SAFETY: the caller's contract above.
            FwdParamsAbi::Fwd => unsafe {
                launch_one_struct(func, grid, block, smem, stream, launch.params)
            },
            FwdParamsAbi::FwdTma(maps) => {
                let params =
                    maps.params(&launch.params, |_, desc, addr| tma::encode(desc, addr))?;
                // SAFETY: the caller's contract above; the maps describe the bound q / k / v
                // over the extents `bind` checked (boxes past them are zero-filled, not read).
                unsafe { launch_one_struct(func, grid, block, smem, stream, params) }
            }
        }
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
                tensor: crate::error::TensorName::HeadSimInput,
                expected: problem.dtype,
                found: T::DTYPE,
            });
        }
        let mut p = *problem;
        p.o_len = o.len();
        p.gram_len = gram.len();
        stream.memset_zeros(gram).map_err(driver_error)?;
        let (o_ptr, _o) = o.device_ptr(stream);
        let (gram_ptr, _gram) = gram.device_ptr_mut(stream);
        let plan = plan_head_similarity(
            &p,
            &HeadSimBuffers {
                o: o_ptr,
                gram: gram_ptr,
            },
        )?;
        let (f16_fn, bf16_fn) =
            self.head_similarity
                .as_ref()
                .ok_or(Error::UnsupportedOnTarget {
                    what: "head similarity",
                    target: self.target,
                })?;
        let func = match p.dtype {
            crate::dtype::DType::F16 => f16_fn,
            crate::dtype::DType::Bf16 => bf16_fn,
        };
        self.ctx.bind_to_thread().map_err(driver_error)?;
        // SAFETY: validation proved every address the kernel forms lies inside `o` and `gram`,
        // which the caller keeps alive until the stream has run the kernel.
        unsafe {
            launch_one_struct(
                func,
                plan.grid,
                plan.block,
                plan.dynamic_smem_bytes,
                stream.cu_stream(),
                plan.params,
            )
        }
    }
}

/// Launches `func`, whose only parameter is one by-value params struct `P`, with no allocation
/// and no synchronisation.
///
/// # Safety
/// `P` must be the struct the kernel declares (the ABI probe test checks the layouts against
/// nvcc's), and every device address inside `params` must stay valid for what the kernel does
/// with it until the stream has run the kernel.
unsafe fn launch_one_struct<P: crate::abi::ParamsBytes>(
    func: &CudaFunction,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_smem_bytes: u32,
    stream: cudarc::driver::sys::CUstream,
    mut params: P,
) -> Result<()> {
    let mut args = [(&mut params as *mut P).cast::<std::ffi::c_void>()];
    // SAFETY: `args` points at a live copy of the params for the duration of the call
    // (cuLaunchKernel copies kernel parameters before it returns); the rest is the caller's
    // contract above.
    unsafe {
        cudarc::driver::result::launch_kernel(
            func.cu_function(),
            (grid[0], grid[1], grid[2]),
            (block[0], block[1], block[2]),
            dynamic_smem_bytes,
            stream,
            &mut args,
        )
        .map_err(driver_error)?;
    }
    Ok(())
}

type Guard<'a> = cudarc::driver::SyncOnDrop<'a>;

/// Optional host data copied to the device (the host-data harnesses of `host::gpu` and
/// `decode::gpu`; never on a launch path).
pub(crate) fn upload_opt<T: cudarc::driver::DeviceRepr>(
    stream: &Arc<CudaStream>,
    data: Option<&[T]>,
) -> Result<Option<CudaSlice<T>>> {
    data.map(|d| stream.clone_htod(d))
        .transpose()
        .map_err(driver_error)
}

// `'b` (the buffer's own lifetime) is kept apart from `'a` (this call's): `&mut dyn` is invariant
// in its object type, so the two cannot be unified through an `Option`.
fn read<'a, 'b: 'a, U>(
    b: &'a (dyn DevicePtr<U> + 'b),
    stream: &'a CudaStream,
) -> (DevBuf, Guard<'a>) {
    let len = b.len();
    let (addr, guard) = b.device_ptr(stream);
    (DevBuf { addr, len }, guard)
}

fn write<'a, 'b: 'a, U>(
    b: &'a mut (dyn DevicePtrMut<U> + 'b),
    stream: &'a CudaStream,
) -> (DevBuf, Guard<'a>) {
    let len = b.len();
    let (addr, guard) = b.device_ptr_mut(stream);
    (DevBuf { addr, len }, guard)
}

fn opt_read<'a, 'b: 'a, U>(
    b: Option<&'a (dyn DevicePtr<U> + 'b)>,
    stream: &'a CudaStream,
) -> (Option<DevBuf>, Option<Guard<'a>>) {
    b.map(|b| read(b, stream))
        .map_or((None, None), |(d, g)| (Some(d), Some(g)))
}

fn opt_write<'a, 'b: 'a, U>(
    b: Option<&'a mut (dyn DevicePtrMut<U> + 'b)>,
    stream: &'a CudaStream,
) -> (Option<DevBuf>, Option<Guard<'a>>) {
    b.map(|b| write(b, stream))
        .map_or((None, None), |(d, g)| (Some(d), Some(g)))
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
