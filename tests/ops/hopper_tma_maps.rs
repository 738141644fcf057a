//! The Hopper forward's tensor maps, end to end on the emulator without the sm_90a kernel: the
//! plan's map descriptions (`FwdTmaMaps::describe`) are encoded by the emulator backend over
//! real q / k / v allocations and packed into `FlashFwdTmaParams` bytes; a hand-written sm_90a
//! PTX kernel that declares the same 640-byte, 64-byte aligned parameter loads one box through
//! each map with `cp.async.bulk.tensor.4d` at the kernel's coordinates (64 j, head, row,
//! batch). Every element of the box must be the host tensor's element at that index under the
//! caller's strides, zero past head_dim and past the rows, with the 128-byte swizzle applied,
//! and the emulator must see no access outside the buffers. Padded, varlen, GQA, head-major
//! (BHSD) with padded rows, and a head dim below the compiled one.
//!
//! PTX ISA references: "Data Movement and Conversion Instructions: cp.async.bulk.tensor"
//! (tile mode, out-of-bound elements are filled), "Tensors: Tensor Swizzling Modes" (128B).

use flashmha::backend::emulator::encode;
use flashmha::common::abi::{fwd_tma_params, FlashFwdParams, ParamsBytes};
use flashmha::common::dtype::DType;
use flashmha::common::geometry::Strides;
use flashmha::emulator::{Device, DevicePtr, LaunchConfig, Module};
use flashmha::ops::forward::tma::{FwdTmaMaps, TmaMapDesc};
use flashmha::problem::{FwdProblem, Operand, SeqLayout};
use flashmha::AttnOptions;

/// Rows per box in these tests (the kernels use block_m / block_n; any box height works).
const BOX_ROWS: u32 = 16;
const BOX_BYTES: u32 = 64 * BOX_ROWS * 2;

/// One CTA of 128 threads: thread 0 loads the box of the map at byte offset `map_offset` of the
/// params at coordinates `c`; all threads dump the shared tile to `out` (the last param).
fn kernel(map_offset: u32, c: [u32; 4]) -> String {
    format!(
        ".version 8.0\n.target sm_90a\n.address_size 64\n\
.visible .entry k(.param .align 64 .b8 params[640], .param .u64 out)\n{{\n\
\t.reg .b32 %r<32>;\n\t.reg .b64 %rd<16>;\n\t.reg .pred %p<8>;\n\
\t.shared .align 8 .b64 bar[1];\n\t.shared .align 1024 .b8 tile[{BOX_BYTES}];\n\
\tld.param.u64 %rd1, [out];\n\tmov.u32 %r1, bar;\n\tmov.u32 %r2, tile;\n\tmov.u32 %r3, %tid.x;\n\
\tmov.u64 %rd8, params;\n\tcvta.param.u64 %rd9, %rd8;\n\tadd.u64 %rd9, %rd9, {map_offset};\n\
\tsetp.ne.u32 %p1, %r3, 0;\n\t@%p1 bra SYNC;\n\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\
\tfence.mbarrier_init.release.cluster;\n\tfence.proxy.async.shared::cta;\nSYNC:\n\tbar.sync 0;\n\t@%p1 bra WAIT;\n\
\tmbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], {BOX_BYTES};\n\
\tmov.u32 %r10, {};\n\tmov.u32 %r11, {};\n\tmov.u32 %r12, {};\n\tmov.u32 %r13, {};\n\
\tcp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd9, {{%r10, %r11, %r12, %r13}}], [%r1];\n\
WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p2, [%r1], 0, 1000000;\n\t@!%p2 bra WAIT;\n\
\tmul.lo.u32 %r5, %r3, 4;\nDUMP:\n\tsetp.ge.u32 %p3, %r5, {BOX_BYTES};\n\t@%p3 bra END;\n\
\tadd.u32 %r6, %r2, %r5;\n\tld.shared.u32 %r7, [%r6];\n\tcvt.u64.u32 %rd3, %r5;\n\tadd.s64 %rd4, %rd1, %rd3;\n\
\tst.global.u32 [%rd4], %r7;\n\tadd.u32 %r5, %r5, 512;\n\tbra DUMP;\nEND:\n\tret;\n}}\n",
        c[0], c[1], c[2], c[3]
    )
}

/// Where byte `o` of a dense box lands with the 128-byte swizzle: chunk c of 128-byte line r
/// moves to chunk c XOR (r mod 8).
fn swizzled_128(o: usize) -> usize {
    let (line, chunk) = (o / 128, (o / 16) % 8);
    line * 128 + (chunk ^ (line % 8)) * 16 + o % 16
}

/// Host data of one operand: element i is a distinct non-zero value.
fn host_tensor(len: usize, salt: u16) -> Vec<u16> {
    (0..len)
        .map(|i| ((i as u32 * 7 + salt as u32) % 65_000 + 1) as u16)
        .collect()
}

struct Operands {
    q: (Operand, Vec<u16>),
    k: (Operand, Vec<u16>),
    v: (Operand, Vec<u16>),
}

/// Loads the box at `c` through operand `which` (0 q, 1 k, 2 v) and compares every element.
fn check_box(p: &FwdProblem, which: usize, c: [u32; 4]) {
    let maps = FwdTmaMaps::describe(&p.shape().unwrap(), BOX_ROWS, BOX_ROWS);
    let ops = Operands {
        q: (p.q, host_tensor(p.q.len, 1)),
        k: (p.k, host_tensor(p.k.len, 2)),
        v: (p.v, host_tensor(p.v.len, 3)),
    };
    let mut dev = Device::new();
    let mut upload = |data: &[u16]| {
        let ptr = dev.alloc(data.len() * 2);
        dev.write(ptr, bytemuck::cast_slice(data)).unwrap();
        ptr
    };
    let (qa, ka, va) = (upload(&ops.q.1), upload(&ops.k.1), upload(&ops.v.1));
    let tma = fwd_tma_params(
        encode(&maps.q, qa.0, "q").unwrap().as_bytes(),
        encode(&maps.k, ka.0, "k").unwrap().as_bytes(),
        encode(&maps.v, va.0, "v").unwrap().as_bytes(),
        &FlashFwdParams::default(),
    );
    let out = dev.alloc(BOX_BYTES as usize);
    let mut params = tma.as_bytes().to_vec();
    params.extend_from_slice(&out.0.to_le_bytes());
    let ptx = kernel(128 * which as u32, c);
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
    let layout = module.param_layout("k").unwrap();
    assert_eq!(
        layout.iter().map(|d| d.offset).collect::<Vec<_>>(),
        [0, 640],
        "the params struct comes first, 640 bytes"
    );
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [128, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let report = dev.launch(&module, "k", &cfg, &params).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    let got: Vec<u8> = dev.read(DevicePtr(out.0), BOX_BYTES as usize).unwrap();
    let (desc, (op, data)): (&TmaMapDesc, &(Operand, Vec<u16>)) = match which {
        0 => (&maps.q, &ops.q),
        1 => (&maps.k, &ops.k),
        _ => (&maps.v, &ops.v),
    };
    // The expected bounds come from the problem, not from the map under test.
    let (sq, sk) = p.layout.max_seqlens();
    let (tq, tk) = p.layout.total_rows();
    let (rows, batch) = match (p.layout.is_varlen(), which) {
        (true, 0) => (tq, 1),
        (true, _) => (tk, 1),
        (false, 0) => (sq, p.layout.batch()),
        (false, _) => (sk, p.layout.batch()),
    };
    let heads = if which == 0 {
        p.num_heads_q
    } else {
        p.num_heads_kv
    };
    // q, k: d_qk columns; v: d_v.
    let d = if which == 2 { p.head_dim_v } else { p.head_dim };
    let [d, heads, rows, batch] = [d, heads, rows, batch].map(|n| n as u64);
    assert_eq!(desc.global_dim, [d, heads, rows, batch]);
    let s = op.strides;
    for r in 0..BOX_ROWS as u64 {
        for col in 0..64u64 {
            let (x, h, y, b) = (c[0] as u64 + col, c[1] as u64, c[2] as u64 + r, c[3] as u64);
            let want = if x < d && h < heads && y < rows && b < batch {
                let i = b as i64 * s.batch + y as i64 * s.row + h as i64 * s.head + x as i64;
                data[i as usize]
            } else {
                0
            };
            let o = swizzled_128((r * 128 + col * 2) as usize);
            let v = u16::from_le_bytes([got[o], got[o + 1]]);
            assert_eq!(
                v, want,
                "operand {which} box {c:?}: element (col {col}, row {r})"
            );
        }
    }
}

fn padded(b: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize) -> FwdProblem {
    FwdProblem::contiguous(
        DType::F16,
        SeqLayout::Padded {
            batch: b,
            seqlen_q: sq,
            seqlen_k: sk,
        },
        hq,
        hkv,
        d,
        AttnOptions::default(),
    )
}

#[test]
fn padded_gqa_boxes_read_the_callers_elements_and_zero_past_the_rows() {
    // q [2, 20, 4, 128], k / v [2, 37, 2, 128].
    let p = padded(2, 20, 37, 4, 2, 128);
    // The second 64 columns of head 3, rows 16..32 of item 1 (rows 20.. are past seqlen_q).
    check_box(&p, 0, [64, 3, 16, 1]);
    // K head 1, rows 32..48 of item 1 (37.. past seqlen_k); V head 0 of item 0, rows 0..16.
    check_box(&p, 1, [0, 1, 32, 1]);
    check_box(&p, 2, [64, 0, 0, 0]);
}

#[test]
fn a_head_dim_below_the_compiled_one_reads_zeros_past_it() {
    // d48 on the d64 kernel: columns 48..64 of every box row are zero, never the next head.
    let p = padded(1, 9, 9, 3, 3, 48);
    check_box(&p, 0, [0, 1, 0, 0]);
    check_box(&p, 1, [0, 2, 0, 0]);
    // d200 on the d256 kernel: the fourth box holds columns 192..200 only.
    let p = padded(1, 5, 5, 1, 1, 200);
    check_box(&p, 2, [192, 0, 0, 0]);
}

#[test]
fn v_boxes_of_a_head_dim_pair_span_d_v_columns_of_their_own_rows() {
    // q, k [1, 21, 2, 192], v [1, 21, 2, 128] (issue 23): V's map is 128 columns wide with V's
    // own strides; its second box is the last one and holds V's columns 64..128, K's third box
    // K's columns 128..192.
    let p = FwdProblem::contiguous_dv(
        DType::F16,
        SeqLayout::Padded {
            batch: 1,
            seqlen_q: 21,
            seqlen_k: 21,
        },
        (2, 2),
        (192, 128),
        AttnOptions::default(),
    );
    check_box(&p, 2, [64, 1, 16, 0]);
    check_box(&p, 1, [128, 1, 0, 0]);
    check_box(&p, 0, [128, 0, 16, 0]);
}

#[test]
fn varlen_boxes_walk_the_packed_rows() {
    let p = FwdProblem::varlen(DType::Bf16, (vec![0, 5, 30], vec![0, 17, 40]), (4, 2), 64);
    // Item 1 of q starts at row 5; its second box (rows 21..37) crosses the end (30).
    check_box(&p, 0, [0, 3, 21, 0]);
    check_box(&p, 1, [0, 1, 17, 0]);
    check_box(&p, 2, [0, 0, 32, 0]);
}

#[test]
fn head_major_strides_with_padded_rows() {
    // BHSD: q [b=2, h=3, s=19, row pitch 72] for d64; k / v contiguous BSHD.
    let mut p = padded(2, 19, 23, 3, 3, 64);
    p.q = Operand {
        strides: Strides {
            batch: 3 * 19 * 72,
            head: 19 * 72,
            row: 72,
        },
        len: 2 * 3 * 19 * 72,
    };
    p.o = p.q;
    check_box(&p, 0, [0, 2, 16, 1]);
    check_box(&p, 0, [0, 0, 0, 0]);
    check_box(&p, 1, [0, 2, 16, 0]);
}

#[test]
fn every_sm90_entry_declares_one_flash_fwd_tma_params() {
    // The compiled sm_90a kernels take exactly the struct the backends pack: one parameter of
    // size_of::<FlashFwdTmaParams>() bytes at offset 0, 64-byte aligned (the tensor maps'
    // alignment). The field offsets inside it are checked by tests/ops/abi_probe.rs.
    let rows: Vec<_> = flashmha::common::build_info::FWD_KERNELS
        .iter()
        .filter(|r| r.target == flashmha::KernelTarget::Hopper)
        .collect();
    assert_eq!(
        rows.len(),
        10,
        "f16 and bf16 at d64 / d128 / d256 and the (d_qk, d_v) pairs (192, 128), (128, 64)"
    );
    for row in rows {
        let image = flashmha::common::build_info::module_of(row.entry).expect("compiled");
        assert_eq!(image.ptx_arch, "compute_90a");
        let module = Module::parse(image.ptx).expect("the sm_90a PTX parses");
        let layout = module.param_layout(row.entry).expect("entry");
        assert_eq!(layout.len(), 1, "{}", row.entry);
        assert_eq!(layout[0].offset, 0);
        assert_eq!(
            layout[0].size as usize,
            std::mem::size_of::<flashmha::common::abi::FlashFwdTmaParams>(),
            "{}",
            row.entry
        );
        assert_eq!(layout[0].align, 64, "{}", row.entry);
    }
}

#[test]
fn varlen_batches_without_query_or_key_rows_run_clean_on_the_sm90a_kernels() {
    // A map needs at least one row, so an operand without rows is described with one; the
    // kernel must then load no row of it (an item with no queries does no work, one with no
    // keys writes O = 0 and LSE = -inf without a K / V load). The emulator flags any access
    // past the buffers.
    use flashmha::emulated::{forward, HostInputs};
    for (cu_q, cu_k) in [
        (vec![0, 0, 0], vec![0, 40, 70]),
        (vec![0, 9, 30], vec![0, 0, 0]),
    ] {
        for d in [64, 128, 256] {
            let mut p = FwdProblem::varlen(DType::F16, (cu_q.clone(), cu_k.clone()), (2, 1), d);
            p.target = flashmha::KernelTarget::Hopper;
            p.lse_len = Some(p.row_stats_len());
            let inputs = HostInputs::random(&p, 5);
            let run = forward(&p, &inputs).unwrap();
            assert!(run.launch.kernel.entry.starts_with("flashmha_fwd_sm90_"));
            assert!(
                run.report.is_clean(),
                "d{d} q {cu_q:?} k {cu_k:?}: {:#?}",
                run.report.findings
            );
            // No keys: every query row's output is exactly zero.
            if cu_k.last() == Some(&0) {
                assert!(run.outputs.o.iter().all(|&b| b == 0), "d{d}: O = 0");
            }
        }
    }
}
