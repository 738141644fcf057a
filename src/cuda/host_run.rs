//! Runs one forward call on a real GPU from host data: uploads inputs, poisons outputs with
//! NaN, launches through [`CudaBackend::forward`], waits, and reads outputs back. For checks and
//! benchmarks only; servers call [`CudaBackend::forward`] on their own device buffers.

use super::{CudaBackend, FwdSlices};
use crate::dtype::DType;
use crate::element::Element;
use crate::emulated::{HostInputs, HostOutputs, POISON_U16};
use crate::error::Result;
use crate::problem::{FwdProblem, SeqLayout};
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
    let stream = backend.context().default_stream();
    let up = |v: &[u16]| -> Result<CudaSlice<T>> {
        // Host data holds the dtype's bit patterns: the same bytes as T.
        Ok(stream.clone_htod(bytemuck::cast_slice::<u16, T>(v))?)
    };
    let q = up(&inputs.q)?;
    let k = up(&inputs.k)?;
    let v = up(&inputs.v)?;
    let mut o = up(&vec![POISON_U16; problem.o.len])?;
    let poisoned = |n: usize| vec![f32::from_bits(u32::MAX); n];
    let mut lse = problem
        .lse_len
        .map(|n| stream.clone_htod(&poisoned(n)))
        .transpose()?;
    let mut entropy = problem
        .entropy_len
        .map(|n| stream.clone_htod(&poisoned(n)))
        .transpose()?;
    let alibi = inputs
        .alibi_slopes
        .as_deref()
        .map(|s| stream.clone_htod(s))
        .transpose()?;
    let gates = inputs
        .head_gates
        .as_deref()
        .map(|s| stream.clone_htod(s))
        .transpose()?;
    let (cu_q, cu_k) = match &problem.layout {
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => (
            Some(stream.clone_htod(cu_seqlens_q)?),
            Some(stream.clone_htod(cu_seqlens_k)?),
        ),
        SeqLayout::Padded { .. } => (None, None),
    };
    backend.forward(
        &stream,
        problem,
        FwdSlices {
            q: &q,
            k: &k,
            v: &v,
            o: &mut o,
            lse: lse.as_mut(),
            entropy: entropy.as_mut(),
            alibi_slopes: alibi.as_ref(),
            head_gates: gates.as_ref(),
            cu_seqlens_q: cu_q.as_ref(),
            cu_seqlens_k: cu_k.as_ref(),
        },
    )?;
    stream.synchronize()?;
    Ok(HostOutputs {
        o: bytemuck::cast_slice::<T, u16>(&stream.clone_dtoh(&o)?).to_vec(),
        lse: lse.map(|s| stream.clone_dtoh(&s)).transpose()?,
        entropy: entropy.map(|s| stream.clone_dtoh(&s)).transpose()?,
    })
}
