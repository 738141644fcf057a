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

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

impl Element for half::bf16 {
    const DTYPE: DType = DType::Bf16;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}
