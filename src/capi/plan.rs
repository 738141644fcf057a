//! The forward in the C ABI: `flashmha_plan_create[_for_context]` validates and plans a shape
//! once; the handle is then run any number of times (on a GPU or the emulator) with new
//! buffers, or `flashmha_forward` / `flashmha_emulate_forward` plan and run in one call. Also the handle helpers every op's plan uses (`create_into`, `handle`, `destroy`)
//! and `flashmha_version`.

use super::convert;
use super::ffi;
use super::host::{HostMirror, Role};
use super::op::{self, Bound, Op};
use super::status::CallError;
use crate::common::dtype::DType;
use crate::common::target::KernelTarget;
use crate::cuda::CudaBackend;
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::plan::{FwdLaunch, FwdPlan};
use crate::ops::forward::problem::FwdShape;
use cudarc::driver::sys::CUstream;
use std::ffi::c_char;

/// What a `flashmha_plan*` points to: the forward plan (its dtype inside).
#[derive(Debug, Clone, Copy)]
pub struct Plan(pub FwdPlan);

impl Plan {
    pub fn new(dtype: DType, shape: &FwdShape) -> crate::Result<Plan> {
        Self::new_for(KernelTarget::Ampere, dtype, shape)
    }

    /// A plan for the kernels of `target` (a context's device: `flashmha_forward`).
    pub fn new_for(target: KernelTarget, dtype: DType, shape: &FwdShape) -> crate::Result<Plan> {
        Ok(Plan(FwdPlan::new_for(target, dtype, shape)?))
    }

    /// The plan behind a handle.
    ///
    /// # Safety
    /// A non-NULL `p` must come from `flashmha_plan_create` and not have been destroyed.
    pub unsafe fn from_handle<'a>(p: *const ffi::flashmha_plan) -> Result<&'a Plan, CallError> {
        // SAFETY: the caller's contract.
        unsafe { handle(p, "plan") }
    }

    /// The O(1) binding checks of `bufs` against the plan, and the launch they give.
    pub fn bind(&self, bufs: &FwdBufs) -> crate::Result<FwdLaunch> {
        self.0.bind(bufs)
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype()
    }
}

/// The forward on the shared C ABI path (`op.rs`).
pub(super) struct Forward;

impl Op for Forward {
    type Plan = Plan;
    type Bufs = ffi::flashmha_bufs;
    type Bound = FwdLaunch;

    fn bind(plan: &Plan, bufs: &Self::Bufs) -> Result<FwdLaunch, CallError> {
        Ok(plan.bind(&convert::bufs(bufs)?)?)
    }

    unsafe fn mirror(
        plan: &Plan,
        m: &mut HostMirror,
        host: &Self::Bufs,
    ) -> Result<Self::Bufs, CallError> {
        let e = plan.dtype().size();
        let (input, output) = (Role::Input, Role::Output);
        // SAFETY: the caller's contract for each buffer.
        unsafe {
            Ok(ffi::flashmha_bufs {
                q: m.mirror(host.q, e, input)?,
                k: m.mirror(host.k, e, input)?,
                v: m.mirror(host.v, e, input)?,
                o: m.mirror(host.o, e, output)?,
                lse: m.mirror(host.lse, 4, output)?,
                entropy: m.mirror(host.entropy, 4, output)?,
                alibi_slopes: m.mirror(host.alibi_slopes, 4, input)?,
                head_gates: m.mirror(host.head_gates, 4, input)?,
                sinks: m.mirror(host.sinks, 4, input)?,
                cu_seqlens_q: m.mirror(host.cu_seqlens_q, 4, input)?,
                cu_seqlens_k: m.mirror(host.cu_seqlens_k, 4, input)?,
            })
        }
    }
}

/// The forward's one launch (its sm_90a tensor maps are encoded over the bound addresses by
/// each backend).
impl Bound for FwdLaunch {
    unsafe fn launch(&self, ctx: &CudaBackend, stream: CUstream) -> crate::Result<()> {
        use crate::backend::Backend;
        // The sm_90a kernels' tensor maps are encoded by the driver over the bound addresses.
        let l = self
            .to_launch(|name, desc, addr| ctx.encode_tensor_map(&name.to_string(), desc, addr))?;
        // SAFETY: the caller's contract; the launch was bound (every buffer checked), and the
        // maps describe the bound q / k / v over the extents `bind` checked.
        unsafe { ctx.launch_raw(&crate::common::launch::Launches::one(l), stream) }
    }

    fn emulate(&self, m: &mut HostMirror) -> Result<(), CallError> {
        let report = crate::backend::emulator::launch_bound(m.device(), self)?;
        HostMirror::clean(&report)
    }
}

/// Plans a C shape for the context's device or, without one, for the default kernels.
pub(super) fn make(s: &ffi::flashmha_shape, ctx: Option<&CudaBackend>) -> Result<Plan, CallError> {
    let (dtype, shape) = convert::shape(s)?;
    Ok(Plan::new_for(op::target(ctx), dtype, &shape)?)
}

/// The `T` behind an opaque handle `H` (named `what` in the NULL error).
///
/// # Safety
/// A non-NULL `p` must come from [`create_into`] with this `T` and not have been destroyed.
pub(super) unsafe fn handle<'a, T, H>(p: *const H, what: &str) -> Result<&'a T, CallError> {
    // SAFETY: handles are `Box<T>` pointers (see `create_into`); the caller's contract says
    // this one is live.
    unsafe { convert::deref(p.cast::<T>(), what) }
}

/// Frees a handle made by [`create_into`]; NULL is ignored.
///
/// # Safety
/// `p` must be NULL or a live handle of a `Box<T>` from [`create_into`], not used afterwards.
pub(super) unsafe fn destroy<T, H>(p: *mut H) {
    if !p.is_null() {
        // SAFETY: the handle is a `Box<T>` from `create_into`, freed only here.
        drop(unsafe { Box::from_raw(p.cast::<T>()) });
    }
}

/// NUL-terminated crate version, in static storage.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// `const char *flashmha_version(void)`
///
/// # Safety
/// Always safe to call; the string is static.
#[no_mangle]
pub unsafe extern "C" fn flashmha_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// Checks `out` (NULL is an invalid argument, and nothing is made), makes the value with
/// `make` and writes it to `*out`.
///
/// # Safety
/// `out` must be NULL or point to writable storage for one `T`.
pub(super) unsafe fn write_out<T>(
    out: *mut T,
    make: impl FnOnce() -> Result<T, CallError>,
) -> Result<(), CallError> {
    if out.is_null() {
        return Err(CallError::InvalidArgument("out is NULL".into()));
    }
    let value = make()?;
    // SAFETY: `out` is non-NULL and, by the caller's contract, writable.
    unsafe { out.write(value) };
    Ok(())
}

/// Checks `out`, makes the value with `make` and hands it out as a new handle `H` (a
/// `Box<T>`) in `*out`.
///
/// # Safety
/// `out` must be NULL or point to writable storage for one pointer.
pub(super) unsafe fn create_into<T, H>(
    out: *mut *mut H,
    make: impl FnOnce() -> Result<T, CallError>,
) -> Result<(), CallError> {
    // SAFETY: the caller's contract for `out`.
    unsafe { write_out(out, || Ok(Box::into_raw(Box::new(make()?)).cast())) }
}

op::create_entry_points!(flashmha_shape, flashmha_plan, make;
    create: flashmha_plan_create, for_context: flashmha_plan_create_for_context);

op::run_entry_points!(Forward, shape: flashmha_shape => ffi::flashmha_shape, flashmha_bufs, make;
    run: flashmha_forward, emulate: flashmha_emulate_forward);

op::handle_entry_points!(Forward, flashmha_plan, flashmha_bufs;
    run: flashmha_run, emulate: flashmha_emulate_run, destroy: flashmha_plan_destroy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hopper_context_plans_the_sm90a_forward_where_it_has_a_row() {
        // What flashmha_plan_create_for_context does on an sm_90 device (ctx.target() is
        // Hopper there): the sm_90a kernel at d128, the Ampere one at d80.
        let shape = |d: usize| {
            let s = ffi::flashmha_shape {
                dtype: ffi::FLASHMHA_DTYPE_BF16,
                batch: 2,
                seqlen_q: 130,
                seqlen_k: 70,
                heads_q: 4,
                heads_kv: 2,
                head_dim: d as _,
                ..Default::default()
            };
            convert::shape(&s).unwrap()
        };
        let (dtype, s128) = shape(128);
        let Plan(p) = Plan::new_for(KernelTarget::Hopper, dtype, &s128).unwrap();
        assert_eq!(p.dtype(), DType::Bf16);
        assert_eq!(p.launch().kernel.entry, "flashmha_fwd_sm90_bf16_d128");
        assert!(matches!(
            p.launch().abi,
            crate::ops::forward::tma::FwdParamsAbi::FwdTma(_)
        ));
        let (dtype, s80) = shape(80);
        let Plan(p) = Plan::new_for(KernelTarget::Hopper, dtype, &s80).unwrap();
        assert_eq!(p.launch().kernel.entry, "flashmha_fwd_bf16_d80");
        assert_eq!(p.launch().abi, crate::ops::forward::tma::FwdParamsAbi::Fwd);
    }

    #[test]
    fn a_plan_is_created_and_a_bad_shape_is_a_typed_error() {
        let mut s = ffi::flashmha_shape {
            dtype: ffi::FLASHMHA_DTYPE_F16,
            batch: 1,
            seqlen_q: 3,
            seqlen_k: 9,
            heads_q: 2,
            heads_kv: 2,
            head_dim: 64,
            ..Default::default()
        };
        let mut p: *mut ffi::flashmha_plan = std::ptr::null_mut();
        // SAFETY: valid pointers to locals.
        assert_eq!(
            unsafe { flashmha_plan_create(&s, &mut p) },
            ffi::FLASHMHA_OK
        );
        assert!(!p.is_null());
        // SAFETY: `p` was just created.
        let plan = unsafe { Plan::from_handle(p) }.unwrap();
        assert_eq!(plan.dtype(), DType::F16);
        assert_eq!(plan.0.extents().q, 3 * 2 * 64);
        // SAFETY: destroyed once, not used afterwards.
        unsafe { flashmha_plan_destroy(p) };
        s.heads_kv = 3;
        let mut p2: *mut ffi::flashmha_plan = std::ptr::null_mut();
        // SAFETY: valid pointers to locals.
        assert_eq!(
            unsafe { flashmha_plan_create(&s, &mut p2) },
            ffi::FLASHMHA_ERR_SHAPE
        );
        assert!(p2.is_null());
        // SAFETY: NULL pointers are documented to be rejected.
        assert_eq!(
            unsafe { flashmha_plan_create(std::ptr::null(), &mut p2) },
            ffi::FLASHMHA_ERR_INVALID_ARGUMENT
        );
    }
}
