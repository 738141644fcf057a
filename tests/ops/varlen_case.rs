//! What the random prefill property tests (forward, backward, JVP, the candle op and its
//! gradient) share about one case's sequences: the proptest case count, item lengths to
//! cu_seqlens, the plan's `FwdShape` and the reference's `Layout` for a padded or varlen case,
//! and the f32 download of an emulator buffer. (A module of the `ops` test binary.)

use flashmha::backend::emulator::EmulatorBackend;
use flashmha::backend::Backend;
use flashmha::common::element::Element;
use flashmha::common::options::{AttnOptions, SlidingWindow};
use flashmha::reference::Layout;
use flashmha::{FwdShape, Heads, SeqShape};
use proptest::prelude::*;

/// The proptest case count: FLASHMHA_PROPTEST_CASES when set (to run more), else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("FLASHMHA_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A sliding window in a quarter of the cases, each side unbounded or 0..48.
pub fn window() -> impl Strategy<Value = Option<SlidingWindow>> {
    prop::option::weighted(
        0.25,
        (prop::option::of(0u32..48), prop::option::of(0u32..48))
            .prop_map(|(left, right)| SlidingWindow { left, right }),
    )
}

/// Item lengths of a drawn case: a padded case keeps the first item only; a varlen case gets
/// the query (`side` 0) or key side of item `item` emptied when `empty` is drawn (an item
/// index past the end empties nothing).
pub fn drawn_seqlens(
    seqlens: Vec<(usize, usize)>,
    varlen: bool,
    empty: Option<(usize, usize)>,
) -> Vec<(usize, usize)> {
    let mut seqlens = if varlen {
        seqlens
    } else {
        seqlens[..1].to_vec()
    };
    if let (true, Some((item, side))) = (varlen, empty) {
        if let Some(s) = seqlens.get_mut(item) {
            if side == 0 {
                s.0 = 0
            } else {
                s.1 = 0
            }
        }
    }
    seqlens
}

/// Per-item row starts of (sq, sk) items: (cu_q, cu_k), each `[items + 1]`.
pub fn cu_seqlens(seqlens: &[(usize, usize)]) -> (Vec<i32>, Vec<i32>) {
    let mut cu_q = vec![0i32];
    let mut cu_k = vec![0i32];
    for &(sq, sk) in seqlens {
        cu_q.push(cu_q.last().unwrap() + sq as i32);
        cu_k.push(cu_k.last().unwrap() + sk as i32);
    }
    (cu_q, cu_k)
}

/// The longest query and key item: (max_q, max_k). `seqlens` is not empty.
pub fn max_seqlens(seqlens: &[(usize, usize)]) -> (usize, usize) {
    (
        seqlens.iter().map(|s| s.0).max().unwrap(),
        seqlens.iter().map(|s| s.1).max().unwrap(),
    )
}

/// The forward shape of the items: varlen over all of them, or padded batch 1 of the first.
pub fn fwd_shape(
    seqlens: &[(usize, usize)],
    varlen: bool,
    heads: Heads,
    head_dim: usize,
    options: AttnOptions,
) -> FwdShape {
    let shape = if varlen {
        let (cu_q, cu_k) = cu_seqlens(seqlens);
        let (max_q, max_k) = max_seqlens(seqlens);
        FwdShape::varlen(
            SeqShape::Varlen {
                batch: seqlens.len(),
                max_seqlen_q: max_q,
                max_seqlen_k: max_k,
                total_q: *cu_q.last().unwrap() as usize,
                total_k: *cu_k.last().unwrap() as usize,
            },
            heads,
            head_dim,
        )
    } else {
        let (sq, sk) = seqlens[0];
        FwdShape::padded(1, sq, sk, heads, head_dim)
    };
    shape.with_options(options)
}

/// The reference's layout of the same case: the cu_seqlens when varlen, else padded batch 1
/// of `max_q` x `max_k`.
pub fn reference_layout<'a>(
    varlen: bool,
    cu_q: &'a [i32],
    cu_k: &'a [i32],
    (max_q, max_k): (usize, usize),
) -> Layout<'a> {
    if varlen {
        Layout::Varlen {
            cu_seqlens_q: cu_q,
            cu_seqlens_k: cu_k,
        }
    } else {
        Layout::Padded {
            batch: 1,
            seqlen_q: max_q,
            seqlen_k: max_k,
        }
    }
}

/// Downloads an emulator buffer of `T` as f32 values (errors as strings, for proptest).
pub fn download_f32<T: Element>(
    be: &EmulatorBackend,
    stream: &<EmulatorBackend as Backend>::Stream,
    b: &<EmulatorBackend as Backend>::Buffer<T>,
) -> Result<Vec<f32>, String> {
    Ok(be
        .download(stream, b)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|x| x.to_f32())
        .collect())
}
