//! The emulator backend: runs the same [`FwdPlan`] with the same params bytes and the same PTX
//! as the CUDA backend, on [`crate::emulator`], over buffers it allocates from host data.
//! Outputs are poisoned with NaN before the launch, so an element the kernel fails to write
//! cannot pass a comparison. Returns the outputs together with the emulator's findings and
//! counters.

use crate::abi::ParamsBytes;
use crate::buffers::FwdBuffers;
use crate::build_info;
use crate::emulator::{Device, DevicePtr, LaunchConfig, LaunchReport, Module};
use crate::error::{Error, Result};
use crate::plan::{plan_forward, FwdPlan};
use crate::problem::{FwdProblem, SeqLayout};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Bit pattern that is a NaN in f16, bf16 (all-ones exponent, non-zero mantissa) and, doubled,
/// in f32: what unwritten outputs read as.
pub const POISON_U16: u16 = 0xFFFF;

/// Host-side inputs of one forward call; element types are raw 16-bit patterns of the
/// problem's dtype (`half::f16::to_bits` / `half::bf16::to_bits`).
#[derive(Debug, Clone, Default)]
pub struct HostInputs {
    pub q: Vec<u16>,
    pub k: Vec<u16>,
    pub v: Vec<u16>,
    pub alibi_slopes: Option<Vec<f32>>,
    pub head_gates: Option<Vec<f32>>,
}

impl HostInputs {
    /// q, k, v of `problem` with values uniform in [-1, 1) rounded to its dtype (never all
    /// zeros), drawn from `seed`; no ALiBi slopes or gates.
    pub fn random(problem: &FwdProblem, seed: u64) -> HostInputs {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut draw = |n: usize| -> Vec<u16> {
            (0..n)
                .map(|_| problem.dtype.bits_from_f32(rng.random_range(-1.0..1.0)))
                .collect()
        };
        HostInputs {
            q: draw(problem.q.len),
            k: draw(problem.k.len),
            v: draw(problem.v.len),
            alibi_slopes: None,
            head_gates: None,
        }
    }
}

/// What the kernel wrote, read back.
#[derive(Debug, Clone)]
pub struct HostOutputs {
    /// Raw 16-bit patterns of the problem's dtype, same layout as the problem's `o`.
    pub o: Vec<u16>,
    pub lse: Option<Vec<f32>>,
    pub entropy: Option<Vec<f32>>,
}

/// One emulated forward: outputs, the plan it ran, and the emulator's report.
pub struct EmulatedRun {
    pub outputs: HostOutputs,
    pub plan: FwdPlan,
    pub report: LaunchReport,
}

/// The parsed PTX of the module defining `entry`, parsed once per process (parsing dominates
/// small launches). Shared by every emulated launch of the crate's kernels.
pub(crate) fn parsed_module(entry: &str) -> Result<Arc<Module>> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<Module>>>> = OnceLock::new();
    let image = build_info::module_of(entry).ok_or_else(|| Error::NoKernel(entry.to_string()))?;
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap().get(image.name) {
        return Ok(m.clone());
    }
    let module = Arc::new(Module::parse(image.ptx).map_err(|e| Error::Emulator(e.to_string()))?);
    cache.lock().unwrap().insert(image.name, module.clone());
    Ok(module)
}

/// Runs the forward kernel for `problem` on the emulator. `problem`'s buffer lengths must match
/// `inputs` (q, k, v) and its optional lengths say which optional outputs to produce.
pub fn forward(problem: &FwdProblem, inputs: &HostInputs) -> Result<EmulatedRun> {
    let lens = [
        ("q", problem.q.len, inputs.q.len()),
        ("k", problem.k.len, inputs.k.len()),
        ("v", problem.v.len, inputs.v.len()),
    ];
    for (name, want, got) in lens {
        if want != got {
            return Err(Error::Shape(format!(
                "{name}: the problem says {want} elements, the host buffer has {got}"
            )));
        }
    }
    let opt_len = |v: &Option<Vec<f32>>| v.as_ref().map(Vec::len);
    if opt_len(&inputs.alibi_slopes) != problem.alibi_len
        || opt_len(&inputs.head_gates) != problem.gates_len
    {
        return Err(Error::Shape(
            "alibi_slopes / head_gates lengths differ from the problem's".into(),
        ));
    }

    let mut dev = Device::new();
    let emu = |e: crate::emulator::EmuError| Error::Emulator(e.to_string());
    let put_u16 = |dev: &mut Device, data: &[u16]| -> Result<DevicePtr> {
        let ptr = dev.alloc(data.len() * 2);
        dev.write(ptr, bytemuck::cast_slice(data)).map_err(emu)?;
        Ok(ptr)
    };
    let q = put_u16(&mut dev, &inputs.q)?;
    let k = put_u16(&mut dev, &inputs.k)?;
    let v = put_u16(&mut dev, &inputs.v)?;
    let o = put_u16(&mut dev, &vec![POISON_U16; problem.o.len])?;
    let put_f32 = |dev: &mut Device, data: &[f32]| -> Result<DevicePtr> {
        let ptr = dev.alloc(data.len() * 4);
        dev.write(ptr, bytemuck::cast_slice(data)).map_err(emu)?;
        Ok(ptr)
    };
    let poisoned = |n: usize| vec![f32::from_bits(u32::MAX); n];
    let lse = problem
        .lse_len
        .map(|n| put_f32(&mut dev, &poisoned(n)))
        .transpose()?;
    let entropy = problem
        .entropy_len
        .map(|n| put_f32(&mut dev, &poisoned(n)))
        .transpose()?;
    let alibi = inputs
        .alibi_slopes
        .as_deref()
        .map(|s| put_f32(&mut dev, s))
        .transpose()?;
    let gates = inputs
        .head_gates
        .as_deref()
        .map(|s| put_f32(&mut dev, s))
        .transpose()?;
    let (cu_q, cu_k) = match &problem.layout {
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => {
            let mut put_i32 = |data: &[i32]| -> Result<DevicePtr> {
                let ptr = dev.alloc(data.len() * 4);
                dev.write(ptr, bytemuck::cast_slice(data)).map_err(emu)?;
                Ok(ptr)
            };
            (Some(put_i32(cu_seqlens_q)?), Some(put_i32(cu_seqlens_k)?))
        }
        SeqLayout::Padded { .. } => (None, None),
    };
    let addr = |p: Option<DevicePtr>| p.map_or(0, |p| p.0);
    let bufs = FwdBuffers {
        q: q.0,
        k: k.0,
        v: v.0,
        o: o.0,
        lse: addr(lse),
        entropy: addr(entropy),
        alibi_slopes: addr(alibi),
        head_gates: addr(gates),
        cu_seqlens_q: addr(cu_q),
        cu_seqlens_k: addr(cu_k),
    };
    let plan = plan_forward(problem, &bufs)?;
    let module = parsed_module(plan.kernel.entry)?;
    let cfg = LaunchConfig {
        grid: plan.grid,
        block: plan.block,
        dynamic_smem_bytes: plan.dynamic_smem_bytes,
    };
    let report = dev
        .launch(&module, plan.kernel.entry, &cfg, plan.params.as_bytes())
        .map_err(emu)?;

    let read_u16 = |ptr: DevicePtr, n: usize| -> Result<Vec<u16>> {
        let bytes = dev.read(ptr, n * 2).map_err(emu)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    };
    let read_f32 = |ptr: DevicePtr, n: usize| -> Result<Vec<f32>> {
        let bytes = dev.read(ptr, n * 4).map_err(emu)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    };
    let outputs = HostOutputs {
        o: read_u16(o, problem.o.len)?,
        lse: lse
            .zip(problem.lse_len)
            .map(|(p, n)| read_f32(p, n))
            .transpose()?,
        entropy: entropy
            .zip(problem.entropy_len)
            .map(|(p, n)| read_f32(p, n))
            .transpose()?,
    };
    Ok(EmulatedRun {
        outputs,
        plan,
        report,
    })
}
