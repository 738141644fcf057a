//! A content-addressed cache of compiled kernels (PTX, cubins, ptxas reports) beside the
//! provisioned toolkit, so that a build-script rerun which changes no kernel input (another
//! feature set, another checkout of the same sources, a changed environment variable) copies
//! the outputs instead of running nvcc and ptxas again.
//!
//! The key of every entry is a hash of every file under `kernels/` (names and bytes), the
//! toolkit's paths and version, and the entry's own name and compiler flags; any change to a
//! kernel, a header or a flag misses. Entries are written to a temporary file and renamed, so
//! concurrent builds never read half an entry. Only the newest `KEPT_TREES` source trees are
//! kept. `FLASHMHA_NO_KERNEL_CACHE=1` turns the cache off.

use crate::toolkit::Toolkit;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Set to disable the cache (every build compiles).
pub const NO_CACHE_ENV: &str = "FLASHMHA_NO_KERNEL_CACHE";

/// Source trees whose outputs are kept (older ones are deleted when a new one is stored).
const KEPT_TREES: usize = 8;

pub struct KernelCache {
    /// `<cache>/kernel-cache/<tree hash>`.
    dir: PathBuf,
}

impl KernelCache {
    /// The cache for the sources under `kernels` compiled by `toolkit`; `None` when disabled.
    pub fn open(root: &Path, kernels: &Path, toolkit: &Toolkit) -> Option<KernelCache> {
        if std::env::var_os(NO_CACHE_ENV).is_some() {
            return None;
        }
        let mut h = DefaultHasher::new();
        hash_tree(kernels, kernels, &mut h);
        toolkit.nvcc.hash(&mut h);
        toolkit.ptxas.hash(&mut h);
        toolkit.version.hash(&mut h);
        // The build scripts' own compile commands live in build/compile.rs.
        std::fs::read(root.join("build/compile.rs"))
            .ok()
            .hash(&mut h);
        let base = crate::provision::cache_dir().join("kernel-cache");
        let dir = base.join(format!("{:016x}", h.finish()));
        std::fs::create_dir_all(&dir).ok()?;
        prune(&base, &dir);
        Some(KernelCache { dir })
    }

    fn entry(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Copies entry `name` to `dest`; false when it is not cached.
    pub fn fetch(&self, name: &str, dest: &Path) -> bool {
        std::fs::copy(self.entry(name), dest).is_ok()
    }

    /// Entry `name` as text, if cached.
    pub fn fetch_text(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.entry(name)).ok()
    }

    /// Stores `bytes` as entry `name` (atomically: a temporary file renamed into place).
    pub fn store(&self, name: &str, bytes: &[u8]) {
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, self.entry(name));
        }
    }
}

/// Hashes the relative path and bytes of every file under `dir`, in sorted order.
fn hash_tree(root: &Path, dir: &Path, h: &mut DefaultHasher) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            hash_tree(root, &path, h);
        } else {
            path.strip_prefix(root).unwrap_or(&path).hash(h);
            std::fs::read(&path).ok().hash(h);
        }
    }
}

/// Deletes all but the `KEPT_TREES` most recently modified tree directories (never `current`).
fn prune(base: &Path, current: &Path) {
    let mut trees: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(base)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path() != current && e.path().is_dir())
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    trees.sort();
    let excess = (trees.len() + 1).saturating_sub(KEPT_TREES);
    for (_, old) in trees.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(old);
    }
}
