//! The emulator backend: executes any op's [`Launch`] on [`crate::emulator`] ([`launch`], the
//! one path), with the same PTX and the same params bytes as the CUDA backend, over buffers
//! allocated on an emulator [`Device`]. Every access the kernel makes is checked by the emulator, so binding emulator
//! allocations is safe whatever their addresses. Touches only the device it is given. For the
//! sm_90a kernels the plan's tensor-map descriptions are encoded here with the emulator's
//! [`TensorMap`] over the bound q / k / v addresses, as the CUDA backend encodes them with the
//! driver. On request ([`EmulatorBackend::trace_ctas`]) every launch also records the
//! instruction traces of chosen CTAs for the SM simulation (`src/perf_model/timing.rs`): the
//! timing hook for ops that run through the generic [`Backend`] path (decode, MLA decode,
//! backward).

use super::{Backend, BoundTensors, Pod, Read, Write};
use crate::common::abi::TENSOR_MAP_BYTES;
use crate::common::binding::DevBuf;
use crate::common::build_info;
use crate::common::error::{EmulatorError, Error, Result, TensorName};
use crate::common::launch::{Launch, Launches};
use crate::common::target::KernelTarget;
use crate::emulator::timing::KernelTrace;
use crate::emulator::{
    Device, DevicePtr, FindingKind, LaunchConfig, LaunchReport, Module, TensorMap, TiledTensorMap,
    TmaDataType, TmaInterleave, TmaL2Promotion, TmaOobFill, TmaSwizzle,
};
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::plan::{FwdLaunch, FwdPlan};
use crate::ops::forward::tma::{TmaElement, TmaMapDesc, TmaSwizzleMode};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

/// The parsed PTX of the module defining `entry`, parsed once per process (parsing dominates
/// small launches). Shared by every emulated launch of the crate's kernels.
pub fn parsed_module(entry: &str) -> Result<Arc<Module>> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<Module>>>> = OnceLock::new();
    let image = build_info::module_of(entry).ok_or_else(|| Error::NoKernel {
        entry: entry.to_string(),
    })?;
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap().get(image.name) {
        return Ok(m.clone());
    }
    let module = Arc::new(Module::parse(image.ptx)?);
    cache.lock().unwrap().insert(image.name, module.clone());
    Ok(module)
}

/// A buffer of `len` elements at an emulator allocation.
pub fn dev_buf(ptr: DevicePtr, len: usize) -> DevBuf {
    DevBuf::new(ptr.0, len)
}

/// Binds `bufs` to `plan` (the same O(1) checks as on a GPU) and runs it on `dev`; returns
/// the launch that ran and the emulator's findings and counters.
pub fn run(dev: &mut Device, plan: &FwdPlan, bufs: &FwdBufs) -> Result<(FwdLaunch, LaunchReport)> {
    let launch = plan.bind(bufs)?;
    let report = launch_bound(dev, &launch)?;
    Ok((launch, report))
}

/// Runs an already bound forward launch on `dev` (its sm_90a tensor maps encoded by the
/// emulator's encoder).
pub fn launch_bound(dev: &mut Device, launch: &FwdLaunch) -> Result<LaunchReport> {
    let l = launch.to_launch(encode_bytes)?;
    self::launch(dev, &l)
}

/// [`encode`] as the 128 bytes a kernel's params carry: the encoder the emulator hands to a
/// plan's launch (`FwdLaunch::to_launch`, `MlaLaunches::to_launches`).
pub fn encode_bytes(
    name: TensorName,
    desc: &TmaMapDesc,
    addr: u64,
) -> Result<[u8; TENSOR_MAP_BYTES]> {
    Ok(*encode(desc, addr, name)?.as_bytes())
}

/// The emulator's launch configuration of `l`.
fn config_of(l: &Launch) -> LaunchConfig {
    LaunchConfig {
        grid: l.grid,
        block: l.block,
        dynamic_smem_bytes: l.dynamic_smem_bytes,
    }
}

/// The one launch path of this backend: runs `l` (any op's) on `dev` with its params bytes.
pub fn launch(dev: &mut Device, l: &Launch) -> Result<LaunchReport> {
    let module = parsed_module(l.entry)?;
    if l.is_cluster() {
        return Ok(dev.launch_cluster(&module, l.entry, &config_of(l), l.cluster, l.params())?);
    }
    Ok(dev.launch(&module, l.entry, &config_of(l), l.params())?)
}

/// [`launch`], also recording the instruction traces of the CTAs `ctas` (grid coordinates;
/// those outside the grid are ignored) for the SM simulation.
pub fn launch_traced(
    dev: &mut Device,
    l: &Launch,
    ctas: &[[u32; 3]],
) -> Result<(LaunchReport, KernelTrace)> {
    if l.is_cluster() {
        // The SM timing model simulates one CTA at a time (emulator/src/timing/mod.rs).
        return Err(Error::Emulator(EmulatorError::Launch(format!(
            "`{}`: the timing model does not simulate cluster launches",
            l.entry
        ))));
    }
    let module = parsed_module(l.entry)?;
    Ok(dev.launch_traced(&module, l.entry, &config_of(l), l.params(), ctas)?)
}

/// The emulator's encoding of one planned map over `addr` (the fields `cuTensorMapEncodeTiled`
/// takes on a GPU). Validation checked the plan's maps against the encoder's rules, so an error
/// here is a bug, reported as a launch error rather than a panic.
pub fn encode(desc: &TmaMapDesc, addr: u64, what: impl std::fmt::Display) -> Result<TensorMap> {
    let tiled = TiledTensorMap {
        data_type: match desc.element {
            TmaElement::U16 => TmaDataType::U16,
        },
        global_address: addr,
        global_dim: desc.global_dim.to_vec(),
        global_strides: desc.global_strides.to_vec(),
        box_dim: desc.box_dim.to_vec(),
        element_strides: vec![1; desc.box_dim.len()],
        interleave: TmaInterleave::None,
        swizzle: match desc.swizzle {
            TmaSwizzleMode::B128 => TmaSwizzle::B128,
        },
        // A cache hint only; the CUDA backend asks for the same.
        l2_promotion: TmaL2Promotion::B128,
        // Zeros: rows past the tensor and columns past head_dim must contribute nothing.
        oob_fill: TmaOobFill::None,
    };
    TensorMap::encode_tiled(&tiled).map_err(|e| {
        Error::Emulator(EmulatorError::Launch(format!(
            "encoding the {what} tensor map: {e}"
        )))
    })
}

/// `Ok` when the launch had no findings; otherwise the count and the first one, as an error
/// (for callers that treat any finding, a device-index `trap` included, as a failure).
pub fn require_clean(report: &LaunchReport) -> Result<()> {
    match report.findings.first() {
        None => Ok(()),
        Some(first) => Err(Error::Emulator(
            crate::common::error::EmulatorError::Findings {
                count: report.findings.len(),
                first: first.to_string(),
            },
        )),
    }
}

/// The emulator as a [`Backend`]: one persistent emulated device whose buffers live between
/// calls (a server's page pools stay on it from step to step, as on a GPU), a stream handle,
/// and the one launch path above. Every launch is checked by the emulator; a finding is a
/// typed error naming the kernel, the bound tensor and the element
/// ([`EmulatorError::KernelFinding`]), and each call's reports (findings and counters) stay
/// readable ([`EmulatorBackend::last_reports`]). Cloning gives another handle to the same device.
#[derive(Clone)]
pub struct EmulatorBackend {
    dev: Arc<EmuDevice>,
    target: KernelTarget,
    sm_count: u32,
}

/// The device behind every handle, buffer and stream of one [`EmulatorBackend`].
struct EmuDevice {
    memory: Mutex<Device>,
    /// Reports of the launches of the last call (at most [`Launches::CAPACITY`]).
    last: Mutex<Vec<(&'static str, LaunchReport)>>,
    tracing: Mutex<Tracing>,
}

/// Instruction traces recorded by the timing hook, by kernel entry in launch order.
pub type EntryTraces = Vec<(&'static str, KernelTrace)>;

/// The timing hook's state: which CTAs of every launch to trace (none: plain launches) and the
/// traces recorded since the last [`EmulatorBackend::take_traces`].
#[derive(Default)]
struct Tracing {
    ctas: Vec<[u32; 3]>,
    traces: EntryTraces,
}

impl EmuDevice {
    fn memory(&self) -> std::sync::MutexGuard<'_, Device> {
        // A panic while the lock was held cannot leave the emulator's memory half-written in a
        // way later calls would misread (each write is one call), so a poisoned lock is used.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EmulatorBackend {
    /// An emulated device running `target`'s kernels, reporting a typical SM count for it
    /// (Turing 40 as a T4, Ampere 108 as an A100, Hopper 132 as an H100) to the split
    /// heuristic; change it with [`EmulatorBackend::with_sm_count`].
    pub fn new(target: KernelTarget) -> EmulatorBackend {
        let sm_count = match target {
            KernelTarget::Turing => 40,
            KernelTarget::Ampere => 108,
            KernelTarget::Hopper => 132,
        };
        EmulatorBackend {
            dev: Arc::new(EmuDevice {
                memory: Mutex::new(Device::new()),
                last: Mutex::new(Vec::new()),
                tracing: Mutex::default(),
            }),
            target,
            sm_count,
        }
    }

    /// The same device reporting `sm_count` SMs (at least 1) to the split heuristic.
    pub fn with_sm_count(mut self, sm_count: u32) -> EmulatorBackend {
        self.sm_count = sm_count.max(1);
        self
    }

    /// The emulator's checks and limits for later launches (race and uninitialised-read
    /// detection, the instruction cap).
    pub fn set_options(&self, options: crate::emulator::EmuOptions) {
        *self.dev.memory().options_mut() = options;
    }

    /// Records, from now on, the instruction traces of the CTAs `ctas` (grid coordinates) of
    /// every launch for the SM simulation (an empty list stops tracing). Tracing costs
    /// emulation time and memory; plain use never asks for it.
    pub fn trace_ctas(&self, ctas: &[[u32; 3]]) {
        let mut t = self.dev.tracing.lock().unwrap_or_else(|p| p.into_inner());
        t.ctas = ctas.to_vec();
    }

    /// The traces recorded since the last call of this method, by entry in launch order.
    pub fn take_traces(&self) -> EntryTraces {
        let mut t = self.dev.tracing.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut t.traces)
    }

    /// The findings and counters of each launch of the last call, by entry.
    pub fn last_reports(&self) -> Vec<(&'static str, LaunchReport)> {
        self.dev
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn owns(&self, dev: &Arc<EmuDevice>) -> Result<()> {
        if Arc::ptr_eq(&self.dev, dev) {
            return Ok(());
        }
        Err(Error::Emulator(EmulatorError::Launch(
            "a buffer or stream of another emulated device was passed".into(),
        )))
    }
}

/// The stream of an [`EmulatorBackend`]: launches run when they are queued, in order, so
/// [`Backend::synchronize`] has nothing to wait for.
#[derive(Clone)]
pub struct EmuStream {
    dev: Arc<EmuDevice>,
}

/// An owned buffer of `T` on an emulated device, freed when dropped.
pub struct EmuBuffer<T> {
    dev: Arc<EmuDevice>,
    addr: u64,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T> EmuBuffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `range` of this buffer as a read-only view, or `None` past its end.
    pub fn try_slice(&self, range: std::ops::Range<usize>) -> Option<EmuView<'_, T>> {
        (range.start <= range.end && range.end <= self.len).then(|| EmuView {
            buf: self,
            offset: range.start,
            len: range.end - range.start,
        })
    }

    /// Elements `range` of this buffer as a writable view, or `None` past its end.
    pub fn try_slice_mut(&mut self, range: std::ops::Range<usize>) -> Option<EmuViewMut<'_, T>> {
        (range.start <= range.end && range.end <= self.len).then(|| EmuViewMut {
            offset: range.start,
            len: range.end - range.start,
            buf: self,
        })
    }

    fn dev_buf(&self, offset: usize, len: usize) -> DevBuf {
        // The allocation held `len * size_of::<T>()` bytes, so the offset fits.
        DevBuf::new(self.addr + (offset * std::mem::size_of::<T>()) as u64, len)
    }
}

impl<T> Drop for EmuBuffer<T> {
    fn drop(&mut self) {
        self.dev.memory().free(DevicePtr(self.addr));
    }
}

/// Part of an [`EmuBuffer`], read-only (as a `CudaView`).
pub struct EmuView<'a, T> {
    buf: &'a EmuBuffer<T>,
    offset: usize,
    len: usize,
}

/// Part of an [`EmuBuffer`], writable (as a `CudaViewMut`).
pub struct EmuViewMut<'a, T> {
    buf: &'a mut EmuBuffer<T>,
    offset: usize,
    len: usize,
}

impl<T> Read<EmulatorBackend, T> for EmuBuffer<T> {
    fn bind_read<'a>(&'a self, be: &EmulatorBackend, _: &'a EmuStream) -> Result<(DevBuf, ())> {
        be.owns(&self.dev)?;
        Ok((self.dev_buf(0, self.len), ()))
    }
}

impl<T> Write<EmulatorBackend, T> for EmuBuffer<T> {
    fn bind_write<'a>(
        &'a mut self,
        be: &EmulatorBackend,
        _: &'a EmuStream,
    ) -> Result<(DevBuf, ())> {
        be.owns(&self.dev)?;
        Ok((self.dev_buf(0, self.len), ()))
    }
}

impl<T> Read<EmulatorBackend, T> for EmuView<'_, T> {
    fn bind_read<'a>(&'a self, be: &EmulatorBackend, _: &'a EmuStream) -> Result<(DevBuf, ())> {
        be.owns(&self.buf.dev)?;
        Ok((self.buf.dev_buf(self.offset, self.len), ()))
    }
}

impl<T> Read<EmulatorBackend, T> for EmuViewMut<'_, T> {
    fn bind_read<'a>(&'a self, be: &EmulatorBackend, _: &'a EmuStream) -> Result<(DevBuf, ())> {
        be.owns(&self.buf.dev)?;
        Ok((self.buf.dev_buf(self.offset, self.len), ()))
    }
}

impl<T> Write<EmulatorBackend, T> for EmuViewMut<'_, T> {
    fn bind_write<'a>(
        &'a mut self,
        be: &EmulatorBackend,
        _: &'a EmuStream,
    ) -> Result<(DevBuf, ())> {
        be.owns(&self.buf.dev)?;
        Ok((self.buf.dev_buf(self.offset, self.len), ()))
    }
}

/// The largest buffer the emulated device allocates: its memory is host memory, and an
/// absurd size must be a typed error rather than an allocation failure that aborts.
pub const MAX_EMULATED_ALLOC_BYTES: usize = 1 << 36;

/// Bytes of `n` elements of `T`, checked (an absurd host size is an error, not a panic).
fn bytes_of<T>(n: usize) -> Result<usize> {
    n.checked_mul(std::mem::size_of::<T>())
        .filter(|&b| b <= MAX_EMULATED_ALLOC_BYTES)
        .ok_or(Error::SizeOverflow {
            what: "emulator buffer bytes (at most MAX_EMULATED_ALLOC_BYTES)",
        })
}

impl Backend for EmulatorBackend {
    type Stream = EmuStream;
    type Buffer<T: Pod> = EmuBuffer<T>;
    type Guard<'a> = ();

    fn target(&self) -> KernelTarget {
        self.target
    }

    fn sm_count(&self) -> Result<u32> {
        Ok(self.sm_count)
    }

    fn stream(&self) -> Result<EmuStream> {
        Ok(EmuStream {
            dev: self.dev.clone(),
        })
    }

    fn alloc_zeros<T: Pod>(&self, stream: &EmuStream, n: usize) -> Result<EmuBuffer<T>> {
        self.owns(&stream.dev)?;
        let bytes = bytes_of::<T>(n)?;
        let mut dev = self.dev.memory();
        let ptr = dev.alloc(bytes);
        dev.write(ptr, &vec![0u8; bytes])?;
        Ok(EmuBuffer {
            dev: self.dev.clone(),
            addr: ptr.0,
            len: n,
            _elem: PhantomData,
        })
    }

    fn upload<T: Pod>(&self, stream: &EmuStream, data: &[T]) -> Result<EmuBuffer<T>> {
        self.owns(&stream.dev)?;
        let ptr = self.dev.memory().upload(bytemuck::cast_slice(data));
        Ok(EmuBuffer {
            dev: self.dev.clone(),
            addr: ptr.0,
            len: data.len(),
            _elem: PhantomData,
        })
    }

    fn copy_in<T: Pod>(
        &self,
        stream: &EmuStream,
        data: &[T],
        dst: &mut EmuBuffer<T>,
    ) -> Result<()> {
        self.owns(&stream.dev)?;
        self.owns(&dst.dev)?;
        super::fits(data.len(), dst.len)?;
        Ok(self
            .dev
            .memory()
            .write(DevicePtr(dst.addr), bytemuck::cast_slice(data))?)
    }

    fn download<T: Pod>(&self, stream: &EmuStream, src: &EmuBuffer<T>) -> Result<Vec<T>> {
        self.owns(&stream.dev)?;
        self.owns(&src.dev)?;
        let bytes = self
            .dev
            .memory()
            .read(DevicePtr(src.addr), bytes_of::<T>(src.len)?)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn synchronize(&self, stream: &EmuStream) -> Result<()> {
        self.owns(&stream.dev)
    }

    unsafe fn launch(
        &self,
        stream: &EmuStream,
        launches: &Launches,
        bound: &BoundTensors,
    ) -> Result<()> {
        self.owns(&stream.dev)?;
        let mut last = self.dev.last.lock().unwrap_or_else(|p| p.into_inner());
        last.clear();
        let mut tracing = self.dev.tracing.lock().unwrap_or_else(|p| p.into_inner());
        for l in launches.iter() {
            let report = if tracing.ctas.is_empty() {
                launch(&mut self.dev.memory(), l)?
            } else {
                let (report, trace) = launch_traced(&mut self.dev.memory(), l, &tracing.ctas)?;
                tracing.traces.push((l.entry, trace));
                report
            };
            let first = report.findings.first().cloned();
            let count = report.findings.len();
            last.push((l.entry, report));
            if let Some(f) = first {
                // Later launches of the call (a split combine) would read what this one failed
                // to write: stop here, as a trap stops a CUDA stream.
                return Err(Error::Emulator(EmulatorError::KernelFinding {
                    kernel: l.entry.to_string(),
                    kind: format!("{:?}", f.kind),
                    at: f
                        .address
                        .filter(|_| f.kind == FindingKind::GlobalOutOfBounds)
                        .and_then(|a| bound.locate(a)),
                    count,
                    finding: f.to_string(),
                }));
            }
        }
        Ok(())
    }

    unsafe fn zero(&self, stream: &EmuStream, buf: DevBuf, bytes: u64) -> Result<()> {
        self.owns(&stream.dev)?;
        let n = usize::try_from(bytes).map_err(|_| Error::SizeOverflow {
            what: "emulator buffer bytes",
        })?;
        Ok(self
            .dev
            .memory()
            .write(DevicePtr(buf.addr), &vec![0u8; n])?)
    }

    fn encode_tensor_map(&self, name: &str, desc: &TmaMapDesc, addr: u64) -> Result<[u8; 128]> {
        Ok(*encode(desc, addr, name)?.as_bytes())
    }
}
