//! Tensor maps on a GPU: encodes the plan's map descriptions with the driver's
//! `cuTensorMapEncodeTiled` (CUDA Driver API, "Tensor Map Object Management"; through cudarc's
//! sys layer) over the bound q / k / v addresses, into the 128 opaque bytes the sm_90a forward
//! receives in `FlashFwdTmaParams`. Host-only work on the stack: no allocation, no device call,
//! no synchronisation, so it stays on the launch path of a captured graph.

use crate::common::abi::TENSOR_MAP_BYTES;
use crate::common::error::{driver_error, Result};
use crate::ops::forward::tma::{TmaElement, TmaMapDesc, TmaSwizzleMode};
use cudarc::driver::sys;

/// The driver's encoding of `desc` over the device address `addr`.
pub(super) fn encode(desc: &TmaMapDesc, addr: u64) -> Result<[u8; TENSOR_MAP_BYTES]> {
    let mut map = sys::CUtensorMap {
        opaque: [0; TENSOR_MAP_BYTES / 8],
    };
    let element_strides = [1u32; crate::ops::forward::tma::TMA_RANK];
    let data_type = match desc.element {
        TmaElement::U16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
    };
    let swizzle = match desc.swizzle {
        TmaSwizzleMode::B128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
    };
    // SAFETY: `map` is a live, 64-byte aligned CUtensorMap the driver writes; the dimension,
    // stride, box and element-stride arrays hold rank (4), rank - 1, rank and rank entries as
    // the call reads; `addr` is only recorded in the map, not dereferenced here (validation and
    // `bind` proved the kernel's boxes stay inside the buffer or are zero-filled).
    unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            data_type,
            desc.global_dim.len() as u32,
            addr as *mut std::ffi::c_void,
            desc.global_dim.as_ptr(),
            desc.global_strides.as_ptr(),
            desc.box_dim.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            // A cache hint only; the emulator backend asks for the same.
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            // Zeros: rows past the tensor and columns past head_dim must contribute nothing.
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
        .result()
        .map_err(driver_error)?;
    }
    let mut bytes = [0u8; TENSOR_MAP_BYTES];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(map.opaque) {
        // The object is passed to the device byte for byte; both sides are little endian.
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    Ok(bytes)
}
