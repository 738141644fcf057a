//! The compiled backward kernels: the rows of `FLASHMHA_BWD_KERNELS` in kernels/kernel_table.h
//! (which build/kernel_table.rs does not read: it knows the forward and decode groups only), and
//! the per-dtype row kernels of kernels/sm80/flash_bwd.cu. A unit test reads the header and
//! checks this list against it row by row, and that every entry is embedded.

use crate::common::abi;
use crate::common::dtype::DType;
use crate::ops::kernel_rows::{distinct_head_dims, narrowest_serving, HeadDimRow};

/// One main-kernel instantiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BwdKernelRow {
    pub entry: &'static str,
    pub dtype: DType,
    /// Compiled head dim; every multiple of 8 up to it runs on it (extra columns predicated off).
    pub head_dim: u32,
    /// Query rows per main-loop step.
    pub block_m: u32,
    pub num_warps: u32,
    /// Dynamic shared memory (the kernel traps with less).
    pub smem_bytes: u32,
}

impl HeadDimRow for BwdKernelRow {
    fn head_dim(&self) -> u32 {
        self.head_dim
    }
}

impl BwdKernelRow {
    /// Keys per CTA: warps work in pairs, each pair on 32 keys (kernels/common/bwd_traits.cuh).
    pub fn block_n(&self) -> u32 {
        16 * self.num_warps
    }

    /// Warps of a pair share the head dim of dK / dV (each half of it) from d64 on, where whole
    /// rows of both would not fit the registers; then P is exchanged through shared memory too.
    pub fn head_dim_split(&self) -> u32 {
        if self.head_dim >= 64 {
            2
        } else {
            1
        }
    }
}

const fn row(
    entry: &'static str,
    dtype: DType,
    head_dim: u32,
    block_m: u32,
    num_warps: u32,
    smem_bytes: u32,
) -> BwdKernelRow {
    BwdKernelRow {
        entry,
        dtype,
        head_dim,
        block_m,
        num_warps,
        smem_bytes,
    }
}

/// Every compiled main kernel (kernel_table.h order, f16 before bf16 in each row).
pub static BWD_KERNELS: &[BwdKernelRow] = &[
    row("flashmha_bwd_f16_d32", DType::F16, 32, 64, 8, 41472),
    row("flashmha_bwd_bf16_d32", DType::Bf16, 32, 64, 8, 41472),
    row("flashmha_bwd_f16_d64", DType::F16, 64, 64, 8, 82432),
    row("flashmha_bwd_bf16_d64", DType::Bf16, 64, 64, 8, 82432),
    row("flashmha_bwd_f16_d80", DType::F16, 80, 64, 4, 74240),
    row("flashmha_bwd_bf16_d80", DType::Bf16, 80, 64, 4, 74240),
    row("flashmha_bwd_f16_d96", DType::F16, 96, 64, 4, 82432),
    row("flashmha_bwd_bf16_d96", DType::Bf16, 96, 64, 4, 82432),
    row("flashmha_bwd_f16_d128", DType::F16, 128, 64, 4, 98816),
    row("flashmha_bwd_bf16_d128", DType::Bf16, 128, 64, 4, 98816),
];

/// Warps per CTA of the dot and convert kernels (one per (q row, head)).
pub const ROW_WARPS: u32 = abi::FLASHMHA_BWD_ROW_WARPS;

/// The delta = rowsum(dO * O) kernel of `dtype`.
pub fn dot_entry(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "flashmha_bwd_dot_f16",
        DType::Bf16 => "flashmha_bwd_dot_bf16",
    }
}

/// The dQ conversion kernel of `dtype`.
pub fn convert_dq_entry(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "flashmha_bwd_convert_dq_f16",
        DType::Bf16 => "flashmha_bwd_convert_dq_bf16",
    }
}

/// The main kernel that serves `head_dim` for `dtype`: the smallest compiled one at least as
/// wide, for a positive multiple of 8.
pub fn backward_kernel_for(dtype: DType, head_dim: usize) -> Option<&'static BwdKernelRow> {
    narrowest_serving(BWD_KERNELS.iter().filter(|r| r.dtype == dtype), head_dim)
}

/// The compiled head dims of `dtype`, sorted.
pub fn compiled_head_dims(dtype: DType) -> Vec<u32> {
    distinct_head_dims(BWD_KERNELS.iter().filter(|r| r.dtype == dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::kernel_rows::kernel_table_rows;

    /// The `X(FLASHMHA_BWD_KERNEL, dtypes, head_dim, block_m, num_warps, smem_bytes)` rows of
    /// kernels/kernel_table.h, one per dtype.
    fn header_rows() -> Vec<(String, u32, u32, u32, u32)> {
        kernel_table_rows("FLASHMHA_BWD_KERNELS", "FLASHMHA_BWD_KERNEL")
            .into_iter()
            .map(|(d, n)| {
                assert_eq!(n.len(), 4, "{n:?}");
                (
                    format!("flashmha_bwd_{d}_d{}", n[0]),
                    n[0],
                    n[1],
                    n[2],
                    n[3],
                )
            })
            .collect()
    }

    #[test]
    fn rows_match_the_kernel_table_and_are_compiled() {
        let header = header_rows();
        assert!(!header.is_empty());
        let ours: Vec<(String, u32, u32, u32, u32)> = BWD_KERNELS
            .iter()
            .map(|r| {
                (
                    r.entry.to_string(),
                    r.head_dim,
                    r.block_m,
                    r.num_warps,
                    r.smem_bytes,
                )
            })
            .collect();
        assert_eq!(ours, header);
        for r in BWD_KERNELS {
            assert!(r.entry.contains(r.dtype.name()), "{}", r.entry);
            // The BwdTraits layout (the entry static_asserts the same sum): K, V, Q, dO, dS^T,
            // P^T when the pair splits the head dim, lse and delta, the f32 dP^T stash above d64.
            let (d, m, n) = (r.head_dim, r.block_m, r.block_n());
            let staged = 2 * m * n * r.head_dim_split();
            let stash = if d > 64 { 4 * m * n } else { 0 };
            assert_eq!(
                r.smem_bytes,
                2 * d * (2 * n + 2 * m) + staged + 8 * m + stash
            );
        }
        for entry in BWD_KERNELS
            .iter()
            .map(|r| r.entry)
            .chain([DType::F16, DType::Bf16].iter().map(|&d| dot_entry(d)))
            .chain(
                [DType::F16, DType::Bf16]
                    .iter()
                    .map(|&d| convert_dq_entry(d)),
            )
        {
            assert!(
                crate::common::build_info::module_of(entry).is_some(),
                "{entry} is not embedded"
            );
        }
    }

    #[test]
    fn head_dims_run_on_the_next_compiled_kernel() {
        assert_eq!(backward_kernel_for(DType::F16, 64).unwrap().head_dim, 64);
        assert_eq!(backward_kernel_for(DType::Bf16, 40).unwrap().head_dim, 64);
        assert_eq!(backward_kernel_for(DType::F16, 72).unwrap().head_dim, 80);
        assert_eq!(backward_kernel_for(DType::F16, 104).unwrap().head_dim, 128);
        assert!(backward_kernel_for(DType::F16, 0).is_none());
        assert!(backward_kernel_for(DType::F16, 60).is_none());
        assert!(backward_kernel_for(DType::F16, 136).is_none());
        assert!(backward_kernel_for(DType::F16, usize::MAX).is_none());
    }
}
