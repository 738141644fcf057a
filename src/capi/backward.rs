//! The C ABI of the backward (`flashmha_bwd_*`): a plan handle (a boxed [`BwdPlan`] made by
//! `BwdPlan::new_for`) run on a context or on the emulator through the shared path of `op.rs`;
//! both check the buffers with [`BwdPlan::bind`] before any launch. The three launches (delta,
//! main kernel, dQ conversion) go on the caller's stream in order.

use super::convert;
use super::ffi::{self, flashmha_status};
use super::host::{HostMirror, Role};
use super::op::{self, Bound, Op};
use super::plan::{handle, write_out};
use super::status::{guard, CallError};
use crate::common::launch::{Launch, Launches};
use crate::cuda::CudaBackend;
use crate::ops::backward::BwdPlan;
use cudarc::driver::sys::CUstream;

/// The backward on the shared C ABI path.
struct Backward;

/// The backward's three bound launches: delta (and the dQ accumulator's zeroing), the main
/// kernel, the dQ conversion.
struct BwdLaunch([Launch; 3]);

impl Bound for BwdLaunch {
    unsafe fn launch(&self, ctx: &CudaBackend, stream: CUstream) -> crate::Result<()> {
        let [dot, main, convert] = self.0;
        // SAFETY: the caller's contract; the launches were bound (every buffer checked), and
        // the three are queued in order on the one stream.
        unsafe {
            ctx.launch_raw(&Launches::two(dot, Some(main)), stream)?;
            ctx.launch_raw(&Launches::one(convert), stream)
        }
    }

    fn emulate(&self, m: &mut HostMirror) -> Result<(), CallError> {
        self.0.iter().try_for_each(|l| m.launch(l))
    }
}

impl Op for Backward {
    type Plan = BwdPlan;
    type Bufs = ffi::flashmha_bwd_bufs;
    type Bound = BwdLaunch;

    fn bind(p: &BwdPlan, b: &Self::Bufs) -> Result<BwdLaunch, CallError> {
        Ok(BwdLaunch(p.bind(&convert::bwd_bufs(b)?)?))
    }

    unsafe fn mirror(
        p: &BwdPlan,
        m: &mut HostMirror,
        host: &Self::Bufs,
    ) -> Result<Self::Bufs, CallError> {
        let e = p.dtype().size();
        use Role::{Input, Output, Scratch};
        // SAFETY: the caller's contract for each buffer.
        unsafe {
            Ok(ffi::flashmha_bwd_bufs {
                q: m.mirror(host.q, e, Input)?,
                k: m.mirror(host.k, e, Input)?,
                v: m.mirror(host.v, e, Input)?,
                o: m.mirror(host.o, e, Input)?,
                d_o: m.mirror(host.d_o, e, Input)?,
                lse: m.mirror(host.lse, 4, Input)?,
                dq: m.mirror(host.dq, e, Output)?,
                dk: m.mirror(host.dk, e, Output)?,
                dv: m.mirror(host.dv, e, Output)?,
                workspace: m.mirror(host.workspace, 4, Scratch)?,
                cu_seqlens_q: m.mirror(host.cu_seqlens_q, 4, Input)?,
                cu_seqlens_k: m.mirror(host.cu_seqlens_k, 4, Input)?,
                alibi_slopes: m.mirror(host.alibi_slopes, 4, Input)?,
                head_gates: m.mirror(host.head_gates, 4, Input)?,
                d_head_gates: m.mirror(host.d_head_gates, 4, Output)?,
                sinks: m.mirror(host.sinks, 4, Input)?,
                d_sinks: m.mirror(host.d_sinks, 4, Output)?,
            })
        }
    }
}

op::handle_entry_points!(Backward, flashmha_bwd_plan, flashmha_bwd_bufs;
    run: flashmha_bwd_run, emulate: flashmha_emulate_bwd_run,
    destroy: flashmha_bwd_plan_destroy);

/// Plans for the context's device (Turing: a typed error) or, without one, for the sm_80+
/// kernels.
fn make(s: &ffi::flashmha_bwd_shape, ctx: Option<&CudaBackend>) -> Result<BwdPlan, CallError> {
    let (dtype, shape) = convert::bwd_shape(s)?;
    Ok(BwdPlan::new_for(op::target(ctx), dtype, &shape)?)
}

op::create_entry_points!(flashmha_bwd_shape, flashmha_bwd_plan, make;
    create: flashmha_bwd_plan_create, for_context: flashmha_bwd_plan_create_for_context);

/// `flashmha_status flashmha_bwd_plan_workspace_len(const flashmha_bwd_plan *plan, size_t *out)`
///
/// # Safety
/// `plan` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn flashmha_bwd_plan_workspace_len(
    plan: *const ffi::flashmha_bwd_plan,
    out: *mut usize,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract; backward handles are `Box<BwdPlan>`.
        let p: &BwdPlan = unsafe { handle(plan, "plan")? };
        // SAFETY: the caller's contract for `out`.
        unsafe { write_out(out, || Ok(p.workspace_len())) }
    })
}
