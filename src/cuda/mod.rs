//! The CUDA backend: loads the embedded kernels into a device context (the cubin built for the
//! device's architecture, the compute_80 PTX otherwise) and launches a [`FwdPlan`] on the
//! caller's stream. No host-device synchronisation and no heap allocation in the launch path, so
//! launches can be captured in CUDA graphs. Without a driver every entry point returns
//! [`Error::NoCudaDriver`]; nothing here panics for lack of a GPU.

mod host_run;
mod image_choice;
mod timing;

pub use host_run::forward_host;
pub use image_choice::{choose_image, ImageChoice};
pub use timing::time_forward;

use crate::buffers::FwdBuffers;
use crate::build_info::{self, FWD_KERNELS};
use crate::diagnostics;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::plan::{plan_forward, FwdPlan};
use crate::problem::FwdProblem;
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only probes whether libcuda can be dlopen'ed; it calls no driver function.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// A device with every forward kernel loaded.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    compute_capability: (i32, i32),
    /// One function per row of the kernel table, in table order.
    forward: Vec<CudaFunction>,
    /// Head-similarity kernels: (f16, bf16).
    head_similarity: (CudaFunction, CudaFunction),
}

impl CudaBackend {
    /// Opens device `ordinal` and loads the kernels. Errors (never panics) without a driver.
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        if !driver_present() {
            return Err(Error::NoCudaDriver(
                "libcuda.so (the NVIDIA driver library) cannot be loaded".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        let load = |entry: &str| -> Result<CudaFunction> {
            let module =
                build_info::module_of(entry).ok_or_else(|| Error::NoKernel(entry.to_string()))?;
            let image = match choose_image(module, major, minor) {
                ImageChoice::Cubin(c) => cudarc::nvrtc::Ptx::from_binary(c.bytes.to_vec()),
                ImageChoice::Ptx(ptx) => cudarc::nvrtc::Ptx::from_src(ptx),
                ImageChoice::None => return Err(Error::UnsupportedGpu { major, minor }),
            };
            Ok(ctx.load_module(image)?.load_function(entry)?)
        };
        let mut forward = Vec::with_capacity(FWD_KERNELS.len());
        for row in FWD_KERNELS {
            let func = load(row.entry)?;
            // Above 48 KiB, dynamic shared memory must be opted into per function.
            func.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                row.smem_bytes as i32,
            )?;
            forward.push(func);
        }
        let head_similarity = (
            load(diagnostics::head_similarity_launch::ENTRY_F16)?,
            load(diagnostics::head_similarity_launch::ENTRY_BF16)?,
        );
        tracing::info!(major, minor, kernels = forward.len(), "cuda backend ready");
        Ok(CudaBackend {
            ctx,
            compute_capability: (major, minor),
            forward,
            head_similarity,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Launches a plan on `stream`. Asynchronous: returns once the launch is queued. This is
    /// the allocation-free, sync-free path to capture in CUDA graphs.
    ///
    /// # Safety
    /// `plan` must come from [`plan_forward`] (which validated it) for device buffers that stay
    /// allocated, and are not otherwise written, until the stream has run the kernel.
    pub unsafe fn launch(&self, plan: &FwdPlan, stream: &CudaStream) -> Result<()> {
        let index = FWD_KERNELS
            .iter()
            .position(|r| r.entry == plan.kernel.entry)
            .ok_or_else(|| Error::NoKernel(plan.kernel.entry.to_string()))?;
        // SAFETY: the caller guarantees the plan came from plan_forward, whose validation
        // proved every address the kernel forms lies inside buffers that stay alive until the
        // stream has run the kernel.
        unsafe {
            launch_one_struct(
                &self.forward[index],
                plan.grid,
                plan.block,
                plan.dynamic_smem_bytes,
                stream,
                plan.params,
            )
        }
    }

    /// Sums, over the tokens of `o: [tokens, heads, head_dim]` (strides in `problem`), the
    /// cosine similarity of every pair of head outputs into `gram: [heads, heads]`, which this
    /// zeroes first (on `stream`); divide by the token count for the mean
    /// ([`crate::diagnostics::SimilarityMatrix::from_gram_sum`]). Asynchronous, like `forward`.
    pub fn head_similarity<T: Element>(
        &self,
        stream: &Arc<CudaStream>,
        problem: &diagnostics::HeadSimProblem,
        o: &CudaSlice<T>,
        gram: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if problem.dtype != T::DTYPE {
            return Err(Error::DType(format!(
                "problem says {} but o holds {}",
                problem.dtype,
                T::DTYPE
            )));
        }
        let mut p = *problem;
        p.o_len = o.len();
        p.gram_len = gram.len();
        let o_ptr = o.device_ptr(stream).0;
        let gram_ptr = gram.device_ptr_mut(stream).0;
        let plan = diagnostics::plan_head_similarity(
            &p,
            &diagnostics::HeadSimBuffers {
                o: o_ptr,
                gram: gram_ptr,
            },
        )?;
        stream.memset_zeros(gram)?;
        let func = match p.dtype {
            crate::dtype::DType::F16 => &self.head_similarity.0,
            crate::dtype::DType::Bf16 => &self.head_similarity.1,
        };
        // SAFETY: validation proved every address the kernel forms lies inside `o` and `gram`,
        // which the caller keeps alive until the stream has run the kernel.
        unsafe {
            launch_one_struct(
                func,
                plan.grid,
                plan.block,
                plan.dynamic_smem_bytes,
                stream,
                plan.params,
            )
        }
    }

    /// The typed entry: validates `problem` against the slices, plans, and launches on `stream`.
    /// Each slice must hold at least the elements `problem` says (`FwdProblem::contiguous`
    /// fills them in); nothing on this path allocates or synchronises.
    pub fn forward<T: Element>(
        &self,
        stream: &CudaStream,
        problem: &FwdProblem,
        t: FwdSlices<'_, T>,
    ) -> Result<()> {
        if problem.dtype != T::DTYPE {
            return Err(Error::DType(format!(
                "problem says {} but the slices hold {}",
                problem.dtype,
                T::DTYPE
            )));
        }
        // The problem's lengths describe what the kernel may touch; each slice must hold at
        // least that, and optional buffers must be present exactly when the problem asks.
        let p = problem;
        let check =
            |name: &'static str, want: Option<usize>, have: Option<usize>| match (want, have) {
                (Some(w), Some(h)) if h >= w => Ok(()),
                (None, None) => Ok(()),
                (Some(w), Some(h)) => Err(Error::BufferTooSmall {
                    tensor: name,
                    needed: w as u64,
                    available: h as u64,
                }),
                (w, h) => Err(Error::Shape(format!(
                    "{name}: the problem {} it but the slice is {}",
                    if w.is_some() {
                        "asks for"
                    } else {
                        "does not ask for"
                    },
                    if h.is_some() { "given" } else { "missing" }
                ))),
            };
        check("q", Some(p.q.len), Some(t.q.len()))?;
        check("k", Some(p.k.len), Some(t.k.len()))?;
        check("v", Some(p.v.len), Some(t.v.len()))?;
        check("o", Some(p.o.len), Some(t.o.len()))?;
        check("lse", p.lse_len, t.lse.as_ref().map(|s| s.len()))?;
        check(
            "entropy",
            p.entropy_len,
            t.entropy.as_ref().map(|s| s.len()),
        )?;
        check("alibi_slopes", p.alibi_len, t.alibi_slopes.map(|s| s.len()))?;
        check("head_gates", p.gates_len, t.head_gates.map(|s| s.len()))?;
        let (cu_q, cu_k) = match &p.layout {
            crate::problem::SeqLayout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            } => (Some(cu_seqlens_q.len()), Some(cu_seqlens_k.len())),
            crate::problem::SeqLayout::Padded { .. } => (None, None),
        };
        check("cu_seqlens_q", cu_q, t.cu_seqlens_q.map(|s| s.len()))?;
        check("cu_seqlens_k", cu_k, t.cu_seqlens_k.map(|s| s.len()))?;
        let (q, _q) = t.q.device_ptr(stream);
        let (k, _k) = t.k.device_ptr(stream);
        let (v, _v) = t.v.device_ptr(stream);
        let (o, _o) = t.o.device_ptr_mut(stream);
        let (lse, _lse) = opt_mut(t.lse, stream);
        let (entropy, _entropy) = opt_mut(t.entropy, stream);
        let (alibi_slopes, _alibi) = opt(t.alibi_slopes, stream);
        let (head_gates, _gates) = opt(t.head_gates, stream);
        let (cu_seqlens_q, _cq) = opt(t.cu_seqlens_q, stream);
        let (cu_seqlens_k, _ck) = opt(t.cu_seqlens_k, stream);
        let bufs = FwdBuffers {
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
        let plan = plan_forward(p, &bufs)?;
        // SAFETY: the plan was just validated for these slices, which the borrows in `t` keep
        // alive for this call and cudarc's stream tracking keeps alive for the kernel.
        unsafe { self.launch(&plan, stream) }
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
    stream: &CudaStream,
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
            stream.cu_stream(),
            &mut args,
        )?;
    }
    Ok(())
}

/// Device buffers of one forward call (see `kernels/params.h` for layouts).
pub struct FwdSlices<'a, T> {
    pub q: &'a CudaSlice<T>,
    pub k: &'a CudaSlice<T>,
    pub v: &'a CudaSlice<T>,
    pub o: &'a mut CudaSlice<T>,
    pub lse: Option<&'a mut CudaSlice<f32>>,
    pub entropy: Option<&'a mut CudaSlice<f32>>,
    pub alibi_slopes: Option<&'a CudaSlice<f32>>,
    pub head_gates: Option<&'a CudaSlice<f32>>,
    /// Device copies of the problem's varlen `cu_seqlens` (same contents).
    pub cu_seqlens_q: Option<&'a CudaSlice<i32>>,
    pub cu_seqlens_k: Option<&'a CudaSlice<i32>>,
}

type Guard<'a> = Option<cudarc::driver::SyncOnDrop<'a>>;

fn opt<'a, U>(s: Option<&'a CudaSlice<U>>, stream: &'a CudaStream) -> (u64, Guard<'a>) {
    s.map_or((0, None), |s| {
        let (p, g) = s.device_ptr(stream);
        (p, Some(g))
    })
}

fn opt_mut<'a, U>(s: Option<&'a mut CudaSlice<U>>, stream: &'a CudaStream) -> (u64, Guard<'a>) {
    s.map_or((0, None), |s| {
        let (p, g) = s.device_ptr_mut(stream);
        (p, Some(g))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_the_backend_is_a_typed_error_not_a_panic() {
        if driver_present() {
            eprintln!("skipped: a CUDA driver is present on this machine");
            return;
        }
        match CudaBackend::new(0) {
            Err(Error::NoCudaDriver(msg)) => assert!(msg.contains("libcuda")),
            Err(e) => panic!("expected NoCudaDriver, got {e}"),
            Ok(_) => panic!("a backend without a driver"),
        }
    }
}
