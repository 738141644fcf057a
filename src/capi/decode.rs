//! The C ABI of paged decode: a plan handle (`flashmha_decode_plan_*`, a boxed [`DecodePlan`]
//! made by `DecodePlan::new_for`), its split count and workspace size, and runs on a context or
//! on the emulator through the shared path of `op.rs`. Both paths carve the caller's one
//! workspace with [`DecodePlan::carve_workspace`] and check every buffer with
//! [`DecodePlan::bind`].

use super::convert;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::op::{self, Op};
use super::plan::{handle, write_out};
use super::status::{guard, CallError};
use crate::common::launch::Launches;
use crate::common::target::KernelTarget;
use crate::cuda::CudaBackend;
use crate::ops::decode::plan::WorkspaceLayout;
use crate::ops::decode::{DecodeBuffers, DecodePlan, SplitPolicy};

/// The run's buffers with the workspace carved as the plan needs it.
fn buffers(plan: &DecodePlan, b: &ffi::flashmha_decode_bufs) -> crate::Result<DecodeBuffers> {
    let mut bufs = convert::decode_bufs(b);
    (bufs.partial_o, bufs.partial_lse, bufs.partial_entropy) =
        plan.carve_workspace(convert::device_buf(b.workspace))?;
    Ok(bufs)
}

/// Paged decode on the shared C ABI path.
struct Decode;

impl Op for Decode {
    type Plan = DecodePlan;
    type Bufs = ffi::flashmha_decode_bufs;
    type Bound = Launches;

    fn bind(p: &DecodePlan, b: &Self::Bufs) -> Result<Launches, CallError> {
        Ok(p.bind(&buffers(p, b)?)?)
    }

    unsafe fn mirror(
        p: &DecodePlan,
        m: &mut HostMirror,
        host: &Self::Bufs,
    ) -> Result<Self::Bufs, CallError> {
        let pr = &p.problem;
        let (e, kv_e) = (pr.dtype.size(), pr.kv_element_bytes());
        let (input, output) = (Role::Input, Role::Output);
        let fp8 = pr.kv_dtype.is_fp8();
        // SAFETY: the caller's contract for each buffer.
        unsafe {
            Ok(ffi::flashmha_decode_bufs {
                q: m.mirror(host.q, e, input)?,
                k_cache: m.mirror(host.k_cache, kv_e, input)?,
                v_cache: m.mirror(host.v_cache, kv_e, input)?,
                o: m.mirror(host.o, e, output)?,
                block_table: m.mirror(host.block_table, 4, input)?,
                cache_seqlens: m.mirror(host.cache_seqlens, 4, input)?,
                cu_seqlens_q: m.mirror(host.cu_seqlens_q, 4, input.when(pr.is_varlen()))?,
                lse: m.mirror(host.lse, 4, output.when(pr.lse))?,
                entropy: m.mirror(host.entropy, 4, output.when(pr.entropy))?,
                alibi_slopes: m.mirror(host.alibi_slopes, 4, input.when(pr.alibi))?,
                head_gates: m.mirror(host.head_gates, 4, input.when(pr.gates))?,
                sinks: m.mirror(host.sinks, 4, input.when(pr.sinks))?,
                k_scales: m.mirror(host.k_scales, 4, input.when(fp8))?,
                v_scales: m.mirror(host.v_scales, 4, input.when(fp8))?,
                workspace: m.mirror(host.workspace, 4, Role::Scratch.when(p.combine.is_some()))?,
            })
        }
    }
}

op::handle_entry_points!(Decode, flashmha_decode_plan, flashmha_decode_bufs;
    run: flashmha_decode_run, emulate: flashmha_emulate_decode_run,
    destroy: flashmha_decode_plan_destroy);

/// Plans for the context's device (its SM count the split heuristic's input) or, without one,
/// for the default kernels.
fn make(
    s: &ffi::flashmha_decode_shape,
    ctx: Option<&CudaBackend>,
) -> Result<DecodePlan, CallError> {
    let problem = convert::decode_problem(s)?;
    plan_for(ctx, (s.split_mode, s.split_value), |target, policy| {
        DecodePlan::new_for(target, &problem, policy)
    })
}

/// A paged or MLA decode plan made by `plan` for the kernels of `ctx` (or the default ones)
/// under the split policy of the shape's `split_mode` / `split_value` (the context's SM count
/// when `FLASHMHA_SPLIT_AUTO` gives 0).
pub(super) fn plan_for<P>(
    ctx: Option<&CudaBackend>,
    split: (ffi::flashmha_split_mode, u32),
    plan: impl FnOnce(KernelTarget, SplitPolicy) -> crate::Result<P>,
) -> Result<P, CallError> {
    let policy = convert::split_policy(split, ctx.map(super::cuda::sm_count).transpose()?)?;
    Ok(plan(op::target(ctx), policy)?)
}

op::create_entry_points!(flashmha_decode_shape, flashmha_decode_plan, make;
    create: flashmha_decode_plan_create, for_context: flashmha_decode_plan_create_for_context);

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
        // SAFETY: the caller's contract; decode handles are `Box<DecodePlan>`.
        let p: &DecodePlan = unsafe { handle(plan_handle, "plan")? };
        // SAFETY: the caller's contract for `out`.
        unsafe { write_out(out, || info(p.num_splits, p.split_keys, &p.workspace)) }
    })
}

/// The `flashmha_decode_info` of a paged or MLA decode plan's splits and workspace.
pub(super) fn info(
    num_splits: u32,
    split_keys: u32,
    workspace: &WorkspaceLayout,
) -> Result<ffi::flashmha_decode_info, CallError> {
    let size = |v: u64| {
        usize::try_from(v).map_err(|_| {
            CallError::InvalidArgument(format!("a workspace of {v} f32 exceeds size_t"))
        })
    };
    Ok(ffi::flashmha_decode_info {
        num_splits,
        split_keys,
        workspace_elems: size(workspace.elems())?,
        workspace_bytes: size(workspace.elems().saturating_mul(4))?,
    })
}

/// Creates a plan from `s` with `create`; the status, and (read with `info`, the plan then
/// destroyed) the info when it was planned. The paged and MLA decode tests' helper.
#[cfg(test)]
pub(super) fn planned_info<S, H>(
    s: &S,
    create: unsafe extern "C" fn(*const S, *mut *mut H) -> flashmha_status,
    info: unsafe extern "C" fn(*const H, *mut ffi::flashmha_decode_info) -> flashmha_status,
    destroy: unsafe extern "C" fn(*mut H),
) -> (flashmha_status, Option<ffi::flashmha_decode_info>) {
    let mut p: *mut H = std::ptr::null_mut();
    // SAFETY: valid pointers to locals.
    let code = unsafe { create(s, &mut p) };
    if p.is_null() {
        return (code, None);
    }
    let mut out = ffi::flashmha_decode_info::default();
    // SAFETY: `p` is a live handle of `create`'s op; `out` is a local.
    assert_eq!(unsafe { info(p, &mut out) }, ffi::FLASHMHA_OK);
    // SAFETY: destroyed once.
    unsafe { destroy(p) };
    (code, Some(out))
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

    fn create(
        s: &ffi::flashmha_decode_shape,
    ) -> (flashmha_status, Option<ffi::flashmha_decode_info>) {
        planned_info(
            s,
            flashmha_decode_plan_create,
            flashmha_decode_plan_info,
            flashmha_decode_plan_destroy,
        )
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
