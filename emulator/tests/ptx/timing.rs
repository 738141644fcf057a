//! The timing model (`src/timing/`) on kernels whose cycle counts are computed by hand from the
//! parameters of [`cfg`]: a dependent FMA chain, independent FMAs, an `mma` chain alone and with a
//! second warp on the same sub-partition hiding its latency, bank-conflicted shared loads, a
//! barrier, and a `cp.async` group. Each expected count is derived in the comment above it.

use flashmha_emulator::timing::{KernelTrace, Kind, PipeParams, Rec, SmConfig};
use flashmha_emulator::{Device, EmuOptions, LaunchConfig, Module};

/// Round-number parameters, so that the expected counts below can be checked by hand.
pub(crate) fn cfg() -> SmConfig {
    let p = |latency, interval| PipeParams { latency, interval };
    SmConfig {
        subpartitions: 4,
        alu: p(4, 2),
        fma: p(4, 2),
        fp64: p(8, 4),
        sfu: p(20, 8),
        conv: p(20, 8),
        mma: p(32, 8),
        mio_interval: 1,
        smem_latency: 30,
        shuffle_latency: 30,
        l1_latency: 32,
        global_latency: 200,
        global_bytes_per_clk: 32.0,
        barrier_latency: 20,
        sched_window: 1,
    }
}

fn ptx(body: &str, shared: &str) -> String {
    format!(
        ".version 8.0\n.target sm_80\n.address_size 64\n{shared}\n.visible .entry k(.param .u64 k_in)\n{{\n\
         \t.reg .pred %p<4>;\n\t.reg .b32 %r<40>;\n\t.reg .f32 %f<40>;\n\t.reg .b64 %rd<8>;\n\
         \tmov.u32 %r1, %tid.x;\n{body}\n\tret;\n}}\n"
    )
}

/// Launches one CTA of `threads` threads of `body` with a 4 KiB global input, traces it and
/// simulates `copies` copies of it resident on one SM; returns the SM's cycles.
fn cycles(body: &str, shared: &str, threads: u32, copies: usize) -> (u64, KernelTrace) {
    let src = ptx(body, shared);
    let m = Module::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let mut dev = Device::with_options(EmuOptions {
        check_uninit: false,
        ..Default::default()
    });
    let input = dev.upload(&[0x3c; 4096]);
    let cfg_launch = LaunchConfig {
        grid: [1, 1, 1],
        block: [threads, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let (report, trace) = dev
        .launch_traced(&m, "k", &cfg_launch, &input.0.to_le_bytes(), &[[0, 0, 0]])
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(trace.ctas.len(), 1);
    let run = trace.simulate_sm(&vec![0; copies], &cfg()).unwrap();
    (run.cycles, trace)
}

/// The first record of warp `w` of the traced CTA whose instruction is of kind `k`.
fn first_of(trace: &KernelTrace, w: usize, k: Kind) -> Rec {
    *trace.ctas[0].warps[w]
        .iter()
        .find(|r| trace.kind(r.pc) == Some(k))
        .expect("a record of that kind")
}

fn repeat(line: &str, n: usize) -> String {
    (0..n).map(|_| format!("\t{line}\n")).collect()
}

#[test]
fn dependent_fma_chain_pays_the_latency_per_link() {
    // The movs are free (cost map). FMA k (1-based) waits for k-1: issues at 4(k-1), its result
    // is ready at 4k; `ret` issues at 4(N-1)+1, so the warp finishes when the last FMA lands:
    // 4N = 64 for N = 16.
    let body = format!(
        "\tmov.f32 %f1, 0f3F800000;\n\tmov.f32 %f2, 0f3F000000;\n{}",
        repeat("fma.rn.f32 %f1, %f1, %f2, %f2;", 16)
    );
    assert_eq!(cycles(&body, "", 32, 1).0, 64);
}

#[test]
fn independent_fmas_pay_the_initiation_interval() {
    // 16 FMAs into different registers: one every 2 clocks (interval), the last issues at 30 and
    // lands at 34.
    let body: String = (0..16)
        .map(|i| format!("\tfma.rn.f32 %f{}, %f30, %f31, %f32;\n", i + 1))
        .collect();
    let body = format!("\tmov.f32 %f30, 0f3F800000;\n\tmov.f32 %f31, 0f3F800000;\n\tmov.f32 %f32, 0f3F800000;\n{body}");
    assert_eq!(cycles(&body, "", 32, 1).0, 34);
}

fn mma_chain(n: usize) -> String {
    let mut s = String::new();
    for r in 1..=6 {
        s += &format!("\tmov.b32 %r{}, 1006648320;\n", 10 + r);
    }
    for f in 1..=4 {
        s += &format!("\tmov.f32 %f{f}, 0f00000000;\n");
    }
    s + &repeat(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f1, %f2, %f3, %f4}, {%r11, %r12, %r13, %r14}, {%r15, %r16}, {%f1, %f2, %f3, %f4};",
        n,
    )
}

#[test]
fn mma_chain_alone_and_with_a_second_warp_on_its_sub_partition() {
    // One warp, 8 mma accumulating into the same registers: each waits for the previous one's
    // 32-clock latency: 8 x 32 = 256.
    let (alone, trace) = cycles(&mma_chain(8), "", 32, 1);
    assert_eq!(alone, 256);
    // Where the clocks went, up to the last issue (`ret` at 225): sub-partition 0 waits 31
    // clocks for each of 7 mma results; sub-partitions 1-3 have no warp for 225 clocks each.
    let run = trace.simulate_sm(&[0], &cfg()).unwrap();
    let stall = |k: &str| run.stalls.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(stall("wait: mma result"), 7 * 31);
    assert_eq!(stall("no warp left"), 3 * 225);
    assert_eq!(
        run.stalls.iter().map(|(_, n)| n).sum::<u64>(),
        7 * 31 + 3 * 225
    );
    // Five copies of the one-warp CTA: warp slots 0 and 4 share sub-partition 0 (slots 1-3 run
    // alone on theirs, finishing at 256). On sub-partition 0, slot 4's mma k issues 8 clocks (the
    // tensor pipe's interval) after slot 0's, in slot 0's latency shadow: its last lands at
    // 7 x 32 + 8 + 32 = 264. Twice the work of sub-partition 0 in 264 clocks instead of 512.
    let run = trace.simulate_sm(&[0; 5], &cfg()).unwrap();
    assert_eq!(run.cycles, 264);
    assert_eq!(run.cta_cycles, vec![256, 256, 256, 256, 264]);
    assert_eq!(run.issued, 5 * 9, "8 mma + ret per warp; the movs are free");
    assert_eq!(run.free_instructions, 5 * 11);
    assert_eq!(run.tensor_busy, 5 * 8 * 8);
}

const SMEM: &str = ".shared .align 16 .b8 buf[8192];";

/// Lane l loads the word at byte `l * stride` (+ `extra` for a second load), then adds.
fn smem_load(stride_log2: u32, second: bool) -> String {
    let mut s = format!(
        "\tshl.b32 %r2, %r1, {stride_log2};\n\tmov.u32 %r3, buf;\n\tadd.u32 %r4, %r3, %r2;\n\
         \tld.shared.f32 %f1, [%r4];\n"
    );
    if second {
        s += "\tld.shared.f32 %f3, [%r4+4];\n\tadd.f32 %f2, %f1, %f3;\n";
    } else {
        s += "\tadd.f32 %f2, %f1, %f1;\n";
    }
    s
}

#[test]
fn bank_conflicts_serialise_shared_loads() {
    // shl issues at 0 (ready 4), the address add at 4 (ready 8), the load at 8.
    // Conflict-free (4-byte stride): one wavefront, data at 8 + 30 = 38; the dependent add
    // issues at 38 and lands at 42.
    let (free, trace) = cycles(&smem_load(2, false), SMEM, 32, 1);
    assert_eq!(free, 42);
    let ld = first_of(&trace, 0, Kind::SharedLd);
    assert_eq!(ld.wavefronts(), 1);
    // 128-byte stride: all 32 lanes in bank 0, 32 wavefronts: the server is busy 8..40, the last
    // wavefront's data at 39 + 30 = 69; the add lands at 73.
    let (conflicted, trace) = cycles(&smem_load(7, false), SMEM, 32, 1);
    assert_eq!(conflicted, 73);
    let ld = first_of(&trace, 0, Kind::SharedLd);
    assert_eq!(ld.wavefronts(), 32);
    // A second conflicted load (bank 1) issues at 9 but queues behind the first: server busy
    // 40..72, data at 71 + 30 = 101; the add lands at 105.
    assert_eq!(cycles(&smem_load(7, true), SMEM, 32, 1).0, 105);
}

#[test]
fn barrier_releases_after_the_last_arrival() {
    // Warp-uniform branch: warp 1 runs 8 dependent FMAs, warp 0 skips them. Both: shr at 0
    // (ready 4), setp at 4 (ready 8), bra at 8. Warp 1: FMA k at 9 + 4(k-1) (the last at 37),
    // then bar.sync at 38 (it reads no pending register): the last arrival. Warp 0 arrived at 9
    // and waits. Both are released at 38 + 20 = 58 and issue the FMA after the barrier at 58
    // (different sub-partitions), which lands at 62.
    let body = format!(
        "\tmov.f32 %f1, 0f3F800000;\n\tmov.f32 %f2, 0f3F000000;\n\tshr.u32 %r5, %r1, 5;\n\
         \tsetp.ne.u32 %p1, %r5, 1;\n\t@%p1 bra SKIP;\n{}SKIP:\n\tbar.sync 0;\n\
         \tfma.rn.f32 %f3, %f2, %f2, %f2;\n",
        repeat("fma.rn.f32 %f1, %f1, %f2, %f2;", 8)
    );
    let (c, trace) = cycles(&body, "", 64, 1);
    assert_eq!(c, 62);
    let bar = first_of(&trace, 1, Kind::Bar { arrive: false });
    // Barrier 0, 32 threads of warp 1 arriving, 64 expected.
    assert_eq!(bar.barrier(), (0, 32, 64));
}

#[test]
fn cp_async_group_completes_after_latency_and_bandwidth() {
    // shl at 0 (ready 4); cvt at 4 (ready 8); the 64-bit add at 8 (ready 12); the shared address
    // add at 10 (ALU interval) (ready 14); cp.async at 14: 32 lanes x 16 B = 16 sectors at
    // 32 B/clk occupy the memory server 14..30, data at 30 + 200 = 230. commit at 15, wait_group 0
    // at 16 blocks until 230. The 4-byte load at a 16-byte lane stride is a 4-way bank conflict
    // (4 wavefronts, 230..234): data at 233 + 30 = 263; the add lands at 267.
    let body = "\tld.param.u64 %rd1, [k_in];\n\tshl.b32 %r2, %r1, 4;\n\tcvt.u64.u32 %rd2, %r2;\n\
                \tadd.s64 %rd3, %rd1, %rd2;\n\tmov.u32 %r3, buf;\n\tadd.u32 %r4, %r3, %r2;\n\
                \tcp.async.cg.shared.global [%r4], [%rd3], 16;\n\tcp.async.commit_group;\n\
                \tcp.async.wait_group 0;\n\tld.shared.f32 %f1, [%r4];\n\tadd.f32 %f2, %f1, %f1;\n";
    let (c, trace) = cycles(body, SMEM, 32, 1);
    let cp = first_of(&trace, 0, Kind::CpAsync);
    assert_eq!((cp.sectors(), cp.wavefronts()), (16, 4));
    assert_eq!(c, 267);
}

#[test]
fn tracing_leaves_results_and_counters_unchanged() {
    // The same launch with and without the trace: same counters, same output bytes. Each
    // thread squares its own word (global index ctaid * 64 + tid): if the CTAs shared words,
    // the result would depend on the order the emulator runs them in, and the test would flake.
    let src = ptx(
        "\tmov.u32 %r3, %ctaid.x;\n\tmad.lo.u32 %r1, %r3, 64, %r1;\n\
         \tld.param.u64 %rd1, [k_in];\n\tshl.b32 %r2, %r1, 2;\n\tcvt.u64.u32 %rd2, %r2;\n\
         \tadd.s64 %rd3, %rd1, %rd2;\n\tld.global.f32 %f1, [%rd3];\n\tmul.f32 %f2, %f1, %f1;\n\
         \tst.global.f32 [%rd3], %f2;\n",
        "",
    );
    let m = Module::parse(&src).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let run = |traced: bool| {
        let mut dev = Device::new();
        let p = dev.upload(&data);
        let cfg = LaunchConfig {
            grid: [3, 1, 1],
            block: [64, 1, 1],
            dynamic_smem_bytes: 0,
        };
        let params = p.0.to_le_bytes();
        let (report, ntraced) = if traced {
            let (r, t) = dev
                .launch_traced(&m, "k", &cfg, &params, &[[1, 0, 0], [7, 0, 0]])
                .unwrap();
            (r, t.ctas.len())
        } else {
            (dev.launch(&m, "k", &cfg, &params).unwrap(), 0)
        };
        (report.counters.rows(), dev.read(p, 4096).unwrap(), ntraced)
    };
    let (c0, out0, _) = run(false);
    let (c1, out1, n) = run(true);
    assert_eq!(c0, c1);
    assert_eq!(out0, out1);
    // 3 CTAs x 64 threads squared the first 768 bytes' words and left the rest alone.
    assert_ne!(out0[..768], data[..768]);
    assert_eq!(out0[768..], data[768..]);
    // CTA [7, 0, 0] is outside the grid of 3: only CTA 1 is traced.
    assert_eq!(n, 1);
}

#[test]
fn scheduling_window_interleaves_independent_chains_only() {
    // Chain A (4 dependent FMAs on %f1) then chain B (4 on %f5), independent.
    // In trace order: A_k at 4(k-1) (A4 at 12); B1 waits for the FMA pipe (interval 2) until 14,
    // then B_k at 14 + 4(k-1): B4 at 26, landing at 30.
    // With a window of 8: B1 (no hazard with A) fills A's latency shadow: A_k at 4(k-1),
    // B_k at 4(k-1) + 2: B4 at 14, landing at 18.
    let chains = |b_src: &str| {
        format!(
            "\tmov.f32 %f1, 0f3F800000;\n\tmov.f32 %f2, 0f3F000000;\n\tmov.f32 %f5, 0f3F800000;\n{}\
             \tfma.rn.f32 %f5, {b_src}, %f2, %f2;\n{}",
            repeat("fma.rn.f32 %f1, %f1, %f2, %f2;", 4),
            repeat("fma.rn.f32 %f5, %f5, %f2, %f2;", 3)
        )
    };
    let windowed = |w| SmConfig {
        sched_window: w,
        ..cfg()
    };
    let (_, trace) = cycles(&chains("%f5"), "", 32, 1);
    assert_eq!(trace.simulate_sm(&[0], &windowed(1)).unwrap().cycles, 30);
    assert_eq!(trace.simulate_sm(&[0], &windowed(8)).unwrap().cycles, 18);
    // B1 reading A4's result (%f1) cannot pass it: B1 waits for 16 either way, B4 issues at 28
    // and lands at 32.
    let (_, trace) = cycles(&chains("%f1"), "", 32, 1);
    assert_eq!(trace.simulate_sm(&[0], &windowed(1)).unwrap().cycles, 32);
    assert_eq!(trace.simulate_sm(&[0], &windowed(8)).unwrap().cycles, 32);
}
