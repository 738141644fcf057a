//! Unit tests of planning for Hopper (sm_90): which table row serves a head dim (the sm_90a
//! row when its bucket is no wider than Ampere's, the Ampere row otherwise), the params ABI and
//! tensor maps the plan records, and the tensor-map checks of validation. On a synthetic table,
//! so they do not depend on which instantiations this build compiled.

use super::*;
use crate::common::dtype::DType;
use crate::common::error::{AlignWhat, Dim, Error, Limit, TensorName};
use crate::common::options::AttnOptions;
use crate::host::problem::{FwdProblem, SeqLayout, Strides};

const fn row(target: KernelTarget, entry: &'static str, d: u32, m: u32, n: u32) -> FwdKernelRow {
    let hopper = matches!(target, KernelTarget::Hopper);
    FwdKernelRow {
        target,
        entry,
        dtype: DType::F16,
        head_dim: d,
        head_dim_v: d,
        block_m: m,
        block_n: n,
        num_warps: if hopper { 12 } else { 4 },
        smem_bytes: if hopper {
            2 * d * (m + 4 * n) + 128
        } else {
            49152
        },
    }
}

const TABLE: &[FwdKernelRow] = &[
    row(KernelTarget::Ampere, "flashmha_fwd_f16_d32", 32, 128, 128),
    row(KernelTarget::Ampere, "flashmha_fwd_f16_d64", 64, 128, 64),
    row(KernelTarget::Ampere, "flashmha_fwd_f16_d80", 80, 128, 64),
    row(KernelTarget::Ampere, "flashmha_fwd_f16_d128", 128, 128, 64),
    row(
        KernelTarget::Hopper,
        "flashmha_fwd_sm90_f16_d64",
        64,
        128,
        128,
    ),
    row(
        KernelTarget::Hopper,
        "flashmha_fwd_sm90_f16_d128",
        128,
        128,
        128,
    ),
    row(
        KernelTarget::Hopper,
        "flashmha_fwd_sm90_f16_d256",
        256,
        128,
        64,
    ),
];

fn problem(d: usize) -> FwdProblem {
    FwdProblem::contiguous(
        DType::F16,
        SeqLayout::Padded {
            batch: 2,
            seqlen_q: 300,
            seqlen_k: 70,
        },
        6,
        2,
        d,
        AttnOptions::default(),
    )
}

fn hopper(p: &FwdProblem) -> crate::common::error::Result<FwdPlan> {
    super::plan_in(TABLE, KernelTarget::Hopper, p)
}

#[test]
fn hopper_runs_its_rows_where_its_bucket_is_no_wider_than_amperes() {
    for (d, entry) in [
        (64, "flashmha_fwd_sm90_f16_d64"),
        // d48: Ampere's bucket is d64 too, so the sm_90a d64 serves it.
        (48, "flashmha_fwd_sm90_f16_d64"),
        (128, "flashmha_fwd_sm90_f16_d128"),
        // d96: no Ampere d96 in this table, both buckets are d128 -> sm_90a.
        (96, "flashmha_fwd_sm90_f16_d128"),
        // Beyond the Ampere table: only the sm_90a d256 serves it.
        (200, "flashmha_fwd_sm90_f16_d256"),
        // d32 / d80 have narrower Ampere rows than the sm_90a d64 / d128.
        (32, "flashmha_fwd_f16_d32"),
        (24, "flashmha_fwd_f16_d32"),
        (80, "flashmha_fwd_f16_d80"),
        (72, "flashmha_fwd_f16_d80"),
    ] {
        let plan = hopper(&problem(d)).unwrap();
        assert_eq!(plan.launch().kernel.entry, entry, "d{d}");
        assert_eq!(plan.launch().params.head_dim, d as i32);
    }
}

#[test]
fn an_sm90_plan_takes_the_tma_params_and_its_own_geometry() {
    let plan = hopper(&problem(128)).unwrap();
    let l = plan.launch();
    assert_eq!(l.kernel.target, KernelTarget::Hopper);
    // 12 warps: one producer and two consumer warpgroups.
    assert_eq!(l.block, [384, 1, 1]);
    // Grid as for the Ampere forward: ceil(300 / 128) Q tiles, query heads, items.
    assert_eq!(l.grid, [3, 6, 2]);
    assert_eq!(l.dynamic_smem_bytes, 2 * 128 * (128 + 4 * 128) + 128);
    let FwdParamsAbi::FwdTma(maps) = l.abi else {
        panic!("an sm_90a row takes FlashFwdTmaParams, got {:?}", l.abi)
    };
    assert_eq!(maps.q.global_dim, [128, 6, 300, 2]);
    assert_eq!(maps.q.box_dim, [64, 1, 128, 1]);
    assert_eq!(maps.k.global_dim, [128, 2, 70, 2]);
    assert_eq!(maps.k.box_dim, [64, 1, 128, 1]);
    // The maps are the pure description of the shape, as the tma module computes it.
    assert_eq!(
        maps,
        FwdTmaMaps::describe(&problem(128).shape().unwrap(), 128, 128)
    );
    // A fallback row keeps the plain params.
    let plan = hopper(&problem(80)).unwrap();
    assert_eq!(plan.launch().abi, FwdParamsAbi::Fwd);
    assert_eq!(plan.launch().block, [128, 1, 1]);
    // And the Ampere target never picks an sm_90a row.
    let plan = super::plan_in(TABLE, KernelTarget::Ampere, &problem(64)).unwrap();
    assert_eq!(plan.launch().kernel.entry, "flashmha_fwd_f16_d64");
    assert_eq!(plan.launch().abi, FwdParamsAbi::Fwd);
}

#[test]
fn binding_keeps_the_maps_and_fills_the_addresses_they_are_encoded_over() {
    let p = problem(64);
    let plan = hopper(&p).unwrap();
    let dev = crate::common::binding::DevBuf::new;
    let bufs = FwdBufs {
        q: dev(0x10_0000, p.q.len),
        k: dev(0x20_0000, p.k.len),
        v: dev(0x30_0000, p.v.len),
        o: dev(0x40_0000, p.o.len),
        ..FwdBufs::default()
    };
    let l = plan.bind(&bufs).unwrap();
    assert_eq!(l.abi, plan.launch().abi);
    // TMA needs 16-byte aligned global addresses: the per-run base check every kernel has
    // (16-byte copies) rejects anything else before a map is encoded.
    let mut bad = bufs;
    bad.k.addr += 8;
    assert!(
        matches!(
            plan.bind(&bad),
            Err(Error::Misaligned {
                tensor: TensorName::K,
                what: AlignWhat::Base,
                required: 16,
                ..
            })
        ),
        "{:?}",
        plan.bind(&bad)
    );
    assert_eq!(
        (l.params.q as u64, l.params.k as u64, l.params.v as u64),
        (0x10_0000, 0x20_0000, 0x30_0000)
    );
}

#[test]
fn unsupported_head_dims_on_hopper_list_both_tables() {
    let e = hopper(&problem(264)).unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedHeadDim { target: KernelTarget::Hopper, supported, .. }
            if supported == &vec![32, 64, 80, 128, 256]),
        "{e}"
    );
    // bf16 has no row in this table at all.
    let p = FwdProblem {
        dtype: DType::Bf16,
        ..problem(64)
    };
    let e = super::plan_in(TABLE, KernelTarget::Hopper, &p).unwrap_err();
    assert!(matches!(e, Error::UnsupportedHeadDim { .. }), "{e}");
}

#[test]
fn tensor_map_strides_of_2_pow_40_bytes_are_a_typed_error_on_hopper_only() {
    // A batch stride of 2^39 elements (2^40 bytes): every other kernel indexes it in 64 bits,
    // but the TMA encoder takes strides below 2^40.
    let mut p = problem(128);
    p.k.strides.batch = 1 << 39;
    p.v = p.k;
    let e = hopper(&p).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Overflow32 {
                limit: Limit::TmaStride,
                value: 0x100_0000_0000,
                ..
            }
        ),
        "{e}"
    );
    // The Ampere plan of the same shape is fine, and so is a Hopper head dim that runs on an
    // Ampere row (no tensor maps there).
    assert!(super::plan_in(TABLE, KernelTarget::Ampere, &p).is_ok());
    let mut p80 = problem(80);
    p80.k.strides.batch = 1 << 39;
    p80.v = p80.k;
    assert!(hopper(&p80).is_ok());
    // One element less (still a multiple of 16 bytes) is accepted.
    p.k.strides.batch = (1 << 39) - 8;
    p.v = p.k;
    assert!(hopper(&p).is_ok());
}

#[test]
fn misaligned_strides_fail_before_the_tensor_map_checks() {
    // Strides must keep 16-byte chunks aligned for every kernel; the sm_90a plan reports it
    // with the same typed error (the maps' multiple-of-16 rule is the same bound).
    let mut p = problem(64);
    p.q.strides = Strides {
        batch: p.q.strides.batch,
        row: p.q.strides.row + 4,
        head: 64,
    };
    let e = hopper(&p).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Misaligned {
                tensor: TensorName::Q,
                what: AlignWhat::Stride(Dim::Seq),
                ..
            }
        ),
        "{e}"
    );
}
