//! The one path every op of the C ABI runs through: resolve the handles and pointers, convert
//! the C structs, plan or take the plan of a handle, bind (every buffer checked before anything
//! runs), then launch on the caller's context and stream or on the emulator with host buffers
//! ([`HostMirror`]), the status coming from [`guard`]. Each op says only what differs: how its
//! C buffers bind and which role each buffer plays on the emulator ([`Op`]), and how its bound
//! call launches ([`Bound`]). The macros at the end define the `extern "C"` entry points of
//! every op over this path, so an entry point is one line naming the op's types.

use super::convert;
use super::cuda::backend;
use super::ffi::{self, flashmha_status};
use super::host::HostMirror;
use super::plan::create_into;
use super::status::{guard, CallError};
use crate::common::launch::Launches;
use crate::common::target::KernelTarget;
use crate::cuda::CudaBackend;
use cudarc::driver::sys::CUstream;
use std::borrow::Borrow;
use std::ffi::c_void;

/// What one op of the C ABI adds to the shared path.
pub(super) trait Op {
    /// What a run is made from besides the buffers: the plan behind a handle, or the shape of an
    /// op planned per call.
    type Plan;
    /// The op's C buffer struct (`flashmha_*_bufs`).
    type Bufs;
    /// The checked launch(es) binding gives.
    type Bound: Bound;

    /// Converts the C buffers and binds them to `plan`: every length, alignment and aliasing
    /// rule is checked here, before any launch.
    fn bind(plan: &Self::Plan, bufs: &Self::Bufs) -> Result<Self::Bound, CallError>;

    /// The checks of the caller's own host addresses before anything is mirrored (the GPU's
    /// rules, so nothing is copied or run when one fails); by default the whole bind.
    fn check_host(plan: &Self::Plan, host: &Self::Bufs) -> Result<(), CallError> {
        Self::bind(plan, host).map(drop)
    }

    /// The host buffers mirrored on the emulator device of `m`, each with the role this plan
    /// gives it.
    ///
    /// # Safety
    /// As for [`HostMirror::mirror`], for every buffer of `host`.
    unsafe fn mirror(
        plan: &Self::Plan,
        m: &mut HostMirror,
        host: &Self::Bufs,
    ) -> Result<Self::Bufs, CallError>;
}

/// A bound call: how it launches on a context and on the emulator.
pub(super) trait Bound {
    /// Launches on `ctx`'s `stream`.
    ///
    /// # Safety
    /// The bound buffers are device memory of `ctx` holding their declared lengths, allocated
    /// until `stream` has run the kernels; `stream` is NULL or a live stream of the context.
    unsafe fn launch(&self, ctx: &CudaBackend, stream: CUstream) -> crate::Result<()>;

    /// Runs on the emulator device of `m` (bound to its mirrored buffers); any finding is an
    /// error.
    fn emulate(&self, m: &mut HostMirror) -> Result<(), CallError>;
}

/// The bound launches of decode, merge and KV append.
impl Bound for Launches {
    unsafe fn launch(&self, ctx: &CudaBackend, stream: CUstream) -> crate::Result<()> {
        // SAFETY: the caller's contract; the launches were bound (every buffer checked).
        unsafe { ctx.launch_raw(self, stream) }
    }

    fn emulate(&self, m: &mut HostMirror) -> Result<(), CallError> {
        self.iter().try_for_each(|l| m.launch(l))
    }
}

/// The kernels a plan is made for: the context's device, or the default (Ampere) kernels for
/// the context-free plans the emulator runs.
pub(super) fn target(ctx: Option<&CudaBackend>) -> KernelTarget {
    ctx.map_or(KernelTarget::Ampere, CudaBackend::target)
}

/// What an op binds when its C argument is already that (a plan handle's plan, or the shape of
/// head similarity, which plans per call).
pub(super) fn as_is<'a, T>(p: &'a T, _: Option<&CudaBackend>) -> Result<&'a T, CallError> {
    Ok(p)
}

/// A `flashmha_*_plan_create[_for_context]` entry point: checks `out`, resolves the context
/// (when given) and the shape (named `name` in the NULL error), plans with `make` and hands the
/// plan out as a new handle in `*out`.
///
/// # Safety
/// `ctx` (when given) NULL or a live context; `shape` NULL or valid; `out` NULL or writable
/// storage for one pointer.
pub(super) unsafe fn create<S, T, H>(
    ctx: Option<*const ffi::flashmha_context>,
    shape: *const S,
    name: &str,
    out: *mut *mut H,
    make: impl FnOnce(&S, Option<&CudaBackend>) -> Result<T, CallError>,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        unsafe {
            create_into(out, || {
                let ctx = ctx.map(|c| backend(c)).transpose()?;
                make(convert::deref(shape, name)?, ctx)
            })
        }
    })
}

/// A run on a context: resolves `ctx`, `plan` (named `name` in the NULL error) and `bufs`,
/// makes the op's plan from `plan` with `resolve`, binds and launches on `stream`.
///
/// # Safety
/// Pointers NULL or valid (handles live, `plan` of the type `resolve` expects); every buffer
/// in `bufs` device memory of the context holding at least its declared length, allocated
/// until `stream` has run the kernels; `stream` NULL or a live `CUstream` of the context.
pub(super) unsafe fn run<'a, O: Op, P: 'a, Q: Borrow<O::Plan>>(
    ctx: *const ffi::flashmha_context,
    plan: *const P,
    name: &str,
    bufs: *const O::Bufs,
    stream: *mut c_void,
    resolve: impl FnOnce(&'a CudaBackend, &'a P) -> Result<Q, CallError>,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (ctx, p, b): (&'a CudaBackend, &'a P, _) = unsafe {
            (
                backend(ctx)?,
                convert::deref(plan, name)?,
                convert::deref(bufs, "bufs")?,
            )
        };
        let bound = O::bind(resolve(ctx, p)?.borrow(), b)?;
        // SAFETY: forwarded from this function's contract; `bind` checked every buffer against
        // the plan (length, alignment, aliasing), so the kernels only touch the ranges the
        // caller declared. Device-resident indices are checked by the kernels themselves.
        unsafe { bound.launch(ctx, stream.cast()) }?;
        Ok(())
    })
}

/// A run on the emulator with host buffers: resolves `plan` (named `name`) and `host_bufs`,
/// makes the op's plan with `resolve`, checks the caller's own addresses as the GPU would,
/// mirrors the buffers on an emulator device, binds and runs there, and copies the outputs
/// back.
///
/// # Safety
/// `plan` NULL or valid (a live handle of the type `resolve` expects); `host_bufs` NULL or
/// valid, each buffer host memory of at least its declared length, inputs not written during
/// the call.
pub(super) unsafe fn emulate<'a, O: Op, P: 'a, Q: Borrow<O::Plan>>(
    plan: *const P,
    name: &str,
    host_bufs: *const O::Bufs,
    resolve: impl FnOnce(&'a P) -> Result<Q, CallError>,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (p, host): (&'a P, _) = unsafe {
            (
                convert::deref(plan, name)?,
                convert::deref(host_bufs, "host_bufs")?,
            )
        };
        let plan = resolve(p)?;
        let plan = plan.borrow();
        O::check_host(plan, host)?;
        let mut m = HostMirror::default();
        // SAFETY: the caller's contract for each buffer (inputs readable, outputs writable).
        let mirrored = unsafe { O::mirror(plan, &mut m, host) }?;
        O::bind(plan, &mirrored)?.emulate(&mut m)?;
        // SAFETY: the output buffers are writable (caller's contract).
        unsafe { m.copy_back() }
    })
}

/// Defines the run, emulator run and destroy entry points of an op with a plan handle (the
/// header's `flashmha_<op>_run`, `flashmha_emulate_<op>_run` and `flashmha_<op>_plan_destroy`);
/// `header_check.rs` pins each to its declaration.
macro_rules! handle_entry_points {
    ($op:ty, $handle:ident, $bufs:ident; run: $run:ident, emulate: $emulate:ident,
     destroy: $destroy:ident) => {
        // Plan handles are `Box`es of the op's plan: the run takes the plan as it is.
        $crate::capi::op::run_entry_points!($op, plan: $handle => <$op as $crate::capi::op::Op>::Plan,
            $bufs, $crate::capi::op::as_is;
            run: $run, emulate: $emulate);

        #[doc = concat!("`void ", stringify!($destroy), "(", stringify!($handle), " *plan)`")]
        ///
        /// # Safety
        /// `plan` NULL or a live handle of this op, not used afterwards.
        #[no_mangle]
        pub unsafe extern "C" fn $destroy(plan: *mut ffi::$handle) {
            // SAFETY: the caller's contract; the handle is a `Box` of the op's plan.
            unsafe { $crate::capi::plan::destroy::<<$op as $crate::capi::op::Op>::Plan, _>(plan) }
        }
    };
}
pub(super) use handle_entry_points;

/// Defines `flashmha_<op>_plan_create` and `flashmha_<op>_plan_create_for_context` of an op
/// whose plan is made from its shape alone by `make(shape, context)`.
macro_rules! create_entry_points {
    ($shape:ident, $handle:ident, $make:path; create: $create:ident,
     for_context: $for_context:ident) => {
        #[doc = concat!("`flashmha_status ", stringify!($create), "(const ", stringify!($shape),
                            " *shape, ", stringify!($handle), " **out)`")]
        ///
        /// # Safety
        /// `shape` NULL or valid; `out` NULL or writable storage for one pointer.
        #[no_mangle]
        pub unsafe extern "C" fn $create(
            shape: *const ffi::$shape,
            out: *mut *mut ffi::$handle,
        ) -> ffi::flashmha_status {
            // SAFETY: the caller's contract for each pointer.
            unsafe { $crate::capi::op::create(None, shape, "shape", out, $make) }
        }

        #[doc = concat!("`flashmha_status ", stringify!($for_context),
                            "(const flashmha_context *ctx, const ", stringify!($shape), " *shape, ",
                            stringify!($handle), " **out)`: planned for the context's device.")]
        ///
        /// # Safety
        /// `ctx` NULL or a live context; `shape` NULL or valid; `out` NULL or writable storage
        /// for one pointer.
        #[no_mangle]
        pub unsafe extern "C" fn $for_context(
            ctx: *const ffi::flashmha_context,
            shape: *const ffi::$shape,
            out: *mut *mut ffi::$handle,
        ) -> ffi::flashmha_status {
            // SAFETY: the caller's contract for each pointer.
            unsafe { $crate::capi::op::create(Some(ctx), shape, "shape", out, $make) }
        }
    };
}
pub(super) use create_entry_points;

/// Defines the run on a context and the run on the emulator of an op, both on the shared path
/// above: the C argument `$arg` (a plan handle, or the shape of an op planned at each call, as
/// the forward's `flashmha_forward`) points to a `$target`, and `$plan(target, context)` makes
/// what the op binds from it.
macro_rules! run_entry_points {
    ($op:ty, $arg:ident: $arg_ty:ident => $target:ty, $bufs:ident, $plan:expr;
     run: $run:ident, emulate: $emulate:ident) => {
        #[doc = concat!("`flashmha_status ", stringify!($run), "(const flashmha_context *ctx, const ",
                    stringify!($arg_ty), " *", stringify!($arg), ", const ", stringify!($bufs),
                    " *bufs, void *stream)`")]
        ///
        /// # Safety
        /// Pointers NULL or valid (handles live); every buffer in `bufs` device memory of the
        /// context holding at least its declared length, allocated until `stream` has run the
        /// kernels; `stream` NULL or a live `CUstream` of the context's device.
        #[no_mangle]
        pub unsafe extern "C" fn $run(
            ctx: *const ffi::flashmha_context,
            $arg: *const ffi::$arg_ty,
            bufs: *const ffi::$bufs,
            stream: *mut std::ffi::c_void,
        ) -> ffi::flashmha_status {
            // SAFETY: the caller's contract for each pointer; `$arg` points to a `$target`.
            unsafe {
                $crate::capi::op::run::<$op, _, _>(
                    ctx,
                    $arg.cast::<$target>(),
                    stringify!($arg),
                    bufs,
                    stream,
                    |ctx, p| ($plan)(p, Some(ctx)),
                )
            }
        }

        #[doc = concat!("`flashmha_status ", stringify!($emulate), "(const ", stringify!($arg_ty),
                    " *", stringify!($arg), ", const ", stringify!($bufs), " *host_bufs)`")]
        ///
        /// # Safety
        /// Pointers NULL or valid (handles live); each buffer host memory of at least its
        /// declared length (outputs and in-place buffers writable); inputs not written during
        /// the call.
        #[no_mangle]
        pub unsafe extern "C" fn $emulate(
            $arg: *const ffi::$arg_ty,
            host_bufs: *const ffi::$bufs,
        ) -> ffi::flashmha_status {
            // SAFETY: the caller's contract for each pointer; `$arg` points to a `$target`.
            unsafe {
                $crate::capi::op::emulate::<$op, _, _>(
                    $arg.cast::<$target>(),
                    stringify!($arg),
                    host_bufs,
                    |p| ($plan)(p, None),
                )
            }
        }
    };
}
pub(super) use run_entry_points;
