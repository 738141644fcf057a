//! A concrete forward problem on host data, for checks, benchmarks and the CLI: the sequence
//! lengths themselves (varlen `cu_seqlens` as host vectors), strides, buffer sizes, options and
//! which optional outputs to produce. The reference and the random-case checker read it; the
//! device path derives its [`FwdShape`] from it ([`FwdProblem::shape`]). Plain data.

use crate::common::dtype::DType;
use crate::common::error::{CuSeqlensFault, Error, Result, TensorName};
use crate::common::options::AttnOptions;
use crate::common::target::KernelTarget;
use crate::ops::forward::problem::{FwdShape, Heads, QkvoStrides, SeqShape};
use crate::ops::forward::tile::TileChoice;

pub use crate::common::geometry::{SeqLayout, Strides};

/// One q/k/v/o operand: its strides and how many elements its buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operand {
    pub strides: Strides,
    /// Elements available from the operand's base pointer.
    pub len: usize,
}

/// A whole forward call.
#[derive(Debug, Clone, PartialEq)]
pub struct FwdProblem {
    pub dtype: DType,
    pub layout: SeqLayout,
    pub num_heads_q: usize,
    pub num_heads_kv: usize,
    /// d_qk: the head dim of q and k.
    pub head_dim: usize,
    /// d_v: the head dim of v and o (`head_dim` unless a compiled d_qk != d_v pair serves it).
    pub head_dim_v: usize,
    pub q: Operand,
    pub k: Operand,
    pub v: Operand,
    pub o: Operand,
    /// Elements of the f32 LSE buffer, when LSE is requested (`[b, hq, sq]` / `[hq, total_q]`).
    pub lse_len: Option<usize>,
    /// Elements of the f32 entropy buffer, when entropy is requested (same layout as LSE).
    pub entropy_len: Option<usize>,
    /// Elements of the f32 ALiBi slope buffer (`[hq]`), when ALiBi is on.
    pub alibi_len: Option<usize>,
    /// Elements of the f32 head-gate buffer (`[hq]`), when gates are on.
    pub gates_len: Option<usize>,
    /// Attention-sink logits `[hq]` (f32), when given.
    pub sinks_len: Option<usize>,
    pub options: AttnOptions,
    /// Which compiled kernels run it (Ampere unless set).
    pub target: KernelTarget,
    /// Which of the head dim's compiled tiles runs it (the primary row unless set).
    pub tile: TileChoice,
}

impl FwdProblem {
    /// A contiguous problem (all tensors densely packed), the common case and the tests' shape.
    pub fn contiguous(
        dtype: DType,
        layout: SeqLayout,
        num_heads_q: usize,
        num_heads_kv: usize,
        head_dim: usize,
        options: AttnOptions,
    ) -> FwdProblem {
        Self::contiguous_dv(
            dtype,
            layout,
            (num_heads_q, num_heads_kv),
            (head_dim, head_dim),
            options,
        )
    }

    /// A contiguous problem whose q, k have head dim d_qk and v, o d_v (`head_dims` =
    /// (d_qk, d_v)).
    pub fn contiguous_dv(
        dtype: DType,
        layout: SeqLayout,
        (num_heads_q, num_heads_kv): (usize, usize),
        (head_dim, head_dim_v): (usize, usize),
        options: AttnOptions,
    ) -> FwdProblem {
        let (tq, tk) = layout.total_rows();
        let (sq, sk) = match &layout {
            SeqLayout::Padded {
                seqlen_q, seqlen_k, ..
            } => (*seqlen_q, *seqlen_k),
            // Varlen ignores batch strides; rows are global.
            SeqLayout::Varlen { .. } => (0, 0),
        };
        // [rows, heads, d] densely packed (padded: per item of `seqlen` rows).
        let operand = |seqlen: usize, rows: usize, heads: usize, d: usize| Operand {
            strides: Strides::contiguous(seqlen, heads, d),
            len: rows.saturating_mul(heads).saturating_mul(d),
        };
        FwdProblem {
            dtype,
            layout,
            num_heads_q,
            num_heads_kv,
            head_dim,
            head_dim_v,
            q: operand(sq, tq, num_heads_q, head_dim),
            k: operand(sk, tk, num_heads_kv, head_dim),
            v: operand(sk, tk, num_heads_kv, head_dim_v),
            o: operand(sq, tq, num_heads_q, head_dim_v),
            lse_len: None,
            entropy_len: None,
            alibi_len: None,
            gates_len: None,
            sinks_len: None,
            options,
            target: KernelTarget::Ampere,
            tile: TileChoice::Primary,
        }
    }

    /// A contiguous padded problem: `batch` items of `seqlen_q` queries over `seqlen_k` keys,
    /// `heads_q` query heads over `heads_kv` KV heads.
    pub fn padded(
        dtype: DType,
        batch: usize,
        (seqlen_q, seqlen_k): (usize, usize),
        (heads_q, heads_kv): (usize, usize),
        head_dim: usize,
        options: AttnOptions,
    ) -> FwdProblem {
        let layout = SeqLayout::Padded {
            batch,
            seqlen_q,
            seqlen_k,
        };
        Self::contiguous(dtype, layout, heads_q, heads_kv, head_dim, options)
    }

    /// Contiguous packed `[total, h, d]` tensors of the variable-length batch `cu_seqlens`
    /// (q's and k's, `[batch + 1]` each) describe; default options (set `options` after).
    pub fn varlen(
        dtype: DType,
        (q, k): (Vec<i32>, Vec<i32>),
        (heads_q, heads_kv): (usize, usize),
        head_dim: usize,
    ) -> FwdProblem {
        let layout = SeqLayout::Varlen {
            cu_seqlens_q: q,
            cu_seqlens_k: k,
        };
        Self::contiguous(
            dtype,
            layout,
            heads_q,
            heads_kv,
            head_dim,
            Default::default(),
        )
    }

    /// The device-side description: host `cu_seqlens` are checked here (typed errors) and
    /// summarised into the bounds the plan and the kernel use.
    pub fn shape(&self) -> Result<FwdShape> {
        let seq = match &self.layout {
            SeqLayout::Padded {
                batch,
                seqlen_q,
                seqlen_k,
            } => SeqShape::Padded {
                batch: *batch,
                seqlen_q: *seqlen_q,
                seqlen_k: *seqlen_k,
            },
            SeqLayout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            } => {
                check_cu_seqlens(TensorName::CuSeqlensQ, cu_seqlens_q)?;
                check_cu_seqlens(TensorName::CuSeqlensK, cu_seqlens_k)?;
                if cu_seqlens_q.len() != cu_seqlens_k.len() {
                    return Err(Error::CuSeqlens {
                        which: TensorName::CuSeqlensK,
                        fault: CuSeqlensFault::LengthMismatch,
                    });
                }
                let (max_seqlen_q, max_seqlen_k) = self.layout.max_seqlens();
                let (total_q, total_k) = self.layout.total_rows();
                SeqShape::Varlen {
                    batch: self.layout.batch(),
                    max_seqlen_q,
                    max_seqlen_k,
                    total_q,
                    total_k,
                }
            }
        };
        Ok(FwdShape {
            seq,
            heads: Heads {
                q: self.num_heads_q,
                kv: self.num_heads_kv,
            },
            head_dim: self.head_dim,
            head_dim_v: self.head_dim_v,
            strides: QkvoStrides {
                q: self.q.strides,
                k: self.k.strides,
                v: self.v.strides,
                o: self.o.strides,
            },
            options: self.options,
        })
    }

    /// Elements an LSE (or entropy) buffer must hold (`[b, hq, sq]` or `[hq, total_q]`;
    /// saturating).
    pub fn row_stats_len(&self) -> usize {
        let (tq, _) = self.layout.total_rows();
        self.num_heads_q.saturating_mul(tq)
    }

    /// Compulsory FLOPs of the two matmuls (README.md, "Performance evidence"), counting only
    /// unmasked (query, key) pairs: 2 d_qk for Q K^T and 2 d_v for P V per pair.
    pub fn flops(&self) -> f64 {
        let pairs: u64 = (0..self.layout.batch())
            .map(|i| {
                let (sq, sk) = self.layout.seqlens_of(i);
                crate::common::options::unmasked_pairs(&self.options, sq, sk)
            })
            .sum();
        2.0 * pairs as f64 * self.num_heads_q as f64 * (self.head_dim + self.head_dim_v) as f64
    }

    /// Compulsory DRAM bytes: read q, k, v once, write o once (README.md, "Performance
    /// evidence"); q and k rows are d_qk wide, v and o rows d_v.
    pub fn compulsory_bytes(&self) -> f64 {
        let (tq, tk) = self.layout.total_rows();
        let e = self.dtype.size() as f64;
        let d = (self.head_dim + self.head_dim_v) as f64;
        e * d * ((tq * self.num_heads_q) as f64 + (tk * self.num_heads_kv) as f64)
    }
}

fn check_cu_seqlens(which: TensorName, cu: &[i32]) -> Result<()> {
    let fault = if cu.len() < 2 {
        Some(CuSeqlensFault::TooShort)
    } else if cu[0] != 0 {
        Some(CuSeqlensFault::FirstNotZero)
    } else {
        cu.windows(2)
            .position(|w| w[1] < w[0])
            .map(|index| CuSeqlensFault::Decreasing { index })
    };
    fault.map_or(Ok(()), |fault| Err(Error::CuSeqlens { which, fault }))
}
