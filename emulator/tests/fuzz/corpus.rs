//! The PTX the mutants start from: the emulator's own test modules (the PTX snippets in
//! `emulator/tests/ptx/*.rs`, read at compile time) and the modules the flashmha crate embeds
//! (sm_80, sm_75 and sm_90a kernels and the emulator test kernels, compiled by its build script
//! into `<target>/<profile>/build/flashmha-*/out/`). Big modules are split into one unit per
//! `.entry` (module header, every `.func`, that entry) so a mutant parses in milliseconds.

use std::path::{Path, PathBuf};

/// One seed module: where it came from and its text.
pub struct Unit {
    pub name: String,
    pub ptx: String,
}

/// The emulator test files whose string literals hold PTX.
const TEST_SOURCES: [(&str, &str); 5] = [
    ("alu", include_str!("../ptx/alu.rs")),
    ("parse", include_str!("../ptx/parse.rs")),
    ("tma", include_str!("../ptx/tma.rs")),
    ("hopper", include_str!("../ptx/hopper.rs")),
    ("support", include_str!("../ptx/support.rs")),
];

/// A kernel wrapper for test snippets that are instruction bodies (the tests wrap them in their
/// own `kernel()` helpers): the registers, shared arrays and parameters those bodies use.
fn wrap_body(body: &str) -> String {
    format!(
        ".version 8.0\n.target sm_90a\n.address_size 64\n\
.visible .entry k(.param .u64 out, .param .u64 inp, .param .align 64 .b8 tmap[128], .param .align 64 .b8 tmap2[128])\n{{\n\
\t.reg .b32 %r<64>;\n\t.reg .b64 %rd<32>;\n\t.reg .pred %p<16>;\n\t.reg .f32 %f<32>;\n\
\t.reg .b16 %rs<16>;\n\t.reg .f64 %fd<8>;\n\
\t.shared .align 8 .b64 bar[4];\n\t.shared .align 1024 .b8 tile[8192];\n\
\tld.param.u64 %rd1, [out];\n\tld.param.u64 %rd2, [inp];\n\tmov.u32 %r1, bar;\n\tmov.u32 %r2, tile;\n\
\tmov.u32 %r3, %tid.x;\n\tmov.u64 %rd8, tmap;\n\tcvta.param.u64 %rd9, %rd8;\n\
\tmov.u64 %rd10, tmap2;\n\tcvta.param.u64 %rd11, %rd10;\n{body}\n\tret;\n}}\n"
    )
}

/// The string literals of Rust source `src` (plain ones unescaped, raw ones as written), with
/// the `{{`/`}}` of format strings collapsed.
fn string_literals(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3; // a char literal such as '"'
        } else if b[i] == b'r' && matches!(b.get(i + 1), Some(b'#') | Some(b'"')) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            let start = i + 1 + hashes + 1;
            let close: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            match src.get(start..).and_then(|s| s.find(&close)) {
                Some(end) => {
                    out.push(src[start..start + end].to_string());
                    i = start + end + close.len();
                }
                None => break,
            }
        } else if b[i] == b'"' {
            let mut s = String::new();
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' && j + 1 < b.len() {
                    match b[j + 1] {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'\n' => {
                            // line continuation: skip the newline and leading whitespace
                            j += 2;
                            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                                j += 1;
                            }
                            continue;
                        }
                        c => s.push(c as char),
                    }
                    j += 2;
                } else {
                    let ch = src[j..].chars().next().unwrap_or(' ');
                    s.push(ch);
                    j += ch.len_utf8();
                }
            }
            out.push(s);
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out.into_iter()
        .map(|s| s.replace("{{", "{").replace("}}", "}"))
        .collect()
}

/// The PTX snippets of the emulator's test modules: whole modules as they are, instruction
/// bodies wrapped by [`wrap_body`].
fn test_units() -> Vec<Unit> {
    let mut units = Vec::new();
    for (file, src) in TEST_SOURCES {
        for (k, lit) in string_literals(src).into_iter().enumerate() {
            if !lit.contains(';') || !(lit.contains('%') || lit.contains(".entry")) {
                continue;
            }
            let ptx = if lit.contains(".entry") {
                lit
            } else {
                wrap_body(&lit)
            };
            units.push(Unit {
                name: format!("tests/ptx/{file}.rs literal {k}"),
                ptx,
            });
        }
    }
    units
}

fn is_func_start(t: &str) -> bool {
    let t = t
        .trim_start_matches(".visible ")
        .trim_start_matches(".weak ")
        .trim_start_matches(".extern ");
    t.starts_with(".entry") || t.starts_with(".func")
}

/// Splits a module into one unit per `.entry`: header lines (before the first function), every
/// `.func` (declarations and definitions), then the entry. Functions end at a `}` in column 0.
pub fn split_module(name: &str, ptx: &str) -> Vec<Unit> {
    let lines: Vec<&str> = ptx.lines().collect();
    let mut header = Vec::new();
    let mut funcs = Vec::new();
    let mut entries: Vec<(String, Vec<&str>)> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        if !is_func_start(t) {
            if entries.is_empty() && funcs.is_empty() {
                header.push(lines[i]);
            }
            i += 1;
            continue;
        }
        let start = i;
        // A declaration ends with `;` before any `{`.
        while i < lines.len() && lines[i] != "{" && !lines[i].trim_end().ends_with(';') {
            i += 1;
        }
        if i < lines.len() && lines[i] != "{" {
            funcs.extend_from_slice(&lines[start..=i]);
            i += 1;
            continue;
        }
        while i < lines.len() && lines[i] != "}" {
            i += 1;
        }
        let end = i.min(lines.len() - 1);
        let body = &lines[start..=end];
        if t.contains(".entry") {
            let ename = t
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .trim_end_matches('(');
            entries.push((ename.to_string(), body.to_vec()));
        } else {
            funcs.extend_from_slice(body);
        }
        i += 1;
    }
    entries
        .into_iter()
        .map(|(e, body)| {
            let mut text = header.join("\n");
            text.push('\n');
            text.push_str(&funcs.join("\n"));
            text.push('\n');
            text.push_str(&body.join("\n"));
            text.push('\n');
            Unit {
                name: format!("{name} entry {e}"),
                ptx: text,
            }
        })
        .collect()
}

/// The output directory of the newest flashmha build script run in this target directory
/// (`FLASHMHA_FUZZ_PTX_DIR` overrides it).
fn flashmha_out_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FLASHMHA_FUZZ_PTX_DIR") {
        return Some(PathBuf::from(d));
    }
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for profile in std::fs::read_dir(target).ok()?.flatten() {
        let Ok(builds) = std::fs::read_dir(profile.path().join("build")) else {
            continue;
        };
        for b in builds.flatten() {
            let name = b.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with("flashmha-") || name.starts_with("flashmha-capi") {
                continue;
            }
            let out = b.path().join("out");
            let Ok(meta) = std::fs::metadata(out.join("kernels_generated.rs")) else {
                continue;
            };
            let t = meta.modified().ok()?;
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, out));
            }
        }
    }
    best.map(|(_, p)| p)
}

fn ptx_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "ptx"));
    v.sort();
    v
}

/// Every seed unit, and whether the flashmha kernels were found.
pub fn load() -> (Vec<Unit>, Option<PathBuf>) {
    let mut units = test_units();
    let out = flashmha_out_dir();
    if let Some(out) = &out {
        for sub in ["kernels", "kernels_sm75", "kernels_sm90", "emu_tests"] {
            for f in ptx_files(&out.join(sub)) {
                let Ok(text) = std::fs::read_to_string(&f) else {
                    continue;
                };
                let name = format!("{sub}/{}", f.file_name().unwrap().to_string_lossy());
                units.extend(split_module(&name, &text));
            }
        }
    }
    (units, out)
}
