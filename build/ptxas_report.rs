//! Parses `ptxas -v` output into per-entry resource figures (registers, shared memory, spills).

/// What ptxas reports for one entry on one architecture.
#[derive(Default, Clone)]
pub struct EntryStats {
    pub entry: String,
    pub arch: String,
    pub registers: u32,
    pub barriers: u32,
    pub static_smem_bytes: u32,
    pub stack_frame_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

/// ptxas prints, per entry:
/// `Compiling entry function 'NAME' for 'sm_80'`, then
/// `N bytes stack frame, N bytes spill stores, N bytes spill loads`, then
/// `Used N registers, used N barriers, N bytes smem, N bytes cmem[0]`.
pub fn parse(text: &str) -> Vec<EntryStats> {
    let mut out: Vec<EntryStats> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let entry = parts.next().unwrap_or_default().to_string();
            let arch = parts.nth(1).unwrap_or_default().to_string();
            out.push(EntryStats {
                entry,
                arch,
                ..Default::default()
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if line.contains("bytes stack frame") {
            cur.stack_frame_bytes = number_before(line, "bytes stack frame");
            cur.spill_store_bytes = number_before(line, "bytes spill stores");
            cur.spill_load_bytes = number_before(line, "bytes spill loads");
        } else if line.contains("Used ") && line.contains("registers") {
            cur.registers = number_before(line, "registers");
            cur.barriers = number_before(line, "barriers");
            cur.static_smem_bytes = number_before(line, "bytes smem");
        }
    }
    out
}

/// The integer immediately before `label` in `line`, or 0 when the label is absent.
fn number_before(line: &str, label: &str) -> u32 {
    let Some(pos) = line.find(label) else {
        return 0;
    };
    line[..pos]
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
