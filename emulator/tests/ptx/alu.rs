//! Table-driven per-op tests of the integer, float and warp-reduction ALU: each row is one PTX
//! instruction, its operands and the result the PTX ISA defines, worked out by hand from the
//! instruction's description (section named per table). Every row runs end to end through the
//! parser, the family's qualifier parser, lowering and execution.

use crate::support::linear;
use flashmha_emulator::{Device, Module};

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

/// A kernel that loads operands a, b, c (u64 each) into `%r1..3` (low 32 bits), `%rd1..3`,
/// `%f1..3` and `%fd1..3`, runs `body`, and stores `%rd4` and `%r4` of thread 0.
/// With `per_lane`, lane l's `%r1` is `a * l + b` instead (for warp reductions).
fn kernel(body: &str, per_lane: bool) -> String {
    let lane = if per_lane {
        "\tmov.u32 %r7, %laneid;\n\tmad.lo.s32 %r1, %r1, %r7, %r2;\n"
    } else {
        ""
    };
    format!(
        "{HEADER}.visible .entry t(.param .u64 t_out, .param .u64 t_in)\n{{\n\
\t.reg .b32 %r<8>;\n\t.reg .b64 %rd<12>;\n\t.reg .f32 %f<8>;\n\t.reg .f64 %fd<8>;\n\t.reg .pred %p<4>;\n\
\tld.param.u64 %rd10, [t_out];\n\tld.param.u64 %rd11, [t_in];\n\
\tld.global.u64 %rd1, [%rd11];\n\tld.global.u64 %rd2, [%rd11+8];\n\tld.global.u64 %rd3, [%rd11+16];\n\
\tcvt.u32.u64 %r1, %rd1;\n\tcvt.u32.u64 %r2, %rd2;\n\tcvt.u32.u64 %r3, %rd3;\n{lane}\
\tmov.b32 %f1, %r1;\n\tmov.b32 %f2, %r2;\n\tmov.b32 %f3, %r3;\n\
\tmov.b64 %fd1, %rd1;\n\tmov.b64 %fd2, %rd2;\n\tmov.b64 %fd3, %rd3;\n\
\tmov.u32 %r4, 0;\n\tmov.u64 %rd4, 0;\n\
\t{body}\n\
\tmov.u32 %r6, %tid.x;\n\tsetp.ne.u32 %p3, %r6, 0;\n\t@%p3 bra DONE;\n\
\tst.global.u64 [%rd10], %rd4;\n\tst.global.u32 [%rd10+8], %r4;\nDONE:\n\tret;\n}}\n"
    )
}

/// Runs one row; returns (%rd4, %r4) of thread 0.
fn run(body: &str, ops: [u64; 3], per_lane: bool) -> (u64, u32) {
    let ptx = kernel(body, per_lane);
    let m = Module::parse(&ptx).unwrap_or_else(|e| panic!("`{body}`: {e}"));
    let mut dev = Device::new();
    let out = dev.alloc(16);
    let mut inb = Vec::new();
    for v in ops {
        inb.extend_from_slice(&v.to_le_bytes());
    }
    let inp = dev.upload(&inb);
    let mut params = out.0.to_le_bytes().to_vec();
    params.extend_from_slice(&inp.0.to_le_bytes());
    let cfg = linear(1, 32);
    let rep = dev.launch(&m, "t", &cfg, &params).expect("launch");
    assert!(rep.findings.is_empty(), "`{body}`: {:?}", rep.findings);
    let b = dev.read(out, 16).unwrap();
    (
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
    )
}

fn f(x: f32) -> u64 {
    x.to_bits() as u64
}

/// Checks rows (instruction, a, b, c, expected) against the result `pick` takes from
/// (`%rd4`, `%r4`), printed as hex of the result's width.
fn check_rows<T: Copy + PartialEq + std::fmt::Debug + std::fmt::LowerHex>(
    rows: &[(&str, u64, u64, u64, T)],
    pick: fn((u64, u32)) -> T,
) {
    let width = 2 + 2 * std::mem::size_of::<T>();
    for &(body, a, b, c, want) in rows {
        let got = pick(run(body, [a, b, c], false));
        assert_eq!(
            got, want,
            "`{body}` with a={a:#x} b={b:#x} c={c:#x}: got {got:#0width$x}, want {want:#0width$x}"
        );
    }
}

/// Rows whose result is `%r4`: (instruction, a, b, c, expected).
fn check32(rows: &[(&str, u64, u64, u64, u32)]) {
    check_rows(rows, |(_, r4)| r4);
}

/// Rows whose result is `%rd4`.
fn check64(rows: &[(&str, u64, u64, u64, u64)]) {
    check_rows(rows, |(rd4, _)| rd4);
}

const NEG1: u64 = 0xFFFF_FFFF;

#[test]
fn integer_arithmetic() {
    // PTX ISA 9.7.1 "Integer Arithmetic Instructions": add (.sat clamps s32 to
    // MININT..MAXINT), sub, mul (.lo/.hi of the double-width product), mad, div (truncates
    // toward zero), rem (sign of the dividend), min, max, neg, abs.
    check32(&[
        ("add.s32 %r4, %r1, %r2;", 0x7FFF_FFFF, 1, 0, 0x8000_0000),
        ("add.sat.s32 %r4, %r1, %r2;", 0x7FFF_FFFF, 1, 0, 0x7FFF_FFFF),
        (
            "add.sat.s32 %r4, %r1, %r2;",
            0x8000_0000,
            NEG1,
            0,
            0x8000_0000,
        ),
        ("sub.sat.s32 %r4, %r1, %r2;", 0x8000_0000, 1, 0, 0x8000_0000),
        (
            "sub.sat.s32 %r4, %r1, %r2;",
            0x7FFF_FFFF,
            NEG1,
            0,
            0x7FFF_FFFF,
        ),
        ("sub.u32 %r4, %r1, %r2;", 0, 1, 0, 0xFFFF_FFFF),
        ("mul.lo.s32 %r4, %r1, %r2;", 0x1_0000, 0x1_0001, 0, 0x1_0000),
        ("mul.hi.u32 %r4, %r1, %r2;", NEG1, NEG1, 0, 0xFFFF_FFFE),
        ("mul.hi.s32 %r4, %r1, %r2;", NEG1, NEG1, 0, 0),
        ("mul.hi.s32 %r4, %r1, %r2;", 0x8000_0000, 2, 0, 0xFFFF_FFFF),
        ("mad.lo.s32 %r4, %r1, %r2, %r3;", 3, 4, 5, 17),
        ("mad.lo.s32 %r4, %r1, %r2, %r3;", NEG1, 4, 5, 1),
        ("mad.hi.u32 %r4, %r1, %r2, %r3;", NEG1, NEG1, 1, 0xFFFF_FFFF),
        ("mad.hi.s32 %r4, %r1, %r2, %r3;", 0x8000_0000, 2, 1, 0),
        (
            "div.s32 %r4, %r1, %r2;",
            (-7i32) as u32 as u64,
            2,
            0,
            (-3i32) as u32,
        ),
        ("div.u32 %r4, %r1, %r2;", NEG1, 2, 0, 0x7FFF_FFFF),
        (
            "rem.s32 %r4, %r1, %r2;",
            (-7i32) as u32 as u64,
            2,
            0,
            NEG1 as u32,
        ),
        ("rem.u32 %r4, %r1, %r2;", 7, 3, 0, 1),
        ("min.s32 %r4, %r1, %r2;", NEG1, 1, 0, NEG1 as u32),
        ("min.u32 %r4, %r1, %r2;", NEG1, 1, 0, 1),
        ("max.s32 %r4, %r1, %r2;", NEG1, 1, 0, 1),
        ("max.u32 %r4, %r1, %r2;", NEG1, 1, 0, NEG1 as u32),
        ("neg.s32 %r4, %r1;", 5, 0, 0, (-5i32) as u32),
        ("abs.s32 %r4, %r1;", (-5i32) as u32 as u64, 0, 0, 5),
        // abs of MININT is MININT (no positive counterpart).
        ("abs.s32 %r4, %r1;", 0x8000_0000, 0, 0, 0x8000_0000),
    ]);
    // .wide: the full 2n-bit product (and, for mad, plus a 2n-bit addend).
    check64(&[
        (
            "mul.wide.u32 %rd4, %r1, %r2;",
            NEG1,
            NEG1,
            0,
            0xFFFF_FFFE_0000_0001,
        ),
        (
            "mul.wide.s32 %rd4, %r1, %r2;",
            (-2i32) as u32 as u64,
            3,
            0,
            (-6i64) as u64,
        ),
        (
            "mad.wide.u32 %rd4, %r1, %r2, %rd3;",
            0x8000_0000,
            2,
            5,
            0x1_0000_0005,
        ),
        ("mad.wide.s32 %rd4, %r1, %r2, %rd3;", NEG1, 1, 0, u64::MAX),
        ("mul.lo.u64 %rd4, %rd1, %rd2;", 1 << 40, 1 << 30, 0, 0),
        ("mul.hi.u64 %rd4, %rd1, %rd2;", 1 << 40, 1 << 30, 0, 1 << 6),
        ("add.s64 %rd4, %rd1, %rd2;", u64::MAX, 2, 0, 1),
    ]);
}

#[test]
fn bit_manipulation() {
    // PTX ISA 9.7.1 (popc, clz, bfind, brev, bfe, bfi) and 9.7.8 "Logic and Shift
    // Instructions" (and, or, xor, not, cnot, shl, shr, shf, prmt in 9.7.9.7).
    check32(&[
        ("popc.b32 %r4, %r1;", 0xF0F0, 0, 0, 8),
        ("clz.b32 %r4, %r1;", 1, 0, 0, 31),
        ("clz.b32 %r4, %r1;", 0, 0, 0, 32),
        ("brev.b32 %r4, %r1;", 1, 0, 0, 0x8000_0000),
        // bfind: bit position of the most significant non-sign bit; 0xFFFFFFFF if none.
        ("bfind.u32 %r4, %r1;", 0x1_0000, 0, 0, 16),
        ("bfind.u32 %r4, %r1;", 0, 0, 0, 0xFFFF_FFFF),
        ("bfind.shiftamt.u32 %r4, %r1;", 0x1_0000, 0, 0, 15),
        ("bfind.s32 %r4, %r1;", 0xFFFF_FFF0, 0, 0, 3),
        ("bfind.s32 %r4, %r1;", NEG1, 0, 0, 0xFFFF_FFFF),
        ("bfe.u32 %r4, %r1, %r2, %r3;", 0xF0, 4, 4, 0xF),
        ("bfe.s32 %r4, %r1, %r2, %r3;", 0xF0, 4, 4, 0xFFFF_FFFF),
        ("bfe.u32 %r4, %r1, %r2, %r3;", 0xF0, 4, 0, 0),
        ("bfi.b32 %r4, %r1, %r2, 8, 4;", 0xF, 0x1, 0, 0xF01),
        ("and.b32 %r4, %r1, %r2;", 0xFF00, 0x0FF0, 0, 0x0F00),
        ("or.b32 %r4, %r1, %r2;", 0xFF00, 0x0FF0, 0, 0xFFF0),
        ("xor.b32 %r4, %r1, %r2;", 0xFF00, 0x0FF0, 0, 0xF0F0),
        ("not.b32 %r4, %r1;", 0xFF00, 0, 0, 0xFFFF_00FF),
        ("cnot.b32 %r4, %r1;", 0, 0, 0, 1),
        ("cnot.b32 %r4, %r1;", 5, 0, 0, 0),
        // Shift amounts beyond the width clamp: shl/shr.u give 0, shr.s the sign fill.
        ("shl.b32 %r4, %r1, %r2;", 1, 33, 0, 0),
        ("shr.u32 %r4, %r1, %r2;", 0x8000_0000, 40, 0, 0),
        ("shr.s32 %r4, %r1, %r2;", 0x8000_0000, 40, 0, 0xFFFF_FFFF),
        ("shr.s32 %r4, %r1, %r2;", 0x8000_0000, 4, 0, 0xF800_0000),
        // shf: funnel shift of {b:a}; .wrap takes the amount mod 32, .clamp min(amount, 32).
        (
            "shf.l.wrap.b32 %r4, %r1, %r2, %r3;",
            0x8000_0000,
            1,
            4,
            0x18,
        ),
        (
            "shf.l.wrap.b32 %r4, %r1, %r2, %r3;",
            0x8000_0000,
            1,
            36,
            0x18,
        ),
        (
            "shf.l.clamp.b32 %r4, %r1, %r2, %r3;",
            0x8000_0000,
            1,
            36,
            0x8000_0000,
        ),
        ("shf.r.wrap.b32 %r4, %r1, %r2, %r3;", 1, 3, 36, 0x3000_0000),
        ("shf.r.clamp.b32 %r4, %r1, %r2, %r3;", 1, 3, 40, 3),
        // prmt default mode: selector nibbles pick bytes of {b, a}; bit 3 replicates the sign.
        (
            "prmt.b32 %r4, %r1, %r2, %r3;",
            0x3322_1100,
            0x7766_5544,
            0x5410,
            0x5544_1100,
        ),
        (
            "prmt.b32 %r4, %r1, %r2, %r3;",
            0x0000_00F0,
            0,
            0x8888,
            0xFFFF_FFFF,
        ),
    ]);
}

#[test]
fn comparison_and_selection() {
    // PTX ISA 9.7.3 "Comparison and Selection Instructions": setp, selp, slct (c >= 0
    // selects a).
    check32(&[
        (
            "setp.lt.s32 %p1, %r1, %r2; selp.b32 %r4, 7, 9, %p1;",
            NEG1,
            1,
            0,
            7,
        ),
        (
            "setp.lt.u32 %p1, %r1, %r2; selp.b32 %r4, 7, 9, %p1;",
            NEG1,
            1,
            0,
            9,
        ),
        (
            "setp.gt.and.s32 %p1|%p2, %r1, %r2, 1; selp.b32 %r4, 7, 9, %p2;",
            1,
            2,
            0,
            7,
        ),
        // NaN compares unordered: lt false, ltu true.
        (
            "setp.ltu.f32 %p1, %f1, %f2; selp.b32 %r4, 7, 9, %p1;",
            f(f32::NAN),
            f(1.0),
            0,
            7,
        ),
        (
            "setp.lt.f32 %p1, %f1, %f2; selp.b32 %r4, 7, 9, %p1;",
            f(f32::NAN),
            f(1.0),
            0,
            9,
        ),
        ("set.lt.u32.s32 %r4, %r1, %r2;", NEG1, 1, 0, 0xFFFF_FFFF),
        ("slct.u32.s32 %r4, %r1, %r2, %r3;", 10, 20, NEG1, 20),
        ("slct.u32.s32 %r4, %r1, %r2, %r3;", 10, 20, 0, 10),
        ("slct.u32.f32 %r4, %r1, %r2, %r3;", 10, 20, f(-1.5), 20),
        ("slct.u32.f32 %r4, %r1, %r2, %r3;", 10, 20, f(0.0), 10),
    ]);
}

#[test]
fn packed_half_comparisons() {
    // PTX ISA 9.7.4 "Half Precision Comparison Instructions": on f16x2/bf16x2 the halves
    // compare separately; setp writes p from the low halves and q from the high halves (each
    // combined with c by BoolOp); set writes 1.0 (f16x2/bf16x2 destination) or 0xFFFF
    // (u32/s32 destination) per half. f16: 1.0 = 0x3C00, 2.0 = 0x4000, NaN = 0x7E00;
    // bf16: 1.0 = 0x3F80, 2.0 = 0x4000.
    check32(&[
        // low: 2.0 < 1.0 false; high: 1.0 < 2.0 true  -> p = 0, q = 1.
        (
            "setp.lt.f16x2 %p1|%p2, %r1, %r2; selp.b32 %r4, 1, 0, %p1; selp.b32 %r5, 2, 0, %p2; or.b32 %r4, %r4, %r5;",
            0x3C00_4000,
            0x4000_3C00,
            0,
            2,
        ),
        (
            "setp.lt.bf16x2 %p1|%p2, %r1, %r2; selp.b32 %r4, 1, 0, %p1; selp.b32 %r5, 2, 0, %p2; or.b32 %r4, %r4, %r5;",
            0x4000_3F80,
            0x3F80_4000,
            0,
            1,
        ),
        // .and with c = false clears both; .or with c = true sets both.
        (
            "setp.lt.and.f16x2 %p1|%p2, %r1, %r2, 0; selp.b32 %r4, 1, 0, %p1; selp.b32 %r5, 2, 0, %p2; or.b32 %r4, %r4, %r5;",
            0x3C00_3C00,
            0x4000_4000,
            0,
            0,
        ),
        (
            "setp.gt.or.f16x2 %p1|%p2, %r1, %r2, 1; selp.b32 %r4, 1, 0, %p1; selp.b32 %r5, 2, 0, %p2; or.b32 %r4, %r4, %r5;",
            0x3C00_3C00,
            0x4000_4000,
            0,
            3,
        ),
        // NaN in the high half: ne is false (ordered), neu true.
        (
            "setp.ne.f16x2 %p1|%p2, %r1, %r2; selp.b32 %r4, 1, 0, %p1; selp.b32 %r5, 2, 0, %p2; or.b32 %r4, %r4, %r5;",
            0x7E00_3C00,
            0x3C00_4000,
            0,
            1,
        ),
        (
            "setp.neu.f16x2 %p1|%p2, %r1, %r2; selp.b32 %r4, 1, 0, %p1; selp.b32 %r5, 2, 0, %p2; or.b32 %r4, %r4, %r5;",
            0x7E00_3C00,
            0x3C00_4000,
            0,
            3,
        ),
        ("set.lt.f16x2.f16x2 %r4, %r1, %r2;", 0x3C00_4000, 0x4000_3C00, 0, 0x3C00_0000),
        ("set.ge.bf16x2.bf16x2 %r4, %r1, %r2;", 0x3C00_4000, 0x4000_3C00, 0, 0x0000_3F80),
        ("set.lt.u32.f16x2 %r4, %r1, %r2;", 0x3C00_4000, 0x4000_3C00, 0, 0xFFFF_0000),
    ]);
}

#[test]
fn float_arithmetic() {
    // PTX ISA 9.7.3 "Floating-Point Instructions": rounding modifiers (.rn/.rz/.rm/.rp), .ftz
    // flushes subnormal inputs and results to sign-preserving zero, .sat clamps to [0, 1] (NaN
    // to 0), min/max ignore a single NaN unless .NaN, -0 < +0; copysign d = |b| with a's sign.
    let eps_tail = f(1.0f32) + 1; // 1 + 2^-23
    let three_quarter_ulp = f(0.75 * f32::EPSILON);
    check32(&[
        (
            "add.rn.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(1.0),
            three_quarter_ulp,
            0,
            eps_tail as u32,
        ),
        (
            "add.rz.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(1.0),
            three_quarter_ulp,
            0,
            1.0f32.to_bits(),
        ),
        (
            "add.rm.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(1.0),
            three_quarter_ulp,
            0,
            1.0f32.to_bits(),
        ),
        (
            "add.rp.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(1.0),
            f(0.25 * f32::EPSILON),
            0,
            eps_tail as u32,
        ),
        (
            "add.sat.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(0.75),
            f(0.5),
            0,
            1.0f32.to_bits(),
        ),
        (
            "add.sat.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(f32::NAN),
            f(0.5),
            0,
            0,
        ),
        (
            "mul.ftz.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            1,
            f(-1.0),
            0,
            0x8000_0000,
        ),
        (
            "mul.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            1,
            f(-1.0),
            0,
            0x8000_0001,
        ),
        (
            "div.rn.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(1.0),
            f(3.0),
            0,
            0x3EAA_AAAB,
        ),
        (
            "div.rz.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(1.0),
            f(3.0),
            0,
            0x3EAA_AAAA,
        ),
        (
            "fma.rn.f32 %f4, %f1, %f2, %f3; mov.b32 %r4, %f4;",
            f(2.0),
            f(3.0),
            f(-1.0),
            f(5.0) as u32,
        ),
        (
            "min.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(f32::NAN),
            f(1.0),
            0,
            1.0f32.to_bits(),
        ),
        (
            "min.NaN.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(f32::NAN),
            f(1.0),
            0,
            0x7FFF_FFFF,
        ),
        (
            "max.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(-0.0),
            f(0.0),
            0,
            0,
        ),
        (
            "min.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(0.0),
            f(-0.0),
            0,
            0x8000_0000,
        ),
        (
            "copysign.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(-1.0),
            f(2.0),
            0,
            (-2.0f32).to_bits(),
        ),
        (
            "copysign.f32 %f4, %f1, %f2; mov.b32 %r4, %f4;",
            f(1.0),
            f(-2.0),
            0,
            2.0f32.to_bits(),
        ),
        (
            "neg.f32 %f4, %f1; mov.b32 %r4, %f4;",
            f(0.0),
            0,
            0,
            0x8000_0000,
        ),
        ("abs.f32 %f4, %f1; mov.b32 %r4, %f4;", f(-0.0), 0, 0, 0),
        // Packed halves: each 16-bit lane independently (f16 1.0 = 0x3C00, 2.0 = 0x4000,
        // 3.0 = 0x4200; bf16 1.0 = 0x3F80, 2.0 = 0x4000, 3.0 = 0x4040).
        (
            "add.rn.f16x2 %r4, %r1, %r2;",
            0x3C00_4000,
            0x3C00_3C00,
            0,
            0x4000_4200,
        ),
        (
            "add.rn.bf16x2 %r4, %r1, %r2;",
            0x3F80_4000,
            0x3F80_3F80,
            0,
            0x4000_4040,
        ),
        (
            "fma.rn.bf16x2 %r4, %r1, %r2, %r3;",
            0x3F80_4000,
            0x4000_3F80,
            0x3F80_3F80,
            0x4040_4040,
        ),
        (
            "copysign.f16x2 %r4, %r1, %r2;",
            0x8000_0000,
            0x3C00_BC00,
            0,
            0xBC00_3C00,
        ),
    ]);
    check64(&[
        (
            "sub.f64 %fd4, %fd1, %fd2; mov.b64 %rd4, %fd4;",
            3.0f64.to_bits(),
            0.5f64.to_bits(),
            0,
            2.5f64.to_bits(),
        ),
        (
            "copysign.f64 %fd4, %fd1, %fd2; mov.b64 %rd4, %fd4;",
            (-1.0f64).to_bits(),
            2.0f64.to_bits(),
            0,
            (-2.0f64).to_bits(),
        ),
    ]);
}

#[test]
fn warp_reductions() {
    // PTX ISA 9.7.13.11 "redux.sync": lane l contributes a*l + b; every lane receives the
    // reduction over all 32 lanes.
    let lanes = |a: i64, b: i64| (0..32).map(move |l| (a * l + b) as i32);
    for (op, a, b) in [
        ("add.s32", 3i64, -40i64),
        ("min.s32", -5, 7),
        ("max.s32", -5, 7),
        ("min.u32", 1, 3),
        ("max.u32", -1, 0),
        ("and.b32", 0x11, 0xFF0),
        ("or.b32", 0x11, 0xF00),
        ("xor.b32", 0x13, 0x5),
    ] {
        let v: Vec<i32> = lanes(a, b).collect();
        let want: u32 = match op {
            "add.s32" => v.iter().fold(0i32, |s, x| s.wrapping_add(*x)) as u32,
            "min.s32" => *v.iter().min().unwrap() as u32,
            "max.s32" => *v.iter().max().unwrap() as u32,
            "min.u32" => v.iter().map(|x| *x as u32).min().unwrap(),
            "max.u32" => v.iter().map(|x| *x as u32).max().unwrap(),
            "and.b32" => v.iter().fold(u32::MAX, |s, x| s & *x as u32),
            "or.b32" => v.iter().fold(0, |s, x| s | *x as u32),
            _ => v.iter().fold(0, |s, x| s ^ *x as u32),
        };
        let body = format!("redux.sync.{op} %r4, %r1, 0xffffffff;");
        let (_, got) = run(&body, [a as u64, b as u64, 0], true);
        assert_eq!(got, want, "{body} over lanes a={a} b={b}");
    }
}

#[test]
fn unconsumed_qualifiers_are_rejected_with_the_line() {
    // Each is well-formed PTX whose qualifier the emulator does not implement; the qualifier
    // parser must refuse it rather than ignore it.
    for (body, qual) in [
        ("add.sat.u32 %r4, %r1, %r2;", "sat"),
        ("min.relu.s32 %r4, %r1, %r2;", "relu"),
        ("max.xorsign.abs.f32 %f4, %f1, %f2;", "xorsign"),
        ("bar.red.popc.u32 %r4, 0, %p1;", "red"),
        (
            "ld.global.nc.L1::no_allocate.weird.u32 %r4, [%rd11];",
            "weird",
        ),
    ] {
        let ptx = kernel(body, false);
        let line = ptx.lines().position(|l| l.contains(body)).unwrap() as u32 + 1;
        let e = Module::parse(&ptx).expect_err(body);
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                flashmha_emulator::EmuError::Unsupported { line: l, .. } if l == line
            ),
            "{body}: {msg}"
        );
        assert!(msg.contains(body.split(' ').next().unwrap()), "{msg}");
        if qual != "sat" {
            assert!(msg.contains(&format!(".{qual}")), "{msg}");
        }
    }
}
