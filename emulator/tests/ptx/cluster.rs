//! Thread-block clusters on hand-written sm_90a PTX (`Device::launch_cluster`,
//! `emulator/src/exec/cluster.rs`): the cluster special registers, a peer's shared memory
//! through `mapa` and shared::cluster / generic addresses, `barrier.cluster`, remote mbarrier
//! arrivals, tensor loads with `.multicast::cluster` into every CTA of the cluster (read from
//! global memory once), a two-round multicast ring released across the cluster, and the
//! checks as planted bugs: races between CTAs, ranks outside the cluster, a peer's shared
//! memory out of range or reached after the peer exited, cluster-barrier misuse, multicasts
//! onto uninitialised or under-counted mbarriers, and a TMA write over a stage another warp or
//! CTA may still read (the stage's "empty" wait removed).

use flashmha_emulator::{
    Device, FindingKind, LaunchConfig, LaunchReport, Module, TensorMap, TiledTensorMap,
    TmaDataType, TmaInterleave, TmaL2Promotion, TmaOobFill, TmaSwizzle,
};

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";

/// A kernel with `%rd1` = out, `%rd2` = flag (a global u32), `%r1` = shared mbarriers `bar`
/// (4 x 8 bytes), `%r2` = 1024-aligned shared `buf` (4 KiB), `%r3` = tid, `%r4` =
/// %cluster_ctarank, `%r5` = linear CTA id, `%r6` = the peer rank (rank ^ 1).
fn kernel(body: &str) -> String {
    format!(
        "{HEADER}.visible .entry k(.param .u64 out, .param .u64 flag, .param .align 64 .b8 tmap[128])\n{{\n\
\t.reg .b32 %r<64>;\n\t.reg .b64 %rd<32>;\n\t.reg .pred %p<16>;\n\t.reg .b16 %rs<4>;\n\
\t.shared .align 8 .b64 bar[4];\n\t.shared .align 1024 .b8 buf[4096];\n\
\tld.param.u64 %rd1, [out];\n\tld.param.u64 %rd2, [flag];\n\tmov.u32 %r1, bar;\n\tmov.u32 %r2, buf;\n\
\tmov.u32 %r3, %tid.x;\n\tmov.u32 %r4, %cluster_ctarank;\n\tmov.u32 %r5, %ctaid.x;\n\
\tmov.u32 %r7, %ctaid.y;\n\tmov.u32 %r8, %nctaid.x;\n\tmad.lo.s32 %r5, %r7, %r8, %r5;\n\
\txor.b32 %r6, %r4, 1;\n{body}\n\tret;\n}}\n"
    )
}

/// Parses `body` into the kernel and launches it on a fresh device: `grid` CTAs of `threads`
/// threads, in clusters of `cluster` (`None`: a plain launch), `out_bytes` of (poisoned)
/// output, and, with `rows`, a [rows x 32] u32 tensor and its map ([`tensor`]). Returns the
/// report, the output and the tensor's values.
fn exec(
    body: &str,
    grid: [u32; 3],
    cluster: Option<[u32; 3]>,
    threads: u32,
    out_bytes: usize,
    rows: Option<u32>,
) -> (LaunchReport, Vec<u8>, Vec<u32>) {
    let ptx = kernel(body);
    let m = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
    let mut dev = Device::new();
    let (data, map) = match rows {
        Some(r) => {
            let (d, m) = tensor(&mut dev, r);
            (d, Some(m))
        }
        None => (Vec::new(), None),
    };
    let out = dev.alloc(out_bytes);
    let flag = dev.upload(&[0u8; 4]);
    let mut params = vec![0u8; 192];
    params[..8].copy_from_slice(&out.0.to_le_bytes());
    params[8..16].copy_from_slice(&flag.0.to_le_bytes());
    if let Some(t) = &map {
        params[64..192].copy_from_slice(t.as_bytes());
    }
    let cfg = LaunchConfig {
        grid,
        block: [threads, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let rep = match cluster {
        Some(c) => dev.launch_cluster(&m, "k", &cfg, c, &params),
        None => dev.launch(&m, "k", &cfg, &params),
    };
    (
        rep.expect("launch"),
        dev.read(out, out_bytes).unwrap(),
        data,
    )
}

/// [`exec`] in clusters, without a tensor.
fn run(
    body: &str,
    grid: [u32; 3],
    cluster: [u32; 3],
    threads: u32,
    out_bytes: usize,
) -> (LaunchReport, Vec<u8>) {
    let (rep, out, _) = exec(body, grid, Some(cluster), threads, out_bytes, None);
    (rep, out)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap())
}

fn kinds(rep: &LaunchReport) -> Vec<FindingKind> {
    rep.findings.iter().map(|f| f.kind).collect()
}

/// Every thread stores its tid to its own word of buf.
const STORE_OWN: &str =
    "\tshl.b32 %r11, %r3, 2;\n\tadd.u32 %r12, %r2, %r11;\n\tst.shared.u32 [%r12], %r3;\n";

/// The same cluster barrier every test uses (all threads of the cluster).
const CLUSTER_SYNC: &str =
    "\tbarrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;\n";

#[test]
fn cluster_registers_follow_the_launch_shape() {
    // Thread 0 of each CTA stores 8 registers at out[8 * linear CTA id].
    let body = "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra DONE;\n\
\tmul.wide.u32 %rd3, %r5, 32;\n\tadd.s64 %rd3, %rd1, %rd3;\n\
\tmov.u32 %r10, %cluster_nctarank;\n\tmov.u32 %r11, %clusterid.x;\n\tmov.u32 %r12, %clusterid.y;\n\
\tmov.u32 %r13, %cluster_ctaid.x;\n\tmov.u32 %r14, %cluster_ctaid.y;\n\tmov.u32 %r15, %nclusterid.x;\n\
\tmov.u32 %r16, %is_explicit_cluster;\n\
\tst.global.v4.u32 [%rd3], {%r4, %r10, %r11, %r12};\n\tst.global.v4.u32 [%rd3+16], {%r13, %r14, %r15, %r16};\nDONE:";
    let (gx, gy) = (4u32, 4u32);
    for cl in [[2, 1, 1], [2, 2, 1], [4, 2, 1], [1, 1, 1]] {
        let (rep, got) = run(body, [gx, gy, 1], cl, 32, (gx * gy * 32) as usize);
        assert!(rep.is_clean(), "{cl:?}: {:?}", rep.findings);
        for y in 0..gy {
            for x in 0..gx {
                let c = (y * gx + x) as usize;
                let (ix, iy) = (x % cl[0], y % cl[1]);
                let want = [
                    ix + cl[0] * iy,
                    cl[0] * cl[1],
                    x / cl[0],
                    y / cl[1],
                    ix,
                    iy,
                    gx / cl[0],
                    1,
                ];
                let have: Vec<u32> = (0..8).map(|k| u32_at(&got, 8 * c + k)).collect();
                assert_eq!(have, want, "cluster {cl:?}, CTA ({x}, {y})");
            }
        }
    }
    // A launch without a cluster shape: one-CTA clusters, not explicit.
    let (rep, got, _) = exec(body, [2, 1, 1], None, 32, 64, None);
    assert!(rep.is_clean(), "{:?}", rep.findings);
    assert_eq!(
        (0..8).map(|k| u32_at(&got, 8 + k)).collect::<Vec<_>>(),
        vec![0, 1, 1, 0, 0, 0, 2, 0]
    );
    // Shapes that do not divide the grid, or exceed 16 CTAs, are launch errors.
    let m = Module::parse(&kernel(body)).unwrap();
    let mut dev = Device::new();
    let params = vec![0u8; 192];
    for bad in [[3, 1, 1], [0, 1, 1], [4, 4, 2]] {
        let cfg = LaunchConfig {
            grid: [4, 4, 2],
            block: [32, 1, 1],
            dynamic_smem_bytes: 0,
        };
        let cfg = if bad == [4, 4, 2] {
            cfg
        } else {
            LaunchConfig {
                grid: [4, 1, 1],
                ..cfg
            }
        };
        assert!(
            dev.launch_cluster(&m, "k", &cfg, bad, &params).is_err(),
            "{bad:?}"
        );
    }
}

/// Every thread writes `rank * 1000 + cta * 100 + tid` to its own buf[tid]; after a cluster
/// barrier it reads the peer's buf[tid] through shared::cluster (`%r20`) and through a generic
/// address (`%r21`), writes that + 1 to the peer's buf[256 + tid] (`st.shared::cluster`); after
/// a second barrier it reads its own buf[256 + tid] (`%r22`). Stores the three to
/// out[3 * (cta * threads + tid) ..]. `sync1` / `sync2` are the two barriers (planted bugs
/// replace them).
fn exchange(sync1: &str, sync2: &str, tail: &str) -> String {
    format!(
        "\tmul.lo.u32 %r10, %r4, 1000;\n\tmad.lo.u32 %r10, %r5, 100, %r10;\n\tadd.u32 %r10, %r10, %r3;\n\
\tshl.b32 %r11, %r3, 2;\n\tadd.u32 %r12, %r2, %r11;\n\tst.shared.u32 [%r12], %r10;\n{sync1}\
\tmapa.shared::cluster.u32 %r13, %r12, %r6;\n\tld.shared::cluster.u32 %r20, [%r13];\n\
\tcvt.u64.u32 %rd5, %r12;\n\tcvta.shared.u64 %rd4, %rd5;\n\
\tmapa.u64 %rd6, %rd4, %r6;\n\tld.u32 %r21, [%rd6];\n\
\tadd.u32 %r14, %r20, 1;\n\tst.shared::cluster.u32 [%r13+1024], %r14;\n{sync2}\
\tld.shared.u32 %r22, [%r12+1024];\n\
\tmov.u32 %r15, %ntid.x;\n\tmad.lo.u32 %r16, %r5, %r15, %r3;\n\tmul.lo.u32 %r16, %r16, 3;\n\
\tmul.wide.u32 %rd7, %r16, 4;\n\tadd.s64 %rd7, %rd1, %rd7;\n\
\tst.global.u32 [%rd7], %r20;\n\tst.global.u32 [%rd7+4], %r21;\n\tst.global.u32 [%rd7+8], %r22;\n{tail}"
    )
}

#[test]
fn peers_share_memory_through_mapa_and_cluster_barriers() {
    let threads = 64u32;
    let grid = 6u32;
    let body = exchange(CLUSTER_SYNC, CLUSTER_SYNC, CLUSTER_SYNC);
    let (rep, got) = run(
        &body,
        [grid, 1, 1],
        [2, 1, 1],
        threads,
        (grid * threads * 12) as usize,
    );
    assert!(rep.is_clean(), "{:?}", rep.findings);
    for cta in 0..grid {
        let (rank, peer_cta) = (cta % 2, cta ^ 1);
        for t in 0..threads {
            let i = 3 * (cta * threads + t) as usize;
            let peer_val = (rank ^ 1) * 1000 + peer_cta * 100 + t;
            assert_eq!(
                u32_at(&got, i),
                peer_val,
                "CTA {cta} thread {t}: shared::cluster read"
            );
            assert_eq!(
                u32_at(&got, i + 1),
                peer_val,
                "CTA {cta} thread {t}: generic read"
            );
            let mine = rank * 1000 + cta * 100 + t;
            assert_eq!(
                u32_at(&got, i + 2),
                mine + 1,
                "CTA {cta} thread {t}: the peer's write"
            );
        }
    }
    assert_eq!(rep.counters.ctas, grid as u64);
}

#[test]
fn planted_cluster_bugs_are_findings() {
    let t = 64u32;
    let out = (2 * t * 12) as usize;
    let case = |body: &str| run(body, [2, 1, 1], [2, 1, 1], t, out).0;
    // No cluster barrier between a peer's store and the owner's load: a race between CTAs.
    let rep = case(&exchange(CLUSTER_SYNC, "", CLUSTER_SYNC));
    assert!(rep.has(FindingKind::SharedRaceRaw), "{:?}", kinds(&rep));
    // The first barrier missing: the peer's value is read before it is written (or races).
    let rep = case(&exchange("", CLUSTER_SYNC, CLUSTER_SYNC));
    assert!(
        rep.has(FindingKind::UninitSharedRead) || rep.has(FindingKind::SharedRaceRaw),
        "{:?}",
        kinds(&rep)
    );
    // A rank outside the cluster.
    let rep =
        case("\tmapa.shared::cluster.u32 %r13, %r2, 2;\n\tld.shared::cluster.u32 %r20, [%r13];");
    assert!(
        rep.has(FindingKind::InvalidClusterRank),
        "{:?}",
        kinds(&rep)
    );
    // A peer's shared memory past its end.
    let rep = case(&format!(
        "{STORE_OWN}{CLUSTER_SYNC}\tmapa.shared::cluster.u32 %r13, %r2, %r6;\n\
\tld.shared::cluster.u32 %r20, [%r13+8192];\n{CLUSTER_SYNC}"
    ));
    assert!(rep.has(FindingKind::SharedOutOfBounds), "{:?}", kinds(&rep));
    assert_eq!(rep.findings.len(), 1, "{:?}", kinds(&rep));
    // Rank 1 exits right after the barrier while rank 0 (busy for a while) still reads its
    // shared memory: the final cluster barrier is missing.
    let rep = case(&format!(
        "{STORE_OWN}{CLUSTER_SYNC}\tsetp.ne.u32 %p1, %r4, 0;\n\t@%p1 bra DONE;\n\
\tmov.u32 %r20, 0;\nSPIN:\n\tadd.u32 %r20, %r20, 1;\n\tsetp.lt.u32 %p2, %r20, 30000;\n\t@%p2 bra SPIN;\n\
\tmapa.shared::cluster.u32 %r13, %r2, 1;\n\tld.shared::cluster.u32 %r21, [%r13];\nDONE:"
    ));
    assert!(rep.has(FindingKind::ClusterMisuse), "{:?}", kinds(&rep));
    // The same with the final barrier: clean.
    let rep = case(&format!(
        "{STORE_OWN}{CLUSTER_SYNC}\tsetp.ne.u32 %p1, %r4, 0;\n\t@%p1 bra DONE;\n\
\tmov.u32 %r20, 0;\nSPIN:\n\tadd.u32 %r20, %r20, 1;\n\tsetp.lt.u32 %p2, %r20, 30000;\n\t@%p2 bra SPIN;\n\
\tmapa.shared::cluster.u32 %r13, %r2, 1;\n\tld.shared::cluster.u32 %r21, [%r13];\nDONE:\n{CLUSTER_SYNC}"
    ));
    assert!(rep.is_clean(), "{:?}", rep.findings);
    // A wait without an arrive; two arrives in one phase.
    let rep = case("\tbarrier.cluster.wait.aligned;");
    assert!(rep.has(FindingKind::ClusterMisuse), "{:?}", kinds(&rep));
    let rep = case("\tbarrier.cluster.arrive.aligned;\n\tbarrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;");
    assert!(rep.has(FindingKind::ClusterMisuse), "{:?}", kinds(&rep));
    // Rank 1 exits without arriving: the barrier completes only because of that.
    let rep = case(&format!(
        "\tsetp.ne.u32 %p1, %r4, 0;\n\t@%p1 bra DONE;\n{CLUSTER_SYNC}DONE:"
    ));
    assert!(
        rep.has(FindingKind::BarrierWithExitedThreads),
        "{:?}",
        kinds(&rep)
    );
    // A wait on a peer's mbarrier.
    let rep = case(&format!(
        "\tsetp.eq.u32 %p1, %r3, 0;\n\t@%p1 mbarrier.init.shared::cta.b64 [%r1], 1;\n{CLUSTER_SYNC}\
\tmapa.shared::cluster.u32 %r13, %r1, %r6;\n\tmbarrier.try_wait.parity.shared::cluster.b64 %p2, [%r13], 0;\n{CLUSTER_SYNC}"
    ));
    assert!(rep.has(FindingKind::ClusterMisuse), "{:?}", kinds(&rep));
}

/// A [rows x 32] u32 tensor in global memory as a tensor map with 8 x 32 boxes (1 KiB).
fn tensor(dev: &mut Device, rows: u32) -> (Vec<u32>, TensorMap) {
    let data: Vec<u32> = (0..rows * 32)
        .map(|i| i.wrapping_mul(2654435761) >> 7)
        .collect();
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = dev.upload(&bytes);
    let map = TensorMap::encode_tiled(&TiledTensorMap {
        data_type: TmaDataType::U32,
        global_address: p.0,
        global_dim: vec![32, rows as u64],
        global_strides: vec![128],
        box_dim: vec![32, 8],
        element_strides: vec![1, 1],
        interleave: TmaInterleave::None,
        swizzle: TmaSwizzle::None,
        l2_promotion: TmaL2Promotion::None,
        oob_fill: TmaOobFill::None,
    })
    .expect("valid tensor map");
    (data, map)
}

/// A multicast kernel in 2-CTA clusters on a device holding a [rows x 32] tensor.
fn run_tma(
    body: &str,
    grid: u32,
    threads: u32,
    rows: u32,
    out_bytes: usize,
) -> (LaunchReport, Vec<u8>, Vec<u32>) {
    exec(
        body,
        [grid, 1, 1],
        Some([2, 1, 1]),
        threads,
        out_bytes,
        Some(rows),
    )
}

/// One multicast round: thread 0 of each rank expects `expect` bytes on bar[0] and loads its
/// half (rows 8 rank + `row0`) into buf + 1024 rank of BOTH CTAs (mask `mask`); every thread
/// waits (parity `parity`) and copies its 32 bytes of the 2 KiB to out[(cta * rounds + round) *
/// 2048 ..].
fn round(expect: u32, mask: u32, row0: u32, parity: u32, round: u32, rounds: u32) -> String {
    format!(
        "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra ISSUED{round};\n\
\tmbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], {expect};\n\
\tshl.b32 %r30, %r4, 3;\n\tadd.u32 %r30, %r30, {row0};\n\tmov.u32 %r31, 0;\n\
\tshl.b32 %r32, %r4, 10;\n\tadd.u32 %r32, %r2, %r32;\n\tmov.u16 %rs1, {mask};\n\
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%r32], [tmap, {{%r31, %r30}}], [%r1], %rs1;\n\
ISSUED{round}:\n\
WAIT{round}:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r1], {parity};\n\t@!%p2 bra WAIT{round};\n\
\tshl.b32 %r33, %r3, 5;\n\tadd.u32 %r34, %r2, %r33;\n\tld.shared.v4.u32 {{%r40, %r41, %r42, %r43}}, [%r34];\n\
\tld.shared.v4.u32 {{%r44, %r45, %r46, %r47}}, [%r34+16];\n\
\tmad.lo.u32 %r35, %r5, {rounds}, {round};\n\tmul.wide.u32 %rd10, %r35, 2048;\n\tcvt.u64.u32 %rd11, %r33;\n\
\tadd.s64 %rd10, %rd10, %rd11;\n\tadd.s64 %rd10, %rd1, %rd10;\n\
\tst.global.v4.u32 [%rd10], {{%r40, %r41, %r42, %r43}};\n\tst.global.v4.u32 [%rd10+16], {{%r44, %r45, %r46, %r47}};\n"
    )
}

/// Thread 0 initialises bar[0] (count 1) and bar[1] (`empty` arrivals); `sync` follows.
fn init(empty: u32, sync: &str) -> String {
    format!(
        "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra INIT;\n\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\
\tmbarrier.init.shared::cta.b64 [%r1+8], {empty};\n\tfence.mbarrier_init.release.cluster;\nINIT:\n{sync}"
    )
}

fn check_rounds(got: &[u8], data: &[u32], grid: u32, rounds: u32) {
    for cta in 0..grid {
        for r in 0..rounds {
            let at = ((cta * rounds + r) * 512) as usize;
            let want = &data[(r * 512) as usize..((r + 1) * 512) as usize];
            let have: Vec<u32> = (0..512).map(|i| u32_at(got, at + i)).collect();
            assert_eq!(have, want, "CTA {cta} round {r}");
        }
    }
}

#[test]
fn multicast_tensor_loads_fill_every_cta_and_read_global_once() {
    let (grid, threads) = (4u32, 64u32);
    let body = format!(
        "{}{}{CLUSTER_SYNC}",
        init(1, CLUSTER_SYNC),
        round(2048, 3, 0, 0, 0, 1)
    );
    let (rep, got, data) = run_tma(&body, grid, threads, 16, (grid * 2048) as usize);
    assert!(rep.is_clean(), "{:?}", rep.findings);
    check_rounds(&got, &data, grid, 1);
    // Each cluster reads the 2 KiB once: half per CTA, delivered to both.
    assert_eq!(rep.counters.tma_load_bytes, 2048 * grid as u64 / 2);
    assert_eq!(rep.counters.global_load_bytes, 2048 * grid as u64 / 2);

    // Planted: only the own half expected: the phase completes before the peer's half lands.
    let body = format!(
        "{}{}{CLUSTER_SYNC}",
        init(1, CLUSTER_SYNC),
        round(1024, 3, 0, 0, 0, 1)
    );
    let (rep, ..) = run_tma(&body, 2, threads, 16, 2 * 2048);
    assert!(
        rep.has(FindingKind::UninitSharedRead) || rep.has(FindingKind::BulkReadBeforeComplete),
        "{:?}",
        kinds(&rep)
    );
    // Planted: no cluster barrier after the mbarrier init: rank 0 multicasts onto rank 1's
    // mbarrier before rank 1 initialised it.
    let body = format!(
        "{}{}{CLUSTER_SYNC}",
        init(1, ""),
        round(2048, 3, 0, 0, 0, 1)
    );
    let (rep, ..) = run_tma(&body, 2, threads, 16, 2 * 2048);
    assert!(rep.has(FindingKind::MbarrierMisuse), "{:?}", kinds(&rep));
    // Planted: a CTA mask naming rank 2 of a 2-CTA cluster.
    let body = format!(
        "{}{}{CLUSTER_SYNC}",
        init(1, CLUSTER_SYNC),
        round(2048, 5, 0, 0, 0, 1)
    );
    let (rep, ..) = run_tma(&body, 2, threads, 16, 2 * 2048);
    assert!(
        rep.has(FindingKind::InvalidClusterRank),
        "{:?}",
        kinds(&rep)
    );
}

/// Every thread releases the stage in its own CTA and in the peer (bar[1] of both; count 128
/// = both CTAs' 64 threads): a remote arrive through `mapa`.
const RELEASE_BOTH: &str = "\tmbarrier.arrive.shared::cta.b64 _, [%r1+8];\n\
\tadd.u32 %r36, %r1, 8;\n\tmapa.shared::cluster.u32 %r37, %r36, %r6;\n\
\tmbarrier.arrive.release.cluster.shared::cluster.b64 _, [%r37];\n";

/// Thread 0 waits until both CTAs released the stage (bar[1] phase 0).
const WAIT_EMPTY: &str = "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra EMPTY;\n\
EMPTY_WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p3, [%r1+8], 0;\n\t@!%p3 bra EMPTY_WAIT;\nEMPTY:\n";

#[test]
fn a_multicast_ring_released_across_the_cluster_is_clean_and_its_missing_wait_is_caught() {
    // Two rounds through one stage: round 1 overwrites both CTAs' stage once both released it.
    let (grid, threads) = (2u32, 64u32);
    let ring = |wait: &str| {
        format!(
            "{}{}{RELEASE_BOTH}{wait}{}{CLUSTER_SYNC}",
            init(128, CLUSTER_SYNC),
            round(2048, 3, 0, 0, 0, 2),
            round(2048, 3, 16, 1, 1, 2)
        )
    };
    let (rep, got, data) = run_tma(
        &ring(WAIT_EMPTY),
        grid,
        threads,
        32,
        (grid * 2 * 2048) as usize,
    );
    assert!(rep.is_clean(), "{:?}", rep.findings);
    check_rounds(&got, &data, grid, 2);
    // Planted: the empty wait removed: a CTA's round-1 multicast lands over a stage the other
    // CTA (and its own other warp) may still read.
    let (rep, ..) = run_tma(&ring(""), grid, threads, 32, (grid * 2 * 2048) as usize);
    assert!(
        rep.has(FindingKind::SharedRaceWar) || rep.has(FindingKind::BulkWriteBeforeComplete),
        "{:?}",
        kinds(&rep)
    );
}

#[test]
fn a_tma_write_over_a_stage_another_warp_read_without_release_is_a_race() {
    // One CTA of 64 threads (a one-CTA cluster): thread 0 loads a box into the stage; warp 1
    // reads it; then thread 0 loads the next box into the same stage. With warp 1's release
    // (bar[1], 32 arrivals) and thread 0's wait it is clean; with only a flag in global memory
    // (set by warp 1 after its read, polled by warp 0) the write is not ordered after the
    // read: the check at issue reports it, whatever the emulator's schedule.
    let load = |row: u32, parity: u32, tag: &str| {
        format!(
            "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra L{tag};\n\
\tmbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], 1024;\n\tmov.u32 %r30, {row};\n\tmov.u32 %r31, 0;\n\
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [tmap, {{%r31, %r30}}], [%r1];\n\
L{tag}:\n\tsetp.lt.u32 %p4, %r3, 32;\n\t@%p4 bra R{tag};\n\
W{tag}:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r1], {parity};\n\t@!%p2 bra W{tag};\n\
\tshl.b32 %r33, %r3, 5;\n\tadd.u32 %r34, %r2, %r33;\n\tsub.u32 %r34, %r34, 1024;\n\tld.shared.v4.u32 {{%r40, %r41, %r42, %r43}}, [%r34];\n\
\tmul.wide.u32 %rd10, %r3, 16;\n\tadd.s64 %rd10, %rd1, %rd10;\n\tst.global.v4.u32 [%rd10+{off}], {{%r40, %r41, %r42, %r43}};\n\
R{tag}:\n",
            off = parity * 1024
        )
    };
    let release = "\tsetp.lt.u32 %p4, %r3, 32;\n\t@%p4 bra REL;\n\tmbarrier.arrive.shared::cta.b64 _, [%r1+8];\nREL:\n";
    let flag = "\tsetp.lt.u32 %p4, %r3, 32;\n\t@%p4 bra POLL;\n\tmov.u32 %r50, 1;\n\tst.volatile.global.u32 [%rd2], %r50;\n\
\tbra.uni FLAGGED;\nPOLL:\n\tld.volatile.global.u32 %r51, [%rd2];\n\tsetp.eq.u32 %p5, %r51, 0;\n\t@%p5 bra POLL;\nFLAGGED:\n";
    let wait = "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra EMPTY;\n\
EMPTY_WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p3, [%r1+8], 0;\n\t@!%p3 bra EMPTY_WAIT;\nEMPTY:\n";
    let setup =
        "\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra INIT;\n\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\
\tmbarrier.init.shared::cta.b64 [%r1+8], 32;\nINIT:\n\tbar.sync 0;\n";
    let ok = format!(
        "{setup}{}{release}{wait}{}",
        load(0, 0, "a"),
        load(8, 1, "b")
    );
    let bug = format!("{setup}{}{flag}{}", load(0, 0, "a"), load(8, 1, "b"));
    for (body, clean) in [(ok, true), (bug, false)] {
        let (rep, got, data) = exec(&body, [1, 1, 1], None, 64, 2048, Some(16));
        if clean {
            assert!(rep.is_clean(), "{:?}", rep.findings);
            // Warp 1's thread t read 16 bytes at 32 (t - 32) of each box.
            for t in 32..64usize {
                for k in 0..4 {
                    for (round, row0) in [(0usize, 0usize), (1, 256)] {
                        let want = data[row0 + 8 * (t - 32) + k];
                        assert_eq!(
                            u32_at(&got, 256 * round + 4 * t + k),
                            want,
                            "round {round} t {t}"
                        );
                    }
                }
            }
        } else {
            assert!(rep.has(FindingKind::SharedRaceWar), "{:?}", kinds(&rep));
        }
    }
}
