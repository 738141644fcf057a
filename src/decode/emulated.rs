//! Runs decode plans on the emulator from host data: allocates exactly the buffers the problem
//! describes (the page pools hold `num_pages` pages and nothing more, so a stray read past them
//! is an out-of-bounds finding), poisons every output and the workspace with NaN, launches the
//! decode kernel and, if planned, the split combine, with the same params bytes the CUDA backend
//! would pass, and returns the outputs with both launches' reports.

use super::plan::{DecodeBuffers, DecodePlan, DeviceBuf, Launch};
use crate::abi::ParamsBytes;
use crate::build_info;
use crate::emulator::{Device, DevicePtr, LaunchConfig, LaunchReport, Module};
use crate::error::{Dim, Error, Result, TensorName};
use std::sync::Arc;

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

/// Parsed PTX of the module defining `entry`, from the crate's one per-process cache.
pub(crate) fn module(entry: &'static str) -> Result<Arc<Module>> {
    if build_info::module_of(entry).is_none() {
        return Err(Error::NoKernel {
            entry: entry.to_string(),
        });
    }
    crate::backend::emulator::parsed_module(entry)
}

/// Uploads `data` (any plain type) and returns it as a [`DeviceBuf`] of `data.len()` elements.
pub(crate) fn put<T: bytemuck::Pod>(dev: &mut Device, data: &[T]) -> Result<DeviceBuf> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let ptr = dev.alloc(bytes.len().max(1));
    dev.write(ptr, bytes)?;
    Ok(DeviceBuf {
        addr: ptr.0,
        len: data.len() as u64,
    })
}

pub(crate) fn get<T: bytemuck::Pod>(dev: &Device, b: DeviceBuf) -> Result<Vec<T>> {
    let bytes = dev.read(DevicePtr(b.addr), b.len as usize * std::mem::size_of::<T>())?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

pub(crate) fn launch(dev: &mut Device, l: &Launch, params: &[u8]) -> Result<LaunchReport> {
    let m = module(l.entry)?;
    let cfg = LaunchConfig {
        grid: l.grid,
        block: l.block,
        dynamic_smem_bytes: l.dynamic_smem_bytes,
    };
    Ok(dev.launch(&m, l.entry, &cfg, params)?)
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
    let (decode_params, combine_params) = plan.params(&bufs)?;
    let decode_report = launch(dev, &plan.decode, decode_params.as_bytes())?;
    let combine_report = match (&plan.combine, &combine_params) {
        (Some(l), Some(cp)) => Some(launch(dev, l, cp.as_bytes())?),
        _ => None,
    };
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
    /// `[heads, rows]` (one batch of `rows`).
    pub lse: Vec<f32>,
    pub report: LaunchReport,
}

/// Merges `num_states` states of `dtype` on the emulator: `o_states: [num_states, rows, heads, d]`
/// (raw bits), `lse_states: [num_states, rows, heads]`; contiguous.
pub fn merge_states(
    dtype: crate::dtype::DType,
    o_states: &[u16],
    lse_states: &[f32],
    num_states: usize,
    rows: usize,
    heads: usize,
    head_dim: usize,
) -> Result<MergeRun> {
    use super::kernels::{merge_states_entry, MERGE_WARPS};
    let n = rows * heads;
    check_len(
        TensorName::OStates,
        num_states * n * head_dim,
        o_states.len(),
    )?;
    check_len(TensorName::LseStates, num_states * n, lse_states.len())?;
    for (dim, n) in [
        (Dim::State, num_states),
        (Dim::Seq, rows),
        (Dim::Heads, heads),
    ] {
        if n == 0 {
            return Err(Error::EmptyDim {
                tensor: TensorName::OStates,
                dim,
            });
        }
    }
    if !head_dim.is_multiple_of(4) {
        return Err(Error::Misaligned {
            tensor: TensorName::OStates,
            what: crate::error::AlignWhat::HeadDim,
            required: 8,
            value: 2 * head_dim as u64,
        });
    }
    let mut dev = Device::new();
    let os = put(&mut dev, o_states)?;
    let ls = put(&mut dev, lse_states)?;
    let o = put(&mut dev, &vec![POISON_U16; n * head_dim])?;
    let lse = put(&mut dev, &vec![f32::NAN; n])?;
    let d = head_dim as i64;
    let params = crate::abi::MergeStatesParams {
        o_states: os.addr as *const _,
        lse_states: ls.addr as *const f32,
        entropy_states: std::ptr::null(),
        o: o.addr as *mut _,
        lse: lse.addr as *mut f32,
        entropy: std::ptr::null_mut(),
        head_gates: std::ptr::null(),
        o_state_stride: n as i64 * d,
        o_state_row_stride: heads as i64 * d,
        o_state_head_stride: d,
        lse_state_stride: n as i64,
        lse_state_row_stride: heads as i64,
        lse_state_head_stride: 1,
        o_batch_stride: 0,
        o_row_stride: heads as i64 * d,
        o_head_stride: d,
        lse_batch_stride: 0,
        lse_head_stride: rows as i64,
        num_states: num_states as i32,
        rows: rows as i32,
        heads: heads as i32,
        head_dim: head_dim as i32,
        rows_per_batch: rows as i32,
        pad0: 0,
    };
    let l = Launch {
        entry: merge_states_entry(dtype),
        grid: [(n as u32).div_ceil(MERGE_WARPS), 1, 1],
        block: [MERGE_WARPS * crate::plan::WARP_SIZE, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let report = launch(&mut dev, &l, params.as_bytes())?;
    Ok(MergeRun {
        o: get(&dev, o)?,
        lse: get(&dev, lse)?,
        report,
    })
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
    p: &super::problem::DecodeProblem,
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
    p: &super::problem::DecodeProblem,
    pools: &HostPools,
    k_new: &[u16],
    v_new: &[u16],
    target: AppendTarget,
) -> Result<(HostPools, LaunchReport)> {
    use super::kernels::{KV_APPEND_ENTRY, KV_APPEND_FP8_ENTRY, KV_APPEND_THREADS};
    let (hkv, d) = (p.num_heads_kv, p.head_dim);
    let tokens = target.tokens();
    super::validate::validate_kv_append(p, tokens)?;
    let (k_span, v_span) = (
        p.cache_span(&p.k_strides) as usize,
        p.cache_span(&p.v_strides) as usize,
    );
    check_len(TensorName::KNew, tokens * hkv * d, k_new.len())?;
    check_len(TensorName::VNew, tokens * hkv * d, v_new.len())?;
    let mut dev = Device::new();
    let fp8 = p.kv_dtype.is_fp8();
    let (kc, vc, ks, vs) = match pools {
        HostPools::Bits16 { k, v } if !fp8 => {
            check_len(TensorName::KCache, k_span, k.len())?;
            check_len(TensorName::VCache, v_span, v.len())?;
            (
                put(&mut dev, k)?,
                put(&mut dev, v)?,
                DeviceBuf::default(),
                DeviceBuf::default(),
            )
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
            (
                put(&mut dev, k)?,
                put(&mut dev, v)?,
                put(&mut dev, k_scales)?,
                put(&mut dev, v_scales)?,
            )
        }
        _ => {
            let name = |fp8: bool| if fp8 { "FP8 codes" } else { "16-bit" };
            return Err(Error::KvPoolMismatch {
                expected: name(fp8),
                found: name(!fp8),
            });
        }
    };
    let kn = put(&mut dev, k_new)?;
    let vn = put(&mut dev, v_new)?;
    let none = DeviceBuf::default();
    let (sm, bt, tb, tp) = match target {
        AppendTarget::Slots(s) => (put(&mut dev, s)?, none, none, none),
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
            (
                none,
                put(&mut dev, block_table)?,
                put(&mut dev, token_batch)?,
                put(&mut dev, token_pos)?,
            )
        }
    };
    let params = crate::abi::KvAppendParams {
        k_new: kn.addr as *const _,
        v_new: vn.addr as *const _,
        k_cache: kc.addr as *mut _,
        v_cache: vc.addr as *mut _,
        slot_mapping: sm.addr as *const i32,
        block_table: bt.addr as *const i32,
        token_batch: tb.addr as *const i32,
        token_pos: tp.addr as *const i32,
        k_scales: ks.addr as *const f32,
        v_scales: vs.addr as *const f32,
        k_new_token_stride: (hkv * d) as i64,
        k_new_head_stride: d as i64,
        v_new_token_stride: (hkv * d) as i64,
        v_new_head_stride: d as i64,
        k_page_stride: p.k_strides.page,
        k_slot_stride: p.k_strides.slot,
        k_head_stride: p.k_strides.head,
        v_page_stride: p.v_strides.page,
        v_slot_stride: p.v_strides.slot,
        v_head_stride: p.v_strides.head,
        block_table_stride: p.block_table_stride as i64,
        num_tokens: tokens as i32,
        num_heads_kv: hkv as i32,
        head_dim: d as i32,
        num_pages: p.num_pages as i32,
        page_size: p.page_size as i32,
        batch: p.batch as i32,
        max_pages_per_seq: p.max_pages_per_seq as i32,
        kv_format: p.kv_dtype.format(),
        kv_scale_stride: p.kv_scales.stride(),
        flags: if p.dtype == crate::dtype::DType::Bf16 {
            crate::abi::FLASHMHA_KV_APPEND_FLAG_SRC_BF16
        } else {
            0
        },
    };
    let chunks = (tokens * hkv * d / 8) as u32;
    let l = Launch {
        entry: if fp8 {
            KV_APPEND_FP8_ENTRY
        } else {
            KV_APPEND_ENTRY
        },
        grid: [chunks.div_ceil(KV_APPEND_THREADS).max(1), 1, 1],
        block: [KV_APPEND_THREADS, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let report = launch(&mut dev, &l, params.as_bytes())?;
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
