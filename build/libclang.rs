//! Makes sure bindgen can load a shared libclang: `LIBCLANG_PATH`, then the usual system
//! folders (Debian's `libclang1-NN`), else the pinned PyPI `libclang` wheel in the user cache.

use crate::pins::Pins;
use crate::provision;
use std::path::{Path, PathBuf};

pub const LIBCLANG_ENV: &str = "LIBCLANG_PATH";

/// Returns a description of the libclang used, setting `LIBCLANG_PATH` for bindgen if it had
/// to provision one.
pub fn ensure(pins: &Pins) -> String {
    if let Some(p) = std::env::var_os(LIBCLANG_ENV) {
        return format!("{} (LIBCLANG_PATH)", Path::new(&p).display());
    }
    if let Some(dir) = system_libclang_dir() {
        return format!("{} (system)", dir.display());
    }
    let spec = pins.get("LIBCLANG_WHEEL").to_string();
    let version = spec.split_once("==").map_or("unpinned", |(_, v)| v);
    let dest = provision::cache_dir().join(format!("libclang-{version}"));
    let complete = dest.join(".flashmha-complete").exists();
    if !complete && !provision::provisioning_allowed() {
        panic!(
            "flashmha: bindgen needs a shared libclang and none was found. Provide one of:\n\
             - LIBCLANG_PATH=/folder/with/libclang.so\n\
             - Debian's package: apt-get install {}\n\
             - or let the build provision the pinned wheel {spec} with python3 -m pip \
             (unset {})",
            pins.get("LIBCLANG_APT"),
            provision::NO_PROVISION_ENV
        );
    }
    let root = provision::ensure_wheels(&dest, &[spec], "libclang")
        .unwrap_or_else(|e| panic!("flashmha: cannot provision libclang: {e}"));
    let lib_dir = root.join(pins.get("LIBCLANG_WHEEL_LIB"));
    // bindgen (through clang-sys) reads LIBCLANG_PATH when it loads libclang.
    std::env::set_var(LIBCLANG_ENV, &lib_dir);
    format!("{} (PyPI wheel)", lib_dir.display())
}

fn system_libclang_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        let mut llvm: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("llvm-"))
            })
            .map(|p| p.join("lib"))
            .collect();
        llvm.sort();
        llvm.reverse(); // newest LLVM first
        dirs.extend(llvm);
    }
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/local/lib",
        ]
        .map(PathBuf::from),
    );
    dirs.into_iter().find(|d| has_libclang(d))
}

fn has_libclang(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("libclang")
                && name.contains(".so")
                && !name.starts_with("libclang-cpp")
        })
    })
}
