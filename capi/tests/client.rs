//! Runs the C++ client of the C ABI (`capi/tests/client.cpp`, compiled by capi/build.rs with
//! the `cc` crate against `include/flashmha.h`) with a fresh random seed: it runs every op
//! (forward, paged decode with and without splits, merge_states, KV append, head similarity) on
//! random problems through the emulator entry points, checks each against its own CPU
//! reference or an identity between ops, and checks the typed errors (no GPU, bad shapes, bad
//! buffers). The seed is printed so a failure can be replayed with `FLASHMHA_CAPI_SEED=<seed>`.

// The client refers to the `flashmha_*` symbols, defined in the flashmha rlib linked after it.
#[link(name = "flashmha_capi_client", kind = "static")]
extern "C" {
    fn flashmha_capi_client_main(seed: u64) -> std::ffi::c_int;
}

// The header compiled as C99 (tests/header_c.c).
#[link(name = "flashmha_capi_c_check", kind = "static")]
extern "C" {
    fn flashmha_capi_c_check() -> std::ffi::c_int;
}

// The client is C++: its runtime.
#[link(name = "stdc++")]
extern "C" {}

// Keeps the flashmha rlib (and so the C ABI's definitions) in the link.
use flashmha as _;

#[test]
fn cpp_client_runs_on_the_emulator_and_gets_typed_errors() {
    let seed = std::env::var("FLASHMHA_CAPI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("FLASHMHA_CAPI_SEED={seed}");
    // SAFETY: the client's entry point takes a plain integer and touches only its own data and
    // the C ABI.
    let failures = unsafe { flashmha_capi_client_main(seed) };
    assert_eq!(failures, 0, "the C++ client reported failures (see stderr)");
}

#[test]
fn the_header_compiles_as_c99_and_a_c_caller_gets_typed_errors() {
    // SAFETY: takes nothing, touches only its own locals and the C ABI.
    let failed_check = unsafe { flashmha_capi_c_check() };
    assert_eq!(
        failed_check, 0,
        "check {failed_check} of tests/header_c.c failed"
    );
}
