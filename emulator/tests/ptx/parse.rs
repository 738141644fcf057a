//! Parser and loader: inline PTX snippets, error lines, unsupported instructions, and a few
//! hand-written PTX programs executed end to end (divergence, integer and predicate semantics).
use crate::support::linear;
use flashmha_emulator::{Device, EmuError, FindingKind, Module};

const HEADER: &str = ".version 9.5\n.target sm_80\n.address_size 64\n";

fn kernel(body: &str) -> String {
    format!("{HEADER}.visible .entry k(\n\t.param .u64 k_param_0\n)\n{{\n{body}\n}}\n")
}

fn run(ptx: &str, threads: u32, out_words: usize) -> (Vec<u32>, flashmha_emulator::LaunchReport) {
    let m = Module::parse(ptx).unwrap_or_else(|e| panic!("{e}"));
    let mut dev = Device::new();
    let out = dev.alloc(out_words * 4);
    let cfg = linear(1, threads);
    let rep = dev.launch(&m, "k", &cfg, &out.0.to_le_bytes()).unwrap();
    let bytes = dev.read(out, out_words * 4).unwrap();
    (
        bytes
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        rep,
    )
}

#[test]
fn syntax_error_names_line_and_text() {
    let ptx = kernel("\t.reg .b32 %r<3>;\n\tmov.u32 %r1, ;\n\tret;");
    match Module::parse(&ptx).unwrap_err() {
        EmuError::Parse { line, text, .. } => {
            assert_eq!(line, 9);
            assert_eq!(text, "mov.u32 %r1, ;");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn unknown_register_is_an_error_with_line() {
    let ptx = kernel("\t.reg .b32 %r<3>;\n\tmov.u32 %r1, %r7;\n\tret;");
    let e = Module::parse(&ptx).unwrap_err();
    assert!(matches!(e, EmuError::Parse { line: 9, .. }), "{e}");
    assert!(e.to_string().contains("%r7"));
}

#[test]
fn unsupported_instruction_fails_at_load_time() {
    for (instr, name) in [
        ("\tmul24.lo.s32 %r1, %r1, %r2;", "mul24.lo.s32"),
        ("\tadd.cc.u32 %r1, %r1, %r2;", "add.cc.u32"),
        ("\tprmt.b32.f4e %r1, %r1, %r2, %r2;", "prmt.b32.f4e"),
        (
            "\tcvt.rn.satfinite.e4m3x2.f32 %rs1, %f1, %f2;",
            "cvt.rn.satfinite.e4m3x2.f32",
        ),
    ] {
        let body =
            format!("\t.reg .b32 %r<3>;\n\t.reg .b16 %rs<3>;\n\t.reg .f32 %f<5>;\n{instr}\n\tret;");
        match Module::parse(&kernel(&body)) {
            Err(EmuError::Unsupported { line, opcode, .. }) => {
                assert_eq!(line, 11, "{instr}");
                assert_eq!(opcode, name);
            }
            other => panic!("{instr}: expected unsupported, got {other:?}"),
        }
    }
}

#[test]
fn params_layout_reports_struct_params() {
    let ptx = format!(
        "{HEADER}.visible .entry s(\n\t.param .align 8 .b8 s_param_0[24],\n\t.param .u32 s_param_1,\n\t.param .u64 s_param_2\n)\n{{\n\tret;\n}}\n"
    );
    let m = Module::parse(&ptx).unwrap();
    assert_eq!(m.entries().collect::<Vec<_>>(), vec!["s"]);
    let l = m.param_layout("s").unwrap();
    assert_eq!((l[0].offset, l[0].size, l[0].align), (0, 24, 8));
    assert_eq!((l[1].offset, l[1].size), (24, 4));
    assert_eq!((l[2].offset, l[2].size), (32, 8));
    assert_eq!(m.param_size("s"), Some(40));
    assert!(m.param_layout("nope").is_none());
}

/// Divergent if/else with reconvergence: every lane takes its path; a full-warp shuffle after
/// the join works (the lanes must have reconverged); warp-instructions show the split.
#[test]
fn divergence_reconverges_before_a_collective() {
    let body = "\t.reg .pred %p<3>;\n\t.reg .b32 %r<12>;\n\t.reg .b64 %rd<4>;\n\
        \tld.param.u64 %rd1, [k_param_0];\n\tcvta.to.global.u64 %rd1, %rd1;\n\
        \tmov.u32 %r1, %tid.x;\n\tand.b32 %r2, %r1, 1;\n\tsetp.eq.s32 %p1, %r2, 0;\n\
        \t@%p1 bra $EVEN;\n\tmul.lo.s32 %r3, %r1, 3;\n\tbra.uni $JOIN;\n\
        $EVEN:\n\tshl.b32 %r3, %r1, 4;\n\
        $JOIN:\n\tshfl.sync.bfly.b32 %r4, %r3, 1, 31, -1;\n\
        \tmul.wide.u32 %rd2, %r1, 4;\n\tadd.s64 %rd3, %rd1, %rd2;\n\tst.global.u32 [%rd3], %r4;\n\tret;";
    let (out, rep) = run(&kernel(body), 32, 32);
    for l in 0..32u32 {
        let v = |x: u32| if x.is_multiple_of(2) { x << 4 } else { x * 3 };
        assert_eq!(out[l as usize], v(l ^ 1), "lane {l}");
    }
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let c = &rep.counters;
    // one warp: 6 converged up to the branch, (mul, bra.uni) by the odd group, shl by the even
    // group, then 5 reconverged = 14 issues; the branch is taken (guard true) by 16 lanes.
    assert_eq!(c.warp_instructions, 14, "{c}");
    assert_eq!(
        c.thread_instructions,
        5 * 32 + 16 + 2 * 16 + 16 + 5 * 32,
        "{c}"
    );
}

#[test]
fn integer_and_predicate_semantics() {
    let body = "\t.reg .pred %p<4>;\n\t.reg .b32 %r<20>;\n\t.reg .b64 %rd<4>;\n\
        \tld.param.u64 %rd1, [k_param_0];\n\
        \tmov.u32 %r1, -7;\n\tshr.s32 %r2, %r1, 1;\n\tst.global.u32 [%rd1], %r2;\n\
        \tshr.u32 %r3, %r1, 28;\n\tst.global.u32 [%rd1+4], %r3;\n\
        \tmul.hi.s32 %r4, %r1, 1073741824;\n\tst.global.u32 [%rd1+8], %r4;\n\
        \tdiv.s32 %r5, %r1, 2;\n\tst.global.u32 [%rd1+12], %r5;\n\
        \trem.s32 %r6, %r1, 4;\n\tst.global.u32 [%rd1+16], %r6;\n\
        \tbfe.u32 %r7, 0xABCD1234, 8, 12;\n\tst.global.u32 [%rd1+20], %r7;\n\
        \tbfi.b32 %r8, 0xF, 0x12345678, 4, 8;\n\tst.global.u32 [%rd1+24], %r8;\n\
        \tpopc.b32 %r9, 0xF0F0;\n\tst.global.u32 [%rd1+28], %r9;\n\
        \tclz.b32 %r10, 0x00010000;\n\tst.global.u32 [%rd1+32], %r10;\n\
        \tbrev.b32 %r11, 1;\n\tst.global.u32 [%rd1+36], %r11;\n\
        \tsetp.lt.u32 %p1, %r1, 5;\n\tsetp.lt.s32.or %p2|%p3, %r1, 5, %p1;\n\tselp.u32 %r12, 1, 2, %p3;\n\tst.global.u32 [%rd1+40], %r12;\n\
        \tsetp.gtu.f32 %p1, 0f7FC00000, 0f3F800000;\n\tselp.u32 %r13, 3, 4, %p1;\n\tst.global.u32 [%rd1+44], %r13;\n\
        \tprmt.b32 %r14, 0x33221100, 0x77665544, 0x1357;\n\tst.global.u32 [%rd1+48], %r14;\n\
        \tmin.f32 %r15, 0f7FC00000, 0f40000000;\n\tst.global.u32 [%rd1+52], %r15;\n\
        \tshf.l.wrap.b32 %r16, 0x80000001, 0x00000003, 4;\n\tst.global.u32 [%rd1+56], %r16;\n\
        \tret;";
    let (o, rep) = run(&kernel(body), 1, 15);
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(o[0] as i32, -4);
    assert_eq!(o[1], 0xF);
    assert_eq!(o[2] as i32, -2);
    assert_eq!(o[3] as i32, -3);
    assert_eq!(o[4] as i32, -3);
    assert_eq!(o[5], 0xD12);
    assert_eq!(o[6], 0x123450F8);
    assert_eq!(o[7], 8);
    assert_eq!(o[8], 15);
    assert_eq!(o[9], 0x8000_0000);
    // -7 < 5 (signed) is true, so %p3 = !true || %p1(false, since 0xFFFFFFF9 >= 5 unsigned) = false
    assert_eq!(o[10], 2);
    assert_eq!(o[11], 3, "unordered compare with NaN is true");
    assert_eq!(
        o[12], 0x11335577,
        "result byte i is the source byte selected by nibble i"
    );
    assert_eq!(f32::from_bits(o[13]), 2.0, "min ignores a NaN operand");
    assert_eq!(o[14], 0x38, "shf.l takes the high word of {{b, a}} << n");
}

#[test]
fn infinite_loop_hits_the_instruction_limit() {
    let body = "$L:\n\tbra.uni $L;";
    let m = Module::parse(&kernel(body)).unwrap();
    let mut dev = Device::new();
    dev.options_mut().max_warp_instructions_per_cta = 10_000;
    let cfg = linear(2, 64);
    let rep = dev.launch(&m, "k", &cfg, &0u64.to_le_bytes()).unwrap();
    let f: Vec<_> = rep.of_kind(FindingKind::InstructionLimit).collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].occurrences, 2);
}

#[test]
fn launch_validation_errors() {
    let m = Module::parse(&kernel("\tret;")).unwrap();
    let mut dev = Device::new();
    let ok = linear(1, 32);
    assert!(matches!(
        dev.launch(&m, "nope", &ok, &[0; 8]),
        Err(EmuError::NoEntry(_))
    ));
    assert!(matches!(
        dev.launch(&m, "k", &ok, &[0; 4]),
        Err(EmuError::Launch(_))
    ));
    let big = linear(1, 2048);
    assert!(matches!(
        dev.launch(&m, "k", &big, &[0; 8]),
        Err(EmuError::Launch(_))
    ));
    assert!(dev.read(flashmha_emulator::DevicePtr(16), 4).is_err());
}

/// 128 threads exchange through shared `buf`: threads 0..63 (producers) store `produced` at
/// `buf[tid]` then run `producer_end`; threads 64..127 (consumers) run `consumer_start`, then
/// load `buf[tid - 64]` into `%r7` and run `consumer_end`. `%rd1` is the output pointer.
fn exchange(
    produced: &str,
    producer_end: &str,
    consumer_start: &str,
    consumer_end: &str,
) -> String {
    format!(
        "\t.reg .pred %p<3>;\n\t.reg .b32 %r<12>;\n\t.reg .b64 %rd<4>;\n\
        \t.shared .align 4 .b8 buf[256];\n\
        \tld.param.u64 %rd1, [k_param_0];\n\tmov.u32 %r1, %tid.x;\n\
        \tsetp.lt.u32 %p1, %r1, 64;\n\tmov.u32 %r2, buf;\n\t@!%p1 bra $CONSUMER;\n\
        \tshl.b32 %r3, %r1, 2;\n\tadd.s32 %r4, %r2, %r3;\n{produced}\
        \tst.shared.u32 [%r4], %r5;\n{producer_end}\tret;\n\
        $CONSUMER:\n{consumer_start}\tsub.s32 %r6, %r1, 64;\n\tshl.b32 %r3, %r6, 2;\n\
        \tadd.s32 %r4, %r2, %r3;\n\tld.shared.u32 %r7, [%r4];\n{consumer_end}\tret;"
    )
}

/// Producer/consumer through a named barrier with a thread count: producers `bar.arrive`,
/// consumers `bar.sync`; the consumers see the data and no race is reported.
#[test]
fn named_barrier_with_count_orders_producers_and_consumers() {
    let body = exchange(
        "\tmul.lo.s32 %r5, %r1, 7;\n",
        "\tbar.arrive 1, 128;\n",
        "\tbar.sync 1, 128;\n",
        "\tmul.wide.u32 %rd2, %r6, 4;\n\tadd.s64 %rd3, %rd1, %rd2;\n\tst.global.u32 [%rd3], %r7;\n",
    );
    let (out, rep) = run(&kernel(&body), 128, 64);
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, 7 * i as u32);
    }
    assert_eq!(rep.counters.barriers, 1);
}

/// Without the barrier the same exchange is a race (and, the consumers running first would
/// read unwritten memory): checks that the epoch logic does not hide it.
#[test]
fn exchange_without_barrier_is_reported() {
    let body = exchange("\tmov.u32 %r5, %r1;\n", "", "", "");
    let (_, rep) = run(&kernel(&body), 128, 1);
    assert!(rep.has(FindingKind::SharedRaceRaw), "{:?}", rep.findings);
}
