//! The compiled MLA decode kernels: the rows of `FLASHMHA_MLA_DECODE_KERNELS` (sm_80+
//! `mma.sync`) and `FLASHMHA_MLA_DECODE_KERNELS_SM90` (sm_90a TMA + `wgmma`) in
//! kernels/kernel_table.h (tables build/kernel_table.rs does not read, like the backward's).
//! A unit test reads the header and checks this list against it row by row, and that every
//! entry is compiled without spills.

use crate::common::dtype::DType;

/// One MLA decode instantiation (d_qk 576, d_v 512).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaKernelRow {
    pub entry: &'static str,
    pub dtype: DType,
    /// Packed query rows (heads x new tokens) per CTA.
    pub tile_rows: u32,
    pub num_warps: u32,
    /// Bytes per cached element: 2 (the dtype) or 1 (FP8 codes, e4m3 / e5m2 chosen at run time,
    /// dequantised into the 16-bit stage).
    pub kv_bytes: u32,
    /// Dynamic shared memory (the kernel traps with less).
    pub smem_bytes: u32,
    /// The sm_90a kernel (kernels/sm90/flash_mla_decode_sm90.cu): it takes
    /// `FlashMlaDecodeTmaParams` (a tensor map over the latent pool, then the MLA params) and
    /// serves page sizes that are multiples of [`SM90_TILE_KEYS`].
    pub sm90: bool,
}

/// Keys per tile of the sm_90a kernel: one TMA box row range inside one page (params.h).
pub const SM90_TILE_KEYS: usize = crate::common::abi::FLASHMHA_MLA_SM90_KEYS as usize;

const fn row(entry: &'static str, dtype: DType, kv_bytes: u32, smem_bytes: u32) -> MlaKernelRow {
    MlaKernelRow {
        entry,
        dtype,
        tile_rows: 32,
        num_warps: 8,
        kv_bytes,
        smem_bytes,
        sm90: false,
    }
}

const fn row_sm90(entry: &'static str, dtype: DType) -> MlaKernelRow {
    MlaKernelRow {
        entry,
        dtype,
        tile_rows: 64,
        num_warps: 8,
        kv_bytes: 2,
        smem_bytes: 230016,
        sm90: true,
    }
}

/// Every compiled MLA kernel (kernel_table.h order, f16 before bf16; the sm_90a rows last).
pub static MLA_DECODE_KERNELS: &[MlaKernelRow] = &[
    row("flashmha_mla_decode_f16_r32", DType::F16, 2, 82944),
    row("flashmha_mla_decode_bf16_r32", DType::Bf16, 2, 82944),
    row("flashmha_mla_decode_f16_fp8_r32", DType::F16, 1, 82944),
    row("flashmha_mla_decode_bf16_fp8_r32", DType::Bf16, 1, 82944),
    row_sm90("flashmha_mla_decode_sm90_f16_r64", DType::F16),
    row_sm90("flashmha_mla_decode_sm90_bf16_r64", DType::Bf16),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::build_info::{module_of, ptxas_stats};
    use crate::ops::kernel_rows::kernel_table_rows;

    /// The `X(FLASHMHA_MLA_DECODE_KERNEL[_SM90], dtypes, tile_rows, num_warps, kv_bytes,
    /// smem_bytes)` rows of kernels/kernel_table.h, one per dtype, the sm_90a table last.
    fn header_rows() -> Vec<(String, [u32; 4])> {
        let table = |define: &str, kernel: &str, prefix: &str| {
            kernel_table_rows(define, kernel)
                .into_iter()
                .map(|(d, n)| {
                    assert_eq!(n.len(), 4, "{n:?}");
                    let fp8 = if n[2] == 1 { "_fp8" } else { "" };
                    (
                        format!("flashmha_mla_decode_{prefix}{d}{fp8}_r{}", n[0]),
                        [n[0], n[1], n[2], n[3]],
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut rows = table(
            "FLASHMHA_MLA_DECODE_KERNELS",
            "FLASHMHA_MLA_DECODE_KERNEL",
            "",
        );
        rows.extend(table(
            "FLASHMHA_MLA_DECODE_KERNELS_SM90",
            "FLASHMHA_MLA_DECODE_KERNEL_SM90",
            "sm90_",
        ));
        rows
    }

    #[test]
    fn rows_match_the_kernel_table_and_compile_without_spills() {
        let header = header_rows();
        let ours: Vec<(String, [u32; 4])> = MLA_DECODE_KERNELS
            .iter()
            .map(|r| {
                (
                    r.entry.to_string(),
                    [r.tile_rows, r.num_warps, r.kv_bytes, r.smem_bytes],
                )
            })
            .collect();
        assert!(!header.is_empty());
        assert_eq!(ours, header);
        for r in MLA_DECODE_KERNELS {
            assert!(module_of(r.entry).is_some(), "{} not compiled", r.entry);
            let stats: Vec<_> = ptxas_stats(r.entry).collect();
            assert!(!stats.is_empty(), "{}: no ptxas figures", r.entry);
            assert_eq!(r.sm90, r.entry.contains("_sm90_"), "{}", r.entry);
            if r.sm90 {
                assert!(stats.iter().all(|s| s.arch == "sm_90a"), "{stats:?}");
            }
            for s in stats {
                assert_eq!(
                    s.spill_load_bytes + s.spill_store_bytes,
                    0,
                    "{} spills on {}",
                    r.entry,
                    s.arch
                );
            }
        }
    }
}
