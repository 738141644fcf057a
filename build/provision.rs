//! Installs pinned PyPI wheels into the user cache (never into the source tree) with
//! `python3 -m pip install --target`. Installs into a temporary folder and renames it into place,
//! so concurrent builds never see a half-installed toolkit.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Opt-out: set to 1 to forbid downloading anything (the build then fails with a message
/// naming every way to provide the toolkit instead).
pub const NO_PROVISION_ENV: &str = "FLASHMHA_NO_PROVISION";
/// Overrides where provisioned toolkits are cached.
pub const CACHE_DIR_ENV: &str = "FLASHMHA_CACHE_DIR";

pub fn provisioning_allowed() -> bool {
    std::env::var(NO_PROVISION_ENV).map_or(true, |v| v.is_empty() || v == "0")
}

/// `$FLASHMHA_CACHE_DIR`, else `$XDG_CACHE_HOME/flashmha`, else `$HOME/.cache/flashmha`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("flashmha");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("flashmha")
}

/// Ensures `wheels` are installed in `dest`; returns `dest`. Logs one cargo warning when it
/// downloads, so a build that provisions says so.
pub fn ensure_wheels(dest: &Path, wheels: &[String], what: &str) -> Result<PathBuf, String> {
    let marker = dest.join(".flashmha-complete");
    if marker.exists() {
        return Ok(dest.to_path_buf());
    }
    let parent = dest.parent().expect("cache path has a parent");
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let staging = parent.join(format!(
        ".staging-{}-{}",
        dest.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "cargo:warning=flashmha: provisioning {what} from PyPI ({}) into {}",
        wheels.join(" "),
        dest.display()
    );
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
        ])
        .arg("--target")
        .arg(&staging)
        .args(wheels)
        .status()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!(
            "python3 -m pip install {} failed ({status})",
            wheels.join(" ")
        ));
    }
    std::fs::write(staging.join(".flashmha-complete"), wheels.join("\n"))
        .map_err(|e| format!("cannot write marker: {e}"))?;
    if dest.exists() && !marker.exists() {
        // Left by an interrupted install: it is not complete, so it can go.
        let _ = std::fs::remove_dir_all(dest);
    }
    match std::fs::rename(&staging, dest) {
        Ok(()) => Ok(dest.to_path_buf()),
        // Another build finished first: use its copy.
        Err(_) if marker.exists() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dest.to_path_buf())
        }
        Err(e) => Err(format!("cannot move {} into place: {e}", staging.display())),
    }
}
