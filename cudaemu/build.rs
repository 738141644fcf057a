//! Two things the emulated driver needs from the build: its SONAME is `libcuda.so`, so that once
//! a test has loaded it by path, cudarc's `dlopen("libcuda.so")` finds it by that name among the
//! loaded objects (glibc matches a bare name against loaded SONAMEs); and every driver symbol
//! cudarc can resolve (symbols.txt, compared with cudarc's bindings by a test) that src/api.rs
//! does not implement is generated here as a function returning `CUDA_ERROR_NOT_SUPPORTED`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let symbols = std::fs::read_to_string(dir.join("symbols.txt")).expect("symbols.txt");
    println!("cargo:rerun-if-changed=symbols.txt");
    // The implemented entry points: every symbol src/api.rs names, as an `extern "C" fn` or in
    // a macro that defines one (a name that is only mentioned would lack its definition: the
    // symbol test of tests/driver.rs fails then).
    let api = std::fs::read_to_string(dir.join("src/api.rs")).expect("src/api.rs");
    println!("cargo:rerun-if-changed=src/api.rs");
    let implemented: BTreeSet<&str> = api
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("cu"))
        .collect();
    let mut out = String::new();
    for name in symbols.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if implemented.contains(name) {
            continue;
        }
        // Every driver API function returns a CUresult; its arguments are the caller's to pass
        // and unused here (the C calling convention lets the callee ignore them).
        writeln!(
            out,
            "#[no_mangle] pub extern \"C\" fn {name}() -> CUresult {{ crate::api::not_supported(\"{name}\") }}"
        )
        .unwrap();
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("stubs.rs");
    std::fs::write(dest, out).unwrap();
    // Where the client finds the built library: `<profile dir>/deps` or `<profile dir>`.
    let out_dir = std::env::var("OUT_DIR").unwrap();
    let profile = Path::new(&out_dir).ancestors().nth(3).unwrap();
    println!(
        "cargo:rustc-env=FLASHMHA_CUDA_EMU_PROFILE_DIR={}",
        profile.display()
    );
}
