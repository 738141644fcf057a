//! The emulated driver's objects: the devices it reports, primary contexts (each with its own
//! emulated global memory), modules, functions, streams (with their capture state), events,
//! graphs and executable graphs, all behind one lock and named by opaque handles; plus the
//! per-thread counters and logs the launch-path assertions read.

use crate::{LaunchRecord, ThreadCounters};
use cudarc::driver::sys::CUresult;
use flashmha_emulator::{Device, Module};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One emulated device: what `cuDeviceGetAttribute` and friends report for it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSpec {
    pub name: &'static str,
    pub major: i32,
    pub minor: i32,
    pub multiprocessors: i32,
    /// Shared memory a block gets without opting in (48 KiB on every architecture here).
    pub smem_per_block: i32,
    /// The most shared memory a block may opt into (`MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`).
    pub smem_per_block_optin: i32,
    pub smem_per_multiprocessor: i32,
    pub clock_khz: i32,
    pub total_mem: usize,
}

/// The devices, by ordinal (CUDA C Programming Guide, "Compute Capabilities", Table
/// "Technical Specifications per Compute Capability" for the shared-memory limits): 0 an
/// A100-like sm_80, 1 a T4-like sm_75, 2 an H100-like sm_90, 3 a second sm_80 for tests that
/// fault a context on purpose (a fault poisons the device's primary context for every thread,
/// as on hardware, so such tests keep off the devices other tests share).
pub const DEVICES: [DeviceSpec; 4] = [
    A100,
    DeviceSpec {
        name: "flashmha emulated sm_75 (T4-like)",
        major: 7,
        minor: 5,
        multiprocessors: 40,
        smem_per_block: 48 * 1024,
        smem_per_block_optin: 64 * 1024,
        smem_per_multiprocessor: 64 * 1024,
        clock_khz: 1_590_000,
        total_mem: 16 << 30,
    },
    DeviceSpec {
        name: "flashmha emulated sm_90 (H100-like)",
        major: 9,
        minor: 0,
        multiprocessors: 132,
        smem_per_block: 48 * 1024,
        smem_per_block_optin: 227 * 1024,
        smem_per_multiprocessor: 228 * 1024,
        clock_khz: 1_980_000,
        total_mem: 80 << 30,
    },
    DeviceSpec {
        name: "flashmha emulated sm_80 (fault tests)",
        ..A100
    },
];

/// The sm_80 device (ordinals 0 and 3).
const A100: DeviceSpec = DeviceSpec {
    name: "flashmha emulated sm_80 (A100-like)",
    major: 8,
    minor: 0,
    multiprocessors: 108,
    smem_per_block: 48 * 1024,
    smem_per_block_optin: 163 * 1024,
    smem_per_multiprocessor: 164 * 1024,
    clock_khz: 1_410_000,
    total_mem: 40 << 30,
};

/// A context: the device it runs on, its global memory and its sticky error.
pub(crate) struct Ctx {
    pub handle: u64,
    pub device: usize,
    pub mem: Mutex<Device>,
    /// Live allocations: base address to bytes.
    pub allocs: Mutex<HashMap<u64, u64>>,
    /// 0, or the error a kernel fault left: every later call on the context returns it.
    pub sticky: AtomicU32,
    /// Modelled device time in milliseconds (what events record; see api.rs `advance_clock`).
    pub clock_ms: Mutex<f64>,
}

impl Ctx {
    pub fn mem(&self) -> MutexGuard<'_, Device> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn check(&self) -> Result<(), CUresult> {
        match self.sticky.load(Ordering::SeqCst) {
            0 => Ok(()),
            code => Err(crate::api::result_of(code)),
        }
    }
}

/// A loaded module: its context and the parsed PTX it runs.
pub(crate) struct ModuleObj {
    pub ctx: Arc<Ctx>,
    pub module: Arc<Module>,
}

/// A function: its module, entry and the dynamic shared memory it may launch with.
pub(crate) struct FuncObj {
    pub ctx: Arc<Ctx>,
    pub module: Arc<Module>,
    pub entry: String,
    pub static_smem: u32,
    pub max_dynamic_smem: u32,
}

/// One operation of a stream or a graph.
#[derive(Clone)]
pub(crate) enum Node {
    Kernel {
        module: Arc<Module>,
        entry: String,
        grid: [u32; 3],
        block: [u32; 3],
        dynamic_smem: u32,
        params: Vec<u8>,
        /// The cluster shape of a `cuLaunchKernelEx` with the cluster-dimension attribute.
        cluster: Option<[u32; 3]>,
    },
    Memset {
        dst: u64,
        value: u8,
        bytes: usize,
    },
    Copy {
        dst: u64,
        src: u64,
        bytes: usize,
    },
}

/// An ongoing stream capture.
pub(crate) struct Capture {
    pub id: u64,
    /// `CUstreamCaptureMode`: 0 global, 1 thread-local, 2 relaxed.
    pub mode: u32,
    pub thread: std::thread::ThreadId,
    pub nodes: Vec<Node>,
    /// The error that invalidated the capture (`cuStreamEndCapture` then fails with
    /// `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`).
    pub invalidated: bool,
}

pub(crate) struct StreamObj {
    pub ctx: Arc<Ctx>,
    pub capture: Option<Capture>,
}

pub(crate) struct EventObj {
    pub ctx: Arc<Ctx>,
    pub timing: bool,
    /// Modelled time of the last record, if recorded outside a capture.
    pub recorded_ms: Option<f64>,
    /// The capture the last record was made in.
    pub capture: Option<u64>,
}

pub(crate) struct ExecObj {
    pub ctx: Arc<Ctx>,
    pub nodes: Vec<Node>,
}

/// A registered cubin: what `cuModuleLoadData` of these bytes loads.
pub(crate) struct Cubin {
    pub bytes: Vec<u8>,
    /// e.g. `sm_86`, `sm_90a`.
    pub arch: String,
    pub ptx: Arc<str>,
}

#[derive(Default)]
pub(crate) struct State {
    pub initialised: bool,
    next_handle: u64,
    /// Primary context per device and its retain count.
    pub primary: [Option<(Arc<Ctx>, u32)>; DEVICES.len()],
    pub modules: HashMap<u64, ModuleObj>,
    pub functions: HashMap<u64, FuncObj>,
    pub streams: HashMap<u64, StreamObj>,
    pub events: HashMap<u64, EventObj>,
    pub graphs: HashMap<u64, (Arc<Ctx>, Vec<Node>)>,
    pub execs: HashMap<u64, ExecObj>,
    /// Pinned host allocations: address to layout.
    pub host_allocs: HashMap<usize, std::alloc::Layout>,
    pub cubins: Vec<Cubin>,
    /// Parsed PTX by content hash: each distinct module is parsed once per process (parsing
    /// dominates small launches); every context still loads its own.
    pub parsed: HashMap<u64, Arc<Module>>,
    /// Findings of faulted launches, as text.
    pub findings: String,
}

impl State {
    /// A fresh opaque handle (never 0, never a stream sentinel such as 1 or 2).
    pub fn handle(&mut self) -> u64 {
        self.next_handle += 1;
        0x1000 + 16 * self.next_handle
    }

    /// Whether a capture of another thread in global mode forbids the calling thread's
    /// potentially unsafe calls, or one of the calling thread's captures (global or
    /// thread-local) does (CUDA Runtime API, `cudaStreamBeginCapture` modes). Returns the
    /// stream whose capture is then invalidated, if it is this thread's.
    pub fn unsafe_call_forbidden(&self) -> Option<Option<u64>> {
        let me = std::thread::current().id();
        for (&h, s) in &self.streams {
            if let Some(c) = &s.capture {
                if c.thread == me && c.mode != 2 {
                    return Some(Some(h));
                }
                if c.thread != me && c.mode == 0 {
                    return Some(None);
                }
            }
        }
        None
    }
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// The driver's state, locked (created on first use).
pub(crate) fn state() -> StateGuard {
    let mut g = STATE.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(State::default);
    StateGuard(g)
}

pub(crate) struct StateGuard(MutexGuard<'static, Option<State>>);

impl std::ops::Deref for StateGuard {
    type Target = State;
    fn deref(&self) -> &State {
        // Set in `state()` before the guard is handed out.
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for StateGuard {
    fn deref_mut(&mut self) -> &mut State {
        self.0.as_mut().unwrap()
    }
}

thread_local! {
    /// The calling thread's current context (0: none).
    pub(crate) static CURRENT: Cell<u64> = const { Cell::new(0) };
    pub(crate) static COUNTERS: RefCell<ThreadCounters> = RefCell::new(ThreadCounters::default());
    pub(crate) static LAUNCHES: RefCell<Vec<LaunchRecord>> = const { RefCell::new(Vec::new()) };
    pub(crate) static MODULE_LOADS: RefCell<Vec<[u64; 2]>> = const { RefCell::new(Vec::new()) };
}

/// Adds to the calling thread's counters.
pub(crate) fn count(f: impl FnOnce(&mut ThreadCounters)) {
    COUNTERS.with(|c| f(&mut c.borrow_mut()));
}
