//! The tensor map of the sm_90a MLA decode (kernels/sm90/flash_mla_decode_sm90.cu) over the
//! latent page pool, as params.h describes it above `FlashMlaDecodeTmaParams`: rank 4,
//! dimensions innermost first (576, 1, page_size, num_pages), box (64, 1, 64, 1), 16-bit
//! elements, 128-byte swizzle; one 64-key tile of a sequence is 9 boxes of one page. A pure
//! function of the validated problem; `None` when the pool cannot be such a map (page size not
//! a multiple of 64, FP8 codes, strides the encoder refuses), and the plan then runs the sm_80
//! kernel.

use super::kernels::SM90_TILE_KEYS;
use super::problem::{MlaDecodeProblem, MLA_D_QK};
use crate::ops::decode::KvCacheDType;
use crate::ops::forward::tma::{
    TmaElement, TmaMapDesc, TmaSwizzleMode, TMA_BOX_COLS, TMA_MAX_DIM, TMA_MAX_STRIDE_BYTES,
    TMA_STRIDE_ALIGN,
};

/// The pool's map, or `None` when the sm_90a kernel cannot read it (see the module docs).
pub fn describe_pool(p: &MlaDecodeProblem) -> Option<TmaMapDesc> {
    if p.kv_dtype != KvCacheDType::Same || !p.page_size.is_multiple_of(SM90_TILE_KEYS) {
        return None;
    }
    let element = TmaElement::U16;
    let e = element.bytes();
    let dims = [MLA_D_QK, 1, p.page_size, p.num_pages].map(|n| n as u64);
    if dims.iter().any(|&d| d == 0 || d > TMA_MAX_DIM) {
        return None;
    }
    let row_bytes = (MLA_D_QK as u64 * e).next_multiple_of(TMA_STRIDE_ALIGN);
    let stride = |given: i64, extent: u64, span: u64| -> Option<u64> {
        if extent == 1 {
            // Never stepped: any encodable value, the span inside it as a dense tensor has.
            return Some(span.next_multiple_of(TMA_STRIDE_ALIGN));
        }
        let bytes = u64::try_from(given).ok()?.checked_mul(e)?;
        (bytes > 0 && bytes.is_multiple_of(TMA_STRIDE_ALIGN) && bytes < TMA_MAX_STRIDE_BYTES)
            .then_some(bytes)
    };
    let slot = stride(p.cache_strides.slot, dims[2], row_bytes)?;
    let page = stride(p.cache_strides.page, dims[3], slot.checked_mul(dims[2])?)?;
    Some(TmaMapDesc {
        global_dim: dims,
        global_strides: [row_bytes, slot, page],
        box_dim: [TMA_BOX_COLS, 1, SM90_TILE_KEYS as u32, 1],
        element,
        swizzle: TmaSwizzleMode::B128,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::dtype::DType;

    fn pool(page_size: usize) -> MlaDecodeProblem {
        MlaDecodeProblem::contiguous(DType::Bf16, 2, 1, 16, 8, page_size, 4)
    }

    #[test]
    fn pool_map_is_one_page_box_per_64_columns() {
        let m = describe_pool(&pool(64)).unwrap();
        assert_eq!(m.global_dim, [576, 1, 64, 8]);
        assert_eq!(m.global_strides, [1152, 1152, 64 * 1152]);
        assert_eq!(m.box_dim, [64, 1, 64, 1]);
        let m = describe_pool(&pool(128)).unwrap();
        assert_eq!(m.global_strides, [1152, 1152, 128 * 1152]);
    }

    #[test]
    fn pools_the_sm90_kernel_cannot_read_have_no_map() {
        assert!(describe_pool(&pool(16)).is_none());
        assert!(describe_pool(&pool(96)).is_none());
        let mut p = pool(64);
        p.kv_dtype = KvCacheDType::Fp8E4M3;
        assert!(describe_pool(&p).is_none());
        let mut p = pool(64);
        p.cache_strides.slot = 580; // 1160 bytes: not a multiple of 16
        assert!(describe_pool(&p).is_none());
        let mut p = pool(64);
        p.cache_strides.page = 0; // pages alias: the encoder needs a positive stride
        assert!(describe_pool(&p).is_none());
    }
}
