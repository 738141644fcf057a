//! Parses `kernels/kernel_table.h`, the one list of forward-kernel instantiations that CUDA
//! (through the X-macro) and Rust (through this parser and the generated registry) both read.

use std::path::Path;

/// One `X(dtype, head_dim, block_m, block_n, num_warps, smem_bytes)` row.
pub struct FwdRow {
    /// `Ampere` (FLASHMHA_FWD_KERNELS), `Turing` (FLASHMHA_FWD_KERNELS_SM75) or `Hopper`
    /// (FLASHMHA_FWD_KERNELS_SM90): the variant of `flashmha::KernelTarget` the row belongs to.
    pub target: &'static str,
    pub dtype: String,
    pub head_dim: u32,
    pub block_m: u32,
    pub block_n: u32,
    pub num_warps: u32,
    pub smem_bytes: u32,
}

impl FwdRow {
    pub fn entry(&self) -> String {
        let prefix = match self.target {
            "Turing" => "sm75_",
            "Hopper" => "sm90_",
            _ => "",
        };
        format!("flashmha_fwd_{prefix}{}_d{}", self.dtype, self.head_dim)
    }
}

/// Every table: the Ampere rows, then the Turing ones, then the Hopper ones.
pub fn parse(path: &Path) -> Vec<FwdRow> {
    let mut rows = parse_one(path, "FLASHMHA_FWD_KERNELS", "Ampere");
    rows.extend(parse_one(path, "FLASHMHA_FWD_KERNELS_SM75", "Turing"));
    rows.extend(parse_one(path, "FLASHMHA_FWD_KERNELS_SM90", "Hopper"));
    rows
}

fn parse_one(path: &Path, macro_name: &str, target: &'static str) -> Vec<FwdRow> {
    let shape = "f16|bf16, head_dim, block_m, block_n, num_warps, smem_bytes";
    crate::x_table::parse(path, macro_name, 5, shape)
        .into_iter()
        .map(|r| FwdRow {
            target,
            dtype: r.dtype,
            head_dim: r.nums[0],
            block_m: r.nums[1],
            block_n: r.nums[2],
            num_warps: r.nums[3],
            smem_bytes: r.nums[4],
        })
        .collect()
}
