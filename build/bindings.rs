//! Runs bindgen on `kernels/params.h`, the plain-C launch-parameter ABI, so the Rust structs are
//! generated from the same header the kernels include (no hand-mirrored structs). The builder
//! settings every header of ours shares (derives, layout tests) live here once; `capi.rs` adds
//! its own allowlists to the same base.

use std::path::Path;

/// bindgen on `header` with the settings shared by every generated binding.
pub fn base_builder(header: &Path) -> bindgen::Builder {
    bindgen::Builder::default()
        .header(header.to_string_lossy())
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .layout_tests(true)
}

/// Generates `builder`'s bindings of `header` into `out` (panicking with the file names).
pub fn write(builder: bindgen::Builder, header: &Path, out: &Path) {
    builder
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {}: {e}", header.display()))
        .write_to_file(out)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

pub fn generate(header: &Path, out: &Path) {
    let builder = base_builder(header)
        .allowlist_type("FlashFwdParams")
        .allowlist_type("FlashBwdParams")
        .allowlist_type("FlashJvpParams")
        .allowlist_type("FlashFwdTmaParams")
        .allowlist_type("HeadSimParams")
        .allowlist_type("FlashDecodeParams")
        .allowlist_type("FlashMlaDecodeParams")
        .allowlist_type("FlashMlaDecodeTmaParams")
        .allowlist_type("MergeStatesParams")
        .allowlist_type("KvAppendParams")
        .allowlist_var("FLASHMHA_.*");
    write(builder, header, out);
}
