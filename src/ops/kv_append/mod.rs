//! The KV-append plan: writes the K and V rows of `num_tokens` new tokens into the page pools
//! of a [`DecodeProblem`] (16-bit pages: copied; FP8 pages: quantised with the K / V scales,
//! nearest-even, saturating, NaN kept, see kernels/common/fp8.cuh), at device-resident
//! destinations, either
//! - [`AppendIndex::Slots`]: `slot_mapping[t] = page * page_size + offset` (< 0 skips the token,
//!   >= `num_pages * page_size` traps in the kernel), or
//! - [`AppendIndex::Positions`]: token `t` is position `token_pos[t]` (< 0 skips it) of item
//!   `token_batch[t]`, paged through the problem's block table (item, position and table entry
//!   all checked in the kernel; out of range traps).
//!
//! A trap on a GPU leaves the CUDA context unusable: recreate it (see [`crate::backend::cuda`]).
//!
//! Pure, like the decode plan: [`KvAppendPlan::new`] validates the geometry once,
//! [`KvAppendPlan::params`] checks a run's buffers in O(1) (presence, sizes, 16-byte alignment,
//! aliasing) and fills the params both backends launch.
//!
//! Layouts: `k_new, v_new: [num_tokens, hkv, d]` contiguous, of the problem's dtype; the pools as
//! in the problem (elements of its `kv_dtype`).

use crate::common::abi::{self, KvAppendParams};
use crate::common::binding::{check, BufSpec, DevBuf, Use};
use crate::common::dtype::DType;
use crate::common::error::{Error, Result, TensorName};
use crate::common::launch::{Launch, Launches};
use crate::common::target::KernelTarget;
use crate::ops::decode::kernels::{
    KV_APPEND_ENTRY, KV_APPEND_FP8_ENTRY, KV_APPEND_SM75_ENTRY, KV_APPEND_THREADS,
};
use crate::ops::decode::problem::DecodeProblem;
use crate::ops::decode::validate::validate_kv_append;

/// Elements of one 16-byte copy (`FLASHMHA_KV_APPEND_CHUNK_ELEMS` of kernels/params.h,
/// `kAppendChunkElems` in kernels/common/kv_append_chunk.cuh).
pub const APPEND_CHUNK_ELEMS: usize = crate::common::abi::FLASHMHA_KV_APPEND_CHUNK_ELEMS as usize;

/// How the kernel finds each token's destination (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendIndex {
    #[default]
    Slots,
    Positions,
}

/// A validated append of `num_tokens` tokens into the pools of `pools`.
#[derive(Debug, Clone, PartialEq)]
pub struct KvAppendPlan {
    pub pools: DecodeProblem,
    pub num_tokens: usize,
    pub index: AppendIndex,
    pub launch: Launch,
}

/// The buffers of one append run (`slot_mapping` with [`AppendIndex::Slots`]; `block_table`,
/// `token_batch`, `token_pos` with [`AppendIndex::Positions`]; the scales with FP8 pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvAppendBuffers {
    pub k_new: DevBuf,
    pub v_new: DevBuf,
    pub k_cache: DevBuf,
    pub v_cache: DevBuf,
    pub slot_mapping: DevBuf,
    pub block_table: DevBuf,
    pub token_batch: DevBuf,
    pub token_pos: DevBuf,
    pub k_scales: DevBuf,
    pub v_scales: DevBuf,
}

impl KvAppendPlan {
    /// Validates the pool geometry of `pools` and plans an append of `num_tokens` tokens (one
    /// thread per 16-byte chunk of the source rows of K and of V) addressed by `index`, with the
    /// Ampere-and-newer kernels. Zero tokens is a plan that binds to no launch.
    pub fn new(
        pools: &DecodeProblem,
        num_tokens: usize,
        index: AppendIndex,
    ) -> Result<KvAppendPlan> {
        Self::new_for(KernelTarget::Ampere, pools, num_tokens, index)
    }

    /// [`KvAppendPlan::new`] with the kernels of `kernels`: Turing appends into the pools its
    /// decode reads (f16, 16-bit pages); bf16 there is [`Error::UnsupportedDType`], FP8 pages
    /// [`Error::UnsupportedOnTarget`]. Pure; then [`KvAppendPlan::bind`] per run.
    pub fn new_for(
        kernels: KernelTarget,
        pools: &DecodeProblem,
        num_tokens: usize,
        index: AppendIndex,
    ) -> Result<KvAppendPlan> {
        plan(kernels, pools, num_tokens, index)
    }
}

/// [`KvAppendPlan::new_for`].
fn plan(
    kernels: KernelTarget,
    pools: &DecodeProblem,
    num_tokens: usize,
    index: AppendIndex,
) -> Result<KvAppendPlan> {
    if !kernels.supports(pools.dtype) {
        return Err(Error::UnsupportedDType {
            dtype: pools.dtype,
            target: kernels,
        });
    }
    let fp8 = pools.kv_dtype.is_fp8();
    // Hopper appends with the Ampere kernels (it has a forward of its own only).
    let entry = match (kernels.shared_kernels(), fp8) {
        (KernelTarget::Ampere | KernelTarget::Hopper, true) => KV_APPEND_FP8_ENTRY,
        (KernelTarget::Ampere | KernelTarget::Hopper, false) => KV_APPEND_ENTRY,
        (KernelTarget::Turing, false) => KV_APPEND_SM75_ENTRY,
        (KernelTarget::Turing, true) => {
            return Err(Error::UnsupportedOnTarget {
                what: "KV append into FP8 pages",
                target: kernels,
            })
        }
    };
    validate_kv_append(pools, num_tokens)?;
    let chunks = (num_tokens * pools.num_heads_kv * pools.head_dim / APPEND_CHUNK_ELEMS) as u64;
    Ok(KvAppendPlan {
        pools: pools.clone(),
        num_tokens,
        index,
        launch: Launch::geometry(
            entry,
            [chunks.div_ceil(u64::from(KV_APPEND_THREADS)) as u32, 1, 1],
            [KV_APPEND_THREADS, 1, 1],
            0,
        ),
    })
}

impl KvAppendPlan {
    /// Binds `b` (checked as `params` does) into this plan's one launch; an append of zero
    /// tokens is no launch at all (nothing is read or written, whatever `b` holds), so a
    /// server's step with no new tokens needs no special case.
    pub fn bind(&self, b: &KvAppendBuffers) -> Result<Launches> {
        if self.num_tokens == 0 {
            return Ok(Launches::none());
        }
        Ok(self.launch.with_params(&self.params(b)?).into())
    }

    /// The params of one run after O(1) checks of `b`.
    pub fn params(&self, b: &KvAppendBuffers) -> Result<KvAppendParams> {
        use TensorName as T;
        let p = &self.pools;
        let (hkv, d) = (p.num_heads_kv, p.head_dim);
        let new_len = (self.num_tokens * hkv * d) as u64;
        let e = p.kv_element_bytes() as u64;
        let fp8 = p.kv_dtype.is_fp8();
        let by_position = self.index == AppendIndex::Positions;
        let tokens = self.num_tokens as u64;
        let scales = p.kv_scales_len() as u64;
        let table = ((p.batch - 1) * p.block_table_stride + p.max_pages_per_seq) as u64;
        let req = |on: bool| if on { Use::Required } else { Use::Unused };
        let a16 = abi::FLASHMHA_COPY_ALIGN_BYTES as u64;
        check(&[
            BufSpec::input(
                T::KCache,
                b.k_cache,
                Use::Required,
                p.cache_span(&p.k_strides),
                e,
                a16,
            )
            .written(),
            BufSpec::input(
                T::VCache,
                b.v_cache,
                Use::Required,
                p.cache_span(&p.v_strides),
                e,
                a16,
            )
            .written(),
            BufSpec::input(T::KNew, b.k_new, Use::Required, new_len, 2, a16),
            BufSpec::input(T::VNew, b.v_new, Use::Required, new_len, 2, a16),
            BufSpec::input(
                T::SlotMapping,
                b.slot_mapping,
                req(!by_position),
                tokens,
                4,
                4,
            ),
            BufSpec::input(T::BlockTable, b.block_table, req(by_position), table, 4, 4),
            BufSpec::input(T::TokenBatch, b.token_batch, req(by_position), tokens, 4, 4),
            BufSpec::input(T::TokenPos, b.token_pos, req(by_position), tokens, 4, 4),
            BufSpec::input(T::KScales, b.k_scales, req(fp8), scales, 4, 4),
            BufSpec::input(T::VScales, b.v_scales, req(fp8), scales, 4, 4),
        ])?;
        let opt = |on: bool, buf: DevBuf| if on { buf.addr } else { 0 };
        Ok(KvAppendParams {
            k_new: b.k_new.addr as *const _,
            v_new: b.v_new.addr as *const _,
            k_cache: b.k_cache.addr as *mut _,
            v_cache: b.v_cache.addr as *mut _,
            slot_mapping: opt(!by_position, b.slot_mapping) as *const i32,
            block_table: opt(by_position, b.block_table) as *const i32,
            token_batch: opt(by_position, b.token_batch) as *const i32,
            token_pos: opt(by_position, b.token_pos) as *const i32,
            k_scales: opt(fp8, b.k_scales) as *const f32,
            v_scales: opt(fp8, b.v_scales) as *const f32,
            k_new_token_stride: (hkv * d) as i64,
            k_new_head_stride: d as i64,
            v_new_token_stride: (hkv * d) as i64,
            v_new_head_stride: d as i64,
            k_page_stride: p.k_strides.page,
            k_slot_stride: p.k_strides.slot,
            k_head_stride: p.k_strides.head,
            v_page_stride: p.v_strides.page,
            v_slot_stride: p.v_strides.slot,
            v_head_stride: p.v_strides.head,
            block_table_stride: p.block_table_stride as i64,
            num_tokens: self.num_tokens as i32,
            num_heads_kv: hkv as i32,
            head_dim: d as i32,
            num_pages: p.num_pages as i32,
            page_size: p.page_size as i32,
            batch: p.batch as i32,
            max_pages_per_seq: p.max_pages_per_seq as i32,
            kv_format: p.kv_dtype.format(),
            kv_scale_stride: p.kv_scales.stride(),
            flags: if p.dtype == DType::Bf16 {
                abi::FLASHMHA_KV_APPEND_FLAG_SRC_BF16
            } else {
                0
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::error::Error;
    use crate::ops::decode::fp8::KvCacheDType;

    fn buf(addr: u64) -> DevBuf {
        DevBuf { addr, len: 1 << 20 }
    }

    #[test]
    fn each_target_and_page_type_needs_its_own_buffers() {
        let mut p = DecodeProblem::contiguous(DType::F16, 2, 1, 2, 2, 64, 4, 16, 2, false);
        p.kv_dtype = KvCacheDType::Fp8E4M3;
        let plan = KvAppendPlan::new(&p, 3, AppendIndex::Positions).unwrap();
        assert_eq!(plan.launch.entry, KV_APPEND_FP8_ENTRY);
        let mut b = KvAppendBuffers {
            k_new: buf(0x10_0000),
            v_new: buf(0x20_0000),
            k_cache: buf(0x30_0000),
            v_cache: buf(0x40_0000),
            block_table: buf(0x50_0000),
            token_batch: buf(0x60_0000),
            ..KvAppendBuffers::default()
        };
        assert!(matches!(
            plan.params(&b),
            Err(Error::MissingBuffer {
                tensor: TensorName::TokenPos
            })
        ));
        b.token_pos = buf(0x70_0000);
        assert!(matches!(
            plan.params(&b),
            Err(Error::MissingBuffer {
                tensor: TensorName::KScales
            })
        ));
        b.k_scales = buf(0x80_0000);
        b.v_scales = buf(0x90_0000);
        let params = plan.params(&b).unwrap();
        assert!(params.slot_mapping.is_null() && !params.token_pos.is_null());
        assert_eq!(params.kv_format, abi::FLASHMHA_KV_FORMAT_E4M3 as i32);
        // An FP8 pool overlapping a scale buffer is refused (the pools are counted in bytes).
        b.v_scales = buf(0x40_0000 + 100);
        assert!(matches!(plan.params(&b), Err(Error::Alias { .. })));
    }

    #[test]
    fn bad_append_buffers_are_typed_errors_before_any_launch() {
        // 3 pages of 5 slots, 2 KV heads of d64: 1920 elements per pool.
        let p = DecodeProblem::contiguous(DType::F16, 1, 1, 2, 2, 64, 3, 5, 1, false);
        // Zero tokens: a valid plan that binds to no launch, whatever the buffers hold (a step
        // with no new tokens needs no special case in a server), while its pools are still
        // validated.
        let empty = KvAppendPlan::new(&p, 0, AppendIndex::Slots).unwrap();
        assert!(empty.bind(&KvAppendBuffers::default()).unwrap().is_empty());
        let mut bad_pools = p.clone();
        bad_pools.num_heads_kv = 0;
        assert!(matches!(
            KvAppendPlan::new(&bad_pools, 0, AppendIndex::Slots),
            Err(Error::EmptyDim { .. })
        ));
        let plan = KvAppendPlan::new(&p, 4, AppendIndex::Slots).unwrap();
        assert_eq!(plan.launch.grid, [1, 1, 1]); // 4 x 2 x 64 / 8 = 64 chunks
        let buf = |slot: u64, len: u64| DevBuf {
            addr: (slot + 1) << 20,
            len,
        };
        let good = KvAppendBuffers {
            k_new: buf(0, 512),
            v_new: buf(1, 512),
            k_cache: buf(2, 1920),
            v_cache: buf(3, 1920),
            slot_mapping: buf(4, 4),
            ..KvAppendBuffers::default()
        };
        let params = plan.params(&good).unwrap();
        assert_eq!(
            (params.num_tokens, params.num_pages, params.page_size),
            (4, 3, 5)
        );
        // One buffer broken at a time, each with the error that names it (the last: the V
        // pool carved inside the K pool).
        let cases = [
            (
                KvAppendBuffers {
                    slot_mapping: DevBuf::default(),
                    ..good
                },
                "MissingBuffer { tensor: SlotMapping }",
            ),
            (
                KvAppendBuffers {
                    v_cache: buf(3, 1919),
                    ..good
                },
                "BufferTooSmall { tensor: VCache, needed: 1920, available: 1919 }",
            ),
            (
                KvAppendBuffers {
                    k_new: DevBuf {
                        addr: good.k_new.addr + 8,
                        len: 512,
                    },
                    ..good
                },
                "Misaligned { tensor: KNew",
            ),
            (
                KvAppendBuffers {
                    v_cache: DevBuf {
                        addr: good.k_cache.addr + 1024,
                        len: 1920,
                    },
                    ..good
                },
                "Alias { a: KCache, b: VCache }",
            ),
        ];
        for (bufs, expected) in cases {
            let e = format!("{:?}", plan.params(&bufs).unwrap_err());
            assert!(e.starts_with(expected), "{e} is not {expected}");
        }
    }
}
