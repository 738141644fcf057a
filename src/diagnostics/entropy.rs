//! Per-head summary of attention entropy: mean, min and max over every query row of a head.
//! The per-row entropies come from the fused forward kernel's `entropy` output
//! (`FlashAttnOptions.entropy` of `FlashFwdParams.opt`); [`EntropySource`] records how it ran,
//! so reports can say so. Pure.

use crate::common::error::{Dim, Error, Result, TensorName};

/// Where per-row entropies came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntropySource {
    /// The fused forward kernel's `entropy` output, run on the PTX emulator.
    FusedKernel,
    /// The same kernel run on a GPU.
    FusedKernelOnGpu,
}

impl EntropySource {
    /// How reports label the source.
    pub fn label(self) -> &'static str {
        match self {
            EntropySource::FusedKernel => "fused forward kernel (emulated)",
            EntropySource::FusedKernelOnGpu => "fused forward kernel (GPU)",
        }
    }
}

/// Entropy statistics (nats) of one head over its query rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadEntropy {
    pub head: usize,
    pub mean: f64,
    pub min: f32,
    pub max: f32,
}

/// Per-head statistics of `entropy: [batch, heads, seqlen_q]` (the padded LSE/entropy layout).
pub fn per_head_entropy(
    entropy: &[f32],
    batch: usize,
    heads: usize,
    seqlen_q: usize,
) -> Result<Vec<HeadEntropy>> {
    let expected = batch * heads * seqlen_q;
    if expected == 0 {
        return Err(Error::EmptyDim {
            tensor: TensorName::Entropy,
            dim: Dim::Len,
        });
    }
    if entropy.len() != expected {
        return Err(Error::DimMismatch {
            tensor: TensorName::Entropy,
            dim: Dim::Len,
            expected,
            found: entropy.len(),
        });
    }
    Ok((0..heads)
        .map(|h| {
            let rows = (0..batch).flat_map(|b| {
                let start = (b * heads + h) * seqlen_q;
                entropy[start..start + seqlen_q].iter().copied()
            });
            let (mut sum, mut min, mut max) = (0.0f64, f32::INFINITY, f32::NEG_INFINITY);
            for e in rows {
                sum += f64::from(e);
                min = min.min(e);
                max = max.max(e);
            }
            HeadEntropy {
                head: h,
                mean: sum / (batch * seqlen_q) as f64,
                min,
                max,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_follow_the_layout() {
        // batch 2, heads 2, seqlen 3: head 0 rows are [0,1,2] and [6,7,8]; head 1 [3,4,5], [9..12).
        let e: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let s = per_head_entropy(&e, 2, 2, 3).unwrap();
        assert_eq!(s[0].min, 0.0);
        assert_eq!(s[0].max, 8.0);
        assert_eq!(s[0].mean, (0.0 + 1.0 + 2.0 + 6.0 + 7.0 + 8.0) / 6.0);
        assert_eq!(s[1].min, 3.0);
        assert_eq!(s[1].max, 11.0);
        assert_eq!(s[1].mean, (3.0 + 4.0 + 5.0 + 9.0 + 10.0 + 11.0) / 6.0);
        assert!(per_head_entropy(&e, 2, 2, 2).is_err());
        assert!(per_head_entropy(&[], 0, 2, 2).is_err());
    }
}
