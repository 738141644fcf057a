//! Tokeniser for PTX text. Produces tokens with their 1-based line number; comments (`//`, `/* */`)
//! are dropped here so the parser never sees them.

use super::error::EmuError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok<'a> {
    /// Identifiers, directives (`.reg`), opcodes with their qualifiers (`ld.param.u64`),
    /// registers (`%r1`, `%tid.x`) and labels (`$L__BB0_2`).
    Ident(&'a str),
    /// An integer literal (decimal, hex `0x..`, octal `0..`, binary `0b..`, optional `U` suffix).
    Int(u64),
    /// A single-precision float literal given as `0fXXXXXXXX` (raw bits) or decimal.
    F32(u32),
    /// A double-precision float literal given as `0dXXXXXXXXXXXXXXXX` (raw bits) or decimal.
    F64(u64),
    Str(&'a str),
    Punct(char),
}

#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    pub tok: Tok<'a>,
    pub line: u32,
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'%' || c == b'.'
}

fn ident_cont(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'.'
}

/// Splits PTX source into tokens.
pub fn tokenize(src: &str) -> Result<Vec<Token<'_>>, EmuError> {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(src.len() / 4);
    let mut i = 0usize;
    let mut line = 1u32;
    let line_text = |line: u32| src.lines().nth(line as usize - 1).unwrap_or("").to_string();
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Str(&src[start..i.min(b.len())]),
                line,
            });
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                // Decimal exponents like 1.5e-3 carry a sign inside the literal.
                if (b[i] == b'e' || b[i] == b'E')
                    && matches!(b.get(i + 1), Some(b'-') | Some(b'+'))
                    && !src[start..i].starts_with("0x")
                    && !src[start..i].starts_with("0f")
                    && !src[start..i].starts_with("0d")
                {
                    i += 1;
                }
                i += 1;
            }
            let text = &src[start..i];
            let tok = parse_number(text).ok_or_else(|| {
                EmuError::parse(line, &line_text(line), format!("bad number `{text}`"))
            })?;
            out.push(Token { tok, line });
            continue;
        }
        if ident_start(c) {
            let start = i;
            i += 1;
            loop {
                if i < b.len() && ident_cont(b[i]) {
                    i += 1;
                } else if i + 1 < b.len() && b[i] == b':' && b[i + 1] == b':' {
                    // qualifiers such as `.shared::cta` and `.L2::128B` are one token
                    i += 2;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Ident(&src[start..i]),
                line,
            });
            continue;
        }
        if b",;:{}[]()<>+-|!@=*".contains(&c) {
            out.push(Token {
                tok: Tok::Punct(c as char),
                line,
            });
            i += 1;
            continue;
        }
        return Err(EmuError::parse(
            line,
            &line_text(line),
            format!("unexpected character `{}`", c as char),
        ));
    }
    Ok(out)
}

fn parse_number(t: &str) -> Option<Tok<'static>> {
    let lower = t.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("0f") {
        if h.len() == 8 {
            return u32::from_str_radix(h, 16).ok().map(Tok::F32);
        }
    }
    if let Some(h) = lower.strip_prefix("0d") {
        if h.len() == 16 {
            return u64::from_str_radix(h, 16).ok().map(Tok::F64);
        }
    }
    let s = lower.strip_suffix('u').unwrap_or(&lower);
    if let Some(h) = s.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok().map(Tok::Int);
    }
    if let Some(h) = s.strip_prefix("0b") {
        return u64::from_str_radix(h, 2).ok().map(Tok::Int);
    }
    if s.contains('.') || s.contains('e') {
        return s.parse::<f64>().ok().map(|v| Tok::F64(v.to_bits()));
    }
    if s.len() > 1 && s.starts_with('0') {
        return u64::from_str_radix(&s[1..], 8).ok().map(Tok::Int);
    }
    s.parse::<u64>().ok().map(Tok::Int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_registers_qualifiers_and_floats() {
        let t = tokenize("@!%p1 cp.async.cg.shared::cta.global [%r1+16], 0f3F800000; // c\n$L_1:")
            .unwrap();
        let toks: Vec<_> = t.iter().map(|t| t.tok).collect();
        assert_eq!(toks[0], Tok::Punct('@'));
        assert_eq!(toks[1], Tok::Punct('!'));
        assert_eq!(toks[2], Tok::Ident("%p1"));
        assert_eq!(toks[3], Tok::Ident("cp.async.cg.shared::cta.global"));
        assert_eq!(toks[7], Tok::Int(16));
        assert_eq!(toks[10], Tok::F32(0x3F80_0000));
        assert_eq!(toks[12], Tok::Ident("$L_1"));
        assert_eq!(t[12].line, 2);
    }

    #[test]
    fn lexes_integer_forms() {
        let t = tokenize("0x1F 017 42U 0d3FF0000000000000 1.5").unwrap();
        let toks: Vec<_> = t.iter().map(|t| t.tok).collect();
        assert_eq!(
            toks,
            vec![
                Tok::Int(31),
                Tok::Int(15),
                Tok::Int(42),
                Tok::F64(1f64.to_bits()),
                Tok::F64(1.5f64.to_bits())
            ]
        );
    }

    #[test]
    fn bad_character_names_line() {
        let e = tokenize("mov.u32 %r1, 1;\nmov.u32 %r2, #;").unwrap_err();
        match e {
            EmuError::Parse { line, text, .. } => {
                assert_eq!(line, 2);
                assert!(text.contains('#'));
            }
            other => panic!("{other:?}"),
        }
    }
}
