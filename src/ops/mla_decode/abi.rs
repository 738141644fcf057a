//! Marker impls for the MLA decode params structs bindgen generates from kernels/params.h, and
//! the sm_90a kernel's `FlashMlaDecodeTmaParams` built from an encoded tensor map.

use crate::common::abi::{
    tensor_map, FlashMlaDecodeParams, FlashMlaDecodeTmaParams, ParamsBytes, TENSOR_MAP_BYTES,
};

// SAFETY: #[repr(C)] plain-old-data (pointers and numbers), received by value by the kernel.
unsafe impl cudarc::driver::DeviceRepr for FlashMlaDecodeParams {}
// SAFETY: the decode params (no padding, src/ops/decode/abi.rs) then two i32 (pad0 explicit):
// no padding (tested).
unsafe impl ParamsBytes for FlashMlaDecodeParams {}
// SAFETY: #[repr(C)] plain-old-data, received by value as a __grid_constant__ parameter.
unsafe impl cudarc::driver::DeviceRepr for FlashMlaDecodeTmaParams {}
// SAFETY: a 128-byte map, the MLA params (352 bytes, no padding) and 32 explicit pad bytes:
// 512 bytes ending on the 64-byte alignment, no implicit padding (tested; the kernel
// static_asserts the same layout).
unsafe impl ParamsBytes for FlashMlaDecodeTmaParams {}

/// The sm_90a MLA kernel's params: the latent pool's encoded map, then `mla`.
pub fn mla_tma_params(
    kv_map: &[u8; TENSOR_MAP_BYTES],
    mla: &FlashMlaDecodeParams,
) -> FlashMlaDecodeTmaParams {
    FlashMlaDecodeTmaParams {
        kv_map: tensor_map(kv_map),
        mla: *mla,
        pad: [0; 4],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::abi::FlashDecodeParams;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn mla_abi_has_no_padding() {
        assert_eq!(
            size_of::<FlashMlaDecodeParams>(),
            size_of::<FlashDecodeParams>() + 2 * 4
        );
        assert_eq!(offset_of!(FlashMlaDecodeTmaParams, mla), TENSOR_MAP_BYTES);
        assert_eq!(
            offset_of!(FlashMlaDecodeTmaParams, pad),
            TENSOR_MAP_BYTES + size_of::<FlashMlaDecodeParams>()
        );
        assert_eq!(size_of::<FlashMlaDecodeTmaParams>(), 512);
        assert_eq!(align_of::<FlashMlaDecodeTmaParams>(), 64);
        let mut map = [7u8; TENSOR_MAP_BYTES];
        map[3] = 0xab;
        let mla = FlashMlaDecodeParams {
            head_dim_v: 0x0102_0304,
            ..Default::default()
        };
        let p = mla_tma_params(&map, &mla);
        let b = p.as_bytes();
        assert_eq!(b[..TENSOR_MAP_BYTES], map);
        let at = TENSOR_MAP_BYTES + offset_of!(FlashMlaDecodeParams, head_dim_v);
        assert_eq!(b[at..at + 4], 0x0102_0304i32.to_le_bytes());
    }
}
