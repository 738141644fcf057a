//! Marker impls for the MLA decode params struct bindgen generates from kernels/params.h.

use crate::common::abi::{FlashMlaDecodeParams, ParamsBytes};

// SAFETY: #[repr(C)] plain-old-data (pointers and numbers), received by value by the kernel.
unsafe impl cudarc::driver::DeviceRepr for FlashMlaDecodeParams {}
// SAFETY: the decode params (no padding, src/ops/decode/abi.rs) then two i32 (pad0 explicit):
// no padding (tested).
unsafe impl ParamsBytes for FlashMlaDecodeParams {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::abi::FlashDecodeParams;

    #[test]
    fn mla_abi_has_no_padding() {
        assert_eq!(
            std::mem::size_of::<FlashMlaDecodeParams>(),
            std::mem::size_of::<FlashDecodeParams>() + 2 * 4
        );
    }
}
