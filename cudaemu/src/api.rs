//! The driver API entry points the emulated driver implements (every other one is a
//! `CUDA_ERROR_NOT_SUPPORTED` stub, build.rs), and its own `flashmha_cuda_emu_*` queries.
//!
//! Semantics, and where they follow the CUDA Driver API reference:
//! * Streams are in order; work runs when it is enqueued (each stream's order and every
//!   cross-stream wait are then trivially honoured). A kernel finding (trap, out-of-bounds,
//!   race, ...) makes the context's error sticky: the launch itself returns success, as an
//!   asynchronous launch does, and every later call on the context (the next synchronisation
//!   first) returns `CUDA_ERROR_ILLEGAL_ADDRESS` (memory findings), `CUDA_ERROR_MISALIGNED_ADDRESS`,
//!   `CUDA_ERROR_LAUNCH_TIMEOUT` (deadlock, instruction limit) or `CUDA_ERROR_ILLEGAL_INSTRUCTION`
//!   (trap, races and every other finding), until the primary context is released by all its
//!   users and created anew.
//! * Stream capture records kernel launches, memsets and device-to-device copies into a graph.
//!   Capture on the legacy default stream fails (`CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`).
//!   Potentially unsafe calls (allocation, free, synchronous copies, context synchronisation)
//!   are refused with `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED` on a thread with a global or
//!   thread-local capture, and on every thread while any thread has a global one; synchronising,
//!   querying or copying pageable host memory on a capturing stream fails the same way; waiting
//!   on an event recorded outside the capture is `CUDA_ERROR_STREAM_CAPTURE_ISOLATION`. Each of
//!   these invalidates the capture of the calling thread, and `cuStreamEndCapture` then returns
//!   `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED` and no graph.
//! * Events record the context's modelled time, not a measurement: each kernel advances it by
//!   its warp-instructions / (4 schedulers x SMs) cycles at the device's clock (an issue-bound
//!   lower bound; memsets and copies add nothing).
//! * Memory pools are reported unsupported (`MEMORY_POOLS_SUPPORTED` = 0), so cudarc allocates
//!   with `cuMemAlloc`; a single allocation is capped at [`MAX_ALLOC`] (the emulator backs device
//!   memory with host memory). Freed memory is never reused, so a use after free is an
//!   out-of-bounds finding.

use crate::state::{count, state, Capture, Ctx, EventObj, ExecObj, FuncObj, ModuleObj, Node};
use crate::state::{State, StreamObj, CURRENT, DEVICES, LAUNCHES, MODULE_LOADS};
use crate::{LaunchRecord, ThreadCounters};
use cudarc::driver::sys::cudaError_enum as E;
use cudarc::driver::sys::CUdevice_attribute_enum as A;
use cudarc::driver::sys::CUresult;
use flashmha_emulator::{
    Device, FindingKind, LaunchConfig, Module, TensorMap, TiledTensorMap, TmaDataType,
    TmaInterleave, TmaL2Promotion, TmaOobFill, TmaSwizzle,
};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The largest single device allocation (bytes): device memory is host memory here.
pub const MAX_ALLOC: usize = 4 << 30;

type R = Result<(), CUresult>;

/// Runs an entry point: its error, or success; a panic inside is `CUDA_ERROR_UNKNOWN` (it must
/// not unwind into the C caller).
fn run(f: impl FnOnce() -> R) -> CUresult {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => E::CUDA_SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => E::CUDA_ERROR_UNKNOWN,
    }
}

/// Destroys an object: `remove` takes it out of the state's table (false: no such handle).
fn destroy(remove: impl FnOnce(&mut State) -> bool) -> CUresult {
    run(|| {
        if remove(&mut state()) {
            Ok(())
        } else {
            Err(E::CUDA_ERROR_INVALID_HANDLE)
        }
    })
}

/// The destroy entry points: each takes its object's handle out of its table.
macro_rules! destroyers {
    ($($name:ident => $table:ident),*) => {
        $(
            #[no_mangle]
            pub extern "C" fn $name(handle: *mut c_void) -> CUresult {
                destroy(|st| st.$table.remove(&ptr_handle(handle)).is_some())
            }
        )*
    };
}

destroyers!(
    cuModuleUnload => modules,
    cuStreamDestroy_v2 => streams,
    cuEventDestroy_v2 => events,
    cuGraphDestroy => graphs,
    cuGraphExecDestroy => execs
);

/// What a stub returns (build.rs).
pub(crate) fn not_supported(_name: &str) -> CUresult {
    E::CUDA_ERROR_NOT_SUPPORTED
}

/// Every error the emulated driver can return, for the sticky state and the error strings.
const ERRORS: &[(CUresult, &str)] = &[
    (E::CUDA_SUCCESS, "no error"),
    (E::CUDA_ERROR_INVALID_VALUE, "invalid argument"),
    (E::CUDA_ERROR_OUT_OF_MEMORY, "out of memory"),
    (E::CUDA_ERROR_NOT_INITIALIZED, "initialization error"),
    (E::CUDA_ERROR_INVALID_DEVICE, "invalid device ordinal"),
    (E::CUDA_ERROR_INVALID_CONTEXT, "invalid device context"),
    (E::CUDA_ERROR_NO_BINARY_FOR_GPU, "no kernel image is available for execution on the device"),
    (E::CUDA_ERROR_INVALID_PTX, "a PTX JIT compilation failed"),
    (E::CUDA_ERROR_INVALID_IMAGE, "device kernel image is invalid"),
    (E::CUDA_ERROR_INVALID_HANDLE, "invalid resource handle"),
    (E::CUDA_ERROR_ILLEGAL_STATE, "the operation cannot be performed in the present state"),
    (E::CUDA_ERROR_NOT_FOUND, "named symbol not found"),
    (E::CUDA_ERROR_NOT_READY, "device not ready"),
    (E::CUDA_ERROR_ILLEGAL_ADDRESS, "an illegal memory access was encountered"),
    (E::CUDA_ERROR_LAUNCH_TIMEOUT, "the launch timed out and was terminated"),
    (E::CUDA_ERROR_ILLEGAL_INSTRUCTION, "an illegal instruction was encountered"),
    (E::CUDA_ERROR_MISALIGNED_ADDRESS, "misaligned address"),
    (E::CUDA_ERROR_LAUNCH_FAILED, "unspecified launch failure"),
    (E::CUDA_ERROR_NOT_SUPPORTED, "operation not supported (by the emulated driver)"),
    (E::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "operation not permitted when stream is capturing"),
    (E::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "operation failed due to a previous error during capture"),
    (E::CUDA_ERROR_STREAM_CAPTURE_ISOLATION, "operation would make the legacy stream depend on a capturing blocking stream"),
    (E::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD, "attempt to terminate a thread-local capture sequence from another thread"),
    (E::CUDA_ERROR_CAPTURED_EVENT, "operation not permitted on an event last recorded in a capturing stream"),
    (E::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE, "the graph update was not performed because it included changes which violated constraints specific to instantiated graph update"),
    (E::CUDA_ERROR_UNKNOWN, "unknown error"),
];

/// The sticky error stored as `code`.
pub(crate) fn result_of(code: u32) -> CUresult {
    ERRORS
        .iter()
        .map(|(e, _)| *e)
        .find(|e| *e as u32 == code)
        .unwrap_or(E::CUDA_ERROR_UNKNOWN)
}

/// The error a launch's first finding leaves (see the module docs).
fn fault_of(kind: FindingKind) -> CUresult {
    use FindingKind as K;
    match kind {
        K::GlobalOutOfBounds | K::SharedOutOfBounds | K::LocalOutOfBounds | K::ParamOutOfBounds => {
            E::CUDA_ERROR_ILLEGAL_ADDRESS
        }
        K::Misaligned => E::CUDA_ERROR_MISALIGNED_ADDRESS,
        K::Deadlock | K::InstructionLimit => E::CUDA_ERROR_LAUNCH_TIMEOUT,
        _ => E::CUDA_ERROR_ILLEGAL_INSTRUCTION,
    }
}

fn write<T>(out: *mut T, value: T) -> R {
    if out.is_null() {
        return Err(E::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: the caller passed a non-null pointer to a `T` the API writes (the driver API's
    // contract for every output parameter).
    unsafe { out.write(value) };
    Ok(())
}

fn ptr_handle<T>(p: *mut T) -> u64 {
    p as usize as u64
}

fn handle_ptr<T>(h: u64) -> *mut T {
    h as usize as *mut T
}

fn initialised(st: &State) -> R {
    if st.initialised {
        Ok(())
    } else {
        Err(E::CUDA_ERROR_NOT_INITIALIZED)
    }
}

fn device_of(st: &State, dev: c_int) -> Result<usize, CUresult> {
    initialised(st)?;
    usize::try_from(dev)
        .ok()
        .filter(|&d| d < DEVICES.len())
        .ok_or(E::CUDA_ERROR_INVALID_DEVICE)
}

fn ctx_by_handle(st: &State, h: u64) -> Option<Arc<Ctx>> {
    st.primary
        .iter()
        .flatten()
        .find(|(c, _)| c.handle == h)
        .map(|(c, _)| c.clone())
}

/// The calling thread's current context, checked for a sticky error.
fn current(st: &State) -> Result<Arc<Ctx>, CUresult> {
    initialised(st)?;
    let h = CURRENT.with(|c| c.get());
    let ctx = ctx_by_handle(st, h).ok_or(E::CUDA_ERROR_INVALID_CONTEXT)?;
    ctx.check()?;
    Ok(ctx)
}

/// Whether `h` is the legacy default stream or the per-thread one (handles 0, 1, 2).
fn is_default_stream(h: u64) -> bool {
    h <= 2
}

/// The context of stream `h` (a default stream is the current context's), checked.
fn stream_ctx(st: &State, h: u64) -> Result<Arc<Ctx>, CUresult> {
    if is_default_stream(h) {
        return current(st);
    }
    let s = st.streams.get(&h).ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
    s.ctx.check()?;
    Ok(s.ctx.clone())
}

/// Runs a stream entry point: `f` gets the locked state, the stream's handle and its context
/// (`CUDA_ERROR_INVALID_HANDLE` / the context's sticky error first, as the driver checks them).
fn on_stream(stream: *mut c_void, f: impl FnOnce(&mut State, u64, Arc<Ctx>) -> R) -> CUresult {
    run(|| {
        let h = ptr_handle(stream);
        let mut st = state();
        let ctx = stream_ctx(&st, h)?;
        f(&mut st, h, ctx)
    })
}

/// The capture of stream `h`, if it is capturing.
fn capture_mut(st: &mut State, h: u64) -> Option<&mut Capture> {
    st.streams.get_mut(&h).and_then(|s| s.capture.as_mut())
}

/// Refuses a potentially unsafe call (allocation, free, synchronous copy, context sync) while a
/// capture forbids it, invalidating the calling thread's capture.
fn refuse_in_capture(st: &mut State) -> R {
    match st.unsafe_call_forbidden() {
        None => Ok(()),
        Some(own) => {
            if let Some(c) = own.and_then(|h| capture_mut(st, h)) {
                c.invalidated = true;
            }
            Err(E::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
        }
    }
}

/// Fails an operation that may not run on capturing stream `h` (and invalidates the capture).
fn refuse_on_capturing(st: &mut State, h: u64) -> R {
    match capture_mut(st, h) {
        Some(c) => {
            c.invalidated = true;
            Err(E::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
        }
        None => Ok(()),
    }
}

/// Queues `node` on stream `h`: recorded if the stream is capturing, otherwise run now (after
/// the state lock is released: a kernel may run for a while).
fn enqueue(mut st: crate::state::StateGuard, h: u64, ctx: Arc<Ctx>, node: Node) -> R {
    if let Some(c) = capture_mut(&mut st, h) {
        if c.invalidated {
            return Err(E::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        c.nodes.push(node);
        return Ok(());
    }
    drop(st);
    run_node(&ctx, &node)
}

/// Executes one operation on `ctx`: a kernel on the emulator (a finding makes the context's
/// error sticky), a memset or a device copy.
fn run_node(ctx: &Ctx, node: &Node) -> R {
    ctx.check()?;
    match node {
        Node::Kernel {
            module,
            entry,
            grid,
            block,
            dynamic_smem,
            params,
            cluster,
        } => {
            let cfg = LaunchConfig {
                grid: *grid,
                block: *block,
                dynamic_smem_bytes: *dynamic_smem,
            };
            let report = match cluster {
                Some(c) => ctx.mem().launch_cluster(module, entry, &cfg, *c, params),
                None => ctx.mem().launch(module, entry, &cfg, params),
            };
            match report {
                Ok(report) => {
                    advance_clock(ctx, report.counters.warp_instructions);
                    if let Some(first) = report.findings.first() {
                        let mut text = String::new();
                        for f in &report.findings {
                            text.push_str(&format!("{f}\n"));
                        }
                        state().findings.push_str(&text);
                        let _ = ctx.sticky.compare_exchange(
                            0,
                            fault_of(first.kind) as u32,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                    }
                }
                Err(e) => {
                    state()
                        .findings
                        .push_str(&format!("{entry}: the emulator refused the launch: {e}\n"));
                    let _ = ctx.sticky.compare_exchange(
                        0,
                        E::CUDA_ERROR_LAUNCH_FAILED as u32,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
            }
            Ok(())
        }
        Node::Memset { dst, value, bytes } => ctx
            .mem()
            .write(flashmha_emulator::DevicePtr(*dst), &vec![*value; *bytes])
            .map_err(|_| E::CUDA_ERROR_INVALID_VALUE),
        Node::Copy { dst, src, bytes } => {
            let mut mem = ctx.mem();
            let data = mem
                .read(flashmha_emulator::DevicePtr(*src), *bytes)
                .map_err(|_| E::CUDA_ERROR_INVALID_VALUE)?;
            mem.write(flashmha_emulator::DevicePtr(*dst), &data)
                .map_err(|_| E::CUDA_ERROR_INVALID_VALUE)
        }
    }
}

/// Adds a kernel's modelled time to its context's clock (module docs).
fn advance_clock(ctx: &Ctx, warp_instructions: u64) {
    let spec = &DEVICES[ctx.device];
    let cycles = warp_instructions as f64 / (4.0 * spec.multiprocessors as f64);
    let mut clock = ctx.clock_ms.lock().unwrap_or_else(|p| p.into_inner());
    *clock += cycles / spec.clock_khz as f64;
}

// ---------------------------------------------------------------------------------------------
// Initialisation, version, devices.

#[no_mangle]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    run(|| {
        if flags != 0 {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        state().initialised = true;
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    run(|| write(version, 12080))
}

#[no_mangle]
pub extern "C" fn cuDeviceGetCount(n: *mut c_int) -> CUresult {
    run(|| {
        initialised(&state())?;
        write(n, DEVICES.len() as c_int)
    })
}

#[no_mangle]
pub extern "C" fn cuDeviceGet(dev: *mut c_int, ordinal: c_int) -> CUresult {
    run(|| {
        let d = device_of(&state(), ordinal)?;
        write(dev, d as c_int)
    })
}

#[no_mangle]
pub extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: c_int) -> CUresult {
    run(|| {
        let d = device_of(&state(), dev)?;
        let len = usize::try_from(len).map_err(|_| E::CUDA_ERROR_INVALID_VALUE)?;
        if name.is_null() || len == 0 {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        let bytes = DEVICES[d].name.as_bytes();
        let n = bytes.len().min(len - 1);
        // SAFETY: `name` holds `len` bytes (the API's contract); `n + 1 <= len`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), name.cast::<u8>(), n);
            name.add(n).write(0);
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: c_int) -> CUresult {
    run(|| {
        let d = device_of(&state(), dev)?;
        write(bytes, DEVICES[d].total_mem)
    })
}

fn uuid_of(d: usize) -> [c_char; 16] {
    let mut u = [0 as c_char; 16];
    for (i, b) in b"flashmha-emu-dev".iter().enumerate() {
        u[i] = *b as c_char;
    }
    u[15] = d as c_char;
    u
}

#[no_mangle]
pub extern "C" fn cuDeviceGetUuid(uuid: *mut [c_char; 16], dev: c_int) -> CUresult {
    run(|| {
        let d = device_of(&state(), dev)?;
        write(uuid, uuid_of(d))
    })
}

#[no_mangle]
pub extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [c_char; 16], dev: c_int) -> CUresult {
    cuDeviceGetUuid(uuid, dev)
}

#[no_mangle]
pub extern "C" fn cuDeviceGetAttribute(value: *mut c_int, attrib: c_int, dev: c_int) -> CUresult {
    run(|| {
        let d = device_of(&state(), dev)?;
        let s = &DEVICES[d];
        let a = |x: A| x as c_int;
        let v = match attrib {
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK) => 1024,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X) => 1024,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y) => 1024,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z) => 64,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X) => i32::MAX,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y) => 65535,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z) => 65535,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK) => s.smem_per_block,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN) => {
                s.smem_per_block_optin
            }
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR) => {
                s.smem_per_multiprocessor
            }
            x if x == a(A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY) => 65536,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE) => 32,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK) => 65536,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR) => 65536,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE) => s.clock_khz,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) => s.multiprocessors,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR) => {
                if s.major == 7 {
                    1024
                } else {
                    2048
                }
            }
            x if x == a(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) => s.major,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR) => s.minor,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_INTEGRATED) => 0,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT) => 0,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE) => 0,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS) => 1,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING) => 1,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED) => 0,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY) => 0,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH) => 0,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH) => (s.major >= 9) as c_int,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID) => d as c_int + 1,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID) => 0,
            x if x == a(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID) => 0,
            // Attributes the emulation does not model: an honest error rather than a guess.
            _ => return Err(E::CUDA_ERROR_NOT_SUPPORTED),
        };
        write(value, v)
    })
}

// ---------------------------------------------------------------------------------------------
// Primary contexts and the current context.

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut *mut c_void, dev: c_int) -> CUresult {
    run(|| {
        let mut st = state();
        let d = device_of(&st, dev)?;
        if st.primary[d].is_none() {
            let handle = st.handle();
            st.primary[d] = Some((
                Arc::new(Ctx {
                    handle,
                    device: d,
                    mem: Mutex::new(Device::new()),
                    allocs: Mutex::new(Default::default()),
                    sticky: Default::default(),
                    clock_ms: Mutex::new(0.0),
                }),
                0,
            ));
        }
        let (ctx, refs) = st.primary[d].as_mut().unwrap();
        *refs += 1;
        write(pctx, handle_ptr(ctx.handle))
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: c_int) -> CUresult {
    run(|| {
        let mut st = state();
        let d = device_of(&st, dev)?;
        let Some((ctx, refs)) = st.primary[d].as_mut() else {
            return Err(E::CUDA_ERROR_INVALID_CONTEXT);
        };
        *refs -= 1;
        if *refs == 0 {
            // The last user released it: destroyed, with everything created in it (a later
            // retain creates a fresh context, as the driver does).
            let h = ctx.handle;
            st.primary[d] = None;
            st.modules.retain(|_, m| m.ctx.handle != h);
            st.functions.retain(|_, f| f.ctx.handle != h);
            st.streams.retain(|_, s| s.ctx.handle != h);
            st.events.retain(|_, e| e.ctx.handle != h);
            st.execs.retain(|_, e| e.ctx.handle != h);
            st.graphs.retain(|_, g| g.0.handle != h);
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxGetState(
    dev: c_int,
    flags: *mut c_uint,
    active: *mut c_int,
) -> CUresult {
    run(|| {
        let st = state();
        let d = device_of(&st, dev)?;
        write(flags, 0)?;
        write(active, st.primary[d].is_some() as c_int)
    })
}

#[no_mangle]
pub extern "C" fn cuCtxGetCurrent(pctx: *mut *mut c_void) -> CUresult {
    run(|| {
        let st = state();
        initialised(&st)?;
        let h = CURRENT.with(|c| c.get());
        let h = if ctx_by_handle(&st, h).is_some() {
            h
        } else {
            0
        };
        write(pctx, handle_ptr(h))
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(ctx: *mut c_void) -> CUresult {
    run(|| {
        let st = state();
        initialised(&st)?;
        let h = ptr_handle(ctx);
        if h != 0 && ctx_by_handle(&st, h).is_none() {
            return Err(E::CUDA_ERROR_INVALID_CONTEXT);
        }
        CURRENT.with(|c| c.set(h));
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuCtxGetDevice(dev: *mut c_int) -> CUresult {
    run(|| {
        let ctx = current(&state())?;
        write(dev, ctx.device as c_int)
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    run(|| {
        let mut st = state();
        let ctx = current(&st)?;
        refuse_in_capture(&mut st)?;
        count(|c| c.syncs += 1);
        ctx.check()
    })
}

#[no_mangle]
pub extern "C" fn cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) -> CUresult {
    run(|| {
        current(&state())?;
        if !least.is_null() {
            write(least, 0)?;
        }
        if !greatest.is_null() {
            write(greatest, -5)?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Memory.

#[no_mangle]
pub extern "C" fn cuMemAlloc_v2(dptr: *mut u64, bytes: usize) -> CUresult {
    run(|| {
        count(|c| c.allocs += 1);
        let mut st = state();
        let ctx = current(&st)?;
        refuse_in_capture(&mut st)?;
        drop(st);
        if dptr.is_null() || bytes == 0 {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        if bytes > MAX_ALLOC.min(DEVICES[ctx.device].total_mem) {
            return Err(E::CUDA_ERROR_OUT_OF_MEMORY);
        }
        let p = ctx.mem().alloc(bytes).0;
        ctx.allocs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(p, bytes as u64);
        write(dptr, p)
    })
}

#[no_mangle]
pub extern "C" fn cuMemFree_v2(dptr: u64) -> CUresult {
    run(|| {
        count(|c| c.frees += 1);
        let mut st = state();
        let ctx = current(&st)?;
        refuse_in_capture(&mut st)?;
        drop(st);
        if dptr == 0 {
            return Ok(());
        }
        let known = ctx
            .allocs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&dptr);
        if known.is_none() {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        ctx.mem().free(flashmha_emulator::DevicePtr(dptr));
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    run(|| {
        let ctx = current(&state())?;
        let used: u64 = ctx
            .allocs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        let total_mem = DEVICES[ctx.device].total_mem;
        write(free, total_mem.saturating_sub(used as usize))?;
        write(total, total_mem)
    })
}

fn host_alloc(pp: *mut *mut c_void, bytes: usize) -> R {
    count(|c| c.allocs += 1);
    let mut st = state();
    current(&st)?;
    refuse_in_capture(&mut st)?;
    if pp.is_null() || bytes == 0 {
        return Err(E::CUDA_ERROR_INVALID_VALUE);
    }
    let layout = std::alloc::Layout::from_size_align(bytes, 4096)
        .map_err(|_| E::CUDA_ERROR_INVALID_VALUE)?;
    // SAFETY: a non-zero size layout.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        return Err(E::CUDA_ERROR_OUT_OF_MEMORY);
    }
    st.host_allocs.insert(p as usize, layout);
    write(pp, p.cast())
}

#[no_mangle]
pub extern "C" fn cuMemHostAlloc(pp: *mut *mut c_void, bytes: usize, _flags: c_uint) -> CUresult {
    run(|| host_alloc(pp, bytes))
}

#[no_mangle]
pub extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytes: usize) -> CUresult {
    run(|| host_alloc(pp, bytes))
}

#[no_mangle]
pub extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    run(|| {
        count(|c| c.frees += 1);
        let mut st = state();
        current(&st)?;
        refuse_in_capture(&mut st)?;
        let layout = st
            .host_allocs
            .remove(&(p as usize))
            .ok_or(E::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: `p` was returned by `alloc_zeroed` with this layout (host_alloc) and is freed
        // once (removed from the table).
        unsafe { std::alloc::dealloc(p.cast(), layout) };
        Ok(())
    })
}

/// The context of a copy between pageable host memory and the device on stream `h`: refused
/// while a capture is on (pageable memory cannot be captured, and the synchronous call is an
/// unsafe call during any capture).
fn pageable_copy_ctx(h: u64, sync: bool) -> Result<Arc<Ctx>, CUresult> {
    let mut st = state();
    let ctx = stream_ctx(&st, h)?;
    if sync {
        refuse_in_capture(&mut st)?;
    }
    refuse_on_capturing(&mut st, h)?;
    Ok(ctx)
}

/// A host-to-device copy of `bytes` from `src` on stream `h` (`sync`: the synchronous call).
fn htod(dst: u64, src: *const c_void, bytes: usize, h: u64, sync: bool) -> R {
    let ctx = pageable_copy_ctx(h, sync)?;
    if bytes == 0 {
        return Ok(());
    }
    if src.is_null() {
        return Err(E::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: `src` holds `bytes` readable bytes (the API's contract).
    let data = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), bytes) };
    let written = ctx
        .mem()
        .write(flashmha_emulator::DevicePtr(dst), data)
        .map_err(|_| E::CUDA_ERROR_INVALID_VALUE);
    written
}

/// A device-to-host copy: waits for the stream (it is synchronous for pageable memory).
fn dtoh(dst: *mut c_void, src: u64, bytes: usize, h: u64, sync: bool) -> R {
    let ctx = pageable_copy_ctx(h, sync)?;
    count(|c| c.syncs += 1);
    if bytes == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(E::CUDA_ERROR_INVALID_VALUE);
    }
    let data = ctx
        .mem()
        .read(flashmha_emulator::DevicePtr(src), bytes)
        .map_err(|_| E::CUDA_ERROR_INVALID_VALUE)?;
    // SAFETY: `dst` holds `bytes` writable bytes (the API's contract).
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst.cast::<u8>(), bytes) };
    Ok(())
}

fn dtod(dst: u64, src: u64, bytes: usize, h: u64, sync: bool) -> R {
    let mut st = state();
    let ctx = stream_ctx(&st, h)?;
    if sync {
        refuse_in_capture(&mut st)?;
    }
    enqueue(st, h, ctx, Node::Copy { dst, src, bytes })
}

fn memset(dst: u64, value: u8, bytes: usize, h: u64, sync: bool) -> R {
    let mut st = state();
    let ctx = stream_ctx(&st, h)?;
    if sync {
        refuse_in_capture(&mut st)?;
    }
    enqueue(st, h, ctx, Node::Memset { dst, value, bytes })
}

/// The synchronous entry point of a memory operation (`op` on the legacy stream, refused in a
/// capture) and its `Async` variant (`op` on the given stream), each named in `sync` / `async`.
macro_rules! sync_and_async {
    ($sync:ident, $async:ident, $op:ident, $($arg:ident: $ty:ty),*) => {
        #[no_mangle]
        pub extern "C" fn $sync($($arg: $ty),*) -> CUresult {
            run(|| $op($($arg),*, 0, true))
        }

        #[no_mangle]
        pub extern "C" fn $async($($arg: $ty),*, stream: *mut c_void) -> CUresult {
            run(|| $op($($arg),*, ptr_handle(stream), false))
        }
    };
}

sync_and_async!(cuMemcpyHtoD_v2, cuMemcpyHtoDAsync_v2, htod, dst: u64, src: *const c_void, bytes: usize);
sync_and_async!(cuMemcpyDtoH_v2, cuMemcpyDtoHAsync_v2, dtoh, dst: *mut c_void, src: u64, bytes: usize);
sync_and_async!(cuMemcpyDtoD_v2, cuMemcpyDtoDAsync_v2, dtod, dst: u64, src: u64, bytes: usize);
sync_and_async!(cuMemsetD8_v2, cuMemsetD8Async, memset, dst: u64, value: u8, bytes: usize);

// ---------------------------------------------------------------------------------------------
// Modules and functions.

/// The size of an ELF64 image from its header: the end of its section or program header table,
/// whichever is last (nvcc's cubins end with the section headers).
fn elf_len(image: *const u8) -> Option<usize> {
    // SAFETY: the caller saw the ELF magic; an ELF64 header is 64 bytes, all read here.
    let h = unsafe { std::slice::from_raw_parts(image, 64) };
    if h[4] != 2 {
        return None;
    }
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(h[o..o + 2].try_into().unwrap()) as u64;
    let ph_end = u64_at(0x20) + u16_at(0x36) * u16_at(0x38);
    let sh_end = u64_at(0x28) + u16_at(0x3A) * u16_at(0x3C);
    usize::try_from(ph_end.max(sh_end)).ok()
}

/// Whether code for `arch` (`sm_86`, `sm_90a`, `compute_80`...) runs on `dev`: a cubin on the
/// same major and an equal or higher minor, PTX on any newer device, arch-specific (`a`) code
/// on exactly its own capability.
fn runs_on(arch: &str, dev: usize, is_ptx: bool) -> bool {
    let digits: String = arch.chars().filter(char::is_ascii_digit).collect();
    let Ok(cc) = digits.parse::<i32>() else {
        return false;
    };
    let s = &DEVICES[dev];
    let dev_cc = s.major * 10 + s.minor;
    if arch.ends_with('a') {
        return cc == dev_cc;
    }
    if is_ptx {
        dev_cc >= cc
    } else {
        cc / 10 == s.major && cc <= dev_cc
    }
}

fn content_hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

#[no_mangle]
pub extern "C" fn cuModuleLoadData(module: *mut *mut c_void, image: *const c_void) -> CUresult {
    run(|| {
        let st = state();
        let ctx = current(&st)?;
        if image.is_null() || module.is_null() {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        let image = image.cast::<u8>();
        // SAFETY: an image is at least 4 bytes (an ELF magic or PTX text with its NUL).
        let magic = unsafe { std::slice::from_raw_parts(image, 4) };
        let ptx: Arc<str> = if magic == b"\x7fELF" {
            let len = elf_len(image).ok_or(E::CUDA_ERROR_INVALID_IMAGE)?;
            // SAFETY: the ELF header says the image spans `len` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(image, len) };
            let cubin = st
                .cubins
                .iter()
                .find(|c| c.bytes == bytes)
                .ok_or(E::CUDA_ERROR_INVALID_IMAGE)?;
            if !runs_on(&cubin.arch, ctx.device, false) {
                return Err(E::CUDA_ERROR_NO_BINARY_FOR_GPU);
            }
            cubin.ptx.clone()
        } else {
            // SAFETY: not ELF: NUL-terminated PTX text (the API's contract).
            let text = unsafe { CStr::from_ptr(image.cast::<c_char>()) };
            text.to_str().map_err(|_| E::CUDA_ERROR_INVALID_PTX)?.into()
        };
        drop(st);
        let hash = content_hash(&ptx);
        let cached = state().parsed.get(&hash).cloned();
        let parsed = match cached {
            Some(m) => m,
            None => {
                let m = Arc::new(Module::parse(&ptx).map_err(|_| E::CUDA_ERROR_INVALID_PTX)?);
                state().parsed.insert(hash, m.clone());
                m
            }
        };
        if !runs_on(
            parsed.target().split(',').next().unwrap_or(""),
            ctx.device,
            true,
        ) {
            return Err(E::CUDA_ERROR_NO_BINARY_FOR_GPU);
        }
        let mut st = state();
        let h = st.handle();
        st.modules.insert(
            h,
            ModuleObj {
                ctx: ctx.clone(),
                module: parsed,
            },
        );
        count(|c| c.module_loads += 1);
        MODULE_LOADS.with(|l| l.borrow_mut().push([ctx.handle, hash]));
        write(module, handle_ptr(h))
    })
}

#[no_mangle]
pub extern "C" fn cuModuleLoadDataEx(
    module: *mut *mut c_void,
    image: *const c_void,
    _num_options: c_uint,
    _options: *mut c_void,
    _values: *mut *mut c_void,
) -> CUresult {
    // JIT options (log buffers, optimisation level) do not change what the emulator runs.
    cuModuleLoadData(module, image)
}

#[no_mangle]
pub extern "C" fn cuModuleGetFunction(
    func: *mut *mut c_void,
    module: *mut c_void,
    name: *const c_char,
) -> CUresult {
    run(|| {
        let mut st = state();
        initialised(&st)?;
        if name.is_null() {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: a NUL-terminated entry name (the API's contract).
        let name = unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| E::CUDA_ERROR_NOT_FOUND)?
            .to_string();
        let m = st
            .modules
            .get(&ptr_handle(module))
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        m.ctx.check()?;
        let known = m.module.entries().any(|e| e == name)
            || m.module.rejected_entries().any(|(e, _)| e == name);
        if !known {
            return Err(E::CUDA_ERROR_NOT_FOUND);
        }
        let static_smem = m.module.static_smem_bytes(&name).unwrap_or(0);
        let spec = &DEVICES[m.ctx.device];
        let obj = FuncObj {
            ctx: m.ctx.clone(),
            module: m.module.clone(),
            max_dynamic_smem: (spec.smem_per_block as u32).saturating_sub(static_smem),
            static_smem,
            entry: name,
        };
        let h = st.handle();
        st.functions.insert(h, obj);
        write(func, handle_ptr(h))
    })
}

#[no_mangle]
pub extern "C" fn cuFuncSetAttribute(func: *mut c_void, attrib: c_int, value: c_int) -> CUresult {
    use cudarc::driver::sys::CUfunction_attribute_enum as F;
    run(|| {
        let mut st = state();
        let f = st
            .functions
            .get_mut(&ptr_handle(func))
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        f.ctx.check()?;
        let optin = DEVICES[f.ctx.device].smem_per_block_optin as u32;
        match attrib {
            x if x == F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as c_int => {
                let v = u32::try_from(value).map_err(|_| E::CUDA_ERROR_INVALID_VALUE)?;
                // Static and dynamic shared memory together within the device's opt-in limit.
                if v.checked_add(f.static_smem).is_none_or(|t| t > optin) {
                    return Err(E::CUDA_ERROR_INVALID_VALUE);
                }
                f.max_dynamic_smem = v;
                Ok(())
            }
            x if x == F::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT as c_int => {
                if (-1..=100).contains(&value) {
                    Ok(())
                } else {
                    Err(E::CUDA_ERROR_INVALID_VALUE)
                }
            }
            _ => Err(E::CUDA_ERROR_NOT_SUPPORTED),
        }
    })
}

#[no_mangle]
pub extern "C" fn cuFuncGetAttribute(
    value: *mut c_int,
    attrib: c_int,
    func: *mut c_void,
) -> CUresult {
    use cudarc::driver::sys::CUfunction_attribute_enum as F;
    run(|| {
        let st = state();
        let f = st
            .functions
            .get(&ptr_handle(func))
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        let s = &DEVICES[f.ctx.device];
        let v = match attrib {
            x if x == F::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK as c_int => 1024,
            x if x == F::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES as c_int => f.static_smem as c_int,
            x if x == F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as c_int => {
                f.max_dynamic_smem as c_int
            }
            x if x == F::CU_FUNC_ATTRIBUTE_PTX_VERSION as c_int
                || x == F::CU_FUNC_ATTRIBUTE_BINARY_VERSION as c_int =>
            {
                s.major * 10 + s.minor
            }
            _ => return Err(E::CUDA_ERROR_NOT_SUPPORTED),
        };
        write(value, v)
    })
}

#[no_mangle]
pub extern "C" fn cuFuncSetCacheConfig(func: *mut c_void, _config: c_int) -> CUresult {
    run(|| {
        let st = state();
        st.functions
            .get(&ptr_handle(func))
            .map(|_| ())
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)
    })
}

// ---------------------------------------------------------------------------------------------
// Launches.

/// Checks and queues one launch of `func` (cuLaunchKernel and cuLaunchKernelEx, which may
/// name a cluster shape).
#[allow(clippy::too_many_arguments)]
fn launch(
    func: u64,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_smem: u32,
    stream: u64,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    cluster: Option<[u32; 3]>,
) -> R {
    let st = state();
    let f = st
        .functions
        .get(&func)
        .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
    let ctx = f.ctx.clone();
    ctx.check()?;
    // The function's context must be the calling thread's current one.
    if CURRENT.with(|c| c.get()) != ctx.handle {
        return Err(E::CUDA_ERROR_INVALID_CONTEXT);
    }
    if !is_default_stream(stream) {
        let s = st
            .streams
            .get(&stream)
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        if s.ctx.handle != ctx.handle {
            return Err(E::CUDA_ERROR_INVALID_HANDLE);
        }
    }
    if !extra.is_null() {
        return Err(E::CUDA_ERROR_NOT_SUPPORTED);
    }
    let threads = block.iter().map(|&b| b as u64).product::<u64>();
    if threads == 0 || threads > 1024 || block[2] > 64 || grid.contains(&0) {
        return Err(E::CUDA_ERROR_INVALID_VALUE);
    }
    if grid[0] > i32::MAX as u32 || grid[1] > 65535 || grid[2] > 65535 {
        return Err(E::CUDA_ERROR_INVALID_VALUE);
    }
    // Above the function's attribute (48 KiB less its static shared memory unless raised by
    // cuFuncSetAttribute) a launch fails, as on hardware.
    if dynamic_smem > f.max_dynamic_smem {
        return Err(E::CUDA_ERROR_INVALID_VALUE);
    }
    let layout = f.module.param_layout(&f.entry).unwrap_or_default();
    let size = f.module.param_size(&f.entry).unwrap_or(0);
    let mut params = vec![0u8; size];
    if !layout.is_empty() && kernel_params.is_null() {
        return Err(E::CUDA_ERROR_INVALID_VALUE);
    }
    for (i, p) in layout.iter().enumerate() {
        // SAFETY: `kernel_params` holds one pointer per declared parameter, each to `p.size`
        // bytes (the API's contract; the ABI probe tests check our params structs' sizes).
        let src = unsafe { *kernel_params.add(i) };
        if src.is_null() {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        let (o, n) = (p.offset as usize, p.size as usize);
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), n) };
        params
            .get_mut(o..o + n)
            .ok_or(E::CUDA_ERROR_INVALID_VALUE)?
            .copy_from_slice(bytes);
    }
    let node = Node::Kernel {
        module: f.module.clone(),
        entry: f.entry.clone(),
        grid,
        block,
        dynamic_smem,
        params,
        cluster,
    };
    let captured = st.streams.get(&stream).is_some_and(|s| s.capture.is_some());
    let record = LaunchRecord::new(
        ctx.handle,
        stream,
        (grid, block, dynamic_smem),
        captured,
        &f.entry,
    );
    count(|c| c.launches += 1);
    LAUNCHES.with(|l| l.borrow_mut().push(record));
    enqueue(st, stream, ctx, node)
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn cuLaunchKernel(
    func: *mut c_void,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    smem: c_uint,
    stream: *mut c_void,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    run(|| {
        launch(
            ptr_handle(func),
            [gx, gy, gz],
            [bx, by, bz],
            smem,
            ptr_handle(stream),
            kernel_params,
            extra,
            None,
        )
    })
}

#[no_mangle]
pub extern "C" fn cuLaunchKernelEx(
    config: *const cudarc::driver::sys::CUlaunchConfig,
    func: *mut c_void,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    use cudarc::driver::sys::CUlaunchAttributeID_enum as L;
    run(|| {
        if config.is_null() {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: a valid CUlaunchConfig (the API's contract).
        let c = unsafe { &*config };
        let grid = [c.gridDimX, c.gridDimY, c.gridDimZ];
        let mut cluster = None;
        for i in 0..c.numAttrs as usize {
            // SAFETY: `attrs` holds `numAttrs` attributes.
            let a = unsafe { &*c.attrs.add(i) };
            if a.id as u32 != L::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION as u32 {
                return Err(E::CUDA_ERROR_NOT_SUPPORTED);
            }
            // SAFETY: the cluster-dimension attribute's value is `clusterDim`.
            let d = unsafe { a.value.clusterDim };
            let dims = [d.x, d.y, d.z];
            let dev = {
                let st = state();
                let f = st
                    .functions
                    .get(&ptr_handle(func))
                    .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
                f.ctx.device
            };
            if DEVICES[dev].major < 9 {
                return Err(E::CUDA_ERROR_INVALID_VALUE);
            }
            if dims.contains(&0) || grid.iter().zip(dims).any(|(g, c)| g % c != 0) {
                return Err(E::CUDA_ERROR_INVALID_VALUE);
            }
            // The portable limit (CUDA Programming Guide "Thread Block Clusters": 8 CTAs; a
            // larger one needs the non-portable function attribute, not emulated).
            if dims.iter().map(|&d| d as u64).product::<u64>() > 8 {
                return Err(E::CUDA_ERROR_INVALID_CLUSTER_SIZE);
            }
            cluster = Some(dims);
        }
        launch(
            ptr_handle(func),
            grid,
            [c.blockDimX, c.blockDimY, c.blockDimZ],
            c.sharedMemBytes,
            ptr_handle(c.hStream),
            kernel_params,
            extra,
            cluster,
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Streams and capture.

fn create_stream(ph: *mut *mut c_void) -> R {
    let mut st = state();
    let ctx = current(&st)?;
    let h = st.handle();
    st.streams.insert(h, StreamObj { ctx, capture: None });
    write(ph, handle_ptr(h))
}

#[no_mangle]
pub extern "C" fn cuStreamCreate(ph: *mut *mut c_void, _flags: c_uint) -> CUresult {
    run(|| create_stream(ph))
}

#[no_mangle]
pub extern "C" fn cuStreamCreateWithPriority(
    ph: *mut *mut c_void,
    _flags: c_uint,
    _priority: c_int,
) -> CUresult {
    run(|| create_stream(ph))
}

#[no_mangle]
pub extern "C" fn cuStreamSynchronize(stream: *mut c_void) -> CUresult {
    on_stream(stream, |st, h, ctx| {
        refuse_on_capturing(st, h)?;
        count(|c| c.syncs += 1);
        ctx.check()
    })
}

#[no_mangle]
pub extern "C" fn cuStreamQuery(stream: *mut c_void) -> CUresult {
    on_stream(stream, |st, h, ctx| {
        refuse_on_capturing(st, h)?;
        ctx.check()
    })
}

#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(
    stream: *mut c_void,
    event: *mut c_void,
    _flags: c_uint,
) -> CUresult {
    on_stream(stream, |st, h, _| {
        let ev = st
            .events
            .get(&ptr_handle(event))
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        let ev_capture = ev.capture;
        match (capture_mut(st, h), ev_capture) {
            // Work already ran in order: nothing to wait for.
            (None, None) => Ok(()),
            (Some(c), Some(id)) if c.id == id => Ok(()),
            (Some(c), _) => {
                c.invalidated = true;
                Err(E::CUDA_ERROR_STREAM_CAPTURE_ISOLATION)
            }
            // Joining another stream into a capture (a fork) is not emulated.
            (None, Some(_)) => Err(E::CUDA_ERROR_NOT_SUPPORTED),
        }
    })
}

#[no_mangle]
pub extern "C" fn cuStreamBeginCapture_v2(stream: *mut c_void, mode: c_uint) -> CUresult {
    on_stream(stream, |st, h, _| {
        if is_default_stream(h) {
            return Err(E::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        if mode > 2 {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        let id = st.handle();
        let s = st.streams.get_mut(&h).ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        if s.capture.is_some() {
            return Err(E::CUDA_ERROR_ILLEGAL_STATE);
        }
        s.capture = Some(Capture {
            id,
            mode,
            thread: std::thread::current().id(),
            nodes: Vec::new(),
            invalidated: false,
        });
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuStreamEndCapture(stream: *mut c_void, graph: *mut *mut c_void) -> CUresult {
    run(|| {
        let h = ptr_handle(stream);
        let mut st = state();
        let s = st.streams.get_mut(&h).ok_or(E::CUDA_ERROR_ILLEGAL_STATE)?;
        let Some(c) = s.capture.as_ref() else {
            return Err(E::CUDA_ERROR_ILLEGAL_STATE);
        };
        if c.mode != 2 && c.thread != std::thread::current().id() {
            return Err(E::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD);
        }
        let c = s.capture.take().unwrap();
        let ctx = s.ctx.clone();
        if c.invalidated {
            write(graph, std::ptr::null_mut())?;
            return Err(E::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        let g = st.handle();
        st.graphs.insert(g, (ctx, c.nodes));
        write(graph, handle_ptr(g))
    })
}

#[no_mangle]
pub extern "C" fn cuStreamIsCapturing(stream: *mut c_void, status: *mut c_uint) -> CUresult {
    on_stream(stream, |st, h, _| {
        let v = match capture_mut(st, h) {
            None => 0,
            Some(c) if c.invalidated => 2,
            Some(_) => 1,
        };
        write(status, v)
    })
}

// ---------------------------------------------------------------------------------------------
// Events.

#[no_mangle]
pub extern "C" fn cuEventCreate(ph: *mut *mut c_void, flags: c_uint) -> CUresult {
    use cudarc::driver::sys::CUevent_flags_enum as F;
    run(|| {
        let mut st = state();
        let ctx = current(&st)?;
        let h = st.handle();
        let timing = flags & F::CU_EVENT_DISABLE_TIMING as c_uint == 0;
        st.events.insert(
            h,
            EventObj {
                ctx,
                timing,
                recorded_ms: None,
                capture: None,
            },
        );
        write(ph, handle_ptr(h))
    })
}

#[no_mangle]
pub extern "C" fn cuEventRecord(event: *mut c_void, stream: *mut c_void) -> CUresult {
    on_stream(stream, |st, h, ctx| {
        let capture = capture_mut(st, h).map(|c| c.id);
        let ev = st
            .events
            .get_mut(&ptr_handle(event))
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        if ev.ctx.handle != ctx.handle {
            return Err(E::CUDA_ERROR_INVALID_HANDLE);
        }
        ev.capture = capture;
        if capture.is_none() {
            ev.recorded_ms = Some(*ctx.clock_ms.lock().unwrap_or_else(|p| p.into_inner()));
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuEventRecordWithFlags(
    event: *mut c_void,
    stream: *mut c_void,
    _flags: c_uint,
) -> CUresult {
    cuEventRecord(event, stream)
}

fn event_ready(event: *mut c_void, sync: bool) -> R {
    let st = state();
    let ev = st
        .events
        .get(&ptr_handle(event))
        .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
    if ev.capture.is_some() {
        return Err(E::CUDA_ERROR_CAPTURED_EVENT);
    }
    if sync {
        count(|c| c.syncs += 1);
    }
    ev.ctx.check()
}

#[no_mangle]
pub extern "C" fn cuEventQuery(event: *mut c_void) -> CUresult {
    run(|| event_ready(event, false))
}

#[no_mangle]
pub extern "C" fn cuEventSynchronize(event: *mut c_void) -> CUresult {
    run(|| event_ready(event, true))
}

#[no_mangle]
pub extern "C" fn cuEventElapsedTime(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CUresult {
    run(|| {
        let st = state();
        let get = |e: *mut c_void| -> Result<f64, CUresult> {
            let ev = st
                .events
                .get(&ptr_handle(e))
                .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
            ev.ctx.check()?;
            if !ev.timing || ev.capture.is_some() {
                return Err(E::CUDA_ERROR_INVALID_HANDLE);
            }
            ev.recorded_ms.ok_or(E::CUDA_ERROR_INVALID_HANDLE)
        };
        let (a, b) = (get(start)?, get(end)?);
        write(ms, (b - a) as f32)
    })
}

#[no_mangle]
pub extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: *mut c_void,
    end: *mut c_void,
) -> CUresult {
    cuEventElapsedTime(ms, start, end)
}

// ---------------------------------------------------------------------------------------------
// Graphs.

#[no_mangle]
pub extern "C" fn cuGraphInstantiateWithFlags(
    exec: *mut *mut c_void,
    graph: *mut c_void,
    _flags: u64,
) -> CUresult {
    run(|| {
        let mut st = state();
        let (ctx, nodes) = st
            .graphs
            .get(&ptr_handle(graph))
            .cloned()
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        ctx.check()?;
        let h = st.handle();
        st.execs.insert(h, ExecObj { ctx, nodes });
        write(exec, handle_ptr(h))
    })
}

#[no_mangle]
pub extern "C" fn cuGraphLaunch(exec: *mut c_void, stream: *mut c_void) -> CUresult {
    run(|| {
        let h = ptr_handle(stream);
        let st = state();
        let ctx = stream_ctx(&st, h)?;
        let e = st
            .execs
            .get(&ptr_handle(exec))
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        if e.ctx.handle != ctx.handle {
            return Err(E::CUDA_ERROR_INVALID_HANDLE);
        }
        // Launching a graph into a capture (a child graph node) is not emulated.
        if st.streams.get(&h).is_some_and(|s| s.capture.is_some()) {
            return Err(E::CUDA_ERROR_NOT_SUPPORTED);
        }
        let nodes = e.nodes.clone();
        drop(st);
        count(|c| c.graph_launches += 1);
        for n in &nodes {
            run_node(&ctx, n)?;
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuGraphUpload(exec: *mut c_void, stream: *mut c_void) -> CUresult {
    run(|| {
        let st = state();
        stream_ctx(&st, ptr_handle(stream))?;
        st.execs
            .get(&ptr_handle(exec))
            .map(|_| ())
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)
    })
}

/// Whether `b` can replace `a` in an instantiated graph: the same operations in the same order
/// (kernels of the same function; parameters, geometry and addresses may change).
fn same_topology(a: &[Node], b: &[Node]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (
                Node::Kernel {
                    entry: e1,
                    module: m1,
                    ..
                },
                Node::Kernel {
                    entry: e2,
                    module: m2,
                    ..
                },
            ) => e1 == e2 && Arc::ptr_eq(m1, m2),
            (Node::Memset { .. }, Node::Memset { .. }) | (Node::Copy { .. }, Node::Copy { .. }) => {
                true
            }
            _ => false,
        })
}

#[no_mangle]
pub extern "C" fn cuGraphExecUpdate_v2(
    exec: *mut c_void,
    graph: *mut c_void,
    info: *mut cudarc::driver::sys::CUgraphExecUpdateResultInfo,
) -> CUresult {
    use cudarc::driver::sys::CUgraphExecUpdateResult_enum as U;
    run(|| {
        let mut st = state();
        let (_, nodes) = st
            .graphs
            .get(&ptr_handle(graph))
            .cloned()
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        let e = st
            .execs
            .get_mut(&ptr_handle(exec))
            .ok_or(E::CUDA_ERROR_INVALID_HANDLE)?;
        let ok = same_topology(&e.nodes, &nodes);
        if !info.is_null() {
            write(
                info,
                cudarc::driver::sys::CUgraphExecUpdateResultInfo {
                    result: if ok {
                        U::CU_GRAPH_EXEC_UPDATE_SUCCESS
                    } else {
                        U::CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED
                    },
                    errorNode: std::ptr::null_mut(),
                    errorFromNode: std::ptr::null_mut(),
                },
            )?;
        }
        if !ok {
            return Err(E::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE);
        }
        e.nodes = nodes;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Tensor maps.

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn cuTensorMapEncodeTiled(
    map: *mut cudarc::driver::sys::CUtensorMap,
    data_type: c_uint,
    rank: u32,
    address: *mut c_void,
    global_dim: *const u64,
    global_strides: *const u64,
    box_dim: *const u32,
    element_strides: *const u32,
    interleave: c_uint,
    swizzle: c_uint,
    l2_promotion: c_uint,
    oob_fill: c_uint,
) -> CUresult {
    run(|| {
        initialised(&state())?;
        let bad = E::CUDA_ERROR_INVALID_VALUE;
        // The driver's own rules first: an aligned map object, a rank in 1..=5, the enums.
        if map.is_null() || !(map as usize).is_multiple_of(64) || !(1..=5).contains(&rank) {
            return Err(bad);
        }
        let rank = rank as usize;
        if global_dim.is_null() || box_dim.is_null() || element_strides.is_null() {
            return Err(bad);
        }
        if rank > 1 && global_strides.is_null() {
            return Err(bad);
        }
        // The driver's CUtensorMapDataType values are the emulator's order (tensormap.rs).
        let data_type = *TmaDataType::ALL.get(data_type as usize).ok_or(bad)?;
        let interleave = *[TmaInterleave::None, TmaInterleave::B16, TmaInterleave::B32]
            .get(interleave as usize)
            .ok_or(bad)?;
        let swizzle = *[
            TmaSwizzle::None,
            TmaSwizzle::B32,
            TmaSwizzle::B64,
            TmaSwizzle::B128,
        ]
        .get(swizzle as usize)
        .ok_or(E::CUDA_ERROR_NOT_SUPPORTED)?;
        let l2_promotion = *[
            TmaL2Promotion::None,
            TmaL2Promotion::B64,
            TmaL2Promotion::B128,
            TmaL2Promotion::B256,
        ]
        .get(l2_promotion as usize)
        .ok_or(bad)?;
        let oob_fill = *[TmaOobFill::None, TmaOobFill::NanRequestZeroFma]
            .get(oob_fill as usize)
            .ok_or(bad)?;
        // SAFETY: the arrays hold rank, rank - 1, rank and rank entries (the API's contract).
        let (dims, strides, boxes, estrides) = unsafe {
            (
                std::slice::from_raw_parts(global_dim, rank).to_vec(),
                if rank > 1 {
                    std::slice::from_raw_parts(global_strides, rank - 1).to_vec()
                } else {
                    Vec::new()
                },
                std::slice::from_raw_parts(box_dim, rank).to_vec(),
                std::slice::from_raw_parts(element_strides, rank).to_vec(),
            )
        };
        let tiled = TiledTensorMap {
            data_type,
            global_address: address as usize as u64,
            global_dim: dims,
            global_strides: strides,
            box_dim: boxes,
            element_strides: estrides,
            interleave,
            swizzle,
            l2_promotion,
            oob_fill,
        };
        let encoded = TensorMap::encode_tiled(&tiled).map_err(|_| bad)?;
        let bytes = encoded.as_bytes();
        let mut words = [0u64; 16];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        write(map, cudarc::driver::sys::CUtensorMap { opaque: words })
    })
}

// ---------------------------------------------------------------------------------------------
// Error strings.

fn error_text(error: c_uint, name: bool) -> Option<*const c_char> {
    static NAMES: Mutex<Vec<(u32, &'static CStr, &'static CStr)>> = Mutex::new(Vec::new());
    let (e, text) = ERRORS.iter().find(|(e, _)| *e as u32 == error)?;
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if !names.iter().any(|(c, _, _)| *c == error) {
        let n = std::ffi::CString::new(format!("{e:?}")).ok()?;
        let t = std::ffi::CString::new(*text).ok()?;
        names.push((
            error,
            Box::leak(n.into_boxed_c_str()),
            Box::leak(t.into_boxed_c_str()),
        ));
    }
    let (_, n, t) = names.iter().find(|(c, _, _)| *c == error)?;
    Some(if name { n.as_ptr() } else { t.as_ptr() })
}

/// `cuGetErrorName` / `cuGetErrorString`: the static text, or NULL and
/// `CUDA_ERROR_INVALID_VALUE` for a code the driver does not know.
fn error_out(error: c_uint, out: *mut *const c_char, name: bool) -> CUresult {
    run(|| match error_text(error, name) {
        Some(p) => write(out, p),
        None => {
            write(out, std::ptr::null())?;
            Err(E::CUDA_ERROR_INVALID_VALUE)
        }
    })
}

#[no_mangle]
pub extern "C" fn cuGetErrorName(error: c_uint, out: *mut *const c_char) -> CUresult {
    error_out(error, out, true)
}

#[no_mangle]
pub extern "C" fn cuGetErrorString(error: c_uint, out: *mut *const c_char) -> CUresult {
    error_out(error, out, false)
}

// ---------------------------------------------------------------------------------------------
// The emulated driver's own queries (lib.rs, `EmulatedDriver`).

/// Registers a cubin and its PTX (lib.rs, `EmulatedDriver::register_cubin`).
#[no_mangle]
pub extern "C" fn flashmha_cuda_emu_register_cubin(
    cubin: *const u8,
    len: usize,
    arch: *const c_char,
    ptx: *const c_char,
) -> CUresult {
    run(|| {
        if cubin.is_null() || arch.is_null() || ptx.is_null() {
            return Err(E::CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `cubin` holds `len` bytes; `arch` and `ptx` are NUL-terminated (lib.rs).
        let (bytes, arch, ptx) = unsafe {
            (
                std::slice::from_raw_parts(cubin, len).to_vec(),
                CStr::from_ptr(arch).to_string_lossy().into_owned(),
                CStr::from_ptr(ptx).to_string_lossy(),
            )
        };
        let mut st = state();
        if !st.cubins.iter().any(|c| c.bytes == bytes) {
            st.cubins.push(crate::state::Cubin {
                bytes,
                arch,
                ptx: ptx.into(),
            });
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn flashmha_cuda_emu_thread_counters(out: *mut ThreadCounters) {
    let c = crate::state::COUNTERS.with(|c| *c.borrow());
    let _ = write(out, c);
}

/// Copies up to `cap` of the thread's records into `out`; returns how many there are.
fn copy_log<T: Copy>(log: &[T], out: *mut T, cap: usize) -> usize {
    if !out.is_null() {
        for (i, r) in log.iter().take(cap).enumerate() {
            // SAFETY: `out` holds `cap` records (lib.rs).
            unsafe { out.add(i).write(*r) };
        }
    }
    log.len()
}

#[no_mangle]
pub extern "C" fn flashmha_cuda_emu_thread_launches(out: *mut LaunchRecord, cap: usize) -> usize {
    LAUNCHES.with(|l| copy_log(&l.borrow(), out, cap))
}

#[no_mangle]
pub extern "C" fn flashmha_cuda_emu_thread_module_loads(out: *mut [u64; 2], cap: usize) -> usize {
    MODULE_LOADS.with(|l| copy_log(&l.borrow(), out, cap))
}

#[no_mangle]
pub extern "C" fn flashmha_cuda_emu_clear_thread_log() {
    crate::state::COUNTERS.with(|c| *c.borrow_mut() = ThreadCounters::default());
    LAUNCHES.with(|l| l.borrow_mut().clear());
    MODULE_LOADS.with(|l| l.borrow_mut().clear());
}

#[no_mangle]
pub extern "C" fn flashmha_cuda_emu_findings(out: *mut u8, cap: usize) -> usize {
    let st = state();
    copy_log(st.findings.as_bytes(), out, cap)
}
