//! Runs the C++ client's CUDA path (`flashmha_capi_client_cuda_main` in tests/client.cpp) on every
//! CUDA device: the emulated driver's sm_80, sm_75 and sm_90 in CI, the real devices with
//! `FLASHMHA_REAL_GPU=1` (tests/support/cuda.rs). Its own test binary: tests/client.rs checks the
//! no-driver errors, which a loaded driver would change. Device memory comes from cudarc here
//! (the client links no CUDA library). The seed is printed; `FLASHMHA_CAPI_SEED` replays it.

#[path = "../../tests/support/cuda.rs"]
mod cuda_support;

use cudarc::driver::result;

/// The client's device-memory callbacks (the struct of tests/client.cpp).
#[repr(C)]
struct DeviceMemory {
    alloc: extern "C" fn(usize) -> u64,
    upload: extern "C" fn(u64, *const std::ffi::c_void, usize) -> std::ffi::c_int,
    download: extern "C" fn(*mut std::ffi::c_void, u64, usize) -> std::ffi::c_int,
    free: extern "C" fn(u64),
}

#[link(name = "flashmha_capi_client", kind = "static")]
extern "C" {
    fn flashmha_capi_client_cuda_main(
        seed: u64,
        ordinal: i32,
        mem: *const DeviceMemory,
        has_pair_kernels: i32,
    ) -> std::ffi::c_int;
}

#[link(name = "stdc++")]
extern "C" {}

// Keeps the flashmha rlib (the C ABI's definitions) in the link.
use flashmha as _;

extern "C" fn alloc(bytes: usize) -> u64 {
    // SAFETY: allocates in the calling thread's current context (the test's, bound below).
    unsafe { result::malloc_sync(bytes) }.unwrap_or(0)
}

extern "C" fn upload(dst: u64, src: *const std::ffi::c_void, bytes: usize) -> std::ffi::c_int {
    // SAFETY: the client passes `bytes` readable bytes at `src` and an allocation of as many.
    let host = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), bytes) };
    // SAFETY: as above.
    unsafe { result::memcpy_htod_sync(dst, host) }.map_or(1, |_| 0)
}

extern "C" fn download(dst: *mut std::ffi::c_void, src: u64, bytes: usize) -> std::ffi::c_int {
    // SAFETY: the client passes `bytes` writable bytes at `dst` and an allocation of as many.
    let host = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), bytes) };
    // SAFETY: as above.
    unsafe { result::memcpy_dtoh_sync(host, src) }.map_or(1, |_| 0)
}

extern "C" fn free(ptr: u64) {
    // SAFETY: `ptr` came from `alloc` and is freed once (tests/client.cpp, DeviceCopy).
    let _ = unsafe { result::free_sync(ptr) };
}

#[test]
fn cpp_client_runs_the_forward_on_every_cuda_device() {
    let seed = std::env::var("FLASHMHA_CAPI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_seed);
    println!("FLASHMHA_CAPI_SEED={seed}");
    let mem = DeviceMemory {
        alloc,
        upload,
        download,
        free,
    };
    for ordinal in cuda_support::devices() {
        // The device's primary context, current on this thread for the callbacks; the client's
        // context is the same primary context.
        let ctx = cudarc::driver::CudaContext::new(ordinal).unwrap();
        ctx.bind_to_thread().unwrap();
        // d_qk != d_v kernels exist on sm_80 and newer, not on Turing.
        let (major, _) = ctx.compute_capability().unwrap();
        let has_pair_kernels = i32::from(major >= 8);
        // Fresh problems per device.
        let seed = seed.wrapping_add(ordinal as u64);
        // SAFETY: plain arguments and a callback table alive for the call.
        let failures =
            unsafe { flashmha_capi_client_cuda_main(seed, ordinal as i32, &mem, has_pair_kernels) };
        assert_eq!(
            failures,
            0,
            "device {ordinal}: the C++ client reported failures (see stderr)\n{}",
            cuda_support::findings()
        );
    }
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
