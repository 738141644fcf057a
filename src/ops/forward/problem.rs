//! What a forward call computes, without any device buffer: sequence layout, heads, head dim,
//! per-tensor strides and options. A [`FwdShape`] is the input of the launch plan; a server
//! builds one per batch shape and reuses the plan for every layer. Plain data; touches nothing.
//!
//! The element type is not here: the plan takes it (`FwdPlan::new(DType::Bf16, &shape)`), as
//! every op's plan holds its dtype, and the buffers bound to it must be of that type.

use crate::common::geometry::Strides;
use crate::common::options::AttnOptions;

/// Query and key/value head counts (`q % kv == 0`: MHA, GQA or MQA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub q: usize,
    pub kv: usize,
}

impl Heads {
    /// Multi-head attention: as many key/value heads as query heads.
    pub fn mha(heads: usize) -> Heads {
        Heads {
            q: heads,
            kv: heads,
        }
    }

    /// Grouped-query attention (`kv = 1` is multi-query attention).
    pub fn gqa(q: usize, kv: usize) -> Heads {
        Heads { q, kv }
    }
}

/// How sequences are laid out, with host-side sizes only (nothing read from the device).
/// `d` below is each tensor's own head dim: d_qk for q and k, d_v for v and o
/// ([`FwdShape::head_dim`], [`FwdShape::head_dim_v`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqShape {
    /// `q, o: [b, sq, hq, d]`, `k, v: [b, sk, hkv, d]`.
    Padded {
        batch: usize,
        seqlen_q: usize,
        seqlen_k: usize,
    },
    /// `q, o: [total_q, hq, d]`, `k, v: [total_k, hkv, d]`; item `i` owns rows
    /// `cu_seqlens_q[i]..cu_seqlens_q[i + 1]` (same for k) of the device `cu_seqlens` buffers,
    /// which the kernel checks against these bounds (a violation traps; nothing is read or
    /// written out of bounds). The grid is sized from `max_seqlen_q`, so the same plan serves
    /// every batch whose sizes stay within these bounds.
    Varlen {
        batch: usize,
        /// Upper bound of any item's query count.
        max_seqlen_q: usize,
        /// Upper bound of any item's key count.
        max_seqlen_k: usize,
        /// Rows of the packed q and o tensors.
        total_q: usize,
        /// Rows of the packed k and v tensors.
        total_k: usize,
    },
}

impl SeqShape {
    pub fn batch(&self) -> usize {
        match *self {
            SeqShape::Padded { batch, .. } | SeqShape::Varlen { batch, .. } => batch,
        }
    }

    /// (longest q sequence, longest k sequence): exact when padded, bounds when varlen.
    pub fn max_seqlens(&self) -> (usize, usize) {
        match *self {
            SeqShape::Padded {
                seqlen_q, seqlen_k, ..
            } => (seqlen_q, seqlen_k),
            SeqShape::Varlen {
                max_seqlen_q,
                max_seqlen_k,
                ..
            } => (max_seqlen_q, max_seqlen_k),
        }
    }

    /// (q rows, k rows) over the whole batch, as the tensors hold them (saturating: validation
    /// refuses anything near `usize::MAX`).
    pub fn total_rows(&self) -> (usize, usize) {
        match *self {
            SeqShape::Padded {
                batch,
                seqlen_q,
                seqlen_k,
            } => (
                batch.saturating_mul(seqlen_q),
                batch.saturating_mul(seqlen_k),
            ),
            SeqShape::Varlen {
                total_q, total_k, ..
            } => (total_q, total_k),
        }
    }

    pub fn is_varlen(&self) -> bool {
        matches!(self, SeqShape::Varlen { .. })
    }
}

/// The strides of the four attention tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkvoStrides {
    pub q: Strides,
    pub k: Strides,
    pub v: Strides,
    pub o: Strides,
}

/// A whole forward call without buffers: the plan's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FwdShape {
    pub seq: SeqShape,
    pub heads: Heads,
    /// d_qk: the head dim of q and k (the scale defaults to `1 / sqrt(head_dim)`).
    pub head_dim: usize,
    /// d_v: the head dim of v and o; equal to `head_dim` unless a compiled (d_qk, d_v) pair
    /// serves the call (issue 23: DeepSeek's 192 / 128, and 128 / 64).
    pub head_dim_v: usize,
    pub strides: QkvoStrides,
    pub options: AttnOptions,
}

impl FwdShape {
    /// Contiguous `[b, s, h, d]` tensors of equal-length sequences; default options.
    pub fn padded(
        batch: usize,
        seqlen_q: usize,
        seqlen_k: usize,
        heads: Heads,
        head_dim: usize,
    ) -> FwdShape {
        let seq = SeqShape::Padded {
            batch,
            seqlen_q,
            seqlen_k,
        };
        Self::contiguous(seq, heads, head_dim, head_dim)
    }

    /// Contiguous packed `[total, h, d]` tensors of variable-length sequences described by a
    /// [`SeqShape::Varlen`] (the device `cu_seqlens` are passed at run time); default options.
    pub fn varlen(seq: SeqShape, heads: Heads, head_dim: usize) -> FwdShape {
        Self::contiguous(seq, heads, head_dim, head_dim)
    }

    /// Densely packed tensors for `seq` with their own head dims: q, k `[.., head_dim]`, v, o
    /// `[.., head_dim_v]` (batch strides are ignored by varlen layouts); default options.
    pub fn contiguous(seq: SeqShape, heads: Heads, head_dim: usize, head_dim_v: usize) -> FwdShape {
        let (sq, sk) = match seq {
            SeqShape::Padded {
                seqlen_q, seqlen_k, ..
            } => (seqlen_q, seqlen_k),
            SeqShape::Varlen { .. } => (0, 0),
        };
        FwdShape {
            seq,
            heads,
            head_dim,
            head_dim_v,
            strides: QkvoStrides {
                q: Strides::contiguous(sq, heads.q, head_dim),
                k: Strides::contiguous(sk, heads.kv, head_dim),
                v: Strides::contiguous(sk, heads.kv, head_dim_v),
                o: Strides::contiguous(sq, heads.q, head_dim_v),
            },
            options: AttnOptions::default(),
        }
    }

    /// The shape of contiguous `[batch, seq, heads, head_dim]` tensors q, k, v, o, each of
    /// whose dims is stated by its tensor: k and v must agree but for the head dim, o must
    /// equal q but for the head dim, batch must be the same everywhere, k's head dim is q's
    /// (d_qk) and o's is v's (d_v) (a typed error names the first that is not; whether a
    /// (d_qk, d_v) pair is compiled is the plan's check).
    pub fn from_dense_dims(
        q: [usize; 4],
        k: [usize; 4],
        v: [usize; 4],
        o: [usize; 4],
    ) -> crate::common::error::Result<FwdShape> {
        use crate::common::error::{Dim, Error, TensorName};
        const DIMS: [Dim; 4] = [Dim::Batch, Dim::Seq, Dim::Heads, Dim::HeadDim];
        // (tensor, its dims, the dims it must match, which of them must match): k shares batch
        // and head dim with q; v equals k but for its head dim; o equals q but for its head
        // dim, which is v's.
        let o_expected = [q[0], q[1], q[2], v[3]];
        let rules = [
            (TensorName::K, k, q, [true, false, false, true]),
            (TensorName::V, v, k, [true, true, true, false]),
            (TensorName::O, o, o_expected, [true; 4]),
        ];
        for (tensor, found, expected, must_match) in rules {
            if let Some(i) = (0..4).find(|&i| must_match[i] && found[i] != expected[i]) {
                return Err(Error::DimMismatch {
                    tensor,
                    dim: DIMS[i],
                    expected: expected[i],
                    found: found[i],
                });
            }
        }
        let seq = SeqShape::Padded {
            batch: q[0],
            seqlen_q: q[1],
            seqlen_k: k[1],
        };
        Ok(FwdShape::contiguous(
            seq,
            Heads { q: q[2], kv: k[2] },
            q[3],
            v[3],
        ))
    }

    /// The same shape with `options`.
    pub fn with_options(mut self, options: AttnOptions) -> FwdShape {
        self.options = options;
        self
    }

    /// The same shape with other strides.
    pub fn with_strides(mut self, strides: QkvoStrides) -> FwdShape {
        self.strides = strides;
        self
    }

    /// Elements of an LSE (or entropy) output: `[b, hq, sq]` padded, `[hq, total_q]` varlen
    /// (saturating, like [`SeqShape::total_rows`]).
    pub fn row_stats_len(&self) -> usize {
        let (rows, _) = self.seq.total_rows();
        self.heads.q.saturating_mul(rows)
    }
}
