//! Paged decode, merge_states and KV append over any backend: the buffers of one run
//! ([`DecodeArgs`], [`MergeArgs`], [`KvAppendArgs`]) and the runs. Per run: O(1) buffer checks
//! (presence, sizes, alignment, aliasing) with typed errors before any launch, then the decode
//! and (if planned) the split combine, queued back to back. No allocation and no host-device
//! synchronisation, so a server can capture the calls in a CUDA graph; the split workspace is
//! one f32 buffer the caller allocates once ([`DecodePlan::workspace`] states its size) and
//! passes to every run. Any buffer of the backend works: on CUDA whole `CudaSlice`s or
//! `CudaView`/`CudaViewMut`s carved from an arena or a KV-cache allocation.

use super::{check_dtype, RowExtras};
use crate::backend::{Backend, Binder, Read, Write};
use crate::common::abi::TENSOR_MAP_BYTES;
use crate::common::binding::DevBuf;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{Error, Result, TensorName};
use crate::common::launch::Launches;
use crate::ops::decode::plan::{DecodeBuffers, DecodePlan};
use crate::ops::forward::tma::TmaMapDesc;
use crate::ops::kv_append::{AppendIndex, KvAppendBuffers, KvAppendPlan};
use crate::ops::merge::{MergeBuffers, MergePlan, MergeStates};
use crate::ops::mla_decode::MlaDecodePlan;

/// The K/V page pools of a run: 16-bit pages of the plan's element type (`P`), or FP8 codes
/// (`C`) with their f32 scales (`S`, per tensor or per KV head, as the plan says). A decode
/// reads the pools, an append writes them: one type, one binding ([`Pools::bind`]).
enum Pools<P, C, S> {
    Elements {
        k: P,
        v: P,
    },
    Fp8 {
        k: C,
        v: C,
        k_scales: S,
        v_scales: S,
    },
}

/// The pools a decode reads.
type KvPools<'a, B, T> = Pools<&'a dyn Read<B, T>, &'a dyn Read<B, u8>, &'a dyn Read<B, f32>>;

/// The pools an append writes (the scales it quantises with are read).
type AppendPools<'a, B, T> =
    Pools<&'a mut dyn Write<B, T>, &'a mut dyn Write<B, u8>, &'a dyn Read<B, f32>>;

/// Device buffers of a run's pools and scales (scales absent for 16-bit pages).
#[derive(Default)]
struct PoolBufs {
    k: DevBuf,
    v: DevBuf,
    k_scales: DevBuf,
    v_scales: DevBuf,
}

impl<P, C, S> Pools<P, C, S> {
    /// The pools must be of the kind the plan was made for ([`Error::KvPoolMismatch`]).
    fn check_kind(&self, plan_fp8: bool) -> Result<()> {
        if matches!(self, Pools::Fp8 { .. }) == plan_fp8 {
            return Ok(());
        }
        Err(Error::KvPoolMismatch {
            expected: if plan_fp8 {
                "FP8 codes and scales (the `fp8` constructor), as the plan's kv_dtype says"
            } else {
                "16-bit pages of q's type (the `new` constructor), as the plan's kv_dtype says"
            },
            found: if plan_fp8 {
                "16-bit pages"
            } else {
                "FP8 codes"
            },
        })
    }

    /// Binds the pools (each by the given binder: read or write) and the scales (read); the
    /// guards, in a fixed array, live as long as the call.
    fn bind<'s, B: Backend + ?Sized>(
        self,
        t: &mut Binder<'s, B>,
        pages: impl Fn(&mut Binder<'s, B>, TensorName, P) -> Result<(DevBuf, Option<B::Guard<'s>>)>,
        codes: impl Fn(&mut Binder<'s, B>, TensorName, C) -> Result<(DevBuf, Option<B::Guard<'s>>)>,
        scales: impl Fn(&mut Binder<'s, B>, TensorName, S) -> Result<(DevBuf, Option<B::Guard<'s>>)>,
    ) -> Result<(PoolBufs, [Option<B::Guard<'s>>; 4])> {
        Ok(match self {
            Pools::Elements { k, v } => {
                let (k, gk) = pages(t, TensorName::KCache, k)?;
                let (v, gv) = pages(t, TensorName::VCache, v)?;
                let bufs = PoolBufs {
                    k,
                    v,
                    ..PoolBufs::default()
                };
                (bufs, [gk, gv, None, None])
            }
            Pools::Fp8 {
                k,
                v,
                k_scales,
                v_scales,
            } => {
                let (k, gk) = codes(t, TensorName::KCache, k)?;
                let (v, gv) = codes(t, TensorName::VCache, v)?;
                let (k_scales, gks) = scales(t, TensorName::KScales, k_scales)?;
                let (v_scales, gvs) = scales(t, TensorName::VScales, v_scales)?;
                let bufs = PoolBufs {
                    k,
                    v,
                    k_scales,
                    v_scales,
                };
                (bufs, [gk, gv, gks, gvs])
            }
        })
    }
}

/// Buffers of one decode run (layouts in `kernels/params.h`, sizes from the plan). Required
/// tensors go to [`DecodeArgs::new`] (16-bit pages) or [`DecodeArgs::fp8`] (FP8 pages); each
/// optional one is a builder method.
pub struct DecodeArgs<'a, B: Backend + ?Sized, T> {
    q: &'a dyn Read<B, T>,
    pools: KvPools<'a, B, T>,
    o: &'a mut dyn Write<B, T>,
    block_table: &'a dyn Read<B, i32>,
    cache_seqlens: &'a dyn Read<B, i32>,
    cu_seqlens_q: Option<&'a dyn Read<B, i32>>,
    extras: RowExtras<'a, B>,
    workspace: Option<&'a mut dyn Write<B, f32>>,
}

impl<'a, B: Backend + ?Sized, T> DecodeArgs<'a, B, T> {
    /// q and 16-bit page pools in, o out; `block_table [b, max_pages_per_seq]` and
    /// `cache_seqlens [b]` (i32, device-resident, checked by the kernel).
    pub fn new(
        q: &'a impl Read<B, T>,
        k_cache: &'a impl Read<B, T>,
        v_cache: &'a impl Read<B, T>,
        o: &'a mut impl Write<B, T>,
        block_table: &'a impl Read<B, i32>,
        cache_seqlens: &'a impl Read<B, i32>,
    ) -> Self {
        let pools: KvPools<'a, B, T> = Pools::Elements {
            k: k_cache,
            v: v_cache,
        };
        Self::with_pools(q, pools, o, block_table, cache_seqlens)
    }

    /// As [`DecodeArgs::new`] for FP8 pages (e4m3 or e5m2, as the plan's `kv_dtype` says):
    /// the pools hold one code byte per element, and `k_scales` / `v_scales` (f32) one scale
    /// per tensor or per KV head. Every scale must be finite and > 0: device data is not read
    /// on the host, and the kernel uses a bad scale as it is (what that gives: the module docs
    /// of [`crate::ops::decode::fp8`]).
    #[allow(clippy::too_many_arguments)] // the required tensors of an FP8 decode, each once
    pub fn fp8(
        q: &'a impl Read<B, T>,
        k_codes: &'a impl Read<B, u8>,
        v_codes: &'a impl Read<B, u8>,
        k_scales: &'a impl Read<B, f32>,
        v_scales: &'a impl Read<B, f32>,
        o: &'a mut impl Write<B, T>,
        block_table: &'a impl Read<B, i32>,
        cache_seqlens: &'a impl Read<B, i32>,
    ) -> Self {
        let pools: KvPools<'a, B, T> = Pools::Fp8 {
            k: k_codes,
            v: v_codes,
            k_scales,
            v_scales,
        };
        Self::with_pools(q, pools, o, block_table, cache_seqlens)
    }

    /// The MLA decode's tensors ([`super::mla_decode`]): `q [.., hq, 576]`, the latent page
    /// pool (16-bit elements of q's type; read as K, and its first 512 dims as V),
    /// `o [.., hq, 512]`, `block_table` and `cache_seqlens` as for [`DecodeArgs::new`].
    pub fn mla(
        q: &'a impl Read<B, T>,
        kv_cache: &'a impl Read<B, T>,
        o: &'a mut impl Write<B, T>,
        block_table: &'a impl Read<B, i32>,
        cache_seqlens: &'a impl Read<B, i32>,
    ) -> Self {
        Self::new(q, kv_cache, kv_cache, o, block_table, cache_seqlens)
    }

    /// [`DecodeArgs::mla`] over FP8 latent pages (e4m3 or e5m2, as the plan's `kv_dtype` says):
    /// one code byte per element and ONE f32 scale `[1]` for the pool, finite and > 0.
    pub fn mla_fp8(
        q: &'a impl Read<B, T>,
        codes: &'a impl Read<B, u8>,
        scale: &'a impl Read<B, f32>,
        o: &'a mut impl Write<B, T>,
        block_table: &'a impl Read<B, i32>,
        cache_seqlens: &'a impl Read<B, i32>,
    ) -> Self {
        Self::fp8(q, codes, codes, scale, scale, o, block_table, cache_seqlens)
    }

    fn with_pools(
        q: &'a dyn Read<B, T>,
        pools: KvPools<'a, B, T>,
        o: &'a mut dyn Write<B, T>,
        block_table: &'a dyn Read<B, i32>,
        cache_seqlens: &'a dyn Read<B, i32>,
    ) -> Self {
        DecodeArgs {
            q,
            pools,
            o,
            block_table,
            cache_seqlens,
            cu_seqlens_q: None,
            extras: RowExtras::default(),
            workspace: None,
        }
    }
    /// `cu_seqlens_q [b + 1]` (i32) of a varlen plan.
    pub fn cu_seqlens_q(mut self, cu: &'a impl Read<B, i32>) -> Self {
        self.cu_seqlens_q = Some(cu);
        self
    }
    super::row_extras_builders!();

    /// The split workspace: at least [`crate::ops::decode::WorkspaceLayout::elems`] f32 of the
    /// plan (required when the plan has a combine; a plan without one ignores it, so a server
    /// can pass its one workspace to every plan).
    pub fn workspace(mut self, ws: &'a mut impl Write<B, f32>) -> Self {
        self.workspace = Some(ws);
        self
    }
}

/// One state's O and LSE, as merge reads them.
type State<'a, B, T> = (&'a dyn Read<B, T>, &'a dyn Read<B, f32>);

/// Buffers of one merge run: [`MergeArgs::stacked`] or [`MergeArgs::pair`], then optionally
/// the merged LSE.
pub struct MergeArgs<'a, B: Backend + ?Sized, T> {
    o_a: &'a dyn Read<B, T>,
    lse_a: &'a dyn Read<B, f32>,
    b: Option<State<'a, B, T>>,
    o: &'a mut dyn Write<B, T>,
    lse: Option<&'a mut dyn Write<B, f32>>,
}

impl<'a, B: Backend + ?Sized, T> MergeArgs<'a, B, T> {
    /// N states stacked: `o_states [n, rows, heads, d]`, `lse_states` per the plan's layout.
    pub fn stacked(
        o_states: &'a impl Read<B, T>,
        lse_states: &'a impl Read<B, f32>,
        o: &'a mut impl Write<B, T>,
    ) -> Self {
        MergeArgs {
            o_a: o_states,
            lse_a: lse_states,
            b: None,
            o,
            lse: None,
        }
    }
    /// Two states in separate buffers.
    pub fn pair(
        o_a: &'a impl Read<B, T>,
        lse_a: &'a impl Read<B, f32>,
        o_b: &'a impl Read<B, T>,
        lse_b: &'a impl Read<B, f32>,
        o: &'a mut impl Write<B, T>,
    ) -> Self {
        MergeArgs {
            o_a,
            lse_a,
            b: Some((o_b, lse_b)),
            o,
            lse: None,
        }
    }
    /// Also write the merged LSE.
    pub fn lse(mut self, lse: &'a mut impl Write<B, f32>) -> Self {
        self.lse = Some(lse);
        self
    }
}

/// Buffers of one KV append: the new rows, the pools ([`KvAppendArgs::new`] for 16-bit pages,
/// [`KvAppendArgs::fp8`] to quantise into FP8 pages with the given scales) and where the rows
/// go ([`KvAppendArgs::slots`] or [`KvAppendArgs::positions`], as the plan's index says).
pub struct KvAppendArgs<'a, B: Backend + ?Sized, T> {
    k_new: &'a dyn Read<B, T>,
    v_new: &'a dyn Read<B, T>,
    pools: AppendPools<'a, B, T>,
    target: Option<AppendTarget<'a, B>>,
}

/// Where each new token goes (device-resident, checked by the kernel, which traps).
enum AppendTarget<'a, B: Backend + ?Sized> {
    /// `slot_mapping [num_tokens]`: slot = page * page_size + offset; < 0 skips the token.
    Slots(&'a dyn Read<B, i32>),
    /// `block_table [b, max_pages_per_seq]`, and per token its batch item and position.
    Positions {
        block_table: &'a dyn Read<B, i32>,
        token_batch: &'a dyn Read<B, i32>,
        token_pos: &'a dyn Read<B, i32>,
    },
}

impl<'a, B: Backend + ?Sized, T> KvAppendArgs<'a, B, T> {
    /// New rows `k_new, v_new: [num_tokens, hkv, d]` into 16-bit pools.
    pub fn new(
        k_new: &'a impl Read<B, T>,
        v_new: &'a impl Read<B, T>,
        k_cache: &'a mut impl Write<B, T>,
        v_cache: &'a mut impl Write<B, T>,
    ) -> Self {
        KvAppendArgs {
            k_new,
            v_new,
            pools: Pools::Elements {
                k: k_cache,
                v: v_cache,
            },
            target: None,
        }
    }

    /// New rows quantised into FP8 pools (one code byte per element) with f32 scales per
    /// tensor or per KV head, each finite and > 0 (the kernel quantises `x / scale` with
    /// whatever it finds: see [`crate::ops::decode::fp8`]).
    pub fn fp8(
        k_new: &'a impl Read<B, T>,
        v_new: &'a impl Read<B, T>,
        k_codes: &'a mut impl Write<B, u8>,
        v_codes: &'a mut impl Write<B, u8>,
        k_scales: &'a impl Read<B, f32>,
        v_scales: &'a impl Read<B, f32>,
    ) -> Self {
        KvAppendArgs {
            k_new,
            v_new,
            pools: Pools::Fp8 {
                k: k_codes,
                v: v_codes,
                k_scales,
                v_scales,
            },
            target: None,
        }
    }

    /// Token `t` goes to slot `slot_mapping[t]` (i32).
    pub fn slots(mut self, slot_mapping: &'a impl Read<B, i32>) -> Self {
        self.target = Some(AppendTarget::Slots(slot_mapping));
        self
    }

    /// Token `t` goes to position `token_pos[t]` of sequence `token_batch[t]`, through that
    /// sequence's row of `block_table` (all i32).
    pub fn positions(
        mut self,
        block_table: &'a impl Read<B, i32>,
        token_batch: &'a impl Read<B, i32>,
        token_pos: &'a impl Read<B, i32>,
    ) -> Self {
        self.target = Some(AppendTarget::Positions {
            block_table,
            token_batch,
            token_pos,
        });
        self
    }
}

/// What the decode binding needs of a plan: the paged decode's ([`DecodePlan`]) or the MLA
/// decode's ([`MlaDecodePlan`]), which take the same arguments.
/// Encodes one tensor map over an address (a backend's encoder).
pub(super) type MapEncoder<'e> =
    dyn Fn(TensorName, &TmaMapDesc, u64) -> Result<[u8; TENSOR_MAP_BYTES]> + 'e;

pub(super) trait PagedPlan {
    /// (q's dtype, FP8 pages).
    fn kinds(&self) -> (DType, bool);
    fn carve_workspace(&self, ws: DevBuf) -> Result<(DevBuf, DevBuf, DevBuf)>;
    /// The launches over `bufs`; `encode` encodes a tensor map for a kernel that takes one
    /// (the sm_90a MLA decode).
    fn bind(&self, bufs: &DecodeBuffers, encode: &MapEncoder<'_>) -> Result<Launches>;
}

impl PagedPlan for DecodePlan {
    fn kinds(&self) -> (DType, bool) {
        (self.problem.dtype, self.problem.kv_dtype.is_fp8())
    }
    fn carve_workspace(&self, ws: DevBuf) -> Result<(DevBuf, DevBuf, DevBuf)> {
        DecodePlan::carve_workspace(self, ws)
    }
    fn bind(&self, bufs: &DecodeBuffers, _encode: &MapEncoder<'_>) -> Result<Launches> {
        DecodePlan::bind(self, bufs)
    }
}

impl PagedPlan for MlaDecodePlan {
    fn kinds(&self) -> (DType, bool) {
        (self.problem.dtype, self.problem.kv_dtype.is_fp8())
    }
    fn carve_workspace(&self, ws: DevBuf) -> Result<(DevBuf, DevBuf, DevBuf)> {
        MlaDecodePlan::carve_workspace(self, ws)
    }
    fn bind(&self, bufs: &DecodeBuffers, encode: &MapEncoder<'_>) -> Result<Launches> {
        MlaDecodePlan::bind(self, bufs, encode)
    }
}

/// [`super::Attention::decode`] and [`super::mla_decode`]: the decode, then the split combine
/// if the plan has one.
pub(super) fn decode<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &impl PagedPlan,
    args: DecodeArgs<'_, B, T>,
) -> Result<()> {
    bind_and_launch(
        be,
        stream,
        plan.kinds(),
        args,
        |ws| plan.carve_workspace(ws),
        |bufs| {
            plan.bind(bufs, &|name, desc, addr| {
                be.encode_tensor_map(&name.to_string(), desc, addr)
            })
        },
    )
}

/// Binds `args` for a plan of (dtype, FP8 pages) (each buffer's use ordered on `stream`),
/// carves the workspace with `carve`, then launches what `bind` makes of the buffers.
fn bind_and_launch<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    (dtype, fp8): (DType, bool),
    args: DecodeArgs<'_, B, T>,
    carve: impl FnOnce(DevBuf) -> Result<(DevBuf, DevBuf, DevBuf)>,
    bind: impl FnOnce(&DecodeBuffers) -> Result<Launches>,
) -> Result<()> {
    check_dtype::<T>(TensorName::Q, dtype)?;
    let DecodeArgs {
        q,
        pools,
        o,
        block_table,
        cache_seqlens,
        cu_seqlens_q,
        extras,
        workspace,
    } = args;
    pools.check_kind(fp8)?;
    let mut t = Binder::new(be, stream);
    // The guards order each buffer's use on the stream once the launches are queued.
    let (q, _q) = t.read(TensorName::Q, Some(q))?;
    let (pools, _pool_guards) = pools.bind(
        &mut t,
        |t, n, x| t.read(n, Some(x)),
        |t, n, x| t.read(n, Some(x)),
        |t, n, x| t.read(n, Some(x)),
    )?;
    let (o, _o) = t.write(TensorName::O, Some(o))?;
    let (block_table, _bt) = t.read(TensorName::BlockTable, Some(block_table))?;
    let (cache_seqlens, _cs) = t.read(TensorName::CacheSeqlens, Some(cache_seqlens))?;
    let (cu_q, _cu) = t.read(TensorName::CuSeqlensQ, cu_seqlens_q)?;
    let ([lse, entropy, alibi, gates, sinks], _extras) = extras.bind(&mut t)?;
    let (ws, _ws) = t.write(TensorName::Workspace, workspace)?;
    let (partial_o, partial_lse, partial_entropy) = carve(ws)?;
    let bufs = DecodeBuffers {
        q,
        k_cache: pools.k,
        v_cache: pools.v,
        k_scales: pools.k_scales,
        v_scales: pools.v_scales,
        o,
        block_table,
        cache_seqlens,
        cu_seqlens_q: cu_q,
        lse,
        entropy,
        alibi_slopes: alibi,
        head_gates: gates,
        sinks,
        partial_o,
        partial_lse,
        partial_entropy,
    };
    let launches = bind(&bufs)?;
    // SAFETY: `bind` checked every buffer against the plan (presence, size, alignment, no
    // output overlapping another operand); each address comes from a buffer borrowed by `args`
    // (alive for this call; the guards keep its use ordered on the stream); device-resident
    // indices (block table, lengths, cu_seqlens) are checked by the kernel, which traps. The
    // combine reads the workspace the decode wrote, in stream order.
    unsafe { be.launch(stream, &launches, &t.bound) }
}

/// [`super::Attention::merge_states`]: stacked or pair, as the plan says.
pub(super) fn merge_states<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &MergePlan,
    args: MergeArgs<'_, B, T>,
) -> Result<()> {
    check_dtype::<T>(TensorName::OStates, plan.problem.dtype)?;
    let pair = plan.problem.states == MergeStates::Pair;
    match (pair, args.b.is_some()) {
        (true, false) => {
            return Err(Error::MissingBuffer {
                tensor: TensorName::OB,
            })
        }
        (false, true) => {
            return Err(Error::UnexpectedBuffer {
                tensor: TensorName::OB,
            })
        }
        _ => {}
    }
    let MergeArgs {
        o_a,
        lse_a,
        b,
        o,
        lse,
    } = args;
    let (name_o, name_lse) = if pair {
        (TensorName::OA, TensorName::LseA)
    } else {
        (TensorName::OStates, TensorName::LseStates)
    };
    let mut t = Binder::new(be, stream);
    let (o_a, _oa) = t.read(name_o, Some(o_a))?;
    let (lse_a, _la) = t.read(name_lse, Some(lse_a))?;
    let (o_b, _ob) = t.read(TensorName::OB, b.map(|x| x.0))?;
    let (lse_b, _lb) = t.read(TensorName::LseB, b.map(|x| x.1))?;
    let (o, _o) = t.write(TensorName::O, Some(o))?;
    let (lse, _lse) = t.write(TensorName::Lse, lse)?;
    let bufs = MergeBuffers {
        o_states: o_a,
        lse_states: lse_a,
        o_b,
        lse_b,
        o,
        lse,
    };
    let launch = plan.bind(&bufs)?;
    // SAFETY: `bind` checked every buffer against the plan; each address comes from a buffer
    // borrowed by `args` (alive for this call, its use ordered on the stream by the guards).
    unsafe { be.launch(stream, &Launches::one(launch), &t.bound) }
}

/// [`super::Attention::kv_append`]: new K/V rows into the page pools.
pub(super) fn kv_append<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &KvAppendPlan,
    args: KvAppendArgs<'_, B, T>,
) -> Result<()> {
    check_dtype::<T>(TensorName::KNew, plan.pools.dtype)?;
    let KvAppendArgs {
        k_new,
        v_new,
        pools,
        target,
    } = args;
    pools.check_kind(plan.pools.kv_dtype.is_fp8())?;
    // The target must be the kind the plan was made for (the other kind is unexpected).
    let target = target.ok_or(Error::MissingBuffer {
        tensor: match plan.index {
            AppendIndex::Slots => TensorName::SlotMapping,
            AppendIndex::Positions => TensorName::TokenPos,
        },
    })?;
    let given_positions = matches!(target, AppendTarget::Positions { .. });
    if given_positions != (plan.index == AppendIndex::Positions) {
        return Err(Error::UnexpectedBuffer {
            tensor: if given_positions {
                TensorName::TokenPos
            } else {
                TensorName::SlotMapping
            },
        });
    }
    let mut t = Binder::new(be, stream);
    // The guards order each buffer's use on the stream; fixed arrays hold those of the pools
    // and the target (no allocation).
    let (k_new, _kn) = t.read(TensorName::KNew, Some(k_new))?;
    let (v_new, _vn) = t.read(TensorName::VNew, Some(v_new))?;
    let mut bufs = KvAppendBuffers {
        k_new,
        v_new,
        ..KvAppendBuffers::default()
    };
    let (pools, _pool_guards) = pools.bind(
        &mut t,
        |t, n, x| t.write(n, Some(x)),
        |t, n, x| t.write(n, Some(x)),
        |t, n, x| t.read(n, Some(x)),
    )?;
    (bufs.k_cache, bufs.v_cache) = (pools.k, pools.v);
    (bufs.k_scales, bufs.v_scales) = (pools.k_scales, pools.v_scales);
    let _target_guards: [Option<B::Guard<'_>>; 3] = match target {
        AppendTarget::Slots(slots) => {
            let (s, g) = t.read(TensorName::SlotMapping, Some(slots))?;
            bufs.slot_mapping = s;
            [g, None, None]
        }
        AppendTarget::Positions {
            block_table,
            token_batch,
            token_pos,
        } => {
            let (bt, gbt) = t.read(TensorName::BlockTable, Some(block_table))?;
            let (tb, gtb) = t.read(TensorName::TokenBatch, Some(token_batch))?;
            let (tp, gtp) = t.read(TensorName::TokenPos, Some(token_pos))?;
            bufs.block_table = bt;
            bufs.token_batch = tb;
            bufs.token_pos = tp;
            [gbt, gtb, gtp]
        }
    };
    let launches = plan.bind(&bufs)?;
    // SAFETY: `bind` checked every buffer against the plan; each address comes from a buffer
    // borrowed by `args` (alive for this call, its use ordered on the stream by the guards);
    // slots, block-table entries, batch items and positions are device-resident and checked by
    // the kernel against the sizes in the params (trap).
    unsafe { be.launch(stream, &launches, &t.bound) }
}
