//! The one host runner: every op (forward, paged decode, merge_states, KV append, head
//! similarity) run from host data the same way on any [`HarnessBackend`] (the emulator or a
//! GPU): check the host buffers against the problem, upload the inputs, allocate every output
//! poisoned with [`POISON_BYTE`](super::device::POISON_BYTE) (so an element the kernel does not
//! write cannot pass a comparison), run the op through the call a server makes
//! ([`crate::api::Attention`]: the same binding checks and the backend's one launch path) and
//! read the outputs back with the launches' reports. Buffers are sized exactly as the problem
//! describes (the decode page pools hold `num_pages` pages and nothing more), so on the
//! emulator a stray access past them is a finding.

use super::device::{HarnessBackend, Session};
use super::problem::{FwdProblem, SeqLayout};
use super::{check_len, HostInputs, HostOutputs};
use crate::api::{Attention, DecodeArgs, FwdArgs, KvAppendArgs, MergeArgs};
use crate::backend::Backend;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{Error, Result, TensorName};
use crate::common::geometry::span;
use crate::emulator::{Finding, LaunchReport};
use crate::ops::decode::fp8::check_scales;
use crate::ops::decode::plan::DecodePlan;
use crate::ops::decode::problem::DecodeProblem;
use crate::ops::forward::plan::{FwdLaunch, FwdPlan};
use crate::ops::head_similarity::{HeadSimPlan, HeadSimProblem};
use crate::ops::kv_append::{AppendIndex, KvAppendPlan};
use crate::ops::merge::{MergePlan, MergeStates};
use crate::ops::mla_decode::{MlaDecodePlan, MLA_D_V};

/// `$op::<T, _>(args)` with `T` the element type of `$dtype` (the ops' arguments are typed).
macro_rules! with_element {
    ($dtype:expr, $op:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::F16 => $op::<half::f16, _>($($arg),*),
            DType::Bf16 => $op::<half::bf16, _>($($arg),*),
        }
    };
}

/// Host 16-bit bit patterns as elements of `T` (the same bytes).
fn as_elems<T: Element>(bits: &[u16]) -> &[T] {
    bytemuck::cast_slice(bits)
}

/// Elements of `T` as their 16-bit bit patterns.
fn as_bits<T: Element>(v: Vec<T>) -> Vec<u16> {
    bytemuck::cast_slice(&v).to_vec()
}

/// The `i`-th report of a launch sequence (an empty report on a GPU, which has none).
fn report_at(reports: &mut [LaunchReport], i: usize) -> LaunchReport {
    reports.get_mut(i).map(std::mem::take).unwrap_or_default()
}

/// What the forward and the decode share beyond their own tensors: O and the optional row
/// statistics (outputs, poisoned), and the optional per-head inputs.
struct AttentionBufs<B: HarnessBackend, T: Element> {
    o: B::Buffer<T>,
    lse: Option<B::Buffer<f32>>,
    entropy: Option<B::Buffer<f32>>,
    alibi_slopes: Option<B::Buffer<f32>>,
    head_gates: Option<B::Buffer<f32>>,
    sinks: Option<B::Buffer<f32>>,
}

/// The optional per-head f32 inputs `[hq]` of the forward and the decode.
#[derive(Clone, Copy)]
struct PerHead<'a> {
    alibi_slopes: Option<&'a [f32]>,
    head_gates: Option<&'a [f32]>,
    sinks: Option<&'a [f32]>,
}

impl<B: HarnessBackend, T: Element> AttentionBufs<B, T> {
    /// O of `o_len` elements, LSE / entropy of `stats` elements where requested.
    fn new(
        s: &Session<'_, B>,
        o_len: usize,
        (lse, entropy): (Option<usize>, Option<usize>),
        per_head: PerHead<'_>,
    ) -> Result<Self> {
        Ok(AttentionBufs {
            o: s.poisoned(o_len)?,
            lse: s.poisoned_opt(lse)?,
            entropy: s.poisoned_opt(entropy)?,
            alibi_slopes: s.put_opt(per_head.alibi_slopes)?,
            head_gates: s.put_opt(per_head.head_gates)?,
            sinks: s.put_opt(per_head.sinks)?,
        })
    }

    /// An op's arguments: `new` makes them around O, then every optional buffer is added.
    fn args<'a, A: RowOptions<'a, B>>(
        &'a mut self,
        new: impl FnOnce(&'a mut B::Buffer<T>) -> A,
    ) -> A {
        let AttentionBufs {
            o,
            lse,
            entropy,
            alibi_slopes,
            head_gates,
            sinks,
        } = self;
        let args = new(o);
        let args = lse.iter_mut().fold(args, A::lse);
        let args = entropy.iter_mut().fold(args, A::entropy);
        let args = alibi_slopes.iter().fold(args, A::alibi_slopes);
        let args = head_gates.iter().fold(args, A::head_gates);
        sinks.iter().fold(args, A::sinks)
    }

    /// O (as raw bits), LSE and entropy after the call.
    fn read_back(&self, s: &Session<'_, B>) -> Result<HostOutputs> {
        Ok(HostOutputs {
            o: as_bits(s.get(&self.o)?),
            lse: s.get_opt(self.lse.as_ref())?,
            entropy: s.get_opt(self.entropy.as_ref())?,
        })
    }
}

/// The optional-buffer builders the forward's and the decode's arguments share.
trait RowOptions<'a, B: HarnessBackend>: Sized {
    fn lse(self, lse: &'a mut B::Buffer<f32>) -> Self;
    fn entropy(self, entropy: &'a mut B::Buffer<f32>) -> Self;
    fn alibi_slopes(self, slopes: &'a B::Buffer<f32>) -> Self;
    fn head_gates(self, gates: &'a B::Buffer<f32>) -> Self;
    fn sinks(self, sinks: &'a B::Buffer<f32>) -> Self;
}

/// [`RowOptions`] of an op's argument type: its own builder methods of the same names.
macro_rules! row_options {
    ($args:ident) => {
        impl<'a, B: HarnessBackend, T> RowOptions<'a, B> for $args<'a, B, T> {
            fn lse(self, lse: &'a mut B::Buffer<f32>) -> Self {
                $args::lse(self, lse)
            }
            fn entropy(self, entropy: &'a mut B::Buffer<f32>) -> Self {
                $args::entropy(self, entropy)
            }
            fn alibi_slopes(self, slopes: &'a B::Buffer<f32>) -> Self {
                $args::alibi_slopes(self, slopes)
            }
            fn head_gates(self, gates: &'a B::Buffer<f32>) -> Self {
                $args::head_gates(self, gates)
            }
            fn sinks(self, sinks: &'a B::Buffer<f32>) -> Self {
                $args::sinks(self, sinks)
            }
        }
    };
}
row_options!(FwdArgs);
row_options!(DecodeArgs);

/// One forward run: outputs, the plan's launch (its geometry; the params are bound per call),
/// and the emulator's report (empty on a GPU).
pub struct ForwardRun {
    pub outputs: HostOutputs,
    pub launch: FwdLaunch,
    pub report: LaunchReport,
}

/// Runs the forward of `problem` on `backend`. `inputs` must match the problem's lengths; the
/// problem's optional lengths say which optional outputs to produce.
pub fn forward<B: HarnessBackend>(
    backend: &B,
    problem: &FwdProblem,
    inputs: &HostInputs,
) -> Result<ForwardRun> {
    with_element!(problem.dtype, forward_typed(backend, problem, inputs))
}

fn forward_typed<T: Element, B: HarnessBackend>(
    backend: &B,
    problem: &FwdProblem,
    inputs: &HostInputs,
) -> Result<ForwardRun> {
    inputs.check_against(problem)?;
    let plan = FwdPlan::new_tiled(problem.target, problem.tile, T::DTYPE, &problem.shape()?)?;
    let s = Session::new(backend)?;
    let q = s.put(as_elems::<T>(&inputs.q))?;
    let k = s.put(as_elems::<T>(&inputs.k))?;
    let v = s.put(as_elems::<T>(&inputs.v))?;
    let mut bufs = AttentionBufs::<B, T>::new(
        &s,
        problem.o.len,
        (problem.lse_len, problem.entropy_len),
        PerHead {
            alibi_slopes: inputs.alibi_slopes.as_deref(),
            head_gates: inputs.head_gates.as_deref(),
            sinks: inputs.sinks.as_deref(),
        },
    )?;
    let cu = match &problem.layout {
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => Some((s.put(cu_seqlens_q)?, s.put(cu_seqlens_k)?)),
        SeqLayout::Padded { .. } => None,
    };
    let mut args = bufs.args(|o| FwdArgs::new(&q, &k, &v, o));
    if let Some((cq, ck)) = cu.as_ref() {
        args = args.cu_seqlens(cq, ck);
    }
    let mut reports = s.reports(backend.run(&s.stream, &plan, args))?;
    Ok(ForwardRun {
        outputs: bufs.read_back(&s)?,
        launch: *plan.launch(),
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
    pub sinks: Option<Vec<f32>>,
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
    check_len(TensorName::VCache, p.v_cache_span() as usize, v_len)?;
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
    check_len(TensorName::HeadGates, expected, found)?;
    let (expected, found) = per_head(p.sinks, &inputs.sinks);
    check_len(TensorName::Sinks, expected, found)
}

/// A decode's page pools on the device: 16-bit pages as `T`, or FP8 codes with their scales.
enum DevicePools<B: HarnessBackend, T: Element> {
    Elements {
        k: B::Buffer<T>,
        v: B::Buffer<T>,
    },
    Fp8 {
        k: B::Buffer<u8>,
        v: B::Buffer<u8>,
        k_scales: B::Buffer<f32>,
        v_scales: B::Buffer<f32>,
    },
}

/// Runs `plan` over `inputs` on `backend`: the decode launch and, if planned, the split
/// combine (the workspace poisoned like every output). On the emulator a finding in the decode
/// stops the call before the combine, as a trap stops a CUDA stream.
pub fn decode<B: HarnessBackend>(
    backend: &B,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<DecodeRun> {
    with_element!(plan.problem.dtype, decode_typed(backend, plan, inputs))
}

fn decode_typed<T: Element, B: HarnessBackend>(
    backend: &B,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<DecodeRun> {
    let p = &plan.problem;
    // o: rows of d_v elements.
    let o_len = usize::try_from(span(&p.q_dims(&p.o_strides), p.head_dim_v)).unwrap_or(usize::MAX);
    let ws = plan.workspace.elems() as usize;
    run_decode_args::<T, B>(backend, p, (o_len, ws), inputs, |s, args| {
        backend.decode(&s.stream, plan, args)
    })
}

/// Uploads `inputs` of `p` (the paged decode's view of the call), makes O (`o_len`
/// elements) and the workspace (`ws` f32), runs `call` on the decode arguments and reads the
/// outputs and reports back.
fn run_decode_args<T: Element, B: HarnessBackend>(
    backend: &B,
    p: &DecodeProblem,
    (o_len, ws): (usize, usize),
    inputs: &DecodeHostInputs,
    call: impl FnOnce(&Session<'_, B>, DecodeArgs<'_, B, T>) -> Result<()>,
) -> Result<DecodeRun> {
    check_decode_inputs(p, inputs)?;
    let s = Session::new(backend)?;
    let q = s.put(as_elems::<T>(&inputs.q))?;
    let table = s.put(&inputs.block_table)?;
    let lens = s.put(&inputs.cache_seqlens)?;
    let stats = p.row_stats_len();
    let mut bufs = AttentionBufs::<B, T>::new(
        &s,
        o_len,
        (p.lse.then_some(stats), p.entropy.then_some(stats)),
        PerHead {
            alibi_slopes: inputs.alibi_slopes.as_deref(),
            head_gates: inputs.head_gates.as_deref(),
            sinks: inputs.sinks.as_deref(),
        },
    )?;
    let cu = s.put_opt(inputs.cu_seqlens_q.as_deref())?;
    let mut ws = s.poisoned_opt::<f32>((ws > 0).then_some(ws))?;
    let pools: DevicePools<B, T> = if p.kv_dtype.is_fp8() {
        DevicePools::Fp8 {
            k: s.put(&inputs.k_cache_fp8)?,
            v: s.put(&inputs.v_cache_fp8)?,
            k_scales: s.put(&inputs.k_scales)?,
            v_scales: s.put(&inputs.v_scales)?,
        }
    } else {
        DevicePools::Elements {
            k: s.put(as_elems::<T>(&inputs.k_cache))?,
            v: s.put(as_elems::<T>(&inputs.v_cache))?,
        }
    };
    let mut args = bufs.args(|o| match &pools {
        DevicePools::Elements { k, v } => DecodeArgs::new(&q, k, v, o, &table, &lens),
        DevicePools::Fp8 {
            k,
            v,
            k_scales,
            v_scales,
        } => DecodeArgs::fp8(&q, k, v, k_scales, v_scales, o, &table, &lens),
    });
    if let Some(w) = ws.as_mut() {
        args = args.workspace(w);
    }
    if let Some(c) = cu.as_ref() {
        args = args.cu_seqlens_q(c);
    }
    let mut reports = s.reports(call(&s, args))?;
    let out = bufs.read_back(&s)?;
    Ok(DecodeRun {
        o: out.o,
        lse: out.lse,
        entropy: out.entropy,
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

/// Runs a merge plan on `backend` (the merged LSE always requested).
pub fn merge<B: HarnessBackend>(
    backend: &B,
    plan: &MergePlan,
    inputs: &MergeHostInputs<'_>,
) -> Result<MergeRun> {
    with_element!(plan.problem.dtype, merge_typed(backend, plan, inputs))
}

fn merge_typed<T: Element, B: HarnessBackend>(
    backend: &B,
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
    let s = Session::new(backend)?;
    let o_states = s.put(as_elems::<T>(inputs.o_states))?;
    let lse_states = s.put(inputs.lse_states)?;
    let o_b = inputs.o_b.map(|b| s.put(as_elems::<T>(b))).transpose()?;
    let lse_b = s.put_opt(inputs.lse_b)?;
    let mut o = s.poisoned::<T>(o_len)?;
    let mut lse = s.poisoned::<f32>(lse_len)?;
    let args = match (&o_b, &lse_b) {
        (Some(ob), Some(lb)) => MergeArgs::pair(&o_states, &lse_states, ob, lb, &mut o),
        // A pair plan without its second state is the plan's typed error.
        _ => MergeArgs::stacked(&o_states, &lse_states, &mut o),
    };
    let mut reports = s.reports(backend.merge_states(&s.stream, plan, args.lse(&mut lse)))?;
    Ok(MergeRun {
        o: as_bits(s.get(&o)?),
        lse: s.get(&lse)?,
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

/// Host data of one KV append: the pools it writes into (updated copies come back), the new
/// rows `k_new, v_new: [num_tokens, hkv, d]` (raw bits of the problem's dtype, contiguous), and
/// where each token goes.
#[derive(Debug, Clone, Copy)]
pub struct AppendInputs<'a> {
    pub pools: &'a HostPools,
    pub k_new: &'a [u16],
    pub v_new: &'a [u16],
    pub target: AppendTarget<'a>,
}

/// Appends the rows of `inputs` into copies of its pools (16-bit or FP8, as `p.kv_dtype` says)
/// with the append kernel of `backend`'s target; returns the pools after the launch and the
/// launches' reports (none for zero tokens, which bind to no launch). Checked first: the
/// problem's page geometry, pool, row and index lengths, scales; the kernel checks the device
/// indices.
pub fn kv_append<B: HarnessBackend>(
    backend: &B,
    p: &DecodeProblem,
    inputs: &AppendInputs<'_>,
) -> Result<(HostPools, Vec<LaunchReport>)> {
    let AppendInputs {
        pools,
        k_new,
        v_new,
        target,
    } = *inputs;
    let (hkv, d) = (p.num_heads_kv, p.head_dim);
    let tokens = target.tokens();
    let index = match target {
        AppendTarget::Slots(_) => AppendIndex::Slots,
        AppendTarget::Positions { .. } => AppendIndex::Positions,
    };
    let plan = KvAppendPlan::new_for(backend.target(), p, tokens, index)?;
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
    let (slots, positions) = match target {
        AppendTarget::Slots(slots) => (Some(slots), None),
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
            (None, Some((block_table, token_batch, token_pos)))
        }
    };
    let rows = (k_new, v_new);
    with_element!(
        p.dtype,
        append_typed(backend, &plan, pools, rows, slots, positions)
    )
}

/// Per token: its batch item, its position (`block_table`, `token_batch`, `token_pos`).
type Positions<'a> = (&'a [i32], &'a [i32], &'a [i32]);

/// [`Positions`] on the device.
type DevicePositions<B> = (
    <B as Backend>::Buffer<i32>,
    <B as Backend>::Buffer<i32>,
    <B as Backend>::Buffer<i32>,
);

/// Routes the tokens of `args` as the host target said (the plan checks that it is the kind of
/// index it was made for).
fn route<'a, B: HarnessBackend, T>(
    args: KvAppendArgs<'a, B, T>,
    slots: Option<&'a B::Buffer<i32>>,
    positions: Option<&'a DevicePositions<B>>,
) -> KvAppendArgs<'a, B, T> {
    match (slots, positions) {
        (Some(slots), _) => args.slots(slots),
        (_, Some((table, batch, pos))) => args.positions(table, batch, pos),
        _ => args,
    }
}

fn append_typed<T: Element, B: HarnessBackend>(
    backend: &B,
    plan: &KvAppendPlan,
    pools: &HostPools,
    (k_new, v_new): (&[u16], &[u16]),
    slots: Option<&[i32]>,
    positions: Option<Positions<'_>>,
) -> Result<(HostPools, Vec<LaunchReport>)> {
    let s = Session::new(backend)?;
    let k_new = s.put(as_elems::<T>(k_new))?;
    let v_new = s.put(as_elems::<T>(v_new))?;
    let slots = s.put_opt(slots)?;
    let positions = positions
        .map(|(t, b, p)| -> Result<_> { Ok((s.put(t)?, s.put(b)?, s.put(p)?)) })
        .transpose()?;
    match pools {
        HostPools::Bits16 { k, v } => {
            let mut k = s.put(as_elems::<T>(k))?;
            let mut v = s.put(as_elems::<T>(v))?;
            let args = KvAppendArgs::new(&k_new, &v_new, &mut k, &mut v);
            let args = route(args, slots.as_ref(), positions.as_ref());
            let reports = s.reports(backend.kv_append(&s.stream, plan, args))?;
            let pools = HostPools::Bits16 {
                k: as_bits(s.get(&k)?),
                v: as_bits(s.get(&v)?),
            };
            Ok((pools, reports))
        }
        HostPools::Fp8 {
            k,
            v,
            k_scales,
            v_scales,
        } => {
            let (mut kc, mut vc) = (s.put(k)?, s.put(v)?);
            let (ks, vs) = (s.put(k_scales)?, s.put(v_scales)?);
            let args = KvAppendArgs::fp8(&k_new, &v_new, &mut kc, &mut vc, &ks, &vs);
            let args = route(args, slots.as_ref(), positions.as_ref());
            let reports = s.reports(backend.kv_append(&s.stream, plan, args))?;
            let pools = HostPools::Fp8 {
                k: s.get(&kc)?,
                v: s.get(&vc)?,
                k_scales: k_scales.clone(),
                v_scales: v_scales.clone(),
            };
            Ok((pools, reports))
        }
    }
}

/// What one head-similarity launch produced.
pub struct HeadSimRun {
    /// `[heads, heads]` sums over the tokens of the per-token cosine similarities.
    pub gram: Vec<f32>,
    pub plan: HeadSimPlan,
    /// The emulator's report (empty on a GPU).
    pub report: LaunchReport,
}

/// Runs the head-similarity kernel over `o` (the strided view `problem` describes; the plan
/// checks that `o` holds it) on `backend`, planned for the backend's kernels. The gram buffer
/// starts poisoned like every output: the call zeroes the sums it accumulates.
pub fn head_similarity<T: Element, B: HarnessBackend>(
    backend: &B,
    o: &[T],
    problem: &HeadSimProblem,
) -> Result<HeadSimRun> {
    let plan = HeadSimPlan::new_for(backend.target(), problem)?;
    let s = Session::new(backend)?;
    let o_buf = s.put(o)?;
    let mut gram = s.poisoned::<f32>(plan.gram_elems() as usize)?;
    let call = backend.head_similarity(&s.stream, &plan, &o_buf, &mut gram);
    let mut reports = s.reports(call)?;
    Ok(HeadSimRun {
        gram: s.get(&gram)?,
        plan,
        report: report_at(&mut reports, 0),
    })
}

/// Runs an MLA decode plan on `backend` over `inputs` (the decode's host inputs: `q` with 576
/// dims, the latent pool in `k_cache` (16-bit) or `k_cache_fp8` with its scale `k_scales[0]`;
/// the V pools are uploaded but not read). O comes back with 512 dims in the plan's o layout.
pub fn mla_decode<B: HarnessBackend>(
    backend: &B,
    plan: &MlaDecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<DecodeRun> {
    with_element!(plan.problem.dtype, mla_decode_typed(backend, plan, inputs))
}

fn mla_decode_typed<T: Element, B: HarnessBackend>(
    backend: &B,
    plan: &MlaDecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<DecodeRun> {
    let p = plan.problem.as_decode();
    let o_len = usize::try_from(span(&p.q_dims(&p.o_strides), MLA_D_V))
        .map_err(|_| Error::SizeOverflow { what: "MLA o" })?;
    let ws = plan.workspace.elems() as usize;
    run_decode_args::<T, B>(backend, &p, (o_len, ws), inputs, |s, args| {
        crate::api::mla_decode(backend, &s.stream, plan, args)
    })
}
