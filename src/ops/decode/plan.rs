//! The decode launch plan: a pure function of a validated [`DecodeProblem`] and a
//! [`SplitPolicy`] giving the kernel, grid, split count, workspace size and the combine launch;
//! then, per run, [`DecodePlan::params`] fills the params structs from buffer addresses with
//! O(1) checks (no allocation, no device access), so a plan made once for the engine's upper
//! bounds serves every layer and step and the launches can be captured in a CUDA graph.
//!
//! Split rule of the paged decode ([`choose_splits_timed`], `SplitPolicy::Auto`): the split
//! count that minimises a closed-form predicted call time, whose constants come from the
//! cycle-approximate SM simulation (src/perf_model/timing.rs; `bench --decode` prints the
//! simulation's own prediction beside it). Pure arithmetic over at most [`MAX_SPLITS`]
//! candidates: no simulation at plan time. With `n = base x s` CTAs on `S` SMs:
//! - residency `r = min(r_max, ceil(n / S))` (the block scheduler spreads CTAs over the SMs
//!   before doubling up), waves `ceil(n / (r S))`; `r_max` is 2 when two CTAs fit the shared
//!   memory of the smallest sm_80+ SM ([`SMALLEST_SM_SMEM_BYTES`]), else 1: the plan does not
//!   know the device's shared memory, and a rule that counted on 2 where 1 fits would split a
//!   full grid into two waves (d128 f16, 74.5 KB: 2 on an A100, 1 on an A10 or L4);
//! - one CTA of `k` keys (`ceil(L / s)` rounded up to [`SPLIT_ALIGN`], as the kernel splits)
//!   takes `F_r + k x B / R_r` clocks: `B` K/V bytes per key, `R_r` the bytes per clock one CTA
//!   streams when `r` share an SM. The simulation shows the stream latency-bound (each warp
//!   has one 16-key block in flight, L2 + DRAM latency away), far below the SM's L2 share, so
//!   `R_2 < R_1` but `2 R_2 > R_1`: two CTAs per SM move more bytes than one;
//! - the decode takes the larger of waves x CTA clocks and its DRAM bytes (K/V per CTA plus the
//!   partial states written and read back) at [`DRAM_BYTES_PER_CLK_PER_SM`] x S;
//! - the combine (split count > 1) one wave of `F_c + s x C_c + (ceil(s / 16) - 1) x B_c +
//!   (ceil(s / 32) - 1) x K_c` clocks: each combine warp reads the splits' LSEs 32 at a time
//!   (one lane each) and their O rows 16 at a time, so `F_c` holds two L2 round trips, `C_c`
//!   is the per-split issue and arithmetic, `B_c` a further batch of O loads and `K_c` a
//!   further chunk of 32 LSEs.
//!
//! The rule picks the smallest `s` of least predicted time, and 1 when the one-split grid
//! already has a CTA for every SM. Constants (A100 simulation, d128
//! f16, 4096 keys, 8 KV heads; `perf_model::decode::cta_clocks` at 256 and 512 keys per CTA,
//! the line through the two): 16-row tiles F_1 3617 / R_1 24.3 B/clk, F_2 4241 / R_2 20.8
//! B/clk; 32-row tiles (two m16 blocks per warp: more mma and shared traffic per key) F_1
//! 9320 / R_1 12.4, F_2 10375 / R_2 10.4; combine F_c 1848, C_c 41, B_c 950, K_c 900 (at 16 /
//! 17 / 32 / 33 splits: 2400 / 3358 / 3580 / 5472 clocks) (issue 20's kernel work:
//! before it, 4230 / 17.9, 5130 / 15.3, 10900 / 11.1, 12600 / 9.7 and 1090 / 305, when every
//! key block waited for its block-table entry and each combine warp read the splits' O one
//! after the other). H100 (mma.sync) runs the same SM parameters at another clock.
//! Other head dims scale per-key clocks with B (the stream is byte-bound), an approximation.
//! `perf_model::decode` tests the rule against the simulation on several configurations.
//!
//! Byte heuristic ([`choose_splits`], kept for the MLA decode, src/ops/mla_decode/plan.rs):
//! the decode grid has `base = batch x hkv x row tiles`
//! CTAs. If that already fills [`CTAS_PER_SM_TARGET`] CTAs on every SM, splitting only adds
//! combine traffic: 1 split. Otherwise split the keys so the grid reaches that target, but give
//! every split at least `max(MIN_KEYS_PER_SPLIT, KEYS_PER_SPLIT_PER_ROW x rows per KV head)` keys
//! of the longest cache and never more than [`MAX_SPLITS`]. Why the per-row term: a split
//! writes and the combine reads `4·d + 4` bytes of partial state per packed row (group x
//! sq_new rows per KV head), about `8·d·rows` bytes, and reloads Q (`2·d·rows` bytes, f16),
//! against `2·e·d = 4·d` bytes (f16) of K and V per key: per split, `~2.5·rows / keys` of the
//! compulsory bytes. `keys >= 256·rows` keeps that below 1% and leaves the rest of the 2%
//! budget (whole call <= 1.02x compulsory, issue 9) to the block-table and length reads.
//! Measured (bench/results/decode.txt, d128 GQA 4 sq_new 1): 100·rows gave 10 splits at
//! 1.034x, 256·rows gives 4 splits. Overridable: [`SplitPolicy::Count`] and
//! [`SplitPolicy::FixedKeys`] (batch-invariant: a sequence's split boundaries depend only on its
//! own length, so its output bits do not depend on the rest of the batch).

use super::kernels::{combine_entry_for, DecodeKernelRow, MERGE_WARPS};
use super::problem::DecodeProblem;
use super::validate::validate_decode_for;
use crate::common::abi::{self, FlashDecodeParams, MergeStatesParams};
use crate::common::binding::{check, BufSpec, DevBuf, Use};
use crate::common::error::{Error, Result, TensorName};
use crate::common::geometry::span;
use crate::common::launch::{Launch, Launches};
use crate::common::options_abi::{pack_attn_options, StatRows};
use crate::common::target::KernelTarget;
use crate::ops::forward::plan::WARP_SIZE;

/// CTAs per SM the heuristic aims for: two d128 decode CTAs (74.5 KB of shared memory each)
/// fit the 164 KB of an A100 SM.
pub const CTAS_PER_SM_TARGET: u64 = 2;
/// Fewest keys (of the longest cache) a split gets from the heuristic.
pub const MIN_KEYS_PER_SPLIT: u64 = 256;
/// Keys per split per packed row of a KV head (see the module docs: partials and Q reloads
/// < 1%).
pub const KEYS_PER_SPLIT_PER_ROW: u64 = 256;
/// Most splits the heuristic or [`SplitPolicy::Count`] may use.
pub const MAX_SPLITS: u32 = 256;
/// Split boundaries are multiples of this many keys (`FLASHMHA_DECODE_SPLIT_ALIGN`).
pub const SPLIT_ALIGN: u32 = abi::FLASHMHA_DECODE_SPLIT_ALIGN;

/// How the keys of a sequence are divided among CTAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitPolicy {
    /// The paged decode's timed split rule ([`choose_splits_timed`]; the MLA decode: its own
    /// rule, src/ops/mla_decode/plan.rs) for a device with this many SMs.
    Auto { num_sms: u32 },
    /// Exactly this many splits (1 = no workspace, no combine).
    Count(u32),
    /// Every split holds this many keys (a positive multiple of [`SPLIT_ALIGN`]); the split
    /// count is what the longest cache needs. Batch-invariant; always goes through the combine.
    FixedKeys(u32),
}

/// The split count for `base_ctas` decode CTAs of `rows_per_kv_head` packed rows each, a
/// longest cache of `max_cache_len` keys and `num_sms` SMs (see the module docs).
pub fn choose_splits(
    base_ctas: u64,
    rows_per_kv_head: u64,
    max_cache_len: u64,
    num_sms: u32,
) -> u32 {
    let target = u64::from(num_sms.max(1)) * CTAS_PER_SM_TARGET;
    if base_ctas >= target {
        return 1;
    }
    let wanted = target.div_ceil(base_ctas.max(1));
    let min_keys = MIN_KEYS_PER_SPLIT.max(KEYS_PER_SPLIT_PER_ROW * rows_per_kv_head);
    let by_length = (max_cache_len / min_keys).max(1);
    wanted.min(by_length).min(u64::from(MAX_SPLITS)) as u32
}

/// DRAM bytes per clock per SM the split rule assumes: A100 SXM 2039 GB/s / 1.41 GHz / 108
/// SMs (H100 SXM5: 13.9). A part with less DRAM bandwidth per SM (L4: 2.5) needs fewer splits
/// than the rule gives it; the extra splits cost it a combine.
pub const DRAM_BYTES_PER_CLK_PER_SM: f64 = 13.4;

/// Shared memory of the smallest SM the sm_80+ kernels run on (sm_86 / sm_89 / sm_120: 100 KB
/// per SM, CUDA C Programming Guide, "Compute capabilities", table of technical
/// specifications).
pub const SMALLEST_SM_SMEM_BYTES: u64 = 100 * 1024;

/// Clocks of one decode CTA: fixed, and K/V bytes streamed per clock (see the module docs,
/// "Split rule"), at 1 and at 2 resident CTAs per SM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CtaCost {
    pub fixed: [f64; 2],
    pub bytes_per_clk: [f64; 2],
}

/// [`CtaCost`] of the 16-row decode tile (A100 simulation, d128 f16).
pub const CTA_COST_16_ROWS: CtaCost = CtaCost {
    fixed: [3617.0, 4241.0],
    bytes_per_clk: [24.3, 20.8],
};
/// [`CtaCost`] of the 32-row decode tile (two m16 row blocks per warp).
pub const CTA_COST_32_ROWS: CtaCost = CtaCost {
    fixed: [9320.0, 10375.0],
    bytes_per_clk: [12.4, 10.4],
};
/// Combine CTA clocks: fixed (the LSE round trip and one batch of O loads at L2 latency), and
/// per split (kernels/common/merge_states_warp.cuh loads 16 splits' O rows at once).
pub const COMBINE_FIXED_CLOCKS: f64 = 1848.0;
pub const COMBINE_CLOCKS_PER_SPLIT: f64 = 41.0;
/// Combine clocks per batch of 16 splits' O loads after the first, and per chunk of 32 splits'
/// LSEs after the first.
pub const COMBINE_CLOCKS_PER_BATCH: f64 = 950.0;
pub const COMBINE_CLOCKS_PER_CHUNK: f64 = 900.0;

/// What the split rule knows of a decode call (all from the plan's problem and kernel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitShape {
    /// CTAs with one split: batch x KV heads x row tiles.
    pub base_ctas: u64,
    /// Packed rows per CTA (the kernel's row tile).
    pub tile_rows: u64,
    /// Keys of the longest cache.
    pub max_cache_len: u64,
    /// K and V bytes per cached key per KV head (2 x d x element bytes).
    pub kv_bytes_per_key: u64,
    /// Output dims per row (the partial state is `4 x d_o + 4` bytes).
    pub d_o: u64,
    /// Decode CTAs per SM the rule may count on (1 or 2; see the module docs).
    pub max_resident: u64,
}

/// The split rule's predicted clocks of the call of `shape` on `num_sms` SMs with `splits`
/// splits (see the module docs, "Split rule").
pub fn split_cost_clocks(shape: &SplitShape, splits: u32, num_sms: u32) -> f64 {
    let sms = u64::from(num_sms.max(1));
    let s = u64::from(splits.max(1));
    let n = shape.base_ctas.max(1).saturating_mul(s);
    let resident = n.div_ceil(sms).clamp(1, shape.max_resident.clamp(1, 2));
    let waves = n.div_ceil(resident * sms) as f64;
    let align = u64::from(SPLIT_ALIGN);
    let keys = (shape.max_cache_len.div_ceil(s).div_ceil(align) * align).min(shape.max_cache_len);
    let cost = if shape.tile_rows > 16 {
        CTA_COST_32_ROWS
    } else {
        CTA_COST_16_ROWS
    };
    let r = resident as usize - 1;
    let kv = shape.kv_bytes_per_key as f64;
    let cta = cost.fixed[r] + keys as f64 * kv / cost.bytes_per_clk[r];
    let partial = if s > 1 {
        // Written by the decode, read back by the combine.
        2.0 * s as f64
            * shape.base_ctas as f64
            * shape.tile_rows as f64
            * (4.0 * shape.d_o as f64 + 4.0)
    } else {
        0.0
    };
    let dram = (shape.base_ctas as f64 * shape.max_cache_len as f64 * kv + partial)
        / (DRAM_BYTES_PER_CLK_PER_SM * sms as f64);
    let combine = if s > 1 {
        COMBINE_FIXED_CLOCKS
            + COMBINE_CLOCKS_PER_SPLIT * s as f64
            + COMBINE_CLOCKS_PER_BATCH * (s.div_ceil(16) - 1) as f64
            + COMBINE_CLOCKS_PER_CHUNK * (s.div_ceil(32) - 1) as f64
    } else {
        0.0
    };
    (waves * cta).max(dram) + combine
}

/// The split count of least [`split_cost_clocks`] (the smallest on ties), between 1 and
/// [`MAX_SPLITS`], with at least [`SPLIT_ALIGN`] keys per split.
pub fn choose_splits_timed(shape: &SplitShape, num_sms: u32) -> u32 {
    // A grid with a CTA for every SM already streams from every SM: splitting it only adds the
    // combine. (The closed form alone would split it on a part whose DRAM is slower per SM than
    // the A100's it assumes, e.g. an L4: 92% against 99.6% of DRAM bandwidth predicted at GQA 8 x
    // 4 tokens, `bench --decode --model l4`.)
    if shape.base_ctas >= u64::from(num_sms.max(1)) {
        return 1;
    }
    let most = (shape.max_cache_len / u64::from(SPLIT_ALIGN)).clamp(1, u64::from(MAX_SPLITS));
    let mut best = (split_cost_clocks(shape, 1, num_sms), 1);
    for s in 2..=most as u32 {
        let t = split_cost_clocks(shape, s, num_sms);
        if t < best.0 {
            best = (t, s);
        }
    }
    best.1
}

/// f32 elements of the caller-owned workspace (zero when the plan has one split and no
/// combine). Layouts: `partial_o [splits, total_q, hq, d]`, `partial_lse` and
/// `partial_entropy [splits, total_q, hq]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkspaceLayout {
    pub partial_o: u64,
    pub partial_lse: u64,
    pub partial_entropy: u64,
}

impl WorkspaceLayout {
    /// The workspace of `num_splits` splits of `states` (row, head) states with `d_o` output
    /// dims each (none without split output).
    pub(crate) fn for_splits(
        split_output: bool,
        num_splits: u32,
        states: u64,
        d_o: u64,
        entropy: bool,
    ) -> WorkspaceLayout {
        if !split_output {
            return WorkspaceLayout::default();
        }
        let states = u64::from(num_splits) * states;
        WorkspaceLayout {
            partial_o: states * d_o,
            partial_lse: states,
            partial_entropy: if entropy { states } else { 0 },
        }
    }
    /// Total f32 elements: the one buffer a caller allocates, carved as partial O, then partial
    /// LSE, then partial entropy.
    pub fn elems(&self) -> u64 {
        self.partial_o + self.partial_lse + self.partial_entropy
    }
    /// Total bytes (three f32 arrays).
    pub fn bytes(&self) -> u64 {
        4 * self.elems()
    }
}

/// Everything needed to run one decode shape, independent of buffer addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodePlan {
    pub problem: DecodeProblem,
    pub kernel: DecodeKernelRow,
    pub decode: Launch,
    pub num_splits: u32,
    /// Keys per split when fixed (batch-invariant), else 0 (derived per item in the kernel).
    pub split_keys: u32,
    pub workspace: WorkspaceLayout,
    /// The split combine, when the decode writes partial states.
    pub combine: Option<Launch>,
}

/// The buffers of one run. Element types: q, o of the problem's dtype; k_cache, v_cache of its
/// `kv_dtype` (16-bit or FP8 bytes); block_table, cache_seqlens, cu_seqlens_q i32; everything
/// else f32 (k_scales / v_scales only with FP8 pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeBuffers {
    pub q: DevBuf,
    pub k_cache: DevBuf,
    pub v_cache: DevBuf,
    pub o: DevBuf,
    pub block_table: DevBuf,
    pub cache_seqlens: DevBuf,
    pub cu_seqlens_q: DevBuf,
    pub lse: DevBuf,
    pub entropy: DevBuf,
    pub alibi_slopes: DevBuf,
    pub head_gates: DevBuf,
    pub sinks: DevBuf,
    pub partial_o: DevBuf,
    pub partial_lse: DevBuf,
    pub partial_entropy: DevBuf,
    pub k_scales: DevBuf,
    pub v_scales: DevBuf,
}

impl DecodePlan {
    /// Validates `problem` and plans it under `policy` with the Ampere-and-newer (sm_80+)
    /// kernels.
    pub fn new(problem: &DecodeProblem, policy: SplitPolicy) -> Result<DecodePlan> {
        Self::new_for(KernelTarget::Ampere, problem, policy)
    }

    /// Validates `problem` and plans it under `policy` with the kernels of `target` (e.g.
    /// [`CudaBackend::target`](crate::cuda::CudaBackend::target) of the device it will run on),
    /// as [`FwdPlan::new_for`](crate::FwdPlan::new_for) does for the forward. Pure; then
    /// [`DecodePlan::bind`] per run.
    pub fn new_for(
        target: KernelTarget,
        problem: &DecodeProblem,
        policy: SplitPolicy,
    ) -> Result<DecodePlan> {
        plan(target, problem, policy)
    }
}

/// [`DecodePlan::new_for`].
fn plan(target: KernelTarget, problem: &DecodeProblem, policy: SplitPolicy) -> Result<DecodePlan> {
    let kernel = *validate_decode_for(target, problem)?;
    let p = problem;
    let row_tiles = (p.group() * p.max_seqlen_q()).div_ceil(kernel.tile_rows as usize) as u64;
    let base_ctas = p.batch as u64 * p.num_heads_kv as u64 * row_tiles;
    let rows = (p.group() * p.max_seqlen_q()) as u64;
    let (num_splits, split_keys) = match policy {
        SplitPolicy::Auto { num_sms } => {
            let shape = SplitShape {
                base_ctas,
                tile_rows: u64::from(kernel.tile_rows),
                max_cache_len: p.max_cache_len as u64,
                kv_bytes_per_key: 2 * p.head_dim as u64 * p.kv_element_bytes() as u64,
                d_o: p.head_dim as u64,
                max_resident: if 2 * u64::from(kernel.smem_bytes) <= SMALLEST_SM_SMEM_BYTES {
                    2
                } else {
                    1
                },
            };
            (choose_splits_timed(&shape, num_sms), 0)
        }
        _ => resolve_splits(policy, base_ctas, rows, p.max_cache_len as u64)?,
    };
    let split_output = num_splits > 1 || split_keys > 0;
    let workspace = WorkspaceLayout::for_splits(
        split_output,
        num_splits,
        p.total_q() as u64 * p.num_heads_q as u64,
        p.head_dim_v as u64,
        p.entropy,
    );
    let decode = Launch::geometry(
        kernel.entry,
        [
            num_splits,
            (p.num_heads_kv as u64 * row_tiles) as u32,
            p.batch as u32,
        ],
        [kernel.num_warps * WARP_SIZE, 1, 1],
        kernel.smem_bytes,
    );
    let combine = combine_launch(target, p, split_output)?;
    Ok(DecodePlan {
        problem: problem.clone(),
        kernel,
        decode,
        num_splits,
        split_keys,
        workspace,
        combine,
    })
}

/// The (split count, fixed keys per split or 0) of `policy` for `base_ctas` CTAs of `rows`
/// packed rows each and a longest cache of `max_cache_len` keys; typed errors for a count or a
/// key size out of range. Shared by the paged decode and the MLA decode (src/ops/mla_decode/).
pub(crate) fn resolve_splits(
    policy: SplitPolicy,
    base_ctas: u64,
    rows: u64,
    max_cache_len: u64,
) -> Result<(u32, u32)> {
    Ok(match policy {
        SplitPolicy::Auto { num_sms } => {
            (choose_splits(base_ctas, rows, max_cache_len, num_sms), 0)
        }
        SplitPolicy::Count(n) => {
            if n == 0 || n > MAX_SPLITS {
                return Err(Error::SplitCount {
                    found: u64::from(n),
                    max: MAX_SPLITS,
                });
            }
            (n, 0)
        }
        SplitPolicy::FixedKeys(k) => {
            if k == 0 || k % SPLIT_ALIGN != 0 {
                return Err(Error::SplitKeys {
                    found: k,
                    align: SPLIT_ALIGN,
                });
            }
            let n = max_cache_len.div_ceil(u64::from(k)).max(1);
            if n > u64::from(MAX_SPLITS) {
                return Err(Error::SplitCount {
                    found: n,
                    max: MAX_SPLITS,
                });
            }
            (n as u32, k)
        }
    })
}

/// The split combine of `p`'s states (`total_q x hq` rows of the paged decode's combine),
/// when the decode writes partial states. Shared with the MLA decode.
pub(crate) fn combine_launch(
    target: KernelTarget,
    p: &DecodeProblem,
    split_output: bool,
) -> Result<Option<Launch>> {
    // Validation admitted (target, dtype), and every target has a combine for its dtypes.
    let combine_entry = combine_entry_for(target, p.dtype).ok_or(Error::UnsupportedDType {
        dtype: p.dtype,
        target,
    })?;
    Ok(split_output.then(|| {
        Launch::geometry(
            combine_entry,
            [
                ((p.total_q() * p.num_heads_q) as u64).div_ceil(u64::from(MERGE_WARPS)) as u32,
                1,
                1,
            ],
            [MERGE_WARPS * WARP_SIZE, 1, 1],
            0,
        )
    }))
}

/// Page-size divisor for the kernel: `key / page_size == (key * magic) >> shift` for every
/// `0 <= key < 2^30` (with `l = ceil(log2 page_size)`, `shift = 32 + l`,
/// `magic = ceil(2^shift / page_size)`: the error term `key * (magic - 2^shift / page_size) /
/// 2^shift < 2^30 / 2^(32 + l) < 1 / page_size` never carries past the next integer, and
/// `key * magic < 2^30 * 2^33` fits 64 bits).
pub fn page_divisor(page_size: u32) -> (u64, i32) {
    let l = 32 - (page_size.max(1) - 1).leading_zeros(); // ceil(log2), 0 for 1
    let shift = 32 + l;
    let magic = (1u64 << shift).div_ceil(u64::from(page_size));
    (magic, shift as i32)
}

impl DecodePlan {
    /// Carves one caller-owned f32 workspace of at least [`WorkspaceLayout::elems`] elements
    /// into (partial O, partial LSE, partial entropy). A plan without a combine needs none and
    /// ignores `ws` (absent buffers come back), so one workspace sized for the engine's largest
    /// plan serves every plan. The partial O at the base must be 16-byte aligned (checked by
    /// [`DecodePlan::params`]).
    pub fn carve_workspace(&self, ws: DevBuf) -> Result<(DevBuf, DevBuf, DevBuf)> {
        carve(self.combine.is_some(), &self.workspace, ws)
    }

    /// Binds `bufs` (checked as [`DecodePlan::params`] does) into the launches of one run: the
    /// decode, then the split combine if the plan has one.
    pub fn bind(&self, bufs: &DecodeBuffers) -> Result<Launches> {
        let (decode, combine) = self.params(bufs)?;
        Ok(Launches::two(
            self.decode.with_params(&decode),
            self.combine.zip(combine).map(|(l, c)| l.with_params(&c)),
        ))
    }

    /// The binding table of one run: what each buffer must hold for this plan (outputs first).
    pub fn specs(&self, bufs: &DecodeBuffers) -> [BufSpec; 17] {
        let d = self.problem.head_dim_v;
        decode_specs(
            &self.problem,
            d,
            &self.workspace,
            self.combine.is_some(),
            bufs,
        )
    }

    /// The params of the decode and (if any) combine launch for `bufs`, after O(1) checks of
    /// buffer presence, sizes and alignment.
    pub fn params(
        &self,
        bufs: &DecodeBuffers,
    ) -> Result<(FlashDecodeParams, Option<MergeStatesParams>)> {
        check(&self.specs(bufs))?;
        let d = self.problem.head_dim_v;
        let splits = (self.num_splits, self.split_keys, self.combine.is_some());
        Ok(decode_params(&self.problem, d, splits, bufs))
    }
}

/// [`DecodePlan::carve_workspace`] of a plan with (`split_output`, `w`); shared with the MLA
/// decode.
pub(crate) fn carve(
    split_output: bool,
    w: &WorkspaceLayout,
    ws: DevBuf,
) -> Result<(DevBuf, DevBuf, DevBuf)> {
    let none = DevBuf::default();
    if !split_output {
        return Ok((none, none, none));
    }
    // Only presence and size here; alignment is the partial O's row in `params`.
    check(&[BufSpec::input(
        TensorName::Workspace,
        ws,
        Use::Required,
        w.elems(),
        4,
        1,
    )])?;
    let at = |offset: u64, len: u64| ws.slice(offset, len, 4);
    Ok((
        at(0, w.partial_o),
        at(w.partial_o, w.partial_lse),
        if w.partial_entropy > 0 {
            at(w.partial_o + w.partial_lse, w.partial_entropy)
        } else {
            none
        },
    ))
}

/// The binding table of one run of `p` with `d_o` output dims (the paged decode's `head_dim_v`,
/// the MLA decode's d_v): what each buffer must hold (outputs first). Shared with
/// src/ops/mla_decode/plan.rs.
pub(crate) fn decode_specs(
    p: &DecodeProblem,
    d_o: usize,
    ws: &WorkspaceLayout,
    split_output: bool,
    bufs: &DecodeBuffers,
) -> [BufSpec; 17] {
    use TensorName as T;
    let req = |on: bool| if on { Use::Required } else { Use::Unused };
    let fp8 = p.kv_dtype.is_fp8();
    let stats = p.row_stats_len() as u64;
    let e = p.dtype.size() as u64;
    let kv_e = p.kv_element_bytes() as u64; // cache elements: 2, or 1 for FP8 codes
    let a16 = abi::FLASHMHA_COPY_ALIGN_BYTES as u64;
    let (hq, batch) = (p.num_heads_q as u64, p.batch as u64);
    let table_len = ((p.batch - 1) * p.block_table_stride + p.max_pages_per_seq) as u64;
    let scales = p.kv_scales_len() as u64;
    [
        BufSpec::input(T::O, bufs.o, Use::Required, o_span(p, d_o), e, a16).written(),
        BufSpec::input(T::Lse, bufs.lse, req(p.lse), stats, 4, 4).written(),
        BufSpec::input(T::Entropy, bufs.entropy, req(p.entropy), stats, 4, 4).written(),
        BufSpec::input(
            T::PartialO,
            bufs.partial_o,
            req(split_output),
            ws.partial_o,
            4,
            a16,
        )
        .written(),
        BufSpec::input(
            T::PartialLse,
            bufs.partial_lse,
            req(split_output),
            ws.partial_lse,
            4,
            4,
        )
        .written(),
        BufSpec::input(
            T::PartialEntropy,
            bufs.partial_entropy,
            req(split_output && p.entropy),
            ws.partial_entropy,
            4,
            4,
        )
        .written(),
        BufSpec::input(T::Q, bufs.q, Use::Required, p.q_span(&p.q_strides), e, a16),
        BufSpec::input(
            T::KCache,
            bufs.k_cache,
            Use::Required,
            p.cache_span(&p.k_strides),
            kv_e,
            a16,
        ),
        BufSpec::input(
            T::VCache,
            bufs.v_cache,
            Use::Required,
            p.v_cache_span(),
            kv_e,
            a16,
        ),
        BufSpec::input(T::KScales, bufs.k_scales, req(fp8), scales, 4, 4),
        BufSpec::input(T::VScales, bufs.v_scales, req(fp8), scales, 4, 4),
        BufSpec::input(
            T::BlockTable,
            bufs.block_table,
            Use::Required,
            table_len,
            4,
            4,
        ),
        BufSpec::input(
            T::CacheSeqlens,
            bufs.cache_seqlens,
            Use::Required,
            batch,
            4,
            4,
        ),
        BufSpec::input(
            T::CuSeqlensQ,
            bufs.cu_seqlens_q,
            req(p.is_varlen()),
            batch + 1,
            4,
            4,
        ),
        BufSpec::input(T::AlibiSlopes, bufs.alibi_slopes, req(p.alibi), hq, 4, 4),
        BufSpec::input(T::HeadGates, bufs.head_gates, req(p.gates), hq, 4, 4),
        BufSpec::input(T::Sinks, bufs.sinks, req(p.sinks), hq, 4, 4),
    ]
}

/// The params of the decode and (if any) combine launch of `p` over `bufs` (checked by the
/// caller against [`decode_specs`]): `d_o` output dims, `splits` = (split count, fixed keys per
/// split or 0, whether the decode writes partial states). Shared with the MLA decode.
pub(crate) fn decode_params(
    p: &DecodeProblem,
    d_o: usize,
    splits: (u32, u32, bool),
    bufs: &DecodeBuffers,
) -> (FlashDecodeParams, Option<MergeStatesParams>) {
    let (num_splits, split_keys, split_output) = splits;
    let fp8 = p.kv_dtype.is_fp8();
    let opt_addr = |on: bool, b: &DevBuf| if on { b.addr } else { 0 };
    let (sq, total_q, hq) = (p.max_seqlen_q(), p.total_q(), p.num_heads_q);
    // lse / entropy: [b, hq, sq_new] padded, [hq, total_q] varlen (row stride 1).
    let rows = StatRows {
        varlen: p.is_varlen(),
        heads_q: hq,
        seqlen_q: sq,
        total_q,
    };
    let (lse_batch_stride, lse_head_stride) = rows.strides();
    let rows_per_batch = if p.is_varlen() { total_q } else { sq };
    let mut opt = pack_attn_options(&p.options, p.head_dim, rows);
    if split_output {
        opt.flags |= abi::FLASHMHA_DECODE_FLAG_SPLIT_OUTPUT;
    }
    opt.lse = opt_addr(p.lse && !split_output, &bufs.lse) as *mut f32;
    opt.entropy = opt_addr(p.entropy && !split_output, &bufs.entropy) as *mut f32;
    opt.alibi_slopes = opt_addr(p.alibi, &bufs.alibi_slopes) as *const f32;
    opt.head_gates = opt_addr(p.gates && !split_output, &bufs.head_gates) as *const f32;
    // A split decode's rows join their sink once, in split 0's state (state_merge.cuh).
    opt.sinks = opt_addr(p.sinks, &bufs.sinks) as *const f32;
    let (magic, shift) = page_divisor(p.page_size as u32);
    let decode = FlashDecodeParams {
        q: bufs.q.addr as *const _,
        k_cache: bufs.k_cache.addr as *const _,
        v_cache: bufs.v_cache.addr as *const _,
        o: bufs.o.addr as *mut _,
        block_table: bufs.block_table.addr as *const i32,
        cache_seqlens: bufs.cache_seqlens.addr as *const i32,
        cu_seqlens_q: opt_addr(p.is_varlen(), &bufs.cu_seqlens_q) as *const i32,
        partial_o: opt_addr(split_output, &bufs.partial_o) as *mut f32,
        partial_lse: opt_addr(split_output, &bufs.partial_lse) as *mut f32,
        partial_entropy: opt_addr(split_output && p.entropy, &bufs.partial_entropy) as *mut f32,
        k_scales: opt_addr(fp8, &bufs.k_scales) as *const f32,
        v_scales: opt_addr(fp8, &bufs.v_scales) as *const f32,
        q_batch_stride: p.q_strides.batch,
        q_row_stride: p.q_strides.row,
        q_head_stride: p.q_strides.head,
        o_batch_stride: p.o_strides.batch,
        o_row_stride: p.o_strides.row,
        o_head_stride: p.o_strides.head,
        k_page_stride: p.k_strides.page,
        k_slot_stride: p.k_strides.slot,
        k_head_stride: p.k_strides.head,
        v_page_stride: p.v_strides.page,
        v_slot_stride: p.v_strides.slot,
        v_head_stride: p.v_strides.head,
        block_table_stride: p.block_table_stride as i64,
        page_div_magic: magic,
        opt,
        batch: p.batch as i32,
        num_heads_q: hq as i32,
        num_heads_kv: p.num_heads_kv as i32,
        head_dim: p.head_dim as i32,
        seqlen_q: sq as i32,
        total_q: total_q as i32,
        num_pages: p.num_pages as i32,
        page_size: p.page_size as i32,
        max_pages_per_seq: p.max_pages_per_seq as i32,
        page_div_shift: shift,
        num_splits: num_splits as i32,
        split_keys: split_keys as i32,
        kv_format: p.kv_dtype.format(),
        kv_scale_stride: p.kv_scales.stride(),
    };
    let combine = split_output.then(|| {
        let d = d_o as i64;
        MergeStatesParams {
            o_states: bufs.partial_o.addr as *const _,
            lse_states: bufs.partial_lse.addr as *const f32,
            entropy_states: opt_addr(p.entropy, &bufs.partial_entropy) as *const f32,
            o_states_b: std::ptr::null(),
            lse_states_b: std::ptr::null(),
            entropy_states_b: std::ptr::null(),
            o: bufs.o.addr as *mut _,
            lse: opt_addr(p.lse, &bufs.lse) as *mut f32,
            entropy: opt_addr(p.entropy, &bufs.entropy) as *mut f32,
            head_gates: opt_addr(p.gates, &bufs.head_gates) as *const f32,
            o_state_stride: (total_q * hq) as i64 * d,
            o_state_row_stride: hq as i64 * d,
            o_state_head_stride: d,
            lse_state_stride: (total_q * hq) as i64,
            lse_state_row_stride: hq as i64,
            lse_state_head_stride: 1,
            o_batch_stride: if p.is_varlen() { 0 } else { p.o_strides.batch },
            o_row_stride: p.o_strides.row,
            o_head_stride: p.o_strides.head,
            lse_batch_stride,
            lse_head_stride,
            num_states: num_splits as i32,
            rows: total_q as i32,
            heads: hq as i32,
            head_dim: d_o as i32,
            rows_per_batch: rows_per_batch as i32,
            pad0: 0,
        }
    });
    (decode, combine)
}

/// Elements the o tensor of `p` spans with `d_o` dims per row (saturating).
fn o_span(p: &DecodeProblem, d_o: usize) -> u64 {
    u64::try_from(span(&p.q_dims(&p.o_strides), d_o)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::dtype::DType;

    #[test]
    fn page_divisor_is_exact_for_every_page_size() {
        for ps in 1..=1024u32 {
            let (m, s) = page_divisor(ps);
            let keys = [0u64, 1, 2, 1023, 1024, 12345, (1 << 30) - 1, (1 << 30) - 2];
            for key in keys
                .into_iter()
                .chain((0..3 * ps as u64).step_by(1 + ps as usize / 7))
            {
                assert_eq!((key * m) >> s, key / u64::from(ps), "page {ps} key {key}");
            }
            // The largest key of every page boundary near the top of the range.
            let top = ((1u64 << 30) - 1) / u64::from(ps) * u64::from(ps);
            for key in [top - 1, top] {
                assert_eq!((key * m) >> s, key / u64::from(ps));
            }
        }
    }

    #[test]
    fn heuristic_splits_small_grids_and_leaves_full_ones() {
        // 108 SMs (A100): 216 CTAs fill it twice over.
        assert_eq!(choose_splits(216, 1, 1 << 20, 108), 1);
        assert_eq!(choose_splits(1000, 1, 1 << 20, 108), 1);
        // One sequence, 8 KV heads, long cache: 216 / 8 = 27 splits.
        assert_eq!(choose_splits(8, 1, 1 << 16, 108), 27);
        // Short cache caps it: 1000 keys allow 3 splits of >= 256 keys ...
        assert_eq!(choose_splits(8, 1, 1000, 108), 3);
        // ... and with 4 rows per KV head (GQA 4, 1 token) splits need 1024 keys: 1, or 4 of
        // 4096 keys.
        assert_eq!(choose_splits(8, 4, 1000, 108), 1);
        assert_eq!(choose_splits(8, 4, 4096, 108), 4);
        assert_eq!(choose_splits(8, 16, 4096, 108), 1);
        assert_eq!(choose_splits(1, 1, 100, 108), 1);
        assert_eq!(choose_splits(1, 1, 1 << 29, 1000), MAX_SPLITS);
    }

    fn shape(base_ctas: u64, tile_rows: u64, max_cache_len: u64) -> SplitShape {
        SplitShape {
            base_ctas,
            tile_rows,
            max_cache_len,
            kv_bytes_per_key: 512,
            d_o: 128,
            max_resident: 2,
        }
    }

    #[test]
    fn timed_rule_fills_the_sms_at_batch_one_and_leaves_full_grids() {
        // A full grid (a CTA per SM and more): splitting adds only combine work.
        assert_eq!(choose_splits_timed(&shape(216, 16, 4096), 108), 1);
        assert_eq!(choose_splits_timed(&shape(108, 32, 1 << 16), 108), 1);
        assert!(choose_splits_timed(&shape(107, 32, 1 << 16), 108) > 1);
        assert_eq!(choose_splits_timed(&shape(5000, 16, 1 << 20), 108), 1);
        // One sequence, 8 KV heads, 4096 keys: the byte rule gave 1-4 splits (8-32 CTAs on 108
        // SMs); the timed rule spreads the call over most of the SMs, at most two per SM.
        for tile_rows in [16, 32] {
            let s = choose_splits_timed(&shape(8, tile_rows, 4096), 108);
            let ctas = 8 * u64::from(s);
            assert!((54..=216).contains(&ctas), "{tile_rows} rows: {s} splits");
        }
        // Long caches: the chosen count makes the call DRAM-bound (within 15% of the K/V
        // bytes at the DRAM rate, the combine on top), where one split would leave it
        // latency-bound on 8 SMs.
        for len in [16384u64, 65536] {
            let sh = shape(8, 16, len);
            let s = choose_splits_timed(&sh, 108);
            let dram = 8.0 * len as f64 * 512.0 / (DRAM_BYTES_PER_CLK_PER_SM * 108.0);
            let t = split_cost_clocks(&sh, s, 108);
            assert!(
                t <= 1.15 * dram,
                "{len}: {s} splits, {t} clocks vs DRAM {dram}"
            );
            assert!(split_cost_clocks(&sh, 1, 108) > 3.0 * dram);
        }
        // Fewer than two aligned chunks: one split.
        assert_eq!(choose_splits_timed(&shape(1, 16, 100), 108), 1);
        // Absurd sizes stay in range without panicking.
        for (b, l) in [(u64::MAX, u64::MAX), (1, u64::MAX), (u64::MAX, 1), (0, 0)] {
            let s = choose_splits_timed(&shape(b, 16, l), 0);
            assert!((1..=MAX_SPLITS).contains(&s));
            assert!(split_cost_clocks(&shape(b, 16, l), s, 0).is_finite());
        }
    }

    #[test]
    fn auto_policy_uses_the_timed_rule() {
        // 1 item, 8 KV heads, group 1, 1 new token, d128 f16, 4096 cached keys.
        let mut p = DecodeProblem::contiguous(DType::F16, 1, 1, 8, 8, 128, 256, 16, 256, false);
        p.max_cache_len = 4096;
        let plan = DecodePlan::new(&p, SplitPolicy::Auto { num_sms: 108 }).unwrap();
        // d128 f16: 74.5 KB per CTA, one per SM on the smallest sm_80+ SM.
        let one_per_sm = SplitShape {
            max_resident: 1,
            ..shape(8, 16, 4096)
        };
        let want = choose_splits_timed(&one_per_sm, 108);
        assert_eq!(plan.num_splits, want);
        assert!(want > 4, "{want}");
        assert_eq!(plan.combine.is_some(), want > 1);
        assert_eq!(plan.decode.grid, [want, 8, 1]);
    }

    fn problem() -> DecodeProblem {
        DecodeProblem::contiguous(DType::F16, 3, 2, 8, 2, 128, 40, 16, 10, false)
    }

    #[test]
    fn plan_sizes_grid_and_workspace() {
        let p = problem();
        let plan = DecodePlan::new(&p, SplitPolicy::Count(4)).unwrap();
        // rows per KV head: group 4 x 2 new tokens = 8 -> one 16-row tile.
        assert_eq!(plan.decode.grid, [4, 2, 3]);
        assert_eq!(plan.workspace.partial_lse, 4 * 6 * 8);
        assert_eq!(plan.workspace.partial_o, 4 * 6 * 8 * 128);
        assert!(plan.combine.is_some());
        let one = DecodePlan::new(&p, SplitPolicy::Count(1)).unwrap();
        assert_eq!(one.workspace, WorkspaceLayout::default());
        assert!(one.combine.is_none());
        let fixed = DecodePlan::new(&p, SplitPolicy::FixedKeys(64)).unwrap();
        assert_eq!(fixed.num_splits, 3); // 160 keys / 64
        assert!(fixed.combine.is_some());
        assert!(matches!(
            DecodePlan::new(&p, SplitPolicy::FixedKeys(100)),
            Err(Error::SplitKeys {
                found: 100,
                align: 64
            })
        ));
        assert!(matches!(
            DecodePlan::new(&p, SplitPolicy::Count(MAX_SPLITS + 1)),
            Err(Error::SplitCount { found, max: MAX_SPLITS }) if found == u64::from(MAX_SPLITS) + 1
        ));
    }

    #[test]
    fn invalid_problems_get_typed_errors() {
        use crate::common::error::{AlignWhat, Dim};
        // One field broken at a time, each with the error that names it.
        type Case = (fn(&mut DecodeProblem), fn(&Error) -> bool);
        let cases: [Case; 5] = [
            (
                |p| p.page_size = 1025,
                |e| {
                    matches!(
                        e,
                        Error::DimTooLarge {
                            tensor: TensorName::KCache,
                            dim: Dim::Slot,
                            max: 1024,
                            found: 1025
                        }
                    )
                },
            ),
            (
                |p| p.num_heads_kv = 3,
                |e| {
                    matches!(
                        e,
                        Error::HeadsNotDivisible {
                            heads_q: 8,
                            heads_kv: 3
                        }
                    )
                },
            ),
            (
                |p| (p.head_dim, p.head_dim_v) = (264, 264),
                |e| matches!(e, Error::UnsupportedHeadDim { head_dim: 264, .. }),
            ),
            (
                |p| (p.head_dim, p.head_dim_v) = (44, 44),
                |e| matches!(e, Error::UnsupportedHeadDim { head_dim: 44, .. }),
            ),
            (
                |p| p.k_strides.slot = 12,
                |e| {
                    matches!(
                        e,
                        Error::Misaligned {
                            tensor: TensorName::KCache,
                            what: AlignWhat::Stride(Dim::Slot),
                            required: 16,
                            value: 24
                        }
                    )
                },
            ),
        ];
        for (i, (break_it, expected)) in cases.iter().enumerate() {
            let mut p = problem();
            break_it(&mut p);
            let e = DecodePlan::new(&p, SplitPolicy::Count(1)).unwrap_err();
            assert!(expected(&e), "case {i}: {e:?}");
        }
        let plan = DecodePlan::new(&problem(), SplitPolicy::Count(2)).unwrap();
        // The binding table lists outputs first: with nothing bound, O is the first missing.
        let err = plan.params(&DecodeBuffers::default()).unwrap_err();
        assert!(matches!(
            err,
            Error::MissingBuffer {
                tensor: TensorName::O
            }
        ));
    }

    #[test]
    fn off_table_head_dims_plan_onto_the_narrowest_wider_kernel() {
        // 16-bit pages: the forward's rule (issue 23); the workspace holds the real width.
        for (d, entry) in [
            (48, "flashmha_decode_f16_d64"),
            (72, "flashmha_decode_f16_d80"),
            (112, "flashmha_decode_f16_d128"),
            (200, "flashmha_decode_f16_d256"),
        ] {
            let p = DecodeProblem::contiguous(DType::F16, 1, 1, 2, 2, d, 4, 16, 2, false);
            let plan = DecodePlan::new(&p, SplitPolicy::Count(2)).unwrap();
            assert_eq!(plan.decode.entry, entry, "d{d}");
            // 2 splits x 1 row x 2 heads, d wide each.
            assert_eq!(plan.workspace.partial_o, 2 * 2 * d as u64, "d{d}");
        }
        // More than 16 rows per KV head: the 32-row tile of the serving width.
        let p = DecodeProblem::contiguous(DType::F16, 1, 1, 32, 1, 120, 4, 16, 1, false);
        let plan = DecodePlan::new(&p, SplitPolicy::Count(1)).unwrap();
        assert_eq!(plan.decode.entry, "flashmha_decode_f16_d128_r32");
    }

    #[test]
    fn fp8_pools_plan_onto_fp8_entries_with_typed_errors() {
        use crate::ops::decode::fp8::{KvCacheDType, KvScaleGranularity};
        let mut p = problem();
        p.kv_dtype = KvCacheDType::Fp8E4M3;
        p.kv_scales = KvScaleGranularity::PerKvHead;
        let plan = DecodePlan::new(&p, SplitPolicy::Count(2)).unwrap();
        assert_eq!(plan.kernel.entry, "flashmha_decode_f16_fp8_d128");
        assert_eq!(plan.kernel.kv_bytes, 1);
        // FP8 strides are bytes: a 16-byte row step is 16 codes, 8 is misaligned.
        let mut bad = p.clone();
        bad.k_strides.slot = 8;
        assert!(matches!(
            DecodePlan::new(&bad, SplitPolicy::Count(1)),
            Err(Error::Misaligned {
                tensor: TensorName::KCache,
                what: crate::common::error::AlignWhat::Stride(crate::common::error::Dim::Slot),
                ..
            })
        ));
        // No FP8 entry for d80: the error lists the FP8 head dims only.
        let mut d80 = DecodeProblem::contiguous(DType::F16, 1, 1, 2, 2, 80, 4, 16, 2, false);
        d80.kv_dtype = KvCacheDType::Fp8E5M2;
        match DecodePlan::new(&d80, SplitPolicy::Count(1)) {
            Err(Error::UnsupportedHeadDim { supported, .. }) => {
                assert!(!supported.contains(&80) && supported.contains(&128))
            }
            other => panic!("{other:?}"),
        }
        // Every buffer present but the V scales: a typed error naming them.
        let b = |addr: u64| DevBuf { addr, len: 1 << 30 };
        let bufs = DecodeBuffers {
            q: b(0x1000_0000),
            k_cache: b(0x2000_0000),
            v_cache: b(0x3000_0000),
            o: b(0x4000_0000),
            block_table: b(0x5000_0000),
            cache_seqlens: b(0x6000_0000),
            partial_o: b(0x7000_0000),
            partial_lse: b(0x8000_0000),
            k_scales: b(0x9000_0000),
            ..DecodeBuffers::default()
        };
        assert!(matches!(
            plan.params(&bufs),
            Err(Error::MissingBuffer {
                tensor: TensorName::VScales
            })
        ));
        let (params, _) = plan
            .params(&DecodeBuffers {
                v_scales: b(0xa000_0000),
                ..bufs
            })
            .unwrap();
        assert_eq!(params.kv_format, abi::FLASHMHA_KV_FORMAT_E4M3 as i32);
        assert_eq!(params.kv_scale_stride, 1);
    }

    #[test]
    fn more_than_16_rows_per_kv_head_take_the_32_row_tile() {
        // GQA 8 x 4 new tokens = 32 rows: one 32-row tile per KV head.
        let p = DecodeProblem::contiguous(DType::Bf16, 2, 4, 16, 2, 64, 40, 16, 10, true);
        let plan = DecodePlan::new(&p, SplitPolicy::Count(1)).unwrap();
        assert_eq!(plan.kernel.entry, "flashmha_decode_bf16_d64_r32");
        assert_eq!(plan.decode.grid, [1, 2, 2]);
        // 40 rows: two 32-row tiles; d96 has no wide entry: three 16-row tiles.
        let p = DecodeProblem::contiguous(DType::F16, 1, 5, 16, 2, 128, 40, 16, 10, false);
        assert_eq!(
            DecodePlan::new(&p, SplitPolicy::Count(1))
                .unwrap()
                .decode
                .grid[1],
            4
        );
        let p = DecodeProblem::contiguous(DType::F16, 1, 5, 16, 2, 96, 40, 16, 10, false);
        let plan = DecodePlan::new(&p, SplitPolicy::Count(1)).unwrap();
        assert_eq!(plan.kernel.entry, "flashmha_decode_f16_d96");
        assert_eq!(plan.decode.grid[1], 2 * 3);
    }

    #[test]
    fn hopper_decodes_merges_and_appends_with_the_ampere_kernels() {
        use crate::ops::decode::fp8::{KvCacheDType, KvScaleGranularity};
        use crate::ops::decode::kernels::{merge_states_entry, KV_APPEND_FP8_ENTRY};
        use crate::ops::kv_append::{AppendIndex, KvAppendPlan};
        use crate::ops::merge::{MergePlan, MergeProblem, MergeStates, StatsLayout};
        let h = KernelTarget::Hopper;
        // sm_90 has a forward of its own only: decode rows and the combine are Ampere's, and a
        // device check compares them with the device's shared_kernels().
        let plan = DecodePlan::new_for(h, &problem(), SplitPolicy::Count(4)).unwrap();
        assert_eq!(plan.kernel.target, KernelTarget::Ampere);
        assert_eq!(plan.decode.entry, "flashmha_decode_f16_d128");
        assert_eq!(
            plan.combine.map(|c| c.entry),
            Some("flashmha_combine_splits_f16")
        );
        let bf16 = DecodeProblem::contiguous(DType::Bf16, 3, 2, 8, 2, 128, 40, 16, 10, false);
        let plan = DecodePlan::new_for(h, &bf16, SplitPolicy::Count(2)).unwrap();
        assert_eq!(plan.decode.entry, "flashmha_decode_bf16_d128");
        assert_eq!(
            plan.combine.map(|c| c.entry),
            Some("flashmha_combine_splits_bf16")
        );
        // FP8 pages and their quantising append: Ampere features sm_90 has too.
        let mut fp8 = problem();
        fp8.kv_dtype = KvCacheDType::Fp8E4M3;
        fp8.kv_scales = KvScaleGranularity::PerTensor;
        let plan = DecodePlan::new_for(h, &fp8, SplitPolicy::Count(1)).unwrap();
        assert_eq!(plan.kernel.target, KernelTarget::Ampere);
        assert_eq!(plan.kernel.kv_bytes, 1);
        let append = KvAppendPlan::new_for(h, &fp8, 3, AppendIndex::Slots).unwrap();
        assert_eq!(append.launch.entry, KV_APPEND_FP8_ENTRY);
        // bf16 merge_states.
        let merge = MergeProblem {
            dtype: DType::Bf16,
            states: MergeStates::Pair,
            rows: 5,
            heads: 2,
            head_dim: 64,
            lse_layout: StatsLayout::HeadsRows,
        };
        let plan = MergePlan::new_for(h, &merge).unwrap();
        assert_eq!(plan.launch.entry, merge_states_entry(DType::Bf16));
    }

    #[test]
    fn turing_plans_use_sm75_entries_and_reject_what_sm75_lacks() {
        use crate::ops::decode::fp8::{KvCacheDType, KvScaleGranularity};
        let t = KernelTarget::Turing;
        // f16 d128 with splits: the sm_75 decode and the sm_75 combine.
        let plan = DecodePlan::new_for(t, &problem(), SplitPolicy::Count(4)).unwrap();
        assert_eq!(plan.kernel.target, t);
        assert_eq!(plan.decode.entry, "flashmha_decode_sm75_f16_d128");
        assert_eq!(
            plan.combine.map(|c| c.entry),
            Some("flashmha_combine_splits_sm75_f16")
        );
        // Turing tiles fit its 64 KiB of shared memory.
        assert!(plan.decode.dynamic_smem_bytes <= abi::FLASHMHA_SM75_MAX_DYNAMIC_SMEM_BYTES);
        // 32 packed rows at d64: the wide Turing tile; at d128 (no wide Turing tile) two 16-row
        // tiles per KV head.
        let p = DecodeProblem::contiguous(DType::F16, 2, 4, 16, 2, 64, 40, 16, 10, true);
        let plan = DecodePlan::new_for(t, &p, SplitPolicy::Count(1)).unwrap();
        assert_eq!(plan.decode.entry, "flashmha_decode_sm75_f16_d64_r32");
        let p = DecodeProblem::contiguous(DType::F16, 2, 4, 16, 2, 128, 40, 16, 10, true);
        let plan = DecodePlan::new_for(t, &p, SplitPolicy::Count(1)).unwrap();
        assert_eq!(plan.decode.entry, "flashmha_decode_sm75_f16_d128");
        assert_eq!(plan.decode.grid[1], 2 * 2);
        // bf16: no bf16 mma on sm_75.
        let bf16 = DecodeProblem::contiguous(DType::Bf16, 3, 2, 8, 2, 128, 40, 16, 10, false);
        assert!(matches!(
            DecodePlan::new_for(t, &bf16, SplitPolicy::Count(1)),
            Err(Error::UnsupportedDType {
                dtype: DType::Bf16,
                target: KernelTarget::Turing
            })
        ));
        // FP8 pages: an Ampere-and-newer feature.
        let mut fp8 = problem();
        fp8.kv_dtype = KvCacheDType::Fp8E4M3;
        fp8.kv_scales = KvScaleGranularity::PerTensor;
        assert!(matches!(
            DecodePlan::new_for(t, &fp8, SplitPolicy::Count(1)),
            Err(Error::UnsupportedOnTarget {
                target: KernelTarget::Turing,
                ..
            })
        ));
        // d256: no 0-spill Turing tile; the error lists the Turing head dims.
        let d256 = DecodeProblem::contiguous(DType::F16, 1, 1, 2, 2, 256, 4, 16, 2, false);
        match DecodePlan::new_for(t, &d256, SplitPolicy::Count(1)) {
            Err(Error::UnsupportedHeadDim {
                target: KernelTarget::Turing,
                supported,
                ..
            }) => assert!(!supported.contains(&256) && supported.contains(&128)),
            other => panic!("{other:?}"),
        }
        // The same problem plans onto the Ampere entry by default.
        assert_eq!(
            DecodePlan::new(&problem(), SplitPolicy::Count(1))
                .unwrap()
                .decode
                .entry,
            "flashmha_decode_f16_d128"
        );
    }
}
