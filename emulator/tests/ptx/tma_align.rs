//! A 128-byte-swizzled tensor (TMA) load into a shared destination that is not 1024-byte
//! aligned. The swizzle permutes 16-byte chunks by bits 7-9 of the shared-memory address (PTX
//! ISA "Tensor Swizzling Modes"; CUDA Driver API `CU_TENSOR_MAP_SWIZZLE_128B`), so the
//! pattern repeats every 1024 bytes and a box must start at a repeat (the CUDA C++
//! Programming Guide's TMA swizzle section asks for a destination aligned to the swizzle
//! pattern's repeat, 1024 bytes for 128B). What the emulator does (`exec/bulk.rs`): the copy
//! is a `Misaligned` finding at the `cp.async.bulk.tensor` and is not performed (no byte lands,
//! no transaction completes on the mbarrier, so a thread waiting for it ends in a `Deadlock`
//! finding); an aligned destination loads clean.

use crate::support::linear;
use crate::tma::map2d;
use flashmha_emulator::{Device, FindingKind, Module, TmaDataType, TmaOobFill, TmaSwizzle};

const HEADER: &str = ".version 8.0\n.target sm_90a\n.address_size 64\n";

/// One thread loads a 64 x 8 u16 box (128-byte rows, 128B swizzle) to `tile + offset` and
/// waits for it on an mbarrier.
fn kernel(offset: u32) -> String {
    format!(
        "{HEADER}.visible .entry k(.param .align 64 .b8 tmap[128])\n{{\n\
\t.reg .b32 %r<16>;\n\t.reg .b64 %rd<8>;\n\t.reg .pred %p<4>;\n\
\t.shared .align 8 .b64 bar;\n\t.shared .align 1024 .b8 tile[4096];\n\
\tmov.u32 %r1, bar;\n\tmov.u32 %r2, tile;\n\tadd.u32 %r2, %r2, {offset};\n\
\tmov.u64 %rd1, tmap;\n\tcvta.param.u64 %rd2, %rd1;\n\
\tmbarrier.init.shared::cta.b64 [%r1], 1;\n\tfence.proxy.async.shared::cta;\n\
\tmbarrier.arrive.expect_tx.shared::cta.b64 _, [%r1], 1024;\n\
\tmov.u32 %r10, 0;\n\tmov.u32 %r11, 3;\n\
\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r2], [%rd2, {{%r10, %r11}}], [%r1];\n\
WAIT:\n\tmbarrier.try_wait.parity.shared::cta.b64 %p1, [%r1], 0;\n\t@!%p1 bra WAIT;\n\tret;\n}}\n"
    )
}

#[test]
fn a_128b_swizzled_tma_load_needs_a_1024_byte_aligned_destination() {
    let mut dev = Device::new();
    let data: Vec<u8> = (0..64 * 16 * 2).map(|i| (i * 7 % 251) as u8).collect();
    let inp = dev.upload(&data);
    let map = map2d(
        TmaDataType::U16,
        inp,
        [64, 16],
        128,
        [64, 8],
        TmaSwizzle::B128,
        TmaOobFill::None,
    );
    // 128-byte aligned (legal without swizzle) but inside a 1024-byte pattern repeat: a
    // finding, and nothing is copied.
    for offset in [0u32, 128, 512, 1024 + 384, 2048] {
        let m = Module::parse(&kernel(offset)).unwrap_or_else(|e| panic!("{e}"));
        let rep = dev
            .launch(&m, "k", &linear(1, 1), map.as_bytes())
            .expect("launch");
        if offset % 1024 == 0 {
            assert!(rep.is_clean(), "offset {offset}: {:?}", rep.findings);
            assert_eq!(rep.counters.tma_load_bytes, 1024, "offset {offset}");
            continue;
        }
        // The copy is refused; the thread waiting for its bytes can never continue.
        let kinds: Vec<_> = rep.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FindingKind::Misaligned, FindingKind::Deadlock],
            "offset {offset}: {:?}",
            rep.findings
        );
        let mis: Vec<_> = rep.of_kind(FindingKind::Misaligned).collect();
        assert!(mis[0].ptx.starts_with("cp.async.bulk.tensor"), "{}", mis[0]);
        assert!(mis[0].detail.contains("1024-byte"), "{}", mis[0]);
        assert_eq!(
            rep.counters.tma_load_bytes, 0,
            "offset {offset}: nothing lands"
        );
    }
}
