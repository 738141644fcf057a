//! The public merge of attention states (cascade / shared-prefix attention, or a cached prefix
//! combined with fresh tokens): states `(O_s, LSE_s)` over disjoint key sets become
//! `O = sum_s exp(LSE_s - LSE) O_s`, `LSE = log sum_s exp(LSE_s)`; a state with `LSE = -inf`
//! (no keys) weighs 0, and a row whose every state is empty gets `O = 0, LSE = -inf`. A state
//! with `LSE = NaN` (a NaN reached it: `crate::common::options`) makes the row's `O` and `LSE` NaN;
//! a finite state whose weight underflows to 0 is still multiplied in (`0 x NaN = NaN`).
//!
//! Two forms ([`MergeStates`]): N states stacked in one buffer, or two separate buffers
//! `(O_a, LSE_a)` + `(O_b, LSE_b)` (no copy into a stack first). Like the decode: a pure plan
//! ([`MergePlan::new`]) validated once, then per run [`MergePlan::params`] with O(1) buffer checks
//! (presence, sizes, alignment, aliasing); both backends launch the same params bytes.
//!
//! Layouts (contiguous): every O `[rows, heads, d]` (stacked: `[num_states, rows, heads, d]`) of
//! the problem's dtype; every LSE f32 in the problem's [`StatsLayout`] (stacked: that layout per
//! state, states outermost).

use crate::common::abi::MergeStatesParams;
use crate::common::binding::{check, BufSpec, DevBuf, Use};
use crate::common::dtype::DType;
use crate::common::error::{AlignWhat, Dim, Error, Limit, Result, TensorName};
use crate::common::launch::Launch;
use crate::common::target::KernelTarget;
use crate::ops::decode::kernels::{merge_states_entry, MERGE_STATES_SM75_F16_ENTRY, MERGE_WARPS};
use crate::ops::forward::plan::WARP_SIZE;

/// How the input states are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeStates {
    /// `num_states` states stacked in one O and one LSE buffer, state outermost.
    Stacked { num_states: usize },
    /// Two states in separate buffers: A (`o_states`, `lse_states`) and B (`o_b`, `lse_b`).
    Pair,
}

/// Order of the `rows x heads` LSE values (inputs and output alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsLayout {
    /// `[rows, heads]`.
    RowsHeads,
    /// `[heads, rows]`: what the forward and the decode write for one batch item.
    HeadsRows,
}

/// One merge call, without any device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeProblem {
    pub dtype: DType,
    pub states: MergeStates,
    pub rows: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub lse_layout: StatsLayout,
}

impl MergeProblem {
    pub fn num_states(&self) -> usize {
        match self.states {
            MergeStates::Stacked { num_states } => num_states,
            MergeStates::Pair => 2,
        }
    }
    /// Elements of one state's (or the output's) O (saturating: validation refuses anything
    /// past int32).
    pub fn o_len(&self) -> u64 {
        self.lse_len().saturating_mul(self.head_dim as u64)
    }
    /// Elements of one state's (or the output's) LSE (saturating).
    pub fn lse_len(&self) -> u64 {
        (self.rows as u64).saturating_mul(self.heads as u64)
    }
    /// (row stride, head stride) of an LSE vector.
    fn lse_strides(&self) -> (i64, i64) {
        match self.lse_layout {
            StatsLayout::RowsHeads => (self.heads as i64, 1),
            StatsLayout::HeadsRows => (1, self.rows as i64),
        }
    }
}

/// A validated merge and its launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MergePlan {
    pub problem: MergeProblem,
    pub launch: Launch,
}

/// The buffers of one merge run. `o_b` / `lse_b` only with [`MergeStates::Pair`]; `lse` (the
/// merged LSE) is optional (address 0 = not written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MergeBuffers {
    pub o_states: DevBuf,
    pub lse_states: DevBuf,
    pub o_b: DevBuf,
    pub lse_b: DevBuf,
    pub o: DevBuf,
    pub lse: DevBuf,
}

/// Columns of O each lane merges per step (`FLASHMHA_MERGE_COLS` of kernels/params.h,
/// `kMergeCols` in kernels/common/merge_states_warp.cuh): O rows are read and written 4
/// elements (8 bytes) at a time.
pub const MERGE_COLS: usize = crate::common::abi::FLASHMHA_MERGE_COLS as usize;

impl MergePlan {
    /// Validates `p` and plans its launch (one warp per (row, head)) with the Ampere-and-newer
    /// kernels.
    pub fn new(p: &MergeProblem) -> Result<MergePlan> {
        Self::new_for(KernelTarget::Ampere, p)
    }

    /// [`MergePlan::new`] with the kernels of `target`: Turing merges f16 states only (bf16
    /// there is [`Error::UnsupportedDType`]). Pure; then [`MergePlan::bind`] per run.
    pub fn new_for(target: KernelTarget, p: &MergeProblem) -> Result<MergePlan> {
        plan(target, p)
    }
}

/// [`MergePlan::new_for`].
fn plan(target: KernelTarget, p: &MergeProblem) -> Result<MergePlan> {
    // Hopper merges with the Ampere kernels (it has a forward of its own only).
    let entry = match (target.shared_kernels(), p.dtype) {
        (KernelTarget::Ampere | KernelTarget::Hopper, dtype) => merge_states_entry(dtype),
        (KernelTarget::Turing, DType::F16) => MERGE_STATES_SM75_F16_ENTRY,
        (KernelTarget::Turing, dtype) => return Err(Error::UnsupportedDType { dtype, target }),
    };
    for (dim, n) in [
        (Dim::State, p.num_states()),
        (Dim::Seq, p.rows),
        (Dim::Heads, p.heads),
        (Dim::HeadDim, p.head_dim),
    ] {
        if n == 0 {
            return Err(Error::EmptyDim {
                tensor: TensorName::OStates,
                dim,
            });
        }
    }
    if !p.head_dim.is_multiple_of(MERGE_COLS) {
        return Err(Error::Misaligned {
            tensor: TensorName::OStates,
            what: AlignWhat::HeadDim,
            required: MERGE_COLS * p.dtype.size(),
            value: (p.head_dim as u64).saturating_mul(p.dtype.size() as u64),
        });
    }
    let items = p.lse_len();
    let max = i32::MAX as u64;
    for (limit, value) in [
        (Limit::Rows32, p.o_len()),
        (
            Limit::Rows32,
            (p.num_states() as u64).saturating_mul(p.o_len()),
        ),
    ] {
        if value > max {
            return Err(Error::Overflow32 { limit, value, max });
        }
    }
    Ok(MergePlan {
        problem: *p,
        launch: Launch::geometry(
            entry,
            [items.div_ceil(u64::from(MERGE_WARPS)) as u32, 1, 1],
            [MERGE_WARPS * WARP_SIZE, 1, 1],
            0,
        ),
    })
}

impl MergePlan {
    /// Binds `b` (checked as `params` does) into this plan's one launch.
    pub fn bind(&self, b: &MergeBuffers) -> Result<Launch> {
        Ok(self.launch.with_params(&self.params(b)?))
    }

    /// The params of one run, after O(1) checks of `b`: every buffer present and large enough,
    /// O buffers 8-byte and LSE buffers 4-byte aligned, outputs overlapping nothing.
    pub fn params(&self, b: &MergeBuffers) -> Result<MergeStatesParams> {
        use TensorName as T;
        let p = &self.problem;
        let e = p.dtype.size() as u64;
        let n = p.num_states() as u64;
        let pair = p.states == MergeStates::Pair;
        let (o_a, lse_a) = if pair {
            (T::OA, T::LseA)
        } else {
            (T::OStates, T::LseStates)
        };
        let stacked = if pair { 1 } else { n };
        let col_align = MERGE_COLS as u64 * e;
        let second = if pair { Use::Required } else { Use::Forbidden };
        check(&[
            BufSpec::input(T::O, b.o, Use::Required, p.o_len(), e, col_align).written(),
            BufSpec::input(T::Lse, b.lse, Use::IfPresent, p.lse_len(), 4, 4).written(),
            BufSpec::input(
                o_a,
                b.o_states,
                Use::Required,
                stacked * p.o_len(),
                e,
                col_align,
            ),
            BufSpec::input(
                lse_a,
                b.lse_states,
                Use::Required,
                stacked * p.lse_len(),
                4,
                4,
            ),
            BufSpec::input(T::OB, b.o_b, second, p.o_len(), e, 8),
            BufSpec::input(T::LseB, b.lse_b, second, p.lse_len(), 4, 4),
        ])?;
        let (lse_row, lse_head) = p.lse_strides();
        let d = p.head_dim as i64;
        let (rows_per_batch, o_batch_stride, lse_batch_stride) = match p.lse_layout {
            StatsLayout::HeadsRows => (p.rows as i32, 0, 0),
            StatsLayout::RowsHeads => (1, p.heads as i64 * d, lse_row),
        };
        let (o_state_stride, lse_state_stride) = if pair {
            (0, 0)
        } else {
            (p.o_len() as i64, p.lse_len() as i64)
        };
        Ok(MergeStatesParams {
            o_states: b.o_states.addr as *const _,
            lse_states: b.lse_states.addr as *const f32,
            entropy_states: std::ptr::null(),
            o_states_b: if pair { b.o_b.addr } else { 0 } as *const _,
            lse_states_b: if pair { b.lse_b.addr } else { 0 } as *const f32,
            entropy_states_b: std::ptr::null(),
            o: b.o.addr as *mut _,
            lse: b.lse.addr as *mut f32,
            entropy: std::ptr::null_mut(),
            head_gates: std::ptr::null(),
            o_state_stride,
            o_state_row_stride: p.heads as i64 * d,
            o_state_head_stride: d,
            lse_state_stride,
            lse_state_row_stride: lse_row,
            lse_state_head_stride: lse_head,
            // The kernel writes row r of O at (r / rows_per_batch) * o_batch_stride +
            // (r % rows_per_batch) * o_row_stride and its LSE at (r / rows_per_batch) *
            // lse_batch_stride + h * lse_head_stride + r % rows_per_batch: [heads, rows] is one
            // batch of `rows` rows, [rows, heads] is `rows` batches of one row.
            o_batch_stride,
            o_row_stride: p.heads as i64 * d,
            o_head_stride: d,
            lse_batch_stride,
            lse_head_stride: lse_head,
            num_states: n as i32,
            rows: p.rows as i32,
            heads: p.heads as i32,
            head_dim: p.head_dim as i32,
            rows_per_batch,
            pad0: 0,
        })
    }
}
