//! One forward problem from host data on a real GPU: uploads inputs, poisons outputs with NaN,
//! plans and runs through [`crate::api::Attention::run`], waits, and reads outputs back. For checks and
//! benchmarks only; servers call the backend on their own device buffers.

use super::problem::{FwdProblem, SeqLayout};
use super::{poisoned_f32, HostInputs, HostOutputs, POISON_U16};
use crate::api::{Attention, FwdArgs};
use crate::backend::cuda::{upload_opt, CudaBackend};
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{driver_error, Result};
use crate::ops::forward::plan::FwdPlan;
use cudarc::driver::CudaSlice;

/// Uploads, runs and downloads one forward call on `backend`'s device.
pub fn forward_host(
    backend: &CudaBackend,
    problem: &FwdProblem,
    inputs: &HostInputs,
) -> Result<HostOutputs> {
    match problem.dtype {
        DType::F16 => run::<half::f16>(backend, problem, inputs),
        DType::Bf16 => run::<half::bf16>(backend, problem, inputs),
    }
}

fn run<T: Element>(
    backend: &CudaBackend,
    problem: &FwdProblem,
    inputs: &HostInputs,
) -> Result<HostOutputs> {
    inputs.check_against(problem)?;
    let plan = FwdPlan::<T>::new_for(problem.target, &problem.shape()?)?;
    let stream = backend.context().default_stream();
    let up = |v: &[u16]| -> Result<CudaSlice<T>> {
        // Host data holds the dtype's bit patterns: the same bytes as T.
        stream
            .clone_htod(bytemuck::cast_slice::<u16, T>(v))
            .map_err(driver_error)
    };
    let q = up(&inputs.q)?;
    let k = up(&inputs.k)?;
    let v = up(&inputs.v)?;
    let mut o = up(&vec![POISON_U16; problem.o.len])?;
    let mut lse = problem
        .lse_len
        .map(|n| stream.clone_htod(&poisoned_f32(n)))
        .transpose()
        .map_err(driver_error)?;
    let mut entropy = problem
        .entropy_len
        .map(|n| stream.clone_htod(&poisoned_f32(n)))
        .transpose()
        .map_err(driver_error)?;
    let alibi = upload_opt(&stream, inputs.alibi_slopes.as_deref())?;
    let gates = upload_opt(&stream, inputs.head_gates.as_deref())?;
    let cu = match &problem.layout {
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => Some((
            stream.clone_htod(cu_seqlens_q).map_err(driver_error)?,
            stream.clone_htod(cu_seqlens_k).map_err(driver_error)?,
        )),
        SeqLayout::Padded { .. } => None,
    };
    let mut args = FwdArgs::new(&q, &k, &v, &mut o);
    if let Some(l) = lse.as_mut() {
        args = args.lse(l);
    }
    if let Some(e) = entropy.as_mut() {
        args = args.entropy(e);
    }
    if let Some(a) = alibi.as_ref() {
        args = args.alibi_slopes(a);
    }
    if let Some(g) = gates.as_ref() {
        args = args.head_gates(g);
    }
    if let Some((cq, ck)) = cu.as_ref() {
        args = args.cu_seqlens(cq, ck);
    }
    backend.run(&stream, &plan, args)?;
    stream.synchronize().map_err(driver_error)?;
    Ok(HostOutputs {
        o: bytemuck::cast_slice::<T, u16>(&stream.clone_dtoh(&o).map_err(driver_error)?).to_vec(),
        lse: lse
            .map(|s| stream.clone_dtoh(&s))
            .transpose()
            .map_err(driver_error)?,
        entropy: entropy
            .map(|s| stream.clone_dtoh(&s))
            .transpose()
            .map_err(driver_error)?,
    })
}
