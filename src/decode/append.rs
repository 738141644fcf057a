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
//! Pure, like the decode plan: [`plan_kv_append_to`] validates the geometry once,
//! [`KvAppendPlan::params`] checks a run's buffers in O(1) (presence, sizes, 16-byte alignment,
//! aliasing) and fills the params both backends launch.
//!
//! Layouts: `k_new, v_new: [num_tokens, hkv, d]` contiguous, of the problem's dtype; the pools as
//! in the problem (elements of its `kv_dtype`).

use super::kernels::{
    KV_APPEND_ENTRY, KV_APPEND_FP8_ENTRY, KV_APPEND_SM75_ENTRY, KV_APPEND_THREADS,
};
use super::plan::{align16, check_disjoint, need, DeviceBuf, Launch};
use super::problem::DecodeProblem;
use super::validate::validate_kv_append;
use crate::abi::{self, KvAppendParams};
use crate::dtype::DType;
use crate::error::{Error, Result, TensorName};
use crate::target::KernelTarget;

/// Elements of one 16-byte copy (`FLASHMHA_KV_APPEND_CHUNK_ELEMS` of kernels/params.h,
/// `kAppendChunkElems` in kernels/common/kv_append_chunk.cuh).
pub const APPEND_CHUNK_ELEMS: usize = crate::abi::FLASHMHA_KV_APPEND_CHUNK_ELEMS as usize;

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
    pub k_new: DeviceBuf,
    pub v_new: DeviceBuf,
    pub k_cache: DeviceBuf,
    pub v_cache: DeviceBuf,
    pub slot_mapping: DeviceBuf,
    pub block_table: DeviceBuf,
    pub token_batch: DeviceBuf,
    pub token_pos: DeviceBuf,
    pub k_scales: DeviceBuf,
    pub v_scales: DeviceBuf,
}

/// [`plan_kv_append_to`] through a slot mapping.
pub fn plan_kv_append(pools: &DecodeProblem, num_tokens: usize) -> Result<KvAppendPlan> {
    plan_kv_append_to(pools, num_tokens, AppendIndex::Slots)
}

/// Validates the pool geometry of `pools` and plans an append of `num_tokens` tokens (one
/// thread per 16-byte chunk of the source rows of K and of V) addressed by `index`.
pub fn plan_kv_append_to(
    pools: &DecodeProblem,
    num_tokens: usize,
    index: AppendIndex,
) -> Result<KvAppendPlan> {
    plan_kv_append_for(KernelTarget::Ampere, pools, num_tokens, index)
}

/// [`plan_kv_append_to`] with the kernels of `kernels`: Turing appends into the pools its
/// decode reads (f16, 16-bit pages); bf16 there is [`Error::UnsupportedDType`], FP8 pages
/// [`Error::UnsupportedOnTarget`].
pub fn plan_kv_append_for(
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
        launch: Launch {
            entry,
            grid: [chunks.div_ceil(u64::from(KV_APPEND_THREADS)) as u32, 1, 1],
            block: [KV_APPEND_THREADS, 1, 1],
            dynamic_smem_bytes: 0,
        },
    })
}

impl KvAppendPlan {
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
        let none = DeviceBuf::default();
        let used = |on: bool, buf: DeviceBuf| if on { buf } else { none };
        // (name, buffer, elements, element bytes, alignment); outputs first. Buffers this plan
        // does not use are left out (address 0: skipped below).
        let all: [(T, DeviceBuf, u64, u64, u64); 10] = [
            (T::KCache, b.k_cache, p.cache_span(&p.k_strides), e, 16),
            (T::VCache, b.v_cache, p.cache_span(&p.v_strides), e, 16),
            (T::KNew, b.k_new, new_len, 2, 16),
            (T::VNew, b.v_new, new_len, 2, 16),
            (
                T::SlotMapping,
                used(!by_position, b.slot_mapping),
                tokens,
                4,
                4,
            ),
            (T::BlockTable, used(by_position, b.block_table), table, 4, 4),
            (
                T::TokenBatch,
                used(by_position, b.token_batch),
                tokens,
                4,
                4,
            ),
            (T::TokenPos, used(by_position, b.token_pos), tokens, 4, 4),
            (T::KScales, used(fp8, b.k_scales), scales, 4, 4),
            (T::VScales, used(fp8, b.v_scales), scales, 4, 4),
        ];
        let required = [
            true,
            true,
            true,
            true,
            !by_position,
            by_position,
            by_position,
            by_position,
            fp8,
            fp8,
        ];
        for (&(tensor, buf, needed, _, _), &req) in all.iter().zip(&required) {
            if req {
                need(tensor, &buf, needed)?;
            }
        }
        for &(tensor, buf, ..) in &all[..4] {
            align16(tensor, &buf)?;
        }
        check_disjoint(&all, 2)?;
        let opt = |on: bool, buf: DeviceBuf| if on { buf.addr } else { 0 };
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
    use crate::decode::fp8::KvCacheDType;
    use crate::error::Error;

    fn buf(addr: u64) -> DeviceBuf {
        DeviceBuf { addr, len: 1 << 20 }
    }

    #[test]
    fn each_target_and_page_type_needs_its_own_buffers() {
        let mut p = DecodeProblem::contiguous(DType::F16, 2, 1, 2, 2, 64, 4, 16, 2, false);
        p.kv_dtype = KvCacheDType::Fp8E4M3;
        let plan = plan_kv_append_to(&p, 3, AppendIndex::Positions).unwrap();
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
        assert!(matches!(
            plan_kv_append(&p, 0),
            Err(Error::EmptyDim {
                tensor: TensorName::KNew,
                ..
            })
        ));
        let plan = plan_kv_append(&p, 4).unwrap();
        assert_eq!(plan.launch.grid, [1, 1, 1]); // 4 x 2 x 64 / 8 = 64 chunks
        let buf = |slot: u64, len: u64| DeviceBuf {
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
        let err = |b: KvAppendBuffers| plan.params(&b).unwrap_err();
        assert!(matches!(
            err(KvAppendBuffers {
                slot_mapping: DeviceBuf::default(),
                ..good
            }),
            Error::MissingBuffer {
                tensor: TensorName::SlotMapping
            }
        ));
        assert!(matches!(
            err(KvAppendBuffers {
                v_cache: buf(3, 1919),
                ..good
            }),
            Error::BufferTooSmall {
                tensor: TensorName::VCache,
                needed: 1920,
                available: 1919
            }
        ));
        assert!(matches!(
            err(KvAppendBuffers {
                k_new: DeviceBuf {
                    addr: good.k_new.addr + 8,
                    len: 512
                },
                ..good
            }),
            Error::Misaligned {
                tensor: TensorName::KNew,
                ..
            }
        ));
        // The V pool carved inside the K pool.
        assert!(matches!(
            err(KvAppendBuffers {
                v_cache: DeviceBuf {
                    addr: good.k_cache.addr + 1024,
                    len: 1920
                },
                ..good
            }),
            Error::Alias {
                a: TensorName::KCache,
                b: TensorName::VCache
            }
        ));
    }
}
