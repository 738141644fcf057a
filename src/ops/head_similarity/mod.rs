//! Launch plan of the head-similarity kernel (`kernels/sm80/head_similarity.cu`): validates a problem
//! and its buffer addresses, then fills [`HeadSimParams`] with the grid, block and shared memory
//! the kernel expects. Pure: touches no device and no memory; both backends execute this plan.

use crate::common::abi::{self, HeadSimParams};
use crate::common::dtype::DType;
use crate::common::error::{AlignWhat, Dim, Error, Limit, Result, TensorName};
use crate::common::launch::Launch;

/// Entry of the f16 instantiation.
pub const ENTRY_F16: &str = "flashmha_head_similarity_f16";
/// Entry of the bf16 instantiation.
pub const ENTRY_BF16: &str = "flashmha_head_similarity_bf16";
/// Threads per CTA (params.h, `headsim::Shape::kThreads`); the kernel traps on any other size.
pub const THREADS: u32 = abi::FLASHMHA_HEADSIM_THREADS;
/// Largest head count (params.h, `Shape::kMaxHeads`).
pub const MAX_HEADS: usize = abi::FLASHMHA_HEADSIM_MAX_HEADS as usize;
/// Largest head dim (params.h, `Shape::kMaxHeadDim`).
pub const MAX_HEAD_DIM: usize = abi::FLASHMHA_HEADSIM_MAX_HEAD_DIM as usize;
/// The kernel reads 16-byte segments: base address and strides must keep them aligned.
pub const LOAD_ALIGN_BYTES: usize = abi::FLASHMHA_HEADSIM_LOAD_BYTES as usize;
/// Tokens whose norms a CTA holds at once (params.h, `Shape::kTokensPerGroup`); tokens per CTA
/// is a multiple of it so no group is split between CTAs.
pub const TOKENS_PER_GROUP: usize = abi::FLASHMHA_HEADSIM_TOKENS_PER_GROUP as usize;
/// CTAs the plan aims for: two per SM on a 132-SM GPU (the kernel's 128 registers x 256 threads
/// allow two resident CTAs per SM), enough to fill every shipped architecture. More CTAs would
/// only add atomics (each CTA adds `heads²` of them).
pub const TARGET_CTAS: usize = 264;
/// The kernel counts a CTA's tokens in f32 for the diagonal; exact below 2^24.
pub const MAX_TOKENS_PER_CTA: usize = 1 << 24;
/// CUDA's grid.x limit.
pub const MAX_GRID_X: u64 = i32::MAX as u64;

/// One head-similarity call described without a device: `o: [num_tokens, num_heads, head_dim]`
/// through `token_stride` / `head_stride` (elements, head dim contiguous), and the lengths of
/// the buffers in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadSimProblem {
    pub dtype: DType,
    pub num_tokens: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub token_stride: i64,
    pub head_stride: i64,
    /// Elements in o's buffer.
    pub o_len: usize,
    /// f32 elements in gram's buffer (at least `num_heads²`).
    pub gram_len: usize,
}

impl HeadSimProblem {
    /// A contiguous `[tokens, heads, head_dim]` o and an exactly sized gram.
    pub fn contiguous(dtype: DType, num_tokens: usize, num_heads: usize, head_dim: usize) -> Self {
        HeadSimProblem {
            dtype,
            num_tokens,
            num_heads,
            head_dim,
            // Saturating: absurd sizes are refused by the plan, never wrapped here.
            token_stride: crate::common::geometry::stride_of(&[num_heads, head_dim]),
            head_stride: crate::common::geometry::stride_of(&[head_dim]),
            o_len: num_tokens
                .saturating_mul(num_heads)
                .saturating_mul(head_dim),
            gram_len: num_heads.saturating_mul(num_heads),
        }
    }
}

/// Device addresses of the two buffers (plain numbers).
/// Device addresses of the two buffers (plain numbers, as in
/// [`crate::ops::forward::FwdBufs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadSimBuffers {
    pub o: u64,
    pub gram: u64,
}

/// Everything a backend needs to launch the head-similarity kernel once.
#[derive(Debug, Clone, Copy)]
pub struct HeadSimPlan {
    pub entry: &'static str,
    /// (ceil(num_tokens / tokens_per_cta), 1, 1).
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// The kernel's shared memory is static; nothing dynamic.
    pub dynamic_smem_bytes: u32,
    pub params: HeadSimParams,
}

impl HeadSimPlan {
    /// The launch this plan describes (the params carry the buffers it was planned with).
    pub fn launch(&self) -> Launch {
        Launch::geometry(self.entry, self.grid, self.block, self.dynamic_smem_bytes)
            .with_params(&self.params)
    }
}

/// Validates `problem` and `bufs` and plans the launch. `gram` must be zeroed by the caller
/// before the launch (the kernel adds to it).
pub fn plan_head_similarity(
    problem: &HeadSimProblem,
    bufs: &HeadSimBuffers,
) -> Result<HeadSimPlan> {
    validate(problem, bufs)?;
    let p = problem;
    let tokens_per_cta = tokens_per_cta(p.num_tokens);
    let grid_x = p.num_tokens.div_ceil(tokens_per_cta) as u64;
    if grid_x > MAX_GRID_X {
        return Err(Error::Overflow32 {
            limit: Limit::GridX,
            value: grid_x,
            max: MAX_GRID_X,
        });
    }
    let params = HeadSimParams {
        o: bufs.o as *const _,
        gram: bufs.gram as *mut f32,
        token_stride: p.token_stride,
        head_stride: p.head_stride,
        num_tokens: p.num_tokens as i32,
        num_heads: p.num_heads as i32,
        head_dim: p.head_dim as i32,
        tokens_per_cta: tokens_per_cta as i32,
    };
    Ok(HeadSimPlan {
        entry: match p.dtype {
            DType::F16 => ENTRY_F16,
            DType::Bf16 => ENTRY_BF16,
        },
        grid: [grid_x as u32, 1, 1],
        block: [THREADS, 1, 1],
        dynamic_smem_bytes: 0,
        params,
    })
}

/// Tokens per CTA: enough CTAs to fill the GPU ([`TARGET_CTAS`]), whole token groups, and at
/// most [`MAX_TOKENS_PER_CTA`] (validated `num_tokens <= i32::MAX` keeps it far below).
pub fn tokens_per_cta(num_tokens: usize) -> usize {
    num_tokens
        .div_ceil(TARGET_CTAS)
        .next_multiple_of(TOKENS_PER_GROUP)
        .clamp(TOKENS_PER_GROUP, MAX_TOKENS_PER_CTA)
}

fn validate(p: &HeadSimProblem, b: &HeadSimBuffers) -> Result<()> {
    if p.num_tokens == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::HeadSimInput,
            dim: Dim::Seq,
        });
    }
    if p.num_tokens as u64 > i32::MAX as u64 {
        return Err(Error::Overflow32 {
            limit: Limit::Tokens,
            value: p.num_tokens as u64,
            max: i32::MAX as u64,
        });
    }
    for (dim, n, max) in [
        (Dim::Heads, p.num_heads, MAX_HEADS),
        (Dim::HeadDim, p.head_dim, MAX_HEAD_DIM),
    ] {
        let tensor = TensorName::HeadSimInput;
        if n == 0 {
            return Err(Error::EmptyDim { tensor, dim });
        }
        if n > max {
            return Err(Error::DimTooLarge {
                tensor,
                dim,
                max,
                found: n,
            });
        }
    }
    if !(p.head_dim * p.dtype.size()).is_multiple_of(LOAD_ALIGN_BYTES) {
        return Err(Error::Misaligned {
            tensor: TensorName::HeadSimInput,
            what: AlignWhat::HeadDim,
            required: LOAD_ALIGN_BYTES,
            value: (p.head_dim * p.dtype.size()) as u64,
        });
    }
    for (dim, stride) in [(Dim::Seq, p.token_stride), (Dim::Heads, p.head_stride)] {
        if stride < 0 {
            return Err(Error::NegativeStride {
                tensor: TensorName::HeadSimInput,
                dim,
                stride,
            });
        }
        let bytes = stride as u64 * p.dtype.size() as u64;
        if !bytes.is_multiple_of(LOAD_ALIGN_BYTES as u64) {
            return Err(Error::Misaligned {
                tensor: TensorName::HeadSimInput,
                what: AlignWhat::Stride(dim),
                required: LOAD_ALIGN_BYTES,
                value: bytes,
            });
        }
    }
    for (tensor, addr, align) in [
        (TensorName::HeadSimInput, b.o, LOAD_ALIGN_BYTES),
        (TensorName::Gram, b.gram, 4),
    ] {
        if addr == 0 {
            return Err(Error::MissingBuffer { tensor });
        }
        if !addr.is_multiple_of(align as u64) {
            return Err(Error::Misaligned {
                tensor,
                what: AlignWhat::Base,
                required: align,
                value: addr,
            });
        }
    }
    // Last element read, in 128-bit so the check cannot wrap.
    let last = (p.num_tokens as u128 - 1) * p.token_stride as u128
        + (p.num_heads as u128 - 1) * p.head_stride as u128
        + p.head_dim as u128
        - 1;
    if last >= p.o_len as u128 {
        return Err(Error::BufferTooSmall {
            tensor: TensorName::HeadSimInput,
            needed: (last + 1).min(u64::MAX as u128) as u64,
            available: p.o_len as u64,
        });
    }
    let gram_needed = (p.num_heads * p.num_heads) as u64;
    if (p.gram_len as u64) < gram_needed {
        return Err(Error::BufferTooSmall {
            tensor: TensorName::Gram,
            needed: gram_needed,
            available: p.gram_len as u64,
        });
    }
    let o_end = b.o as u128 + p.o_len as u128 * p.dtype.size() as u128;
    let gram_end = b.gram as u128 + p.gram_len as u128 * 4;
    if (b.o as u128) < gram_end && (b.gram as u128) < o_end {
        return Err(Error::Alias {
            a: TensorName::Gram,
            b: TensorName::HeadSimInput,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::abi::ParamsBytes;
    use proptest::prelude::*;

    // Far apart: the largest o in the property test spans ~16 GB.
    const O: u64 = 0x1_0000_0000;
    const GRAM: u64 = 0x100_0000_0000;
    const BUFS: HeadSimBuffers = HeadSimBuffers { o: O, gram: GRAM };

    #[test]
    fn params_layout_matches_the_bytes_we_write() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<HeadSimParams>(), 48);
        assert_eq!(offset_of!(HeadSimParams, o), 0);
        assert_eq!(offset_of!(HeadSimParams, gram), 8);
        assert_eq!(offset_of!(HeadSimParams, token_stride), 16);
        assert_eq!(offset_of!(HeadSimParams, head_stride), 24);
        assert_eq!(offset_of!(HeadSimParams, num_tokens), 32);
        assert_eq!(offset_of!(HeadSimParams, num_heads), 36);
        assert_eq!(offset_of!(HeadSimParams, head_dim), 40);
        assert_eq!(offset_of!(HeadSimParams, tokens_per_cta), 44);
        let plan = plan_head_similarity(&HeadSimProblem::contiguous(DType::F16, 37, 5, 24), &BUFS)
            .unwrap();
        let bytes = plan.params.as_bytes();
        assert_eq!(bytes.len(), 48);
        let at = |o: usize, n: usize| &bytes[o..o + n];
        assert_eq!(at(0, 8), O.to_le_bytes());
        assert_eq!(at(8, 8), GRAM.to_le_bytes());
        assert_eq!(at(16, 8), (5i64 * 24).to_le_bytes());
        assert_eq!(at(24, 8), 24i64.to_le_bytes());
        assert_eq!(at(32, 4), 37i32.to_le_bytes());
        assert_eq!(at(36, 4), 5i32.to_le_bytes());
        assert_eq!(at(40, 4), 24i32.to_le_bytes());
        assert_eq!(at(44, 4), plan.params.tokens_per_cta.to_le_bytes());
    }

    #[test]
    fn entry_follows_dtype_and_entries_are_compiled() {
        for (dtype, entry) in [(DType::F16, ENTRY_F16), (DType::Bf16, ENTRY_BF16)] {
            let plan =
                plan_head_similarity(&HeadSimProblem::contiguous(dtype, 9, 3, 8), &BUFS).unwrap();
            assert_eq!(plan.entry, entry);
            assert!(
                crate::common::build_info::module_of(entry).is_some(),
                "{entry} not embedded"
            );
        }
    }

    fn err(p: HeadSimProblem, b: HeadSimBuffers) -> Error {
        plan_head_similarity(&p, &b).unwrap_err()
    }

    #[test]
    fn shape_errors() {
        let ok = HeadSimProblem::contiguous(DType::Bf16, 10, 4, 64);
        for bad in [
            HeadSimProblem {
                num_tokens: 0,
                ..ok
            },
            HeadSimProblem::contiguous(DType::Bf16, 10, 0, 64),
            HeadSimProblem::contiguous(DType::Bf16, 10, MAX_HEADS + 1, 64),
            HeadSimProblem::contiguous(DType::Bf16, 10, 4, MAX_HEAD_DIM + 8),
        ] {
            assert!(
                matches!(
                    err(bad, BUFS),
                    Error::EmptyDim { .. } | Error::DimTooLarge { .. }
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            err(ok, HeadSimBuffers { o: 0, gram: GRAM }),
            Error::MissingBuffer {
                tensor: TensorName::HeadSimInput
            }
        ));
        assert!(matches!(
            err(ok, HeadSimBuffers { o: O, gram: 0 }),
            Error::MissingBuffer {
                tensor: TensorName::Gram
            }
        ));
        let huge = HeadSimProblem {
            num_tokens: i32::MAX as usize + 1,
            ..ok
        };
        assert!(matches!(err(huge, BUFS), Error::Overflow32 { .. }));
    }

    #[test]
    fn alignment_and_stride_errors() {
        let ok = HeadSimProblem::contiguous(DType::F16, 10, 4, 64);
        let cases = [
            (HeadSimProblem::contiguous(DType::F16, 10, 4, 12), BUFS),
            (
                HeadSimProblem {
                    head_stride: 68,
                    ..ok
                },
                BUFS,
            ),
            (
                HeadSimProblem {
                    token_stride: 260,
                    ..ok
                },
                BUFS,
            ),
            (
                ok,
                HeadSimBuffers {
                    o: O + 8,
                    gram: GRAM,
                },
            ),
            (
                ok,
                HeadSimBuffers {
                    o: O,
                    gram: GRAM + 2,
                },
            ),
        ];
        for (p, b) in cases {
            assert!(matches!(err(p, b), Error::Misaligned { .. }), "{p:?} {b:?}");
        }
        assert!(matches!(
            err(
                HeadSimProblem {
                    head_stride: -64,
                    ..ok
                },
                BUFS
            ),
            Error::NegativeStride { .. }
        ));
    }

    #[test]
    fn buffer_and_alias_errors() {
        let ok = HeadSimProblem::contiguous(DType::F16, 10, 4, 64);
        let short_o = HeadSimProblem {
            o_len: ok.o_len - 1,
            ..ok
        };
        assert!(matches!(
            err(short_o, BUFS),
            Error::BufferTooSmall { tensor: TensorName::HeadSimInput, needed, .. }
                if needed == ok.o_len as u64
        ));
        let short_gram = HeadSimProblem { gram_len: 15, ..ok };
        assert!(matches!(
            err(short_gram, BUFS),
            Error::BufferTooSmall {
                tensor: TensorName::Gram,
                needed: 16,
                available: 15
            }
        ));
        // gram placed inside o's bytes.
        let inside = HeadSimBuffers { o: O, gram: O + 64 };
        assert!(matches!(err(ok, inside), Error::Alias { .. }));
        // Directly after o's last byte is fine.
        let after = HeadSimBuffers {
            o: O,
            gram: O + ok.o_len as u64 * 2,
        };
        assert!(plan_head_similarity(&ok, &after).is_ok());
    }

    #[test]
    fn strided_views_are_accepted_when_they_fit() {
        // o is the [t, h, d] slice of a wider [t, 2h, d] tensor.
        let p = HeadSimProblem {
            token_stride: 2 * 4 * 64,
            o_len: 10 * 2 * 4 * 64,
            ..HeadSimProblem::contiguous(DType::F16, 10, 4, 64)
        };
        let plan = plan_head_similarity(&p, &BUFS).unwrap();
        assert_eq!(plan.params.token_stride, 512);
        assert_eq!(plan.params.head_stride, 64);
    }

    proptest! {
        #[test]
        fn grid_covers_every_token_once(tokens in 1usize..2_000_000, heads in 1usize..=MAX_HEADS,
                                        d8 in 1usize..=MAX_HEAD_DIM / 8) {
            let p = HeadSimProblem::contiguous(DType::Bf16, tokens, heads, d8 * 8);
            let plan = plan_head_similarity(&p, &BUFS).unwrap();
            let tpc = plan.params.tokens_per_cta as usize;
            prop_assert_eq!(tpc % TOKENS_PER_GROUP, 0);
            let grid = plan.grid[0] as usize;
            // Every token in exactly one CTA, and no CTA empty.
            prop_assert!(grid * tpc >= tokens);
            prop_assert!((grid - 1) * tpc < tokens);
            prop_assert!(grid <= TARGET_CTAS || tpc == TOKENS_PER_GROUP);
            prop_assert_eq!(plan.block, [THREADS, 1, 1]);
            prop_assert_eq!(&plan.grid[1..], &[1, 1]);
            prop_assert_eq!(plan.params.num_heads as usize, heads);
        }
    }
}
