//! Mutation fuzzing of the emulator: it stands in for a GPU, so no input may panic, hang or
//! abort it; bad PTX must be a parse or load error and bad execution a finding or a typed
//! error. Three kinds of cases, each with its own RNG seeded from the run's seed and the case
//! number:
//! * PTX mutants (`mutate.rs`) of the seed units (`corpus.rs`: the emulator's test modules and
//!   the flashmha kernels), parsed, lowered and launched with random parameters (pointers into
//!   a scratch allocation, boundary integers, tensor maps), block shapes and shared memory;
//! * tensor maps: random encoder fields, and encoded maps forged byte by byte with a valid
//!   checksum, decoded and used by TMA loads, stores and prefetches at boundary coordinates;
//! * misuse of the host API: bad launch shapes, parameter sizes, unknown entries, reads and
//!   writes outside allocations.
//!
//! Every case runs under `catch_unwind`; a panic is recorded with the seed, the case number and
//! the mutant (written to the temporary directory), and the test fails at the end listing each
//! distinct panic site. A case running longer than `CASE_TIMEOUT` is a hang: the test fails at
//! once with the case. Launches run with a small per-CTA instruction budget, so a mutant looping
//! forever ends in an `InstructionLimit` finding, as it must.
//!
//! Knobs: `FLASHMHA_FUZZ_SECS` (default 3, so `cargo test --release --workspace` pays seconds;
//! `.ci/run` gives it 30 in the `fuzz` profile), `FLASHMHA_FUZZ_SEED` (default: from the clock,
//! printed), `FLASHMHA_FUZZ_CASE` (run that one case of the seed, e.g. to reproduce a report),
//! `FLASHMHA_FUZZ_REQUIRE_KERNELS=1` (fail if the flashmha kernels were not found; CI sets it).
//! CI runs this in the `fuzz` profile (release with overflow checks, Cargo.toml).

mod corpus;
mod mutate;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashmha_emulator::{
    Device, DevicePtr, EmuOptions, LaunchConfig, Module, TensorMap, TiledTensorMap, TmaDataType,
    TmaInterleave, TmaL2Promotion, TmaOobFill, TmaSwizzle,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A case taking longer than this is a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Warp-instructions a CTA may run in a fuzz launch (the emulator's loop guard).
const INSTRUCTION_BUDGET: u64 = 200_000;
/// Bytes of the scratch allocation parameters point into.
const SCRATCH: usize = 256 * 1024;

/// Largest single allocation a case may make. An emulator allocating more for a program or a
/// launch would abort the process on a smaller machine (and does on this one soon after), so
/// the fuzz binary's allocator treats it as a failure of the case: it prints the case and the
/// input (an abort cannot be caught) and aborts.
const ALLOC_LIMIT: usize = 1 << 30;

/// The seed and case number running (for the allocation guard's report).
static RUNNING: Mutex<Option<(u64, u64)>> = Mutex::new(None);
/// The input of the running case.
static INPUT: Mutex<String> = Mutex::new(String::new());

struct GuardedAlloc;

// SAFETY: every call is forwarded to the system allocator unchanged; an oversized request
// aborts the process before it reaches it.
unsafe impl std::alloc::GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            oversized(layout.size());
        }
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            oversized(layout.size());
        }
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from the system allocator with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        if new > ALLOC_LIMIT {
            oversized(new);
        }
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

fn oversized(bytes: usize) -> ! {
    let running = RUNNING.try_lock().ok().and_then(|g| *g);
    let input = INPUT.try_lock().map(|s| s.clone()).unwrap_or_default();
    let at = match running {
        Some((seed, case)) => {
            let file = std::env::temp_dir().join(format!("flashmha-fuzz-{seed}-{case}.ptx"));
            let _ = std::fs::write(&file, input.as_bytes());
            format!(
                "case {case} (FLASHMHA_FUZZ_SEED={seed} FLASHMHA_FUZZ_CASE={case}), input in {}",
                file.display()
            )
        }
        None => "outside a case".to_string(),
    };
    eprintln!(
        "fuzz: an allocation of {bytes} bytes (over {ALLOC_LIMIT}) in {at}\n{}",
        std::backtrace::Backtrace::force_capture()
    );
    std::process::abort()
}

/// What one case did (for the summary).
#[derive(Default, Clone, Copy)]
struct Tally {
    mutants: u64,
    parse_errors: u64,
    launches: u64,
    launch_errors: u64,
    findings: u64,
    maps: u64,
    misuse: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.mutants += o.mutants;
        self.parse_errors += o.parse_errors;
        self.launches += o.launches;
        self.launch_errors += o.launch_errors;
        self.findings += o.findings;
        self.maps += o.maps;
        self.misuse += o.misuse;
    }
}

fn case_rng(seed: u64, case: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Launch shapes a kernel may be written for.
fn random_cfg(rng: &mut StdRng) -> LaunchConfig {
    const BLOCKS: [u32; 6] = [32, 64, 96, 128, 256, 384];
    const SMEM: [u32; 6] = [0, 1024, 16 * 1024, 48 * 1024, 100 * 1024, 227 * 1024];
    LaunchConfig {
        grid: [rng.random_range(1..=2), rng.random_range(1..=2), 1],
        block: [BLOCKS[rng.random_range(0..BLOCKS.len())], 1, 1],
        dynamic_smem_bytes: SMEM[rng.random_range(0..SMEM.len())],
    }
}

fn map_fields(rng: &mut StdRng, addr: u64, valid: bool) -> TiledTensorMap {
    const TYPES: [TmaDataType; 4] = [
        TmaDataType::U8,
        TmaDataType::F16,
        TmaDataType::F32,
        TmaDataType::F64,
    ];
    const SWIZZLES: [TmaSwizzle; 4] = [
        TmaSwizzle::None,
        TmaSwizzle::B32,
        TmaSwizzle::B64,
        TmaSwizzle::B128,
    ];
    let data_type = TYPES[rng.random_range(0..TYPES.len())];
    let rank = rng.random_range(1..=5usize);
    let esize = data_type.size() as u64;
    let pick = |rng: &mut StdRng, good: u64| -> u64 {
        if valid || rng.random_bool(0.7) {
            good
        } else {
            [0, 1, 15, 1 << 31, (1 << 31) + 1, 1 << 40, 1 << 63, u64::MAX][rng.random_range(0..8)]
        }
    };
    let mut global_dim = Vec::new();
    let mut box_dim = Vec::new();
    for k in 0..rank {
        let d = rng.random_range(1..=16u64);
        global_dim.push(pick(rng, d));
        let b = if k == 0 {
            (16 / esize).max(1) as u32 * rng.random_range(1..=2u32)
        } else {
            rng.random_range(1..=4u32)
        };
        let b = pick(rng, b as u64) as u32;
        box_dim.push(b);
    }
    let mut global_strides = Vec::new();
    let mut stride = 16 * 16 * esize;
    for _ in 1..rank {
        global_strides.push(pick(rng, stride));
        stride *= 16;
    }
    TiledTensorMap {
        data_type,
        global_address: pick(rng, addr),
        global_dim,
        global_strides,
        box_dim,
        element_strides: (0..rank)
            .map(|_| {
                let e = rng.random_range(1..=2);
                pick(rng, e) as u32
            })
            .collect(),
        interleave: TmaInterleave::None,
        swizzle: if valid {
            TmaSwizzle::None
        } else {
            SWIZZLES[rng.random_range(0..4)]
        },
        l2_promotion: TmaL2Promotion::None,
        oob_fill: if rng.random_bool(0.5) {
            TmaOobFill::None
        } else {
            TmaOobFill::NanRequestZeroFma
        },
    }
}

/// FNV-1a over the first 112 bytes, the checksum of the emulator's documented tensor-map
/// layout (emulator/src/tensormap.rs), so a forged map gets past the checksum check.
fn reseal(b: &mut [u8; 128]) {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &x in &b[..112] {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    b[112..120].copy_from_slice(&h.to_le_bytes());
}

/// A tensor map over `scratch`: encoded from random (possibly illegal) fields, then perhaps
/// forged (bytes edited, checksum fixed), or plain random bytes.
fn random_map(rng: &mut StdRng, scratch: DevicePtr) -> [u8; 128] {
    let valid = rng.random_bool(0.5);
    let fields = map_fields(rng, scratch.0, valid);
    let mut b = match TensorMap::encode_tiled(&fields) {
        Ok(m) => *m.as_bytes(),
        Err(_) => {
            let mut b = [0u8; 128];
            rng.fill(&mut b[..]);
            b
        }
    };
    if rng.random_bool(0.5) {
        for _ in 0..rng.random_range(1..=4) {
            let at = rng.random_range(0..112);
            b[at] = if rng.random_bool(0.5) {
                rng.random()
            } else {
                [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)]
            };
        }
        reseal(&mut b);
    }
    // The decoder is public: it must refuse or accept, never panic.
    let _ = TensorMap::decode(&b);
    b
}

/// Random parameter bytes for `layout`: 8-byte words pointing into `scratch` (at random
/// offsets, sometimes past its end), small or boundary integers, and tensor maps in 128-byte
/// parameters.
fn random_params(rng: &mut StdRng, module: &Module, entry: &str, scratch: DevicePtr) -> Vec<u8> {
    let size = module.param_size(entry).unwrap_or(0);
    let mut p = vec![0u8; size];
    for d in module.param_layout(entry).unwrap_or_default() {
        let (o, n) = (d.offset as usize, d.size as usize);
        if n == 128 && rng.random_bool(0.8) {
            p[o..o + 128].copy_from_slice(&random_map(rng, scratch));
            continue;
        }
        for w in (o..o + n).step_by(8) {
            let len = (o + n - w).min(8);
            let v: u64 = match rng.random_range(0..6) {
                0..=2 => scratch.0 + rng.random_range(0..SCRATCH as u64 / 64) * 16,
                3 => (rng.random_range(0..=64u64)) | (rng.random_range(0..=64u64) << 32),
                4 => rng.random_range(0..=4096),
                _ => rng.random(),
            };
            p[w..w + len].copy_from_slice(&v.to_le_bytes()[..len]);
        }
    }
    p
}

fn launch_all(rng: &mut StdRng, module: &Module, t: &mut Tally) {
    let mut dev = Device::with_options(EmuOptions {
        max_warp_instructions_per_cta: INSTRUCTION_BUDGET,
        ..EmuOptions::default()
    });
    let scratch = dev.alloc(SCRATCH);
    let entries: Vec<String> = module.entries().map(str::to_string).collect();
    for e in entries.iter().take(2) {
        let params = random_params(rng, module, e, scratch);
        let cfg = random_cfg(rng);
        t.launches += 1;
        match dev.launch(module, e, &cfg, &params) {
            Ok(rep) => t.findings += rep.findings.len() as u64,
            Err(_) => t.launch_errors += 1,
        }
    }
    for (e, _) in module.rejected_entries() {
        // A rejected entry returns its load error, never runs.
        assert!(dev.launch(module, e, &random_cfg(rng), &[]).is_err());
    }
}

fn ptx_case(rng: &mut StdRng, units: &[corpus::Unit], t: &mut Tally) {
    let u = &units[rng.random_range(0..units.len())];
    let donor = &units[rng.random_range(0..units.len())];
    let (mutant, log) = mutate::mutate(rng, &u.ptx, &donor.ptx);
    *INPUT.lock().unwrap() = format!("mutant of {}\n{}\n\n{mutant}", u.name, log.join("\n"));
    t.mutants += 1;
    match Module::parse(&mutant) {
        Ok(m) => launch_all(rng, &m, t),
        Err(e) => {
            t.parse_errors += 1;
            // Errors render (Display walks the line text).
            let _ = e.to_string();
        }
    }
}

/// The TMA kernel of the tensor-map cases: thread 0 initialises an mbarrier, prefetches the
/// map, loads a box at the coordinates in the parameters into shared memory, waits, and stores
/// it back to the same coordinates.
fn tma_kernel(rank: usize) -> String {
    let coords: Vec<String> = (0..rank).map(|k| format!("%r{}", 10 + k)).collect();
    let coords = coords.join(", ");
    let loads: String = (0..rank)
        .map(|k| format!("\tld.param.u32 %r{}, [c+{}];\n", 10 + k, 4 * k))
        .collect();
    format!(
        ".version 8.0\n.target sm_90a\n.address_size 64\n.extern .shared .align 1024 .b8 tile[];\n\
.visible .entry t(.param .align 64 .b8 tmap[128], .param .align 4 .b8 c[20], .param .u32 tx)\n{{\n\
\t.reg .b32 %r<32>;\n\t.reg .b64 %rd<8>;\n\t.reg .pred %p<4>;\n\
\t.shared .align 8 .b64 bar[1];\n\
\tmov.u32 %r1, bar;\n\tmov.u32 %r2, tile;\n\tmov.u64 %rd1, tmap;\n\tcvta.param.u64 %rd2, %rd1;\n\
\tld.param.u32 %r4, [tx];\n{loads}\
\tmov.u32 %r3, %tid.x;\n\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra DONE;\n\
\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\tfence.proxy.async.shared::cta;\n\
\tprefetch.tensormap [%rd2];\n\
\tcp.async.bulk.prefetch.tensor.{rank}d.L2.global.tile [%rd2, {{{coords}}}];\n\
\tmbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], %r4;\n\
\tcp.async.bulk.tensor.{rank}d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd2, {{{coords}}}], [%r1];\n\
WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r1], 0, 1000;\n\t@!%p2 bra WAIT;\n\
\tcp.async.bulk.tensor.{rank}d.global.shared::cta.bulk_group [%rd2, {{{coords}}}], [%r2];\n\
\tcp.async.bulk.commit_group;\n\tcp.async.bulk.wait_group 0;\nDONE:\n\tret;\n}}\n"
    )
}

fn map_case(rng: &mut StdRng, modules: &[Module], t: &mut Tally) {
    t.maps += 1;
    let mut dev = Device::with_options(EmuOptions {
        max_warp_instructions_per_cta: INSTRUCTION_BUDGET,
        ..EmuOptions::default()
    });
    let scratch = dev.alloc(SCRATCH);
    let map = random_map(rng, scratch);
    let rank = rng.random_range(1..=5);
    let mut params = vec![0u8; 152];
    params[..128].copy_from_slice(&map);
    const COORDS: [i32; 10] = [
        0,
        1,
        -1,
        7,
        16,
        -16,
        i32::MAX,
        i32::MIN,
        1 << 30,
        -(1 << 30),
    ];
    for k in 0..5 {
        let c = if rng.random_bool(0.5) {
            rng.random_range(-4..=20)
        } else {
            COORDS[rng.random_range(0..COORDS.len())]
        };
        params[128 + 4 * k..132 + 4 * k].copy_from_slice(&c.to_le_bytes());
    }
    let tx: u32 = [0, 16, 256, 4096, (1 << 20) - 1, u32::MAX][rng.random_range(0..6)];
    params[148..152].copy_from_slice(&tx.to_le_bytes());
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        dynamic_smem_bytes: [0, 1024, 8192, 64 * 1024][rng.random_range(0..4)],
    };
    t.launches += 1;
    match dev.launch(&modules[rank - 1], "t", &cfg, &params) {
        Ok(rep) => t.findings += rep.findings.len() as u64,
        Err(_) => t.launch_errors += 1,
    }
}

/// Host-API misuse on a small valid kernel: every call returns (an error or a report).
fn misuse_case(rng: &mut StdRng, module: &Module, t: &mut Tally) {
    t.misuse += 1;
    let mut dev = Device::with_options(EmuOptions {
        max_warp_instructions_per_cta: INSTRUCTION_BUDGET,
        ..EmuOptions::default()
    });
    // Sizes past the emulated address space fail before allocating anything.
    let huge = [usize::MAX, 1 << 47, (1 << 63) + 1][rng.random_range(0..3)];
    assert!(dev.try_alloc(huge).is_err());
    let buf = dev.alloc(rng.random_range(0..4096));
    const EDGE: [u32; 8] = [0, 1, 32, 1024, 1025, 65535, 65536, u32::MAX];
    let dim = |rng: &mut StdRng| {
        if rng.random_bool(0.6) {
            rng.random_range(1..=4)
        } else {
            EDGE[rng.random_range(0..EDGE.len())]
        }
    };
    let cfg = LaunchConfig {
        grid: [dim(rng).min(8), dim(rng).min(8), dim(rng).min(8)],
        block: [dim(rng), dim(rng), dim(rng)],
        dynamic_smem_bytes: EDGE[rng.random_range(0..EDGE.len())],
    };
    let size = module.param_size("k").unwrap_or(0);
    let plen = [0, size.saturating_sub(1), size, size + 1, size + 8, 4096][rng.random_range(0..6)];
    let mut params = vec![0u8; plen];
    if plen >= 8 {
        let p = match rng.random_range(0..4) {
            0 => buf.0,
            1 => u64::MAX - rng.random_range(0..64),
            2 => rng.random(),
            _ => 0,
        };
        params[..8].copy_from_slice(&p.to_le_bytes());
    }
    let entry = if rng.random_bool(0.9) { "k" } else { "missing" };
    t.launches += 1;
    match dev.launch(module, entry, &cfg, &params) {
        Ok(rep) => t.findings += rep.findings.len() as u64,
        Err(_) => t.launch_errors += 1,
    }
    let at = match rng.random_range(0..3) {
        0 => buf,
        1 => DevicePtr(u64::MAX - rng.random_range(0..64)),
        _ => DevicePtr(rng.random()),
    };
    let len = [0, 1, 4096, 1 << 40, usize::MAX][rng.random_range(0..5)];
    let _ = dev.read(at, len);
    if len <= 4096 {
        let _ = dev.write(at, &vec![7u8; len]);
    }
    dev.free(at);
    dev.free(buf);
    let _ = dev.read(buf, 1);
}

/// The kernel of the misuse cases: every thread adds its id into `out[tid]` (u32).
const MISUSE_KERNEL: &str = ".version 8.0\n.target sm_80\n.address_size 64\n\
.visible .entry k(.param .u64 out)\n{\n\t.reg .b32 %r<4>;\n\t.reg .b64 %rd<4>;\n\
\tld.param.u64 %rd1, [out];\n\tmov.u32 %r1, %tid.x;\n\tmul.wide.u32 %rd2, %r1, 4;\n\
\tadd.s64 %rd3, %rd1, %rd2;\n\tatom.global.add.u32 %r2, [%rd3], %r1;\n\tret;\n}\n";

/// A recorded panic: message and where it happened.
type PanicLog = Arc<Mutex<Vec<String>>>;

#[test]
fn mutants_tensor_maps_and_misuse_never_panic_or_hang() {
    let secs: u64 = std::env::var("FLASHMHA_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("FLASHMHA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let only: Option<u64> = std::env::var("FLASHMHA_FUZZ_CASE")
        .ok()
        .and_then(|s| s.parse().ok());
    let (units, out_dir) = corpus::load();
    let kernels = units
        .iter()
        .filter(|u| !u.name.starts_with("tests/"))
        .count();
    match &out_dir {
        Some(d) => eprintln!("fuzz: flashmha kernels from {}", d.display()),
        None if std::env::var_os("FLASHMHA_FUZZ_REQUIRE_KERNELS").is_some() => {
            panic!("FLASHMHA_FUZZ_REQUIRE_KERNELS is set but no flashmha build output was found (build the flashmha crate first, or set FLASHMHA_FUZZ_PTX_DIR)")
        }
        None => eprintln!("fuzz: flashmha kernels not found (build the flashmha crate first); fuzzing the emulator's test modules only"),
    }
    assert!(units.len() > kernels, "no PTX found in emulator/tests/ptx");
    if std::env::var_os("FLASHMHA_FUZZ_REQUIRE_KERNELS").is_some() {
        assert!(kernels > 0, "the flashmha build output holds no PTX");
    }
    eprintln!(
        "fuzz: seed {seed}, {secs} s, {} seed units ({kernels} from flashmha kernels)",
        units.len()
    );

    // Panics are recorded (message and location) rather than printed per case.
    let log: PanicLog = Arc::new(Mutex::new(Vec::new()));
    let hook_log = log.clone();
    let default_hook = std::panic::take_hook();
    let test_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == test_thread {
            return default_hook(info);
        }
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        hook_log.lock().unwrap().push(format!("{at}: {msg}"));
    }));

    // Per finished case: its tally and, if it panicked, the report; `None` at the end.
    let (tx, rx) = mpsc::channel::<Option<(Tally, Option<String>)>>();
    let worker_log = log.clone();
    let deadline = Instant::now() + Duration::from_secs(secs);
    std::thread::spawn(move || {
        let tma: Vec<Module> = (1..=5)
            .map(|r| Module::parse(&tma_kernel(r)).expect("the TMA kernel loads"))
            .collect();
        let misuse = Module::parse(MISUSE_KERNEL).expect("the misuse kernel loads");
        let mut case = only.unwrap_or(0);
        loop {
            let mut rng = case_rng(seed, case);
            let mut t = Tally::default();
            worker_log.lock().unwrap().clear();
            *INPUT.lock().unwrap() = String::new();
            *RUNNING.lock().unwrap() = Some((seed, case));
            let kind = rng.random_range(0..10);
            let r = catch_unwind(AssertUnwindSafe(|| match kind {
                0 => map_case(&mut rng, &tma, &mut t),
                1 => misuse_case(&mut rng, &misuse, &mut t),
                _ => ptx_case(&mut rng, &units, &mut t),
            }));
            let panicked = r.err().map(|_| {
                let what = worker_log.lock().unwrap().join("; ");
                let file = std::env::temp_dir().join(format!("flashmha-fuzz-{seed}-{case}.ptx"));
                let _ = std::fs::write(&file, INPUT.lock().unwrap().as_bytes());
                format!("{what}\n    case {case} (FLASHMHA_FUZZ_SEED={seed} FLASHMHA_FUZZ_CASE={case}), kind {kind}, input in {}", file.display())
            });
            if tx.send(Some((t, panicked))).is_err() {
                return;
            }
            case += 1;
            if only.is_some() || Instant::now() >= deadline {
                let _ = tx.send(None);
                return;
            }
        }
    });

    let mut total = Tally::default();
    let mut cases = 0u64;
    let mut panics: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let started = Instant::now();
    loop {
        match rx.recv_timeout(CASE_TIMEOUT) {
            Ok(Some((t, panicked))) => {
                cases += 1;
                total.add(&t);
                if let Some(p) = panicked {
                    let site = p.split(": ").next().unwrap_or("").to_string();
                    let e = panics.entry(site).or_insert((0, p));
                    e.0 += 1;
                }
            }
            Ok(None) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the fuzz worker died: {}", log.lock().unwrap().join("; "))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let input = INPUT.lock().unwrap().clone();
                let case = RUNNING.lock().unwrap().map_or(0, |(_, c)| c);
                let file = std::env::temp_dir().join(format!("flashmha-fuzz-{seed}-{case}.ptx"));
                let _ = std::fs::write(&file, input.as_bytes());
                let head: String = input.lines().take(40).collect::<Vec<_>>().join("\n");
                panic!(
                    "case {case} ran longer than {CASE_TIMEOUT:?} (a hang; FLASHMHA_FUZZ_SEED={seed} FLASHMHA_FUZZ_CASE={case}), input in {}:\n{head}",
                    file.display()
                );
            }
        }
    }
    let _ = std::panic::take_hook();
    eprintln!(
        "fuzz: {cases} cases in {:.1} s: {} PTX mutants ({} parse/load errors), {} tensor-map cases, {} misuse cases, {} launches ({} launch errors, {} findings), {} panics at {} sites",
        started.elapsed().as_secs_f64(),
        total.mutants,
        total.parse_errors,
        total.maps,
        total.misuse,
        total.launches,
        total.launch_errors,
        total.findings,
        panics.values().map(|p| p.0).sum::<u64>(),
        panics.len()
    );
    assert!(cases > 0, "no case ran");
    if !panics.is_empty() {
        let list: Vec<String> = panics.values().map(|(n, p)| format!("{n} x {p}")).collect();
        panic!("the emulator panicked:\n{}", list.join("\n"));
    }
}
