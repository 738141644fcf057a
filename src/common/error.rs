//! The crate's typed error. Every invalid input is reported here before any launch, as a
//! structured variant that names the tensor, the dimension, what was expected and what was
//! found. No type of a dependency appears in it (a CUDA driver failure is carried as its code
//! and name), so our semver does not follow cudarc's.

use crate::common::dtype::DType;
use crate::common::target::KernelTarget;

/// The tensors and buffers of the crate's kernels, as errors name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TensorName {
    Q,
    K,
    V,
    O,
    Lse,
    Entropy,
    AlibiSlopes,
    HeadGates,
    /// Attention-sink logits `[hq]` (f32).
    Sinks,
    CuSeqlensQ,
    CuSeqlensK,
    /// The head-similarity kernel's input (attention outputs).
    HeadSimInput,
    /// The head-similarity kernel's `[heads, heads]` accumulator.
    Gram,
    /// Paged decode: the K page pool `[num_pages, page_size, hkv, d]` (or HND).
    KCache,
    /// Paged decode: the V page pool.
    VCache,
    /// Paged decode: `[batch, max_pages_per_seq]` i32 page indices.
    BlockTable,
    /// Paged decode: `[batch]` i32 cache lengths.
    CacheSeqlens,
    /// The caller's split-KV workspace (one f32 buffer carved into the partials below).
    Workspace,
    /// Split-KV workspace: partial O `[splits, total_q, hq, d]` f32.
    PartialO,
    /// Split-KV workspace: partial LSE `[splits, total_q, hq]` f32.
    PartialLse,
    /// Split-KV workspace: partial entropy `[splits, total_q, hq]` f32.
    PartialEntropy,
    /// merge_states: the stacked states' O `[num_states, rows, heads, d]`.
    OStates,
    /// merge_states: the stacked states' LSE `[num_states, rows, heads]`.
    LseStates,
    /// merge_states of two buffers: state A's O `[rows, heads, d]`.
    OA,
    /// merge_states of two buffers: state A's LSE `[rows, heads]`.
    LseA,
    /// merge_states of two buffers: state B's O.
    OB,
    /// merge_states of two buffers: state B's LSE.
    LseB,
    /// KV append: the new K rows `[num_tokens, hkv, d]`.
    KNew,
    /// KV append: the new V rows.
    VNew,
    /// KV append: `[num_tokens]` i32 slots.
    SlotMapping,
    /// FP8 pages: the K scales (`[1]` per tensor or `[hkv]` per KV head) f32.
    KScales,
    /// FP8 pages: the V scales.
    VScales,
    /// KV append through the block table: `[num_tokens]` i32 batch items.
    TokenBatch,
    /// KV append through the block table: `[num_tokens]` i32 positions in the items.
    TokenPos,
    /// Backward: the output gradient dO (laid out like o).
    DOut,
    /// Backward: the query gradient dQ (laid out like q).
    DQ,
    /// Backward: the key gradient dK (laid out like k).
    DK,
    /// Backward: the value gradient dV (laid out like v).
    DV,
    /// Backward: the head gates' gradient `[hq]` f32.
    DHeadGates,
    /// Backward: the sinks' gradient `[hq]` f32.
    DSinks,
    /// Forward-mode (JVP): the output tangent O' (laid out like o).
    OTangent,
}

impl std::fmt::Display for TensorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TensorName::Q => "q",
            TensorName::K => "k",
            TensorName::V => "v",
            TensorName::O => "o",
            TensorName::Lse => "lse",
            TensorName::Entropy => "entropy",
            TensorName::AlibiSlopes => "alibi_slopes",
            TensorName::HeadGates => "head_gates",
            TensorName::Sinks => "sinks",
            TensorName::CuSeqlensQ => "cu_seqlens_q",
            TensorName::CuSeqlensK => "cu_seqlens_k",
            TensorName::HeadSimInput => "o (head similarity)",
            TensorName::Gram => "gram",
            TensorName::KCache => "k_cache",
            TensorName::VCache => "v_cache",
            TensorName::BlockTable => "block_table",
            TensorName::CacheSeqlens => "cache_seqlens",
            TensorName::Workspace => "workspace",
            TensorName::PartialO => "partial_o",
            TensorName::PartialLse => "partial_lse",
            TensorName::PartialEntropy => "partial_entropy",
            TensorName::OStates => "o_states",
            TensorName::LseStates => "lse_states",
            TensorName::OA => "o_a",
            TensorName::LseA => "lse_a",
            TensorName::OB => "o_b",
            TensorName::LseB => "lse_b",
            TensorName::KNew => "k_new",
            TensorName::VNew => "v_new",
            TensorName::SlotMapping => "slot_mapping",
            TensorName::KScales => "k_scales",
            TensorName::VScales => "v_scales",
            TensorName::TokenBatch => "token_batch",
            TensorName::TokenPos => "token_pos",
            TensorName::DOut => "d_o",
            TensorName::DQ => "dq",
            TensorName::DK => "dk",
            TensorName::DV => "dv",
            TensorName::DHeadGates => "d_head_gates",
            TensorName::DSinks => "d_sinks",
            TensorName::OTangent => "o_tangent",
        })
    }
}

/// A dimension of a tensor, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dim {
    Batch,
    /// Sequence positions (rows, tokens).
    Seq,
    Heads,
    HeadDim,
    /// The element count of a flat buffer.
    Len,
    /// Pages of a page pool (`num_pages`), or page columns of a block table
    /// (`max_pages_per_seq`).
    Page,
    /// Slots of a page (`page_size`: keys per page).
    Slot,
    /// States of a merge (or splits of a split-KV decode).
    State,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dim::Batch => "batch",
            Dim::Seq => "seq",
            Dim::Heads => "heads",
            Dim::HeadDim => "head_dim",
            Dim::Len => "len",
            Dim::Page => "page",
            Dim::Slot => "slot",
            Dim::State => "state",
        })
    }
}

/// A 32-bit (or grid) limit of the kernels' index math that a size would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// CUDA's grid.y / grid.z limit (query heads, batch items).
    GridYz,
    /// CUDA's grid.x limit.
    GridX,
    /// `seqlen_q + seqlen_k` of one item, formed in 32-bit mask/ALiBi math.
    SeqlenSum,
    /// Rows of a packed (varlen) tensor, or any int32 length in the params.
    Rows32,
    /// A q/k/v row stride, used in 32-bit tile offsets.
    RowStride,
    /// Elements of the LSE / entropy outputs, indexed in 32 bits.
    RowStats,
    /// A window bound in the int32 params field.
    Window,
    /// Tokens of a head-similarity call.
    Tokens,
    /// A byte stride of a tensor map of the sm_90a forward (the TMA encoder takes < 2^40).
    TmaStride,
    /// Bytes a tensor spans from its base (strides x extents): the kernels form element and
    /// byte offsets in signed 64-bit.
    Span64,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::GridYz => "grid y/z (query heads or batch)",
            Limit::GridX => "grid x",
            Limit::SeqlenSum => "seqlen_q + seqlen_k of one item",
            Limit::Rows32 => "rows (int32)",
            Limit::RowStride => "row stride",
            Limit::RowStats => "lse/entropy elements",
            Limit::Window => "window bound",
            Limit::Tokens => "tokens",
            Limit::TmaStride => "tensor-map byte stride",
            Limit::Span64 => "bytes a tensor spans (int64 offsets)",
        })
    }
}

/// A scalar option with an invalid value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OptionName {
    SoftmaxScale,
    Softcap,
}

impl std::fmt::Display for OptionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptionName::SoftmaxScale => "softmax_scale",
            OptionName::Softcap => "softcap",
        })
    }
}

/// What is wrong with a host copy of `cu_seqlens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CuSeqlensFault {
    /// Fewer than 2 entries (batch + 1 >= 2).
    TooShort,
    /// Entry 0 is not 0.
    FirstNotZero,
    /// Entry `index + 1` is smaller than entry `index`.
    Decreasing { index: usize },
    /// `cu_seqlens_q` and `cu_seqlens_k` have different lengths.
    LengthMismatch,
    /// Not `batch + 1` entries.
    WrongLength { expected: usize, found: usize },
    /// Item `index` has more rows than the plan's upper bound `max`.
    ItemTooLong { index: usize, max: usize },
    /// Entry `index` exceeds the plan's total rows `total`.
    BeyondTotal { index: usize, total: usize },
}

/// What about an address or stride breaks an alignment rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlignWhat {
    /// The base address (bytes).
    Base,
    /// A stride of that dimension (elements times element size).
    Stride(Dim),
    /// The head dim times the element size.
    HeadDim,
}

/// Everything a flashmha call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{tensor}: dimension {dim} must be >= 1")]
    EmptyDim { tensor: TensorName, dim: Dim },
    #[error("{tensor}: dimension {dim} is {found}, expected {expected}")]
    DimMismatch {
        tensor: TensorName,
        dim: Dim,
        expected: usize,
        found: usize,
    },
    #[error("{tensor}: dimension {dim} is {found}, at most {max} is supported")]
    DimTooLarge {
        tensor: TensorName,
        dim: Dim,
        max: usize,
        found: usize,
    },
    #[error("num_heads_q ({heads_q}) must be a multiple of num_heads_kv ({heads_kv}) for GQA/MQA")]
    HeadsNotDivisible { heads_q: usize, heads_kv: usize },
    #[error("{tensor}: {dim} stride {stride} is negative")]
    NegativeStride {
        tensor: TensorName,
        dim: Dim,
        stride: i64,
    },
    #[error("{tensor}: distinct elements overlap in memory (strides [{batch}, {row}, {head}], head_dim {head_dim})")]
    OverlappingOutput {
        tensor: TensorName,
        batch: i64,
        row: i64,
        head: i64,
        head_dim: usize,
    },
    #[error("{tensor} needs {needed} elements but its buffer holds {available}")]
    BufferTooSmall {
        tensor: TensorName,
        needed: u64,
        available: u64,
    },
    #[error("{tensor}: {what:?} is {value}, not a multiple of {required} bytes")]
    Misaligned {
        tensor: TensorName,
        what: AlignWhat,
        required: usize,
        value: u64,
    },
    #[error(
        "head dim {head_dim} is not supported for {dtype} on {target} (compiled: {supported:?})"
    )]
    UnsupportedHeadDim {
        dtype: DType,
        head_dim: usize,
        target: KernelTarget,
        supported: Vec<u32>,
    },
    /// d_qk != d_v (issue 23): only compiled pairs run, each exactly (its columns are not
    /// predicated per tensor); `supported` lists them as (d_qk, d_v).
    #[error(
        "head dims (d_qk {head_dim}, d_v {head_dim_v}) are not supported for {dtype} on {target} (compiled pairs: {supported:?})"
    )]
    UnsupportedHeadDimPair {
        dtype: DType,
        head_dim: usize,
        head_dim_v: usize,
        target: KernelTarget,
        supported: Vec<(u32, u32)>,
    },
    #[error("{dtype} is not supported on {target} (Turing has no bf16 mma: use f16 there)")]
    UnsupportedDType { dtype: DType, target: KernelTarget },
    #[error("{what} has no kernels for {target} in this build")]
    UnsupportedOnTarget {
        what: &'static str,
        target: KernelTarget,
    },
    #[error("the plan was made for {plan} kernels but the device runs {device} kernels (make plans with FwdPlan::new_for(backend.target(), ..))")]
    TargetMismatch {
        plan: KernelTarget,
        device: KernelTarget,
    },
    #[error("the K/V page pools hold {found} elements but the problem's kv_dtype is {expected}")]
    KvPoolMismatch {
        expected: &'static str,
        found: &'static str,
    },
    #[error("{tensor} holds {found} but {expected} was expected")]
    DTypeMismatch {
        tensor: TensorName,
        expected: DType,
        found: DType,
    },
    #[error("{which}: {fault:?}")]
    CuSeqlens {
        which: TensorName,
        fault: CuSeqlensFault,
    },
    #[error("{limit} = {value} overflows the kernel's index math (limit {max})")]
    Overflow32 { limit: Limit, value: u64, max: u64 },
    #[error("{what} overflows the host's address space")]
    SizeOverflow { what: &'static str },
    #[error("a copy of {elements} elements into a device buffer of {capacity}")]
    CopyTooLarge { elements: u64, capacity: u64 },
    #[error("option {option} = {value} is invalid (must be finite and > 0)")]
    InvalidOption { option: OptionName, value: f32 },
    #[error("diagnostic setting {setting} = {value} is invalid ({rule})")]
    InvalidSetting {
        setting: &'static str,
        value: f64,
        rule: &'static str,
    },
    #[error("{tensor}[{index}] = {value} is not a valid FP8 scale (must be finite and > 0)")]
    InvalidScale {
        tensor: TensorName,
        index: usize,
        value: f32,
    },
    #[error("{tensor}: {dim} stride {stride} is below its minimum {min}")]
    StrideTooSmall {
        tensor: TensorName,
        dim: Dim,
        stride: i64,
        min: i64,
    },
    #[error("split-KV: {found} splits requested or implied, 1..={max} are supported")]
    SplitCount { found: u64, max: u32 },
    #[error("split-KV: a fixed split of {found} keys must be a positive multiple of {align}")]
    SplitKeys { found: u32, align: u32 },
    #[error("{a} and {b} overlap in device memory")]
    Alias { a: TensorName, b: TensorName },
    #[error("{tensor} is required by this call but no buffer was given")]
    MissingBuffer { tensor: TensorName },
    #[error(
        "{tensor} was given but this call does not use it (e.g. cu_seqlens with a padded layout)"
    )]
    UnexpectedBuffer { tensor: TensorName },
    #[error("no CUDA driver: {reason} (flashmha needs an NVIDIA GPU and driver for the cuda backend; the emulator backend runs anywhere)")]
    NoCudaDriver { reason: &'static str },
    #[error("no cubin or PTX in this build can run on compute capability {major}.{minor}")]
    UnsupportedGpu { major: i32, minor: i32 },
    #[error("CUDA driver error {code} ({name})")]
    Cuda { code: u32, name: String },
    #[error("kernel {entry} is not in this build (see `flashmha info`)")]
    NoKernel { entry: String },
    #[error("emulator: {0}")]
    Emulator(#[from] EmulatorError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadInputFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot draw {path}: {reason}")]
    Plot {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{what}: entry {index} is {value} (non-finite input?)")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f32,
    },
    #[error("no TrueType font found for the plots: pass --font PATH or set {env}")]
    FontNotFound { env: &'static str },
    #[error("reference computation failed: {0}")]
    Reference(String),
    /// Bad input of the probing map (`diagnose --probe`).
    #[cfg(feature = "diagnostics")]
    #[error(transparent)]
    Probe(#[from] crate::diagnostics::probe::ProbeError),
}

/// Failures of an emulated launch: loading the PTX, or the kernel's own findings when the caller
/// asked for a clean run (a device-index `trap` lands here).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    #[error("loading or launching failed: {0}")]
    Launch(String),
    #[error("the kernel reported {count} finding(s), first: {first}")]
    Findings { count: usize, first: String },
    /// A finding of a launch through [`crate::backend::emulator::EmulatorBackend`], named by the
    /// kernel and, where the finding has a global address, the bound tensor and element it falls
    /// in (or the nearest tensor below it, `past_end`: an access running off that tensor).
    #[error(
        "kernel {kernel}: {count} finding(s), first: {kind}{}: {finding}",
        at.map_or(String::new(), |(t, i, past)| format!(
            " at {t}[{i}]{}", if past { " (past its end)" } else { "" }
        ))
    )]
    KernelFinding {
        kernel: String,
        kind: String,
        /// Tensor, element index, and whether the index is past the tensor's end.
        at: Option<(TensorName, u64, bool)>,
        count: usize,
        /// The finding as the emulator states it (PTX line, CTA, thread, detail).
        finding: String,
    },
}

/// A cudarc driver error as our own [`Error::Cuda`] (a function, not a `From` impl, so that no
/// cudarc type appears in the public error's API and our semver does not follow cudarc's).
pub(crate) fn driver_error(e: cudarc::driver::DriverError) -> Error {
    Error::Cuda {
        code: e.0 as u32,
        name: e.error_name().map_or_else(
            |_| "unknown".to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
    }
}

#[cfg(feature = "emulator")]
impl From<crate::emulator::EmuError> for Error {
    fn from(e: crate::emulator::EmuError) -> Self {
        Error::Emulator(EmulatorError::Launch(e.to_string()))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
