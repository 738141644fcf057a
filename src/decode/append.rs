//! The KV-append plan: writes the K and V rows of `num_tokens` new tokens into the page pools
//! of a [`DecodeProblem`] at device-resident slots (`slot = page * page_size + offset`; a slot
//! < 0 skips the token, one >= `num_pages * page_size` traps in the kernel). Pure, like the
//! decode plan: [`plan_kv_append`] validates the geometry once, [`KvAppendPlan::params`] checks
//! a run's buffers in O(1) (presence, sizes, 16-byte alignment, aliasing) and fills the params
//! both backends launch.
//!
//! Layouts: `k_new, v_new: [num_tokens, hkv, d]` contiguous; the pools as in the problem.

use super::kernels::{KV_APPEND_ENTRY, KV_APPEND_THREADS};
use super::plan::{align16, check_disjoint, need, DeviceBuf, Launch};
use super::problem::DecodeProblem;
use super::validate::validate_decode;
use crate::abi::KvAppendParams;
use crate::error::{Dim, Error, Limit, Result, TensorName};

/// Elements of one 16-byte copy (`kAppendChunkElems` in kernels/kv_append.cu).
pub const APPEND_CHUNK_ELEMS: usize = 8;

/// A validated append of `num_tokens` tokens into the pools of `pools`.
#[derive(Debug, Clone, PartialEq)]
pub struct KvAppendPlan {
    pub pools: DecodeProblem,
    pub num_tokens: usize,
    pub launch: Launch,
}

/// The buffers of one append run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvAppendBuffers {
    pub k_new: DeviceBuf,
    pub v_new: DeviceBuf,
    pub k_cache: DeviceBuf,
    pub v_cache: DeviceBuf,
    pub slot_mapping: DeviceBuf,
}

/// Validates the pool geometry of `pools` (the same checks as a decode over them) and plans an
/// append of `num_tokens` tokens (one thread per 16-byte chunk of K and of V).
pub fn plan_kv_append(pools: &DecodeProblem, num_tokens: usize) -> Result<KvAppendPlan> {
    validate_decode(pools)?;
    if num_tokens == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::SlotMapping,
            dim: Dim::Len,
        });
    }
    let chunks = (num_tokens * pools.num_heads_kv * pools.head_dim / APPEND_CHUNK_ELEMS) as u64;
    let max = i32::MAX as u64;
    let elems = (num_tokens * pools.num_heads_kv * pools.head_dim) as u64;
    if elems > max {
        return Err(Error::Overflow32 {
            limit: Limit::Rows32,
            value: elems,
            max,
        });
    }
    Ok(KvAppendPlan {
        pools: pools.clone(),
        num_tokens,
        launch: Launch {
            entry: KV_APPEND_ENTRY,
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
        // (name, buffer, elements, element bytes, alignment); outputs first.
        let all: [(T, DeviceBuf, u64, u64, u64); 5] = [
            (T::KCache, b.k_cache, p.cache_span(&p.k_strides), 2, 16),
            (T::VCache, b.v_cache, p.cache_span(&p.v_strides), 2, 16),
            (T::KNew, b.k_new, new_len, 2, 16),
            (T::VNew, b.v_new, new_len, 2, 16),
            (T::SlotMapping, b.slot_mapping, self.num_tokens as u64, 4, 4),
        ];
        for &(tensor, buf, needed, _, _) in &all {
            need(tensor, &buf, needed)?;
        }
        for &(tensor, buf, ..) in &all[..4] {
            align16(tensor, &buf)?;
        }
        check_disjoint(&all, 2)?;
        Ok(KvAppendParams {
            k_new: b.k_new.addr as *const _,
            v_new: b.v_new.addr as *const _,
            k_cache: b.k_cache.addr as *mut _,
            v_cache: b.v_cache.addr as *mut _,
            slot_mapping: b.slot_mapping.addr as *const i32,
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
            num_tokens: self.num_tokens as i32,
            num_heads_kv: hkv as i32,
            head_dim: d as i32,
            num_pages: p.num_pages as i32,
            page_size: p.page_size as i32,
            pad0: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn bad_append_buffers_are_typed_errors_before_any_launch() {
        // 3 pages of 5 slots, 2 KV heads of d64: 1920 elements per pool.
        let p = DecodeProblem::contiguous(DType::F16, 1, 1, 2, 2, 64, 3, 5, 1, false);
        assert!(matches!(
            plan_kv_append(&p, 0),
            Err(Error::EmptyDim {
                tensor: TensorName::SlotMapping,
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
