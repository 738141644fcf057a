//! Compiles kernels with nvcc: every `.cu` to PTX for the pinned virtual architecture, then that
//! exact PTX to a cubin per shipped architecture with `ptxas -v` (so cubins and the PTX the
//! emulator runs come from one compilation). Jobs run in parallel; any compiler warning fails
//! the build, and so does a register spill (`--warn-on-spills` with `-Werror`). Outputs whose
//! inputs were compiled before come from the kernel cache (`kernel_cache.rs`) instead.

use crate::kernel_cache::KernelCache;
use crate::ptxas_report::{self, EntryStats};
use crate::toolkit::Toolkit;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One compiled `.cu` file.
pub struct CompiledModule {
    pub stem: String,
    /// The virtual architecture of `ptx`, e.g. `compute_80`.
    pub ptx_arch: String,
    pub ptx: PathBuf,
    /// (arch, cubin path); empty for emulator test kernels, which ship PTX only.
    pub cubins: Vec<(String, PathBuf)>,
}

pub struct Job<'a> {
    pub toolkit: &'a Toolkit,
    pub include_dir: &'a Path,
    pub out_dir: &'a Path,
    pub ptx_arch: &'a str,
    pub cubin_archs: &'a [String],
    pub cache: Option<&'a KernelCache>,
}

impl Job<'_> {
    /// The output group of this job (jobs differ by output directory), part of its cache keys.
    fn group(&self) -> String {
        self.out_dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }
}

/// Compiles `sources` (stems must be unique) to PTX and, when `with_cubins`, to cubins.
/// Returns the modules in the order given and the ptxas figures of every entry.
pub fn compile_all(
    job: &Job,
    sources: &[PathBuf],
    with_cubins: bool,
) -> (Vec<CompiledModule>, Vec<EntryStats>) {
    let ptx_tasks: Vec<_> = sources.iter().collect();
    let ptx_paths = run_parallel(&ptx_tasks, |src| compile_ptx(job, src));
    let mut modules: Vec<CompiledModule> = sources
        .iter()
        .zip(ptx_paths)
        .map(|(src, ptx)| CompiledModule {
            stem: stem(src),
            ptx_arch: job.ptx_arch.to_string(),
            ptx,
            cubins: Vec::new(),
        })
        .collect();
    if !with_cubins {
        return (modules, Vec::new());
    }
    let cubin_tasks: Vec<(usize, &String)> = (0..modules.len())
        .flat_map(|m| job.cubin_archs.iter().map(move |a| (m, a)))
        .collect();
    let results = run_parallel(&cubin_tasks, |(m, arch)| {
        assemble_cubin(job, &modules[*m], arch)
    });
    let mut stats = Vec::new();
    for ((m, arch), (cubin, entry_stats)) in cubin_tasks.iter().zip(results) {
        modules[*m].cubins.push(((*arch).clone(), cubin));
        stats.extend(entry_stats);
    }
    (modules, stats)
}

fn stem(src: &Path) -> String {
    src.file_stem()
        .expect("source has a name")
        .to_string_lossy()
        .into_owned()
}

fn compile_ptx(job: &Job, src: &Path) -> PathBuf {
    let file = format!("{}.ptx", stem(src));
    let out = job.out_dir.join(&file);
    let key = job
        .cache
        .map(|c| c.ptx_key(src, &job.group(), job.ptx_arch));
    if let (Some(cache), Some(key)) = (job.cache, key) {
        if cache.fetch(key, &file, &out) {
            return out;
        }
    }
    let mut cmd = Command::new(&job.toolkit.nvcc);
    cmd.args(["-ptx", "-std=c++17", "-O3", "-Werror", "all-warnings"])
        .arg(format!("-arch={}", job.ptx_arch))
        .arg("-I")
        .arg(job.include_dir)
        .arg(src)
        .arg("-o")
        .arg(&out);
    let text = run_quiet(&mut cmd, &format!("nvcc {}", src.display()));
    assert!(
        text.trim().is_empty(),
        "nvcc printed diagnostics for {} (warnings are errors here):\n{text}",
        src.display()
    );
    if let (Some(cache), Some(key), Ok(bytes)) = (job.cache, key, std::fs::read(&out)) {
        cache.store(key, &file, &bytes);
    }
    out
}

fn assemble_cubin(job: &Job, module: &CompiledModule, arch: &str) -> (PathBuf, Vec<EntryStats>) {
    let file = format!("{}.{arch}.cubin", module.stem);
    let out = job.out_dir.join(&file);
    let report_name = format!("{file}.ptxas");
    // Keyed by the PTX's bytes: a header edit that leaves this module's PTX alone runs no ptxas.
    let key = job.cache.and_then(|c| {
        let ptx = std::fs::read(&module.ptx).ok()?;
        Some(c.cubin_key(&ptx, arch))
    });
    if let (Some(cache), Some(key)) = (job.cache, key) {
        if let Some(report) = cache.fetch_text(key, &report_name) {
            if cache.fetch(key, &file, &out) {
                return (out, ptxas_report::parse(&report));
            }
        }
    }
    let mut cmd = Command::new(&job.toolkit.ptxas);
    cmd.arg(format!("-arch={arch}"))
        .args(["-O3", "-v", "--warn-on-spills", "--warning-as-error"])
        .arg(&module.ptx)
        .arg("-o")
        .arg(&out);
    let text = run_quiet(
        &mut cmd,
        &format!("ptxas {} for {arch}", module.ptx.display()),
    );
    let unexpected: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.starts_with("ptxas info")
                && !l.trim_start().starts_with(|c: char| c.is_ascii_digit())
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        unexpected.is_empty(),
        "ptxas printed diagnostics for {} on {arch}:\n{}",
        module.stem,
        unexpected.join("\n")
    );
    if let (Some(cache), Some(key), Ok(bytes)) = (job.cache, key, std::fs::read(&out)) {
        cache.store(key, &file, &bytes);
        cache.store(key, &report_name, text.as_bytes());
    }
    (out, ptxas_report::parse(&text))
}

/// Runs a command, panicking with its output when it fails; returns stdout+stderr.
fn run_quiet(cmd: &mut Command, what: &str) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{text}",
        output.status
    );
    text
}

/// Maps `f` over `tasks` on `NUM_JOBS` threads (what cargo grants the build script), keeping
/// the input order in the result.
fn run_parallel<T: Sync, R: Send>(tasks: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let jobs = std::env::var("NUM_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, tasks.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..tasks.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(task) = tasks.get(i) else { break };
                let r = f(task);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every task ran"))
        .collect()
}
