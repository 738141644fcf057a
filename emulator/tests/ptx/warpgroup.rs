//! `wgmma.mma_async` as one operation of its warpgroup (PTX ISA "Asynchronous Warpgroup Level
//! Matrix Multiply-Accumulate Instructions": `.aligned` makes it one instruction of the four
//! warps, and `wgmma.wait_group` returns once the committed operations are complete, their
//! shared-memory operand reads included), on hand-written sm_90a PTX:
//! * the consumer-release pipeline pattern (one thread arrives on an mbarrier right after
//!   `wait_group`, a producer warp waiting on it overwrites B) with warps 1-3 issuing late:
//!   no finding and the right numbers in all 64 rows;
//! * the operation executes when the last warp issues, not before (a warp's wait blocks until
//!   then; an operand written between the first and the last issue is what all rows use, and
//!   is a finding);
//! * a wgmma issued by only two warps of the warpgroup is a divergent-collective finding,
//!   whether the others exit or wait elsewhere;
//! * the `wgmma.fence` rules of "wgmma.fence" (a fence before the first wgmma of a warp, and
//!   between another access to an accumulator or A register and the wgmma using it).
//!
//! The shared tiles use the ISA's canonical K-major layout without swizzle ("Asynchronous
//! Warpgroup Level Matrix Shared Memory Layout": 8 x 16-byte core matrices, LBO 128 between
//! the two k halves, SBO 256 between 8-row groups); the layouts themselves are tested in
//! `tests/fidelity/wgmma.rs`.

use flashmha_emulator::matrix_desc::{MatrixDesc, Swizzle};
use flashmha_emulator::{Device, FindingKind, LaunchConfig, LaunchReport, Module};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";
/// B's tile: N = 8 columns, K = 16, 256 bytes after A's 64 x 16 (2 KiB).
const B_BASE: u32 = 2048;
const N: usize = 8;

/// Where the canonical no-swizzle K-major layout puts element (mn, k) of a tile.
fn kmajor(mn: usize, k: usize) -> u32 {
    ((mn % 8) * 16 + (mn / 8) * 256 + (k % 8) * 2 + (k / 8) * 128) as u32
}

fn desc(start: u32) -> u64 {
    MatrixDesc {
        start,
        lbo: 128,
        sbo: 256,
        base_offset: 0,
        swizzle: Swizzle::None,
    }
    .encode()
}

/// Where the kernel plants code: `delayed` runs in warps 1-3 after their delay loop and before
/// they issue; `after_wait` in every consumer thread after `wgmma.wait_group`; `skip` right
/// before the consumers' delay (it may branch to `SKIPPED`, whose code is `skipped`); `fence`
/// is the line before the wgmma (normally `wgmma.fence`) and `pre_mma` follows it.
#[derive(Clone)]
struct Knobs {
    threads: u32,
    delayed: String,
    after_wait: String,
    skip: String,
    skipped: String,
    fence: String,
    pre_mma: String,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            threads: 160,
            delayed: String::new(),
            after_wait: String::new(),
            skip: String::new(),
            skipped: "\tret;".into(),
            fence: "\twgmma.fence.sync.aligned;".into(),
            pre_mma: String::new(),
        }
    }
}

/// Warps 0-3 (one warpgroup) compute D = A B (m64n8k16, A and B in shared memory) after warps
/// 1-3 spin `p_delay` iterations; thread 0 then arrives on an mbarrier that warp 4, the
/// producer, waits on before overwriting B with the (offset, value) pairs of `p_new`.
/// Parameters (all 64-bit): scatter values and offsets and their count, new B pairs, output
/// (4 f32 per consumer thread), delay, flags (16 u32).
fn kernel(k: &Knobs) -> String {
    let Knobs {
        threads,
        delayed,
        after_wait,
        skip,
        skipped,
        fence,
        pre_mma,
    } = k;
    let (da, db) = (desc(0), desc(B_BASE));
    format!(
        "{HEADER}.visible .entry k(.param .u64 p_vals, .param .u64 p_offs, .param .u64 p_count,
	.param .u64 p_new, .param .u64 p_out, .param .u64 p_delay, .param .u64 p_flags)
{{
	.reg .b32 %r<40>;
	.reg .b64 %rd<40>;
	.reg .pred %p<10>;
	.reg .f32 %f<8>;
	.reg .b16 %h<4>;
	.shared .align 1024 .b8 smem[4096];
	.shared .align 8 .b64 bar;
	ld.param.u64 %rd1, [p_vals];
	ld.param.u64 %rd2, [p_offs];
	ld.param.u64 %rd3, [p_count];
	ld.param.u64 %rd30, [p_flags];
	cvt.u32.u64 %r1, %rd3;
	mov.u32 %r2, %tid.x;
	shr.u32 %r20, %r2, 5;
	mov.u32 %r21, smem;
	// Thread t scatters elements t, t + threads, ...: pointers into offsets and values.
	mul.wide.u32 %rd4, %r2, 4;
	add.s64 %rd5, %rd2, %rd4;
	mul.wide.u32 %rd6, %r2, 2;
	add.s64 %rd7, %rd1, %rd6;
	mov.u32 %r3, %r2;
SCATTER:
	setp.ge.u32 %p1, %r3, %r1;
	@%p1 bra DONE;
	ld.global.u32 %r4, [%rd5];
	ld.global.u16 %h1, [%rd7];
	add.u32 %r5, %r21, %r4;
	st.shared.u16 [%r5], %h1;
	add.s64 %rd5, %rd5, {offs_step};
	add.s64 %rd7, %rd7, {vals_step};
	add.u32 %r3, %r3, {threads};
	bra SCATTER;
DONE:
	mov.u32 %r6, bar;
	setp.ne.u32 %p2, %r2, 0;
	@%p2 bra SYNC;
	mbarrier.init.shared::cta.b64 [%r6], 1;
SYNC:
	bar.sync 0;
	fence.proxy.async.shared::cta;
	setp.eq.u32 %p3, %r20, 4;
	@%p3 bra PRODUCER;
{skip}
	setp.eq.u32 %p4, %r20, 0;
	@%p4 bra ISSUE;
	ld.param.u64 %rd8, [p_delay];
	cvt.u32.u64 %r7, %rd8;
DELAY:
	setp.eq.u32 %p5, %r7, 0;
	@%p5 bra DELAYED;
	sub.u32 %r7, %r7, 1;
	bra DELAY;
DELAYED:
{delayed}
ISSUE:
	shr.u32 %r13, %r21, 4;
	cvt.u64.u32 %rd21, %r13;
	add.s64 %rd10, %rd21, {da};
	add.s64 %rd11, %rd21, {db};
	setp.ne.u32 %p6, %r2, %r2;
{fence}
{pre_mma}
	wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {{%f0, %f1, %f2, %f3}}, %rd10, %rd11, %p6, 1, 1, 0, 0;
	wgmma.commit_group.sync.aligned;
	wgmma.wait_group.sync.aligned 0;
{after_wait}
	@%p2 bra STORE;
	mbarrier.arrive.shared::cta.b64 _, [%r6];
STORE:
	ld.param.u64 %rd12, [p_out];
	mul.wide.u32 %rd13, %r2, 16;
	add.s64 %rd14, %rd12, %rd13;
	st.global.v4.f32 [%rd14], {{%f0, %f1, %f2, %f3}};
	ret;
PRODUCER:
	ld.param.u64 %rd15, [p_new];
	mov.u32 %r8, %laneid;
WAIT:
	mbarrier.try_wait.parity.shared::cta.b64 %p7, [%r6], 0;
	@!%p7 bra WAIT;
PLOOP:
	setp.ge.u32 %p1, %r8, {nb};
	@%p1 bra PDONE;
	mul.wide.u32 %rd16, %r8, 8;
	add.s64 %rd17, %rd15, %rd16;
	ld.global.v2.u32 {{%r9, %r10}}, [%rd17];
	add.u32 %r11, %r21, %r9;
	cvt.u16.u32 %h2, %r10;
	st.shared.u16 [%r11], %h2;
	add.u32 %r8, %r8, 32;
	bra PLOOP;
PDONE:
	ret;
SKIPPED:
{skipped}
}}
",
        nb = N * 16,
        offs_step = 4 * threads,
        vals_step = 2 * threads,
    )
}

/// A random value, a multiple of 1/64 in [-1, 1] and never zero: products and the 16-term
/// sums are exact in f32, so results compare bit for bit.
fn val(r: &mut StdRng) -> f32 {
    let k: i32 = r.random_range(1..=64);
    let s = if r.random_bool(0.5) { -1 } else { 1 };
    (s * k) as f32 / 64.0
}

/// One run's operands: A (64 x 16), B and the producer's replacement B (16 x N, [k][n]).
struct Case {
    a: Vec<f32>,
    b: Vec<f32>,
    b_new: Vec<f32>,
}

impl Case {
    fn new(seed: u64) -> Case {
        let mut r = StdRng::seed_from_u64(seed);
        let mut gen = |n: usize| (0..n).map(|_| val(&mut r)).collect::<Vec<f32>>();
        Case {
            a: gen(64 * 16),
            b: gen(16 * N),
            b_new: gen(16 * N),
        }
    }

    /// D = A B as the consumer threads hold it (4 f32 per thread, "Matrix Fragments for
    /// wgmma.mma_async": row 16 warp + lane/4 + 8 ((i/2)%2), column 2 (lane%4) + i%2).
    fn expect(&self, b: &[f32]) -> Vec<f32> {
        let mut d = vec![0f32; 128 * 4];
        for tid in 0..128usize {
            let (warp, lane) = (tid / 32, tid % 32);
            for i in 0..4 {
                let row = 16 * warp + lane / 4 + 8 * ((i / 2) % 2);
                let col = 2 * (lane % 4) + i % 2;
                d[tid * 4 + i] = (0..16).map(|k| self.a[row * 16 + k] * b[k * N + col]).sum();
            }
        }
        d
    }
}

fn bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// Runs `kernel(k)` on `c` with the given delay of warps 1-3: the report, D (128 x 4 f32) and
/// the flags.
fn run(k: &Knobs, c: &Case, delay: u64) -> (LaunchReport, Vec<f32>, Vec<u32>) {
    let m = Module::parse(&kernel(k)).unwrap_or_else(|e| panic!("{e}"));
    let mut vals = Vec::new();
    let mut offs = Vec::new();
    for mn in 0..64 {
        for kk in 0..16 {
            vals.push(bits(c.a[mn * 16 + kk]));
            offs.push(kmajor(mn, kk));
        }
    }
    let mut new = Vec::new();
    for n in 0..N {
        for kk in 0..16 {
            vals.push(bits(c.b[kk * N + n]));
            offs.push(B_BASE + kmajor(n, kk));
            new.extend([B_BASE + kmajor(n, kk), bits(c.b_new[kk * N + n]) as u32]);
        }
    }
    let mut dev = Device::new();
    let le = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let p_vals = dev.upload(
        &vals
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let p_offs = dev.upload(&le(&offs));
    let p_new = dev.upload(&le(&new));
    let out = dev.upload(&[0u8; 128 * 16]);
    let flags = dev.upload(&[0u8; 64]);
    let params: Vec<u8> = [
        p_vals.0,
        p_offs.0,
        vals.len() as u64,
        p_new.0,
        out.0,
        delay,
        flags.0,
    ]
    .iter()
    .flat_map(|x| x.to_le_bytes())
    .collect();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [k.threads, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let rep = dev.launch(&m, "k", &cfg, &params).expect("launch");
    let d = dev.read(out, 128 * 16).unwrap();
    let d = d
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let f = dev.read(flags, 64).unwrap();
    let f = f
        .chunks(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (rep, d, f)
}

fn assert_rows(got: &[f32], want: &[f32], what: &str) {
    for (slot, (g, w)) in got.iter().zip(want).enumerate() {
        let (tid, i) = (slot / 4, slot % 4);
        let row = 16 * (tid / 32) + (tid % 32) / 4 + 8 * ((i / 2) % 2);
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: D row {row} (thread {tid}, register {i}): got {g}, expected {w}"
        );
    }
}

/// The issue's repro: thread 0 releases the stage right after `wgmma.wait_group 0` and the
/// producer overwrites B, while warps 1-3 reach the wgmma late (a short delay: under per-warp
/// execution their operand reads came after the release, a write-after-read race finding;
/// a long one, past the scheduler's time slice: rows 16-63 computed from the new B). As one
/// warpgroup operation, the wgmma reads B before any wait returns: clean, and every row is
/// A times the original B.
#[test]
fn a_stage_released_after_one_threads_wait_is_read_by_all_four_warps_first() {
    for (seed, delay) in [(1u64, 100u64), (2, 30_000)] {
        let c = Case::new(seed);
        let (rep, d, _) = run(&Knobs::default(), &c, delay);
        assert!(rep.is_clean(), "delay {delay}: {:?}", rep.findings);
        assert_rows(&d, &c.expect(&c.b), &format!("delay {delay}"));
        assert_eq!(rep.counters.wgmma_instructions, 1);
        assert_eq!(rep.counters.wgmma_flops, 2 * 64 * N as u64 * 16);
    }
}

/// The operation executes when the fourth warp issues, not before: warp 0's `wait_group`
/// returns only after warps 1-3 wrote their flags (just before they issued), and a B element
/// that warp 2 overwrites between warp 0's issue and its own is what all 64 rows use (rows
/// 0-15, warp 0's, included); that write is a `WgmmaOperandWriteBeforeWait` finding, since
/// warps 0 and 1 had issued the wgmma reading it.
#[test]
fn the_operation_executes_when_the_last_warp_issues_not_before() {
    let c = Case::new(3);
    let mut k = Knobs {
        delayed: "\tmul.wide.u32 %rd31, %r20, 4;\n\tadd.s64 %rd32, %rd30, %rd31;\n\tst.global.u32 [%rd32], %r20;".into(),
        after_wait: "\tld.global.u32 %r30, [%rd30+4];\n\tld.global.u32 %r31, [%rd30+8];\n\tld.global.u32 %r32, [%rd30+12];\n\
\tadd.u32 %r30, %r30, %r31;\n\tadd.u32 %r30, %r30, %r32;\n\tmul.wide.u32 %rd33, %r2, 4;\n\tadd.s64 %rd34, %rd30, %rd33;\n\
\tsetp.lt.u32 %p8, %r2, 4;\n\t@%p8 st.global.u32 [%rd34+32], %r30;"
            .into(),
        ..Knobs::default()
    };
    let (rep, d, flags) = run(&k, &c, 30_000);
    assert!(rep.is_clean(), "{:?}", rep.findings);
    assert_rows(&d, &c.expect(&c.b), "flags");
    assert_eq!(&flags[1..4], &[1, 2, 3], "warps 1-3 wrote their flags");
    // Threads 0..3 (warp 0) read the flags after their wait: all three were written.
    assert_eq!(
        &flags[8..12],
        &[6, 6, 6, 6],
        "warp 0's wait returned before warps 1-3 issued"
    );

    // Warp 2, lane 0 overwrites B (k 0, n 0) with the producer's value before it issues.
    let off = B_BASE + kmajor(0, 0);
    k.delayed = format!(
        "\tsetp.eq.u32 %p8, %r2, 64;\n\tmov.u16 %h3, {};\n\t@%p8 st.shared.u16 [%r21+{off}], %h3;",
        bits(c.b_new[0])
    );
    k.after_wait = String::new();
    let (rep, d, _) = run(&k, &c, 30_000);
    let f: Vec<_> = rep.findings.iter().map(|f| f.kind).collect();
    assert_eq!(
        f,
        [FindingKind::WgmmaOperandWriteBeforeWait],
        "{:?}",
        rep.findings
    );
    let mut b = c.b.clone();
    b[0] = c.b_new[0];
    assert_rows(
        &d,
        &c.expect(&b),
        "B written between the first and the last issue",
    );
}

/// PTX ISA "wgmma.mma_async" (`.aligned`: every warp of the warpgroup executes it): a wgmma
/// that warps 2 and 3 skip is a `DivergentCollective` finding, both when they exit (the
/// operation executes once nobody else can issue it) and when they wait at a barrier the
/// issuing warps reach only after their `wait_group` (a stall the emulator resolves by
/// executing it). Warps 0 and 1 still get their rows, and nothing hangs.
#[test]
fn a_wgmma_issued_by_two_warps_of_the_warpgroup_is_a_divergent_collective() {
    let c = Case::new(4);
    let want = c.expect(&c.b);
    for (tail, after) in [
        ("\tret;", ""),
        ("\tbar.sync 1, 128;\n\tret;", "\tbar.sync 1, 128;"),
    ] {
        let k = Knobs {
            threads: 128,
            skip: "\tsetp.ge.u32 %p9, %r20, 2;\n\t@%p9 bra SKIPPED;".into(),
            skipped: tail.into(),
            after_wait: after.into(),
            ..Knobs::default()
        };
        let (rep, d, _) = run(&k, &c, 10);
        // One finding, at the wgmma.
        let at_wgmma = |f: &flashmha_emulator::Finding| {
            f.kind == FindingKind::DivergentCollective && f.ptx.contains("wgmma.mma_async")
        };
        assert!(
            rep.findings.len() == 1 && at_wgmma(&rep.findings[0]),
            "`{tail}`: {:?}",
            rep.findings
        );
        assert_rows(&d[..64 * 4], &want[..64 * 4], tail);
        assert!(
            d[64 * 4..].iter().all(|&x| x == 0.0),
            "warps 2-3 stored nothing"
        );
    }
    // The same wgmma issued by all four warps is clean.
    let (rep, d, _) = run(
        &Knobs {
            threads: 128,
            ..Knobs::default()
        },
        &c,
        10,
    );
    assert!(rep.is_clean(), "{:?}", rep.findings);
    assert_rows(&d, &want, "all four warps");
}

/// PTX ISA "wgmma.fence": a fence is required before the first `wgmma.mma_async` of a warp,
/// and between another instruction's access to an accumulator (or A-fragment) register and
/// the wgmma that uses it. Either omission is a `WgmmaMissingFence` finding at the wgmma; the
/// same access before the fence is clean.
#[test]
fn a_wgmma_without_the_required_fence_is_a_finding() {
    let c = Case::new(5);
    let touch = "\tmov.f32 %f1, 0f3F800000;";
    let cases = [
        (String::new(), String::new(), true),
        (
            format!("{touch}\n\twgmma.fence.sync.aligned;"),
            String::new(),
            false,
        ),
        (
            "\twgmma.fence.sync.aligned;".to_string(),
            touch.to_string(),
            true,
        ),
        (
            "\tmov.f32 %f7, %f1;\n\twgmma.fence.sync.aligned;".to_string(),
            "\tadd.f32 %f6, %f0, %f0;".to_string(),
            true,
        ),
    ];
    for (fence, pre, finding) in cases {
        let k = Knobs {
            fence: fence.clone(),
            pre_mma: pre.clone(),
            ..Knobs::default()
        };
        let (rep, d, _) = run(&k, &c, 10);
        if finding {
            let kinds: Vec<_> = rep.findings.iter().map(|f| f.kind).collect();
            assert_eq!(
                kinds,
                [FindingKind::WgmmaMissingFence],
                "`{fence}` `{pre}`: {:?}",
                rep.findings
            );
        } else {
            assert!(rep.is_clean(), "`{fence}` `{pre}`: {:?}", rep.findings);
        }
        assert_rows(&d, &c.expect(&c.b), &format!("`{fence}` `{pre}`"));
    }
}
