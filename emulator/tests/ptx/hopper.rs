//! Hopper (sm_90) instructions that need no asynchronous machinery, on hand-written sm_90a
//! PTX: `elect.sync`, the cluster special registers of a one-CTA cluster, `griddepcontrol`
//! and `setmaxnreg`; malformed forms are typed errors. mbarrier, bulk and tensor (TMA) copies
//! and the asynchronous-proxy hazards are tested in `emulator/tests/ptx/tma.rs`, `wgmma` and `stmatrix`
//! in `tests/fidelity/wgmma.rs`.

use crate::support::linear;
use flashmha_emulator::{Device, EmuError, Module};

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";

/// Runs `body` with `%r1` = lane, `%r2` = tid; stores `%r4`, `%r5` per thread.
fn run(body: &str, grid: u32, threads: u32) -> Vec<(u32, u32)> {
    let ptx = format!(
        "{HEADER}.visible .entry t(.param .u64 t_out)\n{{\n\t.reg .b32 %r<8>;\n\t.reg .b64 %rd<4>;\n\t.reg .pred %p<4>;\n\
\tld.param.u64 %rd1, [t_out];\n\tmov.u32 %r1, %laneid;\n\tmov.u32 %r2, %tid.x;\n\
\tmov.u32 %r4, 0;\n\tmov.u32 %r5, 0;\n\t{body}\n\
\tmov.u32 %r6, %ctaid.x;\n\tmov.u32 %r7, %ntid.x;\n\tmad.lo.s32 %r6, %r6, %r7, %r2;\n\
\tmul.wide.u32 %rd2, %r6, 8;\n\tadd.s64 %rd3, %rd1, %rd2;\n\tst.global.v2.u32 [%rd3], {{%r4, %r5}};\n\tret;\n}}\n"
    );
    let m = Module::parse(&ptx).unwrap_or_else(|e| panic!("`{body}`: {e}"));
    let mut dev = Device::new();
    let n = (grid * threads) as usize;
    let out = dev.alloc(8 * n);
    let cfg = linear(grid, threads);
    let rep = dev
        .launch(&m, "t", &cfg, &out.0.to_le_bytes())
        .expect("launch");
    assert!(rep.findings.is_empty(), "`{body}`: {:?}", rep.findings);
    let b = dev.read(out, 8 * n).unwrap();
    (0..n)
        .map(|t| {
            let w = |k: usize| {
                u32::from_le_bytes(b[8 * t + 4 * k..8 * t + 4 * k + 4].try_into().unwrap())
            };
            (w(0), w(1))
        })
        .collect()
}

#[test]
fn elect_sync_picks_one_leader_among_the_members() {
    // PTX ISA "elect.sync": d receives the leader's lane id in every executing lane, p is true
    // only in the leader. Members here: the odd lanes (mask 0xAAAAAAAA), which all execute.
    let body = "and.b32 %r3, %r1, 1;\n\tsetp.eq.u32 %p2, %r3, 1;\n\t@!%p2 bra SKIP;\n\
\telect.sync %r4|%p1, 0xaaaaaaaa;\n\tselp.u32 %r5, 1, 0, %p1;\nSKIP:";
    let r = run(body, 1, 64);
    for (t, &(d, p)) in r.iter().enumerate() {
        let lane = t as u32 % 32;
        if lane % 2 == 1 {
            assert_eq!(d, 1, "thread {t}: leader lane id");
            assert_eq!(p, (lane == 1) as u32, "thread {t}: leader predicate");
        } else {
            assert_eq!((d, p), (0, 0), "thread {t} did not execute elect");
        }
    }
    // With the sink for d, a full mask and all lanes: one leader per warp.
    let r = run(
        "elect.sync _|%p1, 0xffffffff;\n\tselp.u32 %r5, 1, 0, %p1;",
        1,
        64,
    );
    let leaders: Vec<usize> = r
        .iter()
        .enumerate()
        .filter(|(_, v)| v.1 == 1)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(leaders, vec![0, 32]);
}

#[test]
fn one_cta_clusters() {
    // PTX ISA "Special Registers": with a cluster of one CTA, %clusterid is the CTA id,
    // %nclusterid the grid size, %cluster_ctarank 0 and %cluster_nctarank 1.
    let body = "mov.u32 %r4, %clusterid.x;\n\tmov.u32 %r3, %cluster_ctarank;\n\tmov.u32 %r5, %cluster_nctarank;\n\
\tmov.u32 %r6, %nclusterid.x;\n\tmad.lo.s32 %r5, %r6, 16, %r5;\n\tadd.s32 %r5, %r5, %r3;";
    let r = run(body, 3, 32);
    for (t, &(id, rest)) in r.iter().enumerate() {
        assert_eq!(id, t as u32 / 32, "thread {t}: %clusterid.x");
        assert_eq!(
            rest,
            3 * 16 + 1,
            "thread {t}: nclusterid*16 + nctarank + ctarank"
        );
    }
}

#[test]
fn griddepcontrol_and_setmaxnreg_do_not_change_results() {
    let body = "griddepcontrol.wait;\n\tsetmaxnreg.inc.sync.aligned.u32 240;\n\tadd.s32 %r4, %r2, 5;\n\
\tsetmaxnreg.dec.sync.aligned.u32 40;\n\tgriddepcontrol.launch_dependents;\n\tadd.s32 %r5, %r4, %r4;";
    let r = run(body, 1, 128);
    for (t, &(a, b)) in r.iter().enumerate() {
        assert_eq!((a, b), (t as u32 + 5, 2 * (t as u32 + 5)));
    }
}

#[test]
fn malformed_or_unimplemented_hopper_forms_are_typed_errors() {
    for body in [
        "setmaxnreg.inc.sync.aligned.u32 23;",
        "griddepcontrol.signal;",
        "mbarrier.init.shared::cta.b32 [%rd1], 1;",
        "wgmma.fence.sync;",
    ] {
        let ptx = format!(
            "{HEADER}.visible .entry t(.param .u64 t_out)\n{{\n\t.reg .b64 %rd<2>;\n\t{body}\n\tret;\n}}\n"
        );
        let e = Module::parse(&ptx).expect_err(body);
        assert!(
            matches!(
                e,
                EmuError::Unsupported { line: 7, .. } | EmuError::Parse { line: 7, .. }
            ),
            "{body}: {e}"
        );
    }
}
