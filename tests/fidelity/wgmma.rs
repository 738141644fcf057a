//! Fidelity of the warpgroup MMA family (`wgmma.mma_async`, `wgmma.fence/commit_group/
//! wait_group`) and of `stmatrix`, on hand-written sm_90a PTX, against the PTX ISA text:
//! * "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions: wgmma.mma_async"
//!   (operands, scale-d, imm-scale-a/b, imm-trans-a/b, legal shapes and types);
//! * "Asynchronous Warpgroup Level Matrix Shared Memory Layout" ("Matrix Descriptor Format" and
//!   the canonical K-major / MN-major layouts of core matrices, with the 32B/64B/128B swizzles);
//! * "Matrix Fragments for wgmma.mma_async" (m64nNk16 register fragments of A and D);
//! * "Warp-level matrix store instruction: stmatrix".
//!
//! The kernels scatter random global values into shared memory at offsets this file computes
//! from the ISA layouts on its own (CuTe-style shape:stride tuples and an absolute-address
//! swizzle), build the descriptors with the public encoder, and compare against a CPU matmul.
//! Inputs are multiples of 1/64 in [-1, 1], exact in f16 and bf16, so every product and the
//! f32 sums are exact and the comparison is bit-exact.
use crate::emulator_support;

use emulator_support::*;
use flashmha::emulator::matrix_desc::{Major, MatrixDesc, Swizzle};
use flashmha::emulator::{Device, EmuError, FindingKind, LaunchReport, Module};
use half::{bf16, f16};
use rand::Rng;

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";
/// Shared-memory regions of the test kernel: A at 0 (8 KiB), B at 8 KiB (32 KiB).
const A_BASE: u32 = 0;
const B_BASE: u32 = 8192;
const SMEM: u32 = 40960;

#[derive(Clone, Copy, Debug, PartialEq)]
enum ASrc {
    Regs,
    Smem(Major),
}

#[derive(Clone, Copy, Debug)]
struct Case {
    n: u32,
    bf16: bool,
    a: ASrc,
    a_swz: Swizzle,
    b_major: Major,
    b_swz: Swizzle,
    scale_d: bool,
    neg_a: bool,
    neg_b: bool,
}

/// Where the ISA's canonical layout puts a 16-bit operand of `mn_extent` x 16 (K) elements,
/// with deliberately padded strides so that LBO and SBO both matter: the descriptor fields and
/// the byte offset (relative to the 1024-aligned tile) of every element.
struct Placement {
    start: u32,
    lbo: u32,
    sbo: u32,
    offs: Vec<u32>,
}

/// Swizzle of a byte address inside a tile aligned to the pattern's repeat: 16-byte chunk
/// index (bits 4..) XOR the 128-byte row index (bits 7..), 1, 2 or 3 bits wide.
fn swizzle(swz: Swizzle, addr: u32) -> u32 {
    let bits = match swz {
        Swizzle::None => return addr,
        Swizzle::B32 => 1,
        Swizzle::B64 => 2,
        Swizzle::B128 => 3,
    };
    let mask = (1u32 << bits) - 1;
    addr ^ (((addr >> 7) & mask) << 4)
}

/// Evaluates a CuTe-style layout: coordinate `c` decomposed over `shape` (first mode
/// fastest), dotted with `stride` (in bytes).
fn eval(c: u32, shape: &[u32], stride: &[u32]) -> u32 {
    let mut c = c;
    let mut off = 0;
    for (s, d) in shape.iter().zip(stride) {
        off += (c % s) * d;
        c /= s;
    }
    off
}

/// The canonical layouts of "Asynchronous Warpgroup Level Matrix Shared Memory Layout", in
/// bytes, T = 16 bytes (8 elements), W = swizzle width:
/// * K-major, none:     ((8,m),(8,k)) : ((T, SBO), (2, LBO))
/// * K-major, W:        ((8,m),(W/2)) : ((W, SBO), (2))        (K slice at +32 B for W > 32)
/// * MN-major, none:    ((8,m),(8,k)) : ((2, SBO), (T, LBO))
/// * MN-major, W:       ((W/2,m),(8,k)) : ((2, LBO), (W, SBO))
fn place(swz: Swizzle, major: Major, mn_extent: u32) -> Placement {
    let w = match swz {
        Swizzle::None => 16,
        Swizzle::B32 => 32,
        Swizzle::B64 => 64,
        Swizzle::B128 => 128,
    };
    let (lbo, sbo, kbase) = match (major, swz) {
        (Major::K, Swizzle::None) => (128, 384, 0),
        // LBO is unused for swizzled K-major layouts; any value must do.
        (Major::K, _) => (16 * 5, 8 * w, if w > 32 { 32 } else { 0 }),
        (Major::MN, Swizzle::None) => (mn_extent / 8 * 128 + 256, 128, 0),
        (Major::MN, _) => (24 * w, 8 * w, 0),
    };
    let mut offs = Vec::new();
    for mn in 0..mn_extent {
        for k in 0..16u32 {
            let lin = match (major, swz) {
                (Major::K, Swizzle::None) => {
                    eval(mn, &[8, 1 << 20], &[16, sbo]) + eval(k, &[8, 2], &[2, lbo])
                }
                (Major::K, _) => eval(mn, &[8, 1 << 20], &[w, sbo]) + kbase + 2 * k,
                (Major::MN, Swizzle::None) => {
                    eval(mn, &[8, 1 << 20], &[2, sbo]) + eval(k, &[8, 2], &[16, lbo])
                }
                (Major::MN, _) => {
                    eval(mn, &[w / 2, 1 << 20], &[2, lbo]) + eval(k, &[8, 2], &[w, sbo])
                }
            };
            offs.push(swizzle(swz, lin));
        }
    }
    Placement {
        start: kbase,
        lbo,
        sbo,
        offs,
    }
}

/// A random value, a multiple of 1/64 in [-1, 1] and never zero.
fn rand_val(r: &mut impl Rng) -> f32 {
    let k: i32 = r.random_range(1..=64);
    let s = if r.random_bool(0.5) { -1 } else { 1 };
    (s * k) as f32 / 64.0
}

fn bits(x: f32, bf: bool) -> u16 {
    if bf {
        bf16::from_f32(x).to_bits()
    } else {
        f16::from_f32(x).to_bits()
    }
}

/// (row, col) of accumulator register `i` of thread `tid` (0..128) for m64nNk16, from "Matrix
/// Fragments for wgmma.mma_async": row = 16*warp + lane/4 + 8*((i/2)%2),
/// col = 8*(i/4) + 2*(lane%4) + i%2.
fn d_pos(tid: u32, i: u32) -> (usize, usize) {
    let (warp, lane) = (tid / 32, tid % 32);
    (
        (16 * warp + lane / 4 + 8 * ((i / 2) % 2)) as usize,
        (8 * (i / 4) + 2 * (lane % 4) + i % 2) as usize,
    )
}

/// (row, col) of A element `i` (0..8) of thread `tid` when A comes from registers: a0,a1 at
/// (g, 2t..), a2,a3 at (g+8, 2t..), a4,a5 at (g, 2t+8..), a6,a7 at (g+8, 2t+8..), rows offset
/// by 16 per warp.
fn a_pos(tid: u32, i: u32) -> (usize, usize) {
    let (warp, lane) = (tid / 32, tid % 32);
    (
        (16 * warp + lane / 4 + 8 * ((i / 2) % 2)) as usize,
        (2 * (lane % 4) + i % 2 + 8 * (i / 4)) as usize,
    )
}

/// The test kernel. Parameters: scatter values and offsets (u16, u32, count), A fragments (4
/// x b32 per thread), initial accumulators and output (N/2 f32 per thread), descriptors
/// (2 x u64), scale-d. `between` is inserted after `commit_group`, before `wait_group`;
/// `after` after it.
fn kernel(c: &Case, between: &str, after: &str) -> String {
    let n = c.n;
    let nd = n / 2;
    let ty = if c.bf16 { "bf16" } else { "f16" };
    let dlist: Vec<String> = (0..nd).map(|i| format!("%f{i}")).collect();
    let dlist = dlist.join(", ");
    let mut ld_c = String::new();
    let mut st_d = String::new();
    for i in 0..nd {
        ld_c += &format!("\tld.global.f32 %f{i}, [%rd9+{}];\n", 4 * i);
        st_d += &format!("\tst.global.f32 [%rd15+{}], %f{i};\n", 4 * i);
    }
    let sa = if c.neg_a { -1 } else { 1 };
    let sb = if c.neg_b { -1 } else { 1 };
    let tb = (c.b_major == Major::MN) as u32;
    let (a_op, trans) = match c.a {
        ASrc::Regs => ("{%r8, %r9, %r10, %r11}".to_string(), format!("{tb}")),
        ASrc::Smem(m) => (
            "%rd13".to_string(),
            format!("{}, {tb}", (m == Major::MN) as u32),
        ),
    };
    format!(
        "{HEADER}.visible .entry k(.param .u64 p_vals, .param .u64 p_offs, .param .u32 p_count,
	.param .u64 p_afrag, .param .u64 p_c, .param .u64 p_out, .param .u64 p_desc, .param .u32 p_sd)
{{
	.reg .b32 %r<24>;
	.reg .b64 %rd<24>;
	.reg .pred %p<4>;
	.reg .f32 %f<130>;
	.reg .b16 %h<2>;
	.shared .align 1024 .b8 smem[{SMEM}];
	ld.param.u64 %rd1, [p_vals];
	ld.param.u64 %rd2, [p_offs];
	ld.param.u32 %r1, [p_count];
	mov.u32 %r2, %tid.x;
	mov.u32 %r3, %r2;
SCATTER:
	setp.ge.u32 %p1, %r3, %r1;
	@%p1 bra DONE;
	mul.wide.u32 %rd3, %r3, 4;
	add.s64 %rd4, %rd2, %rd3;
	ld.global.u32 %r4, [%rd4];
	mul.wide.u32 %rd5, %r3, 2;
	add.s64 %rd6, %rd1, %rd5;
	ld.global.u16 %h1, [%rd6];
	mov.u32 %r5, smem;
	add.u32 %r5, %r5, %r4;
	st.shared.u16 [%r5], %h1;
	add.u32 %r3, %r3, 128;
	bra SCATTER;
DONE:
	bar.sync 0;
	fence.proxy.async.shared::cta;
	ld.param.u64 %rd7, [p_c];
	mul.wide.u32 %rd8, %r2, {};
	add.s64 %rd9, %rd7, %rd8;
{ld_c}	ld.param.u64 %rd10, [p_afrag];
	mul.wide.u32 %rd11, %r2, 16;
	add.s64 %rd12, %rd10, %rd11;
	ld.global.v4.u32 {{%r8, %r9, %r10, %r11}}, [%rd12];
	ld.param.u64 %rd16, [p_desc];
	ld.global.u64 %rd13, [%rd16];
	ld.global.u64 %rd14, [%rd16+8];
	ld.param.u32 %r6, [p_sd];
	setp.ne.u32 %p2, %r6, 0;
	wgmma.fence.sync.aligned;
	wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {{{dlist}}}, {a_op}, %rd14, %p2, {sa}, {sb}, {trans};
	wgmma.commit_group.sync.aligned;
{between}
	wgmma.wait_group.sync.aligned 0;
{after}
	ld.param.u64 %rd15, [p_out];
	add.s64 %rd15, %rd15, %rd8;
{st_d}	ret;
}}
",
        4 * nd
    )
}

/// Inputs and the expected result of one case.
struct Prepared {
    vals: Vec<u16>,
    offs: Vec<u32>,
    afrag: Vec<u32>,
    cinit: Vec<f32>,
    descs: [u64; 2],
    expect: Vec<f32>,
}

/// Places an `mn_extent x 16` operand (element (mn, k) = `at(mn, k)`) at shared-memory offset
/// `base` with `swz` and `major`, appending its (value, offset) pairs; its matrix descriptor.
fn place_operand(
    c: &Case,
    (base, swz, major, mn_extent): (u32, Swizzle, Major, u32),
    at: impl Fn(usize, usize) -> f32,
    vals: &mut Vec<u16>,
    offs: &mut Vec<u32>,
) -> u64 {
    let p = place(swz, major, mn_extent);
    for mn in 0..mn_extent as usize {
        for k in 0..16 {
            vals.push(bits(at(mn, k), c.bf16));
            offs.push(base + p.offs[mn * 16 + k]);
        }
    }
    MatrixDesc {
        start: base + p.start,
        lbo: p.lbo,
        sbo: p.sbo,
        base_offset: 0,
        swizzle: swz,
    }
    .encode()
}

fn prepare(c: &Case, seed: u64) -> Prepared {
    let n = c.n as usize;
    let mut r = rng(seed);
    let a: Vec<f32> = (0..64 * 16).map(|_| rand_val(&mut r)).collect();
    let b: Vec<f32> = (0..16 * n).map(|_| rand_val(&mut r)).collect();
    let cm: Vec<f32> = (0..64 * n).map(|_| rand_val(&mut r)).collect();
    let (mut vals, mut offs) = (Vec::new(), Vec::new());
    let mut descs = [0u64; 2];
    if let ASrc::Smem(m) = c.a {
        let operand = (A_BASE, c.a_swz, m, 64);
        descs[0] = place_operand(c, operand, |mn, k| a[mn * 16 + k], &mut vals, &mut offs);
    }
    let operand = (B_BASE, c.b_swz, c.b_major, c.n);
    descs[1] = place_operand(c, operand, |nn, k| b[k * n + nn], &mut vals, &mut offs);
    assert!(offs.iter().all(|&o| o + 2 <= SMEM));
    let mut afrag = vec![0u32; 128 * 4];
    for tid in 0..128u32 {
        for reg in 0..4u32 {
            let (r0, c0) = a_pos(tid, 2 * reg);
            let (r1, c1) = a_pos(tid, 2 * reg + 1);
            afrag[(tid * 4 + reg) as usize] =
                bits(a[r0 * 16 + c0], c.bf16) as u32 | (bits(a[r1 * 16 + c1], c.bf16) as u32) << 16;
        }
    }
    let nd = c.n / 2;
    let mut cinit = vec![0f32; 128 * nd as usize];
    let mut expect = vec![0f32; 128 * nd as usize];
    let sa = if c.neg_a { -1.0 } else { 1.0 };
    let sb = if c.neg_b { -1.0 } else { 1.0 };
    for tid in 0..128u32 {
        for i in 0..nd {
            let (row, col) = d_pos(tid, i);
            let slot = (tid * nd + i) as usize;
            cinit[slot] = cm[row * n + col];
            let mut s = if c.scale_d { cm[row * n + col] } else { 0.0 };
            for k in 0..16 {
                s += sa * a[row * 16 + k] * sb * b[k * n + col];
            }
            expect[slot] = s;
        }
    }
    Prepared {
        vals,
        offs,
        afrag,
        cinit,
        descs,
        expect,
    }
}

/// Runs a case with the planted lines; returns the report and the output fragments.
fn run_case(c: &Case, seed: u64, between: &str, after: &str) -> (LaunchReport, Prepared, Vec<f32>) {
    run_ptx(c, &kernel(c, between, after), seed, c.scale_d as u32)
}

/// Runs `ptx` (a [`kernel`] of `c`, possibly edited) on the operands of `prepare(c, seed)`,
/// passing `scale_d` as the predicate parameter; the report, the operands and D.
fn run_ptx(c: &Case, ptx: &str, seed: u64, scale_d: u32) -> (LaunchReport, Prepared, Vec<f32>) {
    let m = Module::parse(ptx).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let p = prepare(c, seed);
    let mut dev = Device::new();
    let out = dev.alloc(p.expect.len() * 4);
    let args = [
        Arg::Ptr(upload(&mut dev, &p.vals)),
        Arg::Ptr(upload(&mut dev, &p.offs)),
        Arg::U32(p.vals.len() as u32),
        Arg::Ptr(upload(&mut dev, &p.afrag)),
        Arg::Ptr(upload(&mut dev, &p.cinit)),
        Arg::Ptr(out),
        Arg::Ptr(upload(&mut dev, &p.descs)),
        Arg::U32(scale_d),
    ];
    let rep = launch(&mut dev, &m, "k", 1, 128, &args);
    let got = download::<f32>(&dev, out, p.expect.len());
    (rep, p, got)
}

/// `c`'s kernel with its `wgmma.mma_async` line replaced by `edit(line)`.
fn with_wgmma_line(c: &Case, edit: impl Fn(&str) -> String) -> String {
    let ptx = kernel(c, "", "");
    let line = ptx
        .lines()
        .find(|l| l.contains("wgmma.mma_async"))
        .unwrap()
        .to_string();
    ptx.replace(&line, &edit(&line))
}

/// Runs a case and insists on a clean report, the exact CPU result and the counters.
fn check(c: &Case, seed: u64) {
    let (rep, p, got) = run_case(c, seed, "", "");
    assert!(rep.is_clean(), "{c:?}: {:?}", rep.findings);
    for (slot, (g, e)) in got.iter().zip(&p.expect).enumerate() {
        let (tid, i) = (slot as u32 / (c.n / 2), slot as u32 % (c.n / 2));
        assert_eq!(
            g.to_bits(),
            e.to_bits(),
            "{c:?}: D{:?} (thread {tid}, register {i}): got {g}, expected {e}",
            d_pos(tid, i)
        );
    }
    assert_eq!(rep.counters.wgmma_instructions, 1, "{c:?}");
    assert_eq!(
        rep.counters.wgmma_flops,
        2 * 64 * c.n as u64 * 16,
        "{c:?}: 2*64*N*16 FLOPs per wgmma"
    );
    // The shared-memory operands the instruction reads through its descriptors (the ISA's
    // "Matrix Descriptor Format" names A only when A is not in registers): B is N x K = N x 16
    // 16-bit elements, A 64 x 16; each counted once per warpgroup instruction.
    let a_bytes = if c.a == ASrc::Regs { 0 } else { 64 * 16 * 2 };
    assert_eq!(
        rep.counters.wgmma_smem_bytes,
        a_bytes + c.n as u64 * 16 * 2,
        "{c:?}: smem operand bytes"
    );
}

fn case(n: u32, a: ASrc, a_swz: Swizzle, b_major: Major, b_swz: Swizzle) -> Case {
    Case {
        n,
        bf16: false,
        a,
        a_swz,
        b_major,
        b_swz,
        scale_d: true,
        neg_a: false,
        neg_b: false,
    }
}

const SWIZZLES: [Swizzle; 4] = [Swizzle::None, Swizzle::B32, Swizzle::B64, Swizzle::B128];

/// PTX ISA "Asynchronous Warpgroup Level Matrix Shared Memory Layout" (every swizzle mode, K-
/// and MN-major A and B) and "Matrix Descriptor Format", checked against a CPU matmul: A from
/// shared memory both ways round and from registers, B K-major (imm-trans-b 0) and MN-major
/// (imm-trans-b 1), f16 and bf16.
#[test]
fn tiny_wgmma_per_swizzle_mode_matches_cpu_matmul() {
    let mut seed = 1;
    for swz in SWIZZLES {
        for a in [ASrc::Smem(Major::K), ASrc::Smem(Major::MN), ASrc::Regs] {
            for b_major in [Major::K, Major::MN] {
                for bf in [false, true] {
                    let mut c = case(128, a, swz, b_major, swz);
                    c.bf16 = bf;
                    check(&c, seed);
                    seed += 1;
                }
            }
        }
    }
}

/// PTX ISA "wgmma.mma_async": every legal N of m64nNk16 (8 to 256 in steps of 8, accumulator
/// lists of N/2 registers up to 128), with scale-d 0 and 1 and imm-scale-a/b -1.
#[test]
fn n_sweep_with_scale_d_and_negation() {
    for (idx, n) in (8..=256u32).step_by(8).enumerate() {
        let key = [8, 24, 64, 176, 256].contains(&n);
        let variants: Vec<(bool, bool, bool)> = if key {
            vec![
                (false, true, false),
                (true, false, true),
                (true, true, true),
            ]
        } else {
            vec![(idx % 2 == 0, idx % 3 == 0, idx % 3 == 1)]
        };
        for (v, (scale_d, neg_a, neg_b)) in variants.into_iter().enumerate() {
            let swz = SWIZZLES[(idx + v) % 4];
            let a = if (idx + v) % 2 == 0 {
                ASrc::Regs
            } else {
                ASrc::Smem(Major::K)
            };
            let mut c = case(n, a, swz, Major::K, Swizzle::B128);
            c.b_major = if idx % 2 == 0 { Major::K } else { Major::MN };
            c.scale_d = scale_d;
            c.neg_a = neg_a;
            c.neg_b = neg_b;
            c.bf16 = idx % 5 == 0;
            check(&c, 1000 + idx as u64 * 7 + v as u64);
        }
    }
}

/// PTX ISA "Matrix Descriptor Format": start address bits 0-13, leading dimension byte
/// offset 16-29, stride dimension byte offset 32-45 (each the byte value >> 4), base offset
/// 49-51, swizzle mode 62-63 (0 none, 1 128B, 2 64B, 3 32B); other bits are not fields.
#[test]
fn descriptor_fields_decode_per_the_isa_table() {
    // (raw, start, lbo, sbo, base offset, swizzle)
    let table: [(u64, u32, u32, u32, u8, Swizzle); 9] = [
        (0, 0, 0, 0, 0, Swizzle::None),
        (0x0000_0040_0001_0040, 0x400, 16, 1024, 0, Swizzle::None),
        (
            1 << 62 | 0x0000_0040_0001_0200,
            0x2000,
            16,
            1024,
            0,
            Swizzle::B128,
        ),
        (2 << 62 | 0x0000_0020_0001_0000, 0, 16, 512, 0, Swizzle::B64),
        (
            3 << 62 | 0x0000_0010_0020_0010,
            0x100,
            512,
            256,
            0,
            Swizzle::B32,
        ),
        (5 << 49, 0, 0, 0, 5, Swizzle::None),
        (
            0x0000_3FFF_3FFF_3FFF,
            0x3FFF0,
            0x3FFF0,
            0x3FFF0,
            0,
            Swizzle::None,
        ),
        // Bits 14-15, 30-31, 46-48 and 52-61 are not part of any field.
        (0x3FF1_C000_C000_C000, 0, 0, 0, 0, Swizzle::None),
        (u64::MAX, 0x3FFF0, 0x3FFF0, 0x3FFF0, 7, Swizzle::B32),
    ];
    for (raw, start, lbo, sbo, base_offset, swizzle) in table {
        let d = MatrixDesc::decode(raw);
        let want = MatrixDesc {
            start,
            lbo,
            sbo,
            base_offset,
            swizzle,
        };
        assert_eq!(d, want, "descriptor {raw:#018x}");
        // Encoding keeps exactly the field bits.
        assert_eq!(
            d.encode(),
            raw & 0xC00E_3FFF_3FFF_3FFF,
            "re-encoding {raw:#018x}"
        );
    }
}

/// PTX ISA "Matrix Descriptor Format", base offset: for a swizzled operand whose start is not
/// aligned to the pattern's repeat, the base offset `(start >> 7) & 7` makes the pattern line
/// up with the absolute address (as TMA writes it); a wrong base offset shifts the pattern.
#[test]
fn base_offset_aligns_the_swizzle_pattern_of_an_unaligned_start() {
    let tile = 1024 + 3 * 128; // 128-byte aligned, 3 rows into a 1024-byte pattern
    let d = MatrixDesc {
        start: tile,
        lbo: 16,
        sbo: 1024,
        base_offset: 3,
        swizzle: Swizzle::B128,
    };
    for mn in 0..8 {
        for k in 0..16 {
            let lin = tile + mn * 128 + 2 * k;
            assert_eq!(d.element_addr(Major::K, mn, k), swizzle(Swizzle::B128, lin));
        }
    }
    let wrong = MatrixDesc {
        base_offset: 0,
        ..d
    };
    assert_ne!(
        wrong.element_addr(Major::K, 0, 0),
        d.element_addr(Major::K, 0, 0)
    );
}

fn n4() -> Case {
    case(
        64,
        ASrc::Smem(Major::K),
        Swizzle::B128,
        Major::K,
        Swizzle::B128,
    )
}

/// PTX ISA "wgmma.mma_async": the accumulator registers must not be accessed before the
/// `wgmma.wait_group` that completes the operation; a read or write is a finding, and the
/// same access after the wait is clean.
#[test]
fn planted_accumulator_access_before_wait_is_a_finding() {
    for plant in ["\tmov.b32 %r12, %f5;", "\tadd.f32 %f0, %f0, %f1;"] {
        // Predicated off in every lane, the access does not happen.
        let off = format!("\tsetp.eq.u32 %p3, %r2, 999;\n\t@%p3 {}", plant.trim());
        let (rep, _, _) = run_case(&n4(), 7, &off, "");
        assert!(rep.is_clean(), "`{off}`: {:?}", rep.findings);
        let (rep, _, _) = run_case(&n4(), 7, plant, "");
        assert!(
            rep.has(FindingKind::WgmmaAccumulatorBeforeWait),
            "`{plant}`: {:?}",
            rep.findings
        );
        let (rep, _, _) = run_case(&n4(), 7, "", plant);
        assert!(
            rep.is_clean(),
            "`{plant}` after the wait: {:?}",
            rep.findings
        );
    }
}

/// PTX ISA "wgmma.mma_async": the registers holding the A fragment are, like the
/// accumulators, off limits until the covering `wgmma.wait_group`.
#[test]
fn planted_a_register_access_before_wait_is_a_finding() {
    let mut c = n4();
    c.a = ASrc::Regs;
    let plant = "\tmov.b32 %r12, %r9;";
    let (rep, _, _) = run_case(&c, 5, plant, "");
    assert!(
        rep.has(FindingKind::WgmmaAccumulatorBeforeWait),
        "{:?}",
        rep.findings
    );
    let (rep, _, _) = run_case(&c, 5, "", plant);
    assert!(rep.is_clean(), "{:?}", rep.findings);
}

/// PTX ISA "wgmma.mma_async": consecutive wgmma on the same accumulators (the k-loop chain)
/// need no wait in between; the second accumulates onto the first's in-flight result, and two
/// wgmma may share the A registers. D = C + 2 A B, exactly, with no finding.
#[test]
fn chained_wgmma_accumulate_without_waiting() {
    for a in [ASrc::Regs, ASrc::Smem(Major::MN)] {
        let mut c = n4();
        c.a = a;
        let ptx = with_wgmma_line(&c, |line| format!("{line}\n{line}"));
        let (rep, p, got) = run_ptx(&c, &ptx, 13, 1);
        let rep = rep.clean();
        assert_eq!(rep.counters.wgmma_instructions, 2);
        // Two instructions read their operands twice: the count is per instruction.
        let a_bytes = if a == ASrc::Regs { 0 } else { 64 * 16 * 2 };
        assert_eq!(
            rep.counters.wgmma_smem_bytes,
            2 * (a_bytes + c.n as u64 * 16 * 2)
        );
        for (k, g) in got.iter().enumerate() {
            let want = p.cinit[k] + 2.0 * (p.expect[k] - p.cinit[k]);
            assert_eq!(*g, want, "{a:?}: slot {k}");
        }
    }
}

/// PTX ISA "wgmma.mma_async": scale-d may also be an immediate (ptxas accepts `0`/`1`):
/// 0 ignores the accumulator input, 1 adds it.
#[test]
fn scale_d_as_an_immediate() {
    for imm in [false, true] {
        let mut c = n4();
        c.scale_d = imm;
        let ptx = with_wgmma_line(&c, |line| line.replace("%p2", if imm { "1" } else { "0" }));
        // The predicate register is now unused: pass the opposite value.
        let (rep, p, got) = run_ptx(&c, &ptx, 17, !imm as u32);
        rep.clean();
        assert_eq!(got, p.expect);
    }
}

/// PTX ISA "wgmma.mma_async": shared-memory operands must not be modified before the
/// `wgmma.wait_group` completing the operation. One thread overwrites the first B element
/// (the tile origin, 32 bytes into the 128B-swizzled rows) while the wgmma is in flight: a finding; after the wait and a barrier:
/// clean.
#[test]
fn planted_smem_operand_overwrite_before_wait_is_a_finding() {
    let store = format!(
        "\tsetp.eq.u32 %p3, %r2, 0;\n\tmov.u32 %r20, smem;\n\tadd.u32 %r20, %r20, {};\n\t@%p3 st.shared.u16 [%r20], %h1;",
        B_BASE + 32
    );
    let (rep, _, _) = run_case(&n4(), 9, &store, "");
    assert!(
        rep.has(FindingKind::WgmmaOperandWriteBeforeWait),
        "{:?}",
        rep.findings
    );
    let (rep, _, _) = run_case(&n4(), 9, "", &format!("\tbar.sync 0;\n{store}"));
    assert!(rep.is_clean(), "{:?}", rep.findings);
    // An A operand in shared memory is protected the same way (A element (0, 1) of the
    // 128B-swizzled K-major tile, whose k16 slice starts 32 bytes into each row).
    let a_store =
        "\tsetp.eq.u32 %p3, %r2, 0;\n\tmov.u32 %r20, smem;\n\t@%p3 st.shared.u16 [%r20+34], %h1;";
    let (rep, _, _) = run_case(&n4(), 9, a_store, "");
    assert!(rep.has(FindingKind::WgmmaOperandWriteBeforeWait));
}

/// PTX ISA "wgmma.mma_async": results of a committed group become visible at
/// `wgmma.wait_group N` once at most N groups are pending; with `wait_group 1` after a second
/// (empty) group, the first group is complete.
#[test]
fn wait_group_n_completes_all_but_the_newest_n_groups() {
    let c = n4();
    let ptx = kernel(&c, "", "").replace(
        "\twgmma.wait_group.sync.aligned 0;",
        "\twgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 1;",
    );
    let (rep, p, got) = run_ptx(&c, &ptx, 11, 1);
    rep.clean();
    assert_eq!(got, p.expect);
}

fn wgmma_error(line: &str) -> EmuError {
    let ptx = format!(
        "{HEADER}.visible .entry t()\n{{\n\t.reg .f32 %f<130>;\n\t.reg .b32 %r<8>;\n\t.reg .b64 %rd<4>;\n\t.reg .pred %p<2>;\n\t{line}\n\tret;\n}}\n"
    );
    Module::parse(&ptx).expect_err(line)
}

/// PTX ISA "wgmma.mma_async": N is a multiple of 8 from 8 to 256 for .f16/.bf16; .atype and
/// .btype are both .f16 or both .bf16; imm-trans-a exists only for an A in shared memory;
/// imm-scale is 1 or -1. Violations are typed errors naming the line (line 10 here).
#[test]
fn illegal_forms_are_typed_errors() {
    let d4 = "{%f0, %f1, %f2, %f3}";
    let d6 = "{%f0, %f1, %f2, %f3, %f4, %f5}";
    let bad = [
        format!("wgmma.mma_async.sync.aligned.m64n12k16.f32.f16.f16 {d6}, %rd1, %rd2, %p1, 1, 1, 0, 0;"),
        format!("wgmma.mma_async.sync.aligned.m64n264k16.f32.f16.f16 {d4}, %rd1, %rd2, %p1, 1, 1, 0, 0;"),
        format!("wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.bf16 {d4}, %rd1, %rd2, %p1, 1, 1, 0, 0;"),
        format!("wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.f16 {d4}, %rd1, %rd2, %p1, 1, 1, 0, 0;"),
        format!("wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {d4}, {{%r1, %r2, %r3, %r4}}, %rd2, %p1, 1, 1, 1, 0;"),
        format!("wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {d4}, %rd1, %rd2, %p1, 2, 1, 0, 0;"),
        format!("wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {d4}, %rd1, %rd2, %p1, 1, 1, 2, 0;"),
        format!("wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {d4}, %rd1, %rd2, %p1, 1, 1, 0, 0;"),
    ];
    for line in &bad {
        let e = wgmma_error(line);
        assert!(matches!(e, EmuError::Parse { line: 10, .. }), "{line}: {e}");
    }
    // stmatrix sources are a brace-enclosed vector even for .x1 (as ptxas insists).
    let e = wgmma_error("stmatrix.sync.aligned.m8n8.x1.shared.b16 [%rd1], %r1;");
    assert!(matches!(e, EmuError::Parse { line: 10, .. }), "{e}");
    // The transpose error says why.
    let e = wgmma_error(&bad[4]);
    assert!(e.to_string().contains("imm-trans-a"), "{e}");
    // Legal PTX the emulator does not implement (f16 accumulators, other shapes, missing
    // .aligned) is Unsupported, never silently accepted.
    for line in [
        "wgmma.mma_async.sync.aligned.m64n8k16.f16.f16.f16 {%r1, %r2}, %rd1, %rd2, %p1, 1, 1, 0, 0;".to_string(),
        format!("wgmma.mma_async.sync.aligned.m64n8k8.f32.tf32.tf32 {d4}, %rd1, %rd2, %p1, 1, 1;"),
        "wgmma.fence.sync;".to_string(),
        "wgmma.wait_group.sync.aligned.foo 0;".to_string(),
    ] {
        let e = wgmma_error(&line);
        assert!(
            matches!(e, EmuError::Unsupported { line: 10, .. }),
            "{line}: {e}"
        );
    }
}

/// Runs `stmatrix.sync.aligned.m8n8.{num}{.trans}.shared.b16` with register j of lane t
/// holding (j*128 + 2t, j*128 + 2t + 1); lane l addresses row l%8 of matrix l/8 at
/// smem + (l/8)*256 + (l%8)*32 (rows padded to 32 bytes, prefilled with 0xFFFF). Returns the
/// 1024 bytes of shared memory as u16.
fn run_stmatrix(num: u32, trans: bool, space: &str) -> Vec<u16> {
    let regs = ["%r10", "%r11", "%r12", "%r13"][..num as usize].join(", ");
    let t = if trans { ".trans" } else { "" };
    let ptx = format!(
        "{HEADER}.visible .entry s(.param .u64 p_out)
{{
	.reg .b32 %r<24>;
	.reg .b64 %rd<8>;
	.shared .align 128 .b8 smem[1024];
	mov.u32 %r1, %laneid;
	mov.u32 %r7, smem;
	shl.b32 %r8, %r1, 5;
	add.u32 %r8, %r8, %r7;
	mov.u32 %r9, -1;
	st.shared.v4.u32 [%r8], {{%r9, %r9, %r9, %r9}};
	st.shared.v4.u32 [%r8+16], {{%r9, %r9, %r9, %r9}};
	bar.warp.sync -1;
	shl.b32 %r2, %r1, 1;
	add.u32 %r3, %r2, 1;
	shl.b32 %r3, %r3, 16;
	or.b32 %r10, %r2, %r3;
	add.u32 %r11, %r10, 0x00800080;
	add.u32 %r12, %r10, 0x01000100;
	add.u32 %r13, %r10, 0x01800180;
	shr.u32 %r4, %r1, 3;
	shl.b32 %r4, %r4, 8;
	and.b32 %r5, %r1, 7;
	shl.b32 %r5, %r5, 5;
	add.u32 %r6, %r4, %r5;
	add.u32 %r6, %r6, %r7;
	stmatrix.sync.aligned.m8n8.x{num}{t}{space}.b16 [%r6], {{{regs}}};
	bar.warp.sync -1;
	ld.shared.v4.u32 {{%r14, %r15, %r16, %r17}}, [%r8];
	ld.shared.v4.u32 {{%r18, %r19, %r20, %r21}}, [%r8+16];
	ld.param.u64 %rd1, [p_out];
	mul.wide.u32 %rd2, %r1, 32;
	add.s64 %rd3, %rd1, %rd2;
	st.global.v4.u32 [%rd3], {{%r14, %r15, %r16, %r17}};
	st.global.v4.u32 [%rd3+16], {{%r18, %r19, %r20, %r21}};
	ret;
}}
"
    );
    let m = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}"));
    let mut dev = Device::new();
    let out = dev.alloc(1024);
    launch(&mut dev, &m, "s", 1, 32, &[Arg::Ptr(out)]).clean();
    download::<u16>(&dev, out, 512)
}

/// PTX ISA "stmatrix": without .trans, lane t's register j holds row t/4, columns 2(t%4) and
/// 2(t%4)+1 of matrix j, so memory element (r, c) is (j*128 + 8r + c); with .trans the
/// fragment is stored transposed, (j*128 + 8c + r). Matrices beyond .num and the row padding
/// are untouched; `.shared` and `.shared::cta` agree.
#[test]
fn stmatrix_matches_the_isa_layout_element_by_element() {
    for num in [1u32, 2, 4] {
        for trans in [false, true] {
            for space in [".shared", ".shared::cta"] {
                let mem = run_stmatrix(num, trans, space);
                for j in 0..4u32 {
                    for r in 0..8u32 {
                        for c in 0..16u32 {
                            let got = mem[((j * 256 + r * 32) / 2 + c) as usize];
                            let want = if j >= num || c >= 8 {
                                0xFFFF
                            } else if trans {
                                (j * 128 + 8 * c + r) as u16
                            } else {
                                (j * 128 + 8 * r + c) as u16
                            };
                            assert_eq!(
                                got, want,
                                "x{num} trans={trans} `{space}`: matrix {j} row {r} col {c}"
                            );
                        }
                    }
                }
            }
        }
    }
}
