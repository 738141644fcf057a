//! Attention options: the scalar knobs of one forward call, with documented defaults.
//!
//! Device buffers (q, k, v, slopes, gates, cu_seqlens) are not here: they travel in the input
//! structs of each backend. This file holds plain data and the one validation of it
//! ([`AttnOptions::validate`], called by every op).
//!
//! Mask semantics (shared by the kernel, the reference and validation), for query row `i` in
//! `0..sq` and key column `j` in `0..sk` of one batch item, with the diagonal bottom-right
//! aligned (`shift = sk - sq`, so the last query sees the last key):
//! - score `s = scale * q_i . k_j`;
//! - softcap `c > 0`: `s = c * tanh(s / c)`;
//! - ALiBi slope `a` of the head: `s -= a * |i + shift - j|`;
//! - causal: keys with `j > i + shift` are masked;
//! - window `(left, right)`: keys with `j < i + shift - left` or `j > i + shift + right` are masked
//!   (`None` on a side means unbounded there); causal is the window `(None, Some(0))`;
//! - `P = softmax(s)` over the unmasked keys; a row with no unmasked key yields `O = 0`,
//!   `lse = -inf` and entropy `0`.
//! - attention sink `z` of the head (an optional `[hq]` f32 buffer, `sinks`): one more term of
//!   every row's denominator with no value, `P_ij = exp(s_ij) / (exp(z) + sum_j exp(s_ij))`
//!   (no scale, softcap or ALiBi applied to `z`); `lse` includes it (`ln(exp(z) + sum_j
//!   exp(s_ij))`), the entropy is that of the row's distribution over its keys and the sink,
//!   and a row with no unmasked key yields `O = 0`, `lse = z`, entropy `0`. `z = -inf` is no
//!   sink; a NaN `z` makes every row of its head NaN. A decode joins each row's sink once,
//!   whatever its split count; `merge_states` takes states that already hold their sink (pass
//!   the sinks to one of the merged calls only).
//! - NaN: a row whose inputs hold a NaN (or an inf that makes a score or an output element NaN
//!   or infinite: in its q, or in the k or v of a key it sees) yields `lse = NaN` and entropy
//!   `NaN`, with the NaN in `O`. `-inf` always means "no unmasked key", never a NaN; every
//!   merge (decode's splits, `merge_states`) turns a NaN `lse` into a NaN `O` and `lse`, so the
//!   NaN survives cascades. A key a row does not see cannot make it NaN through its scores; its
//!   v can still reach O on hardware that computes `0 x NaN` in the P V product (keys of the same
//!   tile that other rows see), and the row's `lse` is then NaN too.

use crate::common::error::{Error, Limit, OptionName, Result};
use crate::common::geometry::MAX_INDEX_32;

/// Sliding-window bounds, in keys on each side of the (bottom-right aligned) diagonal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlidingWindow {
    /// Keys to the left of the diagonal a query may see; `None` = unbounded.
    pub left: Option<u32>,
    /// Keys to the right of the diagonal a query may see; `None` = unbounded.
    pub right: Option<u32>,
}

/// Scalar options of a forward attention call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AttnOptions {
    /// Softmax scale applied to `q . k`. Default (`None`): `1 / sqrt(head_dim)`.
    pub softmax_scale: Option<f32>,
    /// Causal mask, bottom-right aligned when `sq != sk`. Default: off.
    pub causal: bool,
    /// Sliding-window mask; combines with `causal` (the tighter bound wins). Default: none.
    pub window: Option<SlidingWindow>,
    /// Logit softcap `c`: scores become `c * tanh(s / c)`. Must be finite and `> 0`. Default: off.
    pub softcap: Option<f32>,
}

impl AttnOptions {
    /// The rules every op's options obey (the forward's and the decode's validation call it):
    /// a given scale or softcap is finite and > 0 (the kernels' running max assumes scores
    /// grow with q.k), and window bounds fit the kernels' 32-bit index math.
    pub fn validate(&self) -> Result<()> {
        for (option, value) in [
            (OptionName::SoftmaxScale, self.softmax_scale),
            (OptionName::Softcap, self.softcap),
        ] {
            if let Some(v) = value {
                if !v.is_finite() || v <= 0.0 {
                    return Err(Error::InvalidOption { option, value: v });
                }
            }
        }
        if let Some(w) = self.window {
            for v in [w.left, w.right].into_iter().flatten() {
                if u64::from(v) > MAX_INDEX_32 {
                    return Err(Error::Overflow32 {
                        limit: Limit::Window,
                        value: u64::from(v),
                        max: MAX_INDEX_32,
                    });
                }
            }
        }
        Ok(())
    }

    /// The scale actually used for a head dimension `d`.
    pub fn scale_for(&self, head_dim: usize) -> f32 {
        self.softmax_scale
            .unwrap_or_else(|| 1.0 / (head_dim as f32).sqrt())
    }

    /// The options that are set, each as a short human-readable word or phrase (`causal`,
    /// `scale 0.20`, `window 3..-`, `softcap 12.5`), for case descriptions in tables.
    pub fn features(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = self.softmax_scale {
            out.push(format!("scale {s:.3}"));
        }
        if self.causal {
            out.push("causal".to_string());
        }
        if let Some(w) = self.window {
            let side = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
            out.push(format!("window {}..{}", side(w.left), side(w.right)));
        }
        if let Some(c) = self.softcap {
            out.push(format!("softcap {c:.1}"));
        }
        out
    }

    /// The effective (left, right) window after folding in `causal`, `None` meaning unbounded.
    pub fn effective_window(&self) -> (Option<u32>, Option<u32>) {
        let (left, right) = self.window.map_or((None, None), |w| (w.left, w.right));
        // Causal bounds only the right side, at the diagonal itself (the tightest u32 bound).
        let right = if self.causal { Some(0) } else { right };
        (left, right)
    }
}

/// Number of unmasked (query, key) pairs of one sequence pair under `opts`, counted in closed
/// form per query row (used for FLOP accounting and tile skipping checks).
pub fn unmasked_pairs(opts: &AttnOptions, sq: usize, sk: usize) -> u64 {
    let (left, right) = opts.effective_window();
    let shift = sk as i64 - sq as i64;
    (0..sq as i64)
        .map(|i| {
            let diag = i + shift;
            let lo = left.map_or(0, |l| (diag - l as i64).max(0));
            let hi = right.map_or(sk as i64 - 1, |r| (diag + r as i64).min(sk as i64 - 1));
            (hi - lo + 1).max(0) as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scale_is_inverse_sqrt_head_dim() {
        let o = AttnOptions::default();
        assert!((o.scale_for(64) - 0.125).abs() < 1e-7);
        let o = AttnOptions {
            softmax_scale: Some(0.5),
            ..Default::default()
        };
        assert_eq!(o.scale_for(64), 0.5);
    }

    #[test]
    fn causal_folds_into_window_right_bound() {
        let o = AttnOptions {
            causal: true,
            window: Some(SlidingWindow {
                left: Some(7),
                right: Some(3),
            }),
            ..Default::default()
        };
        assert_eq!(o.effective_window(), (Some(7), Some(0)));
        let o = AttnOptions {
            causal: false,
            window: Some(SlidingWindow {
                left: None,
                right: Some(3),
            }),
            ..Default::default()
        };
        assert_eq!(o.effective_window(), (None, Some(3)));
    }
}
