//! Host analysis of a head-similarity matrix: the `H × H` mean cosine matrix `C` (from the
//! kernel's summed Gram matrix, or from anywhere else), its eigenvalue spectrum, the effective
//! number of distinct heads, and clusters of near-duplicate heads. Pure computation on small
//! matrices (`H <= 128`); reads and writes nothing else.
//!
//! Why these measures. `C[i][j]` is the mean over tokens of `cos(o_i, o_j)`. `C` is an average of
//! Gram matrices of unit vectors (plus 1 on the diagonal for a zero vector), so it is symmetric
//! positive semi-definite with trace `H`. Its eigenvalues say how many independent directions the
//! heads' outputs span on average:
//! - `H` mutually orthogonal heads: `C = I`, every eigenvalue 1;
//! - `H` copies of one head: `C = 11ᵀ`, eigenvalues `(H, 0, …, 0)`;
//! - `k` groups of identical heads, orthogonal between groups: eigenvalues = the group sizes.
//!
//! The **effective number of distinct heads** is the participation ratio of the spectrum,
//! `PR = (Σλ)² / Σλ²`; it is `H`, `1` and `k` (for equal groups) in the three cases above, and
//! between for partial similarity. Since `Σλ = tr C` and `Σλ² = ‖C‖²_F`, it equals
//! `tr(C)² / ‖C‖²_F`, which the tests use as an independent check of the eigen-solver.
//!
//! **Clusters** are single-linkage groups at a similarity threshold (default 0.9): heads `i`
//! and `j` are linked when `C[i][j] >= threshold`, and a cluster is a connected component with at
//! least two heads. Anti-parallel heads (`C ≈ -1`) are redundant too but are not linked: a
//! threshold on the signed cosine keeps "copies" and "negated copies" apart, and the spectrum
//! counts both as one direction anyway.

use nalgebra::{DMatrix, SymmetricEigen};

use crate::common::error::{Dim, Error, Result, TensorName};

/// Default similarity at or above which two heads are called near-duplicates.
pub const DEFAULT_DUPLICATE_THRESHOLD: f32 = 0.9;

/// A symmetric `heads × heads` matrix of mean cosine similarities, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityMatrix {
    heads: usize,
    values: Vec<f32>,
    /// max |C[i][j] - C[j][i]| of the input, before symmetrisation.
    asymmetry: f32,
}

impl SimilarityMatrix {
    /// Wraps a row-major `[heads, heads]` matrix. It must be square and finite; it is
    /// symmetrised (`(C + Cᵀ) / 2`), which only removes rounding asymmetry.
    pub fn new(heads: usize, values: Vec<f32>) -> Result<Self> {
        if heads == 0 || values.len() != heads * heads {
            return Err(Error::DimMismatch {
                tensor: TensorName::Gram,
                dim: Dim::Len,
                expected: heads * heads,
                found: values.len(),
            });
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "similarity matrix (row-major)",
                index: i,
                value: values[i],
            });
        }
        let mut m = SimilarityMatrix {
            heads,
            values,
            asymmetry: 0.0,
        };
        for i in 0..heads {
            for j in i + 1..heads {
                m.asymmetry = m.asymmetry.max((m.get(i, j) - m.get(j, i)).abs());
                let mean = 0.5 * (m.get(i, j) + m.get(j, i));
                m.values[i * heads + j] = mean;
                m.values[j * heads + i] = mean;
            }
        }
        Ok(m)
    }

    /// The mean from the kernel's output: `gram` holds the sum over `tokens` tokens.
    pub fn from_gram_sum(heads: usize, gram: &[f32], tokens: usize) -> Result<Self> {
        if tokens == 0 {
            return Err(Error::EmptyDim {
                tensor: TensorName::HeadSimInput,
                dim: Dim::Seq,
            });
        }
        let inv = 1.0 / tokens as f64;
        let mean = gram.iter().map(|&g| (f64::from(g) * inv) as f32).collect();
        Self::new(heads, mean)
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// `C[i][j]`.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.values[i * self.heads + j]
    }

    /// Largest `|C[i][j] - C[j][i]|` of the values given to [`Self::new`]: rounding noise for
    /// a correct source (kernels sum the two triangles in different orders).
    pub fn asymmetry(&self) -> f32 {
        self.asymmetry
    }

    /// Row-major values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The most similar pair of distinct heads `(i, j, C[i][j])`, `i < j`; `None` for one head.
    pub fn most_similar_pair(&self) -> Option<(usize, usize, f32)> {
        let h = self.heads;
        (0..h)
            .flat_map(|i| (i + 1..h).map(move |j| (i, j)))
            .map(|(i, j)| (i, j, self.get(i, j)))
            .max_by(|a, b| a.2.total_cmp(&b.2))
    }
}

/// Eigenvalues of `C`, largest first, and what they say.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// Descending. Tiny negative values are rounding (C is PSD in exact arithmetic).
    pub eigenvalues: Vec<f64>,
    /// Participation ratio `(Σλ)² / Σλ²`: the effective number of distinct heads.
    pub effective_heads: f64,
}

impl Spectrum {
    /// Share of `Σλ` carried by eigenvalue `k`.
    pub fn share(&self, k: usize) -> f64 {
        let total: f64 = self.eigenvalues.iter().sum();
        self.eigenvalues[k] / total
    }

    /// The `n` largest eigenvalues with `decimals` decimals, comma-separated (for reports).
    pub fn largest(&self, n: usize, decimals: usize) -> String {
        let top: Vec<String> = self
            .eigenvalues
            .iter()
            .take(n)
            .map(|l| format!("{l:.decimals$}"))
            .collect();
        top.join(", ")
    }
}

/// The symmetric eigen-decomposition of `m` (nalgebra, f64) and the participation ratio.
pub fn spectrum(m: &SimilarityMatrix) -> Spectrum {
    let h = m.heads();
    let c = DMatrix::from_fn(h, h, |i, j| f64::from(m.get(i, j)));
    let mut eigenvalues: Vec<f64> = SymmetricEigen::new(c).eigenvalues.iter().copied().collect();
    eigenvalues.sort_by(|a, b| b.total_cmp(a));
    let effective_heads = participation_ratio(&eigenvalues);
    Spectrum {
        eigenvalues,
        effective_heads,
    }
}

/// `(Σλ)² / Σλ²`; 0 for an all-zero spectrum.
pub fn participation_ratio(eigenvalues: &[f64]) -> f64 {
    let sum: f64 = eigenvalues.iter().sum();
    let sum_sq: f64 = eigenvalues.iter().map(|l| l * l).sum();
    if sum_sq == 0.0 {
        0.0
    } else {
        sum * sum / sum_sq
    }
}

/// A group of near-duplicate heads.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Ascending head indices, at least two.
    pub heads: Vec<usize>,
    /// Smallest `C[i][j]` over pairs in the cluster (single linkage can chain: this can be below
    /// the threshold).
    pub min_similarity: f32,
    /// Largest `C[i][j]` over pairs in the cluster.
    pub max_similarity: f32,
}

impl Cluster {
    /// The cluster's heads, joined by `sep` (for reports).
    pub fn heads_joined(&self, sep: &str) -> String {
        let heads: Vec<String> = self.heads.iter().map(usize::to_string).collect();
        heads.join(sep)
    }
}

/// Single-linkage clusters of heads at `threshold` (components of the graph `C[i][j] >=
/// threshold`, `i != j`), with at least two heads, ordered by their smallest head.
pub fn duplicate_clusters(m: &SimilarityMatrix, threshold: f32) -> Vec<Cluster> {
    let h = m.heads();
    // Union-find with path halving; h <= 128 so the O(h²) scan is trivial.
    let mut parent: Vec<usize> = (0..h).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for i in 0..h {
        for j in i + 1..h {
            if m.get(i, j) >= threshold {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); h];
    for i in 0..h {
        let root = find(&mut parent, i);
        groups[root].push(i);
    }
    groups
        .into_iter()
        .filter(|g| g.len() >= 2)
        .map(|heads| {
            let pairs = heads
                .iter()
                .enumerate()
                .flat_map(|(a, &i)| heads[a + 1..].iter().map(move |&j| (i, j)));
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for (i, j) in pairs {
                lo = lo.min(m.get(i, j));
                hi = hi.max(m.get(i, j));
            }
            Cluster {
                heads,
                min_similarity: lo,
                max_similarity: hi,
            }
        })
        .collect()
}

/// Everything the report shows about one similarity matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityAnalysis {
    pub spectrum: Spectrum,
    pub threshold: f32,
    pub clusters: Vec<Cluster>,
    /// Most similar pair of distinct heads, if there are two heads.
    pub most_similar_pair: Option<(usize, usize, f32)>,
}

/// Spectrum, effective heads and clusters at `threshold`.
pub fn analyze(m: &SimilarityMatrix, threshold: f32) -> SimilarityAnalysis {
    SimilarityAnalysis {
        spectrum: spectrum(m),
        threshold,
        clusters: duplicate_clusters(m, threshold),
        most_similar_pair: m.most_similar_pair(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// `C` of heads assigned to `groups[h]`: 1 within a group, `between` across groups.
    fn block_matrix(groups: &[usize], between: f32) -> SimilarityMatrix {
        let h = groups.len();
        let v = (0..h * h)
            .map(|k| {
                if groups[k / h] == groups[k % h] {
                    1.0
                } else {
                    between
                }
            })
            .collect();
        SimilarityMatrix::new(h, v).unwrap()
    }

    /// Mean cosine matrix of random unit vectors (rows of `vecs`), computed directly: a real
    /// PSD similarity matrix with no structure planted.
    fn cosine_matrix(vecs: &[Vec<f64>]) -> SimilarityMatrix {
        let h = vecs.len();
        let norm = |v: &Vec<f64>| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let v = (0..h * h)
            .map(|k| {
                let (a, b) = (&vecs[k / h], &vecs[k % h]);
                let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                (dot / (norm(a) * norm(b))) as f32
            })
            .collect();
        SimilarityMatrix::new(h, v).unwrap()
    }

    #[test]
    fn identity_means_all_heads_distinct() {
        let m = block_matrix(&[0, 1, 2, 3, 4], 0.0);
        let s = spectrum(&m);
        for l in &s.eigenvalues {
            assert!((l - 1.0).abs() < 1e-12, "{l}");
        }
        assert!((s.effective_heads - 5.0).abs() < 1e-9);
        assert!(duplicate_clusters(&m, 0.9).is_empty());
    }

    #[test]
    fn block_structure_gives_group_sizes_and_clusters() {
        // Groups {0, 3, 5}, {1, 2}, {4}, {6, 7, 8, 9}; orthogonal across groups.
        let groups = [0, 1, 1, 0, 2, 0, 3, 3, 3, 3];
        let m = block_matrix(&groups, 0.0);
        let s = spectrum(&m);
        let want = [4.0, 3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        for (l, w) in s.eigenvalues.iter().zip(want) {
            assert!((l - w).abs() < 1e-9, "{:?}", s.eigenvalues);
        }
        // (4+3+2+1)² / (16+9+4+1) = 100 / 30.
        assert!((s.effective_heads - 100.0 / 30.0).abs() < 1e-9);
        let c = duplicate_clusters(&m, 0.9);
        let heads: Vec<Vec<usize>> = c.iter().map(|c| c.heads.clone()).collect();
        assert_eq!(heads, vec![vec![0, 3, 5], vec![1, 2], vec![6, 7, 8, 9]]);
        assert!(c.iter().all(|c| c.min_similarity == 1.0));
    }

    #[test]
    fn uniform_correlation_has_closed_form_spectrum() {
        // C = (1 - r) I + r 11ᵀ: eigenvalues 1 + (h-1) r once and 1 - r (h-1 times).
        let (h, r) = (7usize, 0.3f32);
        let m = block_matrix(&(0..h).collect::<Vec<_>>(), r);
        let s = spectrum(&m);
        let r = f64::from(r);
        assert!((s.eigenvalues[0] - (1.0 + 6.0 * r)).abs() < 1e-6);
        for l in &s.eigenvalues[1..] {
            assert!((l - (1.0 - r)).abs() < 1e-6);
        }
        // Below the threshold: no clusters; at a threshold under r: everything is one cluster.
        assert!(duplicate_clusters(&m, 0.9).is_empty());
        assert_eq!(
            duplicate_clusters(&m, 0.25)[0].heads,
            (0..h).collect::<Vec<_>>()
        );
    }

    #[test]
    fn single_linkage_chains_and_reports_the_weakest_pair() {
        // 0-1 and 1-2 above the threshold, 0-2 below: one cluster {0, 1, 2} with min 0.8.
        let v = vec![
            1.0, 0.95, 0.8, 0.0, //
            0.95, 1.0, 0.92, 0.0, //
            0.8, 0.92, 1.0, 0.1, //
            0.0, 0.0, 0.1, 1.0,
        ];
        let m = SimilarityMatrix::new(4, v).unwrap();
        let c = duplicate_clusters(&m, 0.9);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].heads, vec![0, 1, 2]);
        assert_eq!(c[0].min_similarity, 0.8);
        assert_eq!(c[0].max_similarity, 0.95);
        assert_eq!(m.most_similar_pair(), Some((0, 1, 0.95)));
    }

    #[test]
    fn new_symmetrises_and_rejects_bad_input() {
        let m = SimilarityMatrix::new(2, vec![1.0, 0.5, 0.7, 1.0]).unwrap();
        assert_eq!(m.get(0, 1), 0.6);
        assert_eq!(m.get(1, 0), 0.6);
        assert!((m.asymmetry() - 0.2).abs() < 1e-6);
        assert!(SimilarityMatrix::new(2, vec![1.0; 3]).is_err());
        assert!(SimilarityMatrix::new(0, vec![]).is_err());
        assert!(SimilarityMatrix::new(2, vec![1.0, f32::NAN, 0.0, 1.0]).is_err());
        let g = SimilarityMatrix::from_gram_sum(2, &[4.0, 2.0, 2.0, 4.0], 4).unwrap();
        assert_eq!(g.values(), &[1.0, 0.5, 0.5, 1.0]);
        assert!(SimilarityMatrix::from_gram_sum(2, &[4.0; 4], 0).is_err());
    }

    proptest! {
        /// On random cosine matrices (PSD, trace h): eigenvalues sum to the trace, their squares
        /// to the Frobenius norm, are non-negative up to rounding, and the participation ratio
        /// equals tr(C)² / ‖C‖²_F and lies in [1, h].
        #[test]
        fn spectrum_invariants_on_random_cosine_matrices(h in 1usize..40, dim in 1usize..12,
                                                         seed in any::<u64>()) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let vecs: Vec<Vec<f64>> = (0..h)
                .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0) + 1e-3).collect())
                .collect();
            let m = cosine_matrix(&vecs);
            let s = spectrum(&m);
            let trace: f64 = (0..h).map(|i| f64::from(m.get(i, i))).sum();
            let frob: f64 = m.values().iter().map(|&v| f64::from(v).powi(2)).sum();
            let sum: f64 = s.eigenvalues.iter().sum();
            let sum_sq: f64 = s.eigenvalues.iter().map(|l| l * l).sum();
            prop_assert!((sum - trace).abs() < 1e-9 * h as f64);
            prop_assert!((sum_sq - frob).abs() < 1e-9 * frob.max(1.0));
            prop_assert!(s.eigenvalues.windows(2).all(|w| w[0] >= w[1]));
            prop_assert!(*s.eigenvalues.last().unwrap() > -1e-5);
            let pr = trace * trace / frob;
            prop_assert!((s.effective_heads - pr).abs() < 1e-9 * pr);
            prop_assert!(s.effective_heads >= 1.0 - 1e-9);
            prop_assert!(s.effective_heads <= h as f64 + 1e-9);
            // Rank <= dim: at most `dim` eigenvalues are clearly non-zero.
            let big = s.eigenvalues.iter().filter(|&&l| l > 1e-4).count();
            prop_assert!(big <= dim, "{big} > {dim}: {:?}", s.eigenvalues);
        }

        /// Planted groups of identical vectors always come back as exactly those clusters.
        #[test]
        fn planted_duplicates_are_found(groups in prop::collection::vec(0usize..6, 2..30),
                                        seed in any::<u64>()) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // One random direction per group in a high dimension (random directions are far
            // from parallel), shared by the group's heads.
            let dirs: Vec<Vec<f64>> = (0..6)
                .map(|_| (0..64).map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect();
            let vecs: Vec<Vec<f64>> = groups.iter().map(|&g| dirs[g].clone()).collect();
            let m = cosine_matrix(&vecs);
            let mut want: Vec<Vec<usize>> = (0..6)
                .map(|g| (0..groups.len()).filter(|&h| groups[h] == g).collect::<Vec<_>>())
                .filter(|hs| hs.len() >= 2)
                .collect();
            want.sort();
            let got: Vec<Vec<usize>> =
                duplicate_clusters(&m, 0.9).into_iter().map(|c| c.heads).collect();
            prop_assert_eq!(got, want);
            // Group sizes bound the rank: at most (distinct groups) non-zero eigenvalues.
            let distinct = {
                let mut g = groups.clone();
                g.sort();
                g.dedup();
                g.len()
            };
            let s = spectrum(&m);
            prop_assert!(s.eigenvalues.iter().filter(|&&l| l > 1e-4).count() <= distinct);
        }
    }
}
