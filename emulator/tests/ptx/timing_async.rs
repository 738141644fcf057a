//! The SM simulation of the Hopper asynchronous instructions (`timing/sim.rs`: wgmma issue /
//! commit / wait, TMA loads completing on an mbarrier, mbarrier waits across warps) on tiny
//! hand-written sm_90a kernels whose cycle counts are worked out by hand in each test.

use crate::tma::map2d;
use flashmha_emulator::timing::{KernelTrace, Kind, PipeParams, SmConfig};
use flashmha_emulator::{
    Device, EmuOptions, LaunchConfig, Module, TmaDataType, TmaOobFill, TmaSwizzle,
};

/// The round-number parameters of the synchronous tests (`timing.rs`: ALU and FMA 4 / 2, one
/// memory instruction per clock, global 200 clocks after the bytes, barrier and mbarrier release
/// 20) with conversions at 24 / 8 and the global server at 64 B/clk.
fn cfg() -> SmConfig {
    SmConfig {
        conv: PipeParams {
            latency: 24,
            interval: 8,
        },
        global_bytes_per_clk: 64.0,
        ..crate::timing::cfg()
    }
}

/// Emulates one CTA of `threads` threads of the sm_90a kernel `src` with `params`, traced.
fn trace(src: &str, threads: u32, params: &[u8], dev: &mut Device) -> KernelTrace {
    let m = Module::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let launch = LaunchConfig {
        grid: [1, 1, 1],
        block: [threads, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let (report, trace) = dev
        .launch_traced(&m, "k", &launch, params, &[[0, 0, 0]])
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    trace
}

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";

#[test]
fn a_tma_load_completes_its_mbarrier_phase_after_its_bytes_and_the_latency() {
    // Lane 0 initialises the mbarrier (1 arrival), arrives expecting 4096 bytes and issues a
    // 64 x 32 u16 box (4096 bytes); the warp waits on phase 0. By hand (movs and fences free):
    // setp at 0 (ready 4); init at 4; arrive.expect_tx at 5; the TMA at 6: 128 sectors at
    // 64 B/clk hold the global server to 6 + 64 = 70, the bytes land at 70 + 200 = 270, which
    // completes the phase (arrival in, bytes balanced); the wait at 7 releases at 270 + 20 =
    // 290; the branch issues at 290, `ret` at 291: the warp ends at 292.
    let src = format!(
        "{HEADER}.visible .entry k(.param .align 64 .b8 tmap[128])\n{{\n\
\t.reg .b32 %r<8>;\n\t.reg .b64 %rd<4>;\n\t.reg .pred %p<4>;\n\
\t.shared .align 8 .b64 bar;\n\t.shared .align 1024 .b8 tile[4096];\n\
\tmov.u32 %r1, bar;\n\tmov.u32 %r2, tile;\n\tmov.u32 %r3, %tid.x;\n\tmov.u32 %r4, 0;\n\
\tmov.u64 %rd1, tmap;\n\tcvta.param.u64 %rd2, %rd1;\n\
\tsetp.eq.u32 %p1, %r3, 0;\n\
\t@%p1 mbarrier.init.shared::cta.b64 [%r1], 1;\n\
\tfence.mbarrier_init.release.cluster;\n\tfence.proxy.async.shared::cta;\n\
\t@%p1 mbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], 4096;\n\
\t@%p1 cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd2, {{%r4, %r4}}], [%r1];\n\
WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r1], 0;\n\t@!%p2 bra WAIT;\n\tret;\n}}\n"
    );
    let mut dev = Device::new();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let g = dev.upload(&data);
    let map = map2d(
        TmaDataType::U16,
        g,
        [64, 32],
        128,
        [64, 32],
        TmaSwizzle::None,
        TmaOobFill::None,
    );
    let t = trace(&src, 32, map.as_bytes(), &mut dev);
    let tma = t.ctas[0].warps[0]
        .iter()
        .find(|r| t.kind(r.pc) == Some(Kind::TmaLoad))
        .expect("the TMA record");
    assert_eq!(tma.mbar_c(), 4096, "the load's bytes are in the trace");
    let run = t.simulate_sm(&[0], &cfg()).unwrap();
    assert_eq!(run.cycles, 292);
    // Twice the bytes at the same server: the load holds it 128 clocks, 64 more.
    let slow = SmConfig {
        global_bytes_per_clk: 32.0,
        ..cfg()
    };
    assert_eq!(t.simulate_sm(&[0], &slow).unwrap().cycles, 292 + 64);
}

#[test]
fn a_waiter_on_another_warps_arrival_is_released_when_the_phase_completes() {
    // Warp 0 waits on phase 0 of an mbarrier (1 arrival) that lane 0 of warp 1 completes after
    // a chain of four dependent FMAs and a conversion (its arrive count is the chain's result,
    // 1). The emulator may run warp 0's try_wait before warp 1 arrives (a failed poll in the
    // trace); the simulation drops such polls and times the wait itself. By hand, each warp on
    // its own sub-partition: setps at 0, 2, 4; init at 5; bar.sync at 6, released at 26; the
    // branch at 26. Warp 1: FMAs at 27, 31, 35, 39 (ready 43), cvt at 43 (ready 67), arrive at
    // 67: the phase completes at 67. Warp 0: its wait (27) releases at 67 + 20 = 87, the
    // branch issues at 87, `ret` at 88: it ends at 89, the SM's last clock.
    let src = format!(
        "{HEADER}.visible .entry k()\n{{\n\
\t.reg .b32 %r<8>;\n\t.reg .f32 %f<4>;\n\t.reg .pred %p<6>;\n\t.shared .align 8 .b64 bar;\n\
\tmov.u32 %r1, bar;\n\tmov.u32 %r3, %tid.x;\n\
\tmov.f32 %f0, 0f00000000;\n\tmov.f32 %f1, 0f3F800000;\n\tmov.f32 %f2, 0f3F800000;\n\
\tsetp.eq.u32 %p1, %r3, 0;\n\tsetp.eq.u32 %p3, %r3, 32;\n\tsetp.lt.u32 %p4, %r3, 32;\n\
\t@%p1 mbarrier.init.shared::cta.b64 [%r1], 1;\n\tbar.sync 0;\n\t@%p4 bra WAIT;\n\
\tfma.rn.f32 %f1, %f1, %f0, %f2;\n\tfma.rn.f32 %f1, %f1, %f0, %f2;\n\
\tfma.rn.f32 %f1, %f1, %f0, %f2;\n\tfma.rn.f32 %f1, %f1, %f0, %f2;\n\
\tcvt.rzi.u32.f32 %r6, %f1;\n\
\t@%p3 mbarrier.arrive.release.cta.shared::cta.b64 _, [%r1], %r6;\n\tret;\n\
WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r1], 0;\n\t@!%p2 bra WAIT;\n\tret;\n}}\n"
    );
    let mut dev = Device::new();
    let t = trace(&src, 64, &[], &mut dev);
    let run = t.simulate_sm(&[0], &cfg()).unwrap();
    assert_eq!(run.cycles, 89);
    assert_eq!(run.cta_cycles, vec![89]);
    // A slower conversion moves the arrival and the release by the same clocks.
    let slow = SmConfig {
        conv: PipeParams {
            latency: 34,
            interval: 8,
        },
        ..cfg()
    };
    assert_eq!(t.simulate_sm(&[0], &slow).unwrap().cycles, 99);
    let stalled: u64 = run
        .stalls
        .iter()
        .filter(|(k, _)| k == "mbarrier wait")
        .map(|(_, v)| *v)
        .sum();
    assert!(stalled > 0, "{:?}", run.stalls);
}

#[test]
fn chained_wgmmas_queue_on_the_tensor_pipe_and_wait_group_waits_for_the_last() {
    // One warpgroup issues three m64n8k16 wgmmas into the same accumulators, commits and waits.
    // With the wgmma pipe at 4 clocks per m16n8k16 (N = 8: 4 clocks per warp quarter) and a
    // latency of 16, each warp on its own sub-partition: setp at 0 (ready 4); the wgmmas issue
    // at 4, 5, 6 (the accumulators do not hold them back) and run on the tensor pipe 4-8, 8-12,
    // 12-16: the last lands at 16 + 16 = 32; commit at 7, wait_group 0 at 8 blocks to 32,
    // `ret` issues at 32: every warp ends at 33.
    let src = format!(
        "{HEADER}.visible .entry k(.param .u64 p_da, .param .u64 p_db)\n{{\n\
\t.reg .b32 %r<8>;\n\t.reg .b64 %rd<16>;\n\t.reg .pred %p<8>;\n\t.reg .f32 %f<8>;\n\
\t.shared .align 1024 .b8 smem[4096];\n\
\tld.param.u64 %rd10, [p_da];\n\tld.param.u64 %rd11, [p_db];\n\tmov.u32 %r2, %tid.x;\n\
\tsetp.ne.u32 %p6, %r2, %r2;\n\twgmma.fence.sync.aligned;\n\
\twgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {{%f0, %f1, %f2, %f3}}, %rd10, %rd11, %p6, 1, 1, 0, 0;\n\
\twgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {{%f0, %f1, %f2, %f3}}, %rd10, %rd11, 1, 1, 1, 0, 0;\n\
\twgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {{%f0, %f1, %f2, %f3}}, %rd10, %rd11, 1, 1, 1, 0, 0;\n\
\twgmma.commit_group.sync.aligned;\n\twgmma.wait_group.sync.aligned 0;\n\tret;\n}}\n"
    );
    let desc = |start: u32| {
        flashmha_emulator::matrix_desc::MatrixDesc {
            start,
            lbo: 128,
            sbo: 256,
            base_offset: 0,
            swizzle: flashmha_emulator::matrix_desc::Swizzle::None,
        }
        .encode()
    };
    let mut params = desc(0).to_le_bytes().to_vec();
    params.extend(desc(2048).to_le_bytes());
    // The operands are never written: the uninitialised-read check is off, timing only.
    let mut dev = Device::with_options(EmuOptions {
        check_uninit: false,
        ..Default::default()
    });
    let t = trace(&src, 128, &params, &mut dev);
    let wgmma = PipeParams {
        latency: 16,
        interval: 4,
    };
    let run = t.simulate_sm_wgmma(&[0], &cfg(), wgmma).unwrap();
    assert_eq!(run.cycles, 33);
    // 3 wgmmas x 4 clocks x 4 warps of tensor-pipe work.
    assert_eq!(run.tensor_busy, 48);
    // A slower pipe: the last wgmma ends at 4 + 3 x 8 = 28, lands at 44, ret at 44.
    let slow = PipeParams {
        latency: 16,
        interval: 8,
    };
    assert_eq!(t.simulate_sm_wgmma(&[0], &cfg(), slow).unwrap().cycles, 45);
}

#[test]
fn lanes_that_exit_early_do_not_end_the_warp() {
    // Lanes 1-31 return at once; lane 0 runs a chain of four dependent FMAs (a producer warp's
    // shape). The emulator runs the fall-through path (lane 0) first, so the trace holds the
    // chain, lane 0's `ret`, then the other lanes' `ret`. By hand: setp at 0 (ready 4), the
    // branch at 4, the FMAs at 5, 9, 13, 17 (the last lands at 21), lane 0's `ret` at 18 (not
    // the warp's last record: no effect), the last `ret` at 19: the warp ends when the chain
    // lands, at 21. Ended at the first `ret`, it would end at 19 with the chain still in flight.
    let src = format!(
        "{HEADER}.visible .entry k()\n{{\n\
\t.reg .b32 %r<4>;\n\t.reg .f32 %f<4>;\n\t.reg .pred %p<2>;\n\
\tmov.u32 %r3, %tid.x;\n\tmov.f32 %f0, 0f00000000;\n\tmov.f32 %f1, 0f3F800000;\n\
\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra DONE;\n\
\tfma.rn.f32 %f1, %f1, %f0, %f1;\n\tfma.rn.f32 %f1, %f1, %f0, %f1;\n\
\tfma.rn.f32 %f1, %f1, %f0, %f1;\n\tfma.rn.f32 %f1, %f1, %f0, %f1;\n\tret;\n\
DONE:\n\tret;\n}}\n"
    );
    let mut dev = Device::new();
    let t = trace(&src, 32, &[], &mut dev);
    let exits = t.ctas[0].warps[0]
        .iter()
        .filter(|r| t.kind(r.pc) == Some(Kind::Exit))
        .count();
    assert_eq!(exits, 2, "both paths' ret are in the trace");
    let kinds: Vec<_> = t.ctas[0].warps[0].iter().map(|r| t.kind(r.pc)).collect();
    let first_exit = kinds.iter().position(|k| *k == Some(Kind::Exit)).unwrap();
    assert_eq!(
        kinds[first_exit - 1],
        Some(Kind::Fma),
        "lane 0's path ran first"
    );
    assert_eq!(t.simulate_sm(&[0], &cfg()).unwrap().cycles, 21);
}
