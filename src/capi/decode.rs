//! The C ABI of paged decode: a plan handle (`flashmha_decode_plan_*`, a boxed [`DecodePlan`]
//! made by `DecodePlan::new_for`), its split count and workspace size, and runs on a context
//! (`bind`, then `CudaBackend::launch_raw`) or on the emulator. Both paths carve the caller's one
//! workspace with [`DecodePlan::carve_workspace`] and check every buffer with
//! [`DecodePlan::params`].

use super::convert;
use super::cuda::backend;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::plan::{create_into, destroy, handle};
use super::status::{guard, CallError};
use crate::common::target::KernelTarget;
use crate::ops::decode::{DecodeBuffers, DecodePlan};
use std::ffi::c_void;

/// The plan behind a decode handle.
///
/// # Safety
/// A non-NULL `p` must be a live handle from `flashmha_decode_plan_create*`.
unsafe fn plan<'a>(p: *const ffi::flashmha_decode_plan) -> Result<&'a DecodePlan, CallError> {
    // SAFETY: the caller's contract; decode handles are `Box<DecodePlan>`.
    unsafe { handle(p, "plan") }
}

/// The run's buffers with the workspace carved as the plan needs it.
fn buffers(plan: &DecodePlan, b: &ffi::flashmha_decode_bufs) -> crate::Result<DecodeBuffers> {
    let mut bufs = convert::decode_bufs(b);
    (bufs.partial_o, bufs.partial_lse, bufs.partial_entropy) =
        plan.carve_workspace(convert::device_buf(b.workspace))?;
    Ok(bufs)
}

/// `flashmha_status flashmha_decode_plan_create(const flashmha_decode_shape *shape,
/// flashmha_decode_plan **out)`
///
/// # Safety
/// `shape` NULL or valid; `out` NULL or writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn flashmha_decode_plan_create(
    shape: *const ffi::flashmha_decode_shape,
    out: *mut *mut ffi::flashmha_decode_plan,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        unsafe {
            create_into(out, || {
                let s = convert::deref(shape, "shape")?;
                let problem = convert::decode_problem(s)?;
                let policy = convert::split_policy(s, None)?;
                Ok(DecodePlan::new_for(KernelTarget::Ampere, &problem, policy)?)
            })
        }
    })
}

/// `flashmha_status flashmha_decode_plan_create_for_context(const flashmha_context *ctx,
/// const flashmha_decode_shape *shape, flashmha_decode_plan **out)`
///
/// # Safety
/// `ctx` NULL or a live context; `shape` NULL or valid; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn flashmha_decode_plan_create_for_context(
    ctx: *const ffi::flashmha_context,
    shape: *const ffi::flashmha_decode_shape,
    out: *mut *mut ffi::flashmha_decode_plan,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        unsafe {
            create_into(out, || {
                let (ctx, s) = (backend(ctx)?, convert::deref(shape, "shape")?);
                let problem = convert::decode_problem(s)?;
                let policy = convert::split_policy(s, Some(super::cuda::sm_count(ctx)?))?;
                Ok(DecodePlan::new_for(ctx.target(), &problem, policy)?)
            })
        }
    })
}

/// `flashmha_status flashmha_decode_plan_info(const flashmha_decode_plan *plan,
/// flashmha_decode_info *out)`
///
/// # Safety
/// `plan` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn flashmha_decode_plan_info(
    plan_handle: *const ffi::flashmha_decode_plan,
    out: *mut ffi::flashmha_decode_info,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let p = unsafe { plan(plan_handle)? };
        if out.is_null() {
            return Err(CallError::InvalidArgument("out is NULL".into()));
        }
        let size = |v: u64| {
            usize::try_from(v).map_err(|_| {
                CallError::InvalidArgument(format!("a workspace of {v} f32 exceeds size_t"))
            })
        };
        let info = ffi::flashmha_decode_info {
            num_splits: p.num_splits,
            split_keys: p.split_keys,
            workspace_elems: size(p.workspace.elems())?,
            workspace_bytes: size(p.workspace.elems().saturating_mul(4))?,
        };
        // SAFETY: `out` is non-NULL and, by the caller's contract, writable.
        unsafe { out.write(info) };
        Ok(())
    })
}

/// `void flashmha_decode_plan_destroy(flashmha_decode_plan *plan)`
///
/// # Safety
/// `plan` NULL or a live decode handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn flashmha_decode_plan_destroy(plan: *mut ffi::flashmha_decode_plan) {
    // SAFETY: the caller's contract; decode handles are `Box<DecodePlan>`.
    unsafe { destroy::<DecodePlan, _>(plan) }
}

/// `flashmha_status flashmha_decode_run(const flashmha_context *ctx,
/// const flashmha_decode_plan *plan, const flashmha_decode_bufs *bufs, void *stream)`
///
/// # Safety
/// Pointers NULL or valid (handles live); every buffer in `bufs` is device memory of the
/// context holding at least its declared length, allocated until `stream` has run the kernels;
/// `stream` NULL or a live `CUstream` of the context's device.
#[no_mangle]
pub unsafe extern "C" fn flashmha_decode_run(
    ctx: *const ffi::flashmha_context,
    plan_handle: *const ffi::flashmha_decode_plan,
    bufs: *const ffi::flashmha_decode_bufs,
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
        let bufs = buffers(p, b)?;
        // SAFETY: forwarded from this function's contract; `bind` checks every buffer
        // against the plan before anything is launched.
        unsafe { ctx.launch_raw(&p.bind(&bufs)?, stream.cast()) }?;
        Ok(())
    })
}

/// `flashmha_status flashmha_emulate_decode_run(const flashmha_decode_plan *plan,
/// const flashmha_decode_bufs *host_bufs)`
///
/// # Safety
/// `plan` NULL or live; `host_bufs` NULL or valid, each buffer host memory of at least its
/// declared length; inputs not written during the call.
#[no_mangle]
pub unsafe extern "C" fn flashmha_emulate_decode_run(
    plan_handle: *const ffi::flashmha_decode_plan,
    host_bufs: *const ffi::flashmha_decode_bufs,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (p, host) = unsafe { (plan(plan_handle)?, convert::deref(host_bufs, "host_bufs")?) };
        // The GPU's checks on the caller's own addresses first: nothing is copied or run when
        // one fails.
        p.params(&buffers(p, host)?)?;
        let pr = &p.problem;
        let (e, kv_e) = (pr.dtype.size(), pr.kv_element_bytes());
        let used = |on: bool, role: Role| if on { role } else { Role::Unused };
        let fp8 = pr.kv_dtype.is_fp8();
        let mut m = HostMirror::default();
        // SAFETY: the caller's contract for each buffer (inputs readable, outputs writable).
        let mirrored = unsafe {
            ffi::flashmha_decode_bufs {
                q: m.mirror(host.q, e, Role::Input)?,
                k_cache: m.mirror(host.k_cache, kv_e, Role::Input)?,
                v_cache: m.mirror(host.v_cache, kv_e, Role::Input)?,
                o: m.mirror(host.o, e, Role::Output)?,
                block_table: m.mirror(host.block_table, 4, Role::Input)?,
                cache_seqlens: m.mirror(host.cache_seqlens, 4, Role::Input)?,
                cu_seqlens_q: m.mirror(host.cu_seqlens_q, 4, used(pr.is_varlen(), Role::Input))?,
                lse: m.mirror(host.lse, 4, used(pr.lse, Role::Output))?,
                entropy: m.mirror(host.entropy, 4, used(pr.entropy, Role::Output))?,
                alibi_slopes: m.mirror(host.alibi_slopes, 4, used(pr.alibi, Role::Input))?,
                head_gates: m.mirror(host.head_gates, 4, used(pr.gates, Role::Input))?,
                k_scales: m.mirror(host.k_scales, 4, used(fp8, Role::Input))?,
                v_scales: m.mirror(host.v_scales, 4, used(fp8, Role::Input))?,
                workspace: m.mirror(host.workspace, 4, used(p.combine.is_some(), Role::Scratch))?,
            }
        };
        for l in p.bind(&buffers(p, &mirrored)?)?.iter() {
            m.launch(l)?;
        }
        // SAFETY: the output buffers are writable (caller's contract).
        unsafe { m.copy_back() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> ffi::flashmha_decode_shape {
        ffi::flashmha_decode_shape {
            dtype: ffi::FLASHMHA_DTYPE_BF16,
            batch: 4,
            seqlen_q: 1,
            heads_q: 8,
            heads_kv: 2,
            head_dim: 128,
            num_pages: 64,
            page_size: 16,
            max_pages_per_seq: 16,
            split_mode: ffi::FLASHMHA_SPLIT_COUNT,
            split_value: 4,
            ..Default::default()
        }
    }

    /// Creates a plan from `s`; the status, and the info when it was planned.
    fn create(
        s: &ffi::flashmha_decode_shape,
    ) -> (flashmha_status, Option<ffi::flashmha_decode_info>) {
        let mut p: *mut ffi::flashmha_decode_plan = std::ptr::null_mut();
        // SAFETY: valid pointers to locals.
        let code = unsafe { flashmha_decode_plan_create(s, &mut p) };
        if p.is_null() {
            return (code, None);
        }
        let mut info = ffi::flashmha_decode_info::default();
        // SAFETY: `p` is live; `info` is a local.
        assert_eq!(
            unsafe { flashmha_decode_plan_info(p, &mut info) },
            ffi::FLASHMHA_OK
        );
        // SAFETY: destroyed once.
        unsafe { flashmha_decode_plan_destroy(p) };
        (code, Some(info))
    }

    #[test]
    fn the_info_states_the_rust_plans_splits_and_workspace() {
        let (code, info) = create(&shape());
        assert_eq!(code, ffi::FLASHMHA_OK);
        let info = info.unwrap();
        let problem = convert::decode_problem(&shape()).unwrap();
        let want = crate::ops::decode::DecodePlan::new(
            &problem,
            crate::ops::decode::SplitPolicy::Count(4),
        )
        .unwrap();
        assert_eq!(info.num_splits, want.num_splits);
        assert_eq!(info.workspace_elems as u64, want.workspace.elems());
        assert_eq!(info.workspace_bytes as u64, want.workspace.bytes());
        // 4 splits x 4 rows x 8 heads, each a partial O of 128 and an LSE.
        assert_eq!(info.workspace_elems, 4 * 4 * 8 * 129);
        let mut one = shape();
        one.split_value = 1;
        let (_, info) = create(&one);
        assert_eq!(info.unwrap().workspace_elems, 0);
    }

    #[test]
    fn extreme_sizes_are_typed_errors_never_a_panic() {
        // Every size field at usize::MAX in turn: a typed error (never the caught-panic code),
        // and no plan handed out.
        let fields: [fn(&mut ffi::flashmha_decode_shape); 9] = [
            |s| s.batch = usize::MAX,
            |s| s.seqlen_q = usize::MAX,
            |s| s.heads_q = usize::MAX,
            |s| s.heads_kv = usize::MAX,
            |s| s.head_dim = usize::MAX,
            |s| s.num_pages = usize::MAX,
            |s| s.page_size = usize::MAX,
            |s| s.max_pages_per_seq = usize::MAX,
            |s| s.max_cache_len = usize::MAX,
        ];
        for (i, set) in fields.iter().enumerate() {
            let mut s = shape();
            set(&mut s);
            let (code, info) = create(&s);
            assert_ne!(code, ffi::FLASHMHA_OK, "field {i}");
            assert_ne!(code, ffi::FLASHMHA_ERR_INTERNAL, "field {i}");
            assert!(info.is_none(), "field {i}");
        }
    }
}
