//! Marker impls for the backward's params struct that bindgen generates from
//! `kernels/params.h` (`FlashBwdParams`, in [`crate::common::abi`]).

use crate::common::abi::{FlashBwdParams, ParamsBytes};

// SAFETY: #[repr(C)] plain-old-data (pointers and numbers), received by value by the kernels.
unsafe impl cudarc::driver::DeviceRepr for FlashBwdParams {}

// SAFETY: 15 pointers and 24 i64 strides, the option block (8-aligned, itself without padding),
// then 10 four-byte fields: no padding (tested).
unsafe impl ParamsBytes for FlashBwdParams {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::abi::FlashAttnOptions;

    #[test]
    fn bwd_abi_has_no_padding() {
        assert_eq!(
            std::mem::size_of::<FlashBwdParams>(),
            15 * 8 + 24 * 8 + std::mem::size_of::<FlashAttnOptions>() + 10 * 4
        );
    }
}
