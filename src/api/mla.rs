//! MLA decode over any backend (issue 23 item 3), beside the paged decode: the buffers of one
//! run ([`MlaDecodeArgs`]) and the run ([`mla_decode`]). Per run: O(1) buffer checks (presence,
//! sizes, alignment, aliasing) with typed errors before any launch, then the MLA decode and (if
//! planned) the paged decode's split combine over 512 dims, queued back to back. No allocation
//! and no host-device synchronisation; the split workspace is one caller-owned f32 buffer of
//! [`crate::ops::mla_decode::MlaDecodePlan::workspace`] elements.

use super::{check_dtype, RowExtras};
use crate::backend::{Backend, Binder, Read, Write};
use crate::common::binding::DevBuf;
use crate::common::element::Element;
use crate::common::error::{Error, Result, TensorName};
use crate::ops::mla_decode::{MlaDecodeBuffers, MlaDecodePlan};

/// The latent page pool of a run: 16-bit elements of q's type, or FP8 codes with their one f32
/// scale.
enum LatentPool<'a, B: Backend + ?Sized, T> {
    Elements(&'a dyn Read<B, T>),
    Fp8 {
        codes: &'a dyn Read<B, u8>,
        scale: &'a dyn Read<B, f32>,
    },
}

/// Buffers of one MLA decode run (layouts in kernels/params.h, FlashMlaDecodeParams): `q [.., hq,
/// 576]`, the latent page pool `kv_cache` (read as K and, its first 512 dims, as V), `o [.., hq,
/// 512]`, `block_table [b, max_pages_per_seq]` and `cache_seqlens [b]` (i32, device-resident,
/// checked by the kernel); each optional tensor is a builder method.
pub struct MlaDecodeArgs<'a, B: Backend + ?Sized, T> {
    q: &'a dyn Read<B, T>,
    kv_cache: LatentPool<'a, B, T>,
    o: &'a mut dyn Write<B, T>,
    block_table: &'a dyn Read<B, i32>,
    cache_seqlens: &'a dyn Read<B, i32>,
    cu_seqlens_q: Option<&'a dyn Read<B, i32>>,
    extras: RowExtras<'a, B>,
    workspace: Option<&'a mut dyn Write<B, f32>>,
}

impl<'a, B: Backend + ?Sized, T> MlaDecodeArgs<'a, B, T> {
    /// The required tensors (16-bit latent pages of q's type).
    pub fn new(
        q: &'a impl Read<B, T>,
        kv_cache: &'a impl Read<B, T>,
        o: &'a mut impl Write<B, T>,
        block_table: &'a impl Read<B, i32>,
        cache_seqlens: &'a impl Read<B, i32>,
    ) -> Self {
        Self::with_pool(
            q,
            LatentPool::Elements(kv_cache),
            o,
            block_table,
            cache_seqlens,
        )
    }

    /// As [`MlaDecodeArgs::new`] for FP8 latent pages (e4m3 or e5m2, as the plan's `kv_dtype`
    /// says): one code byte per element and ONE f32 scale `[1]` for the pool (finite and > 0:
    /// device data is not read on the host; see [`crate::ops::decode::fp8`] for what a bad
    /// scale gives).
    pub fn fp8(
        q: &'a impl Read<B, T>,
        codes: &'a impl Read<B, u8>,
        scale: &'a impl Read<B, f32>,
        o: &'a mut impl Write<B, T>,
        block_table: &'a impl Read<B, i32>,
        cache_seqlens: &'a impl Read<B, i32>,
    ) -> Self {
        Self::with_pool(
            q,
            LatentPool::Fp8 { codes, scale },
            o,
            block_table,
            cache_seqlens,
        )
    }

    fn with_pool(
        q: &'a dyn Read<B, T>,
        kv_cache: LatentPool<'a, B, T>,
        o: &'a mut dyn Write<B, T>,
        block_table: &'a dyn Read<B, i32>,
        cache_seqlens: &'a dyn Read<B, i32>,
    ) -> Self {
        MlaDecodeArgs {
            q,
            kv_cache,
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

    /// The split workspace (required when the plan has a combine; ignored otherwise).
    pub fn workspace(mut self, ws: &'a mut impl Write<B, f32>) -> Self {
        self.workspace = Some(ws);
        self
    }
}

/// Runs an MLA decode plan on `be`: the decode, then the split combine if the plan has one.
pub fn mla_decode<B: Backend + ?Sized, T: Element>(
    be: &B,
    stream: &B::Stream,
    plan: &MlaDecodePlan,
    args: MlaDecodeArgs<'_, B, T>,
) -> Result<()> {
    check_dtype::<T>(TensorName::Q, plan.problem.dtype)?;
    let MlaDecodeArgs {
        q,
        kv_cache,
        o,
        block_table,
        cache_seqlens,
        cu_seqlens_q,
        extras,
        workspace,
    } = args;
    let fp8 = plan.problem.kv_dtype.is_fp8();
    if matches!(kv_cache, LatentPool::Fp8 { .. }) != fp8 {
        return Err(Error::KvPoolMismatch {
            expected: if fp8 {
                "FP8 codes and a scale (the `fp8` constructor), as the plan's kv_dtype says"
            } else {
                "16-bit pages of q's type (the `new` constructor), as the plan's kv_dtype says"
            },
            found: if fp8 { "16-bit pages" } else { "FP8 codes" },
        });
    }
    let mut t = Binder::new(be, stream);
    let (q, _q) = t.read(TensorName::Q, Some(q))?;
    let ((kv_cache, _kv), (kv_scale, _ks)) = match kv_cache {
        LatentPool::Elements(k) => (
            t.read(TensorName::KCache, Some(k))?,
            (DevBuf::default(), None),
        ),
        LatentPool::Fp8 { codes, scale } => (
            t.read(TensorName::KCache, Some(codes))?,
            t.read(TensorName::KScales, Some(scale))?,
        ),
    };
    let (o, _o) = t.write(TensorName::O, Some(o))?;
    let (block_table, _bt) = t.read(TensorName::BlockTable, Some(block_table))?;
    let (cache_seqlens, _cs) = t.read(TensorName::CacheSeqlens, Some(cache_seqlens))?;
    let (cu_q, _cu) = t.read(TensorName::CuSeqlensQ, cu_seqlens_q)?;
    let ([lse, entropy, alibi, gates, sinks], _extras) = extras.bind(&mut t)?;
    let (ws, _ws) = t.write(TensorName::Workspace, workspace)?;
    let (partial_o, partial_lse, partial_entropy) = plan.carve_workspace(ws)?;
    let launches = plan.bind(&MlaDecodeBuffers {
        q,
        kv_cache,
        kv_scale,
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
    })?;
    // SAFETY: `bind` checked every buffer against the plan (presence, size, alignment, no
    // output overlapping another operand); each address comes from a buffer borrowed by `args`
    // (alive for this call; the guards keep its use ordered on the stream); device-resident
    // indices (block table, lengths, cu_seqlens) are checked by the kernel, which traps. The
    // combine reads the workspace the decode wrote, in stream order.
    unsafe { be.launch(stream, &launches, &t.bound) }
}
