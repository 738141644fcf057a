//! Unit tests of validation and the launch plan, on a synthetic kernel table so they do not
//! depend on which instantiations this build compiled. Problems are described with the host
//! harness type [`FwdProblem`] (lengths, cu_seqlens) and planned through its shape.

use super::*;
use crate::common::abi;
use crate::common::binding::DevBuf;
use crate::common::dtype::DType;
use crate::common::error::{AlignWhat, CuSeqlensFault, Dim, Error, OptionName, TensorName};
use crate::common::options::{AttnOptions, SlidingWindow};
use crate::host::problem::{FwdProblem, SeqLayout, Strides};
use crate::ops::forward::validate::MAX_ROW_STRIDE as MAX_ROW_STRIDE_FOR_TEST;

const TABLE: &[FwdKernelRow] = &[
    FwdKernelRow {
        target: KernelTarget::Ampere,
        entry: "flashmha_fwd_bf16_d64",
        dtype: DType::Bf16,
        head_dim: 64,
        head_dim_v: 64,
        block_m: 64,
        block_n: 64,
        num_warps: 4,
        smem_bytes: 40960,
    },
    FwdKernelRow {
        target: KernelTarget::Ampere,
        entry: "flashmha_fwd_f16_d128",
        dtype: DType::F16,
        head_dim: 128,
        head_dim_v: 128,
        block_m: 64,
        block_n: 64,
        num_warps: 4,
        smem_bytes: 81920,
    },
    FwdKernelRow {
        target: KernelTarget::Turing,
        entry: "flashmha_fwd_sm75_f16_d64",
        dtype: DType::F16,
        head_dim: 64,
        head_dim_v: 64,
        block_m: 128,
        block_n: 64,
        num_warps: 4,
        smem_bytes: 32768,
    },
    FwdKernelRow {
        target: KernelTarget::Ampere,
        entry: "flashmha_fwd_f16_d192v128",
        dtype: DType::F16,
        head_dim: 192,
        head_dim_v: 128,
        block_m: 128,
        block_n: 32,
        num_warps: 4,
        smem_bytes: 90112,
    },
];

fn padded(batch: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize) -> FwdProblem {
    FwdProblem::contiguous(
        if d == 64 { DType::Bf16 } else { DType::F16 },
        SeqLayout::Padded {
            batch,
            seqlen_q: sq,
            seqlen_k: sk,
        },
        hq,
        hkv,
        d,
        AttnOptions::default(),
    )
}

/// Non-overlapping, 256-byte aligned buffers of exactly the sizes `p` states.
fn buffers(p: &FwdProblem) -> FwdBufs {
    let mut next = 0x1000_0000u64;
    let mut take = |len: usize, elem: usize| {
        let addr = next;
        next += ((len * elem) as u64).div_ceil(256) * 256 + 256;
        DevBuf::new(addr, len)
    };
    let e = p.dtype.size();
    let cu = match &p.layout {
        SeqLayout::Varlen {
            cu_seqlens_q,
            cu_seqlens_k,
        } => (take(cu_seqlens_q.len(), 4), take(cu_seqlens_k.len(), 4)),
        SeqLayout::Padded { .. } => (DevBuf::ABSENT, DevBuf::ABSENT),
    };
    let opt = |n: Option<usize>, take: &mut dyn FnMut(usize, usize) -> DevBuf| {
        n.map_or(DevBuf::ABSENT, |n| take(n, 4))
    };
    FwdBufs {
        q: take(p.q.len, e),
        k: take(p.k.len, e),
        v: take(p.v.len, e),
        o: take(p.o.len, e),
        lse: opt(p.lse_len, &mut take),
        entropy: opt(p.entropy_len, &mut take),
        alibi_slopes: opt(p.alibi_len, &mut take),
        head_gates: opt(p.gates_len, &mut take),
        sinks: opt(p.sinks_len, &mut take),
        cu_seqlens_q: cu.0,
        cu_seqlens_k: cu.1,
    }
}

/// Plans `p` (with the element type its dtype names) and binds `b`.
fn plan_with(p: &FwdProblem, b: &FwdBufs) -> Result<FwdLaunch> {
    super::plan_in(TABLE, KernelTarget::Ampere, p)?.bind(b)
}

fn plan(p: &FwdProblem) -> Result<FwdLaunch> {
    plan_with(p, &buffers(p))
}

#[test]
fn padded_plan_has_one_cta_per_q_tile_head_and_item() {
    let p = padded(3, 130, 77, 8, 2, 64);
    let plan = plan(&p).unwrap();
    assert_eq!(plan.kernel.entry, "flashmha_fwd_bf16_d64");
    assert_eq!(plan.grid, [3, 8, 3]); // ceil(130 / 64) = 3
    assert_eq!(plan.block, [128, 1, 1]);
    assert_eq!(plan.dynamic_smem_bytes, 40960);
    let pr = plan.params;
    assert_eq!(
        (pr.seqlen_q, pr.seqlen_k, pr.num_heads_q, pr.num_heads_kv),
        (130, 77, 8, 2)
    );
    assert_eq!(
        (pr.q_row_stride, pr.q_head_stride, pr.q_batch_stride),
        (8 * 64, 64, 130 * 8 * 64)
    );
    assert_eq!((pr.k_row_stride, pr.k_batch_stride), (2 * 64, 77 * 2 * 64));
    assert_eq!(pr.opt.flags, 0);
    assert!((pr.opt.scale - 0.125).abs() < 1e-7);
    assert!((pr.opt.scale_log2 - 0.125 * std::f32::consts::LOG2_E).abs() < 1e-6);
    assert_eq!((pr.opt.window_left, pr.opt.window_right), (-1, -1));
}

#[test]
fn varlen_plan_sizes_grid_by_longest_item_and_uses_head_major_lse() {
    let mut p = FwdProblem::contiguous(
        DType::F16,
        SeqLayout::Varlen {
            cu_seqlens_q: vec![0, 5, 205, 206],
            cu_seqlens_k: vec![0, 9, 10, 300],
        },
        4,
        4,
        128,
        AttnOptions {
            causal: true,
            window: Some(SlidingWindow {
                left: Some(16),
                right: None,
            }),
            softcap: Some(30.0),
            ..Default::default()
        },
    );
    p.lse_len = Some(p.row_stats_len());
    let plan = plan(&p).unwrap();
    assert_eq!(plan.grid, [4, 4, 3]); // longest q item is 200 rows
    let pr = plan.params;
    assert_eq!(
        pr.opt.flags,
        abi::FLASHMHA_FLAG_CAUSAL | abi::FLASHMHA_FLAG_WINDOW | abi::FLASHMHA_FLAG_VARLEN
    );
    assert_eq!((pr.seqlen_q, pr.seqlen_k), (200, 290));
    assert_eq!((pr.opt.lse_batch_stride, pr.opt.lse_head_stride), (0, 206));
    assert_eq!((pr.opt.window_left, pr.opt.window_right), (16, -1));
    assert_eq!(pr.opt.softcap, 30.0);
    assert_eq!(p.row_stats_len(), 4 * 206);
}

fn assert_err(p: &FwdProblem, matches: impl Fn(&Error) -> bool) {
    match plan(p) {
        Ok(_) => panic!("expected an error for {p:?}"),
        Err(e) => assert!(matches(&e), "unexpected error: {e}"),
    }
}

#[test]
fn unsupported_head_dim_lists_the_compiled_ones() {
    let mut p = padded(1, 8, 8, 2, 2, 64);
    (p.head_dim, p.head_dim_v) = (72, 72);
    assert_err(
        &p,
        |e| matches!(e, Error::UnsupportedHeadDim { head_dim: 72, supported, .. } if supported == &vec![64]),
    );
}

#[test]
fn turing_plans_use_the_turing_rows_and_reject_bf16() {
    let p = |dtype, d| {
        FwdProblem::contiguous(
            dtype,
            SeqLayout::Padded {
                batch: 2,
                seqlen_q: 200,
                seqlen_k: 77,
            },
            4,
            2,
            d,
            AttnOptions::default(),
        )
    };
    // f16 d48 runs on the Turing d64 row (not on the Ampere table), with its own tile.
    let plan = super::plan_in(TABLE, KernelTarget::Turing, &p(DType::F16, 48)).unwrap();
    let l = plan.launch();
    assert_eq!(l.kernel.entry, "flashmha_fwd_sm75_f16_d64");
    assert_eq!(l.grid, [2, 4, 2]); // ceil(200 / 128) Q tiles
    assert_eq!(l.dynamic_smem_bytes, 32768);
    assert_eq!(l.params.head_dim, 48);
    // bf16 on Turing: a typed error before anything else is looked at.
    let e = super::plan_in(TABLE, KernelTarget::Turing, &p(DType::Bf16, 64)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedDType {
                dtype: DType::Bf16,
                target: KernelTarget::Turing
            }
        ),
        "{e}"
    );
    // d128 exists for Ampere f16 only: on Turing the error lists Turing's head dims.
    let e = super::plan_in(TABLE, KernelTarget::Turing, &p(DType::F16, 128)).unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedHeadDim { target: KernelTarget::Turing, supported, .. } if supported == &vec![64]),
        "{e}"
    );
    // And the Ampere plan of the same f16 d48 problem takes the Ampere d128 row.
    let plan = super::plan_in(TABLE, KernelTarget::Ampere, &p(DType::F16, 48)).unwrap();
    assert_eq!(plan.launch().kernel.entry, "flashmha_fwd_f16_d128");
}

#[test]
fn head_dims_that_are_multiples_of_8_run_on_the_next_compiled_kernel() {
    // f16 d72 and d112 run on the f16 d128 kernel with the real head dim in params.
    let f16 = |d| {
        FwdProblem::contiguous(
            DType::F16,
            SeqLayout::Padded {
                batch: 1,
                seqlen_q: 8,
                seqlen_k: 8,
            },
            2,
            2,
            d,
            AttnOptions::default(),
        )
    };
    for d in [72usize, 112, 128] {
        let plan = plan(&f16(d)).unwrap();
        assert_eq!(plan.kernel.head_dim, 128);
        assert_eq!(plan.params.head_dim, d as i32);
        assert_eq!(plan.params.total_q, 8);
        assert_eq!(plan.params.total_k, 8);
    }
    // Not a multiple of 8, or wider than every compiled kernel: typed errors.
    for d in [60usize, 136] {
        assert_err(&f16(d), |e| matches!(e, Error::UnsupportedHeadDim { .. }));
    }
}

#[test]
fn heads_must_divide_and_lengths_must_be_positive() {
    assert_err(&padded(1, 8, 8, 6, 4, 64), |e| {
        matches!(
            e,
            Error::HeadsNotDivisible {
                heads_q: 6,
                heads_kv: 4
            }
        )
    });
    assert_err(&padded(1, 0, 8, 4, 4, 64), |e| {
        matches!(
            e,
            Error::EmptyDim {
                tensor: TensorName::Q,
                dim: Dim::Seq
            }
        )
    });
    assert_err(&padded(0, 8, 8, 4, 4, 64), |e| {
        matches!(
            e,
            Error::EmptyDim {
                dim: Dim::Batch,
                ..
            }
        )
    });
}

#[test]
fn buffers_too_small_are_rejected() {
    let mut p = padded(2, 33, 40, 4, 2, 64);
    p.k.len -= 1;
    assert_err(&p, |e| {
        matches!(
            e,
            Error::BufferTooSmall {
                tensor: TensorName::K,
                ..
            }
        )
    });
    let mut p = padded(2, 33, 40, 4, 2, 64);
    p.lse_len = Some(p.row_stats_len() - 1);
    assert_err(&p, |e| {
        matches!(
            e,
            Error::BufferTooSmall {
                tensor: TensorName::Lse,
                ..
            }
        )
    });
    let mut p = padded(2, 33, 40, 4, 2, 64);
    p.alibi_len = Some(3);
    assert_err(&p, |e| {
        matches!(
            e,
            Error::BufferTooSmall {
                tensor: TensorName::AlibiSlopes,
                ..
            }
        )
    });
}

#[test]
fn misaligned_strides_and_bases_are_rejected() {
    let mut p = padded(1, 8, 8, 2, 2, 64);
    p.q.strides.row += 4; // 8 bytes: not a multiple of the 16-byte copy
    p.q.len += 64;
    assert_err(&p, |e| {
        matches!(
            e,
            Error::Misaligned {
                tensor: TensorName::Q,
                what: AlignWhat::Stride(Dim::Seq),
                ..
            }
        )
    });
    let p = padded(1, 8, 8, 2, 2, 64);
    let mut b = buffers(&p);
    b.v.addr += 8;
    assert!(matches!(
        plan_with(&p, &b),
        Err(Error::Misaligned {
            tensor: TensorName::V,
            what: AlignWhat::Base,
            ..
        })
    ));
}

#[test]
fn overlapping_outputs_are_rejected() {
    let p = padded(1, 8, 8, 2, 2, 64);
    let mut b = buffers(&p);
    b.o.addr = b.q.addr + 32;
    assert!(matches!(
        plan_with(&p, &b),
        Err(Error::Alias {
            a: TensorName::O,
            b: TensorName::Q
        })
    ));
    // An output whose heads overlap each other (head stride smaller than head_dim).
    let mut p = padded(1, 8, 8, 2, 2, 64);
    p.o.strides.head = 32;
    assert_err(&p, |e| {
        matches!(
            e,
            Error::OverlappingOutput {
                tensor: TensorName::O,
                ..
            }
        )
    });
    // Broadcast inputs (stride 0) are fine: k shared by every batch item.
    let mut p = padded(3, 8, 8, 2, 2, 64);
    p.k.strides.batch = 0;
    p.k.len = 8 * 2 * 64;
    assert!(plan(&p).is_ok());
}

#[test]
fn cu_seqlens_must_start_at_zero_be_monotonic_and_match() {
    let varlen = |q: Vec<i32>, k: Vec<i32>| FwdProblem::varlen(DType::Bf16, (q, k), (2, 2), 64);
    let fault = |e: &Error| match e {
        Error::CuSeqlens { fault, .. } => Some(*fault),
        _ => None,
    };
    assert_err(&varlen(vec![0, 5, 3], vec![0, 5, 9]), |e| {
        fault(e) == Some(CuSeqlensFault::Decreasing { index: 1 })
    });
    assert_err(&varlen(vec![1, 5], vec![0, 5]), |e| {
        fault(e) == Some(CuSeqlensFault::FirstNotZero)
    });
    assert_err(&varlen(vec![0, 5, 6], vec![0, 5]), |e| {
        fault(e) == Some(CuSeqlensFault::LengthMismatch)
    });
    assert_err(&varlen(vec![0], vec![0]), |e| {
        fault(e) == Some(CuSeqlensFault::TooShort)
    });
    assert!(plan(&varlen(vec![0, 0, 7], vec![0, 3, 3])).is_ok());
}

#[test]
fn limits_of_the_kernels_32_bit_math_are_enforced() {
    // Input row strides above 2^24 elements: the d80/d96 tile copies use 32-bit byte offsets.
    let mut p = padded(1, 3, 3, 1, 1, 64);
    let stride = MAX_ROW_STRIDE_FOR_TEST + 8;
    p.k.strides = Strides {
        batch: 0,
        row: stride,
        head: 64,
    };
    p.k.len = (2 * stride + 64) as usize;
    p.v = p.k;
    assert_err(&p, |e| matches!(e, Error::Overflow32 { .. }));
    // A large output row stride is fine: output rows are addressed in 64-bit.
    let mut p = padded(1, 3, 3, 1, 1, 64);
    p.o.strides.row = stride;
    p.o.len = (2 * stride + 64) as usize;
    assert!(plan(&p).is_ok());
    // sq + sk beyond the mask arithmetic's range (checked before any buffer bound).
    let huge = (1usize << 30) + 1000;
    assert_err(&padded(1, huge, huge, 1, 1, 64), |e| {
        matches!(e, Error::Overflow32 { .. })
    });
}

#[test]
fn bad_options_are_rejected() {
    let mut p = padded(1, 8, 8, 2, 2, 64);
    p.options.softcap = Some(-1.0);
    assert_err(&p, |e| {
        matches!(
            e,
            Error::InvalidOption {
                option: OptionName::Softcap,
                ..
            }
        )
    });
    p.options.softcap = None;
    p.options.softmax_scale = Some(f32::NAN);
    assert_err(&p, |e| {
        matches!(
            e,
            Error::InvalidOption {
                option: OptionName::SoftmaxScale,
                ..
            }
        )
    });
    p.options.softmax_scale = Some(-0.1);
    assert_err(&p, |e| matches!(e, Error::InvalidOption { .. }));
}

#[test]
fn one_plan_binds_the_buffers_of_every_layer() {
    let p = padded(2, 40, 70, 4, 2, 64);
    let plan = super::plan_in(TABLE, KernelTarget::Ampere, &p).unwrap();
    let first = buffers(&p);
    // Another layer: the same sizes at other addresses, and q/k/v carved from one arena.
    let mut second = first;
    for b in [&mut second.q, &mut second.k, &mut second.v, &mut second.o] {
        b.addr += 0x4000_0000;
    }
    let a = plan.bind(&first).unwrap();
    let b = plan.bind(&second).unwrap();
    assert_eq!(a.params.q as u64, first.q.addr);
    assert_eq!(b.params.q as u64, second.q.addr);
    assert_eq!(b.params.o as u64, second.o.addr);
    // Everything but the addresses is the plan's.
    assert_eq!((a.grid, a.block), (b.grid, b.block));
    assert_eq!(a.params.seqlen_k, b.params.seqlen_k);
    // The plan itself keeps null pointers: it is Send + Sync data.
    assert!(plan.launch().params.q.is_null());
    fn send_sync<X: Send + Sync>(_: &X) {}
    send_sync(&plan);
}

#[test]
fn cu_seqlens_are_required_exactly_for_varlen_plans() {
    let padded_p = padded(1, 8, 8, 2, 2, 64);
    let mut b = buffers(&padded_p);
    let extra = DevBuf {
        addr: 0x7000_0000,
        len: 2,
    };
    (b.cu_seqlens_q, b.cu_seqlens_k) = (extra, extra);
    assert!(matches!(
        plan_with(&padded_p, &b),
        Err(Error::UnexpectedBuffer { .. })
    ));
    let varlen = FwdProblem::varlen(DType::Bf16, (vec![0, 3, 9], vec![0, 4, 4]), (2, 2), 64);
    let mut b = buffers(&varlen);
    (b.cu_seqlens_q, b.cu_seqlens_k) = (DevBuf::ABSENT, DevBuf::ABSENT);
    assert!(matches!(
        plan_with(&varlen, &b),
        Err(Error::MissingBuffer { .. })
    ));
    // cu_seqlens shorter than batch + 1 could be read past their end by the kernel.
    let mut b = buffers(&varlen);
    b.cu_seqlens_q.len = 2;
    assert!(matches!(
        plan_with(&varlen, &b),
        Err(Error::BufferTooSmall {
            tensor: TensorName::CuSeqlensQ,
            needed: 3,
            available: 2
        })
    ));
}

#[test]
fn an_output_with_no_rows_cannot_overlap_itself() {
    // Varlen, head-major, no queries at all: the head stride is total_q * d = 0, which would
    // collide if any row existed; with none, nothing is written and the call is valid.
    let mut p = FwdProblem::varlen(DType::Bf16, (vec![0, 0], vec![0, 1]), (2, 1), 64);
    p.o.strides = Strides {
        batch: 0,
        row: 64,
        head: 0,
    };
    p.q.strides = p.o.strides;
    assert!(plan(&p).is_ok());
    // With one row the same strides overlap and are rejected.
    p.layout = SeqLayout::Varlen {
        cu_seqlens_q: vec![0, 1],
        cu_seqlens_k: vec![0, 1],
    };
    p.q.len = 64;
    p.o.len = 64;
    assert_err(&p, |e| matches!(e, Error::OverlappingOutput { .. }));
}

/// A contiguous f16 problem whose q, k have head dim `d` and v, o `dv`.
fn padded_dv(d: usize, dv: usize, target: KernelTarget) -> FwdProblem {
    let mut p = FwdProblem::contiguous_dv(
        DType::F16,
        SeqLayout::Padded {
            batch: 2,
            seqlen_q: 40,
            seqlen_k: 70,
        },
        (4, 2),
        (d, dv),
        AttnOptions::default(),
    );
    p.target = target;
    p
}

#[test]
fn a_compiled_head_dim_pair_plans_on_its_row_with_each_tensors_own_dim() {
    let p = padded_dv(192, 128, KernelTarget::Ampere);
    let l = plan(&p).unwrap();
    assert_eq!(l.kernel.entry, "flashmha_fwd_f16_d192v128");
    assert_eq!(l.params.head_dim, 192);
    assert_eq!(l.grid, [1, 4, 2]); // ceil(40 / 128) = 1
                                   // q, k rows are 192 wide, v, o rows 128: [b, s, h, d] each with its own d.
    assert_eq!(
        (l.params.q_row_stride, l.params.q_head_stride),
        (4 * 192, 192)
    );
    assert_eq!(
        (l.params.k_row_stride, l.params.k_batch_stride),
        (2 * 192, 70 * 2 * 192)
    );
    assert_eq!(
        (l.params.v_row_stride, l.params.v_batch_stride),
        (2 * 128, 70 * 2 * 128)
    );
    assert_eq!(
        (l.params.o_row_stride, l.params.o_head_stride),
        (4 * 128, 128)
    );
    // Hopper has no wgmma row for the pair: the Ampere one (its fallback) serves it.
    let h = super::plan_in(
        TABLE,
        KernelTarget::Hopper,
        &padded_dv(192, 128, KernelTarget::Hopper),
    );
    assert_eq!(
        h.unwrap().launch().kernel.entry,
        "flashmha_fwd_f16_d192v128"
    );
}

#[test]
fn head_dim_pairs_get_typed_errors_for_each_tensors_own_dim() {
    // Planned for the problem's own target (Ampere, or Turing below).
    let pair_err = |p: &FwdProblem, list: Vec<(u32, u32)>| match super::plan_in(TABLE, p.target, p)
        .and_then(|plan| plan.bind(&buffers(p)))
    {
        Err(Error::UnsupportedHeadDimPair { supported, .. }) => assert_eq!(supported, list),
        other => panic!("{p:?}: {:?}", other.map(|l| l.kernel.entry)),
    };
    // Not compiled (neither an off-table d_v nor a narrower d_qk runs on a pair's row), and a
    // pair on a target with no row for it (Turing; bf16 has none in this table).
    pair_err(&padded_dv(192, 64, KernelTarget::Ampere), vec![(192, 128)]);
    pair_err(&padded_dv(184, 128, KernelTarget::Ampere), vec![(192, 128)]);
    pair_err(&padded_dv(192, 128, KernelTarget::Turing), vec![]);
    let mut bf16 = padded_dv(192, 128, KernelTarget::Ampere);
    bf16.dtype = DType::Bf16;
    pair_err(&bf16, vec![]);
    // A d_v of zero is a pair nobody compiled.
    pair_err(&padded_dv(192, 0, KernelTarget::Ampere), vec![(192, 128)]);
    // v and o are sized and bounds-checked with d_v, q and k with d_qk: one element short of
    // each fails on that tensor, and nothing is launched.
    let p = padded_dv(192, 128, KernelTarget::Ampere);
    for (tensor, shrink) in [
        (TensorName::Q, 0usize),
        (TensorName::K, 1),
        (TensorName::V, 2),
        (TensorName::O, 3),
    ] {
        let mut b = buffers(&p);
        let buf = match shrink {
            0 => &mut b.q,
            1 => &mut b.k,
            2 => &mut b.v,
            _ => &mut b.o,
        };
        buf.len -= 1;
        let e = plan_with(&p, &b).unwrap_err();
        assert!(
            matches!(e, Error::BufferTooSmall { tensor: t, .. } if t == tensor),
            "{tensor:?}: {e}"
        );
    }
    // An o whose head stride is below d_v overlaps itself: a typed error.
    let mut o_narrow = p.clone();
    o_narrow.o.strides.head = 64;
    assert_err(&o_narrow, |e| {
        matches!(
            e,
            Error::OverlappingOutput { .. } | Error::StrideTooSmall { .. }
        )
    });
}
