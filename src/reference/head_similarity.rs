//! Reference head similarity: how alike the heads' outputs are, as the `h × h` matrix of cosine
//! similarities between head output vectors, averaged over tokens. Computed with candle in f64.
//!
//! Zero vectors: cosine similarity is undefined for a head whose output at a token is all zeros
//! (e.g. a fully masked row, or a gate of 0). Such a token contributes 0 to every off-diagonal
//! pair involving that head, and 1 to the diagonal (a head is always identical to itself), so the
//! diagonal of the result is exactly 1 and a dead head reads as "unrelated", never as NaN.

use candle_core::{Device, Tensor};

use super::ReferenceError;

/// Mean over tokens of `cos(O[t, i, :], O[t, j, :])`, row-major `[heads, heads]`, for
/// `o: [tokens, heads, head_dim]` (a padded `[b, s, h, d]` output is `b·s` tokens).
pub fn head_similarity(
    o: &[f32],
    tokens: usize,
    heads: usize,
    head_dim: usize,
) -> Result<Vec<f32>, ReferenceError> {
    if tokens == 0 || heads == 0 || head_dim == 0 {
        return Err(ReferenceError::Invalid(format!(
            "head_similarity needs tokens, heads and head_dim > 0 (got {tokens}, {heads}, {head_dim})"
        )));
    }
    if o.len() != tokens * heads * head_dim {
        return Err(ReferenceError::Invalid(format!(
            "o has {} elements, expected {tokens} x {heads} x {head_dim}",
            o.len()
        )));
    }
    let dev = Device::Cpu;
    let data: Vec<f64> = o.iter().map(|&x| f64::from(x)).collect();
    let x = Tensor::from_vec(data, (tokens, heads, head_dim), &dev)?; // [t, h, d]
    let norm = x.sqr()?.sum_keepdim(2)?.sqrt()?; // [t, h, 1]
                                                 // Zero vectors stay zero instead of dividing by 0, which makes their cosines 0.
    let alive = norm.gt(0.0)?; // [t, h, 1]
    let safe_norm = alive.where_cond(&norm, &Tensor::ones_like(&norm)?)?; // [t, h, 1]
    let unit = x.broadcast_div(&safe_norm)?; // [t, h, d]
    let cos = unit.matmul(&unit.transpose(1, 2)?.contiguous()?)?; // [t, h, h]
    let mean = cos.mean(0)?; // [h, h]
                             // The diagonal is 1 by definition, including for zero vectors.
    let eye = Tensor::eye(heads, candle_core::DType::U8, &dev)?; // [h, h]
    let mean = eye.where_cond(&Tensor::ones_like(&mean)?, &mean)?; // [h, h]
    Ok(mean
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|x| x as f32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Loop-based f64 version of the same definition.
    fn naive(o: &[f32], t: usize, h: usize, d: usize) -> Vec<f64> {
        let row = |tok: usize, head: usize| &o[(tok * h + head) * d..(tok * h + head + 1) * d];
        let mut out = vec![0.0; h * h];
        for i in 0..h {
            for j in 0..h {
                if i == j {
                    out[i * h + j] = 1.0;
                    continue;
                }
                let mut acc = 0.0;
                for tok in 0..t {
                    let (a, b) = (row(tok, i), row(tok, j));
                    let dot: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(&x, &y)| f64::from(x) * f64::from(y))
                        .sum();
                    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                    if na > 0.0 && nb > 0.0 {
                        acc += dot / (na * nb);
                    }
                }
                out[i * h + j] = acc / t as f64;
            }
        }
        out
    }

    #[test]
    fn hand_checked_pairs_with_a_zero_head() {
        // Two tokens, four heads, d = 2. Head 3 is all zeros at token 1.
        let o = [
            1.0, 0.0, 2.0, 0.0, -1.0, 0.0, 1.0, 1.0, // token 0
            0.0, 2.0, 0.0, 3.0, 1.0, 1.0, 0.0, 0.0, // token 1
        ];
        let m = head_similarity(&o, 2, 4, 2).unwrap();
        let at = |i: usize, j: usize| f64::from(m[i * 4 + j]);
        let r = std::f64::consts::FRAC_1_SQRT_2;
        let want = [
            ((0, 1), (1.0 + 1.0) / 2.0), // same direction at both tokens, scale ignored
            ((0, 2), (-1.0 + r) / 2.0),  // opposite, then 45 degrees
            ((1, 2), (-1.0 + r) / 2.0),
            ((0, 3), (r + 0.0) / 2.0), // the zero token counts as 0, not skipped
            ((1, 3), (r + 0.0) / 2.0),
            ((2, 3), (-r + 0.0) / 2.0),
        ];
        for ((i, j), w) in want {
            assert!(
                (at(i, j) - w).abs() < 1e-6,
                "({i},{j}): {} vs {w}",
                at(i, j)
            );
            assert_eq!(at(i, j), at(j, i));
        }
        for i in 0..4 {
            assert_eq!(at(i, i), 1.0, "diagonal {i}");
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(head_similarity(&[1.0; 6], 1, 2, 2).is_err());
        assert!(head_similarity(&[], 0, 2, 2).is_err());
    }

    proptest! {
        #[test]
        fn matches_loop_definition(
            (t, h, d, o) in (1usize..6, 1usize..5, 1usize..9).prop_flat_map(|(t, h, d)| {
                // Some heads are zeroed at some tokens to exercise the zero-vector rule.
                let vals = prop::collection::vec(
                    prop_oneof![3 => -2f32..2.0, 1 => Just(0.0f32)], t * h * d);
                (Just(t), Just(h), Just(d), vals)
            })
        ) {
            let got = head_similarity(&o, t, h, d).unwrap();
            let want = naive(&o, t, h, d);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                // f64 both ways, then one f32 rounding of a value in [-1, 1].
                prop_assert!((f64::from(g) - w).abs() <= 4.0 * 2f64.powi(-24), "{i}: {g} vs {w}");
            }
        }
    }
}
