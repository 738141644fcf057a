//! The emulated driver through cudarc, as the CUDA backend uses it: devices and their
//! attributes, memory, PTX modules, the dynamic shared-memory attribute, launches, faults that
//! poison the context, stream capture (what it refuses and what it records), graph replay and
//! update, modelled event timing, tensor-map validation, error strings, and the symbol list
//! against cudarc's bindings. Hand-written PTX; every kernel is a few instructions.

use cudarc::driver::sys::cudaError_enum as E;
use cudarc::driver::sys::CUstreamCaptureMode_enum as Mode;
use cudarc::driver::{result, sys, CudaContext, CudaSlice, CudaStream, DevicePtr, DriverError};
use flashmha_cuda_emu::EmulatedDriver;
use std::ffi::{c_void, CString};
use std::sync::Arc;

/// `p[tid + off] += 1.0` for `tid < n`: with `off` past the buffer, an out-of-bounds store.
const PTX: &str = r#"
.version 7.0
.target sm_75
.address_size 64

.visible .entry add_one(.param .u64 p, .param .u32 n, .param .u32 off)
{
    .reg .pred %p<2>;
    .reg .b32 %r<5>;
    .reg .b64 %rd<4>;
    .reg .f32 %f<3>;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [n];
    ld.param.u32 %r4, [off];
    mov.u32 %r2, %tid.x;
    setp.ge.u32 %p1, %r2, %r1;
    @%p1 bra DONE;
    add.u32 %r3, %r2, %r4;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r3, 4;
    add.u64 %rd2, %rd2, %rd3;
    ld.global.f32 %f1, [%rd2];
    add.f32 %f2, %f1, 0f3F800000;
    st.global.f32 [%rd2], %f2;
DONE:
    ret;
}

.visible .entry stop()
{
    trap;
    ret;
}
"#;

fn driver() -> &'static EmulatedDriver {
    EmulatedDriver::load().expect("the emulated driver")
}

/// The module loaded into `ctx` and its two functions.
fn load(ctx: &Arc<CudaContext>) -> (sys::CUfunction, sys::CUfunction) {
    ctx.bind_to_thread().unwrap();
    let src = CString::new(PTX).unwrap();
    // SAFETY: NUL-terminated PTX text.
    let m = unsafe { result::module::load_data(src.as_ptr().cast()) }.unwrap();
    let f = |name: &str| {
        // SAFETY: a live module and a valid name.
        unsafe { result::module::get_function(m, CString::new(name).unwrap()) }.unwrap()
    };
    (f("add_one"), f("stop"))
}

/// Launches `add_one` over `n` threads at `off` on `stream`.
fn add_one(
    f: sys::CUfunction,
    stream: &CudaStream,
    p: u64,
    n: u32,
    off: u32,
) -> Result<(), DriverError> {
    let (mut p, mut n, mut off) = (p, n, off);
    let mut args: [*mut c_void; 3] = [
        (&mut p as *mut u64).cast(),
        (&mut n as *mut u32).cast(),
        (&mut off as *mut u32).cast(),
    ];
    // SAFETY: three pointers to the three declared parameters, alive for the call.
    unsafe { result::launch_kernel(f, (1, 1, 1), (32, 1, 1), 0, stream.cu_stream(), &mut args) }
}

/// The device address of `b` (ordered on `s`).
fn addr<T>(b: &CudaSlice<T>, s: &CudaStream) -> u64 {
    let (p, _record) = b.device_ptr(s);
    p
}

/// What `record` queues on `stream`, captured (thread-local mode) into an instantiated graph.
fn capture(stream: &Arc<CudaStream>, record: impl FnOnce()) -> cudarc::driver::CudaGraph {
    stream
        .begin_capture(Mode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    record();
    stream
        .end_capture(sys::CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("a graph")
}

fn code(e: DriverError) -> E {
    e.0
}

#[test]
fn the_devices_are_sm80_sm75_sm90_with_their_limits() {
    driver();
    assert_eq!(CudaContext::device_count().unwrap(), 4);
    use sys::CUdevice_attribute_enum as A;
    for (ordinal, cc, optin, sms) in [
        (0, (8, 0), 163 * 1024, 108),
        (1, (7, 5), 64 * 1024, 40),
        (2, (9, 0), 227 * 1024, 132),
    ] {
        let ctx = CudaContext::new(ordinal).unwrap();
        assert_eq!(ctx.compute_capability().unwrap(), cc);
        let optin_got = ctx
            .attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .unwrap();
        assert_eq!(optin_got, optin);
        assert_eq!(
            ctx.attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                .unwrap(),
            sms
        );
        assert!(ctx.name().unwrap().contains("emulated"));
    }
    assert_eq!(
        CudaContext::new(4).map(|_| ()).map_err(code),
        Err(E::CUDA_ERROR_INVALID_DEVICE)
    );
}

#[test]
fn copies_launches_and_the_smem_attribute_behave_as_on_hardware() {
    driver();
    let ctx = CudaContext::new(1).unwrap();
    let stream = ctx.default_stream();
    let (add, _) = load(&ctx);
    let host: Vec<f32> = (0..32).map(|i| i as f32 * 0.5).collect();
    let buf = stream.clone_htod(&host).unwrap();
    let ptr = addr(&buf, &stream);
    add_one(add, &stream, ptr, 32, 0).unwrap();
    add_one(add, &stream, ptr, 32, 0).unwrap();
    let back = stream.clone_dtoh(&buf).unwrap();
    assert!(back.iter().zip(&host).all(|(b, h)| *b == h + 2.0));
    // Device-to-device and memset.
    let mut other = stream.alloc_zeros::<f32>(32).unwrap();
    stream.memcpy_dtod(&buf, &mut other).unwrap();
    assert_eq!(stream.clone_dtoh(&other).unwrap(), back);

    // Dynamic shared memory: above the default 48 KiB a launch needs the attribute, and the
    // attribute cannot exceed the device's opt-in limit (64 KiB on sm_75).
    let big = 56 * 1024;
    let mut args: [*mut c_void; 0] = [];
    let (_, stop) = load(&ctx);
    let launch = |smem: u32, args: &mut [*mut c_void]| {
        // SAFETY: `stop` takes no parameters; nothing is launched when the check fails.
        unsafe {
            result::launch_kernel(stop, (1, 1, 1), (32, 1, 1), smem, stream.cu_stream(), args)
        }
    };
    assert_eq!(
        launch(big, &mut args).map_err(code),
        Err(E::CUDA_ERROR_INVALID_VALUE)
    );
    use sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as MAX_DYN;
    // SAFETY: a live function.
    let too_much = unsafe { result::function::set_function_attribute(stop, MAX_DYN, 65 * 1024) };
    assert_eq!(too_much.map_err(code), Err(E::CUDA_ERROR_INVALID_VALUE));
    // SAFETY: a live function.
    unsafe { result::function::set_function_attribute(stop, MAX_DYN, big as i32) }.unwrap();
    assert_eq!(
        launch(big + 16, &mut args).map_err(code),
        Err(E::CUDA_ERROR_INVALID_VALUE)
    );
    stream.synchronize().unwrap();
}

#[test]
fn a_kernel_fault_is_the_next_sync_s_error_and_poisons_the_context() {
    driver();
    // Device 3: the one kept for faults (a fault poisons the device's primary context).
    for (off, expected) in [
        (1 << 20, E::CUDA_ERROR_ILLEGAL_ADDRESS),
        (0, E::CUDA_ERROR_ILLEGAL_INSTRUCTION),
    ] {
        let ctx = CudaContext::new(3).unwrap();
        let stream = ctx.default_stream();
        let (add, stop) = load(&ctx);
        let buf = stream.alloc_zeros::<f32>(32).unwrap();
        let ptr = addr(&buf, &stream);
        if expected == E::CUDA_ERROR_ILLEGAL_ADDRESS {
            // The launch is asynchronous: it returns success; the sync reports the fault.
            add_one(add, &stream, ptr, 32, off).unwrap();
        } else {
            let mut args: [*mut c_void; 0] = [];
            // SAFETY: `stop` takes no parameters.
            unsafe {
                result::launch_kernel(
                    stop,
                    (1, 1, 1),
                    (32, 1, 1),
                    0,
                    stream.cu_stream(),
                    &mut args,
                )
            }
            .unwrap();
        }
        assert_eq!(stream.synchronize().map_err(code), Err(expected));
        // Every later call on the context fails the same way.
        assert_eq!(
            stream.alloc_zeros::<f32>(4).map(|_| ()).map_err(code),
            Err(expected)
        );
        assert_eq!(
            add_one(add, &stream, ptr, 32, 0).map_err(code),
            Err(expected)
        );
        assert!(!driver().findings().is_empty());
        // Released by every user, the primary context is created anew and works (the error
        // cudarc recorded while dropping is the old context's).
        drop(buf);
        drop(stream);
        drop(ctx);
        let fresh = CudaContext::new(3).unwrap();
        let _ = fresh.check_err();
        let s = fresh.default_stream();
        let b = s.clone_htod(&[1.0f32; 8]).unwrap();
        let (add, _) = load(&fresh);
        add_one(add, &s, addr(&b, &s), 8, 0).unwrap();
        assert_eq!(s.clone_dtoh(&b).unwrap(), vec![2.0f32; 8]);
    }
}

#[test]
fn capture_refuses_allocation_and_sync_and_records_launches_for_replay() {
    driver();
    let ctx = CudaContext::new(0).unwrap();
    // One stream only; waits on events recorded outside a capture are isolation errors.
    // SAFETY: every buffer below is used on `stream` only.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().unwrap();
    let (add, _) = load(&ctx);
    let buf = stream.clone_htod(&[0.0f32; 32]).unwrap();
    let ptr = addr(&buf, &stream);

    // An allocation inside the capture is refused and invalidates it.
    stream
        .begin_capture(Mode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    add_one(add, &stream, ptr, 32, 0).unwrap();
    assert_eq!(
        stream.alloc_zeros::<f32>(8).map(|_| ()).map_err(code),
        Err(E::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
    );
    assert_eq!(
        stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map(|_| ())
            .map_err(code),
        Err(E::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)
    );
    // So is a synchronisation of the capturing stream.
    stream
        .begin_capture(Mode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    assert_eq!(
        stream.synchronize().map_err(code),
        Err(E::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
    );
    assert!(stream
        .end_capture(sys::CUgraphInstantiate_flags(0))
        .is_err());
    // The legacy default stream cannot be captured.
    assert_eq!(
        ctx.default_stream()
            .begin_capture(Mode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(code),
        Err(E::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
    );
    // Nothing captured ran.
    assert_eq!(stream.clone_dtoh(&buf).unwrap(), vec![0.0f32; 32]);

    // A clean capture: two launches recorded, not run; each replay runs both.
    let graph = capture(&stream, || {
        add_one(add, &stream, ptr, 32, 0).unwrap();
        add_one(add, &stream, ptr, 16, 0).unwrap();
    });
    assert_eq!(stream.clone_dtoh(&buf).unwrap(), vec![0.0f32; 32]);
    for _ in 0..3 {
        graph.launch().unwrap();
    }
    let got = stream.clone_dtoh(&buf).unwrap();
    assert!(
        got[..16].iter().all(|&x| x == 6.0) && got[16..].iter().all(|&x| x == 3.0),
        "{got:?}"
    );

    // Update: the same topology with other parameters is accepted; another topology is not.
    let same = capture(&stream, || {
        add_one(add, &stream, ptr, 8, 0).unwrap();
        add_one(add, &stream, ptr, 8, 0).unwrap();
    });
    let other = capture(&stream, || add_one(add, &stream, ptr, 8, 0).unwrap());
    let update = |g: &cudarc::driver::CudaGraph| {
        // SAFETY: live graph and executable graph handles; `info` is written by the call.
        unsafe {
            let mut info = std::mem::zeroed::<sys::CUgraphExecUpdateResultInfo>();
            sys::cuGraphExecUpdate_v2(graph.cu_graph_exec(), g.cu_graph(), &mut info).result()
        }
    };
    assert_eq!(
        update(&other).map_err(code),
        Err(E::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE)
    );
    update(&same).unwrap();
    graph.launch().unwrap();
    let got = stream.clone_dtoh(&buf).unwrap();
    assert!(
        got[..8].iter().all(|&x| x == 8.0) && got[8..16].iter().all(|&x| x == 6.0),
        "{got:?}"
    );
}

#[test]
fn events_time_the_modelled_work_and_timing_needs_timing_events() {
    driver();
    let ctx = CudaContext::new(2).unwrap();
    let stream = ctx.default_stream();
    let (add, _) = load(&ctx);
    let buf = stream.alloc_zeros::<f32>(32).unwrap();
    let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let a = stream.record_event(timing).unwrap();
    let b = stream.record_event(timing).unwrap();
    assert_eq!(a.elapsed_ms(&b).unwrap(), 0.0, "no work, no modelled time");
    for _ in 0..4 {
        add_one(add, &stream, addr(&buf, &stream), 32, 0).unwrap();
    }
    let c = stream.record_event(timing).unwrap();
    c.synchronize().unwrap();
    let t = b.elapsed_ms(&c).unwrap();
    assert!(t > 0.0 && t < 1e-3, "modelled {t} ms");
    let untimed = stream.record_event(None).unwrap();
    assert_eq!(
        b.elapsed_ms(&untimed).map_err(code),
        Err(E::CUDA_ERROR_INVALID_HANDLE)
    );
}

#[test]
fn tensor_maps_follow_the_driver_s_rules_and_errors_have_strings() {
    driver();
    let _ctx = CudaContext::new(2).unwrap();
    let encode = |stride: u64, addr: u64| {
        let mut map = sys::CUtensorMap { opaque: [0; 16] };
        let (dims, strides, boxes, es) = ([64u64, 32], [stride], [64u32, 8], [1u32, 1]);
        // SAFETY: a 64-byte aligned map and arrays of rank (2) / rank - 1 entries.
        unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut map,
                sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
                2,
                addr as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                es.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
            .result()
            .map(|()| map.opaque)
        }
    };
    assert!(encode(128, 0x10000).unwrap().iter().any(|&w| w != 0));
    assert_eq!(
        encode(136, 0x10000).map_err(code),
        Err(E::CUDA_ERROR_INVALID_VALUE)
    );
    assert_eq!(
        encode(128, 0x10008).map_err(code),
        Err(E::CUDA_ERROR_INVALID_VALUE)
    );
    let e = DriverError(E::CUDA_ERROR_ILLEGAL_ADDRESS);
    assert_eq!(
        e.error_name().unwrap().to_str().unwrap(),
        "CUDA_ERROR_ILLEGAL_ADDRESS"
    );
    assert!(e
        .error_string()
        .unwrap()
        .to_str()
        .unwrap()
        .contains("illegal memory access"));
}

/// symbols.txt is exactly the set of driver functions cudarc's bindings can load, and the
/// library exports each of them (implemented or `CUDA_ERROR_NOT_SUPPORTED`).
#[test]
fn every_symbol_cudarc_can_load_is_exported() {
    let ours: std::collections::BTreeSet<String> = include_str!("../symbols.txt")
        .lines()
        .map(str::to_string)
        .collect();
    // cudarc's bindings, found through cargo's metadata of this workspace.
    let meta = std::process::Command::new(env!("CARGO"))
        // One platform (this one: the driver is a Linux library): no foreign-platform crates
        // to resolve offline.
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo metadata");
    let text = String::from_utf8_lossy(&meta.stdout);
    let manifest = text
        .split("\"manifest_path\":\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .find(|p| p.contains("/cudarc-0.19"))
        .expect("cudarc in the metadata");
    let sys_rs = std::path::Path::new(manifest)
        .parent()
        .unwrap()
        .join("src/driver/sys/mod.rs");
    let src = std::fs::read_to_string(&sys_rs).unwrap();
    let theirs: std::collections::BTreeSet<String> = src
        .lines()
        .filter_map(|l| l.strip_prefix("pub unsafe fn "))
        .map(|l| l.split('(').next().unwrap().to_string())
        .filter(|n| n.starts_with("cu"))
        .collect();
    assert_eq!(
        ours,
        theirs,
        "symbols.txt differs from {}",
        sys_rs.display()
    );
    let lib = driver().path();
    // SAFETY: the library is already loaded (a second handle to the same object).
    let handle = unsafe { libloading::Library::new(lib) }.unwrap();
    for name in &ours {
        // SAFETY: only the symbol's presence is checked; nothing is called.
        let sym = unsafe { handle.get::<*mut c_void>(name.as_bytes()) };
        assert!(sym.is_ok(), "{name} is not exported");
    }
    // An unimplemented one answers CUDA_ERROR_NOT_SUPPORTED.
    // SAFETY: a stub ignores its arguments.
    let stub = unsafe { handle.get::<unsafe extern "C" fn() -> sys::CUresult>(b"cuMemPoolCreate") }
        .unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { stub() }, E::CUDA_ERROR_NOT_SUPPORTED);
}
