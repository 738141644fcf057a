//! The one host runner: every op (forward, paged decode, merge_states, KV append, head
//! similarity) run from host data the same way on any [`HostDevice`] (the emulator or a GPU):
//! check the host buffers against the problem, upload the inputs, allocate every output
//! poisoned with [`POISON_BYTE`](super::device::POISON_BYTE) (so an element the kernel does not
//! write cannot pass a comparison), plan and bind (the same O(1) binding checks as on a
//! server's buffers), launch through the backend's one launch path, and read the outputs back.
//! Buffers are sized exactly as the problem describes (the decode page pools hold `num_pages`
//! pages and nothing more), so on the emulator a stray access past them is a finding.

use super::device::HostDevice;
use super::problem::{FwdProblem, SeqLayout};
use super::{HostInputs, HostOutputs};
use crate::common::binding::DevBuf;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{Dim, Error, Result, TensorName};
use crate::common::launch::Launches;
use crate::common::target::KernelTarget;
use crate::emulator::{Finding, LaunchReport};
use crate::ops::decode::fp8::check_scales;
use crate::ops::decode::plan::{DecodeBuffers, DecodePlan};
use crate::ops::decode::problem::DecodeProblem;
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::plan::{FwdLaunch, FwdPlan};
use crate::ops::head_similarity::{
    plan_head_similarity, HeadSimBuffers, HeadSimPlan, HeadSimProblem,
};
use crate::ops::kv_append::{AppendIndex, KvAppendBuffers, KvAppendPlan};
use crate::ops::merge::{MergeBuffers, MergePlan, MergeStates};

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

/// `data` uploaded when given, else no buffer.
fn put_opt<D: HostDevice, T: bytemuck::Pod>(dev: &mut D, data: Option<&[T]>) -> Result<DevBuf> {
    data.map_or(Ok(DevBuf::ABSENT), |d| dev.put(d))
}

/// A poisoned output of `n` elements when `n` is given, else no buffer.
fn poisoned_opt<D: HostDevice, T: bytemuck::Pod>(dev: &mut D, n: Option<usize>) -> Result<DevBuf> {
    n.map_or(Ok(DevBuf::ABSENT), |n| dev.poisoned::<T>(n))
}

/// `b` read back when `wanted`.
fn get_opt<D: HostDevice, T: bytemuck::Pod>(
    dev: &mut D,
    wanted: bool,
    b: DevBuf,
) -> Result<Option<Vec<T>>> {
    wanted.then(|| dev.get(b)).transpose()
}

/// The `i`-th report of a launch sequence (an empty report on a GPU, which has none).
fn report_at(reports: &mut Vec<LaunchReport>, i: usize) -> LaunchReport {
    if i < reports.len() {
        std::mem::take(&mut reports[i])
    } else {
        LaunchReport::default()
    }
}

/// One forward run: outputs, the launch it ran, and the emulator's report (empty on a GPU).
pub struct ForwardRun {
    pub outputs: HostOutputs,
    pub launch: FwdLaunch,
    pub report: LaunchReport,
}

/// Runs the forward of `problem` on `dev`. `inputs` must match the problem's lengths; the
/// problem's optional lengths say which optional outputs to produce.
pub fn forward<D: HostDevice>(
    dev: &mut D,
    problem: &FwdProblem,
    inputs: &HostInputs,
) -> Result<ForwardRun> {
    match problem.dtype {
        DType::F16 => forward_typed::<half::f16, D>(dev, problem, inputs),
        DType::Bf16 => forward_typed::<half::bf16, D>(dev, problem, inputs),
    }
}

fn forward_typed<T: Element, D: HostDevice>(
    dev: &mut D,
    problem: &FwdProblem,
    inputs: &HostInputs,
) -> Result<ForwardRun> {
    inputs.check_against(problem)?;
    let plan = FwdPlan::<T>::new_for(problem.target, &problem.shape()?)?;
    let (cu_seqlens_q, cu_seqlens_k) = match &problem.layout {
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => (dev.put(cu_seqlens_q)?, dev.put(cu_seqlens_k)?),
        SeqLayout::Padded { .. } => (DevBuf::ABSENT, DevBuf::ABSENT),
    };
    let bufs = FwdBufs {
        q: dev.put(&inputs.q)?,
        k: dev.put(&inputs.k)?,
        v: dev.put(&inputs.v)?,
        o: dev.poisoned::<u16>(problem.o.len)?,
        lse: poisoned_opt::<D, f32>(dev, problem.lse_len)?,
        entropy: poisoned_opt::<D, f32>(dev, problem.entropy_len)?,
        alibi_slopes: put_opt(dev, inputs.alibi_slopes.as_deref())?,
        head_gates: put_opt(dev, inputs.head_gates.as_deref())?,
        cu_seqlens_q,
        cu_seqlens_k,
    };
    let launch = plan.bind(&bufs)?;
    let mut reports = dev.launch_forward(&launch)?;
    let outputs = HostOutputs {
        o: dev.get(bufs.o)?,
        lse: get_opt(dev, problem.lse_len.is_some(), bufs.lse)?,
        entropy: get_opt(dev, problem.entropy_len.is_some(), bufs.entropy)?,
    };
    Ok(ForwardRun {
        outputs,
        launch,
        report: report_at(&mut reports, 0),
    })
}

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

/// What one decode produced: `o` raw bits in the problem's layout, LSE / entropy as the kernel
/// writes them, and the emulator's reports of the decode and (if planned) the split combine
/// (empty on a GPU).
pub struct DecodeRun {
    pub o: Vec<u16>,
    pub lse: Option<Vec<f32>>,
    pub entropy: Option<Vec<f32>>,
    pub decode_report: LaunchReport,
    pub combine_report: Option<LaunchReport>,
}

impl DecodeRun {
    /// Findings of every launch.
    pub fn findings(&self) -> Vec<&Finding> {
        let mut f: Vec<_> = self.decode_report.findings.iter().collect();
        if let Some(c) = &self.combine_report {
            f.extend(c.findings.iter());
        }
        f
    }
}

/// The K / V scale lengths, then (FP8 pages) their values.
fn check_scale_inputs(p: &DecodeProblem, fp8: bool, k: &[f32], v: &[f32]) -> Result<()> {
    check_len(TensorName::KScales, p.kv_scales_len(), k.len())?;
    check_len(TensorName::VScales, p.kv_scales_len(), v.len())?;
    if fp8 {
        check_scales(TensorName::KScales, k)?;
        check_scales(TensorName::VScales, v)?;
    }
    Ok(())
}

/// Checks `inputs` against the problem of `plan`: every length, and FP8 scales.
fn check_decode_inputs(p: &DecodeProblem, inputs: &DecodeHostInputs) -> Result<()> {
    check_len(
        TensorName::Q,
        p.q_span(&p.q_strides) as usize,
        inputs.q.len(),
    )?;
    let fp8 = p.kv_dtype.is_fp8();
    let (k_len, v_len) = if fp8 {
        (inputs.k_cache_fp8.len(), inputs.v_cache_fp8.len())
    } else {
        (inputs.k_cache.len(), inputs.v_cache.len())
    };
    check_len(
        TensorName::KCache,
        p.cache_span(&p.k_strides) as usize,
        k_len,
    )?;
    check_len(
        TensorName::VCache,
        p.cache_span(&p.v_strides) as usize,
        v_len,
    )?;
    check_scale_inputs(p, fp8, &inputs.k_scales, &inputs.v_scales)?;
    check_len(
        TensorName::CacheSeqlens,
        p.batch,
        inputs.cache_seqlens.len(),
    )?;
    let per_head = |on: bool, v: &Option<Vec<f32>>| {
        (
            if on { p.num_heads_q } else { 0 },
            v.as_ref().map_or(0, Vec::len),
        )
    };
    let (expected, found) = per_head(p.alibi, &inputs.alibi_slopes);
    check_len(TensorName::AlibiSlopes, expected, found)?;
    let (expected, found) = per_head(p.gates, &inputs.head_gates);
    check_len(TensorName::HeadGates, expected, found)
}

/// Runs `plan` over `inputs` on `dev`: the decode launch and, if planned, the split combine
/// (the workspace poisoned like every output).
pub fn decode<D: HostDevice>(
    dev: &mut D,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<DecodeRun> {
    let p = &plan.problem;
    check_decode_inputs(p, inputs)?;
    let fp8 = p.kv_dtype.is_fp8();
    let (k_cache, v_cache) = if fp8 {
        (dev.put(&inputs.k_cache_fp8)?, dev.put(&inputs.v_cache_fp8)?)
    } else {
        (dev.put(&inputs.k_cache)?, dev.put(&inputs.v_cache)?)
    };
    let (k_scales, v_scales) = if fp8 {
        (dev.put(&inputs.k_scales)?, dev.put(&inputs.v_scales)?)
    } else {
        (DevBuf::ABSENT, DevBuf::ABSENT)
    };
    let stats = p.row_stats_len();
    let ws = &plan.workspace;
    let split = plan.combine.is_some();
    let bufs = DecodeBuffers {
        q: dev.put(&inputs.q)?,
        k_cache,
        v_cache,
        o: dev.poisoned::<u16>(p.q_span(&p.o_strides) as usize)?,
        block_table: dev.put(&inputs.block_table)?,
        cache_seqlens: dev.put(&inputs.cache_seqlens)?,
        cu_seqlens_q: put_opt(dev, inputs.cu_seqlens_q.as_deref())?,
        lse: poisoned_opt::<D, f32>(dev, p.lse.then_some(stats))?,
        entropy: poisoned_opt::<D, f32>(dev, p.entropy.then_some(stats))?,
        alibi_slopes: put_opt(dev, inputs.alibi_slopes.as_deref())?,
        head_gates: put_opt(dev, inputs.head_gates.as_deref())?,
        partial_o: poisoned_opt::<D, f32>(dev, split.then_some(ws.partial_o as usize))?,
        partial_lse: poisoned_opt::<D, f32>(dev, split.then_some(ws.partial_lse as usize))?,
        partial_entropy: poisoned_opt::<D, f32>(
            dev,
            (split && p.entropy).then_some(ws.partial_entropy as usize),
        )?,
        k_scales,
        v_scales,
    };
    let mut reports = dev.launch(&plan.bind(&bufs)?)?;
    Ok(DecodeRun {
        o: dev.get(bufs.o)?,
        lse: get_opt(dev, p.lse, bufs.lse)?,
        entropy: get_opt(dev, p.entropy, bufs.entropy)?,
        decode_report: report_at(&mut reports, 0),
        combine_report: (reports.len() > 1).then(|| report_at(&mut reports, 1)),
    })
}

/// What a merge of states produced.
pub struct MergeRun {
    /// `[rows, heads, d]` raw bits of the states' dtype.
    pub o: Vec<u16>,
    /// `[heads, rows]` or `[rows, heads]`, as the problem's layout says.
    pub lse: Vec<f32>,
    /// The emulator's report (empty on a GPU).
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

/// Runs a merge plan on `dev`.
pub fn merge<D: HostDevice>(
    dev: &mut D,
    plan: &MergePlan,
    inputs: &MergeHostInputs<'_>,
) -> Result<MergeRun> {
    let p = &plan.problem;
    let (o_len, lse_len) = (p.o_len() as usize, p.lse_len() as usize);
    let (stacked, o_a, lse_a) = match p.states {
        MergeStates::Stacked { num_states } => {
            (num_states, TensorName::OStates, TensorName::LseStates)
        }
        MergeStates::Pair => (1, TensorName::OA, TensorName::LseA),
    };
    check_len(o_a, stacked * o_len, inputs.o_states.len())?;
    check_len(lse_a, stacked * lse_len, inputs.lse_states.len())?;
    if let Some(o_b) = inputs.o_b {
        check_len(TensorName::OB, o_len, o_b.len())?;
    }
    if let Some(lse_b) = inputs.lse_b {
        check_len(TensorName::LseB, lse_len, lse_b.len())?;
    }
    let bufs = MergeBuffers {
        o_states: dev.put(inputs.o_states)?,
        lse_states: dev.put(inputs.lse_states)?,
        o_b: put_opt(dev, inputs.o_b)?,
        lse_b: put_opt(dev, inputs.lse_b)?,
        o: dev.poisoned::<u16>(o_len)?,
        lse: dev.poisoned::<f32>(lse_len)?,
    };
    let mut reports = dev.launch(&plan.bind(&bufs)?.into())?;
    Ok(MergeRun {
        o: dev.get(bufs.o)?,
        lse: dev.get(bufs.lse)?,
        report: report_at(&mut reports, 0),
    })
}

/// The page pools an append writes into, as host data (returned updated by [`kv_append`]).
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

/// Appends `[num_tokens, hkv, d]` rows of `p.dtype` (raw bits, contiguous) into copies of
/// `pools` (16-bit or FP8, as `p.kv_dtype` says) at `target` with the append kernel of
/// `kernels`, on `dev`; returns the pools after the launch and the launches' reports (none for
/// zero tokens, which bind to no launch). Checked first: the problem's page geometry, pool,
/// row and index lengths, scales; the kernel checks the device indices.
pub fn kv_append<D: HostDevice>(
    dev: &mut D,
    kernels: KernelTarget,
    p: &DecodeProblem,
    pools: &HostPools,
    k_new: &[u16],
    v_new: &[u16],
    target: AppendTarget,
) -> Result<(HostPools, Vec<LaunchReport>)> {
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
    let fp8 = p.kv_dtype.is_fp8();
    let (k_len, v_len, scales) = match pools {
        HostPools::Bits16 { k, v } if !fp8 => (k.len(), v.len(), None),
        HostPools::Fp8 {
            k,
            v,
            k_scales,
            v_scales,
        } if fp8 => (k.len(), v.len(), Some((k_scales, v_scales))),
        _ => {
            let name = |fp8: bool| if fp8 { "FP8 codes" } else { "16-bit" };
            return Err(Error::KvPoolMismatch {
                expected: name(fp8),
                found: name(!fp8),
            });
        }
    };
    check_len(TensorName::KCache, k_span, k_len)?;
    check_len(TensorName::VCache, v_span, v_len)?;
    if let Some((k, v)) = scales {
        check_scale_inputs(p, true, k, v)?;
    }
    let mut bufs = KvAppendBuffers::default();
    match pools {
        HostPools::Bits16 { k, v } => {
            bufs.k_cache = dev.put(k)?;
            bufs.v_cache = dev.put(v)?;
        }
        HostPools::Fp8 {
            k,
            v,
            k_scales,
            v_scales,
        } => {
            bufs.k_cache = dev.put(k)?;
            bufs.v_cache = dev.put(v)?;
            bufs.k_scales = dev.put(k_scales)?;
            bufs.v_scales = dev.put(v_scales)?;
        }
    }
    bufs.k_new = dev.put(k_new)?;
    bufs.v_new = dev.put(v_new)?;
    match target {
        AppendTarget::Slots(s) => bufs.slot_mapping = dev.put(s)?,
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
            bufs.block_table = dev.put(block_table)?;
            bufs.token_batch = dev.put(token_batch)?;
            bufs.token_pos = dev.put(token_pos)?;
        }
    }
    let reports = dev.launch(&plan.bind(&bufs)?)?;
    let out = match pools {
        HostPools::Bits16 { .. } => HostPools::Bits16 {
            k: dev.get(bufs.k_cache)?,
            v: dev.get(bufs.v_cache)?,
        },
        HostPools::Fp8 {
            k_scales, v_scales, ..
        } => HostPools::Fp8 {
            k: dev.get(bufs.k_cache)?,
            v: dev.get(bufs.v_cache)?,
            k_scales: k_scales.clone(),
            v_scales: v_scales.clone(),
        },
    };
    Ok((out, reports))
}

/// What one head-similarity launch produced.
pub struct HeadSimRun {
    /// `[heads, heads]` sums over the tokens of the per-token cosine similarities.
    pub gram: Vec<f32>,
    pub plan: HeadSimPlan,
    /// The emulator's report (empty on a GPU).
    pub report: LaunchReport,
}

/// Runs the head-similarity kernel over `o` (the strided view `problem` describes; its length
/// must be `problem.o_len`) on `dev`. `gram` is an accumulator: it starts at zero, not poisoned.
pub fn head_similarity<T: Element, D: HostDevice>(
    dev: &mut D,
    o: &[T],
    problem: &HeadSimProblem,
) -> Result<HeadSimRun> {
    if problem.dtype != T::DTYPE {
        return Err(Error::DTypeMismatch {
            tensor: TensorName::HeadSimInput,
            expected: problem.dtype,
            found: T::DTYPE,
        });
    }
    check_len(TensorName::HeadSimInput, problem.o_len, o.len())?;
    let o_buf = dev.put(o)?;
    let gram_buf = dev.put(&vec![0f32; problem.gram_len])?;
    let plan = plan_head_similarity(
        problem,
        &HeadSimBuffers {
            o: o_buf.addr,
            gram: gram_buf.addr,
        },
    )?;
    let mut reports = dev.launch(&Launches::one(plan.launch()))?;
    let heads = problem.num_heads;
    let gram = dev.get(DevBuf::new(gram_buf.addr, heads * heads))?;
    Ok(HeadSimRun {
        gram,
        plan,
        report: report_at(&mut reports, 0),
    })
}
