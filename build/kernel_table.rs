//! Reads `kernels/kernel_table.h`, the one list of kernel instantiations (forward and paged
//! decode, every target) that CUDA expands as an X-macro and Rust reads here: the rows
//! `X(group, dtypes, n1, n2, ...)` that follow `#define FLASHMHA_KERNELS(X)`, up to the first
//! line that is not a row. The generated registries (build/codegen.rs, build/decode_table.rs)
//! are written from these rows, so an entry exists on both sides or on neither.

use std::path::Path;

/// The table's macro.
const TABLE: &str = "FLASHMHA_KERNELS";

/// The numeric columns after `group, dtypes` (the panic message of a malformed row names them);
/// a d_v group's rows have `head_dim_v` after `head_dim`.
const COLUMNS: &str = "head_dim, rows, block_n, num_warps, kv_bytes, smem_bytes";
const COLUMNS_DV: &str = "head_dim, head_dim_v, rows, block_n, num_warps, kv_bytes, smem_bytes";
/// A forward tile group's rows name their K / V shared-memory stages where the others have
/// kv_bytes (every forward row reads K / V of its dtype), then the CTAs per SM its launch
/// bounds ask ptxas to fit.
const COLUMNS_TILE: &str = "head_dim, rows, block_n, num_warps, kv_stages, min_ctas, smem_bytes";

/// What a row computes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Forward,
    Decode,
}

/// One entry family: the row hook of kernels/kernel_table.h that names it, the op, the variant of
/// `flashmha::KernelTarget` its entries run on, the target's part of the entry names, whether
/// its rows carry a `head_dim_v` column (d_v != d_qk; every other row has d_v = d_qk), and
/// whether they are forward tiles beside a head dim's primary row (a `kv_stages` column in
/// place of kv_bytes, the tile in the entry name).
struct Group {
    hook: &'static str,
    op: Op,
    target: &'static str,
    entry_prefix: &'static str,
    dv: bool,
    tile: bool,
}

const GROUPS: [Group; 9] = [
    Group {
        hook: "FLASHMHA_FWD_KERNELS",
        op: Op::Forward,
        target: "Ampere",
        entry_prefix: "",
        dv: false,
        tile: false,
    },
    Group {
        hook: "FLASHMHA_FWD_DV_KERNELS",
        op: Op::Forward,
        target: "Ampere",
        entry_prefix: "",
        dv: true,
        tile: false,
    },
    Group {
        hook: "FLASHMHA_FWD_TILE_KERNELS",
        op: Op::Forward,
        target: "Ampere",
        entry_prefix: "",
        dv: false,
        tile: true,
    },
    Group {
        hook: "FLASHMHA_FWD_KERNELS_SM75",
        op: Op::Forward,
        target: "Turing",
        entry_prefix: "sm75_",
        dv: false,
        tile: false,
    },
    Group {
        hook: "FLASHMHA_FWD_KERNELS_SM90",
        op: Op::Forward,
        target: "Hopper",
        entry_prefix: "sm90_",
        dv: false,
        tile: false,
    },
    Group {
        hook: "FLASHMHA_FWD_DV_KERNELS_SM90",
        op: Op::Forward,
        target: "Hopper",
        entry_prefix: "sm90_",
        dv: true,
        tile: false,
    },
    Group {
        hook: "FLASHMHA_DECODE_KERNELS",
        op: Op::Decode,
        target: "Ampere",
        entry_prefix: "",
        dv: false,
        tile: false,
    },
    Group {
        hook: "FLASHMHA_DECODE_DV_KERNELS",
        op: Op::Decode,
        target: "Ampere",
        entry_prefix: "",
        dv: true,
        tile: false,
    },
    Group {
        hook: "FLASHMHA_DECODE_KERNELS_SM75",
        op: Op::Decode,
        target: "Turing",
        entry_prefix: "sm75_",
        dv: false,
        tile: false,
    },
];

/// One kernel: one row of the table with one dtype (an `f16_bf16` row gives two).
pub struct KernelRow {
    group: &'static Group,
    /// `f16` or `bf16`.
    pub dtype: &'static str,
    /// d_qk: the head dim of q and k.
    pub head_dim: u32,
    /// d_v: the head dim of v and o (`head_dim` except in a d_v group).
    pub head_dim_v: u32,
    /// Query rows per CTA: block_m of the forward, tile_rows of decode.
    pub rows: u32,
    pub block_n: u32,
    pub num_warps: u32,
    /// Bytes per cached K/V element: 2, or 1 for decode over FP8 pages.
    pub kv_bytes: u32,
    /// Forward tile rows: K / V shared-memory stages (0 elsewhere: the entry's own).
    pub kv_stages: u32,
    /// Forward tile rows: CTAs per SM of the launch bounds (0 elsewhere: none asked).
    pub min_ctas: u32,
    pub smem_bytes: u32,
}

impl KernelRow {
    pub fn op(&self) -> Op {
        self.group.op
    }

    /// The variant of `flashmha::KernelTarget` the entry runs on.
    pub fn target(&self) -> &'static str {
        self.group.target
    }

    pub fn entry(&self) -> String {
        let (prefix, dtype) = (self.group.entry_prefix, self.dtype);
        let d = if self.head_dim_v == self.head_dim {
            self.head_dim.to_string()
        } else {
            format!("{}v{}", self.head_dim, self.head_dim_v)
        };
        match self.group.op {
            Op::Forward if self.group.tile => format!(
                "flashmha_fwd_{prefix}{dtype}_d{d}_{}x{}w{}s{}c{}",
                self.rows, self.block_n, self.num_warps, self.kv_stages, self.min_ctas
            ),
            Op::Forward => format!("flashmha_fwd_{prefix}{dtype}_d{d}"),
            Op::Decode => format!(
                "flashmha_decode_{prefix}{dtype}{}_d{d}{}",
                if self.kv_bytes == 1 { "_fp8" } else { "" },
                if self.rows == 32 { "_r32" } else { "" }
            ),
        }
    }
}

/// Every row of the table, in its order (each `f16_bf16` row as its f16 then its bf16 kernel).
/// Panics on a malformed row or one that breaks its group's rules.
pub fn parse(path: &Path) -> Vec<KernelRow> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let header = format!("#define {TABLE}(X)");
    let mut rows = Vec::new();
    let mut in_table = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with(&header) {
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
        let at = format!("{}:{}", path.display(), n + 1);
        let body = body.trim_end_matches('\\').trim().trim_end_matches(')');
        let fields: Vec<&str> = body.split(',').map(str::trim).collect();
        let group = GROUPS.iter().find(|g| g.hook == fields[0]);
        let dtypes: &[&'static str] = match fields.get(1) {
            Some(&"f16") => &["f16"],
            Some(&"f16_bf16") => &["f16", "bf16"],
            _ => &[],
        };
        let (Some(group), false) = (group, dtypes.is_empty()) else {
            panic!("{at}: expected X(<group hook>, f16|f16_bf16, {COLUMNS}), got `{line}`");
        };
        let columns = match (group.dv, group.tile) {
            (true, _) => COLUMNS_DV,
            (_, true) => COLUMNS_TILE,
            _ => COLUMNS,
        };
        if fields.len() != 2 + columns.split(',').count() {
            panic!(
                "{at}: expected X({}, f16|f16_bf16, {columns}), got `{line}`",
                group.hook
            );
        }
        let mut nums: Vec<u32> = fields[2..]
            .iter()
            .enumerate()
            .map(|(i, f)| {
                f.parse()
                    .unwrap_or_else(|_| panic!("{at}: field {} of `{line}` is not a number", i + 3))
            })
            .collect();
        // Every row as (head_dim, head_dim_v, rows, ...): d_v = d_qk outside the d_v groups.
        if !group.dv {
            nums.insert(1, nums[0]);
        }
        // A tile row's kv_stages and min_ctas columns: its K / V are of its dtype (kv_bytes 2).
        let (kv_stages, min_ctas) = if group.tile {
            let stages = nums.remove(5);
            (stages, std::mem::replace(&mut nums[5], 2))
        } else {
            (0, 0)
        };
        for &dtype in dtypes {
            let row = KernelRow {
                group,
                dtype,
                head_dim: nums[0],
                head_dim_v: nums[1],
                rows: nums[2],
                block_n: nums[3],
                num_warps: nums[4],
                kv_bytes: nums[5],
                kv_stages,
                min_ctas,
                smem_bytes: nums[6],
            };
            check_group_rules(&row, &at);
            rows.push(row);
        }
    }
    rows
}

/// The columns a group constrains (the entry files assume them; a violation is a table typo).
fn check_group_rules(r: &KernelRow, at: &str) {
    match r.group.op {
        Op::Forward => {
            assert!(
                r.kv_bytes == 2,
                "{at}: a forward row reads K / V of its dtype: kv_bytes must be 2"
            );
            assert!(
                !r.group.tile || r.kv_stages == 1 || r.kv_stages == 2,
                "{at}: kv_stages must be 1 or 2, got {}",
                r.kv_stages
            );
            assert!(
                !r.group.tile || (1..=4).contains(&r.min_ctas),
                "{at}: min_ctas must be 1 to 4, got {}",
                r.min_ctas
            );
        }
        Op::Decode => {
            assert!(
                r.kv_bytes == 1 || r.kv_bytes == 2,
                "{at}: kv_bytes must be 1 (FP8) or 2, got {}",
                r.kv_bytes
            );
            assert!(
                r.rows == 16 || (r.rows == 32 && r.kv_bytes == 2),
                "{at}: decode rows must be 16, or 32 with kv_bytes 2, got {}",
                r.rows
            );
            assert!(
                r.block_n == 16,
                "{at}: a decode row's block_n is the warp's 16-key block, got {}",
                r.block_n
            );
        }
    }
    assert!(
        r.target() != "Turing" || (r.dtype == "f16" && r.kv_bytes == 2),
        "{at}: Turing rows are f16 with kv_bytes 2 (sm_75 has no bf16 mma)"
    );
}
