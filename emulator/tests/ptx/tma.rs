//! Hopper asynchronous copies on hand-written sm_90a PTX: mbarrier phase / parity / tx-count
//! semantics, tensor (TMA) loads and stores through tensor maps encoded by
//! [`TensorMap::encode_tiled`] in every swizzle mode, out-of-bounds fill, bulk copies, a
//! two-stage producer/consumer ring across warps, the asynchronous-proxy hazards as planted
//! bugs, and the encoder's typed errors.

use crate::support::linear;
use flashmha_emulator::{
    Device, DevicePtr, FindingKind, LaunchReport, Module, TensorMap, TensorMapError,
    TiledTensorMap, TmaDataType, TmaInterleave, TmaL2Promotion, TmaOobFill, TmaSwizzle, POISON,
};

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";

/// A kernel with `%rd1` = out, `%rd2` = inp, `%r1` = mbarrier array `bar` (4 x 8 bytes),
/// `%r2` = 1024-aligned shared `tile`, `%r3` = tid, `%rd9` / `%rd11` = generic addresses of
/// the tensor-map parameters `tmap` / `tmap2`.
fn kernel(body: &str) -> String {
    format!(
        "{HEADER}.visible .entry k(.param .u64 out, .param .u64 inp, .param .align 64 .b8 tmap[128], .param .align 64 .b8 tmap2[128])\n{{\n\
\t.reg .b32 %r<64>;\n\t.reg .b64 %rd<32>;\n\t.reg .pred %p<16>;\n\
\t.shared .align 8 .b64 bar[4];\n\t.shared .align 1024 .b8 tile[8192];\n\
\tld.param.u64 %rd1, [out];\n\tld.param.u64 %rd2, [inp];\n\tmov.u32 %r1, bar;\n\tmov.u32 %r2, tile;\n\
\tmov.u32 %r3, %tid.x;\n\tmov.u64 %rd8, tmap;\n\tcvta.param.u64 %rd9, %rd8;\n\
\tmov.u64 %rd10, tmap2;\n\tcvta.param.u64 %rd11, %rd10;\n{body}\n\tret;\n}}\n"
    )
}

/// Launches `body` on one CTA of `threads` threads.
fn launch(
    dev: &mut Device,
    body: &str,
    threads: u32,
    out: DevicePtr,
    inp: DevicePtr,
    maps: [Option<&TensorMap>; 2],
) -> LaunchReport {
    let ptx = kernel(body);
    let m = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
    let layout = m.param_layout("k").unwrap();
    assert_eq!(
        layout.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![0, 8, 64, 192]
    );
    let mut params = vec![0u8; 320];
    params[0..8].copy_from_slice(&out.0.to_le_bytes());
    params[8..16].copy_from_slice(&inp.0.to_le_bytes());
    for (k, map) in maps.iter().enumerate() {
        if let Some(map) = map {
            params[64 + 128 * k..192 + 128 * k].copy_from_slice(map.as_bytes());
        }
    }
    let cfg = linear(1, threads);
    dev.launch(&m, "k", &cfg, &params).expect("launch")
}

fn assert_clean(rep: &LaunchReport) {
    assert!(rep.is_clean(), "{:#?}", rep.findings);
}

fn kinds(rep: &LaunchReport) -> Vec<FindingKind> {
    rep.findings.iter().map(|f| f.kind).collect()
}

/// A planted bug gives exactly one finding of `kind`; the fixed kernel runs clean.
fn assert_finding_iff(planted: bool, rep: &LaunchReport, kind: FindingKind) {
    if planted {
        assert_eq!(kinds(rep), vec![kind], "{:#?}", rep.findings);
    } else {
        assert_clean(rep);
    }
}

pub(crate) fn map2d(
    ty: TmaDataType,
    addr: DevicePtr,
    dims: [u64; 2],
    stride: u64,
    boxd: [u32; 2],
    swizzle: TmaSwizzle,
    oob_fill: TmaOobFill,
) -> TensorMap {
    TensorMap::encode_tiled(&TiledTensorMap {
        data_type: ty,
        global_address: addr.0,
        global_dim: dims.to_vec(),
        global_strides: vec![stride],
        box_dim: boxd.to_vec(),
        element_strides: vec![1, 1],
        interleave: TmaInterleave::None,
        swizzle,
        l2_promotion: TmaL2Promotion::B128,
        oob_fill,
    })
    .expect("valid tensor map")
}

// ---------------------------------------------------------------- mbarrier semantics

/// One step of a single-thread mbarrier script (the barrier is `bar[0]`).
fn step(s: &str, probe: &mut usize) -> String {
    let mut it = s.split(' ');
    let op = it.next().unwrap();
    let n = it.next().unwrap_or("1");
    let out = |p: &mut usize, reg: &str| {
        let at = *p * 4;
        *p += 1;
        format!("\tst.global.u32 [%rd1+{at}], {reg};\n")
    };
    match op {
        "init" => format!("\tmbarrier.init.shared::cta.b64 [%r1], {n};\n"),
        "arrive" if n == "1" => "\tmbarrier.arrive.shared::cta.b64 %rd5, [%r1];\n".into(),
        "arrive" => format!("\tmbarrier.arrive.release.cta.shared::cta.b64 %rd5, [%r1], {n};\n"),
        "arrive_tx" => format!("\tmbarrier.arrive.expect_tx.shared::cta.b64 %rd5, [%r1], {n};\n"),
        "expect" => format!("\tmbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%r1], {n};\n"),
        "complete" => format!("\tmbarrier.complete_tx.relaxed.cta.shared::cta.b64 [%r1], {n};\n"),
        "drop" => "\tmbarrier.arrive_drop.shared::cta.b64 %rd5, [%r1];\n".into(),
        "inval" => "\tmbarrier.inval.shared::cta.b64 [%r1];\n".into(),
        "save" => "\tmov.b64 %rd6, %rd5;\n".into(),
        // bit 0: phase parity 0 complete, bit 1: parity 1 complete, bit 2: saved token's phase.
        "probe" | "probet" => {
            let mut s = "\tmbarrier.test_wait.parity.shared::cta.b64 %p1, [%r1], 0;\n\
\tmbarrier.test_wait.parity.shared::cta.b64 %p2, [%r1], 1;\n\
\tselp.u32 %r10, 1, 0, %p1;\n\tselp.u32 %r11, 2, 0, %p2;\n\tor.b32 %r10, %r10, %r11;\n"
                .to_string();
            if op == "probet" {
                s += "\tmbarrier.test_wait.shared::cta.b64 %p3, [%r1], %rd6;\n\
\tselp.u32 %r11, 4, 0, %p3;\n\tor.b32 %r10, %r10, %r11;\n";
            }
            s + &out(probe, "%r10")
        }
        "pending" => "\tmbarrier.pending_count.b64 %r12, %rd5;\n".to_string() + &out(probe, "%r12"),
        _ => panic!("unknown step {s}"),
    }
}

#[test]
fn mbarrier_phase_parity_and_tx_count() {
    // PTX ISA "Parallel Synchronization and Communication Instructions: mbarrier": init sets
    // phase 0, pending = expected = count, tx-count 0; arrive lowers the pending count,
    // expect_tx raises and complete_tx lowers the tx-count (which may go negative); the phase
    // completes when both are zero, then the pending count reloads. test_wait.parity p is true
    // when the phase of parity p completed (for the current phase 0 that is parity 1, "the
    // immediately preceding phase"); test_wait with a state token is true once the token's
    // phase is no longer the current one. pending_count reads the pending arrivals recorded in
    // the token (the state before that arrive).
    let table: &[(&str, &[&str], &[u32])] = &[
        (
            "arrivals only",
            &[
                "init 2", "probe", "arrive", "save", "probet", "arrive", "probet", "arrive 2",
                "probe",
            ],
            &[2, 2, 5, 2],
        ),
        (
            "tx-count completes the phase",
            &[
                "init 1",
                "arrive_tx 64",
                "save",
                "probet",
                "complete 32",
                "probe",
                "complete 32",
                "probet",
            ],
            &[2, 2, 5],
        ),
        (
            "complete_tx before expect_tx",
            &[
                "init 1",
                "complete 16",
                "probe",
                "arrive",
                "probe",
                "expect 16",
                "probe",
            ],
            &[2, 2, 1],
        ),
        (
            "expect_tx then arrivals, two phases",
            &[
                "init 2",
                "expect 128",
                "arrive",
                "arrive",
                "probe",
                "complete 128",
                "probe",
                "arrive",
                "arrive",
                "probe",
            ],
            &[2, 1, 2],
        ),
        (
            // arrive_drop also lowers the expected count of later phases; inval then init
            // starts over at phase 0.
            "arrive_drop, inval and re-init",
            &[
                "init 2", "drop", "arrive", "probe", "arrive", "probe", "inval", "init 1", "probe",
            ],
            &[1, 2, 2],
        ),
        (
            "pending count in the state token",
            &[
                "init 3", "arrive", "pending", "arrive 2", "pending", "probe",
            ],
            &[3, 2, 1],
        ),
    ];
    for (name, steps, want) in table {
        let mut probe = 0;
        let body: String = steps.iter().map(|s| step(s, &mut probe)).collect();
        let mut dev = Device::new();
        let out = dev.alloc(4 * want.len());
        let rep = launch(&mut dev, &body, 1, out, out, [None, None]);
        assert_clean(&rep);
        let got: Vec<u32> = dev
            .read(out, 4 * want.len())
            .unwrap()
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(&got, want, "{name}");
    }
}

#[test]
fn try_wait_loop_across_warps_releases_on_phase_completion() {
    // Warp 1 spins on try_wait.parity (with a suspend-time hint) while warp 0 writes shared
    // memory and arrives: the waiters see the write, and the phase completion orders the two
    // warps for the race checker (no finding). mbarrier.arrive on a shared::cluster address
    // produced by mapa to the own CTA (rank 0) counts like a local arrive.
    let body = "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra SYNC;\n\tmbarrier.init.shared::cta.b64 [%r1], 2;\n\
\tfence.mbarrier_init.release.cluster;\nSYNC:\n\tbar.sync 0;\n\
\tsetp.ge.u32 %p2, %r3, 32;\n\t@%p2 bra WAIT;\n\tsetp.ne.u32 %p3, %r3, 0;\n\t@%p3 bra END;\n\
\tst.shared.u32 [%r2], 1234;\n\tmbarrier.arrive.shared::cta.b64 _, [%r1];\n\
\tmapa.shared::cluster.u32 %r5, %r1, 0;\n\tmbarrier.arrive.release.cluster.shared::cluster.b64 _, [%r5];\n\tbra END;\n\
WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p4, [%r1], 0, 10000000;\n\t@!%p4 bra WAIT;\n\
\tld.shared.u32 %r6, [%r2];\n\tsub.u32 %r7, %r3, 32;\n\tmul.wide.u32 %rd3, %r7, 4;\n\tadd.s64 %rd4, %rd1, %rd3;\n\
\tst.global.u32 [%rd4], %r6;\nEND:";
    let mut dev = Device::new();
    let out = dev.alloc(4 * 32);
    let rep = launch(&mut dev, body, 64, out, out, [None, None]);
    assert_clean(&rep);
    assert_eq!(rep.counters.mbarrier_phases, 1);
    let got = dev.read(out, 128).unwrap();
    for c in got.chunks(4) {
        assert_eq!(u32::from_le_bytes(c.try_into().unwrap()), 1234);
    }
}

#[test]
fn every_thread_waits_on_its_own_state_token() {
    // 64 threads of two warps each arrive on an mbarrier expecting 64 arrivals and try_wait
    // with the token their arrive returned: all but the last park, and the last arrival
    // completes phase 0 and releases them with a true predicate.
    let body = "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra SYNC;\n\tmbarrier.init.shared::cta.b64 [%r1], 64;\nSYNC:\n\tbar.sync 0;\n\
\tmbarrier.arrive.shared::cta.b64 %rd5, [%r1];\nWAIT:\n\tmbarrier.try_wait.shared::cta.b64 %p2, [%r1], %rd5;\n\t@!%p2 bra WAIT;\n\
\tmbarrier.test_wait.parity.shared::cta.b64 %p3, [%r1], 0;\n\tselp.u32 %r6, 1, 0, %p3;\n\
\tmul.wide.u32 %rd3, %r3, 4;\n\tadd.s64 %rd4, %rd1, %rd3;\n\tst.global.u32 [%rd4], %r6;";
    let mut dev = Device::new();
    let out = dev.alloc(4 * 64);
    let rep = launch(&mut dev, body, 64, out, out, [None, None]);
    assert_clean(&rep);
    assert_eq!(rep.counters.mbarrier_phases, 1);
    assert!(dev
        .read(out, 256)
        .unwrap()
        .chunks(4)
        .all(|c| c == [1, 0, 0, 0]));
}

#[test]
fn try_wait_may_time_out_when_nothing_else_can_run() {
    // PTX ISA "mbarrier.test_wait/try_wait": try_wait returns false when its time limit
    // expires. The only thread waits before it arrives itself: the emulator times the wait out
    // (false), the thread arrives, and the next try_wait succeeds.
    let body = "\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\
\tmbarrier.try_wait.parity.shared::cta.b64 %p1, [%r1], 0;\n\tselp.u32 %r6, 1, 0, %p1;\n\tst.global.u32 [%rd1], %r6;\n\
\tmbarrier.arrive.shared::cta.b64 _, [%r1];\n\
\tmbarrier.try_wait.parity.shared::cta.b64 %p1, [%r1], 0;\n\tselp.u32 %r6, 1, 0, %p1;\n\tst.global.u32 [%rd1+4], %r6;";
    let mut dev = Device::new();
    let out = dev.alloc(8);
    let rep = launch(&mut dev, body, 1, out, out, [None, None]);
    assert_clean(&rep);
    assert_eq!(dev.read(out, 8).unwrap(), [0, 0, 0, 0, 1, 0, 0, 0]);
}

#[test]
fn a_wait_that_can_never_complete_is_a_deadlock() {
    // Two arrivals expected, one made: the try_wait loop can never succeed.
    let body =
        "\tmbarrier.init.shared::cta.b64 [%r1], 2;\n\tmbarrier.arrive.shared::cta.b64 _, [%r1];\n\
WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p1, [%r1], 0;\n\t@!%p1 bra WAIT;";
    let mut dev = Device::new();
    let out = dev.alloc(4);
    let rep = launch(&mut dev, body, 32, out, out, [None, None]);
    assert_eq!(
        kinds(&rep),
        vec![FindingKind::Deadlock],
        "{:#?}",
        rep.findings
    );
    assert!(
        rep.findings[0].detail.contains("mbarrier"),
        "{}",
        rep.findings[0]
    );
    // The cluster has one CTA: mapa to rank 1 is a finding.
    let rep = launch(
        &mut dev,
        "\tmapa.shared::cluster.u32 %r5, %r1, 1;",
        1,
        out,
        out,
        [None, None],
    );
    assert_eq!(kinds(&rep), vec![FindingKind::InvalidClusterRank]);
    // Every shared::cluster address belongs to CTA rank 0.
    let body = "\tgetctarank.shared::cluster.u32 %r6, %r2;\n\tadd.u32 %r6, %r6, 7;\n\tst.global.u32 [%rd1], %r6;";
    assert_clean(&launch(&mut dev, body, 1, out, out, [None, None]));
    assert_eq!(dev.read(out, 4).unwrap(), 7u32.to_le_bytes());
}

// ---------------------------------------------------------------- tensor loads

/// Thread 0 inits `bar[0]`, arrives with `bytes` expected and issues `copy`; every thread then
/// waits for the phase and copies the first `bytes` of `tile` to `out`.
fn load_and_dump(copy: &str, bytes: u32) -> String {
    format!(
        "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra SYNC;\n\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\
\tfence.mbarrier_init.release.cluster;\n\tfence.proxy.async.shared::cta;\nSYNC:\n\tbar.sync 0;\n\t@%p1 bra WAIT;\n\
\tmbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], {bytes};\n\t{copy}\n\
WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r1], 0, 1000000;\n\t@!%p2 bra WAIT;\n\
\tmul.lo.u32 %r5, %r3, 4;\nDUMP:\n\tsetp.ge.u32 %p3, %r5, {bytes};\n\t@%p3 bra END;\n\
\tadd.u32 %r6, %r2, %r5;\n\tld.shared.u32 %r7, [%r6];\n\tcvt.u64.u32 %rd3, %r5;\n\tadd.s64 %rd4, %rd1, %rd3;\n\
\tst.global.u32 [%rd4], %r7;\n\tadd.u32 %r5, %r5, 512;\n\tbra DUMP;\nEND:"
    )
}

/// Runs [`load_and_dump`] of `copy` (`bytes` of the tile) on one CTA of `threads` threads and
/// returns the report and the `bytes` dumped.
fn load_tile(
    dev: &mut Device,
    copy: &str,
    bytes: usize,
    threads: u32,
    inp: DevicePtr,
    maps: [Option<&TensorMap>; 2],
) -> (LaunchReport, Vec<u8>) {
    let out = dev.alloc(bytes);
    let rep = launch(
        dev,
        &load_and_dump(copy, bytes as u32),
        threads,
        out,
        inp,
        maps,
    );
    let got = dev.read(out, bytes).unwrap();
    (rep, got)
}

/// Little-endian u32 words of `b`.
fn u32_words(b: &[u8]) -> Vec<u32> {
    b.chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The bytes of a dense `w` x `h` tensor (x innermost) whose element (x, y) is `elem(x, y)`.
fn tensor_2d<const N: usize>(
    w: usize,
    h: usize,
    elem: impl Fn(usize, usize) -> [u8; N],
) -> Vec<u8> {
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .flat_map(|(x, y)| elem(x, y))
        .collect()
}

/// CPU model of the swizzle (PTX ISA "Tensors: Tensor Swizzling Modes" and CUDA Driver API
/// `CUtensorMapSwizzle`: 16-byte chunks are permuted within each span; within a 128-byte
/// line, chunk c of line r moves to chunk c XOR (r mod span/16)). `o` is relative to a box
/// aligned to the pattern's repeat.
fn swizzled(o: usize, span: usize) -> usize {
    if span == 0 {
        return o;
    }
    let n = span / 16;
    let line = o / 128;
    let chunk = (o / 16) % 8;
    let moved = (chunk / n) * n + ((chunk % n) ^ (line % n));
    line * 128 + moved * 16 + o % 16
}

#[test]
fn tma_2d_load_places_every_element_in_each_swizzle_mode() {
    // A 80 x 40 u16 tensor (row stride 160 bytes), element (x, y) = 1000 y + x; the box starts
    // at (8, 5). Its rows are dense in shared memory (row r at r * box-row bytes), then every
    // 16-byte chunk moves as the swizzle says.
    let (w, h) = (80usize, 40usize);
    let data = tensor_2d(w, h, |x, y| ((1000 * y + x) as u16).to_le_bytes());
    for (sw, box0, box1) in [
        (TmaSwizzle::None, 32u32, 8u32),
        (TmaSwizzle::B32, 16, 16),
        (TmaSwizzle::B64, 32, 16),
        (TmaSwizzle::B128, 64, 16),
    ] {
        let mut dev = Device::new();
        let inp = dev.upload(&data);
        let map = map2d(
            TmaDataType::U16,
            inp,
            [w as u64, h as u64],
            160,
            [box0, box1],
            sw,
            TmaOobFill::None,
        );
        let bytes = box0 * box1 * 2;
        let copy = "mov.u32 %r10, 8;\n\tmov.u32 %r11, 5;\n\
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd9, {%r10, %r11}], [%r1];";
        let (rep, got) = load_tile(&mut dev, copy, bytes as usize, 128, inp, [Some(&map), None]);
        assert_clean(&rep);
        assert_eq!(rep.counters.tma_load_bytes, bytes as u64, "{sw:?}");
        for r in 0..box1 as usize {
            for c in 0..box0 as usize {
                let o = swizzled(r * box0 as usize * 2 + c * 2, sw.span() as usize);
                let v = u16::from_le_bytes([got[o], got[o + 1]]);
                assert_eq!(
                    v as usize,
                    1000 * (5 + r) + 8 + c,
                    "{sw:?} element ({c}, {r})"
                );
            }
        }
    }
}

#[test]
fn tma_3d_load_with_element_stride_and_l2_hint() {
    // A 32 x 6 x 5 u32 tensor, row stride 128 bytes, plane stride 1024 (padded); element
    // (x, y, z) = 10000 z + 100 y + x. Box 8 x 4 x 3 with element stride 2 along z loads
    // ceil(3/2) = 2 planes: z0 and z0 + 2 (CUDA Driver API cuTensorMapEncodeTiled,
    // elementStrides). 32-byte swizzle; the copy carries an L2 cache-policy operand.
    let (x, y, z) = (32usize, 6usize, 5usize);
    let mut data = vec![0u8; 1024 * z];
    for k in 0..z {
        for j in 0..y {
            for i in 0..x {
                let o = k * 1024 + j * 128 + i * 4;
                data[o..o + 4].copy_from_slice(&((10000 * k + 100 * j + i) as u32).to_le_bytes());
            }
        }
    }
    let mut dev = Device::new();
    let inp = dev.upload(&data);
    let map = TensorMap::encode_tiled(&TiledTensorMap {
        data_type: TmaDataType::U32,
        global_address: inp.0,
        global_dim: vec![x as u64, y as u64, z as u64],
        global_strides: vec![128, 1024],
        box_dim: vec![8, 4, 3],
        element_strides: vec![1, 1, 2],
        interleave: TmaInterleave::None,
        swizzle: TmaSwizzle::B32,
        l2_promotion: TmaL2Promotion::None,
        oob_fill: TmaOobFill::None,
    })
    .unwrap();
    let bytes = 8 * 4 * 2 * 4;
    let copy = "mov.u32 %r10, 4;\n\tmov.u32 %r11, 1;\n\tmov.u32 %r12, 1;\n\tcreatepolicy.fractional.L2::evict_last.b64 %rd12, 1.0;\n\
\tcp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%r2], [tmap, {%r10, %r11, %r12}], [%r1], %rd12;";
    let (rep, got) = load_tile(&mut dev, copy, bytes, 64, inp, [Some(&map), None]);
    assert_clean(&rep);
    for (p, zz) in [1usize, 3].into_iter().enumerate() {
        for j in 0..4 {
            for i in 0..8 {
                let o = swizzled(((p * 4 + j) * 8 + i) * 4, 32);
                let v = u32::from_le_bytes(got[o..o + 4].try_into().unwrap());
                assert_eq!(
                    v as usize,
                    10000 * zz + 100 * (1 + j) + 4 + i,
                    "({i}, {j}, plane {p})"
                );
            }
        }
    }
}

#[test]
fn tma_1d_and_5d_loads_walk_every_dimension() {
    // The u32 buffer holds its own word index. 1-d: 100 elements, a 16-element box at 90
    // (the last 6 are outside: zero). 5-d: dims 4 x 2 x 2 x 2 x 2 with padded strides 32, 64,
    // 128, 256 bytes, the whole box at (0, 0, 0, 0, 1): its second plane along dimension 4 is
    // outside (zero).
    let words: Vec<u8> = (0..128u32).flat_map(|v| v.to_le_bytes()).collect();
    let mut dev = Device::new();
    let inp = dev.upload(&words);
    let enc = |dims: Vec<u64>, strides: Vec<u64>, boxd: Vec<u32>| {
        let rank = dims.len();
        TensorMap::encode_tiled(&TiledTensorMap {
            data_type: TmaDataType::U32,
            global_address: inp.0,
            global_dim: dims,
            global_strides: strides,
            box_dim: boxd,
            element_strides: vec![1; rank],
            interleave: TmaInterleave::None,
            swizzle: TmaSwizzle::None,
            l2_promotion: TmaL2Promotion::None,
            oob_fill: TmaOobFill::None,
        })
        .unwrap()
    };
    let m1 = enc(vec![100], vec![], vec![16]);
    let m5 = enc(
        vec![4, 2, 2, 2, 2],
        vec![32, 64, 128, 256],
        vec![4, 2, 2, 2, 2],
    );
    let copy1 = "mov.u32 %r10, 90;\n\t\
cp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [tmap, {%r10}], [%r1];";
    let (rep, got) = load_tile(&mut dev, copy1, 64, 32, inp, [Some(&m1), None]);
    assert_clean(&rep);
    let got = u32_words(&got);
    let want: Vec<u32> = (90..106).map(|i| if i < 100 { i } else { 0 }).collect();
    assert_eq!(got, want, "1-d");
    let copy5 = "mov.u32 %r10, 0;\n\tmov.u32 %r11, 1;\n\t\
cp.async.bulk.tensor.5d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [tmap2, {%r10, %r10, %r10, %r10, %r11}], [%r1];";
    let (rep, got) = load_tile(&mut dev, copy5, 256, 64, inp, [None, Some(&m5)]);
    assert_clean(&rep);
    let got = u32_words(&got);
    for (i, v) in got.iter().enumerate() {
        let (a, b, c, d, e) = (i % 4, i / 4 % 2, i / 8 % 2, i / 16 % 2, i / 32);
        let want = if e + 1 < 2 {
            a + 8 * b + 16 * c + 32 * d + 64 * (e + 1)
        } else {
            0
        };
        assert_eq!(*v as usize, want, "5-d box element {i}");
    }
}

#[test]
fn tma_out_of_bounds_box_elements_are_zero_or_nan_filled() {
    // A 20 x 10 f32 tensor, element (x, y) = 100 y + x, box 8 x 4 at (-4, 8): columns -4..-1
    // and rows 10, 11 are outside. They read as zero, or as NaN with the NaN fill (CUDA Driver
    // API CUtensorMapFloatOOBfill); the transaction still counts the whole box.
    let (w, h) = (20usize, 10usize);
    let data = tensor_2d(w, h, |x, y| ((100 * y + x) as f32).to_le_bytes());
    for fill in [TmaOobFill::None, TmaOobFill::NanRequestZeroFma] {
        let mut dev = Device::new();
        let inp = dev.upload(&data);
        let map = map2d(
            TmaDataType::F32,
            inp,
            [w as u64, h as u64],
            80,
            [8, 4],
            TmaSwizzle::None,
            fill,
        );
        let copy = "mov.u32 %r10, -4;\n\tmov.u32 %r11, 8;\n\
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd9, {%r10, %r11}], [%r1];";
        let (rep, got) = load_tile(&mut dev, copy, 128, 32, inp, [Some(&map), None]);
        assert_clean(&rep);
        for r in 0..4i64 {
            for c in 0..8i64 {
                let (gx, gy) = (c - 4, 8 + r);
                let o = ((r * 8 + c) * 4) as usize;
                let v = f32::from_le_bytes(got[o..o + 4].try_into().unwrap());
                if gx >= 0 && gy < h as i64 {
                    assert_eq!(v, (100 * gy + gx) as f32);
                } else if fill == TmaOobFill::None {
                    assert_eq!(v.to_bits(), 0, "({gx}, {gy}) zero fill");
                } else {
                    assert!(v.is_nan(), "({gx}, {gy}) NaN fill");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- stores and bulk copies

/// Loads a 16 x 8 u16 box of `tmap` at (4, 2) into `tile` (128B swizzle), then thread 0
/// stores it through `tmap2` at (16, 8) and waits for the bulk group.
const ROUND_TRIP: &str = "mov.u32 %r10, 4;\n\tmov.u32 %r11, 2;\n\
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd9, {%r10, %r11}], [%r1];";

/// Uploads `data` as the 80 x 40 u16 source (map `a`, 16 x 8 boxes, 128B swizzle) and allocates
/// the 24 x 12 u16 destination (map `b`, same boxes): the maps of [`ROUND_TRIP`] and its store.
fn round_trip_maps(dev: &mut Device, data: &[u8]) -> (DevicePtr, DevicePtr, TensorMap, TensorMap) {
    assert_eq!(data.len(), 80 * 40 * 2);
    let inp = dev.upload(data);
    let dst = dev.alloc(24 * 12 * 2);
    let a = map2d(
        TmaDataType::U16,
        inp,
        [80, 40],
        160,
        [16, 8],
        TmaSwizzle::B128,
        TmaOobFill::None,
    );
    let b = map2d(
        TmaDataType::U16,
        dst,
        [24, 12],
        48,
        [16, 8],
        TmaSwizzle::B128,
        TmaOobFill::None,
    );
    (inp, dst, a, b)
}

#[test]
fn tma_store_round_trip_writes_only_in_bounds_elements() {
    // PTX ISA "cp.async.bulk.tensor": a store writes the box to the tensor, skipping elements
    // outside it. Source 80 x 40 u16 (value 1000 y + x); destination 24 x 12 u16, poisoned;
    // the box lands at (16, 8), so columns 16..23 and rows 8..11 are inside.
    let (w, h) = (80usize, 40usize);
    let data = tensor_2d(w, h, |x, y| ((1000 * y + x) as u16).to_le_bytes());
    let mut dev = Device::new();
    let (inp, dst, a, b) = round_trip_maps(&mut dev, &data);
    let body = load_and_dump(ROUND_TRIP, 256)
        + "\n\t@%p1 bra FIN;\n\tmov.u32 %r12, 16;\n\tmov.u32 %r13, 8;\n\
\tcp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%rd11, {%r12, %r13}], [%r2];\n\
\tcp.async.bulk.commit_group;\n\tcp.async.bulk.wait_group.read 0;\n\tcp.async.bulk.wait_group 0;\nFIN:";
    let out = dev.alloc(256);
    let rep = launch(&mut dev, &body, 64, out, inp, [Some(&a), Some(&b)]);
    assert_clean(&rep);
    assert_eq!(rep.counters.tma_load_bytes, 256);
    assert_eq!(rep.counters.tma_store_bytes, 8 * 4 * 2);
    let got = dev.read(dst, 24 * 12 * 2).unwrap();
    for yy in 0..12usize {
        for xx in 0..24usize {
            let v = u16::from_le_bytes([got[(yy * 24 + xx) * 2], got[(yy * 24 + xx) * 2 + 1]]);
            if xx >= 16 && yy >= 8 {
                // Box element (xx - 16, yy - 8) came from source (4 + .., 2 + ..).
                assert_eq!(
                    v as usize,
                    1000 * (2 + yy - 8) + 4 + xx - 16,
                    "({xx}, {yy})"
                );
            } else {
                assert_eq!(v, u16::from_le_bytes([POISON; 2]), "({xx}, {yy}) untouched");
            }
        }
    }
}

#[test]
fn bulk_copy_global_to_shared_and_back() {
    // cp.async.bulk: 256 contiguous bytes into shared memory completing on an mbarrier, then
    // back to another buffer in a bulk async-group.
    let data: Vec<u8> = (0..256u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut dev = Device::new();
    let inp = dev.upload(&data);
    let copy = "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd2], 256, [%r1];";
    let body = load_and_dump(copy, 256)
        + "\n\t@%p1 bra FIN;\n\tadd.s64 %rd13, %rd1, 256;\n\
\tcp.async.bulk.global.shared::cta.bulk_group [%rd13], [%r2], 256;\n\
\tcp.async.bulk.commit_group;\n\tcp.async.bulk.wait_group 0;\nFIN:";
    let out = dev.alloc(512);
    let rep = launch(&mut dev, &body, 64, out, inp, [None, None]);
    assert_clean(&rep);
    assert_eq!(rep.counters.tma_load_bytes, 256);
    assert_eq!(rep.counters.tma_store_bytes, 256);
    let got = dev.read(out, 512).unwrap();
    assert_eq!(&got[..256], &data[..], "shared copy");
    assert_eq!(&got[256..], &data[..], "global copy back");
}

#[test]
fn producer_consumer_ring_of_two_stages_across_warps() {
    // Warp 0, lane 0 produces N = 5 tiles (2 rows of 64 u32) with TMA into a 2-stage ring:
    // it waits for stage s to be empty (empty[s], parity starting at 1 so the first pass goes
    // straight through), arrives on full[s] expecting 512 bytes and issues the copy. Warps 1-2
    // (64 consumers) wait on full[s] with the phase parity of their pass, add their two
    // elements, and arrive on empty[s] (64 arrivals). Thread t's result is
    // sum over tiles k of A[2k][t] + A[2k+1][t].
    let n = 5u32;
    let a: Vec<u32> = (0..2 * n * 64).map(|i| i * 3 + 1).collect();
    let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut dev = Device::new();
    let inp = dev.upload(&bytes);
    let map = map2d(
        TmaDataType::U32,
        inp,
        [64, 2 * n as u64],
        256,
        [64, 2],
        TmaSwizzle::None,
        TmaOobFill::None,
    );
    let body = format!(
        "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra SYNC;\n\
\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\tmbarrier.init.shared::cta.b64 [%r1+8], 1;\n\
\tmbarrier.init.shared::cta.b64 [%r1+16], 64;\n\tmbarrier.init.shared::cta.b64 [%r1+24], 64;\n\
\tfence.mbarrier_init.release.cluster;\nSYNC:\n\tbar.sync 0;\n\tmov.u32 %r20, 0;\n\
\tsetp.ge.u32 %p2, %r3, 32;\n\t@%p2 bra CONSUMER;\n\t@%p1 bra END;\n\
PLOOP:\n\tsetp.ge.u32 %p4, %r20, {n};\n\t@%p4 bra END;\n\
\tand.b32 %r21, %r20, 1;\n\tshr.u32 %r22, %r20, 1;\n\tand.b32 %r22, %r22, 1;\n\txor.b32 %r24, %r22, 1;\n\
\tshl.b32 %r25, %r21, 3;\n\tadd.u32 %r26, %r1, %r25;\n\tadd.u32 %r27, %r26, 16;\n\
PWAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p5, [%r27], %r24, 1000000;\n\t@!%p5 bra PWAIT;\n\
\tmbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%r26], 512;\n\
\tmul.lo.u32 %r28, %r21, 512;\n\tadd.u32 %r28, %r2, %r28;\n\tshl.b32 %r29, %r20, 1;\n\tmov.u32 %r30, 0;\n\
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r28], [%rd9, {{%r30, %r29}}], [%r26];\n\
\tadd.u32 %r20, %r20, 1;\n\tbra PLOOP;\n\
CONSUMER:\n\tsub.u32 %r31, %r3, 32;\n\tmov.u32 %r32, 0;\n\
CLOOP:\n\tsetp.ge.u32 %p4, %r20, {n};\n\t@%p4 bra CDONE;\n\
\tand.b32 %r21, %r20, 1;\n\tshr.u32 %r22, %r20, 1;\n\tand.b32 %r22, %r22, 1;\n\
\tshl.b32 %r25, %r21, 3;\n\tadd.u32 %r26, %r1, %r25;\n\tadd.u32 %r27, %r26, 16;\n\
CWAIT:\n\tmbarrier.try_wait.parity.acquire.cta.shared::cta.b64 %p5, [%r26], %r22;\n\t@!%p5 bra CWAIT;\n\
\tmul.lo.u32 %r28, %r21, 512;\n\tadd.u32 %r28, %r2, %r28;\n\tshl.b32 %r33, %r31, 2;\n\tadd.u32 %r28, %r28, %r33;\n\
\tld.shared.u32 %r34, [%r28];\n\tld.shared.u32 %r35, [%r28+256];\n\tadd.u32 %r32, %r32, %r34;\n\tadd.u32 %r32, %r32, %r35;\n\
\tmbarrier.arrive.release.cta.shared::cta.b64 _, [%r27];\n\tadd.u32 %r20, %r20, 1;\n\tbra CLOOP;\n\
CDONE:\n\tmul.wide.u32 %rd3, %r31, 4;\n\tadd.s64 %rd4, %rd1, %rd3;\n\tst.global.u32 [%rd4], %r32;\nEND:"
    );
    let out = dev.alloc(256);
    let rep = launch(&mut dev, &body, 96, out, inp, [Some(&map), None]);
    assert_clean(&rep);
    // Every tile completes full[s] once and empty[s] once.
    assert_eq!(rep.counters.mbarrier_phases, 2 * n as u64);
    assert_eq!(rep.counters.tma_load_bytes, 512 * n as u64);
    let got = dev.read(out, 256).unwrap();
    for t in 0..64usize {
        let want: u32 = (0..n as usize)
            .map(|k| a[2 * k * 64 + t] + a[(2 * k + 1) * 64 + t])
            .sum();
        assert_eq!(
            u32::from_le_bytes(got[4 * t..4 * t + 4].try_into().unwrap()),
            want,
            "thread {t}"
        );
    }
}

// ---------------------------------------------------------------- hazards (planted bugs)

#[test]
fn reading_a_tma_destination_before_the_phase_completes_is_a_finding() {
    // The bug: thread 0 reads the tile right after issuing the copy, before waiting.
    for (planted, read) in [(true, "ld.shared.u32 %r8, [%r2+64];"), (false, "")] {
        let mut dev = Device::new();
        let (inp, _, a, _) = round_trip_maps(&mut dev, &[7; 80 * 40 * 2]);
        let copy = format!("{ROUND_TRIP}\n\t{read}");
        let (rep, _) = load_tile(&mut dev, &copy, 256, 32, inp, [Some(&a), None]);
        assert_finding_iff(planted, &rep, FindingKind::BulkReadBeforeComplete);
    }
}

#[test]
fn generic_writes_read_by_a_tma_store_need_fence_proxy_async() {
    // 64 threads fill the 256-byte tile with st.shared, then thread 0 stores it with TMA. The
    // bug: no fence.proxy.async between the generic writes and the async-proxy read (PTX ISA
    // "Memory Consistency Model: Proxies").
    // `.global` orders global memory only, so it does not cover the shared-memory writes.
    for fence in [
        "",
        "fence.proxy.async.global;",
        "fence.proxy.async.shared::cta;",
        "fence.proxy.async;",
    ] {
        let mut dev = Device::new();
        let (inp, _, _, b) = round_trip_maps(&mut dev, &[7; 80 * 40 * 2]);
        let body = format!(
            "\tmul.lo.u32 %r5, %r3, 4;\n\tadd.u32 %r6, %r2, %r5;\n\tst.shared.u32 [%r6], %r3;\n\t{fence}\n\tbar.sync 0;\n\
\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra FIN;\n\tmov.u32 %r12, 0;\n\
\tcp.async.bulk.tensor.2d.global.shared::cta.bulk_group.L2::cache_hint [tmap2, {{%r12, %r12}}], [%r2], %rd2;\n\
\tcp.async.bulk.commit_group;\n\tcp.async.bulk.wait_group.read 0;\nFIN:"
        );
        let rep = launch(&mut dev, &body, 64, inp, inp, [None, Some(&b)]);
        let planted = fence.is_empty() || fence.contains("global");
        assert_finding_iff(planted, &rep, FindingKind::MissingProxyFence);
    }
}

#[test]
fn overwriting_a_bulk_store_source_before_wait_group_read_is_a_finding() {
    // Thread 0 loads the tile, stores it with TMA, then writes the tile: the bug is the
    // write before cp.async.bulk.wait_group.read.
    for planted in [true, false] {
        let mut dev = Device::new();
        let (inp, _, a, b) = round_trip_maps(&mut dev, &[7; 80 * 40 * 2]);
        let (before, after) = if planted {
            ("st.shared.u32 [%r2], 1;", "")
        } else {
            ("", "st.shared.u32 [%r2], 1;")
        };
        let body = load_and_dump(ROUND_TRIP, 256)
            + &format!(
                "\n\t@%p1 bra FIN;\n\tmov.u32 %r12, 0;\n\
\tcp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%rd11, {{%r12, %r12}}], [%r2];\n\
\tcp.async.bulk.commit_group;\n\t{before}\n\tcp.async.bulk.wait_group.read 0;\n\t{after}\nFIN:"
            );
        let out = dev.alloc(256);
        let rep = launch(&mut dev, &body, 32, out, inp, [Some(&a), Some(&b)]);
        assert_finding_iff(planted, &rep, FindingKind::BulkStoreSourceOverwritten);
    }
}

#[test]
fn mbarrier_and_tensor_map_misuse_are_findings() {
    let mut dev = Device::new();
    let (inp, _, a, _) = round_trip_maps(&mut dev, &[7; 80 * 40 * 2]);
    let out = dev.alloc(64);
    for (body, kind) in [
        // A plain store over a live mbarrier object.
        ("\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\tst.shared.u32 [%r1], 0;", FindingKind::MbarrierMisuse),
        // Arrive on memory that holds no mbarrier.
        ("\tmbarrier.arrive.shared::cta.b64 _, [%r1+8];", FindingKind::MbarrierMisuse),
        // A 3-d copy through a 2-d tensor map.
        (
            "\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\tmov.u32 %r10, 0;\n\
\tcp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [tmap, {%r10, %r10, %r10}], [%r1];",
            FindingKind::TensorMapInvalid,
        ),
        // A tensor-map operand pointing at an empty parameter, and one prefetched.
        ("\tprefetch.tensormap [%rd11];", FindingKind::TensorMapInvalid),
        ("\tmov.u32 %r10, 0;\n\tcp.async.bulk.prefetch.tensor.2d.L2.global [tmap2, {%r10, %r10}];", FindingKind::TensorMapInvalid),
    ] {
        let rep = launch(&mut dev, body, 1, out, inp, [Some(&a), None]);
        assert_eq!(kinds(&rep), vec![kind], "{body}: {:#?}", rep.findings);
    }
    // The valid map prefetches cleanly, from a register or as a parameter.
    let body =
        "\tprefetch.tensormap [%rd9];\n\tprefetch.param.tensormap [tmap];\n\tmov.u32 %r10, 0;\n\
\tcp.async.bulk.prefetch.tensor.2d.L2.global [tmap, {%r10, %r10}];";
    assert_clean(&launch(&mut dev, body, 1, out, inp, [Some(&a), None]));
}

// ---------------------------------------------------------------- encoder errors

#[test]
fn tensor_map_encoder_rejects_illegal_fields() {
    // CUDA Driver API "cuTensorMapEncodeTiled" requirements, one violation per row.
    let good = TiledTensorMap {
        data_type: TmaDataType::F16,
        global_address: 0x10000,
        global_dim: vec![64, 32],
        global_strides: vec![128],
        box_dim: vec![64, 8],
        element_strides: vec![1, 1],
        interleave: TmaInterleave::None,
        swizzle: TmaSwizzle::B128,
        l2_promotion: TmaL2Promotion::None,
        oob_fill: TmaOobFill::None,
    };
    assert!(TensorMap::encode_tiled(&good).is_ok());
    type Mutate = fn(&mut TiledTensorMap);
    let cases: &[(Mutate, TensorMapError)] = &[
        (
            |d| {
                d.global_dim = vec![1; 6];
                d.global_strides = vec![16; 5];
                d.box_dim = vec![8; 6];
                d.element_strides = vec![1; 6];
            },
            TensorMapError::Rank(6),
        ),
        (
            |d| d.global_strides = vec![],
            TensorMapError::Length {
                what: "global_strides",
                expected: 1,
                got: 0,
            },
        ),
        (
            |d| d.global_address = 0x10008,
            TensorMapError::AddressAlignment(0x10008),
        ),
        (
            |d| d.global_dim[1] = 0,
            TensorMapError::GlobalDim { dim: 1, value: 0 },
        ),
        (
            |d| d.global_strides[0] = 136,
            TensorMapError::GlobalStride { dim: 1, value: 136 },
        ),
        (
            |d| d.global_strides[0] = 1 << 40,
            TensorMapError::GlobalStride {
                dim: 1,
                value: 1 << 40,
            },
        ),
        (
            |d| d.box_dim[1] = 257,
            TensorMapError::BoxDim { dim: 1, value: 257 },
        ),
        (
            |d| {
                d.box_dim[0] = 4;
                d.swizzle = TmaSwizzle::None;
            },
            TensorMapError::BoxInnerBytes(8),
        ),
        (
            |d| d.element_strides[1] = 9,
            TensorMapError::ElementStride { dim: 1, value: 9 },
        ),
        (
            |d| d.swizzle = TmaSwizzle::B64,
            TensorMapError::SwizzleSpan {
                inner: 128,
                span: 64,
            },
        ),
        (
            |d| {
                d.data_type = TmaDataType::U16;
                d.oob_fill = TmaOobFill::NanRequestZeroFma;
            },
            TensorMapError::OobFillNotFloat(TmaDataType::U16),
        ),
        (
            |d| d.interleave = TmaInterleave::B16,
            TensorMapError::Unsupported(TmaInterleave::B16),
        ),
    ];
    for (mutate, want) in cases {
        let mut d = good.clone();
        mutate(&mut d);
        assert_eq!(TensorMap::encode_tiled(&d).unwrap_err(), *want);
    }
    // The 128 bytes are opaque but round-trip; corrupted bytes are rejected.
    let m = TensorMap::encode_tiled(&good).unwrap();
    assert_eq!(TensorMap::decode(m.as_bytes()).unwrap(), good);
    assert!(matches!(
        TensorMap::decode(&[0u8; 128]),
        Err(TensorMapError::Corrupt(_))
    ));
}

#[test]
fn unsupported_async_forms_are_typed_errors() {
    use flashmha_emulator::EmuError;
    for (body, unsupported) in [
        // Non-tensor multicast and im2col are not implemented, nor is a cluster barrier
        // without arrive / wait: rejected by name.
        ("\tcp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%r2], [%rd1], 16, [%r1], %rs1;", true),
        ("\tcp.async.bulk.tensor.2d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%r2], [tmap, {%r3, %r3}], [%r1];", true),
        ("\tbarrier.cluster.aligned;", true),
        // Malformed: coordinate count, mbarrier type, missing wait operand, a multicast
        // tensor load without its CTA mask, a cluster barrier with an operand.
        ("\tcp.async.bulk.tensor.1d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%r2], [tmap, {%r3}], [%r1];", false),
        ("\tbarrier.cluster.arrive 0;", false),
        ("\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [tmap, {%r3}], [%r1];", false),
        ("\tmbarrier.init.shared::cta.b32 [%r1], 1;", false),
        ("\tmbarrier.try_wait.parity.shared::cta.b64 %p1, [%r1];", false),
    ] {
        let e = Module::parse(&kernel(body)).expect_err(body);
        match e {
            EmuError::Unsupported { line: 20, .. } if unsupported => {}
            EmuError::Parse { line: 20, .. } if !unsupported => {}
            _ => panic!("{body}: {e}"),
        }
    }
}

#[test]
fn a_box_row_past_the_64_bit_address_space_is_out_of_bounds_not_an_overflow() {
    // Issue 19: a legal map (row stride 2^40 - 16 bytes, 2^31 rows) loaded at row 2^31 - 1 puts
    // the row 2^71 bytes past the tensor; the row address was an i64 sum that overflowed (a
    // panic with overflow checks). Now the copy is a global out-of-bounds finding, in every
    // build, and thread 0 still completes the mbarrier phase it waits on.
    let mut dev = Device::new();
    let inp = dev.upload(&[0u8; 64]);
    let rows = 1u64 << 31;
    let stride = (1u64 << 40) - 16;
    let map = map2d(
        TmaDataType::U32,
        inp,
        [16, rows],
        stride,
        [4, 1],
        TmaSwizzle::None,
        TmaOobFill::None,
    );
    let y = (rows - 1) as u32;
    for row in [y, y - 12345] {
        let copy = format!(
            "mov.u32 %r10, 0;\n\tmov.u32 %r11, {row};\n\
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd9, {{%r10, %r11}}], [%r1];"
        );
        let (rep, _) = load_tile(&mut dev, &copy, 16, 32, inp, [Some(&map), None]);
        assert_eq!(
            kinds(&rep),
            vec![FindingKind::GlobalOutOfBounds],
            "row {row}"
        );
    }
}
