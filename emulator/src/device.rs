//! The backend API: [`Module`] (parsed + lowered PTX) and [`Device`] (global memory and
//! launches). A launch runs every CTA of the grid, in parallel over host threads (rayon), each CTA
//! independent except for global memory, then merges findings and counters into a
//! [`LaunchReport`].

use rayon::prelude::*;

use super::counters::{Counters, RawCounters};
use super::error::EmuError;
use super::exec::{cluster::MAX_CLUSTER_CTAS, run_cluster, FenceWatch, LaunchCtx};
use super::findings::{Finding, FindingKind, FindingSink};
use super::memory::{GlobalMemory, WriterTag};
use super::program::{Class, Program};
use super::{lower, parser};

/// One kernel parameter as declared in PTX: byte offset in the parameter buffer, size, alignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDecl {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub align: u32,
}

/// A parsed PTX module, lowered to executable form (all load-time checks done). Entries are
/// lowered independently: one that uses an instruction the emulator does not implement is kept
/// as its load error, returned when it is launched, while the other entries run.
#[derive(Debug, Clone)]
pub struct Module {
    version: String,
    target: String,
    programs: Vec<Program>,
    /// Per program, the registers the `wgmma.fence` check watches (`exec/wgmma.rs`).
    fence_watch: Vec<Option<FenceWatch>>,
    rejected: Vec<(String, EmuError)>,
}

impl Module {
    /// Parses and lowers PTX text. Fails with the PTX line on malformed input, and when no entry
    /// can be loaded (with the first entry's error, e.g. an instruction the emulator does not
    /// implement). A module with some loadable entries loads; see [`Module::rejected_entries`].
    pub fn parse(ptx: &str) -> Result<Module, EmuError> {
        let ast = parser::parse(ptx)?;
        let mut programs = Vec::new();
        let mut rejected = Vec::new();
        for (name, r) in lower::lower_module(&ast, ptx) {
            match r {
                Ok(p) => programs.push(p),
                Err(e) => rejected.push((name, e)),
            }
        }
        if programs.is_empty() && !rejected.is_empty() {
            return Err(rejected.swap_remove(0).1);
        }
        let fence_watch = programs.iter().map(FenceWatch::of).collect();
        Ok(Module {
            version: ast.version,
            target: ast.target,
            programs,
            fence_watch,
            rejected,
        })
    }

    /// Entries that could not be loaded, with the error (and PTX line) that launching them
    /// returns.
    pub fn rejected_entries(&self) -> impl Iterator<Item = (&str, &EmuError)> {
        self.rejected.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// Names of the loadable `.entry` kernels.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.programs.iter().map(|p| p.name.as_str())
    }

    /// The entry's parameters in declaration order (offsets as laid out in the parameter buffer).
    pub fn param_layout(&self, entry: &str) -> Option<Vec<ParamDecl>> {
        self.program(entry).map(|p| p.params.clone())
    }

    /// Total size in bytes of the entry's parameter buffer.
    pub fn param_size(&self, entry: &str) -> Option<usize> {
        self.program(entry).map(|p| p.param_size as usize)
    }

    /// Static shared memory of the entry in bytes (what a driver adds to the dynamic shared
    /// memory a launch asks for when it checks the device's per-block limit).
    pub fn static_smem_bytes(&self, entry: &str) -> Option<u32> {
        self.program(entry).map(|p| p.static_smem)
    }

    /// `.version` of the PTX.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `.target` of the PTX.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn program(&self, entry: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == entry)
    }
}

/// A device address returned by [`Device::alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevicePtr(pub u64);

impl DevicePtr {
    /// The address `bytes` further on.
    pub fn offset(self, bytes: u64) -> DevicePtr {
        DevicePtr(self.0 + bytes)
    }
}

/// Grid and block shape plus dynamic shared memory, as for `cuLaunchKernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_smem_bytes: u32,
}

/// Result of a launch: what the checks found and what the counters counted (`Default`: no
/// launch, nothing found, nothing counted).
#[derive(Debug, Clone, Default)]
pub struct LaunchReport {
    /// Deduplicated findings, ordered by kind then PTX line.
    pub findings: Vec<Finding>,
    /// Findings not kept because of the caps (distinct findings beyond the limits).
    pub dropped_findings: u64,
    pub counters: Counters,
}

impl LaunchReport {
    /// Whether any finding of this kind was reported.
    pub fn has(&self, kind: FindingKind) -> bool {
        self.findings.iter().any(|f| f.kind == kind)
    }

    /// Findings of one kind.
    pub fn of_kind(&self, kind: FindingKind) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.kind == kind)
    }

    /// True when the launch produced no finding at all.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.dropped_findings == 0
    }
}

/// Tunables of the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmuOptions {
    /// Warp-instructions one CTA may execute before it is abandoned with an
    /// `InstructionLimit` finding (guards against infinite loops).
    pub max_warp_instructions_per_cta: u64,
    /// Shared-memory race detection.
    pub check_races: bool,
    /// Uninitialised shared-memory read detection.
    pub check_uninit: bool,
    /// The order the CTAs of a launch run in.
    pub cta_order: CtaOrder,
}

impl Default for EmuOptions {
    fn default() -> Self {
        EmuOptions {
            max_warp_instructions_per_cta: 500_000_000,
            check_races: true,
            check_uninit: true,
            cta_order: CtaOrder::Parallel,
        }
    }
}

/// The order the CTAs of a launch run in. On a GPU it is unspecified, so whatever CTAs share
/// through global memory (atomics, above all f32 ones, whose rounding depends on the order of
/// the adds) may differ run to run; a test of bitwise reproducibility runs the same launch in
/// several orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CtaOrder {
    /// All CTAs at once on the thread pool (the fastest; the order is the pool's schedule).
    #[default]
    Parallel,
    /// One CTA after another, in the permutation `k -> (a k + c) mod n` of the linear CTA index
    /// (x fastest) that `seed` picks (`a` coprime to the CTA count `n`; seed 0: in order).
    Sequential { seed: u64 },
}

impl CtaOrder {
    /// The `k`-th CTA's linear index among `n`, for `k < n` (none for `Parallel`).
    fn permutation(self, n: u64) -> Option<impl Fn(u64) -> u64> {
        let CtaOrder::Sequential { seed } = self else {
            return None;
        };
        let gcd = |mut a: u64, mut b: u64| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let n = n.max(1);
        // splitmix64 of the seed: the multiplier and the offset.
        let mix = |x: u64| {
            let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let (mut a, c) = if seed == 0 {
            (1, 0)
        } else {
            (mix(seed) % n, mix(seed ^ 0x5555) % n)
        };
        while gcd(a, n) != 1 {
            a = (a + 1) % n;
        }
        Some(move |k: u64| ((u128::from(a) * u128::from(k) + u128::from(c)) % u128::from(n)) as u64)
    }
}

/// Largest shared memory a CTA may use (sm_90: 227 KiB).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// The emulated GPU: global memory plus the ability to launch kernels of a [`Module`].
/// `Device::default()` is `Device::new()`.
#[derive(Default)]
pub struct Device {
    gmem: GlobalMemory,
    options: EmuOptions,
    /// Launches so far, the epoch of the cross-CTA write check (`memory.rs`, `WriterTag`).
    launches: u32,
}

impl Device {
    pub fn new() -> Self {
        Device {
            gmem: GlobalMemory::new(),
            options: EmuOptions::default(),
            launches: 0,
        }
    }

    pub fn with_options(options: EmuOptions) -> Self {
        Device {
            gmem: GlobalMemory::new(),
            options,
            launches: 0,
        }
    }

    pub fn options_mut(&mut self) -> &mut EmuOptions {
        &mut self.options
    }

    /// Allocates `bytes` of global memory filled with the poison byte `0xFF` (every float read
    /// from it is NaN). Allocations are 256-byte aligned and separated by unmapped guard gaps,
    /// so an access running off one never lands in another.
    ///
    /// # Panics
    /// When [`Device::try_alloc`] fails (a size no device or host could hold); callers with
    /// sizes from outside (a driver's `cuMemAlloc`) use that instead.
    pub fn alloc(&mut self, bytes: usize) -> DevicePtr {
        self.try_alloc(bytes)
            .unwrap_or_else(|e| panic!("Device::alloc: {e}"))
    }

    /// [`Device::alloc`], or an error (nothing allocated) when the size does not fit the
    /// emulated address space (about 125 TiB) or the host's memory.
    pub fn try_alloc(&mut self, bytes: usize) -> Result<DevicePtr, EmuError> {
        self.gmem
            .try_alloc(bytes as u64)
            .map(DevicePtr)
            .map_err(|_| {
                EmuError::Memory(format!("cannot allocate {bytes} bytes of device memory"))
            })
    }

    /// Allocates and fills with `data`.
    pub fn upload(&mut self, data: &[u8]) -> DevicePtr {
        let p = self.alloc(data.len());
        self.gmem.write(p.0, data).expect("fresh allocation");
        p
    }

    pub fn write(&mut self, ptr: DevicePtr, bytes: &[u8]) -> Result<(), EmuError> {
        self.gmem.write(ptr.0, bytes).map_err(|_| {
            EmuError::Memory(format!(
                "write of {} bytes at {:#x} is outside every allocation",
                bytes.len(),
                ptr.0
            ))
        })
    }

    pub fn read(&self, ptr: DevicePtr, len: usize) -> Result<Vec<u8>, EmuError> {
        // The range is checked before the buffer is allocated: a length no allocation holds
        // (usize::MAX, say) is an error, not an abort.
        let (a, off) = self.gmem.find(ptr.0, len as u64).map_err(|_| {
            EmuError::Memory(format!(
                "read of {len} bytes at {:#x} is outside every allocation",
                ptr.0
            ))
        })?;
        let mut out = vec![0u8; len];
        a.read(off, &mut out);
        Ok(out)
    }

    /// Frees an allocation (a pointer that is not the start of one is ignored).
    pub fn free(&mut self, ptr: DevicePtr) {
        self.gmem.free(ptr.0);
    }

    /// Runs `entry` over the grid. `params` are the raw bytes of the entry's parameter space laid
    /// out as [`Module::param_layout`] says (for a kernel taking one struct by value: exactly the
    /// bytes of that `#[repr(C)]` struct).
    pub fn launch(
        &mut self,
        module: &Module,
        entry: &str,
        cfg: &LaunchConfig,
        params: &[u8],
    ) -> Result<LaunchReport, EmuError> {
        self.launch_inner(module, entry, cfg, None, params, None)
    }

    /// [`Device::launch`] with a thread-block cluster shape (`cudaLaunchAttributeClusterDimension`):
    /// `cluster` CTAs in each dimension form a cluster, which must divide the grid and hold at
    /// most 16 CTAs. The CTAs of a cluster run together and share their shared memory through
    /// `mapa` / shared::cluster addresses, `barrier.cluster`, remote mbarrier arrivals and
    /// multicast tensor copies (`exec/cluster.rs`).
    pub fn launch_cluster(
        &mut self,
        module: &Module,
        entry: &str,
        cfg: &LaunchConfig,
        cluster: [u32; 3],
        params: &[u8],
    ) -> Result<LaunchReport, EmuError> {
        self.launch_inner(module, entry, cfg, Some(cluster), params, None)
    }

    /// [`Device::launch`], recording the instruction traces of the CTAs `trace` asks for
    /// (`timing/trace.rs`).
    pub(crate) fn launch_inner(
        &mut self,
        module: &Module,
        entry: &str,
        cfg: &LaunchConfig,
        cluster: Option<[u32; 3]>,
        params: &[u8],
        trace: Option<&crate::timing::trace::TraceSink>,
    ) -> Result<LaunchReport, EmuError> {
        let found = module.programs.iter().position(|p| p.name == entry);
        let fence_watch = found.and_then(|i| module.fence_watch[i].as_ref());
        let prog = match found.map(|i| &module.programs[i]) {
            Some(p) => p,
            None => match module.rejected.iter().find(|(n, _)| n == entry) {
                Some((_, e)) => return Err(e.clone()),
                None => return Err(EmuError::NoEntry(entry.to_string())),
            },
        };
        let need = prog.param_size as usize;
        if params.len() < need || params.len() > need.div_ceil(8) * 8 {
            return Err(EmuError::Launch(format!(
                "`{entry}` takes {need} bytes of parameters, {} given",
                params.len()
            )));
        }
        // In u128: three u32 dimensions multiply past u64.
        let nthreads = cfg.block.iter().map(|&b| b as u128).product::<u128>();
        if nthreads == 0 || nthreads > 1024 || cfg.block[2] > 64 {
            return Err(EmuError::Launch(format!(
                "block {:?} is not a valid CTA shape",
                cfg.block
            )));
        }
        if cfg.grid.contains(&0) || cfg.grid[1] > 65535 || cfg.grid[2] > 65535 {
            return Err(EmuError::Launch(format!(
                "grid {:?} is not valid",
                cfg.grid
            )));
        }
        let shape = cluster.unwrap_or([1, 1, 1]);
        let size = shape.iter().map(|&c| c as u64).product::<u64>();
        if size == 0
            || size > MAX_CLUSTER_CTAS as u64
            || (0..3).any(|k| !cfg.grid[k].is_multiple_of(shape[k]))
        {
            return Err(EmuError::Launch(format!(
                "cluster {shape:?} is not valid for grid {:?} (1..={MAX_CLUSTER_CTAS} CTAs dividing the grid)",
                cfg.grid
            )));
        }
        let smem = if cfg.dynamic_smem_bytes > 0 {
            prog.dyn_smem_offset as u64 + cfg.dynamic_smem_bytes as u64
        } else {
            prog.static_smem as u64
        };
        if smem > MAX_SHARED_BYTES as u64 {
            return Err(EmuError::Launch(format!(
                "{smem} bytes of shared memory exceed {MAX_SHARED_BYTES}"
            )));
        }
        // Module variables live in global memory for the duration of the launch.
        let mut var_addrs = Vec::new();
        for v in &prog.global_vars {
            let Ok(a) = self.gmem.try_alloc(v.size.max(1)) else {
                for a in var_addrs {
                    self.gmem.free(a);
                }
                return Err(EmuError::Launch(format!(
                    "cannot allocate {} bytes for a module variable",
                    v.size
                )));
            };
            let mut init = v.init.clone();
            init.resize(v.size as usize, 0);
            self.gmem.write(a, &init).expect("fresh allocation");
            var_addrs.push(a);
        }
        let mut consts = prog.consts.clone();
        for r in &prog.relocs {
            consts.push((r.reg, var_addrs[r.var].wrapping_add(r.off as u64)));
        }
        // Epoch 0 marks words no kernel wrote; the 24-bit epoch wraps past it.
        self.launches = match self.launches.wrapping_add(1) & WriterTag::EPOCH_MASK {
            0 => 1,
            e => e,
        };
        let ctx = LaunchCtx {
            prog,
            gmem: &self.gmem,
            epoch: self.launches,
            params,
            grid: cfg.grid,
            block: cfg.block,
            cluster: shape,
            explicit_cluster: cluster.is_some(),
            dyn_smem: cfg.dynamic_smem_bytes,
            consts: &consts,
            max_warp_insts: self.options.max_warp_instructions_per_cta,
            check_races: self.options.check_races,
            check_uninit: self.options.check_uninit,
            fence_watch,
            trace,
        };
        // Clusters in parallel, each one scheduler (`exec/mod.rs`, `run_cluster`).
        let [gx, gy, gz] = [0, 1, 2].map(|k| cfg.grid[k] / shape[k]);
        let nclusters = gx as u64 * gy as u64 * gz as u64;
        let ninst = prog.insts.len();
        let fresh = || (FindingSink::default(), RawCounters::new(ninst));
        let run_one = |(mut sink, mut cnt): (FindingSink, RawCounters), i: u64| {
            let first = [
                (i % gx as u64) as u32 * shape[0],
                ((i / gx as u64) % gy as u64) as u32 * shape[1],
                (i / (gx as u64 * gy as u64)) as u32 * shape[2],
            ];
            let (f, c) = run_cluster(&ctx, first);
            sink.merge(f);
            cnt.merge(&c);
            (sink, cnt)
        };
        // A seeded order runs the clusters one after another (`EmuOptions::cta_order`; a
        // one-CTA cluster is a CTA); the default runs them in parallel.
        let (sink, raw) = match self.options.cta_order.permutation(nclusters) {
            Some(nth) => (0..nclusters).map(nth).fold(fresh(), run_one),
            None => (0..nclusters).into_par_iter().fold(fresh, run_one).reduce(
                fresh,
                |(mut s1, mut c1), (s2, c2)| {
                    s1.merge(s2);
                    c1.merge(&c2);
                    (s1, c1)
                },
            ),
        };
        for a in var_addrs {
            self.gmem.free(a);
        }
        let classes: Vec<Class> = prog.insts.iter().map(|i| i.class).collect();
        let lines: Vec<u32> = prog.insts.iter().map(|i| i.line).collect();
        let counters = raw.finish(&classes, &lines);
        let [bx, by, _] = cfg.block;
        let tid3 = |t: u32| [t % bx, (t / bx) % by, t / (bx * by)];
        let mut findings: Vec<Finding> = sink
            .list
            .into_iter()
            .map(|f| {
                let line = prog.insts.get(f.pc as usize).map(|i| i.line).unwrap_or(0);
                Finding {
                    kind: f.kind,
                    kernel: prog.name.clone(),
                    line,
                    ptx: prog.line_text(line).to_string(),
                    cta: f.cta,
                    tid: tid3(f.tid),
                    address: f.address,
                    other_tid: f.other_tid.map(tid3),
                    detail: f.detail,
                    occurrences: f.occurrences,
                }
            })
            .collect();
        findings.sort_by_key(|f| (f.kind, f.line));
        Ok(LaunchReport {
            findings,
            dropped_findings: sink.dropped,
            counters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::CtaOrder;

    /// Every sequential order visits each CTA exactly once; seed 0 is the linear order, and
    /// other seeds give other orders.
    #[test]
    fn sequential_orders_are_permutations() {
        let mut moved = 0;
        for n in [1u64, 2, 3, 7, 12, 64, 97, 360] {
            for seed in 0..6u64 {
                let nth = CtaOrder::Sequential { seed }.permutation(n).unwrap();
                let mut seen = vec![false; n as usize];
                for k in 0..n {
                    let i = nth(k) as usize;
                    assert!(!seen[i], "n {n} seed {seed}: {i} twice");
                    seen[i] = true;
                    if seed == 0 {
                        assert_eq!(i as u64, k);
                    } else if i as u64 != k {
                        moved += 1;
                    }
                }
            }
        }
        assert!(moved > 0);
        assert!(CtaOrder::Parallel.permutation(5).is_none());
    }
}
