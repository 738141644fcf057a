//! The compiled JVP kernels: the rows of `FLASHMHA_JVP_KERNELS` in kernels/kernel_table.h (which
//! build/kernel_table.rs does not read). A unit test checks this list against the header, the
//! shared-memory layout and the embedded modules.

use crate::common::dtype::DType;
use crate::ops::kernel_rows::{distinct_head_dims, narrowest_serving, HeadDimRow};

/// Warps per JVP CTA (kernels/common/flash_jvp_cta.cuh, JvpTraits).
pub const JVP_WARPS: u32 = 4;
/// Query rows per JVP CTA: one m16 row block per warp.
pub const JVP_BLOCK_M: u32 = 16 * JVP_WARPS;

/// One JVP instantiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JvpKernelRow {
    pub entry: &'static str,
    pub dtype: DType,
    /// Compiled head dim; every multiple of 8 up to it runs on it (extra columns predicated off).
    pub head_dim: u32,
    /// Keys per main-loop tile.
    pub block_n: u32,
    /// Dynamic shared memory (the kernel traps with less).
    pub smem_bytes: u32,
}

impl HeadDimRow for JvpKernelRow {
    fn head_dim(&self) -> u32 {
        self.head_dim
    }
}

const fn row(
    entry: &'static str,
    dtype: DType,
    head_dim: u32,
    block_n: u32,
    smem_bytes: u32,
) -> JvpKernelRow {
    JvpKernelRow {
        entry,
        dtype,
        head_dim,
        block_n,
        smem_bytes,
    }
}

/// Every compiled JVP kernel (kernel_table.h order, f16 before bf16 in each row).
pub static JVP_KERNELS: &[JvpKernelRow] = &[
    row("flashmha_jvp_f16_d32", DType::F16, 32, 64, 24576),
    row("flashmha_jvp_bf16_d32", DType::Bf16, 32, 64, 24576),
    row("flashmha_jvp_f16_d64", DType::F16, 64, 64, 49152),
    row("flashmha_jvp_bf16_d64", DType::Bf16, 64, 64, 49152),
    row("flashmha_jvp_f16_d128", DType::F16, 128, 32, 65536),
    row("flashmha_jvp_bf16_d128", DType::Bf16, 128, 32, 65536),
];

/// The kernel that serves `head_dim` for `dtype`: the smallest compiled one at least as wide,
/// for a positive multiple of 8.
pub fn jvp_kernel_for(dtype: DType, head_dim: usize) -> Option<&'static JvpKernelRow> {
    narrowest_serving(JVP_KERNELS.iter().filter(|r| r.dtype == dtype), head_dim)
}

/// The compiled head dims of `dtype`, sorted.
pub fn compiled_head_dims(dtype: DType) -> Vec<u32> {
    distinct_head_dims(JVP_KERNELS.iter().filter(|r| r.dtype == dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_the_kernel_table_and_are_compiled() {
        let header = include_str!("../../../kernels/kernel_table.h");
        // One header row per compiled head dim, both dtypes.
        let header_rows = header
            .lines()
            .filter(|l| l.trim_start().starts_with("X(FLASHMHA_JVP_KERNEL,"))
            .count();
        assert_eq!(2 * header_rows, JVP_KERNELS.len());
        for r in JVP_KERNELS {
            let line = format!(
                "X(FLASHMHA_JVP_KERNEL, f16_bf16, {}, {}, {})",
                r.head_dim, r.block_n, r.smem_bytes
            );
            assert!(header.contains(&line), "{} has no row `{line}`", r.entry);
            assert_eq!(
                r.entry,
                format!("flashmha_jvp_{}_d{}", r.dtype.name(), r.head_dim)
            );
            // JvpTraits: [Q | dQ | K | dK | V | dV], 2-byte elements.
            assert_eq!(
                r.smem_bytes,
                2 * r.head_dim * (2 * JVP_BLOCK_M + 4 * r.block_n)
            );
            assert!(
                crate::common::build_info::module_of(r.entry).is_some(),
                "{} is not embedded",
                r.entry
            );
        }
    }

    #[test]
    fn head_dims_run_on_the_next_compiled_kernel() {
        assert_eq!(jvp_kernel_for(DType::F16, 32).unwrap().head_dim, 32);
        assert_eq!(jvp_kernel_for(DType::Bf16, 40).unwrap().head_dim, 64);
        assert_eq!(jvp_kernel_for(DType::F16, 72).unwrap().head_dim, 128);
        assert!(jvp_kernel_for(DType::F16, 0).is_none());
        assert!(jvp_kernel_for(DType::F16, 60).is_none());
        assert!(jvp_kernel_for(DType::F16, 136).is_none());
        assert!(jvp_kernel_for(DType::F16, usize::MAX).is_none());
        assert_eq!(compiled_head_dims(DType::Bf16), vec![32, 64, 128]);
    }
}
