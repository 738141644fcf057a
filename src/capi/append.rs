//! The C ABI of the KV append: a plan handle (`flashmha_kv_append_plan_*`, a boxed
//! [`KvAppendPlan`] made by `KvAppendPlan::new_for` from the same `flashmha_decode_shape` that
//! describes the pools to the decode) run on a context (`bind`, then
//! `CudaBackend::launch_raw`) or on the emulator; both check the buffers with
//! [`KvAppendPlan::params`].

use super::convert;
use super::cuda::backend;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::plan::{create_into, destroy, handle};
use super::status::{guard, CallError};
use crate::common::target::KernelTarget;
use crate::ops::kv_append::{AppendIndex, KvAppendPlan};
use std::ffi::c_void;

/// # Safety
/// A non-NULL `p` must be a live handle from `flashmha_kv_append_plan_create*`.
unsafe fn plan<'a>(p: *const ffi::flashmha_kv_append_plan) -> Result<&'a KvAppendPlan, CallError> {
    // SAFETY: the caller's contract; append handles are `Box<KvAppendPlan>`.
    unsafe { handle(p, "plan") }
}

/// Plans for `target` from the C description of the pools.
fn make(
    target: KernelTarget,
    pools: &ffi::flashmha_decode_shape,
    num_tokens: usize,
    index: ffi::flashmha_append_index,
) -> Result<KvAppendPlan, CallError> {
    let problem = convert::decode_problem(pools)?;
    let index = convert::append_index(index)?;
    Ok(KvAppendPlan::new_for(target, &problem, num_tokens, index)?)
}

/// `flashmha_status flashmha_kv_append_plan_create(const flashmha_decode_shape *pools,
/// size_t num_tokens, flashmha_append_index index, flashmha_kv_append_plan **out)`
///
/// # Safety
/// `pools` NULL or valid; `out` NULL or writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn flashmha_kv_append_plan_create(
    pools: *const ffi::flashmha_decode_shape,
    num_tokens: usize,
    index: ffi::flashmha_append_index,
    out: *mut *mut ffi::flashmha_kv_append_plan,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        unsafe {
            create_into(out, || {
                let pools = convert::deref(pools, "pools")?;
                make(KernelTarget::Ampere, pools, num_tokens, index)
            })
        }
    })
}

/// `flashmha_status flashmha_kv_append_plan_create_for_context(const flashmha_context *ctx,
/// const flashmha_decode_shape *pools, size_t num_tokens, flashmha_append_index index,
/// flashmha_kv_append_plan **out)`
///
/// # Safety
/// `ctx` NULL or live; `pools` NULL or valid; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn flashmha_kv_append_plan_create_for_context(
    ctx: *const ffi::flashmha_context,
    pools: *const ffi::flashmha_decode_shape,
    num_tokens: usize,
    index: ffi::flashmha_append_index,
    out: *mut *mut ffi::flashmha_kv_append_plan,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        unsafe {
            create_into(out, || {
                let (ctx, pools) = (backend(ctx)?, convert::deref(pools, "pools")?);
                make(ctx.target(), pools, num_tokens, index)
            })
        }
    })
}

/// `void flashmha_kv_append_plan_destroy(flashmha_kv_append_plan *plan)`
///
/// # Safety
/// `plan` NULL or a live append handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn flashmha_kv_append_plan_destroy(plan: *mut ffi::flashmha_kv_append_plan) {
    // SAFETY: the caller's contract; append handles are `Box<KvAppendPlan>`.
    unsafe { destroy::<KvAppendPlan, _>(plan) }
}

/// `flashmha_status flashmha_kv_append_run(const flashmha_context *ctx,
/// const flashmha_kv_append_plan *plan, const flashmha_kv_append_bufs *bufs, void *stream)`
///
/// # Safety
/// As for `flashmha_decode_run`.
#[no_mangle]
pub unsafe extern "C" fn flashmha_kv_append_run(
    ctx: *const ffi::flashmha_context,
    plan_handle: *const ffi::flashmha_kv_append_plan,
    bufs: *const ffi::flashmha_kv_append_bufs,
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
        // SAFETY: forwarded from this function's contract; `bind` checks every buffer
        // against the plan before anything is launched.
        unsafe { ctx.launch_raw(&p.bind(&convert::append_bufs(b))?, stream.cast()) }?;
        Ok(())
    })
}

/// `flashmha_status flashmha_emulate_kv_append_run(const flashmha_kv_append_plan *plan,
/// const flashmha_kv_append_bufs *host_bufs)`
///
/// # Safety
/// As for `flashmha_emulate_decode_run`; the pools are read and written.
#[no_mangle]
pub unsafe extern "C" fn flashmha_emulate_kv_append_run(
    plan_handle: *const ffi::flashmha_kv_append_plan,
    host_bufs: *const ffi::flashmha_kv_append_bufs,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (p, host) = unsafe { (plan(plan_handle)?, convert::deref(host_bufs, "host_bufs")?) };
        // The GPU's checks on the caller's own addresses first.
        p.params(&convert::append_bufs(host))?;
        let (e, kv_e) = (p.pools.dtype.size(), p.pools.kv_element_bytes());
        let used = |on: bool| if on { Role::Input } else { Role::Unused };
        let (slots, fp8) = (p.index == AppendIndex::Slots, p.pools.kv_dtype.is_fp8());
        let mut m = HostMirror::default();
        // SAFETY: the caller's contract for each buffer (inputs readable, pools read-write).
        let mirrored = unsafe {
            ffi::flashmha_kv_append_bufs {
                k_new: m.mirror(host.k_new, e, Role::Input)?,
                v_new: m.mirror(host.v_new, e, Role::Input)?,
                k_cache: m.mirror(host.k_cache, kv_e, Role::InOut)?,
                v_cache: m.mirror(host.v_cache, kv_e, Role::InOut)?,
                slot_mapping: m.mirror(host.slot_mapping, 4, used(slots))?,
                block_table: m.mirror(host.block_table, 4, used(!slots))?,
                token_batch: m.mirror(host.token_batch, 4, used(!slots))?,
                token_pos: m.mirror(host.token_pos, 4, used(!slots))?,
                k_scales: m.mirror(host.k_scales, 4, used(fp8))?,
                v_scales: m.mirror(host.v_scales, 4, used(fp8))?,
            }
        };
        for l in p.bind(&convert::append_bufs(&mirrored))?.iter() {
            m.launch(l)?;
        }
        // SAFETY: the pools are writable (caller's contract).
        unsafe { m.copy_back() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pools_of_a_decode_shape_plan_an_append_and_bad_counts_are_typed() {
        let pools = ffi::flashmha_decode_shape {
            dtype: ffi::FLASHMHA_DTYPE_BF16,
            batch: 2,
            seqlen_q: 1,
            heads_q: 4,
            heads_kv: 2,
            head_dim: 64,
            num_pages: 8,
            page_size: 16,
            max_pages_per_seq: 4,
            ..Default::default()
        };
        for (tokens, index, ok) in [
            (5, ffi::FLASHMHA_APPEND_SLOTS, true),
            (5, ffi::FLASHMHA_APPEND_POSITIONS, true),
            (usize::MAX, ffi::FLASHMHA_APPEND_SLOTS, false),
            (5, 7, false),
        ] {
            let mut p: *mut ffi::flashmha_kv_append_plan = std::ptr::null_mut();
            // SAFETY: valid pointers to locals.
            let code = unsafe { flashmha_kv_append_plan_create(&pools, tokens, index, &mut p) };
            assert_eq!(
                code == ffi::FLASHMHA_OK,
                ok,
                "{tokens} tokens, index {index}"
            );
            assert_ne!(code, ffi::FLASHMHA_ERR_INTERNAL);
            assert_eq!(p.is_null(), !ok);
            if ok {
                // SAFETY: `p` was just made.
                let plan = unsafe { plan(p) }.unwrap();
                assert_eq!(plan.num_tokens, tokens);
                assert_eq!(plan.pools, convert::decode_problem(&pools).unwrap());
            }
            // SAFETY: NULL or the plan just made, destroyed once.
            unsafe { flashmha_kv_append_plan_destroy(p) };
        }
    }
}
