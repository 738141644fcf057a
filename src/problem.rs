//! A forward-attention call described without any device: shapes, strides, buffer sizes and
//! options. The same description feeds validation, the launch plan, the reference and both
//! backends. Plain data; touches nothing.

use crate::dtype::DType;
use crate::options::AttnOptions;

/// Strides of a q/k/v/o tensor in elements. The head dim is always contiguous (stride 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Strides {
    /// Between batch items (padded layout only; ignored for varlen).
    pub batch: i64,
    /// Between sequence positions (rows).
    pub row: i64,
    /// Between heads.
    pub head: i64,
}

impl Strides {
    /// Contiguous `[b, s, h, d]` (padded) strides.
    pub fn contiguous(seqlen: usize, heads: usize, head_dim: usize) -> Strides {
        let row = (heads * head_dim) as i64;
        Strides {
            batch: seqlen as i64 * row,
            row,
            head: head_dim as i64,
        }
    }
}

/// How sequences are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqLayout {
    /// `q: [b, sq, hq, d]`, `k, v: [b, sk, hkv, d]`.
    Padded {
        batch: usize,
        seqlen_q: usize,
        seqlen_k: usize,
    },
    /// `q: [total_q, hq, d]`, `k, v: [total_k, hkv, d]`; item `i` owns rows
    /// `cu_seqlens_q[i]..cu_seqlens_q[i + 1]` (same for k). These are the host copies of the
    /// device `cu_seqlens` buffers, used for validation and grid sizing (no device sync).
    Varlen {
        cu_seqlens_q: Vec<i32>,
        cu_seqlens_k: Vec<i32>,
    },
}

impl SeqLayout {
    pub fn batch(&self) -> usize {
        match self {
            SeqLayout::Padded { batch, .. } => *batch,
            SeqLayout::Varlen { cu_seqlens_q, .. } => cu_seqlens_q.len().saturating_sub(1),
        }
    }

    /// (longest q sequence, longest k sequence).
    pub fn max_seqlens(&self) -> (usize, usize) {
        match self {
            SeqLayout::Padded {
                seqlen_q, seqlen_k, ..
            } => (*seqlen_q, *seqlen_k),
            SeqLayout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            } => (max_len(cu_seqlens_q), max_len(cu_seqlens_k)),
        }
    }

    /// (q rows, k rows) over the whole batch, as the tensors hold them.
    pub fn total_rows(&self) -> (usize, usize) {
        match self {
            SeqLayout::Padded {
                batch,
                seqlen_q,
                seqlen_k,
            } => (batch * seqlen_q, batch * seqlen_k),
            SeqLayout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            } => (
                cu_seqlens_q.last().map_or(0, |&v| v.max(0) as usize),
                cu_seqlens_k.last().map_or(0, |&v| v.max(0) as usize),
            ),
        }
    }

    /// (sq, sk) of batch item `i`.
    pub fn seqlens_of(&self, i: usize) -> (usize, usize) {
        match self {
            SeqLayout::Padded {
                seqlen_q, seqlen_k, ..
            } => (*seqlen_q, *seqlen_k),
            SeqLayout::Varlen {
                cu_seqlens_q,
                cu_seqlens_k,
            } => (
                (cu_seqlens_q[i + 1] - cu_seqlens_q[i]) as usize,
                (cu_seqlens_k[i + 1] - cu_seqlens_k[i]) as usize,
            ),
        }
    }

    pub fn is_varlen(&self) -> bool {
        matches!(self, SeqLayout::Varlen { .. })
    }
}

fn max_len(cu: &[i32]) -> usize {
    cu.windows(2)
        .map(|w| (w[1] as i64 - w[0] as i64).max(0) as usize)
        .max()
        .unwrap_or(0)
}

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
    pub head_dim: usize,
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
    pub options: AttnOptions,
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
        let (tq, tk) = layout.total_rows();
        let (sq, sk) = match &layout {
            SeqLayout::Padded {
                seqlen_q, seqlen_k, ..
            } => (*seqlen_q, *seqlen_k),
            // Varlen ignores batch strides; rows are global.
            SeqLayout::Varlen { .. } => (0, 0),
        };
        let q = Operand {
            strides: Strides::contiguous(sq, num_heads_q, head_dim),
            len: tq * num_heads_q * head_dim,
        };
        let kv = Operand {
            strides: Strides::contiguous(sk, num_heads_kv, head_dim),
            len: tk * num_heads_kv * head_dim,
        };
        FwdProblem {
            dtype,
            layout,
            num_heads_q,
            num_heads_kv,
            head_dim,
            q,
            k: kv,
            v: kv,
            o: q,
            lse_len: None,
            entropy_len: None,
            alibi_len: None,
            gates_len: None,
            options,
        }
    }

    /// Elements an LSE (or entropy) buffer must hold.
    pub fn row_stats_len(&self) -> usize {
        let (tq, _) = self.layout.total_rows();
        match &self.layout {
            SeqLayout::Padded {
                batch, seqlen_q, ..
            } => batch * self.num_heads_q * seqlen_q,
            SeqLayout::Varlen { .. } => self.num_heads_q * tq,
        }
    }

    /// Compulsory FLOPs of the two matmuls (DESIGN.md section 5), counting only unmasked
    /// (query, key) pairs.
    pub fn flops(&self) -> f64 {
        let pairs: u64 = (0..self.layout.batch())
            .map(|i| {
                let (sq, sk) = self.layout.seqlens_of(i);
                crate::options::unmasked_pairs(&self.options, sq, sk)
            })
            .sum();
        4.0 * pairs as f64 * self.num_heads_q as f64 * self.head_dim as f64
    }

    /// Compulsory DRAM bytes: read q, k, v once, write o once (DESIGN.md section 5).
    pub fn compulsory_bytes(&self) -> f64 {
        let (tq, tk) = self.layout.total_rows();
        let e = self.dtype.size() as f64;
        let d = self.head_dim as f64;
        e * d * (2.0 * (tq * self.num_heads_q) as f64 + 2.0 * (tk * self.num_heads_kv) as f64)
    }
}
