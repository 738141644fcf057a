//! Finds the CUDA compiler: `NVCC`, then `CUDA_HOME` / `CUDA_PATH`, then `PATH`, then
//! `/usr/local/cuda`; when none has one, provisions the pinned PyPI wheels (see provision.rs).

use crate::pins::Pins;
use crate::provision;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variables that change which toolkit is used (each is a rerun trigger).
pub const TOOLKIT_ENV: [&str; 4] = ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH"];

/// The toolkit a build used, as the crate reports it at run time.
pub struct Toolkit {
    pub nvcc: PathBuf,
    pub ptxas: PathBuf,
    /// e.g. "13.5.37" (from `nvcc --version`).
    pub version: String,
    /// How it was found, e.g. "NVCC", "CUDA_HOME", "PATH", "/usr/local/cuda", "PyPI wheels".
    pub source: String,
}

pub fn locate(pins: &Pins) -> Toolkit {
    let (nvcc, source) = find_system_nvcc()
        .or_else(|| provisioned_nvcc(pins))
        .unwrap_or_else(|| panic!("{}", not_found_message(pins)));
    let bin = nvcc.parent().expect("nvcc has a parent dir").to_path_buf();
    let ptxas = bin.join("ptxas");
    let version = nvcc_version(&nvcc);
    Toolkit {
        nvcc,
        ptxas,
        version,
        source,
    }
}

fn find_system_nvcc() -> Option<(PathBuf, String)> {
    if let Some(p) = std::env::var_os("NVCC") {
        return Some((PathBuf::from(p), "NVCC".into()));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = std::env::var_os(var) {
            let nvcc = Path::new(&home).join("bin").join("nvcc");
            if nvcc.is_file() {
                return Some((nvcc, var.into()));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let nvcc = dir.join("nvcc");
            if nvcc.is_file() {
                return Some((nvcc, "PATH".into()));
            }
        }
    }
    let default = Path::new("/usr/local/cuda/bin/nvcc");
    default
        .is_file()
        .then(|| (default.to_path_buf(), "/usr/local/cuda".into()))
}

fn provisioned_nvcc(pins: &Pins) -> Option<(PathBuf, String)> {
    let version = pins.wheel_version("CUDA_WHEELS", "nvidia-cuda-nvcc");
    let dest = provision::cache_dir().join(format!("cuda-wheels-{version}"));
    let nvcc = dest.join(pins.get("CUDA_WHEEL_BIN")).join("nvcc");
    let complete = dest.join(".flashmha-complete").exists();
    if !complete && !provision::provisioning_allowed() {
        return None;
    }
    if let Err(e) = provision::ensure_wheels(&dest, &pins.list("CUDA_WHEELS"), "the CUDA compiler")
    {
        println!("cargo:warning=flashmha: {e}");
        return None;
    }
    nvcc.is_file().then(|| (nvcc, "PyPI wheels".into()))
}

fn nvcc_version(nvcc: &Path) -> String {
    let out = Command::new(nvcc)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    // "Cuda compilation tools, release 13.5, V13.5.37"
    text.lines()
        .find_map(|l| l.rsplit_once(", V").map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn not_found_message(pins: &Pins) -> String {
    format!(
        "flashmha: no CUDA compiler (nvcc) found. Provide one of:\n\
         - NVCC=/path/to/nvcc\n\
         - CUDA_HOME or CUDA_PATH pointing at a CUDA toolkit (with bin/nvcc)\n\
         - nvcc on PATH, or a toolkit in /usr/local/cuda\n\
         - or let the build provision the pinned PyPI wheels ({}) with python3 -m pip into {} \
         (unset {} to allow it; set {} to choose the cache folder)",
        pins.get("CUDA_WHEELS"),
        provision::cache_dir().display(),
        provision::NO_PROVISION_ENV,
        provision::CACHE_DIR_ENV,
    )
}
