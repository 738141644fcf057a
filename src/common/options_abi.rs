//! The option block every attention params struct embeds (`FlashAttnOptions`, field `opt` of
//! `FlashFwdParams` and `FlashDecodeParams` in kernels/params.h): the forward and the decode
//! plan both pack it here, so an option is added in one place on each side of the ABI.

use crate::common::abi::{self, FlashAttnOptions};
use crate::common::options::AttnOptions;

/// The rows of the call the LSE / entropy outputs cover: `[b, hq, sq]` (padded, `sq` the
/// length) or `[hq, total_q]` (varlen).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatRows {
    pub varlen: bool,
    pub heads_q: usize,
    /// Padded: the query length; varlen: ignored.
    pub seqlen_q: usize,
    /// Varlen: rows of q / o; padded: ignored.
    pub total_q: usize,
}

impl StatRows {
    /// (batch stride, head stride) of lse / entropy; the row stride is 1.
    pub fn strides(&self) -> (i64, i64) {
        if self.varlen {
            (0, self.total_q as i64)
        } else {
            ((self.heads_q * self.seqlen_q) as i64, self.seqlen_q as i64)
        }
    }
}

/// `options` at `head_dim` as the kernels read them: scale (natural and log2), softcap (0 off),
/// window bounds (-1 unbounded), flags (causal, window, varlen) and the LSE / entropy strides.
/// Every pointer is null: the plans bind the optional buffers (lse, entropy, ALiBi slopes, head
/// gates) per run.
pub(crate) fn pack_attn_options(
    options: &AttnOptions,
    head_dim: usize,
    rows: StatRows,
) -> FlashAttnOptions {
    let scale = options.scale_for(head_dim);
    let (left, right) = options.window.map_or((None, None), |w| (w.left, w.right));
    let unbounded = |w: Option<u32>| w.map_or(-1, |v| v as i32);
    let mut flags = 0u32;
    if options.causal {
        flags |= abi::FLASHMHA_FLAG_CAUSAL;
    }
    if options.window.is_some() {
        flags |= abi::FLASHMHA_FLAG_WINDOW;
    }
    if rows.varlen {
        flags |= abi::FLASHMHA_FLAG_VARLEN;
    }
    let (lse_batch_stride, lse_head_stride) = rows.strides();
    FlashAttnOptions {
        lse_batch_stride,
        lse_head_stride,
        scale,
        scale_log2: scale * std::f32::consts::LOG2_E,
        softcap: options.softcap.unwrap_or(0.0),
        window_left: unbounded(left),
        window_right: unbounded(right),
        flags,
        ..Default::default()
    }
}
