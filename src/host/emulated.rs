//! One forward problem from host data on the emulator backend: allocates an emulator device,
//! uploads inputs, poisons outputs with NaN (so an element the kernel fails to write cannot
//! pass a comparison), plans the problem's shape, runs it through
//! [`crate::backend::emulator`] and reads the outputs back, with the emulator's findings and
//! counters.

use super::problem::{FwdProblem, SeqLayout};
use super::{poisoned_f32, POISON_U16};
pub use super::{HostInputs, HostOutputs};
use crate::backend::emulator::{self as backend, dev_buf};
use crate::common::binding::DevBuf;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::Result;
use crate::emulator::{Device, DevicePtr, LaunchReport};
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::plan::{FwdLaunch, FwdPlan};

/// One emulated forward: outputs, the launch it ran, and the emulator's report.
pub struct EmulatedRun {
    pub outputs: HostOutputs,
    pub launch: FwdLaunch,
    pub report: LaunchReport,
}

/// Runs the forward kernel for `problem` on the emulator. `inputs` must match the problem's
/// lengths; its optional lengths say which optional outputs to produce.
pub fn forward(problem: &FwdProblem, inputs: &HostInputs) -> Result<EmulatedRun> {
    match problem.dtype {
        DType::F16 => forward_typed::<half::f16>(problem, inputs),
        DType::Bf16 => forward_typed::<half::bf16>(problem, inputs),
    }
}

fn forward_typed<T: Element>(problem: &FwdProblem, inputs: &HostInputs) -> Result<EmulatedRun> {
    inputs.check_against(problem)?;
    let plan = FwdPlan::<T>::new_for(problem.target, &problem.shape()?)?;
    let mut dev = Device::new();
    let put = |dev: &mut Device, bytes: &[u8]| -> Result<DevicePtr> {
        let ptr = dev.alloc(bytes.len());
        dev.write(ptr, bytes)?;
        Ok(ptr)
    };
    let q = put(&mut dev, bytemuck::cast_slice(&inputs.q))?;
    let k = put(&mut dev, bytemuck::cast_slice(&inputs.k))?;
    let v = put(&mut dev, bytemuck::cast_slice(&inputs.v))?;
    let o = put(
        &mut dev,
        bytemuck::cast_slice(&vec![POISON_U16; problem.o.len]),
    )?;
    let put_f32 = |dev: &mut Device, data: &[f32]| put(dev, bytemuck::cast_slice(data));
    let lse = problem
        .lse_len
        .map(|n| put_f32(&mut dev, &poisoned_f32(n)).map(|p| dev_buf(p, n)))
        .transpose()?;
    let entropy = problem
        .entropy_len
        .map(|n| put_f32(&mut dev, &poisoned_f32(n)).map(|p| dev_buf(p, n)))
        .transpose()?;
    let alibi = inputs
        .alibi_slopes
        .as_deref()
        .map(|s| put_f32(&mut dev, s).map(|p| dev_buf(p, s.len())))
        .transpose()?;
    let gates = inputs
        .head_gates
        .as_deref()
        .map(|s| put_f32(&mut dev, s).map(|p| dev_buf(p, s.len())))
        .transpose()?;
    let (cu_seqlens_q, cu_seqlens_k) = match &problem.layout {
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => {
            let cq = put(&mut dev, bytemuck::cast_slice(cu_seqlens_q))?;
            let ck = put(&mut dev, bytemuck::cast_slice(cu_seqlens_k))?;
            (
                dev_buf(cq, cu_seqlens_q.len()),
                dev_buf(ck, cu_seqlens_k.len()),
            )
        }
        SeqLayout::Padded { .. } => (DevBuf::ABSENT, DevBuf::ABSENT),
    };
    let bufs = FwdBufs {
        q: dev_buf(q, inputs.q.len()),
        k: dev_buf(k, inputs.k.len()),
        v: dev_buf(v, inputs.v.len()),
        o: dev_buf(o, problem.o.len),
        lse: lse.unwrap_or_default(),
        entropy: entropy.unwrap_or_default(),
        alibi_slopes: alibi.unwrap_or_default(),
        head_gates: gates.unwrap_or_default(),
        cu_seqlens_q,
        cu_seqlens_k,
    };
    let (launch, report) = backend::run(&mut dev, &plan, &bufs)?;
    // Lengths here come from host Vecs, so `len * 4` fits (the Vec's bytes did).
    let read_f32 = |b: Option<DevBuf>| -> Result<Option<Vec<f32>>> {
        b.map(|b| -> Result<Vec<f32>> {
            Ok(bytemuck::pod_collect_to_vec(
                &dev.read(DevicePtr(b.addr), b.len as usize * 4)?,
            ))
        })
        .transpose()
    };
    let outputs = HostOutputs {
        o: bytemuck::pod_collect_to_vec(&dev.read(o, problem.o.len * 2)?),
        lse: read_f32(lse)?,
        entropy: read_f32(entropy)?,
    };
    Ok(EmulatedRun {
        outputs,
        launch,
        report,
    })
}
