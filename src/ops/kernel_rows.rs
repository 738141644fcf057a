//! What the hand-kept kernel lists share (the forward's rows in src/common/build_info.rs, the
//! backward's in src/ops/backward/kernels.rs, the JVP's in src/ops/jvp/kernels.rs): a row
//! compiled for head dim `d` serves every multiple of 8 up to `d` (extra columns predicated off
//! in the kernel), so one lookup picks the narrowest row that covers a head dim and one lists
//! the compiled head dims an error names. Tests also share one reader of kernels/kernel_table.h.

use crate::common::build_info::FwdKernelRow;

/// A compiled kernel row with a head-dim bucket.
pub trait HeadDimRow {
    /// The compiled head dim: the widest the row serves.
    fn head_dim(&self) -> u32;
}

impl HeadDimRow for FwdKernelRow {
    fn head_dim(&self) -> u32 {
        self.head_dim
    }
}

/// The narrowest of `rows` (already filtered to one dtype and target) that serves `head_dim`:
/// none unless `head_dim` is a positive multiple of 8 (whole 16-byte chunks of 2-byte
/// elements) no wider than the widest row.
pub fn narrowest_serving<'t, R: HeadDimRow + 't>(
    rows: impl Iterator<Item = &'t R>,
    head_dim: usize,
) -> Option<&'t R> {
    if head_dim == 0 || !head_dim.is_multiple_of(8) {
        return None;
    }
    rows.filter(|r| r.head_dim() as usize >= head_dim)
        .min_by_key(|r| r.head_dim())
}

/// The compiled head dims of `rows`, sorted and distinct.
pub fn distinct_head_dims<'t, R: HeadDimRow + 't>(rows: impl Iterator<Item = &'t R>) -> Vec<u32> {
    let mut dims: Vec<u32> = rows.map(|r| r.head_dim()).collect();
    dims.sort_unstable();
    dims.dedup();
    dims
}

/// The rows `X(<kernel_macro>, dtypes, n0, n1, ...)` of the `#define <define>(X)` table in
/// kernels/kernel_table.h, one per dtype they compile (`f16` or `f16_bf16`), as (dtype name,
/// the numbers). Panics on a malformed row: it is a test helper.
#[cfg(test)]
pub fn kernel_table_rows(define: &str, kernel_macro: &str) -> Vec<(&'static str, Vec<u32>)> {
    let text = include_str!("../../kernels/kernel_table.h");
    let mut lines = text.lines().map(str::trim);
    let head = format!("#define {define}(X)");
    assert!(
        lines.by_ref().any(|l| l.starts_with(&head)),
        "no `{head}` in kernels/kernel_table.h"
    );
    let mut rows = Vec::new();
    for line in lines {
        let Some(body) = line.strip_prefix("X(") else {
            break;
        };
        let body = body.trim_end_matches('\\').trim().trim_end_matches(')');
        let f: Vec<&str> = body.split(',').map(str::trim).collect();
        assert!(f.len() > 2, "malformed row `{line}`");
        assert_eq!(f[0], kernel_macro, "row `{line}`");
        let n: Vec<u32> = f[2..].iter().map(|x| x.parse().unwrap()).collect();
        let dtypes: &[&'static str] = match f[1] {
            "f16" => &["f16"],
            "f16_bf16" => &["f16", "bf16"],
            other => panic!("dtypes `{other}`"),
        };
        rows.extend(dtypes.iter().map(|&d| (d, n.clone())));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(u32);
    impl HeadDimRow for Row {
        fn head_dim(&self) -> u32 {
            self.0
        }
    }

    #[test]
    fn picks_the_narrowest_row_that_serves() {
        let rows = [Row(128), Row(32), Row(64), Row(64)];
        let pick = |d| narrowest_serving(rows.iter(), d).map(|r| r.0);
        assert_eq!(pick(8), Some(32));
        assert_eq!(pick(40), Some(64));
        assert_eq!(pick(128), Some(128));
        for bad in [0, 60, 136, usize::MAX] {
            assert_eq!(pick(bad), None, "{bad}");
        }
        assert_eq!(distinct_head_dims(rows.iter()), vec![32, 64, 128]);
    }
}
