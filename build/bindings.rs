//! Runs bindgen on `kernels/params.h`, the plain-C launch-parameter ABI, so the Rust structs are
//! generated from the same header the kernels include (no hand-mirrored structs).

use std::path::Path;

pub fn generate(header: &Path, out: &Path) {
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_type("FlashFwdParams")
        .allowlist_type("HeadSimParams")
        .allowlist_type("FlashDecodeParams")
        .allowlist_type("MergeStatesParams")
        .allowlist_type("KvAppendParams")
        .allowlist_var("FLASHMHA_.*")
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {}: {e}", header.display()));
    bindings
        .write_to_file(out)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
