//! Foreign PTX: what other projects' nvcc output needs from the loader. A module whose entries
//! are not all supported still runs the supported ones; and no input, however mangled, makes
//! the parser or lowering panic or hang: it loads or returns a typed error.

use flashmha::common::build_info::MODULES;
use flashmha::emulator::{Device, EmuError, LaunchConfig, Module};
use proptest::prelude::*;

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

fn two_entries() -> String {
    format!(
        "{HEADER}\
.visible .entry good(.param .u64 good_out)\n{{\n\t.reg .b32 %r<4>;\n\t.reg .b64 %rd<4>;\n\
\tld.param.u64 %rd1, [good_out];\n\tmov.u32 %r1, 41;\n\tadd.s32 %r2, %r1, 1;\n\
\tst.global.u32 [%rd1], %r2;\n\tret;\n}}\n\
.visible .entry bad(.param .u64 bad_out)\n{{\n\t.reg .b32 %r<4>;\n\
\tmul24.lo.s32 %r1, %r1, %r2;\n\tret;\n}}\n"
    )
}

#[test]
fn an_unsupported_entry_does_not_stop_the_others() {
    let ptx = two_entries();
    let bad_line = ptx.lines().position(|l| l.contains("mul24")).unwrap() as u32 + 1;
    let m = Module::parse(&ptx).expect("module with one loadable entry loads");
    assert_eq!(m.entries().collect::<Vec<_>>(), vec!["good"]);
    let rejected: Vec<_> = m.rejected_entries().collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].0, "bad");

    let mut dev = Device::new();
    let out = dev.alloc(4);
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let params = out.0.to_le_bytes();
    let rep = dev
        .launch(&m, "good", &cfg, &params)
        .expect("good entry runs");
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    assert_eq!(dev.read(out, 4).unwrap(), 42u32.to_le_bytes());

    match dev.launch(&m, "bad", &cfg, &params) {
        Err(EmuError::Unsupported { line, opcode, .. }) => {
            assert_eq!(line, bad_line);
            assert_eq!(opcode, "mul24.lo.s32");
        }
        other => panic!("expected the bad entry's load error, got {other:?}"),
    }
    assert!(matches!(
        dev.launch(&m, "absent", &cfg, &params),
        Err(EmuError::NoEntry(_))
    ));
}

#[test]
fn a_module_with_no_loadable_entry_is_an_error() {
    let ptx = format!(
        "{HEADER}.visible .entry bad()\n{{\n\t.reg .b32 %r<4>;\n\tmul24.lo.s32 %r1, %r1, %r2;\n\tret;\n}}\n"
    );
    assert!(matches!(
        Module::parse(&ptx),
        Err(EmuError::Unsupported { line: 7, .. })
    ));
}

/// A non-inlined `.func` in the shape nvcc emits (`callseq` blocks with `.param` arguments,
/// `call.uni (retval0), f, (param0, param1)`): `sum_to(n, k)` fills a 16-byte `.local` array
/// with i*k, sums its first n elements in a loop, and adds `twice(n)` (a nested call);
/// an early `ret` for n == 0 returns 7.
const CALLS: &str = r#"
.func  (.param .b32 twice_retval0) twice(.param .b32 twice_param_0)
{
	.reg .b32 %r<3>;
	ld.param.b32 %r1, [twice_param_0];
	add.s32 %r2, %r1, %r1;
	st.param.b32 [twice_retval0], %r2;
	ret;
}
.func  (.param .b32 sum_retval0) sum_to(.param .b32 sum_param_0, .param .b32 sum_param_1)
{
	.local .align 4 .b8 frame[16];
	.reg .pred %p<3>;
	.reg .b32 %r<12>;
	.reg .b64 %rd<4>;
	ld.param.b32 %r1, [sum_param_0];
	ld.param.b32 %r2, [sum_param_1];
	setp.ne.s32 %p1, %r1, 0;
	@%p1 bra $L_work;
	mov.u32 %r9, 7;
	st.param.b32 [sum_retval0], %r9;
	ret;
$L_work:
	mov.u64 %rd1, frame;
	st.local.u32 [frame], 0;
	st.local.u32 [frame+4], %r2;
	add.s32 %r3, %r2, %r2;
	st.local.u32 [frame+8], %r3;
	add.s32 %r3, %r3, %r2;
	st.local.u32 [frame+12], %r3;
	mov.u32 %r4, 0;
	mov.u32 %r5, 0;
$L_loop:
	mul.wide.u32 %rd2, %r5, 4;
	add.s64 %rd3, %rd1, %rd2;
	ld.local.u32 %r6, [%rd3];
	add.s32 %r4, %r4, %r6;
	add.s32 %r5, %r5, 1;
	setp.lt.u32 %p2, %r5, %r1;
	@%p2 bra $L_loop;
	{ // callseq 9, 0
	.param .b32 param0;
	st.param.b32 [param0], %r1;
	.param .b32 retval0;
	call.uni (retval0), twice, (param0);
	ld.param.b32 %r7, [retval0];
	} // callseq 9
	add.s32 %r8, %r4, %r7;
	st.param.b32 [sum_retval0], %r8;
	ret;
}
.visible .entry calls(.param .u64 calls_out)
{
	.reg .b32 %r<12>;
	.reg .b64 %rd<6>;
	ld.param.u64 %rd1, [calls_out];
	mov.u32 %r1, %tid.x;
	and.b32 %r2, %r1, 3;
	add.s32 %r3, %r1, 1;
	{ // callseq 0, 0
	.param .b32 param0;
	st.param.b32 [param0], %r2;
	.param .b32 param1;
	st.param.b32 [param1], %r3;
	.param .b32 retval0;
	call.uni (retval0), sum_to, (param0, param1);
	ld.param.b32 %r4, [retval0];
	} // callseq 0
	{ // callseq 1, 0
	.param .b32 param0;
	st.param.b32 [param0], 3;
	.param .b32 param1;
	st.param.b32 [param1], %r4;
	.param .b32 retval0;
	call.uni (retval0), sum_to, (param0, param1);
	ld.param.b32 %r5, [retval0];
	} // callseq 1
	mul.wide.u32 %rd2, %r1, 8;
	add.s64 %rd3, %rd1, %rd2;
	st.global.v2.u32 [%rd3], {%r4, %r5};
	ret;
}
"#;

/// What `sum_to(n, k)` returns: sum of i*k for i < n, plus 2n; 7 for n == 0.
fn sum_to(n: u32, k: u32) -> u32 {
    if n == 0 {
        return 7;
    }
    (0..n).map(|i| i * k).sum::<u32>() + 2 * n
}

#[test]
fn calls_to_non_inlined_functions_pass_params_and_return_values() {
    let ptx = format!("{HEADER}{CALLS}");
    let m = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}"));
    let threads = 64u32;
    let mut dev = Device::new();
    let out = dev.alloc(8 * threads as usize);
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [threads, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let rep = dev
        .launch(&m, "calls", &cfg, &out.0.to_le_bytes())
        .expect("launch");
    assert!(rep.findings.is_empty(), "{:?}", rep.findings);
    let b = dev.read(out, 8 * threads as usize).unwrap();
    for t in 0..threads {
        let got = |k: usize| {
            let o = (8 * t) as usize + 4 * k;
            u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
        };
        let first = sum_to(t & 3, t + 1);
        assert_eq!(got(0), first, "thread {t}: first call");
        assert_eq!(got(1), sum_to(3, first), "thread {t}: second call");
    }
}

#[test]
fn recursion_and_missing_functions_are_typed_errors() {
    let rec = format!(
        "{HEADER}.func f()\n{{\n\tcall.uni f, ();\n\tret;\n}}\n.visible .entry e()\n{{\n\tcall.uni f, ();\n\tret;\n}}\n"
    );
    assert!(matches!(
        Module::parse(&rec),
        Err(EmuError::Unsupported { .. })
    ));
    let missing = format!(
        "{HEADER}.extern .func g();\n.visible .entry e()\n{{\n\tcall.uni g, ();\n\tret;\n}}\n"
    );
    assert!(matches!(
        Module::parse(&missing),
        Err(EmuError::Unsupported { .. })
    ));
}

/// Real PTX the build embeds: the shipped kernels (the largest inputs) and the emulator tests.
fn corpus() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = MODULES.iter().map(|m| m.ptx).collect();
    for stem in [
        "mma", "ldmatrix", "cp_async", "shfl", "atomics", "cvt", "sfu",
    ] {
        if let Some(p) = flashmha::common::build_info::emu_test_ptx(stem) {
            v.push(p);
        }
    }
    v
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Cut the text at this fraction of its length.
    Truncate(f64),
    /// Replace the byte at this fraction of the length.
    Flip(f64, u8),
    /// Copy the line at one fraction of the line count over the line at another.
    Splice(f64, f64),
    /// Delete the line at this fraction of the line count.
    DropLine(f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        (0.0..1.0f64, any::<u8>()).prop_map(|(f, b)| Mutation::Flip(f, b)),
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(a, b)| Mutation::Splice(a, b)),
        (0.0..1.0f64).prop_map(Mutation::DropLine),
    ]
}

fn apply(src: &str, muts: &[Mutation]) -> String {
    let mut bytes = src.as_bytes().to_vec();
    for m in muts {
        let at = |f: f64, n: usize| ((f * n as f64) as usize).min(n.saturating_sub(1));
        match *m {
            Mutation::Truncate(f) => bytes.truncate(at(f, bytes.len())),
            Mutation::Flip(f, b) => {
                if !bytes.is_empty() {
                    let i = at(f, bytes.len());
                    bytes[i] = b;
                }
            }
            Mutation::Splice(..) | Mutation::DropLine(..) if bytes.is_empty() => {}
            Mutation::Splice(a, b) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                let (i, j) = (at(a, lines.len()), at(b, lines.len()));
                lines[j] = lines[i];
                bytes = lines.join("\n").into_bytes();
            }
            Mutation::DropLine(a) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                let i = at(a, lines.len());
                lines.remove(i);
                bytes = lines.join("\n").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Parsing and lowering mutated real PTX returns Ok or a typed error; a panic fails the
    /// test, and the whole run is bounded by the test harness (a hang would never finish).
    #[test]
    fn mutated_real_ptx_loads_or_errors(which in any::<prop::sample::Index>(),
                                        muts in prop::collection::vec(mutation(), 1..4)) {
        let corpus = corpus();
        prop_assume!(!corpus.is_empty());
        let src = corpus[which.index(corpus.len())];
        let text = apply(src, &muts);
        match Module::parse(&text) {
            Ok(m) => {
                // Whatever loaded must answer queries about itself.
                for e in m.entries() {
                    prop_assert!(m.param_layout(e).is_some());
                }
            }
            Err(e) => {
                // A typed error that says where.
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
