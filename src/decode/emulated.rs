//! Runs decode plans on the emulator from host data: allocates exactly the buffers the problem
//! describes (the page pools hold `num_pages` pages and nothing more, so a stray read past them
//! is an out-of-bounds finding), poisons every output and the workspace with NaN, launches the
//! decode kernel and, if planned, the split combine, with the same params bytes the CUDA backend
//! would pass, and returns the outputs with both launches' reports.

use super::error::DecodeError;
use super::plan::{DecodeBuffers, DecodePlan, DeviceBuf, Launch};
use crate::abi::ParamsBytes;
use crate::build_info;
use crate::emulator::{Device, DevicePtr, LaunchConfig, LaunchReport, Module};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// NaN in f16 and bf16; doubled, NaN in f32.
const POISON_U16: u16 = 0xFFFF;

/// Host data of one decode call. 16-bit tensors are raw bit patterns of the problem's dtype.
#[derive(Debug, Clone, Default)]
pub struct DecodeHostInputs {
    pub q: Vec<u16>,
    pub k_cache: Vec<u16>,
    pub v_cache: Vec<u16>,
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

/// Parsed PTX of the module defining `entry`, once per process.
pub(crate) fn module(entry: &'static str) -> Result<Arc<Module>, DecodeError> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<Module>>>> = OnceLock::new();
    let image = build_info::module_of(entry).ok_or(DecodeError::NoKernel { entry })?;
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap().get(image.name) {
        return Ok(m.clone());
    }
    let m = Arc::new(Module::parse(image.ptx).map_err(|e| DecodeError::Emulator(e.to_string()))?);
    cache.lock().unwrap().insert(image.name, m.clone());
    Ok(m)
}

fn emu(e: crate::emulator::EmuError) -> DecodeError {
    DecodeError::Emulator(e.to_string())
}

/// Uploads `data` (any plain type) and returns it as a [`DeviceBuf`] of `data.len()` elements.
pub(crate) fn put<T: bytemuck::Pod>(
    dev: &mut Device,
    data: &[T],
) -> Result<DeviceBuf, DecodeError> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let ptr = dev.alloc(bytes.len().max(1));
    dev.write(ptr, bytes).map_err(emu)?;
    Ok(DeviceBuf {
        addr: ptr.0,
        len: data.len() as u64,
    })
}

pub(crate) fn get<T: bytemuck::Pod>(dev: &Device, b: DeviceBuf) -> Result<Vec<T>, DecodeError> {
    let bytes = dev
        .read(DevicePtr(b.addr), b.len as usize * std::mem::size_of::<T>())
        .map_err(emu)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

pub(crate) fn launch(
    dev: &mut Device,
    l: &Launch,
    params: &[u8],
) -> Result<LaunchReport, DecodeError> {
    let m = module(l.entry)?;
    let cfg = LaunchConfig {
        grid: l.grid,
        block: l.block,
        dynamic_smem_bytes: l.dynamic_smem_bytes,
    };
    dev.launch(&m, l.entry, &cfg, params).map_err(emu)
}

fn check_len(tensor: &'static str, expected: usize, found: usize) -> Result<(), DecodeError> {
    if expected != found {
        return Err(DecodeError::HostLength {
            tensor,
            expected,
            found,
        });
    }
    Ok(())
}

/// Runs `plan` on a fresh emulated device over `inputs`.
pub fn decode(plan: &DecodePlan, inputs: &DecodeHostInputs) -> Result<DecodeRun, DecodeError> {
    decode_on(&mut Device::new(), plan, inputs)
}

/// [`decode`] on a caller-configured device (e.g. with race checks switched off for speed).
pub fn decode_on(
    dev: &mut Device,
    plan: &DecodePlan,
    inputs: &DecodeHostInputs,
) -> Result<DecodeRun, DecodeError> {
    let p = &plan.problem;
    check_len("q", p.q_span(&p.q_strides) as usize, inputs.q.len())?;
    check_len(
        "k_cache",
        p.cache_span(&p.k_strides) as usize,
        inputs.k_cache.len(),
    )?;
    check_len(
        "v_cache",
        p.cache_span(&p.v_strides) as usize,
        inputs.v_cache.len(),
    )?;
    check_len("cache_seqlens", p.batch, inputs.cache_seqlens.len())?;
    let opt_len = |v: &Option<Vec<f32>>| v.as_ref().map_or(0, Vec::len);
    check_len(
        "alibi_slopes",
        if p.alibi { p.num_heads_q } else { 0 },
        opt_len(&inputs.alibi_slopes),
    )?;
    check_len(
        "head_gates",
        if p.gates { p.num_heads_q } else { 0 },
        opt_len(&inputs.head_gates),
    )?;

    let mut bufs = DecodeBuffers {
        q: put(dev, &inputs.q)?,
        k_cache: put(dev, &inputs.k_cache)?,
        v_cache: put(dev, &inputs.v_cache)?,
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
