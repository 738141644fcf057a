//! The C ABI of the KV append: a plan handle (`flashmha_kv_append_plan_*`, a boxed
//! [`KvAppendPlan`] made by `KvAppendPlan::new_for` from the same `flashmha_decode_shape` that
//! describes the pools to the decode) run on a context or on the
//! emulator through the shared path of `op.rs`; both check the buffers with
//! [`KvAppendPlan::params`].

use super::convert;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::op::{self, Op};
use super::status::CallError;
use crate::common::launch::Launches;
use crate::ops::kv_append::{AppendIndex, KvAppendPlan};

/// The KV append on the shared C ABI path.
struct KvAppend;

impl Op for KvAppend {
    type Plan = KvAppendPlan;
    type Bufs = ffi::flashmha_kv_append_bufs;
    type Bound = Launches;

    fn bind(p: &KvAppendPlan, b: &Self::Bufs) -> Result<Launches, CallError> {
        Ok(p.bind(&convert::append_bufs(b))?)
    }

    /// Every buffer checked, even for zero tokens (where `bind` launches nothing and checks
    /// nothing).
    fn check_host(p: &KvAppendPlan, host: &Self::Bufs) -> Result<(), CallError> {
        p.params(&convert::append_bufs(host))?;
        Ok(())
    }

    unsafe fn mirror(
        p: &KvAppendPlan,
        m: &mut HostMirror,
        host: &Self::Bufs,
    ) -> Result<Self::Bufs, CallError> {
        let (e, kv_e) = (p.pools.dtype.size(), p.pools.kv_element_bytes());
        let (slots, fp8) = (p.index == AppendIndex::Slots, p.pools.kv_dtype.is_fp8());
        let (input, pool) = (Role::Input, Role::InOut);
        // SAFETY: the caller's contract for each buffer (inputs readable, pools read-write).
        unsafe {
            Ok(ffi::flashmha_kv_append_bufs {
                k_new: m.mirror(host.k_new, e, input)?,
                v_new: m.mirror(host.v_new, e, input)?,
                k_cache: m.mirror(host.k_cache, kv_e, pool)?,
                v_cache: m.mirror(host.v_cache, kv_e, pool)?,
                slot_mapping: m.mirror(host.slot_mapping, 4, input.when(slots))?,
                block_table: m.mirror(host.block_table, 4, input.when(!slots))?,
                token_batch: m.mirror(host.token_batch, 4, input.when(!slots))?,
                token_pos: m.mirror(host.token_pos, 4, input.when(!slots))?,
                k_scales: m.mirror(host.k_scales, 4, input.when(fp8))?,
                v_scales: m.mirror(host.v_scales, 4, input.when(fp8))?,
            })
        }
    }
}

op::handle_entry_points!(KvAppend, flashmha_kv_append_plan, flashmha_kv_append_bufs;
    run: flashmha_kv_append_run, emulate: flashmha_emulate_kv_append_run,
    destroy: flashmha_kv_append_plan_destroy);

/// Plans an append of `num_tokens` by `index` into the pools `pools` describes, for the
/// context's device or, without one, for the default kernels.
///
/// # Safety
/// As for `flashmha_kv_append_plan_create_for_context`, with `ctx` given or not.
unsafe fn create(
    ctx: Option<*const ffi::flashmha_context>,
    pools: *const ffi::flashmha_decode_shape,
    num_tokens: usize,
    index: ffi::flashmha_append_index,
    out: *mut *mut ffi::flashmha_kv_append_plan,
) -> flashmha_status {
    // SAFETY: the caller's contract for each pointer.
    unsafe {
        op::create(ctx, pools, "pools", out, |pools, ctx| {
            let problem = convert::decode_problem(pools)?;
            let index = convert::append_index(index)?;
            Ok(KvAppendPlan::new_for(
                op::target(ctx),
                &problem,
                num_tokens,
                index,
            )?)
        })
    }
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
    // SAFETY: the caller's contract for each pointer.
    unsafe { create(None, pools, num_tokens, index, out) }
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
    // SAFETY: the caller's contract for each pointer.
    unsafe { create(Some(ctx), pools, num_tokens, index, out) }
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
                let plan: &KvAppendPlan = unsafe { super::super::plan::handle(p, "plan") }.unwrap();
                assert_eq!(plan.num_tokens, tokens);
                assert_eq!(plan.pools, convert::decode_problem(&pools).unwrap());
            }
            // SAFETY: NULL or the plan just made, destroyed once.
            unsafe { flashmha_kv_append_plan_destroy(p) };
        }
    }
}
