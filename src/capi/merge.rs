//! The C ABI of the merge of attention states: a plan handle (`flashmha_merge_plan_*`, a boxed
//! [`MergePlan`] made by `plan_merge_for`) run on a context (`CudaBackend::merge_states_raw`)
//! or on the emulator; both check the buffers with [`MergePlan::params`].

use super::convert;
use super::cuda::backend;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::plan::{create_into, destroy, handle};
use super::status::{guard, CallError};
use crate::decode::{plan_merge_for, MergePlan, MergeStates};
use crate::target::KernelTarget;
use std::ffi::c_void;

/// # Safety
/// A non-NULL `p` must be a live handle from `flashmha_merge_plan_create*`.
unsafe fn plan<'a>(p: *const ffi::flashmha_merge_plan) -> Result<&'a MergePlan, CallError> {
    // SAFETY: the caller's contract; merge handles are `Box<MergePlan>`.
    unsafe { handle(p, "plan") }
}

/// `flashmha_status flashmha_merge_plan_create(const flashmha_merge_shape *shape,
/// flashmha_merge_plan **out)`
///
/// # Safety
/// `shape` NULL or valid; `out` NULL or writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn flashmha_merge_plan_create(
    shape: *const ffi::flashmha_merge_shape,
    out: *mut *mut ffi::flashmha_merge_plan,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        unsafe {
            create_into(out, || {
                let problem = convert::merge_problem(convert::deref(shape, "shape")?)?;
                Ok(plan_merge_for(KernelTarget::Ampere, &problem)?)
            })
        }
    })
}

/// `flashmha_status flashmha_merge_plan_create_for_context(const flashmha_context *ctx,
/// const flashmha_merge_shape *shape, flashmha_merge_plan **out)`
///
/// # Safety
/// `ctx` NULL or live; `shape` NULL or valid; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn flashmha_merge_plan_create_for_context(
    ctx: *const ffi::flashmha_context,
    shape: *const ffi::flashmha_merge_shape,
    out: *mut *mut ffi::flashmha_merge_plan,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        unsafe {
            create_into(out, || {
                let ctx = backend(ctx)?;
                let problem = convert::merge_problem(convert::deref(shape, "shape")?)?;
                Ok(plan_merge_for(ctx.target(), &problem)?)
            })
        }
    })
}

/// `void flashmha_merge_plan_destroy(flashmha_merge_plan *plan)`
///
/// # Safety
/// `plan` NULL or a live merge handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn flashmha_merge_plan_destroy(plan: *mut ffi::flashmha_merge_plan) {
    // SAFETY: the caller's contract; merge handles are `Box<MergePlan>`.
    unsafe { destroy::<MergePlan, _>(plan) }
}

/// `flashmha_status flashmha_merge_run(const flashmha_context *ctx,
/// const flashmha_merge_plan *plan, const flashmha_merge_bufs *bufs, void *stream)`
///
/// # Safety
/// As for `flashmha_decode_run`.
#[no_mangle]
pub unsafe extern "C" fn flashmha_merge_run(
    ctx: *const ffi::flashmha_context,
    plan_handle: *const ffi::flashmha_merge_plan,
    bufs: *const ffi::flashmha_merge_bufs,
    stream: *mut c_void,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (ctx, p, b) = unsafe {
            (
                backend(ctx)?,
                plan(plan_handle)?,
                convert::deref(bufs, "bufs")?,
            )
        };
        // SAFETY: forwarded from this function's contract; `merge_states_raw` checks every
        // buffer against the plan before launching.
        unsafe { ctx.merge_states_raw(p, &convert::merge_bufs(b), stream.cast()) }?;
        Ok(())
    })
}

/// `flashmha_status flashmha_emulate_merge_run(const flashmha_merge_plan *plan,
/// const flashmha_merge_bufs *host_bufs)`
///
/// # Safety
/// As for `flashmha_emulate_decode_run`.
#[no_mangle]
pub unsafe extern "C" fn flashmha_emulate_merge_run(
    plan_handle: *const ffi::flashmha_merge_plan,
    host_bufs: *const ffi::flashmha_merge_bufs,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (p, host) = unsafe { (plan(plan_handle)?, convert::deref(host_bufs, "host_bufs")?) };
        // The GPU's checks on the caller's own addresses first.
        p.params(&convert::merge_bufs(host))?;
        let e = p.problem.dtype.size();
        // A stacked plan rejects a given o_b / lse_b above, so they are the pair's here.
        let pair = p.problem.states == MergeStates::Pair;
        let b_role = if pair { Role::Input } else { Role::Unused };
        let mut m = HostMirror::default();
        // SAFETY: the caller's contract for each buffer (inputs readable, outputs writable).
        let mirrored = unsafe {
            ffi::flashmha_merge_bufs {
                o_states: m.mirror(host.o_states, e, Role::Input)?,
                lse_states: m.mirror(host.lse_states, 4, Role::Input)?,
                o_b: m.mirror(host.o_b, e, b_role)?,
                lse_b: m.mirror(host.lse_b, 4, b_role)?,
                o: m.mirror(host.o, e, Role::Output)?,
                lse: m.mirror(host.lse, 4, Role::Output)?,
            }
        };
        let params = p.params(&convert::merge_bufs(&mirrored))?;
        m.launch(&p.launch, crate::abi::ParamsBytes::as_bytes(&params))?;
        // SAFETY: the output buffers are writable (caller's contract).
        unsafe { m.copy_back() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(s: &ffi::flashmha_merge_shape) -> (flashmha_status, bool) {
        let mut p: *mut ffi::flashmha_merge_plan = std::ptr::null_mut();
        // SAFETY: valid pointers to locals.
        let code = unsafe { flashmha_merge_plan_create(s, &mut p) };
        let made = !p.is_null();
        // SAFETY: NULL or the plan just made, destroyed once.
        unsafe { flashmha_merge_plan_destroy(p) };
        (code, made)
    }

    #[test]
    fn shapes_are_planned_or_typed_errors_never_a_panic() {
        let base = ffi::flashmha_merge_shape {
            dtype: ffi::FLASHMHA_DTYPE_F16,
            form: ffi::FLASHMHA_MERGE_STACKED,
            num_states: 3,
            rows: 5,
            heads: 4,
            head_dim: 64,
            lse_layout: ffi::FLASHMHA_STATS_ROWS_HEADS,
        };
        assert_eq!(create(&base), (ffi::FLASHMHA_OK, true));
        let edits: [fn(&mut ffi::flashmha_merge_shape); 6] = [
            |s| s.num_states = usize::MAX,
            |s| s.rows = usize::MAX,
            |s| s.heads = usize::MAX,
            |s| s.head_dim = usize::MAX - 3,
            |s| s.head_dim = 6,
            |s| s.rows = 0,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut s = base;
            edit(&mut s);
            let (code, made) = create(&s);
            assert_ne!(code, ffi::FLASHMHA_OK, "edit {i}");
            assert_ne!(code, ffi::FLASHMHA_ERR_INTERNAL, "edit {i}");
            assert!(!made, "edit {i}");
        }
    }
}
