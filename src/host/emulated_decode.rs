//! Decode, MLA decode, merge_states and KV append from host data on the emulator: the runner's functions
//! ([`super::runner`]) on a fresh [`EmulatorBackend`] (for a decode, with the options of the
//! caller's [`Device`]: [`decode_on`]), plus the stacked-merge and 16-bit-append shorthands the
//! tests use.

use super::runner;
pub use super::runner::{
    AppendInputs, AppendTarget, DecodeHostInputs, DecodeRun, HostPools, MergeHostInputs, MergeRun,
};
use crate::backend::emulator::{EmulatorBackend, EntryTraces};
use crate::common::dtype::DType;
use crate::common::error::Result;
use crate::common::target::KernelTarget;
use crate::emulator::{Device, LaunchReport};
use crate::ops::decode::plan::DecodePlan;
use crate::ops::decode::problem::DecodeProblem;
use crate::ops::merge::{MergePlan, MergeProblem, MergeStates, StatsLayout};
use crate::ops::mla_decode::MlaDecodePlan;

/// Runs `plan` on a fresh emulated device over `inputs`.
pub fn decode(plan: &DecodePlan, inputs: &DecodeHostInputs) -> Result<DecodeRun> {
    runner::decode(&EmulatorBackend::new(plan.kernel.target), plan, inputs)
}

/// Runs an MLA decode plan on a fresh emulated device over `inputs` (as
/// [`super::runner::mla_decode`] says: the latent pool in `k_cache` / `k_cache_fp8`).
pub fn mla_decode(plan: &MlaDecodePlan, inputs: &DecodeHostInputs) -> Result<DecodeRun> {
    runner::mla_decode(&EmulatorBackend::new(KernelTarget::Ampere), plan, inputs)
}

/// [`decode`] on a fresh emulated device with the options of `dev` (e.g. race checks switched
/// off for speed); `dev`'s memory is not used.
pub fn decode_on(
    dev: &mut Device,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<DecodeRun> {
    Ok(decode_traced(dev, plan, inputs, &[])?.0)
}

/// [`decode_on`], also recording the instruction traces of the CTAs `ctas` (grid
/// coordinates) of each launch for the SM simulation: the traces by entry, in launch order.
pub fn decode_traced(
    dev: &mut Device,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
    ctas: &[[u32; 3]],
) -> Result<(DecodeRun, EntryTraces)> {
    let backend = EmulatorBackend::new(plan.kernel.target);
    backend.set_options(*dev.options_mut());
    backend.trace_ctas(ctas);
    let run = runner::decode(&backend, plan, inputs)?;
    Ok((run, backend.take_traces()))
}

/// Runs a merge plan on a fresh emulated device.
pub fn merge(plan: &MergePlan, inputs: &MergeHostInputs<'_>) -> Result<MergeRun> {
    runner::merge(&EmulatorBackend::new(KernelTarget::Ampere), plan, inputs)
}

/// Merges `num_states` stacked states of `dtype` on the emulator: `o_states: [num_states, rows,
/// heads, d]` (raw bits), `lse_states: [num_states, rows, heads]`; the merged LSE comes back as
/// `[heads, rows]`.
pub fn merge_states(
    dtype: DType,
    o_states: &[u16],
    lse_states: &[f32],
    num_states: usize,
    rows: usize,
    heads: usize,
    head_dim: usize,
) -> Result<MergeRun> {
    // Inputs [rows, heads] per state; the output LSE [heads, rows] (as the decode writes it):
    // the kernel takes the two layouts separately, the plan one, so transpose on the host.
    let plan = MergePlan::new(&MergeProblem {
        dtype,
        states: MergeStates::Stacked { num_states },
        rows,
        heads,
        head_dim,
        lse_layout: StatsLayout::RowsHeads,
    })?;
    let mut run = merge(
        &plan,
        &MergeHostInputs {
            o_states,
            lse_states,
            o_b: None,
            lse_b: None,
        },
    )?;
    let mut heads_rows = vec![0f32; run.lse.len()];
    for r in 0..rows {
        for h in 0..heads {
            heads_rows[h * rows + r] = run.lse[r * heads + h];
        }
    }
    run.lse = heads_rows;
    Ok(run)
}

/// Appends `num_tokens` K/V rows (`[num_tokens, hkv, d]` contiguous raw bits of `p.dtype`) into
/// copies of the pools of `p` at `slot_mapping` (16-bit pages); returns the pools after the
/// launch and the report.
pub fn kv_append(
    p: &DecodeProblem,
    k_cache: &[u16],
    v_cache: &[u16],
    k_new: &[u16],
    v_new: &[u16],
    slot_mapping: &[i32],
) -> Result<(Vec<u16>, Vec<u16>, LaunchReport)> {
    let pools = HostPools::Bits16 {
        k: k_cache.to_vec(),
        v: v_cache.to_vec(),
    };
    let slots = AppendTarget::Slots(slot_mapping);
    match kv_append_into_for(KernelTarget::Ampere, p, &pools, k_new, v_new, slots)? {
        (HostPools::Bits16 { k, v }, report) => Ok((k, v, report)),
        _ => unreachable!("16-bit pools come back as 16-bit pools"),
    }
}

/// [`runner::kv_append`] with the append kernel of `kernels` (Turing: f16 into 16-bit pages) on
/// a fresh emulated device; the report of its launch (empty for zero tokens, which launch
/// nothing and return the pools unchanged).
pub fn kv_append_into_for(
    kernels: KernelTarget,
    p: &DecodeProblem,
    pools: &HostPools,
    k_new: &[u16],
    v_new: &[u16],
    target: AppendTarget,
) -> Result<(HostPools, LaunchReport)> {
    let inputs = AppendInputs {
        pools,
        k_new,
        v_new,
        target,
    };
    let (pools, mut reports) = runner::kv_append(&EmulatorBackend::new(kernels), p, &inputs)?;
    Ok((pools, reports.pop().unwrap_or_default()))
}
