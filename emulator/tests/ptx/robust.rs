//! Inputs that panicked, hung or aborted the emulator (issue 19, item 8, found by mutation
//! fuzzing: `emulator/tests/fuzz/`), each now a parse or load error, a finding or a typed launch
//! error. CI also runs this binary in the `fuzz` profile (overflow checks on), where the
//! overflow cases were panics.

use std::time::{Duration, Instant};

use crate::support::linear;
use flashmha_emulator::{
    Device, EmuError, FindingKind, LaunchConfig, LaunchReport, Module, MAX_SHARED_BYTES,
};

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";

/// An entry `k(.param .u64 a)` with `%rd1` = a and the registers the bodies use.
fn kernel(body: &str) -> String {
    format!(
        "{HEADER}.visible .entry k(.param .u64 a)\n{{\n\t.reg .b32 %r<8>;\n\t.reg .b64 %rd<8>;\n\
\t.reg .b16 %rs<4>;\n\t.reg .pred %p<4>;\n\tld.param.u64 %rd1, [a];\n{body}\n\tret;\n}}\n"
    )
}

/// Launches `body` on one warp with `a` as its parameter.
fn run(body: &str, a: u64) -> LaunchReport {
    let ptx = kernel(body);
    let m = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
    Device::new()
        .launch(&m, "k", &linear(1, 32), &a.to_le_bytes())
        .expect("launch")
}

fn kinds(rep: &LaunchReport) -> Vec<FindingKind> {
    rep.findings.iter().map(|f| f.kind).collect()
}

/// Asserts that each body fails to load with an error mentioning `want`.
fn assert_load_errors(bodies: &[&str], want: &str) {
    for body in bodies {
        let e = load_error(&kernel(body));
        assert!(e.contains(want), "{body}: {e}");
    }
}

/// The parse or load error of `ptx`, with its message.
fn load_error(ptx: &str) -> String {
    match Module::parse(ptx) {
        Err(e @ (EmuError::Parse { .. } | EmuError::Unsupported { .. })) => e.to_string(),
        Err(e) => panic!("expected a parse or load error, got {e}"),
        Ok(_) => panic!("expected a parse or load error, it loaded:\n{ptx}"),
    }
}

#[test]
fn accesses_ending_past_2_pow_64_are_findings_not_overflows() {
    // The end of an access (`addr + len`) was computed unchecked in exec/mem.rs and in the
    // traffic counters; near 2^64 it overflowed. Each is now the finding the address deserves.
    let top = u64::MAX - 3; // 4-aligned, the last 4 bytes of the address space
    let cases: [(&str, u64, FindingKind); 5] = [
        (
            "ld.global.u32 %r1, [%rd1];",
            top,
            FindingKind::GlobalOutOfBounds,
        ),
        ("ld.global.u64 %rd2, [%rd1];", top, FindingKind::Misaligned),
        (
            "st.global.v4.u32 [%rd1], {%r1, %r1, %r1, %r1};",
            u64::MAX - 15,
            FindingKind::GlobalOutOfBounds,
        ),
        (
            "ld.shared.u32 %r1, [%rd1];",
            top,
            FindingKind::SharedOutOfBounds,
        ),
        (
            "atom.shared.add.u32 %r1, [%rd1], 1;",
            top,
            FindingKind::SharedOutOfBounds,
        ),
    ];
    for (body, a, kind) in cases {
        let body = format!("\tmov.u32 %r1, 0;\n\t{body}");
        assert_eq!(kinds(&run(&body, a)), vec![kind], "{body} at {a:#x}");
    }
}

#[test]
fn stmatrix_to_the_top_of_the_shared_window_is_out_of_bounds() {
    // `stmatrix` to shared address 0xfffffff0 overflowed the wavefront count
    // (counters.rs, `addr + len - 1` in u32).
    let body = "\tmov.u32 %r1, 0xfffffff0;\n\tmov.u32 %r2, 7;\n\
\tstmatrix.sync.aligned.m8n8.x1.shared.b16 [%r1], {%r2};";
    assert_eq!(kinds(&run(body, 0)), vec![FindingKind::SharedOutOfBounds]);
}

#[test]
fn vector_mov_forms_outside_the_isa_are_load_errors() {
    // `mov.b128` into two .b16 registers made Op::Unpack shift by 64. Registers are 64 bits in
    // the emulator, so .b128 is unsupported; a split the ISA does not define, or parts of the
    // wrong width, is a parse error.
    let e = load_error(&kernel("\tmov.b128 {%rs1, %rs2}, %rd1;"));
    assert!(e.contains("unsupported instruction `mov.b128`"), "{e}");
    let bodies = [
        "\tmov.b64 {%rs1, %rs2}, %rd1;",
        "\tmov.b32 {%rs1, %rs2, %rs3}, %r1;",
        "\tmov.b32 {%r1, %r2}, %r3;",
        "\tmov.b64 %rd2, {%r1, %r2, %r3};",
    ];
    assert_load_errors(&bodies, "vector mov");
    // The ISA's forms still run: 0x0004_0003_0002_0001 unpacked to four .b16 and repacked.
    let body = "\tmov.b64 {%rs1, %rs2, %rs3, %rs0}, %rd1;\n\tmov.b32 %r1, {%rs2, %rs1};\n\
\tcvta.to.global.u64 %rd2, %rd1;";
    assert!(run(body, 0x0004_0003_0002_0001).is_clean());
}

#[test]
fn register_declarations_are_capped_at_what_ptxas_accepts() {
    // `%p<2147483647>` took seconds to name and gigabytes to launch; a 64-bit count was
    // truncated to 32 bits. Registers are now named on first use, and one declaration may hold
    // at most 2^31 (the most ptxas accepts, see parser.rs MAX_DECLARED_REGS).
    let t = Instant::now();
    let body = "\t.reg .pred %q<2147483647>;\n\t.reg .b64 %big<2147483648>;\n\
\tmov.u64 %big2147483647, 5;\n\tsetp.eq.u64 %q2147483646, %big2147483647, 5;\n\
\tselp.u64 %rd2, 1, 0, %q2147483646;\n\tst.global.u64 [%rd1], %rd2;";
    let m = Module::parse(&kernel(body)).unwrap();
    let mut dev = Device::new();
    let out = dev.alloc(8);
    let rep = dev
        .launch(&m, "k", &linear(1, 32), &out.0.to_le_bytes())
        .unwrap();
    assert!(rep.is_clean(), "{:?}", rep.findings);
    assert_eq!(dev.read(out, 8).unwrap(), 1u64.to_le_bytes());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // Names outside the declared range are still unknown.
    let e = load_error(&kernel("\t.reg .pred %q<3>;\n\tsetp.eq.u32 %q3, %r1, 0;"));
    assert!(e.contains("%q3"), "{e}");
    for n in ["2147483649", "9223372036854775807", "18446744073709551615"] {
        let e = load_error(&kernel(&format!("\t.reg .b64 %x<{n}>;")));
        assert!(e.contains("at most 2^31"), "{n}: {e}");
    }
}

#[test]
fn a_parameter_symbol_in_a_shared_access_is_a_load_error() {
    // `ld.shared [a]` of kernel parameter `a` read shared memory at the parameter's offset
    // without complaint. PTX ISA "Addresses as Operands": `[var]` is the address of `var` in
    // its own state space, which must be the instruction's.
    let bodies = [
        "\tld.shared.u64 %rd2, [a];",
        "\tst.shared.u32 [a+4], %r1;",
        "\tatom.shared.add.u32 %r1, [a], 1;",
        "\tld.global.u64 %rd2, [a];",
        "\tldmatrix.sync.aligned.m8n8.x1.shared.b16 {%r1}, [a];",
    ];
    assert_load_errors(&bodies, "`a` is a .param variable");
    let smem = "\t.shared .align 8 .b8 s[64];\n";
    let e = load_error(&kernel(&format!("{smem}\tld.param.u64 %rd2, [s];")));
    assert!(e.contains("`s` is a .shared variable"), "{e}");
    // The matching spaces load (and run).
    assert!(run(
        &format!("{smem}\tld.param.u64 %rd2, [a];\n\tst.shared.u64 [s], %rd2;"),
        0
    )
    .is_clean());
}

#[test]
fn variables_beyond_their_space_are_load_errors() {
    // Sizes and offsets were u32 sums of u64 sizes (truncated, or an overflow); a huge
    // `.global` was allocated at launch (an abort).
    let cases = [
        (
            format!("\t.shared .b8 s[{}];", MAX_SHARED_BYTES + 1),
            "static shared memory",
        ),
        ("\t.local .b8 l[524289];".to_string(), "local memory"),
        (
            "\t.local .align 8 .b8 l[1099511627776];".to_string(),
            "local memory",
        ),
        (
            "\t.global .b8 g[1099511627776];".to_string(),
            ".global/.const variables",
        ),
        (
            "\t.global .b8 g[200000000];\n\t.global .b8 h[200000000];".to_string(),
            ".global/.const variables",
        ),
        ("\t.const .b8 c[65537];".to_string(), ".const variable"),
    ];
    for (decl, want) in cases {
        let e = load_error(&kernel(&decl));
        assert!(e.contains(want), "{decl}: {e}");
    }
    let e = load_error(&format!("{HEADER}.global .b8 g[4294967296][4294967296];\n"));
    assert!(e.contains("overflows 64 bits"), "{e}");
    let e = load_error(&kernel("\t.shared .align 3 .b8 s[4];"));
    assert!(e.contains("power of two"), "{e}");
    let e = load_error(&format!(
        "{HEADER}.visible .entry p(.param .align 8 .b8 big[40000])\n{{\n\tret;\n}}\n"
    ));
    assert!(e.contains("kernel parameters"), "{e}");
}

#[test]
fn host_calls_with_impossible_sizes_are_errors() {
    let mut dev = Device::new();
    // An allocation no address space holds was an overflow, then an abort.
    for bytes in [usize::MAX, 1 << 50] {
        assert!(
            matches!(dev.try_alloc(bytes), Err(EmuError::Memory(_))),
            "{bytes}"
        );
    }
    let buf = dev.try_alloc(64).unwrap();
    // The read's buffer was allocated before the range was checked (an abort at usize::MAX).
    assert!(dev.read(buf, usize::MAX).is_err());
    assert!(dev.read(buf, 1 << 40).is_err());
    let m = Module::parse(&kernel("")).unwrap();
    let params = buf.0.to_le_bytes();
    let bad = [
        // The block's thread count was a u64 product (an overflow).
        LaunchConfig {
            grid: [1, 1, 1],
            block: [u32::MAX; 3],
            dynamic_smem_bytes: 0,
        },
        // Static plus dynamic shared memory was a u32 sum (an overflow).
        LaunchConfig {
            grid: [1, 1, 1],
            block: [32, 1, 1],
            dynamic_smem_bytes: u32::MAX,
        },
    ];
    for cfg in bad {
        assert!(
            matches!(dev.launch(&m, "k", &cfg, &params), Err(EmuError::Launch(_))),
            "{cfg:?}"
        );
    }
}

#[test]
fn deeply_nested_operands_and_blocks_are_parse_errors() {
    // The parser recurses once per bracket level; 100k levels overflowed the stack (an abort
    // no test can catch).
    for open in ["{", "[x, "] {
        let body = format!("\tmov.b32 %r1, {};", open.repeat(100_000));
        let e = load_error(&kernel(&body));
        assert!(e.contains("nested too deeply"), "{e}");
    }
    // Blocks: every register lookup walks the open scopes, so 100k of them made lowering
    // quadratic.
    let body = format!("{}\tmov.b32 %r1, %r2;", "{\n".repeat(100_000));
    let e = load_error(&kernel(&body));
    assert!(e.contains("blocks nested too deeply"), "{e}");
}

#[test]
fn exponential_inlining_is_a_load_error_not_a_hang() {
    // Calls are inlined: 16 functions each calling the next 8 times lower to 8^15 bodies.
    let mut ptx = HEADER.to_string();
    for f in (0..16).rev() {
        let calls = if f == 15 {
            String::new()
        } else {
            format!("\tcall.uni f{}, ();\n", f + 1).repeat(8)
        };
        ptx += &format!(".func f{f}()\n{{\n{calls}\tret;\n}}\n");
    }
    ptx += ".visible .entry k()\n{\n\tcall.uni f0, ();\n\tret;\n}\n";
    let t = Instant::now();
    let e = load_error(&ptx);
    assert!(e.contains("after inlining"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
}
