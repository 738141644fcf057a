//! Reads an X-macro kernel table from a header (`kernel_table.h`, `decode_table.h`): the rows
//! `X(f16|bf16, n1, n2, ...)` that follow `#define <MACRO>(X)`, up to the first line that is
//! not a row. CUDA expands the same macro, so both languages read one list.

use std::path::Path;

/// One row: its dtype name and its numeric fields, in order.
pub struct XRow {
    pub dtype: String,
    pub nums: Vec<u32>,
}

/// The rows of `#define <macro_name>(X)` in `path`; each must have `numbers` numeric fields after
/// the dtype (`shape` describes them in the panic message of a malformed row).
pub fn parse(path: &Path, macro_name: &str, numbers: usize, shape: &str) -> Vec<XRow> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let header = format!("#define {macro_name}(X)");
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
        let body = body.trim_end_matches('\\').trim().trim_end_matches(')');
        let fields: Vec<&str> = body.split(',').map(str::trim).collect();
        let at = || format!("{}:{}", path.display(), n + 1);
        assert!(
            fields.len() == numbers + 1 && (fields[0] == "f16" || fields[0] == "bf16"),
            "{}: expected X({shape}), got `{line}`",
            at()
        );
        let nums = fields[1..]
            .iter()
            .enumerate()
            .map(|(i, f)| {
                f.parse().unwrap_or_else(|_| {
                    panic!("{}: field {} of `{line}` is not a number", at(), i + 1)
                })
            })
            .collect();
        rows.push(XRow {
            dtype: fields[0].to_string(),
            nums,
        });
    }
    rows
}
