//! The executable form of one kernel entry, produced once by `lower/`: a flat instruction
//! vector whose operands are dense register indices (immediates and special registers are
//! pre-loaded registers too, so every source operand is a register read), branch targets are
//! instruction indices, and every qualifier is decoded into enums. The executor never looks at
//! strings.

use super::softfloat::{Fmt, Rnd};
use super::types::{Space, Ty};

/// Dense register index into a warp's register file.
pub type R = u32;
/// "No register" marker for optional operands.
pub const NONE: R = u32::MAX;

/// Instruction class used by the counters (see `Counters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Int,
    Fp32,
    Fp64,
    Fp16,
    Conversion,
    Sfu,
    MemGlobal,
    MemShared,
    MemLocal,
    MemParam,
    Tensor,
    Shuffle,
    Control,
    Sync,
    Other,
}

impl Class {
    pub const ALL: [Class; 15] = [
        Class::Int,
        Class::Fp32,
        Class::Fp64,
        Class::Fp16,
        Class::Conversion,
        Class::Sfu,
        Class::MemGlobal,
        Class::MemShared,
        Class::MemLocal,
        Class::MemParam,
        Class::Tensor,
        Class::Shuffle,
        Class::Control,
        Class::Sync,
        Class::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Int => "int",
            Class::Fp32 => "fp32",
            Class::Fp64 => "fp64",
            Class::Fp16 => "fp16",
            Class::Conversion => "conversion",
            Class::Sfu => "sfu",
            Class::MemGlobal => "memory-global",
            Class::MemShared => "memory-shared",
            Class::MemLocal => "memory-local",
            Class::MemParam => "memory-param",
            Class::Tensor => "tensor",
            Class::Shuffle => "shuffle/vote",
            Class::Control => "control",
            Class::Sync => "sync",
            Class::Other => "other",
        }
    }
}

/// Values that each thread sees in a pre-loaded register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    Laneid,
    Warpid,
    Nwarpid,
    LanemaskEq,
    LanemaskLt,
    LanemaskLe,
    LanemaskGt,
    LanemaskGe,
    DynSmem,
    TotalSmem,
    Zero,
    /// `%clusterid.{x,y,z}`: the cluster's position in the grid of clusters.
    Clusterid(u8),
    /// `%nclusterid.{x,y,z}`: clusters per grid dimension.
    Nclusterid(u8),
    /// `%cluster_ctaid.{x,y,z}`: the CTA's position in its cluster.
    ClusterCtaid(u8),
    /// `%cluster_nctaid.{x,y,z}`: the cluster shape.
    ClusterNctaid(u8),
    /// `%cluster_ctarank`: the CTA's linear rank in its cluster (x fastest).
    ClusterCtarank,
    /// `%cluster_nctarank`: CTAs per cluster.
    ClusterNctarank,
    /// `%is_explicit_cluster`: the launch named a cluster shape.
    IsExplicitCluster,
}

/// Floating-point formats an arithmetic instruction works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FTy {
    F32,
    F64,
    F16,
    Bf16,
    F16x2,
    Bf16x2,
}

impl FTy {
    pub fn from_ty(t: Ty) -> Option<FTy> {
        Some(match t {
            Ty::F32 => FTy::F32,
            Ty::F64 => FTy::F64,
            Ty::F16 => FTy::F16,
            Ty::Bf16 => FTy::Bf16,
            Ty::F16x2 => FTy::F16x2,
            Ty::Bf16x2 => FTy::Bf16x2,
            _ => return None,
        })
    }
    /// The element format of a half type.
    pub fn half_fmt(self) -> Fmt {
        match self {
            FTy::F16 | FTy::F16x2 => super::softfloat::F16,
            FTy::Bf16 | FTy::Bf16x2 => super::softfloat::BF16,
            FTy::F32 => super::softfloat::F32,
            FTy::F64 => super::softfloat::F64,
        }
    }
    pub fn is_x2(self) -> bool {
        matches!(self, FTy::F16x2 | FTy::Bf16x2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    Copysign,
}

/// Float arithmetic modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FMods {
    pub rnd: Rnd,
    pub ftz: bool,
    pub sat: bool,
    /// `.NaN` on min/max: propagate NaN instead of ignoring it.
    pub nan: bool,
    /// `.approx` / `.full` (division and friends computed to nearest anyway; kept for counts).
    pub approx: bool,
}

/// Integer and bitwise binary operations (integer family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinK {
    Add(u8),
    Sub(u8),
    AddSat,
    SubSat,
    MulLo(u8),
    MulHi(u8, bool),
    MulWide(u8, bool),
    Div(u8, bool),
    Rem(u8, bool),
    Min(u8, bool),
    Max(u8, bool),
    Shl(u8),
    Shr(u8, bool),
    And,
    Or,
    Xor,
}

/// Integer unary operations (integer family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnK {
    Not(u8),
    Cnot,
    Neg(u8),
    Abs(u8),
    Popc(u8),
    Clz(u8),
    Brev(u8),
    Bfind(u8, bool, bool),
}

/// Float sign operations (float family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FUnK {
    Neg,
    Abs,
}

/// Special-function-unit operations and the IEEE square root / reciprocal (SFU family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SfuK {
    Sqrt(FTy, FMods),
    Rsqrt(FTy, bool),
    Rcp(FTy, FMods),
    Ex2(FTy, bool),
    Lg2(bool),
    Sin(bool),
    Cos(bool),
    Tanh(FTy),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CvtK {
    pub from: Ty,
    pub to: Ty,
    /// Float rounding (`.rn` ...) or integer rounding (`.rni` ...) as the types demand.
    pub rnd: Option<Rnd>,
    pub int_rnd: bool,
    pub sat: bool,
    pub ftz: bool,
    pub relu: bool,
    pub satfinite: bool,
    /// Mask of the destination register's width.
    pub dmask: u64,
}

/// Integer ternary operations and selection (integer family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerK {
    MadLo(u8),
    MadHi(u8, bool),
    MadWide(u8, bool),
    Selp,
    SlctS32,
    Bfe(u8, bool),
    Prmt,
    Shf { left: bool, clamp: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpTy {
    /// Integer compare of the given width, signed or not.
    Int(u8, bool),
    Float(FTy, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

/// What `setp`/`set` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOut {
    Pred,
    /// `set.*.u32/s32`: all ones for true.
    Mask,
    /// `set.*.f32`: 1.0 for true.
    F32,
    /// `set.*.{f16x2,bf16x2}.{f16x2,bf16x2}`: per 16-bit half, these bits (1.0) for true.
    HalfOnes(u16),
    /// `set.*.{u32,s32}.{f16x2,bf16x2}`: per 16-bit half, 0xFFFF for true.
    HalfMask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    /// Register holding the base (the zero register for `[imm]`).
    pub base: R,
    pub off: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomK {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    Exch,
    Cas,
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduxK {
    Add,
    Min(bool),
    Max(bool),
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmaShape {
    M16N8K16,
    M16N8K8,
}

impl MmaShape {
    pub fn mnk(self) -> (u32, u32, u32) {
        match self {
            MmaShape::M16N8K16 => (16, 8, 16),
            MmaShape::M16N8K8 => (16, 8, 8),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Mov {
        d: R,
        a: R,
        mask: u64,
    },
    /// Integer, float, SFU and conversion arithmetic: see [`LaneOp`].
    Lane(LaneOp),
    Bfi {
        w: u8,
        d: R,
        a: R,
        b: R,
        c: R,
        e: R,
    },
    Setp {
        ty: CmpTy,
        cmp: Cmp,
        out: SetOut,
        d: R,
        dn: R,
        a: R,
        b: R,
        comb: Option<(BoolOp, R, bool)>,
    },
    /// `mov.bN d, {p0, p1, ..}`: low part first.
    Pack {
        d: R,
        parts: [R; 4],
        n: u8,
        bits: u8,
    },
    /// `mov.bN {d0, d1, ..}, a`.
    Unpack {
        ds: [R; 4],
        n: u8,
        bits: u8,
        a: R,
    },
    Ld(LdOp),
    St(StOp),
    Atom(AtomOp),
    CpAsync(CpAsyncOp),
    CpCommit,
    CpWait {
        n: u32,
    },
    Bra {
        target: u32,
    },
    Exit,
    Trap,
    Bar {
        id: R,
        count: R,
        arrive: bool,
    },
    BarWarp {
        mask: R,
    },
    Shfl {
        mode: ShflMode,
        d: R,
        p: R,
        a: R,
        b: R,
        c: R,
        mask: R,
    },
    Vote {
        mode: VoteMode,
        d: R,
        a: R,
        neg: bool,
        mask: R,
    },
    Match {
        all: bool,
        d: R,
        p: R,
        a: R,
        mask: R,
    },
    Redux {
        k: ReduxK,
        d: R,
        a: R,
        mask: R,
    },
    Activemask {
        d: R,
    },
    /// `elect.sync d|p, membermask`: the lowest active member lane is the leader.
    Elect {
        d: R,
        p: R,
        mask: R,
    },
    Mma(MmaOp),
    Ldmatrix(MatrixOp),
    /// `stmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16 [addr], {srcs}`.
    Stmatrix(MatrixOp),
    /// `wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}` (see `exec/wgmma.rs`).
    Wgmma(WgmmaOp),
    /// `wgmma.fence.sync.aligned`.
    WgmmaFence,
    /// `wgmma.commit_group.sync.aligned`.
    WgmmaCommit,
    /// `wgmma.wait_group.sync.aligned n`.
    WgmmaWait {
        n: u32,
    },
    Clock {
        d: R,
    },
    /// mbarrier, cluster addressing, bulk and tensor (TMA) copies: the asynchronous-proxy
    /// family (`exec/bulk.rs`, `exec/mbarrier.rs`).
    Async(AsyncOp),
    Nop,
}

/// A lane-parallel register op: each active lane's destination from that lane's own sources
/// (no memory, no other lanes), so the executor runs it as one loop over the lanes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LaneOp {
    Bin {
        k: BinK,
        d: R,
        a: R,
        b: R,
    },
    Un {
        k: UnK,
        d: R,
        a: R,
    },
    Tern {
        k: TerK,
        d: R,
        a: R,
        b: R,
        c: R,
    },
    /// Float arithmetic (float family).
    FBin {
        op: FOp,
        ty: FTy,
        mods: FMods,
        d: R,
        a: R,
        b: R,
    },
    FUn {
        k: FUnK,
        ty: FTy,
        ftz: bool,
        d: R,
        a: R,
    },
    Fma {
        ty: FTy,
        mods: FMods,
        d: R,
        a: R,
        b: R,
        c: R,
    },
    /// `slct.f32`: a if c >= 0 else b.
    SlctF32 {
        ftz: bool,
        d: R,
        a: R,
        b: R,
        c: R,
    },
    Sfu {
        k: SfuK,
        d: R,
        a: R,
    },
    Cvt {
        k: CvtK,
        d: R,
        a: R,
    },
    /// `cvt.rn{.relu}{.satfinite}.{f16x2,bf16x2}.f32 d, a, b`: a to the upper half.
    CvtPack {
        fmt: Fmt,
        rnd: Rnd,
        relu: bool,
        satfinite: bool,
        d: R,
        a: R,
        b: R,
    },
    /// Generic <-> state-space address conversion: add (to generic) or subtract the window base.
    Cvta {
        to_space: bool,
        window: u64,
        dmask: u64,
        d: R,
        a: R,
    },
}

/// The operands of `ld`/`ldu` (scalar or `.v2`/`.v4`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LdOp {
    pub sp: Space,
    pub size: u8,
    pub n: u8,
    pub ds: [R; 4],
    pub addr: Addr,
    pub sext: bool,
    pub dmask: u64,
}

/// The operands of `st` (scalar or `.v2`/`.v4`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StOp {
    pub sp: Space,
    pub size: u8,
    pub n: u8,
    pub srcs: [R; 4],
    pub addr: Addr,
}

/// The operands of `atom` / `red` (`red` writes no destination: `d` is `NONE`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AtomOp {
    pub sp: Space,
    pub k: AtomK,
    pub ty: Ty,
    /// The old value (`NONE` for `red`).
    pub d: R,
    pub addr: Addr,
    pub a: R,
    /// The second operand of `cas` (`NONE` otherwise).
    pub b: R,
}

/// The operands of `cp.async.{ca,cg}.shared.global`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpAsyncOp {
    pub dst: Addr,
    pub src: Addr,
    pub cp: u8,
    pub src_size: R,
    pub ignore_src: R,
    pub dst_generic: bool,
}

/// The operands of `mma.sync.aligned.m16n8k{16,8}.row.col` (f16/bf16 inputs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MmaOp {
    pub shape: MmaShape,
    /// bf16 inputs (else f16).
    pub bf16: bool,
    /// f32 accumulators in C (else f16x2).
    pub c_f32: bool,
    /// f32 accumulators in D (else f16x2).
    pub d_f32: bool,
    /// D fragment: 4 f32 or 2 f16x2 registers (`NONE` past the end).
    pub d: [R; 4],
    /// A fragment: 4 b32 registers (m16n8k16) or 2 (m16n8k8).
    pub a: [R; 4],
    /// B fragment: 2 b32 registers (m16n8k16) or 1 (m16n8k8).
    pub b: [R; 2],
    /// C fragment, as D.
    pub c: [R; 4],
}

/// The operands of `ldmatrix` / `stmatrix` (`.m8n8.{x1,x2,x4}{.trans}.shared.b16`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatrixOp {
    /// Number of 8 x 8 matrices (1, 2 or 4).
    pub num: u8,
    pub trans: bool,
    /// One b32 register per matrix: the destinations of `ldmatrix`, the sources of `stmatrix`.
    pub regs: [R; 4],
    /// Lanes 8j..8j+7 address the rows of matrix j.
    pub addr: Addr,
    /// The address is generic (no `.shared`).
    pub generic: bool,
}

/// A run of registers in [`Program::reg_lists`] (operand vectors too long to inline in an
/// [`Op`], such as a wgmma accumulator list of up to 128 registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegList {
    pub start: u32,
    pub len: u32,
}

/// The decoded operands of one `wgmma.mma_async` (f16/bf16 inputs, f32 accumulators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgmmaOp {
    /// N of m64nNk16 (8..=256, multiple of 8).
    pub n: u32,
    pub bf16: bool,
    /// The N/2 accumulator registers.
    pub d: RegList,
    /// A from shared memory: the register holding its 64-bit matrix descriptor, else `NONE`.
    pub a_desc: R,
    /// A from registers (4 x b32), when `a_desc` is `NONE`.
    pub a_regs: [R; 4],
    pub b_desc: R,
    /// The scale-d predicate: false computes D = A*B, true D = A*B + D.
    pub scale_d: R,
    pub neg_a: bool,
    pub neg_b: bool,
    /// A / B stored MN-major (imm-trans = 1) instead of K-major.
    pub trans_a: bool,
    pub trans_b: bool,
}

/// What an `mbarrier` instruction does (PTX ISA "Parallel Synchronization and Communication
/// Instructions: mbarrier").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbarK {
    Init,
    Inval,
    /// `arrive`/`arrive_drop`, optionally `.expect_tx` first; `.noComplete` must not complete
    /// the phase.
    Arrive {
        expect_tx: bool,
        drop: bool,
        no_complete: bool,
    },
    ExpectTx,
    CompleteTx,
    /// `test_wait` (never blocks) or `try_wait` (suspends until the phase completes or the
    /// emulator times it out), with a state token or a phase parity.
    Wait {
        parity: bool,
        try_wait: bool,
    },
    /// `mbarrier.pending_count`: arrivals still pending, from a state token.
    PendingCount,
}

/// The kind of a tensor copy (`cp.async.bulk.tensor` / `cp.async.bulk.prefetch.tensor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmaK {
    /// global -> shared, completing bytes on an mbarrier.
    Load,
    /// shared -> global, in a bulk async-group.
    Store,
    /// global -> L2: validated, no effect.
    Prefetch,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AsyncOp {
    Mbar(MbarOp),
    /// `mapa`: the address of the same shared variable in cluster CTA `rank` (`generic`: `a`
    /// and `d` are generic addresses, else shared::cluster offsets).
    Mapa {
        d: R,
        a: R,
        rank: R,
        generic: bool,
    },
    /// `getctarank`: the cluster rank of the CTA owning the shared address `a`.
    GetCtaRank {
        d: R,
        a: R,
        generic: bool,
    },
    /// `barrier.cluster.arrive` (`wait` false) or `barrier.cluster.wait` (`wait` true).
    ClusterBar {
        wait: bool,
    },
    /// `cp.async.bulk.tensor.Nd` / `cp.async.bulk.prefetch.tensor.Nd` with `[map, {coords}]`.
    Tma(TmaOp),
    /// `cp.async.bulk` of `size` contiguous bytes: global -> shared with an mbarrier
    /// (`load`), or shared -> global in a bulk async-group.
    BulkCopy(BulkCopyOp),
    BulkCommit,
    /// `cp.async.bulk.wait_group{.read} n`.
    BulkWait {
        n: u32,
        read: bool,
    },
    /// `fence.proxy.async{.shared::cta,.global}`: orders generic-proxy writes before later
    /// async-proxy accesses (`shared` = the variant covers shared memory).
    FenceProxyAsync {
        shared: bool,
    },
    /// `prefetch{.param,.const}.tensormap [a]`: validated, no effect. The generic address of
    /// the map is the lane's address plus `window` (the param window for `.param`).
    PrefetchTensorMap {
        addr: Addr,
        window: u64,
    },
}

/// The operands of an `mbarrier` instruction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MbarOp {
    pub k: MbarK,
    /// State token / wait predicate / pending count destination (`NONE` for none).
    pub d: R,
    pub addr: Addr,
    /// The address is generic (no state space given).
    pub generic: bool,
    /// Count / tx-count / state / parity operand (`NONE` when absent).
    pub a: R,
    /// tx-count of `arrive.expect_tx` (`NONE` when absent).
    pub b: R,
}

/// The operands of `cp.async.bulk.tensor.Nd` / `cp.async.bulk.prefetch.tensor.Nd`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TmaOp {
    pub k: TmaK,
    pub dims: u8,
    /// Shared-memory box (destination of a load, source of a store).
    pub smem: Addr,
    /// Generic address of the tensor map.
    pub map: R,
    pub coords: [R; 5],
    pub mbar: Addr,
    /// `.multicast::cluster`: the 16-bit mask of destination CTA ranks, or `NONE`.
    pub mcast: R,
}

/// The operands of `cp.async.bulk` (contiguous bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkCopyOp {
    pub load: bool,
    pub dst: Addr,
    pub src: Addr,
    pub size: R,
    pub mbar: Addr,
}

#[derive(Debug, Clone)]
pub struct Inst {
    pub op: Op,
    /// Guard predicate register, or `NONE`.
    pub guard: R,
    pub guard_neg: bool,
    pub line: u32,
    pub class: Class,
}

/// A pre-loaded register whose value is a module-variable address patched at launch.
#[derive(Debug, Clone)]
pub struct SymbolReloc {
    pub reg: R,
    /// Index into `Program::global_vars`.
    pub var: usize,
    pub off: i64,
}

/// A module-scope `.global`/`.const` variable, allocated in device memory for each launch.
#[derive(Debug, Clone)]
pub struct GlobalVar {
    pub size: u64,
    pub init: Vec<u8>,
}

/// One entry's executable form.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub insts: Vec<Inst>,
    pub nregs: usize,
    /// Registers holding immediates: (register, value).
    pub consts: Vec<(R, u64)>,
    pub specials: Vec<(R, Special)>,
    pub relocs: Vec<SymbolReloc>,
    pub global_vars: Vec<GlobalVar>,
    pub param_size: u32,
    pub params: Vec<super::ParamDecl>,
    pub static_smem: u32,
    /// Offset where dynamic (extern) shared memory starts.
    pub dyn_smem_offset: u32,
    pub local_size: u32,
    /// Register lists referenced by [`RegList`]s of the instructions.
    pub reg_lists: Vec<R>,
    /// PTX source text of each line (for findings), indexed by line - 1.
    pub source_lines: std::sync::Arc<Vec<String>>,
}

impl Program {
    pub fn line_text(&self, line: u32) -> &str {
        self.source_lines
            .get(line.saturating_sub(1) as usize)
            .map(|s| s.trim())
            .unwrap_or("")
    }
}

/// Generic-address windows of the non-global state spaces (global addresses are identity).
pub const SHARED_WINDOW: u64 = 0x0000_7e00_0000_0000;
pub const LOCAL_WINDOW: u64 = 0x0000_7f00_0000_0000;
pub const PARAM_WINDOW: u64 = 0x0000_7d00_0000_0000;
pub const WINDOW_SIZE: u64 = 1 << 32;
