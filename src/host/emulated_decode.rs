//! Runs decode plans on the emulator from host data: allocates exactly the buffers the problem
//! describes (the page pools hold `num_pages` pages and nothing more, so a stray read past them
//! is an out-of-bounds finding), poisons every output and the workspace with NaN, launches the
//! decode kernel and, if planned, the split combine, with the same params bytes the CUDA backend
//! would pass, and returns the outputs with both launches' reports.

use crate::common::binding::DevBuf;
use crate::common::error::{Dim, Error, Result, TensorName};
use crate::common::launch::Launch;
use crate::common::target::KernelTarget;
use crate::emulator::{Device, DevicePtr, LaunchReport};
use crate::ops::decode::fp8::check_scales;
use crate::ops::decode::plan::{DecodeBuffers, DecodePlan};
use crate::ops::kv_append::{AppendIndex, KvAppendBuffers, KvAppendPlan};
use crate::ops::merge::{MergeBuffers, MergePlan, MergeProblem, MergeStates, StatsLayout};

/// NaN in f16 and bf16; doubled, NaN in f32.
const POISON_U16: u16 = 0xFFFF;

/// Host data of one decode call. 16-bit tensors are raw bit patterns of the problem's dtype.
/// The pools are `k_cache` / `v_cache` for 16-bit pages, or `k_cache_fp8` / `v_cache_fp8`
/// (codes) with `k_scales` / `v_scales` for FP8 pages (the other pair stays empty).
#[derive(Debug, Clone, Default)]
pub struct DecodeHostInputs {
    pub q: Vec<u16>,
    pub k_cache: Vec<u16>,
    pub v_cache: Vec<u16>,
    pub k_cache_fp8: Vec<u8>,
    pub v_cache_fp8: Vec<u8>,
    pub k_scales: Vec<f32>,
    pub v_scales: Vec<f32>,
    pub block_table: Vec<i32>,
    pub cache_seqlens: Vec<i32>,
    pub cu_seqlens_q: Option<Vec<i32>>,
    pub alibi_slopes: Option<Vec<f32>>,
    pub head_gates: Option<Vec<f32>>,
}

/// What one emulated decode produced.
pub struct DecodeRun {
    pub o: Vec<u16>,
    pub lse: Option<Vec<f32>>,
    pub entropy: Option<Vec<f32>>,
    pub decode_report: LaunchReport,
    pub combine_report: Option<LaunchReport>,
}

impl DecodeRun {
    /// Findings of every launch.
    pub fn findings(&self) -> Vec<&crate::emulator::Finding> {
        let mut f: Vec<_> = self.decode_report.findings.iter().collect();
        if let Some(c) = &self.combine_report {
            f.extend(c.findings.iter());
        }
        f
    }
}

/// Uploads `data` (any plain type) and returns it as a [`DevBuf`] of `data.len()` elements.
pub(crate) fn put<T: bytemuck::Pod>(dev: &mut Device, data: &[T]) -> Result<DevBuf> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let ptr = dev.alloc(bytes.len().max(1));
    dev.write(ptr, bytes)?;
    Ok(DevBuf {
        addr: ptr.0,
        len: data.len() as u64,
    })
}

pub(crate) fn get<T: bytemuck::Pod>(dev: &Device, b: DevBuf) -> Result<Vec<T>> {
    let bytes = dev.read(DevicePtr(b.addr), b.len as usize * std::mem::size_of::<T>())?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

pub(crate) fn launch(dev: &mut Device, l: &Launch) -> Result<LaunchReport> {
    crate::backend::emulator::launch(dev, l)
}

/// A host buffer must hold exactly what the problem describes.
fn check_len(tensor: TensorName, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(Error::DimMismatch {
            tensor,
            dim: Dim::Len,
            expected,
            found,
        });
    }
    Ok(())
}

/// Runs `plan` on a fresh emulated device over `inputs`.
pub fn decode(plan: &DecodePlan, inputs: &DecodeHostInputs) -> Result<DecodeRun> {
    decode_on(&mut Device::new(), plan, inputs)
}

/// [`decode`] on a caller-configured device (e.g. with race checks switched off for speed).
pub fn decode_on(
    dev: &mut Device,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<DecodeRun> {
    let p = &plan.problem;
    check_len(
        TensorName::Q,
        p.q_span(&p.q_strides) as usize,
        inputs.q.len(),
    )?;
    let fp8 = p.kv_dtype.is_fp8();
    let (k_span, v_span) = (
        p.cache_span(&p.k_strides) as usize,
        p.cache_span(&p.v_strides) as usize,
    );
    let (k_len, v_len) = if fp8 {
        (inputs.k_cache_fp8.len(), inputs.v_cache_fp8.len())
    } else {
        (inputs.k_cache.len(), inputs.v_cache.len())
    };
    check_len(TensorName::KCache, k_span, k_len)?;
    check_len(TensorName::VCache, v_span, v_len)?;
    check_len(
        TensorName::KScales,
        p.kv_scales_len(),
        inputs.k_scales.len(),
    )?;
    check_len(
        TensorName::VScales,
        p.kv_scales_len(),
        inputs.v_scales.len(),
    )?;
    if fp8 {
        check_scales(TensorName::KScales, &inputs.k_scales)?;
        check_scales(TensorName::VScales, &inputs.v_scales)?;
    }
    check_len(
        TensorName::CacheSeqlens,
        p.batch,
        inputs.cache_seqlens.len(),
    )?;
    let opt_len = |v: &Option<Vec<f32>>| v.as_ref().map_or(0, Vec::len);
    check_len(
        TensorName::AlibiSlopes,
        if p.alibi { p.num_heads_q } else { 0 },
        opt_len(&inputs.alibi_slopes),
    )?;
    check_len(
        TensorName::HeadGates,
        if p.gates { p.num_heads_q } else { 0 },
        opt_len(&inputs.head_gates),
    )?;

    let (k_cache, v_cache) = if fp8 {
        (
            put(dev, &inputs.k_cache_fp8)?,
            put(dev, &inputs.v_cache_fp8)?,
        )
    } else {
        (put(dev, &inputs.k_cache)?, put(dev, &inputs.v_cache)?)
    };
    let mut bufs = DecodeBuffers {
        q: put(dev, &inputs.q)?,
        k_cache,
        v_cache,
        o: put(dev, &vec![POISON_U16; p.q_span(&p.o_strides) as usize])?,
        block_table: put(dev, &inputs.block_table)?,
        cache_seqlens: put(dev, &inputs.cache_seqlens)?,
        ..Default::default()
    };
    if let Some(cu) = &inputs.cu_seqlens_q {
        bufs.cu_seqlens_q = put(dev, cu)?;
    }
    let nan = |n: u64| vec![f32::NAN; n as usize];
    let stats = p.row_stats_len() as u64;
    if p.lse {
        bufs.lse = put(dev, &nan(stats))?;
    }
    if p.entropy {
        bufs.entropy = put(dev, &nan(stats))?;
    }
    if let Some(a) = &inputs.alibi_slopes {
        bufs.alibi_slopes = put(dev, a)?;
    }
    if let Some(g) = &inputs.head_gates {
        bufs.head_gates = put(dev, g)?;
    }
    if fp8 {
        bufs.k_scales = put(dev, &inputs.k_scales)?;
        bufs.v_scales = put(dev, &inputs.v_scales)?;
    }
    if plan.combine.is_some() {
        bufs.partial_o = put(dev, &nan(plan.workspace.partial_o))?;
        bufs.partial_lse = put(dev, &nan(plan.workspace.partial_lse))?;
        if p.entropy {
            bufs.partial_entropy = put(dev, &nan(plan.workspace.partial_entropy))?;
        }
    }
    let launches = plan.bind(&bufs)?;
    let mut reports = launches.iter().map(|l| launch(dev, l));
    let decode_report = reports.next().expect("a decode launch")?;
    let combine_report = reports.next().transpose()?;
    Ok(DecodeRun {
        o: get(dev, bufs.o)?,
        lse: p.lse.then(|| get(dev, bufs.lse)).transpose()?,
        entropy: p.entropy.then(|| get(dev, bufs.entropy)).transpose()?,
        decode_report,
        combine_report,
    })
}

/// What an emulated merge of states produced.
pub struct MergeRun {
    /// `[rows, heads, d]` raw bits of the states' dtype.
    pub o: Vec<u16>,
    /// `[heads, rows]` or `[rows, heads]`, as the problem's layout says.
    pub lse: Vec<f32>,
    pub report: LaunchReport,
}

/// Host states of a merge: stacked (`o_states: [num_states, rows, heads, d]` raw bits,
/// `lse_states` per state in the problem's layout) or a pair (`o_b`, `lse_b` set).
#[derive(Debug, Clone, Copy)]
pub struct MergeHostInputs<'a> {
    pub o_states: &'a [u16],
    pub lse_states: &'a [f32],
    pub o_b: Option<&'a [u16]>,
    pub lse_b: Option<&'a [f32]>,
}

/// Runs a merge plan on a fresh emulated device (output and LSE poisoned with NaN first).
pub fn merge(plan: &MergePlan, inputs: &MergeHostInputs<'_>) -> Result<MergeRun> {
    let p = &plan.problem;
    let stacked = match p.states {
        MergeStates::Stacked { num_states } => num_states,
        MergeStates::Pair => 1,
    };
    let (o_a, lse_a) = if p.states == MergeStates::Pair {
        (TensorName::OA, TensorName::LseA)
    } else {
        (TensorName::OStates, TensorName::LseStates)
    };
    check_len(o_a, stacked * p.o_len() as usize, inputs.o_states.len())?;
    check_len(
        lse_a,
        stacked * p.lse_len() as usize,
        inputs.lse_states.len(),
    )?;
    let mut dev = Device::new();
    let mut bufs = MergeBuffers {
        o_states: put(&mut dev, inputs.o_states)?,
        lse_states: put(&mut dev, inputs.lse_states)?,
        o: put(&mut dev, &vec![POISON_U16; p.o_len() as usize])?,
        lse: put(&mut dev, &vec![f32::NAN; p.lse_len() as usize])?,
        ..Default::default()
    };
    if let Some(o_b) = inputs.o_b {
        check_len(TensorName::OB, p.o_len() as usize, o_b.len())?;
        bufs.o_b = put(&mut dev, o_b)?;
    }
    if let Some(lse_b) = inputs.lse_b {
        check_len(TensorName::LseB, p.lse_len() as usize, lse_b.len())?;
        bufs.lse_b = put(&mut dev, lse_b)?;
    }
    let report = launch(&mut dev, &plan.bind(&bufs)?)?;
    Ok(MergeRun {
        o: get(&dev, bufs.o)?,
        lse: get(&dev, bufs.lse)?,
        report,
    })
}

/// Merges `num_states` stacked states of `dtype` on the emulator: `o_states: [num_states, rows,
/// heads, d]` (raw bits), `lse_states: [num_states, rows, heads]`; the merged LSE comes back as
/// `[heads, rows]`.
pub fn merge_states(
    dtype: crate::common::dtype::DType,
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

/// The page pools an append writes into, as host data (returned updated by [`kv_append_into`]).
#[derive(Debug, Clone, PartialEq)]
pub enum HostPools {
    /// 16-bit pages of the problem's dtype (raw bits).
    Bits16 { k: Vec<u16>, v: Vec<u16> },
    /// FP8 pages of the problem's `kv_dtype`, with the scales the rows are quantised with.
    Fp8 {
        k: Vec<u8>,
        v: Vec<u8>,
        k_scales: Vec<f32>,
        v_scales: Vec<f32>,
    },
}

/// Where each appended token goes.
#[derive(Debug, Clone, Copy)]
pub enum AppendTarget<'a> {
    /// `slot = page * page_size + offset` per token; `< 0` skips the token.
    Slots(&'a [i32]),
    /// Token `t` is position `token_pos[t]` (`< 0` skips it) of item `token_batch[t]`, whose
    /// pages are the problem's `block_table` rows (`[batch, block_table_stride]`).
    Positions {
        block_table: &'a [i32],
        token_batch: &'a [i32],
        token_pos: &'a [i32],
    },
}

impl AppendTarget<'_> {
    fn tokens(&self) -> usize {
        match self {
            AppendTarget::Slots(s) => s.len(),
            AppendTarget::Positions { token_pos, .. } => token_pos.len(),
        }
    }
}

/// Appends `num_tokens` K/V rows (`[num_tokens, hkv, d]` contiguous raw bits of `p.dtype`) into
/// copies of the pools of `p` at `slot_mapping` (16-bit pages); returns the pools after the
/// launch and the report.
pub fn kv_append(
    p: &crate::ops::decode::problem::DecodeProblem,
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
    match kv_append_into(p, &pools, k_new, v_new, AppendTarget::Slots(slot_mapping))? {
        (HostPools::Bits16 { k, v }, report) => Ok((k, v, report)),
        _ => unreachable!("16-bit pools come back as 16-bit pools"),
    }
}

/// Appends `[num_tokens, hkv, d]` rows of `p.dtype` (raw bits, contiguous) into copies of
/// `pools` (16-bit or FP8, as `p.kv_dtype` says) at `target`, on a fresh emulated device;
/// returns the pools after the launch and its report. Checked first: the problem's page
/// geometry, pool, row and index lengths, scales; the kernel checks the device indices.
pub fn kv_append_into(
    p: &crate::ops::decode::problem::DecodeProblem,
    pools: &HostPools,
    k_new: &[u16],
    v_new: &[u16],
    target: AppendTarget,
) -> Result<(HostPools, LaunchReport)> {
    kv_append_into_for(KernelTarget::Ampere, p, pools, k_new, v_new, target)
}

/// [`kv_append_into`] with the append kernel of `kernels` (Turing: f16 into 16-bit pages).
pub fn kv_append_into_for(
    kernels: KernelTarget,
    p: &crate::ops::decode::problem::DecodeProblem,
    pools: &HostPools,
    k_new: &[u16],
    v_new: &[u16],
    target: AppendTarget,
) -> Result<(HostPools, LaunchReport)> {
    let (hkv, d) = (p.num_heads_kv, p.head_dim);
    let tokens = target.tokens();
    let index = match target {
        AppendTarget::Slots(_) => AppendIndex::Slots,
        AppendTarget::Positions { .. } => AppendIndex::Positions,
    };
    let plan = KvAppendPlan::new_for(kernels, p, tokens, index)?;
    let (k_span, v_span) = (
        p.cache_span(&p.k_strides) as usize,
        p.cache_span(&p.v_strides) as usize,
    );
    check_len(TensorName::KNew, tokens * hkv * d, k_new.len())?;
    check_len(TensorName::VNew, tokens * hkv * d, v_new.len())?;
    let mut dev = Device::new();
    let fp8 = p.kv_dtype.is_fp8();
    let mut bufs = KvAppendBuffers::default();
    match pools {
        HostPools::Bits16 { k, v } if !fp8 => {
            check_len(TensorName::KCache, k_span, k.len())?;
            check_len(TensorName::VCache, v_span, v.len())?;
            bufs.k_cache = put(&mut dev, k)?;
            bufs.v_cache = put(&mut dev, v)?;
        }
        HostPools::Fp8 {
            k,
            v,
            k_scales,
            v_scales,
        } if fp8 => {
            check_len(TensorName::KCache, k_span, k.len())?;
            check_len(TensorName::VCache, v_span, v.len())?;
            check_len(TensorName::KScales, p.kv_scales_len(), k_scales.len())?;
            check_len(TensorName::VScales, p.kv_scales_len(), v_scales.len())?;
            check_scales(TensorName::KScales, k_scales)?;
            check_scales(TensorName::VScales, v_scales)?;
            bufs.k_cache = put(&mut dev, k)?;
            bufs.v_cache = put(&mut dev, v)?;
            bufs.k_scales = put(&mut dev, k_scales)?;
            bufs.v_scales = put(&mut dev, v_scales)?;
        }
        _ => {
            let name = |fp8: bool| if fp8 { "FP8 codes" } else { "16-bit" };
            return Err(Error::KvPoolMismatch {
                expected: name(fp8),
                found: name(!fp8),
            });
        }
    };
    bufs.k_new = put(&mut dev, k_new)?;
    bufs.v_new = put(&mut dev, v_new)?;
    match target {
        AppendTarget::Slots(s) => bufs.slot_mapping = put(&mut dev, s)?,
        AppendTarget::Positions {
            block_table,
            token_batch,
            token_pos,
        } => {
            check_len(
                TensorName::BlockTable,
                (p.batch - 1) * p.block_table_stride + p.max_pages_per_seq,
                block_table.len(),
            )?;
            check_len(TensorName::TokenBatch, tokens, token_batch.len())?;
            bufs.block_table = put(&mut dev, block_table)?;
            bufs.token_batch = put(&mut dev, token_batch)?;
            bufs.token_pos = put(&mut dev, token_pos)?;
        }
    }
    let (kc, vc) = (bufs.k_cache, bufs.v_cache);
    // Zero tokens bind to no launch: the pools come back unchanged with an empty report.
    let mut report = LaunchReport::default();
    for l in plan.bind(&bufs)?.iter() {
        report = launch(&mut dev, l)?;
    }
    let out = match pools {
        HostPools::Bits16 { .. } => HostPools::Bits16 {
            k: get(&dev, kc)?,
            v: get(&dev, vc)?,
        },
        HostPools::Fp8 {
            k_scales, v_scales, ..
        } => HostPools::Fp8 {
            k: get(&dev, kc)?,
            v: get(&dev, vc)?,
            k_scales: k_scales.clone(),
            v_scales: v_scales.clone(),
        },
    };
    Ok((out, report))
}
