//! PTX emulator: runs the PTX that nvcc emits for our kernels on the CPU, checks it for memory
//! errors, races and hazards, and counts what it executes. No GPU involved; this is how every
//! kernel is executed, checked and measured in CI (README.md, "The emulator").
//!
//! # Using it
//! ```no_run
//! use flashmha_emulator::{Device, LaunchConfig, Module};
//! # fn main() -> Result<(), flashmha_emulator::EmuError> {
//! let ptx = std::fs::read_to_string("kernel.ptx").unwrap();
//! let module = Module::parse(&ptx)?;                 // parse + lower each entry
//! let mut dev = Device::new();
//! let x = dev.upload(&[0u8; 1024]);                   // DevicePtr
//! let params = x.0.to_le_bytes();                     // raw parameter-space bytes
//! let cfg = LaunchConfig { grid: [4, 1, 1], block: [128, 1, 1], dynamic_smem_bytes: 0 };
//! let report = dev.launch(&module, "my_kernel", &cfg, &params)?;
//! for f in &report.findings { eprintln!("{f}"); }
//! println!("{}", report.counters);
//! let out = dev.read(x, 1024)?;
//! # Ok(()) }
//! ```
//!
//! # Files (each may only touch what it says)
//! * `lexer.rs`, `parser.rs`, `ast.rs`: PTX text to syntax tree (no semantics).
//! * `types.rs`: PTX types and state spaces.
//! * `lower/`, `program.rs`: syntax tree to the executable form (dense registers, decoded
//!   qualifiers, resolved labels); unsupported instructions and qualifiers are rejected here, at
//!   load time. `lower/mod.rs` routes each opcode to one file per instruction family, and
//!   `lower/quals.rs` is the qualifier parser every family consumes from.
//! * `softfloat.rs`: exact rounding to f16/bf16/tf32/f32/f64 in every rounding mode.
//! * `exec/`: the engine. `mod.rs` schedules warps and lanes of one CTA; the rest is one file
//!   per family: `int.rs`, `float.rs`, `sfu.rs`, `convert.rs`, `compare.rs` (per-lane
//!   arithmetic over `lanes.rs`), `mem.rs` (memory instructions and their checks),
//!   `async_copy.rs` (`cp.async`), `cluster.rs` (thread-block clusters: peer environments,
//!   shared::cluster addresses, `barrier.cluster`), `sync.rs` (barriers: the `Waitable` abstraction used by
//!   stall resolution and race-checker epochs), `mbarrier.rs` (mbarrier objects, their phases
//!   as waitables), `bulk.rs` (bulk and tensor/TMA copies, bulk groups, proxy fences, multicast),
//!   `collective.rs` (warp collectives), `tensor.rs` (`mma` fragment layouts, `ldmatrix`,
//!   `stmatrix`) and `wgmma.rs` (warpgroup MMA and its asynchronous commit/wait groups).
//! * `matrix_desc.rs`: the public wgmma shared-memory matrix descriptor (encode/decode) and the
//!   swizzled shared-memory layouts it describes.
//! * `tensormap.rs`: the public [`TensorMap`] encoder (the fields of `cuTensorMapEncodeTiled`
//!   into our own documented 128-byte layout) and its device-side decoder.
//! * `memory.rs` (global memory), `shared.rs` (shared memory + shadow state for the checks).
//! * `findings.rs`, `counters.rs`: what a launch reports.
//! * `device.rs`: the public backend API.
//! * `timing/`: the cycle-approximate SM timing model driven by instruction traces of a launch
//!   (`Device::launch_traced`); see its module doc.
//!
//! # Semantics worth knowing
//! * Independent thread scheduling: each lane has its own PC; converged lanes execute together
//!   (see `exec/mod.rs`). Collectives wait for their members; a collective or barrier that can
//!   never complete produces a finding instead of hanging.
//! * Floating point: f32/f64 arithmetic is IEEE with the requested rounding; `.approx` functions
//!   (`ex2`, `lg2`, `rcp`, `rsqrt`, `sin`, `cos`, `tanh`) are computed in f64 and rounded, i.e.
//!   more accurate than hardware. `mma` sums exact products in f64 and rounds once.
//! * Memory model: sequentially consistent; cache and ordering qualifiers are accepted and
//!   ignored. Freshly allocated global memory is poisoned with `0xFF` bytes.
//! * Race detection treats accesses of one warp as ordered (warp-synchronous programming is not
//!   flagged even without `__syncwarp`), and every completed barrier (any id) as a full CTA
//!   barrier; both can hide real races, neither produces false reports.
//! * Module-scope `.global`/`.const` variables are allocated and initialised per launch.
//! * Entries load independently: an entry using something unimplemented is kept as its load
//!   error (returned by `Device::launch` for it, listed by `Module::rejected_entries`) while the
//!   others run; a module with no loadable entry fails `Module::parse`.
//! * `call` to a `.func` is inlined at the call site with its own register scope and local
//!   frame (recursion is rejected at load time).
//! * Thread-block clusters ([`Device::launch_cluster`]): the CTAs of a cluster run in one
//!   scheduler; cluster registers, `mapa` / `getctarank`, `ld`/`st`/`atom` and `mbarrier`
//!   arrivals on a peer's shared memory, `barrier.cluster`, and `.multicast::cluster` tensor
//!   loads are implemented and checked (`exec/cluster.rs`). A plain launch is a grid of
//!   one-CTA clusters.
//! * Hopper: `elect.sync`, `griddepcontrol`,
//!   `setmaxnreg`, `mbarrier` (phases, arrival and tx-counts; `try_wait` parks the thread, a
//!   wait that can never complete is a deadlock finding), bulk and tensor (TMA) copies through
//!   tensor maps encoded with [`TensorMap::encode_tiled`] (swizzle, out-of-bounds fill, bulk
//!   groups) and `fence.proxy.async` are implemented. A kernel taking a `CUtensorMap`
//!   parameter gets the 128 bytes of [`TensorMap::as_bytes`] in its parameter buffer.
//! * Asynchronous proxy checks: a bulk/TMA load lands when a thread waits on its mbarrier (or
//!   nothing else can run), and its bytes are readable only once that mbarrier phase completed;
//!   reading them earlier, overwriting a bulk store's source before `wait_group.read`, a bulk
//!   store of generic-proxy writes without `fence.proxy.async`, and plain accesses to an
//!   mbarrier object are findings. Every completed mbarrier phase is a race-checker epoch, like
//!   a barrier.

mod ast;
mod counters;
mod device;
mod error;
mod exec;
mod findings;
mod lexer;
mod lower;
pub mod matrix_desc;
mod memory;
mod parser;
mod program;
mod shared;
mod softfloat;
mod tensormap;
pub mod timing;
mod types;

pub use counters::Counters;
pub use device::{
    CtaOrder, Device, DevicePtr, EmuOptions, LaunchConfig, LaunchReport, Module, ParamDecl,
    MAX_SHARED_BYTES,
};
pub use error::EmuError;
pub use findings::{Finding, FindingKind};
pub use memory::POISON;
pub use program::Class;
pub use softfloat::Rnd;
pub use tensormap::{
    TensorMap, TensorMapError, TiledTensorMap, TmaDataType, TmaInterleave, TmaL2Promotion,
    TmaOobFill, TmaSwizzle, TENSOR_MAP_ALIGN, TENSOR_MAP_BYTES,
};

/// Rounding helpers exposed for tests that compute expected results independently.
pub mod rounding {
    pub use super::softfloat::{round_f64, Fmt, Rnd, BF16, F16, F32, F64, TF32};
}
