//! A content-addressed cache of compiled kernels (PTX, cubins, ptxas reports) beside the
//! provisioned toolkit, so that a build-script rerun copies the outputs whose inputs did not
//! change instead of running nvcc and ptxas again.
//!
//! Each output is keyed by its own inputs, so an edit recompiles only what it can change:
//! - a module's PTX by the bytes of its `.cu` file and of every header it includes from
//!   `kernels/` (followed transitively through `#include "..."`), its output group and virtual
//!   architecture ([`KernelCache::ptx_key`]);
//! - a cubin and its ptxas report by the bytes of the PTX they are assembled from and the real
//!   architecture ([`KernelCache::cubin_key`]): a header edit that leaves a module's PTX
//!   unchanged runs no ptxas for it.
//!
//! Every key also covers the toolkit's paths and version and the compile commands
//! (`build/compile.rs`). Entries are written to a temporary file and renamed, so concurrent
//! builds (several worktrees share the cache) never read half an entry. A hit refreshes the
//! entry's modification time; past `KEPT_ENTRIES` entries, the least recently used go.
//! `FLASHMHA_NO_KERNEL_CACHE=1` turns the cache off.

use crate::toolkit::Toolkit;
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Set to disable the cache (every build compiles).
pub const NO_CACHE_ENV: &str = "FLASHMHA_NO_KERNEL_CACHE";

/// Entries kept (about 0.3 MB each: 1,500 is several full kernel builds' worth).
const KEPT_ENTRIES: usize = 1_500;

pub struct KernelCache {
    /// `<cache>/kernel-cache-v2`: one flat directory of `<key>-<file>` entries.
    dir: PathBuf,
    /// Hash of what every entry depends on: toolkit and compile commands.
    base: u64,
    /// `kernels/`, against which `#include "..."` paths resolve.
    kernels: PathBuf,
}

impl KernelCache {
    /// The cache for kernels under `kernels` compiled by `toolkit`; `None` when disabled.
    pub fn open(root: &Path, kernels: &Path, toolkit: &Toolkit) -> Option<KernelCache> {
        if std::env::var_os(NO_CACHE_ENV).is_some() {
            return None;
        }
        let mut h = DefaultHasher::new();
        toolkit.nvcc.hash(&mut h);
        toolkit.ptxas.hash(&mut h);
        toolkit.version.hash(&mut h);
        // The build scripts' own compile commands live in build/compile.rs.
        std::fs::read(root.join("build/compile.rs"))
            .ok()
            .hash(&mut h);
        let base = crate::provision::cache_dir();
        // Trees of the old whole-source-tree scheme are superseded by the per-output keys.
        let _ = std::fs::remove_dir_all(base.join("kernel-cache"));
        let dir = base.join("kernel-cache-v2");
        std::fs::create_dir_all(&dir).ok()?;
        prune(&dir);
        Some(KernelCache {
            dir,
            base: h.finish(),
            kernels: kernels.to_path_buf(),
        })
    }

    /// The key of the PTX compiled from `src` into output group `group` for `arch`.
    pub fn ptx_key(&self, src: &Path, group: &str, arch: &str) -> u64 {
        let mut h = DefaultHasher::new();
        (self.base, group, arch).hash(&mut h);
        for file in include_closure(src, &self.kernels) {
            file.strip_prefix(&self.kernels)
                .unwrap_or(&file)
                .hash(&mut h);
            std::fs::read(&file).ok().hash(&mut h);
        }
        h.finish()
    }

    /// The key of the cubin (and ptxas report) assembled from `ptx` bytes for `arch`.
    pub fn cubin_key(&self, ptx: &[u8], arch: &str) -> u64 {
        let mut h = DefaultHasher::new();
        (self.base, arch, ptx).hash(&mut h);
        h.finish()
    }

    fn entry(&self, key: u64, name: &str) -> PathBuf {
        self.dir.join(format!("{key:016x}-{name}"))
    }

    /// Copies entry (`key`, `name`) to `dest`; false when it is not cached.
    pub fn fetch(&self, key: u64, name: &str, dest: &Path) -> bool {
        let entry = self.entry(key, name);
        let hit = std::fs::copy(&entry, dest).is_ok();
        if hit {
            touch(&entry);
        }
        hit
    }

    /// Entry (`key`, `name`) as text, if cached.
    pub fn fetch_text(&self, key: u64, name: &str) -> Option<String> {
        let entry = self.entry(key, name);
        let text = std::fs::read_to_string(&entry).ok()?;
        touch(&entry);
        Some(text)
    }

    /// Stores `bytes` as entry (`key`, `name`) (atomically: a temporary file renamed into place).
    pub fn store(&self, key: u64, name: &str, bytes: &[u8]) {
        let tmp = self
            .dir
            .join(format!(".{key:016x}-{name}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, self.entry(key, name));
        }
    }
}

/// `src` and every file it includes from `kernels` (quoted includes, resolved against the
/// including file's folder, then `kernels`), transitively, in sorted order. A system header
/// (`<cuda_fp16.h>`) is the toolkit's and is covered by the toolkit's version.
fn include_closure(src: &Path, kernels: &Path) -> BTreeSet<PathBuf> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![src.to_path_buf()];
    while let Some(file) = todo.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) = line.trim_start().strip_prefix('#') else {
                continue;
            };
            let Some(rest) = rest.trim_start().strip_prefix("include") else {
                continue;
            };
            let Some(name) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some(name) = name.split('"').next() else {
                continue;
            };
            let beside = file.parent().map(|d| d.join(name));
            let found = beside
                .filter(|p| p.is_file())
                .or_else(|| Some(kernels.join(name)).filter(|p| p.is_file()));
            if let Some(path) = found {
                todo.push(path);
            }
        }
    }
    seen
}

/// Marks an entry as just used (best effort), for the least-recently-used pruning.
fn touch(entry: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(entry) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Deletes the least recently used entries beyond `KEPT_ENTRIES`.
fn prune(dir: &Path) {
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    if entries.len() <= KEPT_ENTRIES {
        return;
    }
    entries.sort();
    let excess = entries.len() - KEPT_ENTRIES;
    for (_, old) in entries.into_iter().take(excess) {
        let _ = std::fs::remove_file(old);
    }
}
