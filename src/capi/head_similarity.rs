//! The C ABI of head similarity, on the shared path of `op.rs`: the shape is planned at each
//! call ([`HeadSimPlan`] is O(1)) and bound to the caller's buffers; the bound call zeroes
//! gram's sums and launches, on a context or on the emulator.

use super::convert;
use super::ffi;
use super::host::{HostMirror, Role};
use super::op::{self, Bound, Op};
use super::status::CallError;
use crate::common::binding::DevBuf;
use crate::common::launch::Launches;
use crate::cuda::CudaBackend;
use crate::ops::head_similarity::{HeadSimBuffers, HeadSimLaunch, HeadSimPlan};
use cudarc::driver::sys::CUstream;

/// Head similarity on the shared C ABI path; the shape is the plan (planned per call).
struct HeadSimilarity;

impl Op for HeadSimilarity {
    type Plan = ffi::flashmha_head_similarity_shape;
    type Bufs = ffi::flashmha_head_similarity_bufs;
    type Bound = HeadSimLaunch;

    fn bind(s: &Self::Plan, b: &Self::Bufs) -> Result<Self::Bound, CallError> {
        // The Ampere kernels (Hopper's too); a Turing context has no head-similarity kernel
        // and its launch is a typed TargetMismatch.
        let plan = HeadSimPlan::new(&convert::head_sim_problem(s)?)?;
        Ok(plan.bind(&HeadSimBuffers {
            o: DevBuf::new(b.o.data as u64, b.o.len),
            gram: DevBuf::new(b.gram.data as u64, b.gram.len),
        })?)
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

impl Bound for HeadSimLaunch {
    unsafe fn launch(&self, ctx: &CudaBackend, stream: CUstream) -> crate::Result<()> {
        // SAFETY: `bind` checked both buffers against the plan; the caller's contract keeps
        // them allocated (device memory of the context) until the stream has run.
        unsafe {
            ctx.zero_raw(self.zero.addr, self.zero_bytes, stream)?;
            ctx.launch_raw(&Launches::one(self.launch), stream)
        }
    }

    fn emulate(&self, m: &mut HostMirror) -> Result<(), CallError> {
        // The kernel accumulates into the heads² sums: zero them, as the GPU path does.
        let zeros = vec![0u8; self.zero_bytes as usize];
        m.device()
            .write(crate::emulator::DevicePtr(self.zero.addr), &zeros)
            .map_err(crate::Error::from)?;
        m.launch(&self.launch)
    }
}

op::run_entry_points!(HeadSimilarity,
    shape: flashmha_head_similarity_shape => ffi::flashmha_head_similarity_shape,
    flashmha_head_similarity_bufs, op::as_is;
    run: flashmha_head_similarity, emulate: flashmha_emulate_head_similarity);
