//! Compiles the C++ test client `tests/client.cpp` and the C99 header check `tests/header_c.c`
//! against `../include/flashmha.h` with the `cc` crate into static libraries that only
//! `tests/client.rs` links. It lives in this member,
//! which nothing depends on, so that downstream crates enabling flashmha's `capi` feature never
//! compile it. Cargo metadata is off so the client is not linked into libflashmha.a / .so.

use std::path::PathBuf;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("client");
    let client = here.join("tests/client.cpp");
    let include = here.join("../include");
    println!("cargo:rerun-if-changed={}", client.display());
    println!("cargo:rerun-if-changed={}", include.display());
    std::fs::create_dir_all(&out_dir).expect("OUT_DIR is writable");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file(&client)
        .include(&include)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .cargo_metadata(false)
        .out_dir(&out_dir)
        .compile("flashmha_capi_client");
    // The header as C99 too (a C server includes it).
    let c_check = here.join("tests/header_c.c");
    println!("cargo:rerun-if-changed={}", c_check.display());
    cc::Build::new()
        .file(&c_check)
        .include(&include)
        .std("c99")
        .flag("-pedantic")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .cargo_metadata(false)
        .out_dir(&out_dir)
        .compile("flashmha_capi_c_check");
    // Only the search path: tests/client.rs names the libraries itself.
    println!("cargo:rustc-link-search=native={}", out_dir.display());
}
