//! The 16-bit element types the kernels read and write (q, k, v, o; the head-similarity input),
//! each tied to its [`DType`]. One trait serves the CUDA backend (device copies) and the emulator
//! paths (byte views through `bytemuck`).

use crate::common::dtype::DType;

/// A 16-bit float a kernel takes: plain bits on the host and on the device.
pub trait Element:
    bytemuck::Pod + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Send + Sync
{
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

/// `impl Element` for a `half` type: its dtype, and `half`'s own conversions.
macro_rules! element {
    ($t:ty, $dtype:expr) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
        }
    };
}

element!(half::f16, DType::F16);
element!(half::bf16, DType::Bf16);
