//! The head-similarity op (`kernels/sm80/head_similarity.cu`): its problem, validation and plan.
//! [`HeadSimPlan::new_for`] validates the shape and sizes the grid; [`HeadSimPlan::bind`] checks
//! the two buffers with the one binding checker and fills [`HeadSimParams`]. Pure: touches no
//! device and no memory; both backends run what it binds.

use crate::common::abi::{self, HeadSimParams};
use crate::common::binding::{self, BufSpec, DevBuf, Use};
use crate::common::dtype::DType;
use crate::common::error::{AlignWhat, Dim, Error, Limit, Result, TensorName};
use crate::common::launch::Launch;
use crate::common::target::KernelTarget;
use TensorName as T;

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
/// through `token_stride` / `head_stride` (elements, head dim contiguous) into
/// `gram: [num_heads, num_heads]` f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadSimProblem {
    pub dtype: DType,
    pub num_tokens: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub token_stride: i64,
    pub head_stride: i64,
}

impl HeadSimProblem {
    /// A contiguous `[tokens, heads, head_dim]` o.
    pub fn contiguous(dtype: DType, num_tokens: usize, num_heads: usize, head_dim: usize) -> Self {
        HeadSimProblem {
            dtype,
            num_tokens,
            num_heads,
            head_dim,
            // Saturating: absurd sizes are refused by the plan, never wrapped here.
            token_stride: crate::common::geometry::stride_of(&[num_heads, head_dim]),
            head_stride: crate::common::geometry::stride_of(&[head_dim]),
        }
    }
}

/// The two buffers of a run (lengths in elements of their types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadSimBuffers {
    /// `o` (elements of the problem's dtype).
    pub o: DevBuf,
    /// `gram` (f32).
    pub gram: DevBuf,
}

/// The validated launch of one problem, before buffers (the same contract as every op:
/// [`HeadSimPlan::new_for`], then [`HeadSimPlan::bind`]).
#[derive(Debug, Clone, Copy)]
pub struct HeadSimPlan {
    pub problem: HeadSimProblem,
    /// Entry, (ceil(num_tokens / tokens_per_cta), 1, 1), the block, no dynamic shared memory.
    geometry: Launch,
    /// The params without buffer addresses (filled by `bind`).
    params: HeadSimParams,
    /// Elements of o the kernel may read (the extent of the strided view).
    o_extent: u64,
}

/// What [`HeadSimPlan::bind`] gives a backend: zero gram's `heads²` f32 (the kernel adds to
/// them), then launch.
#[derive(Debug, Clone, Copy)]
pub struct HeadSimLaunch {
    pub zero: DevBuf,
    pub zero_bytes: u64,
    pub launch: Launch,
}

impl HeadSimPlan {
    /// [`HeadSimPlan::new_for`] the Ampere-and-newer kernels.
    pub fn new(problem: &HeadSimProblem) -> Result<HeadSimPlan> {
        Self::new_for(KernelTarget::Ampere, problem)
    }

    /// Validates `problem` for `target` (no Turing kernel: [`Error::UnsupportedOnTarget`]) and
    /// plans the grid.
    pub fn new_for(target: KernelTarget, problem: &HeadSimProblem) -> Result<HeadSimPlan> {
        target.require_ampere_kernels("head similarity")?;
        let o_extent = validate(problem)?;
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
            o: std::ptr::null(),
            gram: std::ptr::null_mut(),
            token_stride: p.token_stride,
            head_stride: p.head_stride,
            num_tokens: p.num_tokens as i32,
            num_heads: p.num_heads as i32,
            head_dim: p.head_dim as i32,
            tokens_per_cta: tokens_per_cta as i32,
        };
        let entry = match p.dtype {
            DType::F16 => ENTRY_F16,
            DType::Bf16 => ENTRY_BF16,
        };
        Ok(HeadSimPlan {
            problem: *p,
            geometry: Launch::geometry(entry, [grid_x as u32, 1, 1], [THREADS, 1, 1], 0),
            params,
            o_extent,
        })
    }

    /// The kernel entry this plan launches.
    pub fn entry(&self) -> &'static str {
        self.geometry.entry
    }

    pub fn grid(&self) -> [u32; 3] {
        self.geometry.grid
    }

    /// Tokens each CTA sums.
    pub fn tokens_per_cta(&self) -> usize {
        self.params.tokens_per_cta as usize
    }

    /// f32 elements gram must hold (`heads²`).
    pub fn gram_elems(&self) -> u64 {
        (self.problem.num_heads * self.problem.num_heads) as u64
    }

    /// The binding table (one checker for every op, [`binding::check`]).
    pub fn specs(&self, b: &HeadSimBuffers) -> [BufSpec; 2] {
        let e = self.problem.dtype.size() as u64;
        let align = LOAD_ALIGN_BYTES as u64;
        [
            BufSpec::input(T::HeadSimInput, b.o, Use::Required, self.o_extent, e, align),
            BufSpec::input(T::Gram, b.gram, Use::Required, self.gram_elems(), 4, 4).written(),
        ]
    }

    /// Checks `bufs` against the plan (presence, extent, alignment, no overlap) and fills the
    /// addresses. O(1), no allocation.
    pub fn bind(&self, bufs: &HeadSimBuffers) -> Result<HeadSimLaunch> {
        binding::check(&self.specs(bufs))?;
        let params = HeadSimParams {
            o: bufs.o.addr as *const _,
            gram: bufs.gram.addr as *mut f32,
            ..self.params
        };
        Ok(HeadSimLaunch {
            zero: bufs.gram,
            zero_bytes: self.gram_elems() * 4,
            launch: self.geometry.with_params(&params),
        })
    }
}

/// Tokens per CTA: enough CTAs to fill the GPU ([`TARGET_CTAS`]), whole token groups, and at
/// most [`MAX_TOKENS_PER_CTA`] (validated `num_tokens <= i32::MAX` keeps it far below).
pub fn tokens_per_cta(num_tokens: usize) -> usize {
    num_tokens
        .div_ceil(TARGET_CTAS)
        .next_multiple_of(TOKENS_PER_GROUP)
        .clamp(TOKENS_PER_GROUP, MAX_TOKENS_PER_CTA)
}

/// Validates the shape; returns the elements of o the kernel may read.
fn validate(p: &HeadSimProblem) -> Result<u64> {
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
    // Last element read, in 128-bit so the sum cannot wrap (tokens < 2^31, strides < 2^63).
    let last = (p.num_tokens as u128 - 1) * p.token_stride as u128
        + (p.num_heads as u128 - 1) * p.head_stride as u128
        + p.head_dim as u128;
    u64::try_from(last).map_err(|_| Error::SizeOverflow {
        what: "head-similarity input extent",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::abi::ParamsBytes;
    use proptest::prelude::*;

    // Far apart: the largest o in the property test spans ~16 GB.
    const O: u64 = 0x1_0000_0000;
    const GRAM: u64 = 0x100_0000_0000;

    /// Buffers exactly as large as `p` needs.
    fn bufs(p: &HeadSimProblem) -> HeadSimBuffers {
        let plan = HeadSimPlan::new(p).unwrap();
        HeadSimBuffers {
            o: DevBuf {
                addr: O,
                len: plan.o_extent,
            },
            gram: DevBuf {
                addr: GRAM,
                len: plan.gram_elems(),
            },
        }
    }

    fn err(p: HeadSimProblem, b: HeadSimBuffers) -> Error {
        match HeadSimPlan::new(&p) {
            Err(e) => e,
            Ok(plan) => plan.bind(&b).unwrap_err(),
        }
    }

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
        let p = HeadSimProblem::contiguous(DType::F16, 37, 5, 24);
        let plan = HeadSimPlan::new(&p).unwrap();
        let bound = plan.bind(&bufs(&p)).unwrap();
        let bytes = bound.launch.params();
        assert_eq!(bytes.len(), 48);
        let at = |o: usize, n: usize| &bytes[o..o + n];
        assert_eq!(at(0, 8), O.to_le_bytes());
        assert_eq!(at(8, 8), GRAM.to_le_bytes());
        assert_eq!(at(16, 8), (5i64 * 24).to_le_bytes());
        assert_eq!(at(24, 8), 24i64.to_le_bytes());
        assert_eq!(at(32, 4), 37i32.to_le_bytes());
        assert_eq!(at(36, 4), 5i32.to_le_bytes());
        assert_eq!(at(40, 4), 24i32.to_le_bytes());
        assert_eq!(at(44, 4), (plan.tokens_per_cta() as i32).to_le_bytes());
        assert_eq!(plan.params.as_bytes().len(), 48);
        // gram's heads² f32 are zeroed before the launch.
        assert_eq!((bound.zero.addr, bound.zero_bytes), (GRAM, 25 * 4));
    }

    #[test]
    fn entry_follows_dtype_and_entries_are_compiled() {
        for (dtype, entry) in [(DType::F16, ENTRY_F16), (DType::Bf16, ENTRY_BF16)] {
            let plan = HeadSimPlan::new(&HeadSimProblem::contiguous(dtype, 9, 3, 8)).unwrap();
            assert_eq!(plan.entry(), entry);
            assert!(
                crate::common::build_info::module_of(entry).is_some(),
                "{entry} not embedded"
            );
        }
    }

    #[test]
    fn turing_has_no_head_similarity_kernel() {
        let p = HeadSimProblem::contiguous(DType::F16, 9, 3, 8);
        assert!(matches!(
            HeadSimPlan::new_for(KernelTarget::Turing, &p),
            Err(Error::UnsupportedOnTarget { .. })
        ));
        assert!(HeadSimPlan::new_for(KernelTarget::Hopper, &p).is_ok());
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
                    HeadSimPlan::new(&bad).unwrap_err(),
                    Error::EmptyDim { .. } | Error::DimTooLarge { .. }
                ),
                "{bad:?}"
            );
        }
        let b = bufs(&ok);
        for (missing, tensor) in [
            (
                HeadSimBuffers {
                    o: DevBuf::ABSENT,
                    ..b
                },
                TensorName::HeadSimInput,
            ),
            (
                HeadSimBuffers {
                    gram: DevBuf::ABSENT,
                    ..b
                },
                TensorName::Gram,
            ),
        ] {
            assert!(
                matches!(err(ok, missing), Error::MissingBuffer { tensor: t } if t == tensor),
                "{tensor:?}"
            );
        }
        let huge = HeadSimProblem {
            num_tokens: i32::MAX as usize + 1,
            ..ok
        };
        assert!(matches!(
            HeadSimPlan::new(&huge).unwrap_err(),
            Error::Overflow32 { .. }
        ));
        // Absurd strides are a typed error, never a wrapped extent or a panic.
        let absurd = HeadSimProblem {
            token_stride: i64::MAX - 7,
            ..ok
        };
        assert!(HeadSimPlan::new(&absurd).is_err());
    }

    #[test]
    fn alignment_and_stride_errors() {
        let ok = HeadSimProblem::contiguous(DType::F16, 10, 4, 64);
        let b = bufs(&ok);
        for p in [
            HeadSimProblem::contiguous(DType::F16, 10, 4, 12),
            HeadSimProblem {
                head_stride: 68,
                ..ok
            },
            HeadSimProblem {
                token_stride: 260,
                ..ok
            },
        ] {
            assert!(
                matches!(HeadSimPlan::new(&p).unwrap_err(), Error::Misaligned { .. }),
                "{p:?}"
            );
        }
        let shifted_o = HeadSimBuffers {
            o: DevBuf { addr: O + 8, ..b.o },
            ..b
        };
        let shifted_gram = HeadSimBuffers {
            gram: DevBuf {
                addr: GRAM + 2,
                ..b.gram
            },
            ..b
        };
        for bad in [shifted_o, shifted_gram] {
            assert!(matches!(err(ok, bad), Error::Misaligned { .. }), "{bad:?}");
        }
        assert!(matches!(
            HeadSimPlan::new(&HeadSimProblem {
                head_stride: -64,
                ..ok
            })
            .unwrap_err(),
            Error::NegativeStride { .. }
        ));
    }

    #[test]
    fn buffer_and_alias_errors() {
        let ok = HeadSimProblem::contiguous(DType::F16, 10, 4, 64);
        let b = bufs(&ok);
        let short_o = HeadSimBuffers {
            o: DevBuf {
                len: b.o.len - 1,
                ..b.o
            },
            ..b
        };
        assert!(matches!(
            err(ok, short_o),
            Error::BufferTooSmall { tensor: TensorName::HeadSimInput, needed, .. }
                if needed == 10 * 4 * 64
        ));
        let short_gram = HeadSimBuffers {
            gram: DevBuf { len: 15, ..b.gram },
            ..b
        };
        assert!(matches!(
            err(ok, short_gram),
            Error::BufferTooSmall {
                tensor: TensorName::Gram,
                needed: 16,
                available: 15
            }
        ));
        // gram placed inside o's bytes.
        let inside = HeadSimBuffers {
            gram: DevBuf {
                addr: O + 64,
                ..b.gram
            },
            ..b
        };
        assert!(matches!(err(ok, inside), Error::Alias { .. }));
        // Directly after o's last byte is fine.
        let after = HeadSimBuffers {
            gram: DevBuf {
                addr: O + b.o.len * 2,
                ..b.gram
            },
            ..b
        };
        assert!(HeadSimPlan::new(&ok).unwrap().bind(&after).is_ok());
    }

    #[test]
    fn strided_views_are_accepted_when_they_fit() {
        // o is the [t, h, d] slice of a wider [t, 2h, d] tensor: its extent is less than the
        // wider tensor's length, which is what the buffer holds.
        let p = HeadSimProblem {
            token_stride: 2 * 4 * 64,
            ..HeadSimProblem::contiguous(DType::F16, 10, 4, 64)
        };
        let plan = HeadSimPlan::new(&p).unwrap();
        assert_eq!(plan.o_extent, 9 * 512 + 3 * 64 + 64);
        let wide = HeadSimBuffers {
            o: DevBuf {
                addr: O,
                len: 10 * 2 * 4 * 64,
            },
            gram: DevBuf {
                addr: GRAM,
                len: 16,
            },
        };
        let l = plan.bind(&wide).unwrap().launch;
        assert_eq!(&l.params()[16..24], 512i64.to_le_bytes());
        assert_eq!(&l.params()[24..32], 64i64.to_le_bytes());
    }

    proptest! {
        #[test]
        fn grid_covers_every_token_once(tokens in 1usize..2_000_000, heads in 1usize..=MAX_HEADS,
                                        d8 in 1usize..=MAX_HEAD_DIM / 8) {
            let p = HeadSimProblem::contiguous(DType::Bf16, tokens, heads, d8 * 8);
            let plan = HeadSimPlan::new(&p).unwrap();
            let l = plan.bind(&bufs(&p)).unwrap().launch;
            let tpc = plan.tokens_per_cta();
            prop_assert_eq!(tpc % TOKENS_PER_GROUP, 0);
            let grid = l.grid[0] as usize;
            // Every token in exactly one CTA, and no CTA empty.
            prop_assert!(grid * tpc >= tokens);
            prop_assert!((grid - 1) * tpc < tokens);
            prop_assert!(grid <= TARGET_CTAS || tpc == TOKENS_PER_GROUP);
            prop_assert_eq!(l.block, [THREADS, 1, 1]);
            prop_assert_eq!(&l.grid[1..], &[1, 1]);
            prop_assert_eq!(plan.params.num_heads as usize, heads);
        }
    }
}
