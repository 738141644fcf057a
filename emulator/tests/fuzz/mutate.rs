//! Text mutations of PTX: numbers replaced by boundary values, tokens by other tokens of the
//! module or by type and state-space qualifiers, lines deleted, duplicated, swapped or taken
//! from another module, operands reordered, punctuation inserted or removed, truncation.

use rand::rngs::StdRng;
use rand::Rng;

/// Values at the edges of every width the emulator computes with.
const INTERESTING: [u64; 30] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    127,
    128,
    255,
    256,
    1024,
    4096,
    65535,
    65536,
    (1 << 31) - 1,
    1 << 31,
    0xffff_fff0,
    (1 << 32) - 1,
    1 << 32,
    1 << 40,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
];

/// Qualifiers a token may be replaced with (types, vector widths, state spaces, shapes).
const QUALIFIERS: [&str; 34] = [
    ".b8",
    ".b16",
    ".b32",
    ".b64",
    ".b128",
    ".u8",
    ".u16",
    ".u32",
    ".u64",
    ".s8",
    ".s16",
    ".s32",
    ".s64",
    ".f16",
    ".f16x2",
    ".bf16",
    ".bf16x2",
    ".f32",
    ".f64",
    ".pred",
    ".v2",
    ".v4",
    ".v8",
    ".shared",
    ".global",
    ".param",
    ".local",
    ".const",
    ".shared::cta",
    ".shared::cluster",
    ".x4",
    ".trans",
    ".m16n8k16",
    ".aligned",
];

const PUNCT: [&str; 14] = [
    ";", ",", "{", "}", "[", "]", "<", ">", "(", ")", "+", "-", "|", "!",
];

/// Byte ranges of the tokens (identifier-like runs) of `line`.
fn tokens(line: &str) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        let word = c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%' | '$' | ':');
        match (word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                v.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        v.push((s, line.len()));
    }
    v
}

fn interesting(rng: &mut StdRng) -> String {
    let v = if rng.random_bool(0.85) {
        let base = INTERESTING[rng.random_range(0..INTERESTING.len())];
        match rng.random_range(0..4) {
            0 => base.wrapping_sub(1),
            1 => base.wrapping_add(1),
            _ => base,
        }
    } else {
        rng.random::<u64>() >> rng.random_range(0..64)
    };
    match rng.random_range(0..4) {
        0 => format!("{v:#x}"),
        1 => format!("-{v}"),
        _ => v.to_string(),
    }
}

/// A random token of `lines` (any line), for cross-over within a module.
fn any_token(rng: &mut StdRng, lines: &[String]) -> Option<String> {
    for _ in 0..8 {
        let l = &lines[rng.random_range(0..lines.len())];
        let t = tokens(l);
        if !t.is_empty() {
            let (a, b) = t[rng.random_range(0..t.len())];
            return Some(l[a..b].to_string());
        }
    }
    None
}

/// Applies 1..=8 mutations to `ptx`; `donor` supplies lines from another module. Returns the
/// mutant and what was done (for the failure report).
pub fn mutate(rng: &mut StdRng, ptx: &str, donor: &str) -> (String, Vec<String>) {
    let mut lines: Vec<String> = ptx.lines().map(str::to_string).collect();
    let donor: Vec<&str> = donor.lines().collect();
    let mut log = Vec::new();
    // 1 mutation half the time, 2 a quarter, ... up to 8.
    let n = 1 + rng.random::<u32>().leading_zeros().min(7) as usize;
    for _ in 0..n {
        if lines.is_empty() {
            break;
        }
        // Mostly inside function bodies, where the instructions are.
        let i = rng.random_range(0..lines.len());
        let toks = tokens(&lines[i]);
        match rng.random_range(0..11) {
            0 | 1 => {
                // A number replaced by a boundary value.
                let nums: Vec<_> = toks
                    .iter()
                    .filter(|(a, _)| lines[i][*a..].starts_with(|c: char| c.is_ascii_digit()))
                    .copied()
                    .collect();
                let (a, b) = match nums.len() {
                    0 => continue,
                    k => nums[rng.random_range(0..k)],
                };
                let v = interesting(rng);
                log.push(format!(
                    "line {}: number `{}` -> `{v}`",
                    i + 1,
                    &lines[i][a..b]
                ));
                lines[i].replace_range(a..b, &v);
            }
            2 | 3 => {
                // A token replaced by another token of the module or a qualifier.
                if toks.is_empty() {
                    continue;
                }
                let (a, b) = toks[rng.random_range(0..toks.len())];
                let with = if rng.random_bool(0.5) {
                    QUALIFIERS[rng.random_range(0..QUALIFIERS.len())].to_string()
                } else {
                    match any_token(rng, &lines) {
                        Some(t) => t,
                        None => continue,
                    }
                };
                let old = &lines[i][a..b];
                // Qualifier swap keeps the opcode: replace one dot-part of it.
                let new = if with.starts_with('.') && old.contains('.') && rng.random_bool(0.5) {
                    let parts: Vec<&str> = old.split('.').collect();
                    let k = rng.random_range(0..parts.len());
                    let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
                    p[k] = with[1..].to_string();
                    p.join(".")
                } else {
                    with
                };
                log.push(format!("line {}: token `{old}` -> `{new}`", i + 1));
                lines[i].replace_range(a..b, &new);
            }
            4 => {
                log.push(format!("line {}: deleted `{}`", i + 1, lines[i]));
                lines.remove(i);
            }
            5 => {
                log.push(format!("line {}: duplicated", i + 1));
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            6 => {
                let j = rng.random_range(0..lines.len());
                log.push(format!("lines {} and {} swapped", i + 1, j + 1));
                lines.swap(i, j);
            }
            7 => {
                if donor.is_empty() {
                    continue;
                }
                let l = donor[rng.random_range(0..donor.len())].to_string();
                log.push(format!("line {}: inserted `{l}`", i + 1));
                lines.insert(i, l);
            }
            8 => {
                // Operands reordered.
                let l = &lines[i];
                let Some(sp) = l.trim_start().find([' ', '\t']) else {
                    continue;
                };
                let lead = l.len() - l.trim_start().len() + sp;
                let body = l[lead..].trim_end_matches(';');
                let mut ops: Vec<&str> = body.split(',').collect();
                if ops.len() < 2 {
                    continue;
                }
                let (x, y) = (
                    rng.random_range(0..ops.len()),
                    rng.random_range(0..ops.len()),
                );
                ops.swap(x, y);
                if rng.random_bool(0.3) {
                    ops.remove(rng.random_range(0..ops.len()));
                }
                let new = format!("{}{};", &l[..lead], ops.join(","));
                log.push(format!(
                    "line {}: operands `{}` -> `{new}`",
                    i + 1,
                    lines[i]
                ));
                lines[i] = new;
            }
            9 => {
                // Punctuation inserted or removed at a character boundary.
                let l = &mut lines[i];
                let cuts: Vec<usize> = l.char_indices().map(|(k, _)| k).collect();
                let at = if cuts.is_empty() {
                    0
                } else {
                    cuts[rng.random_range(0..cuts.len())]
                };
                if rng.random_bool(0.5) && at < l.len() {
                    log.push(format!("line {}: char {at} removed", i + 1));
                    l.remove(at);
                } else {
                    let p = PUNCT[rng.random_range(0..PUNCT.len())];
                    log.push(format!("line {}: `{p}` inserted at {at}", i + 1));
                    l.insert_str(at, p);
                }
            }
            _ => {
                if rng.random_bool(0.3) {
                    log.push(format!("truncated after line {}", i + 1));
                    lines.truncate(i + 1);
                } else {
                    // A register range or array dimension set to a boundary value.
                    let (open, close) = if rng.random_bool(0.5) {
                        ('<', '>')
                    } else {
                        ('[', ']')
                    };
                    let Some(a) = lines[i].find(open) else {
                        continue;
                    };
                    let Some(b) = lines[i][a..].find(close) else {
                        continue;
                    };
                    let v = interesting(rng);
                    log.push(format!("line {}: `{open}..{close}` -> {v}", i + 1));
                    lines[i].replace_range(a + 1..a + b, &v);
                }
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    (out, log)
}
