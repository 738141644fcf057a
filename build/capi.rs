//! Feature `capi`: generates the Rust side of the C ABI from `include/flashmha.h` with bindgen
//! (types and extern declarations; the Rust definitions are checked against the declarations).
//! The `cc` crate only locates the C compiler's own headers here; the C++ test client is
//! compiled by the `capi/` workspace member (capi/build.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn generate_bindings(header: &Path, out: &Path) {
    let mut builder = crate::bindings::base_builder(header)
        .allowlist_type("flashmha_.*")
        .allowlist_function("flashmha_.*")
        .allowlist_var("FLASHMHA_.*")
        .prepend_enum_name(false);
    if let Some(dir) = compiler_builtin_includes() {
        builder = builder.clang_arg(format!("-isystem{}", dir.display()));
    }
    crate::bindings::write(builder, header, out);
}

/// The C compiler's own header folder (`stddef.h` lives there, not in /usr/include). A libclang
/// without its resource headers (Debian's `libclang1` alone) cannot find `stddef.h`; the
/// system C compiler's copy serves, as it serves every C program on this machine.
fn compiler_builtin_includes() -> Option<PathBuf> {
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .try_get_compiler()
        .ok()?;
    let out = Command::new(compiler.path())
        .arg("-print-file-name=include")
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.join("stddef.h").is_file().then_some(dir)
}
