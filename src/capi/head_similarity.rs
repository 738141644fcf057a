//! The C ABI of head similarity. The Rust side has no plan/bind split
//! (`plan_head_similarity(problem, buffers)` validates both and plans in O(1)), so the shape is
//! planned at each call on the shared path of `op.rs`: on a context
//! (`CudaBackend::head_similarity_raw`) or on the emulator.

use super::convert;
use super::ffi;
use super::host::{HostMirror, Role};
use super::op::{self, Bound, Op};
use super::status::CallError;
use crate::cuda::CudaBackend;
use crate::ops::head_similarity::{
    plan_head_similarity, HeadSimBuffers, HeadSimPlan, HeadSimProblem,
};
use cudarc::driver::sys::CUstream;

/// Head similarity on the shared C ABI path; the shape is the plan (planned per call).
struct HeadSimilarity;

impl Op for HeadSimilarity {
    type Plan = ffi::flashmha_head_similarity_shape;
    type Bufs = ffi::flashmha_head_similarity_bufs;
    type Bound = BoundHeadSim;

    fn bind(s: &Self::Plan, b: &Self::Bufs) -> Result<Self::Bound, CallError> {
        let problem = convert::head_sim_problem(s, b)?;
        let bufs = HeadSimBuffers {
            o: b.o.data as u64,
            gram: b.gram.data as u64,
        };
        let plan = plan_head_similarity(&problem, &bufs)?;
        Ok(BoundHeadSim {
            problem,
            bufs,
            plan,
        })
    }

    unsafe fn mirror(
        s: &Self::Plan,
        m: &mut HostMirror,
        host: &Self::Bufs,
    ) -> Result<Self::Bufs, CallError> {
        let e = convert::dtype(s.dtype)?.size();
        // SAFETY: the caller's contract (o readable, gram writable). gram is read too: the
        // entries past heads² keep the caller's values, as on the GPU path.
        unsafe {
            Ok(ffi::flashmha_head_similarity_bufs {
                o: m.mirror(host.o, e, Role::Input)?,
                gram: m.mirror(host.gram, 4, Role::InOut)?,
            })
        }
    }
}

/// A head-similarity call validated against its buffers.
struct BoundHeadSim {
    problem: HeadSimProblem,
    bufs: HeadSimBuffers,
    plan: HeadSimPlan,
}

impl Bound for BoundHeadSim {
    unsafe fn launch(&self, ctx: &CudaBackend, stream: CUstream) -> crate::Result<()> {
        // SAFETY: the caller's contract; `head_similarity_raw` validates the problem and both
        // buffers again, zeroes the sums and launches.
        unsafe { ctx.head_similarity_raw(&self.problem, self.bufs.o, self.bufs.gram, stream) }
    }

    fn emulate(&self, m: &mut HostMirror) -> Result<(), CallError> {
        // The kernel accumulates into the heads² sums: zero them, as the GPU path does.
        let heads = self.problem.num_heads;
        let gram_at = crate::emulator::DevicePtr(self.plan.params.gram as u64);
        m.device()
            .write(gram_at, &vec![0u8; heads * heads * 4])
            .map_err(crate::Error::from)?;
        m.launch(&self.plan.launch())
    }
}

op::run_entry_points!(HeadSimilarity,
    shape: flashmha_head_similarity_shape => ffi::flashmha_head_similarity_shape,
    flashmha_head_similarity_bufs, op::as_is;
    run: flashmha_head_similarity, emulate: flashmha_emulate_head_similarity);
