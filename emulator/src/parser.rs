//! Recursive-descent parser from PTX tokens to the syntax tree in `ast.rs`. It knows PTX's
//! directives and statement shapes but not the meaning of opcodes; that is the job of `lower/`.
//! Debug directives (`.loc`, `.file`, `.section`) and pragmas are skipped.

use super::ast::*;
use super::error::EmuError;
use super::lexer::{tokenize, Tok, Token};
use super::types::{Space, Ty};

/// Most registers one parameterized declaration (`.reg .b32 %r<N>;`) may declare. The PTX ISA
/// sets no limit; ptxas takes N as a 32-bit constant ("Constant overflow" from 2^32) and
/// allocates every declared register: measured with the ptxas of CUDA 13.5 this project
/// provisions, N = 2^31 assembles (26 s, 16.8 GB), 3 * 2^30 and 2^32 - 1 fail with "Memory
/// allocation failure". So 2^31 is the most ptxas accepts; the lowering names only the
/// registers a program uses, so accepting that many costs nothing.
pub const MAX_DECLARED_REGS: u64 = 1 << 31;

/// Deepest nesting of bracketed operand lists: PTX needs two (`[map, {c0, c1}]`); the parser
/// recurses per level, so unbounded nesting (`{{{{...`) would overflow the stack (an abort).
const MAX_OPERAND_NESTING: u32 = 4;

/// Deepest nesting of `{ }` blocks in a function body (nvcc nests inline assembly and call
/// sequences two or three deep). Every register lookup walks the open scopes, so unbounded
/// nesting would make lowering quadratic in the program's size.
const MAX_BLOCK_NESTING: u32 = 64;

struct Parser<'a> {
    toks: Vec<Token<'a>>,
    pos: usize,
    src: &'a str,
    /// Bracketed operand lists being parsed (see [`MAX_OPERAND_NESTING`]).
    nesting: u32,
}

/// Parses PTX text into a module syntax tree.
pub fn parse(src: &str) -> Result<Module, EmuError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        src,
        nesting: 0,
    };
    p.module()
}

impl<'a> Parser<'a> {
    fn line_text(&self, line: u32) -> String {
        self.src
            .lines()
            .nth(line.saturating_sub(1) as usize)
            .unwrap_or("")
            .to_string()
    }

    fn cur_line(&self) -> u32 {
        self.toks
            .get(self.pos)
            .or_else(|| self.toks.last())
            .map(|t| t.line)
            .unwrap_or(1)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, EmuError> {
        let line = self.cur_line();
        Err(EmuError::parse(line, &self.line_text(line), msg))
    }

    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).map(|t| t.tok)
    }

    fn peek_at(&self, k: usize) -> Option<Tok<'a>> {
        self.toks.get(self.pos + k).map(|t| t.tok)
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(Tok::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), EmuError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`"))
        }
    }

    fn ident(&mut self) -> Result<&'a str, EmuError> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => self.err("expected identifier"),
        }
    }

    fn int(&mut self) -> Result<u64, EmuError> {
        match self.peek() {
            Some(Tok::Int(v)) => {
                self.pos += 1;
                Ok(v)
            }
            _ => self.err("expected integer"),
        }
    }

    /// Skips the rest of the current source line (for `.loc`-style directives without `;`).
    fn skip_line(&mut self, line: u32) {
        while let Some(t) = self.toks.get(self.pos) {
            if t.line != line {
                break;
            }
            self.pos += 1;
        }
    }

    fn skip_to_semicolon(&mut self) {
        while let Some(t) = self.next() {
            if t == Tok::Punct(';') {
                break;
            }
        }
    }

    fn skip_braced(&mut self) -> Result<(), EmuError> {
        self.expect_punct('{')?;
        let mut depth = 1;
        while depth > 0 {
            match self.next() {
                Some(Tok::Punct('{')) => depth += 1,
                Some(Tok::Punct('}')) => depth -= 1,
                None => return self.err("unterminated `{`"),
                _ => {}
            }
        }
        Ok(())
    }

    fn module(&mut self) -> Result<Module, EmuError> {
        let mut m = Module {
            address_size: 64,
            ..Default::default()
        };
        while let Some(t) = self.peek() {
            let line = self.cur_line();
            match t {
                Tok::Ident(".version") => {
                    self.pos += 1;
                    m.version = match self.next() {
                        Some(Tok::F64(b)) => format!("{}", f64::from_bits(b)),
                        Some(Tok::Int(v)) => v.to_string(),
                        _ => return self.err("bad .version"),
                    };
                }
                Tok::Ident(".target") => {
                    self.pos += 1;
                    let mut parts = vec![self.ident()?.to_string()];
                    while self.eat_punct(',') {
                        parts.push(self.ident()?.to_string());
                    }
                    m.target = parts.join(",");
                }
                Tok::Ident(".address_size") => {
                    self.pos += 1;
                    m.address_size = self.int()? as u32;
                }
                Tok::Ident(".file") | Tok::Ident(".loc") => self.skip_line(line),
                Tok::Ident(".section") => {
                    self.pos += 1;
                    self.ident()?;
                    self.skip_braced()?;
                }
                Tok::Ident(".pragma") => self.skip_to_semicolon(),
                Tok::Ident(".visible")
                | Tok::Ident(".extern")
                | Tok::Ident(".weak")
                | Tok::Ident(".common") => {
                    let is_extern = t == Tok::Ident(".extern");
                    self.pos += 1;
                    self.top_decl(&mut m, is_extern)?;
                }
                Tok::Ident(_) => self.top_decl(&mut m, false)?,
                _ => return self.err("unexpected token at module scope"),
            }
        }
        Ok(m)
    }

    fn top_decl(&mut self, m: &mut Module, is_extern: bool) -> Result<(), EmuError> {
        match self.peek() {
            Some(Tok::Ident(".entry")) => {
                self.pos += 1;
                let f = self.func(true)?;
                m.funcs.push(f);
            }
            Some(Tok::Ident(".func")) => {
                self.pos += 1;
                let f = self.func(false)?;
                m.funcs.push(f);
            }
            Some(Tok::Ident(".global"))
            | Some(Tok::Ident(".shared"))
            | Some(Tok::Ident(".const")) => {
                let mut v = self.var_decl()?;
                v.is_extern = is_extern;
                m.vars.push(v);
                self.expect_punct(';')?;
            }
            _ => return self.err("expected .entry, .func or a variable declaration"),
        }
        Ok(())
    }

    fn param_list(&mut self) -> Result<Vec<VarDecl>, EmuError> {
        self.expect_punct('(')?;
        let mut ps = Vec::new();
        if self.eat_punct(')') {
            return Ok(ps);
        }
        loop {
            ps.push(self.var_decl()?);
            if self.eat_punct(')') {
                break;
            }
            self.expect_punct(',')?;
        }
        Ok(ps)
    }

    fn func(&mut self, is_entry: bool) -> Result<Func, EmuError> {
        let line = self.cur_line();
        let mut ret_params = Vec::new();
        if self.is_punct('(') {
            ret_params = self.param_list()?;
        }
        let name = self.ident()?.to_string();
        let params = if self.is_punct('(') {
            self.param_list()?
        } else {
            Vec::new()
        };
        // Performance directives (.maxntid 128, 1, 1 / .reqntid / .minnctapersm / .noreturn ...).
        while let Some(t) = self.peek() {
            match t {
                Tok::Punct('{') | Tok::Punct(';') => break,
                _ => self.pos += 1,
            }
        }
        if self.eat_punct(';') {
            return Ok(Func {
                name,
                is_entry,
                params,
                ret_params,
                body: None,
                line,
            });
        }
        self.expect_punct('{')?;
        let mut body = Vec::new();
        let mut depth = 1;
        loop {
            let line = self.cur_line();
            match self.peek() {
                None => return self.err("unterminated function body"),
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    body.push(Stmt::Close);
                }
                Some(Tok::Punct('{')) => {
                    if depth >= MAX_BLOCK_NESTING {
                        return self.err("blocks nested too deeply");
                    }
                    self.pos += 1;
                    depth += 1;
                    body.push(Stmt::Open);
                }
                Some(Tok::Ident(".reg")) => {
                    self.pos += 1;
                    self.reg_decls(&mut body)?;
                }
                Some(Tok::Ident(".local"))
                | Some(Tok::Ident(".shared"))
                | Some(Tok::Ident(".const"))
                | Some(Tok::Ident(".global"))
                | Some(Tok::Ident(".param")) => {
                    let v = self.var_decl()?;
                    self.expect_punct(';')?;
                    body.push(Stmt::Var(v));
                }
                Some(Tok::Ident(".loc")) | Some(Tok::Ident(".file")) => self.skip_line(line),
                Some(Tok::Ident(".pragma")) => self.skip_to_semicolon(),
                Some(Tok::Ident(s)) if s.starts_with('.') => {
                    return self.err(format!("unknown directive `{s}` in function body"));
                }
                Some(Tok::Ident(s)) if self.peek_at(1) == Some(Tok::Punct(':')) => {
                    self.pos += 2;
                    body.push(Stmt::Label(s.to_string(), line));
                }
                Some(_) => body.push(Stmt::Instr(self.instr()?)),
            }
        }
        Ok(Func {
            name,
            is_entry,
            params,
            ret_params,
            body: Some(body),
            line,
        })
    }

    fn reg_decls(&mut self, body: &mut Vec<Stmt>) -> Result<(), EmuError> {
        let line = self.cur_line();
        let mut tyname = self.ident()?;
        if tyname.starts_with(".v") {
            return self.err("vector register declarations are not supported");
        }
        if tyname == ".align" {
            self.int()?;
            tyname = self.ident()?;
        }
        let ty = match tyname.strip_prefix('.').and_then(Ty::parse) {
            Some(t) => t,
            None => return self.err(format!("unknown register type `{tyname}`")),
        };
        loop {
            let name = self.ident()?.to_string();
            let mut count = None;
            if self.eat_punct('<') {
                let n = self.int()?;
                if n > MAX_DECLARED_REGS {
                    return self.err(format!(
                        "{n} registers in one declaration; ptxas accepts at most 2^31"
                    ));
                }
                count = Some(n as u32);
                self.expect_punct('>')?;
            }
            body.push(Stmt::Reg(RegDecl {
                ty,
                name,
                count,
                line,
            }));
            if self.eat_punct(';') {
                break;
            }
            self.expect_punct(',')?;
        }
        Ok(())
    }

    /// `.space [.align N] [.vN] .type name[dims] [= init]` (no trailing `;`).
    fn var_decl(&mut self) -> Result<VarDecl, EmuError> {
        let line = self.cur_line();
        let sp = self.ident()?;
        let space = match sp.strip_prefix('.').and_then(Space::parse) {
            Some(s) => s,
            None => return self.err(format!("unknown state space `{sp}`")),
        };
        let mut align = 0;
        let mut vec = 1;
        let mut ty = None;
        while ty.is_none() {
            let q = self.ident()?;
            match q {
                ".align" => align = self.alignment()?,
                ".v2" => vec = 2,
                ".v4" => vec = 4,
                ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
                _ => match q.strip_prefix('.').and_then(Ty::parse) {
                    Some(t) => ty = Some(t),
                    None => {
                        // `.param .u64 .ptr .global .align 8 p` puts qualifiers after the type.
                        return self.err(format!("unknown qualifier `{q}` in declaration"));
                    }
                },
            }
        }
        // Qualifiers may follow the type for pointer params.
        while let Some(Tok::Ident(q)) = self.peek() {
            if q == ".ptr" || q == ".global" || q == ".shared" || q == ".const" || q == ".local" {
                self.pos += 1;
            } else if q == ".align" {
                self.pos += 1;
                align = self.alignment()?;
            } else {
                break;
            }
        }
        let name = self.ident()?.to_string();
        let mut dims = Vec::new();
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                dims.push(None);
            } else {
                dims.push(Some(self.int()?));
                self.expect_punct(']')?;
            }
        }
        // The size in bytes must be a number (the layout and the allocations check it against
        // their limits): a product of dimensions past 2^64 is refused here.
        let elems = dims
            .iter()
            .try_fold(ty.map_or(1, |t| t.bytes() as u64) * vec as u64, |acc, d| {
                acc.checked_mul(d.unwrap_or(0))
            });
        if elems.is_none() {
            return self.err(format!("the size of `{name}` overflows 64 bits"));
        }
        let mut init = Vec::new();
        if self.eat_punct('=') {
            let braced = self.eat_punct('{');
            loop {
                let neg = self.eat_punct('-');
                match self.next() {
                    Some(Tok::Int(v)) => {
                        init.push(Init::Int(if neg { v.wrapping_neg() } else { v }))
                    }
                    Some(Tok::F32(b)) => {
                        init.push(Init::F32(if neg { b ^ 0x8000_0000 } else { b }))
                    }
                    Some(Tok::F64(b)) => init.push(Init::F64(if neg { b ^ (1 << 63) } else { b })),
                    _ => return self.err("unsupported initializer"),
                }
                if !braced || !self.eat_punct(',') {
                    break;
                }
            }
            if braced {
                self.expect_punct('}')?;
            }
        }
        Ok(VarDecl {
            space,
            align,
            ty: ty.unwrap_or(Ty::B8),
            vec,
            name,
            dims,
            init,
            is_extern: false,
            line,
        })
    }

    fn instr(&mut self) -> Result<Instr, EmuError> {
        let line = self.cur_line();
        let mut guard = None;
        if self.eat_punct('@') {
            let neg = self.eat_punct('!');
            guard = Some((self.ident()?.to_string(), neg));
        }
        let opcode = self.ident()?.to_string();
        let mut operands = Vec::new();
        if !self.eat_punct(';') {
            loop {
                operands.push(self.operand()?);
                if self.eat_punct(';') {
                    break;
                }
                if !self.eat_punct(',') {
                    return self.err("expected `,` or `;` after operand");
                }
            }
        }
        Ok(Instr {
            guard,
            opcode,
            operands,
            line,
        })
    }

    /// The byte count of `.align N`: a power of two (PTX ISA "Variable and Parameter
    /// Attributes: .align") that fits in 32 bits.
    fn alignment(&mut self) -> Result<u32, EmuError> {
        let n = self.int()?;
        if !n.is_power_of_two() || n > 1 << 31 {
            return self.err(format!(".align {n} is not a power of two up to 2^31"));
        }
        Ok(n as u32)
    }

    fn signed_int(&mut self) -> Result<i64, EmuError> {
        let neg = self.eat_punct('-');
        let v = self.int()? as i64;
        Ok(if neg { v.wrapping_neg() } else { v })
    }

    /// The comma-separated operands after an opening bracket, up to and including `close`
    /// (none at all only if `may_be_empty`).
    fn operand_list(&mut self, close: char, may_be_empty: bool) -> Result<Operand, EmuError> {
        self.nested(|p| p.operand_items(close, may_be_empty))
    }

    /// Runs `f` one operand-nesting level deeper, or fails past [`MAX_OPERAND_NESTING`].
    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, EmuError>,
    ) -> Result<T, EmuError> {
        if self.nesting >= MAX_OPERAND_NESTING {
            return self.err("operand lists nested too deeply");
        }
        self.nesting += 1;
        let r = f(self);
        self.nesting -= 1;
        r
    }

    fn operand_items(&mut self, close: char, may_be_empty: bool) -> Result<Operand, EmuError> {
        let mut v = Vec::new();
        if !(may_be_empty && self.eat_punct(close)) {
            loop {
                v.push(self.operand()?);
                if self.eat_punct(close) {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        Ok(Operand::Vec(v))
    }

    fn operand(&mut self) -> Result<Operand, EmuError> {
        match self.peek() {
            // `call` argument / result lists: `(a, b)`, possibly empty.
            Some(Tok::Punct('(')) => {
                self.pos += 1;
                self.operand_list(')', true)
            }
            // Vector operands `{a, b}`: at least one element.
            Some(Tok::Punct('{')) => {
                self.pos += 1;
                self.operand_list('}', false)
            }
            Some(Tok::Punct('[')) => {
                self.pos += 1;
                let (base, mut off) = match self.peek() {
                    Some(Tok::Ident(s)) => {
                        self.pos += 1;
                        (Some(s.to_string()), 0)
                    }
                    _ => (None, self.signed_int()?),
                };
                if let (Some(map), true) = (&base, self.is_punct(',')) {
                    // `[tensorMap, {coords}]` of the tensor copies.
                    self.pos += 1;
                    let map = map.clone();
                    let coords = match self.nested(|p| p.operand())? {
                        Operand::Vec(v) => v,
                        _ => return self.err("expected `{coordinates}` after the tensor map"),
                    };
                    self.expect_punct(']')?;
                    return Ok(Operand::TensorAddr(map, coords));
                }
                while !self.is_punct(']') {
                    if self.eat_punct('+') {
                        off = off.wrapping_add(self.signed_int()?);
                    } else if self.eat_punct('-') {
                        off = off.wrapping_sub(self.int()? as i64);
                    } else {
                        return self.err("bad address expression");
                    }
                }
                self.expect_punct(']')?;
                Ok(Operand::Addr(base, off))
            }
            Some(Tok::Punct('!')) => {
                self.pos += 1;
                Ok(Operand::Not(self.ident()?.to_string()))
            }
            Some(Tok::Punct('-')) => {
                self.pos += 1;
                match self.next() {
                    Some(Tok::Int(v)) => Ok(Operand::Int(v.wrapping_neg())),
                    Some(Tok::F32(b)) => Ok(Operand::F32(b ^ 0x8000_0000)),
                    Some(Tok::F64(b)) => Ok(Operand::F64(b ^ (1 << 63))),
                    _ => self.err("bad negative literal"),
                }
            }
            Some(Tok::Int(v)) => {
                self.pos += 1;
                Ok(Operand::Int(v))
            }
            Some(Tok::F32(b)) => {
                self.pos += 1;
                Ok(Operand::F32(b))
            }
            Some(Tok::F64(b)) => {
                self.pos += 1;
                Ok(Operand::F64(b))
            }
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                if s == "_" && !self.is_punct('|') {
                    return Ok(Operand::Sink);
                }
                if self.eat_punct('|') {
                    let q = self.ident()?;
                    return Ok(Operand::Pair(s.to_string(), q.to_string()));
                }
                if !s.starts_with('%') && self.is_punct('+') {
                    self.pos += 1;
                    let off = self.signed_int()?;
                    return Ok(Operand::SymOff(s.to_string(), off));
                }
                if s.starts_with('%') {
                    Ok(Operand::Reg(s.to_string()))
                } else {
                    // Could be a register declared without `%`, a label or a variable; the
                    // lowering pass decides with the symbol tables in hand.
                    Ok(Operand::Sym(s.to_string()))
                }
            }
            _ => self.err("expected operand"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNIPPET: &str = r#"
//
// Generated by NVIDIA NVVM Compiler
.version 9.5
.target sm_80
.address_size 64

	// .globl	k
.extern .shared .align 16 .b8 smem[];
.global .align 4 .u32 counter = 7;

.visible .entry k(
	.param .align 8 .b8 k_param_0[24],
	.param .u64 k_param_1
)
.maxntid 128, 1, 1
{
	.reg .pred 	%p<3>;
	.reg .b32 	%r<10>;
	.shared .align 4 .b8 red[128];
	.loc 1 10 3
	ld.param.u32 	%r1, [k_param_0+16];
	@!%p1 bra 	$L__BB0_2;
	// begin inline asm
	{ .reg .b16 lo; mov.b32 %r2, {lo, lo}; }
	// end inline asm
	shfl.sync.bfly.b32 	%r3|%p2, %r1, 1, 31, -1;
	st.shared.v2.f32 [%r4+-8], {%r5, %r6};
$L__BB0_2:
	ret;
}
"#;

    #[test]
    fn parses_header_decls_and_instructions() {
        let m = parse(SNIPPET).unwrap();
        assert_eq!(m.version, "9.5");
        assert_eq!(m.target, "sm_80");
        assert_eq!(m.address_size, 64);
        assert_eq!(m.vars.len(), 2);
        assert!(m.vars[0].is_extern);
        assert_eq!(m.vars[0].dims, vec![None]);
        assert_eq!(m.vars[1].init, vec![Init::Int(7)]);
        let f = &m.funcs[0];
        assert!(f.is_entry);
        assert_eq!(f.name, "k");
        assert_eq!(f.params.len(), 2);
        assert_eq!(f.params[0].size(), 24);
        assert_eq!(f.params[0].align, 8);
        let body = f.body.as_ref().unwrap();
        let instrs: Vec<&Instr> = body
            .iter()
            .filter_map(|s| {
                if let Stmt::Instr(i) = s {
                    Some(i)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(instrs[0].opcode, "ld.param.u32");
        assert_eq!(
            instrs[0].operands[1],
            Operand::Addr(Some("k_param_0".into()), 16)
        );
        assert_eq!(instrs[1].guard, Some(("%p1".to_string(), true)));
        assert_eq!(instrs[1].operands[0], Operand::Sym("$L__BB0_2".into()));
        assert_eq!(
            instrs[2].operands[1],
            Operand::Vec(vec![Operand::Sym("lo".into()), Operand::Sym("lo".into())])
        );
        assert_eq!(
            instrs[3].operands[0],
            Operand::Pair("%r3".into(), "%p2".into())
        );
        assert_eq!(instrs[3].operands[4], Operand::Int(u64::MAX));
        assert_eq!(instrs[4].operands[0], Operand::Addr(Some("%r4".into()), -8));
        assert!(body
            .iter()
            .any(|s| matches!(s, Stmt::Label(l, _) if l == "$L__BB0_2")));
        assert!(body.contains(&Stmt::Open) && body.contains(&Stmt::Close));
        // line numbers are the PTX source lines
        assert_eq!(instrs[0].line, 22);
    }

    #[test]
    fn error_names_line_and_text() {
        let src = ".version 9.5\n.target sm_80\n.visible .entry k()\n{\n  mov.u32 %r1, ;\n}\n";
        match parse(src).unwrap_err() {
            EmuError::Parse { line, text, .. } => {
                assert_eq!(line, 5);
                assert_eq!(text, "mov.u32 %r1, ;");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn unterminated_body_is_an_error() {
        assert!(parse(".version 9.5\n.visible .entry k()\n{\n ret;\n").is_err());
    }
}
