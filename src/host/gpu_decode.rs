//! One decode call from host data on a real GPU through [`crate::api::Attention::decode`]: uploads the
//! inputs, poisons the outputs and the workspace with NaN, runs the plan on the default stream,
//! waits, and reads the outputs back. For checks only (the GPU test of decode); servers call the
//! backend on their own device buffers.

use crate::api::{Attention, DecodeArgs};
use crate::backend::cuda::{upload_opt, CudaBackend};
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{driver_error, Result, TensorName};
use crate::host::emulated_decode::DecodeHostInputs;
use crate::ops::decode::fp8::check_scales;
use crate::ops::decode::plan::DecodePlan;

/// What a GPU decode produced: `o` raw bits in the problem's layout, LSE / entropy as written.
pub struct GpuDecodeOutputs {
    pub o: Vec<u16>,
    pub lse: Option<Vec<f32>>,
    pub entropy: Option<Vec<f32>>,
}

/// Runs `plan` over `inputs` on `backend`'s device.
pub fn decode_host(
    backend: &CudaBackend,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<GpuDecodeOutputs> {
    match plan.problem.dtype {
        DType::F16 => run::<half::f16>(backend, plan, inputs),
        DType::Bf16 => run::<half::bf16>(backend, plan, inputs),
    }
}

fn run<T: Element>(
    backend: &CudaBackend,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<GpuDecodeOutputs> {
    let p = &plan.problem;
    if p.kv_dtype.is_fp8() {
        // Host scales are checked before anything is uploaded, as on the emulator.
        check_scales(TensorName::KScales, &inputs.k_scales)?;
        check_scales(TensorName::VScales, &inputs.v_scales)?;
    }
    let stream = backend.context().default_stream();
    let bits = |v: &[u16]| -> Vec<T> { bytemuck::cast_slice::<u16, T>(v).to_vec() };
    let q = stream.clone_htod(&bits(&inputs.q)).map_err(driver_error)?;
    // 16-bit pools as T, or FP8 codes with their scales (the other pair stays empty).
    let k = stream
        .clone_htod(&bits(&inputs.k_cache))
        .map_err(driver_error)?;
    let v = stream
        .clone_htod(&bits(&inputs.v_cache))
        .map_err(driver_error)?;
    let up_or_empty = |x: &[u8]| stream.clone_htod(if x.is_empty() { &[0u8][..] } else { x });
    let k_codes = up_or_empty(&inputs.k_cache_fp8).map_err(driver_error)?;
    let v_codes = up_or_empty(&inputs.v_cache_fp8).map_err(driver_error)?;
    let scales = |x: &[f32]| stream.clone_htod(if x.is_empty() { &[0f32][..] } else { x });
    let k_scales = scales(&inputs.k_scales).map_err(driver_error)?;
    let v_scales = scales(&inputs.v_scales).map_err(driver_error)?;
    let mut o = stream
        .clone_htod(&bits(&vec![0xFFFF; p.q_span(&p.o_strides) as usize]))
        .map_err(driver_error)?;
    let table = stream
        .clone_htod(&inputs.block_table)
        .map_err(driver_error)?;
    let lens = stream
        .clone_htod(&inputs.cache_seqlens)
        .map_err(driver_error)?;
    let stats = p.row_stats_len();
    let nan = |n: usize| vec![f32::NAN; n.max(1)];
    let mut lse = p
        .lse
        .then(|| stream.clone_htod(&nan(stats)))
        .transpose()
        .map_err(driver_error)?;
    let mut entropy = p
        .entropy
        .then(|| stream.clone_htod(&nan(stats)))
        .transpose()
        .map_err(driver_error)?;
    let cu = upload_opt(&stream, inputs.cu_seqlens_q.as_deref())?;
    let alibi = upload_opt(&stream, inputs.alibi_slopes.as_deref())?;
    let gates = upload_opt(&stream, inputs.head_gates.as_deref())?;
    let mut ws = stream
        .clone_htod(&nan(plan.workspace.elems() as usize))
        .map_err(driver_error)?;
    let args = if p.kv_dtype.is_fp8() {
        DecodeArgs::fp8(
            &q, &k_codes, &v_codes, &k_scales, &v_scales, &mut o, &table, &lens,
        )
    } else {
        DecodeArgs::new(&q, &k, &v, &mut o, &table, &lens)
    };
    let mut args = args.workspace(&mut ws);
    if let Some(c) = cu.as_ref() {
        args = args.cu_seqlens_q(c);
    }
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
    backend.decode(&stream, plan, args)?;
    stream.synchronize().map_err(driver_error)?;
    let o_host: Vec<T> = stream.clone_dtoh(&o).map_err(driver_error)?;
    Ok(GpuDecodeOutputs {
        o: bytemuck::cast_slice::<T, u16>(&o_host).to_vec(),
        lse: lse
            .map(|l| {
                stream.clone_dtoh(&l).map(|mut v| {
                    v.truncate(stats);
                    v
                })
            })
            .transpose()
            .map_err(driver_error)?,
        entropy: entropy
            .map(|e| {
                stream.clone_dtoh(&e).map(|mut v| {
                    v.truncate(stats);
                    v
                })
            })
            .transpose()
            .map_err(driver_error)?,
    })
}
