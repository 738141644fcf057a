//! Marker impls for the decode params structs that bindgen generates from `kernels/params.h`
//! (the structs themselves live in [`crate::common::abi`]); their device layout is checked by
//! `tests/ops/abi_probe.rs`.

#[cfg(test)]
use crate::common::abi::FlashAttnOptions;
use crate::common::abi::{FlashDecodeParams, KvAppendParams, MergeStatesParams, ParamsBytes};

// SAFETY: #[repr(C)] plain-old-data (pointers and numbers), received by value by the kernel.
unsafe impl cudarc::driver::DeviceRepr for FlashDecodeParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for MergeStatesParams {}
// SAFETY: as above.
unsafe impl cudarc::driver::DeviceRepr for KvAppendParams {}

// SAFETY: 12 pointers and 14 eight-byte fields, the option block (8-aligned, itself without
// padding), then 14 four-byte fields: no padding (tested).
unsafe impl ParamsBytes for FlashDecodeParams {}
// SAFETY: 10 pointers, 11 i64, 6 i32 (pad0 explicit): no padding (tested).
unsafe impl ParamsBytes for MergeStatesParams {}
// SAFETY: 10 pointers, 11 i64, 10 four-byte fields: no padding (tested).
unsafe impl ParamsBytes for KvAppendParams {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_abi_has_no_padding() {
        assert_eq!(
            std::mem::size_of::<FlashDecodeParams>(),
            12 * 8 + 14 * 8 + std::mem::size_of::<FlashAttnOptions>() + 14 * 4
        );
        assert_eq!(
            std::mem::size_of::<MergeStatesParams>(),
            10 * 8 + 11 * 8 + 6 * 4
        );
        assert_eq!(
            std::mem::size_of::<KvAppendParams>(),
            10 * 8 + 11 * 8 + 10 * 4
        );
    }
}
