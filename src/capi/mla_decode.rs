//! The C ABI of the MLA decode: a plan handle (`flashmha_mla_decode_plan_*`, a boxed
//! [`MlaDecodePlan`] made by `MlaDecodePlan::new_for`), its split count and workspace size
//! (the paged decode's `flashmha_decode_info`), and runs on a context or on the emulator
//! through the shared path of `op.rs`. What differs from the paged decode (`decode.rs`): one
//! latent pool with one FP8 scale instead of K / V pools and their scales, 576-element q rows
//! and 512-element o rows; both carve the workspace and check the buffers the same way.

use super::convert;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::op::{self, Op};
use super::plan::{handle, write_out};
use super::status::{guard, CallError};
use crate::cuda::CudaBackend;
use crate::ops::decode::DecodeBuffers;
use crate::ops::mla_decode::{MlaDecodePlan, MlaLaunches};
use cudarc::driver::sys::CUstream;

/// The run's buffers with the workspace carved as the plan needs it.
fn buffers(
    plan: &MlaDecodePlan,
    b: &ffi::flashmha_mla_decode_bufs,
) -> crate::Result<DecodeBuffers> {
    let mut bufs = convert::mla_decode_bufs(b);
    (bufs.partial_o, bufs.partial_lse, bufs.partial_entropy) =
        plan.carve_workspace(convert::device_buf(b.workspace))?;
    Ok(bufs)
}

/// MLA decode on the shared C ABI path.
struct MlaDecode;

impl Op for MlaDecode {
    type Plan = MlaDecodePlan;
    type Bufs = ffi::flashmha_mla_decode_bufs;
    type Bound = MlaLaunches;

    fn bind(p: &MlaDecodePlan, b: &Self::Bufs) -> Result<MlaLaunches, CallError> {
        Ok(p.bind_checked(&buffers(p, b)?)?)
    }

    unsafe fn mirror(
        p: &MlaDecodePlan,
        m: &mut HostMirror,
        host: &Self::Bufs,
    ) -> Result<Self::Bufs, CallError> {
        let pr = &p.problem;
        let d = pr.as_decode();
        let (e, kv_e) = (pr.dtype.size(), d.kv_element_bytes());
        let (input, output) = (Role::Input, Role::Output);
        // SAFETY: the caller's contract for each buffer.
        unsafe {
            Ok(ffi::flashmha_mla_decode_bufs {
                q: m.mirror(host.q, e, input)?,
                kv_cache: m.mirror(host.kv_cache, kv_e, input)?,
                o: m.mirror(host.o, e, output)?,
                block_table: m.mirror(host.block_table, 4, input)?,
                cache_seqlens: m.mirror(host.cache_seqlens, 4, input)?,
                cu_seqlens_q: m.mirror(host.cu_seqlens_q, 4, input.when(d.is_varlen()))?,
                lse: m.mirror(host.lse, 4, output.when(pr.lse))?,
                entropy: m.mirror(host.entropy, 4, output.when(pr.entropy))?,
                alibi_slopes: m.mirror(host.alibi_slopes, 4, input.when(pr.alibi))?,
                head_gates: m.mirror(host.head_gates, 4, input.when(pr.gates))?,
                sinks: m.mirror(host.sinks, 4, input.when(pr.sinks))?,
                kv_scale: m.mirror(host.kv_scale, 4, input.when(pr.kv_dtype.is_fp8()))?,
                workspace: m.mirror(host.workspace, 4, Role::Scratch.when(p.combine.is_some()))?,
            })
        }
    }
}

/// The MLA decode's launches: the sm_90a kernel's pool map is encoded over the bound pool by the
/// backend that runs it (the driver's encoder on a context, the emulator's otherwise).
impl op::Bound for MlaLaunches {
    unsafe fn launch(&self, ctx: &CudaBackend, stream: CUstream) -> crate::Result<()> {
        use crate::backend::Backend;
        let l = self
            .to_launches(|name, desc, addr| ctx.encode_tensor_map(&name.to_string(), desc, addr))?;
        // SAFETY: the caller's contract; the launches were bound (every buffer checked), and the
        // map describes the bound pool over the extent `bind_checked` checked.
        unsafe { ctx.launch_raw(&l, stream) }
    }

    fn emulate(&self, m: &mut HostMirror) -> Result<(), CallError> {
        let l = self.to_launches(crate::backend::emulator::encode_bytes)?;
        let ran = l.iter().try_for_each(|l| m.launch(l));
        ran
    }
}

op::handle_entry_points!(MlaDecode, flashmha_mla_decode_plan, flashmha_mla_decode_bufs;
    run: flashmha_mla_decode_run, emulate: flashmha_emulate_mla_decode_run,
    destroy: flashmha_mla_decode_plan_destroy);

/// Plans for the context's device (its SM count the split heuristic's input; a Turing device
/// is a typed error) or, without one, for the default kernels.
fn make(
    s: &ffi::flashmha_mla_decode_shape,
    ctx: Option<&CudaBackend>,
) -> Result<MlaDecodePlan, CallError> {
    let problem = convert::mla_decode_problem(s)?;
    super::decode::plan_for(ctx, (s.split_mode, s.split_value), |target, policy| {
        MlaDecodePlan::new_for(target, &problem, policy)
    })
}

op::create_entry_points!(flashmha_mla_decode_shape, flashmha_mla_decode_plan, make;
    create: flashmha_mla_decode_plan_create,
    for_context: flashmha_mla_decode_plan_create_for_context);

/// `flashmha_status flashmha_mla_decode_plan_info(const flashmha_mla_decode_plan *plan,
/// flashmha_decode_info *out)`
///
/// # Safety
/// `plan` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn flashmha_mla_decode_plan_info(
    plan_handle: *const ffi::flashmha_mla_decode_plan,
    out: *mut ffi::flashmha_decode_info,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract; MLA decode handles are `Box<MlaDecodePlan>`.
        let p: &MlaDecodePlan = unsafe { handle(plan_handle, "plan")? };
        // SAFETY: the caller's contract for `out`.
        unsafe {
            write_out(out, || {
                super::decode::info(p.num_splits, p.split_keys, &p.workspace)
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::decode::SplitPolicy;
    use crate::ops::mla_decode::{MLA_D_QK, MLA_D_V};

    fn shape() -> ffi::flashmha_mla_decode_shape {
        ffi::flashmha_mla_decode_shape {
            dtype: ffi::FLASHMHA_DTYPE_BF16,
            batch: 3,
            seqlen_q: 1,
            heads_q: 16,
            num_pages: 40,
            page_size: 64,
            max_pages_per_seq: 8,
            split_mode: ffi::FLASHMHA_SPLIT_COUNT,
            split_value: 4,
            ..Default::default()
        }
    }

    fn create(
        s: &ffi::flashmha_mla_decode_shape,
    ) -> (flashmha_status, Option<ffi::flashmha_decode_info>) {
        super::super::decode::planned_info(
            s,
            flashmha_mla_decode_plan_create,
            flashmha_mla_decode_plan_info,
            flashmha_mla_decode_plan_destroy,
        )
    }

    #[test]
    fn a_zeroed_shape_is_the_rust_contiguous_problem_and_its_plan() {
        let s = shape();
        let problem = convert::mla_decode_problem(&s).unwrap();
        let want = crate::ops::mla_decode::MlaDecodeProblem::contiguous(
            crate::common::dtype::DType::Bf16,
            3,
            1,
            16,
            40,
            64,
            8,
        );
        assert_eq!(problem, want);
        let (code, info) = create(&s);
        assert_eq!(code, ffi::FLASHMHA_OK);
        let info = info.unwrap();
        let plan =
            MlaDecodePlan::new_for(crate::KernelTarget::Ampere, &want, SplitPolicy::Count(4))
                .unwrap();
        assert_eq!(info.num_splits, plan.num_splits);
        assert_eq!(info.workspace_elems as u64, plan.workspace.elems());
        // 4 splits x 3 rows x 16 heads, each a partial O of 512 and an LSE.
        assert_eq!(info.workspace_elems, 4 * 3 * 16 * (MLA_D_V + 1));
        assert_eq!(info.workspace_bytes, 4 * info.workspace_elems);
        // Explicit strides are taken as given: q rows of 576, o rows of 512.
        assert_eq!(problem.q_strides.row, (16 * MLA_D_QK) as i64);
        assert_eq!(problem.o_strides.row, (16 * MLA_D_V) as i64);
    }

    #[test]
    fn bad_shapes_are_typed_errors_never_a_panic() {
        let fields: [fn(&mut ffi::flashmha_mla_decode_shape); 8] = [
            |s| s.batch = usize::MAX,
            |s| s.seqlen_q = usize::MAX,
            |s| s.heads_q = usize::MAX,
            |s| s.num_pages = usize::MAX,
            |s| s.page_size = usize::MAX,
            |s| s.max_pages_per_seq = usize::MAX,
            |s| s.max_cache_len = usize::MAX,
            |s| s.heads_q = 0,
        ];
        for (i, set) in fields.iter().enumerate() {
            let mut s = shape();
            set(&mut s);
            let (code, info) = create(&s);
            assert_ne!(code, ffi::FLASHMHA_OK, "field {i}");
            assert_ne!(code, ffi::FLASHMHA_ERR_INTERNAL, "field {i}");
            assert!(info.is_none(), "field {i}");
        }
        let mut s = shape();
        s.kv_dtype = 7;
        assert_eq!(create(&s).0, ffi::FLASHMHA_ERR_INVALID_ARGUMENT);
        let mut s = shape();
        s.split_mode = ffi::FLASHMHA_SPLIT_AUTO;
        s.split_value = 0;
        assert_eq!(create(&s).0, ffi::FLASHMHA_ERR_INVALID_ARGUMENT);
        let mut s = shape();
        s.heads_q = 0;
        assert_eq!(create(&s).0, ffi::FLASHMHA_ERR_SHAPE);
    }
}
