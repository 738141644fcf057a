//! Parses `kernels/kernel_table.h`, the one list of forward-kernel instantiations that CUDA
//! (through the X-macro) and Rust (through this parser and the generated registry) both read.

use std::path::Path;

/// One `X(dtype, head_dim, block_m, block_n, num_warps, smem_bytes)` row.
pub struct FwdRow {
    pub dtype: String,
    pub head_dim: u32,
    pub block_m: u32,
    pub block_n: u32,
    pub num_warps: u32,
    pub smem_bytes: u32,
}

impl FwdRow {
    pub fn entry(&self) -> String {
        format!("flashmha_fwd_{}_d{}", self.dtype, self.head_dim)
    }
}

pub fn parse(path: &Path) -> Vec<FwdRow> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut rows = Vec::new();
    let mut in_table = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with("#define FLASHMHA_FWD_KERNELS(X)") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let Some(body) = line.strip_prefix("X(") else {
            if !line.is_empty() {
                break;
            }
            continue;
        };
        let body = body.trim_end_matches('\\').trim().trim_end_matches(')');
        let fields: Vec<&str> = body.split(',').map(str::trim).collect();
        let num = |i: usize| -> u32 {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "{}:{}: field {i} of `{line}` is not a number",
                        path.display(),
                        n + 1
                    )
                })
        };
        assert!(
            fields.len() == 6 && (fields[0] == "f16" || fields[0] == "bf16"),
            "{}:{}: expected X(f16|bf16, head_dim, block_m, block_n, num_warps, smem_bytes), got `{line}`",
            path.display(),
            n + 1
        );
        rows.push(FwdRow {
            dtype: fields[0].to_string(),
            head_dim: num(1),
            block_m: num(2),
            block_n: num(3),
            num_warps: num(4),
            smem_bytes: num(5),
        });
    }
    rows
}
