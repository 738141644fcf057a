//! How a kernel output is compared with the reference, and how much error is allowed.
//!
//! Every test uses [`compare`] then [`Comparison::check`]. The measures are the largest absolute
//! difference and the relative L2 error `‖out − ref‖₂ / ‖ref‖₂` over the finite reference
//! elements; non-finite values must agree exactly (a NaN where the reference is finite fails, and
//! `-inf` must meet `-inf`), so an output element the kernel never wrote (poisoned with NaN)
//! always fails.
//!
//! Tolerances are derived from the rounding of the dtypes involved, never fitted to make a test
//! pass. `ε = 2^-24` below is the unit roundoff of f32 and `u` that of the kernel's 16-bit type
//! ([`DType::unit_roundoff`]: `2^-11` for f16, `2^-8` for bf16). The kernel model: f32 MMA
//! accumulation of exactly representable 16-bit inputs, online softmax in f32 with `exp2`,
//! `P` rounded to the 16-bit type for the `P·V` MMA while the normaliser `l`
//! is summed in f32, O accumulated in f32 and rounded once to the output type; LSE and entropy
//! are written in f32.

use crate::common::dtype::DType;

/// Unit roundoff of f32 (round to nearest): `2^-24`.
pub const F32_UNIT_ROUNDOFF: f64 = 1.0 / 16_777_216.0;

/// Allowed max-abs error of O in units of `u · value_bound` (see [`Tolerance::attention_output`]).
///
/// Each term is a worst-case bound on one element, relative to `M = value_bound`; O is a convex
/// combination of value rows times a gate, so `|O| ≤ M`:
/// - 1 unit: rounding O to the output type, `|fl(x) − x| ≤ u·|x| ≤ u·M`;
/// - 1 unit: rounding the unnormalised probabilities `p̃_j ∈ (0, 1]` to the 16-bit type for the
///   `P·V` MMA: `|Σ p_j δ_j v_j| ≤ u·Σ p_j |v_j| ≤ u·M` with `|δ_j| ≤ u`;
/// - 1 unit for all f32 arithmetic, measured in the f16 `u` (bf16's `u` is 8x larger, so there
///   it over-covers): accumulating `P·V` and `l` over `n` keys costs at most `γ_n·M` each
///   (`γ_n ≈ n·ε`), and a score error `Δs` moves O by at most `2·max|Δs|·M`, with
///   `|Δs| ≤ γ_d·S` for the `d`-term dot product (`S` as in [`Tolerance::lse`]). For `n ≤ 2048`,
///   `d ≤ 256` and `S ≤ 8` that is `(2·2^-13 + 2·2^-16·8)·M = u_f16·M`; f16 subnormal `p̃`
///   (absolute error `2^-25`, at most `n·2^-25·M` in total since `l ≥ 1`) fit in the same unit.
///   Tests stay inside that domain (and far inside it at the small sizes an emulator runs).
pub const O_MAX_ABS_UNITS: f64 = 3.0;

/// Allowed relative L2 error of O, in units of `u`.
///
/// - 1 unit: rounding O to the output type is at most `u` relative on every element, hence on
///   the norm;
/// - 1 unit: the P-rounding error `Σ p_j δ_j v_j` is not bounded relative to `|O|` element-wise,
///   but for zero-mean random values (the worst case for this ratio: a mean only enlarges `|O|`)
///   with `δ_j` independent of them, its root mean square is `≤ u/√3 · rms(O)` (δ uniform on
///   `[−u, u]` has variance `u²/3`); the unit leaves a √3 margin for the fluctuation of that
///   estimate over a finite test;
/// - f32 arithmetic adds `O(n·ε)`, negligible next to `u` in the domain above.
///
/// Being statistical, this needs enough independent errors: outputs of at least ~100 elements
/// whose rows mix several keys (a single element can legitimately be off by far more than `u`
/// relative to itself when `O` cancels to near zero). `max_abs` has no such caveat.
pub const O_REL_L2_UNITS: f64 = 2.0;

/// What a comparison may show and still pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Largest allowed `|out − ref|` over finite reference elements.
    pub max_abs: f64,
    /// Largest allowed `‖out − ref‖₂ / ‖ref‖₂`; `None` where a relative norm says nothing
    /// (LSE and entropy can be near zero, so only their absolute error is bounded).
    pub rel_l2: Option<f64>,
}

impl Tolerance {
    /// Tolerance for the attention output O written in `dtype`, where `value_bound` bounds
    /// `|v| · |gate|` over all values and gates used (`max|v|` times `max|gate|`, gate 1 if
    /// absent). Derivation: [`O_MAX_ABS_UNITS`], [`O_REL_L2_UNITS`].
    pub fn attention_output(dtype: DType, value_bound: f64) -> Self {
        let u = dtype.unit_roundoff();
        Tolerance {
            max_abs: O_MAX_ABS_UNITS * u * value_bound,
            rel_l2: Some(O_REL_L2_UNITS * u),
        }
    }

    /// Absolute tolerance for the f32 LSE, for head dim `d`, at most `n` keys per row, and a
    /// score bound `S` (see [`score_bound`]): `S ≥ scale·Σ_c |q_c k_c| + |ALiBi bias|` for every
    /// score. No softcap (see [`ErrorModel`] for it). LSE is 1-Lipschitz in the max-norm of the
    /// scores, so it inherits each score's error directly (all terms in units of `ε`):
    /// - `d·S`: the `d`-term f32 dot product (`γ_d` times `Σ|q_c k_c|`, scaled);
    /// - `4·S`: the scale and `log2 e` fold and the ALiBi add, each a rounding relative to `|s|`;
    /// - `4`: `ex2.approx` (about 2 ulp relative in each `p̃`, so in `l`);
    /// - `n`: summing `l` over `n` keys (`γ_n` relative in `l`, absolute in `ln l`);
    /// - `4·(1 + log2 n)`: `lg2.approx` (about 2 ulp of `log2 l ≤ log2 n`, plus its absolute
    ///   error near 1) and the `ln 2` conversion;
    /// - `S + ln n`: the final `m + ln l`, one rounding of a value of at most that size.
    ///
    /// Total: `ε·((d + 5)·S + n + ln n + 4·log2 n + 8)`.
    pub fn lse(head_dim: usize, seqlen_k: usize, score_bound: f64) -> Self {
        let (d, n, s) = (head_dim as f64, seqlen_k.max(1) as f64, score_bound);
        Tolerance {
            max_abs: F32_UNIT_ROUNDOFF * ((d + 5.0) * s + n + n.ln() + 4.0 * n.log2() + 8.0),
            rel_l2: None,
        }
    }
}

/// Documented maximum relative error of PTX `tanh.approx.f32` (PTX ISA, "tanh"), which the
/// kernel's softcap uses. It is far coarser than f32 rounding, so with a softcap it dominates
/// the score error and gets its own term in [`ErrorModel`]. (Hardware measures nearer
/// `2^-16.5`, but the documented bound is the one we can rely on.)
pub const TANH_APPROX_REL_ERROR: f64 = 1.0 / 2048.0;

/// Everything the derived tolerances of one forward call depend on, including the softcap.
/// Without a softcap its O and LSE tolerances equal [`Tolerance::attention_output`] and
/// [`Tolerance::lse`]; the entropy's tolerance is per row, from the reference's
/// [`EntropyTerms`] ([`ErrorModel::entropy_rows`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorModel {
    /// The type of q, k, v, of `P` in the `P·V` MMA, and of O.
    pub dtype: DType,
    /// Bound on `|v|·|gate|`: `max|v|` times `max|gate|` (1 without gates).
    pub value_bound: f64,
    pub head_dim: usize,
    /// The longest key sequence of any item.
    pub seqlen_k: usize,
    /// See [`score_bound`].
    pub score_bound: f64,
    /// The call's softcap `c`, if any.
    pub softcap: Option<f32>,
}

impl ErrorModel {
    /// Extra absolute error of every score from the softcap's `tanh.approx`:
    /// `|c·tanh(s/c)| ≤ min(c, |s|)`, so at most `2^-11 · min(c, S)`; 0 without a softcap.
    pub fn softcap_score_error(&self) -> f64 {
        self.softcap.map_or(0.0, |c| {
            TANH_APPROX_REL_ERROR * f64::from(c).abs().min(self.score_bound)
        })
    }

    /// Tolerance for O. An extra score error `Δ` moves O by `Σ_j p_j (Δs_j − E_p Δs) v_j`, at
    /// most `2Δ·M` per element and, for zero-mean random values, at most `2Δ` relative in rms.
    pub fn output(&self) -> Tolerance {
        let base = Tolerance::attention_output(self.dtype, self.value_bound);
        let extra = 2.0 * self.softcap_score_error();
        Tolerance {
            max_abs: base.max_abs + extra * self.value_bound,
            rel_l2: base.rel_l2.map(|r| r + extra),
        }
    }

    /// Tolerance for the LSE: 1-Lipschitz in the scores, so `+Δ`.
    pub fn lse(&self) -> Tolerance {
        let base = Tolerance::lse(self.head_dim, self.seqlen_k, self.score_bound);
        Tolerance {
            max_abs: base.max_abs + self.softcap_score_error(),
            ..base
        }
    }

    /// Absolute tolerance of the f32 entropy of each row, from that row's [`EntropyTerms`]
    /// (the reference exports them), so that a wrong entropy cannot hide behind a worst-case
    /// bound. All terms are in units of `ε`, first order in it (second-order terms are
    /// `O(ε²·S²)`, below 1e-12 here). The kernel (softmax.cuh) computes, in log2 units relative
    /// to the running max, `H = ln l − e / l` with `l = Σ p̃_j`, `e = Σ p̃_j t_j`, `t_j = s_j − m`,
    /// rescaling `l` and `e` on every new maximum:
    /// - **score errors.** Each kernel score is off by `|Δs_j| ≤ ε·((d + 2)·A_j + 2·S_row)`:
    ///   the `d`-term f32 dot product and the scale / `log2 e` / ALiBi roundings relative to
    ///   `A_j = scale·Σ_c |q_c k_c| + |bias_j|`, and the `x·mul − m·mul` FMA relative to the
    ///   row's largest `A` (`S_row`). As `∂H/∂s_j = −p_j (s_j − E_p s)`, the error is at most
    ///   `Σ_j p_j |s_j − E_p s|·|Δs_j| ≤ ε·((d + 2)·W + 2·S_row·D)` with
    ///   `D = Σ p_j |s_j − E_p s|` and `W = Σ p_j |s_j − E_p s|·A_j`;
    /// - **`ex2.approx`** (about 2 ulp relative, taken as `4ε`) perturbs each `p̃_j` by a
    ///   relative `δ_j`, which moves `ln l − e/l` by `Σ p_j δ_j (1 − t_j + E_p t)`: `4·(1 + D)`;
    /// - **accumulation** of `l` and `e` over `n` keys with up to `n` rescales: `l` gains a
    ///   relative `γ_n` (`n`) and each rescale's rounded `α` a relative `4ε` on `l` alone
    ///   (`e / l` sees `α` cancel): `5n`; `e` gains `(2n + 3)·ε` relative to
    ///   `Σ p̃_j |t_j| = l·G` (products, sums, the rescale terms `(m − m')·l` whose size is part
    ///   of the same sum, and the final division and subtraction), `G = E_p[m − s]`;
    /// - **`lg2.approx`** and the `ln 2` conversion: `ln n + 4·log2 n + 8`, as for the LSE;
    /// - **softcap**: `tanh.approx`'s relative error `2^-11` adds up to `2^-11·|c·tanh(x_j/c)|`
    ///   to score `j` (its error in `x_j` is a score error above, damped by `tanh' ≤ 1`), which
    ///   moves `H` by at most `2^-11·Σ p_j |s_j − E_p s|·|c·tanh(x_j/c)|` = `2^-11·W_c`.
    ///
    /// A fully masked row (all terms 0) gets the constant terms only; the kernel writes exact 0.
    pub fn entropy_row(&self, t: &EntropyTerms) -> f64 {
        let d = self.head_dim as f64;
        let n = t.keys.max(1) as f64;
        let cap = if self.softcap.is_some() {
            TANH_APPROX_REL_ERROR * t.softcap_spread
        } else {
            0.0
        };
        F32_UNIT_ROUNDOFF
            * ((d + 2.0) * t.weighted_spread
                + (2.0 * t.max_score_magnitude + 4.0) * t.spread
                + 4.0
                + (2.0 * n + 3.0) * t.gap
                + 5.0 * n
                + n.ln()
                + 4.0 * n.log2()
                + 8.0)
            + cap
    }

    /// [`ErrorModel::entropy_row`] of every row.
    pub fn entropy_rows(&self, terms: &[EntropyTerms]) -> Vec<f64> {
        terms.iter().map(|t| self.entropy_row(t)).collect()
    }
}

/// The error model of the backward (dQ, dK, dV; kernels/common/flash_bwd_cta.cuh), from which
/// the reference ([`crate::reference::backward`]) derives a tolerance for every gradient
/// element. First order in the unit roundoffs (`u` of the 16-bit type, `ε = 2^-24`); every term
/// is a worst case on the element, written against magnitudes the reference computes in f64
/// (`P`, `dP = dO V^T`, `D = rowsum(dO ∘ O)`, `dS = P ∘ (dP − D)`):
/// - **P** is recomputed from the forward's f32 LSE: relative error
///   [`BwdErrorModel::p_rel_error`] = the LSE's tolerance ([`Tolerance::lse`], one score row's
///   worth) + the `d`-term score dot product and the scale / `log2 e` fold (`(d + 2)·ε·S`) +
///   `ex2.approx` (`4ε`);
/// - **D** uses the forward's O, itself within the forward's tolerance of the true O
///   (`3u·max|v|`, [`O_MAX_ABS_UNITS`]): `|ΔD_i| ≤ 3u·max|v|·Σ_c |dO_ic|`; its `d`-term f32 sum
///   and `dP`'s add `d·ε·Σ_c |dO_ic|·|V_jc|` to `dP − D`;
/// - so every `dS_ij` is off by at most
///   `E_ij = P_ij·(ΔD_i + δP·|dP_ij − D_i| + d·ε·|dO_i|·|V_j|) + u·|dS_ij|`, the last term
///   its rounding to the 16-bit type for the `dS^T Q` and `dS K` MMAs;
/// - `dK_j = scale·Σ_i dS_ij Q_i` is off by `scale·Σ_i E_ij |Q_i|` plus `(u + γ)·scale·Σ_i
///   |dS_ij||Q_i|` (its rounding to the output type, bounded by the magnitude sum, and `γ` the
///   f32 accumulation over the query rows); dQ the same with K over the keys (the f32 atomics
///   add in any order, within the same `γ`);
/// - `dV_j = Σ_i P_ij dO_i` is off by `(2u + δP + γ)·Σ_i P_ij |dO_i|`: P rounded to the 16-bit
///   type for the MMA, P's own error, the output rounding and the accumulation.
/// - **underflow**: a 16-bit rounding of a value below the smallest normal is off by up to
///   `η` ([`BwdErrorModel::underflow`]) rather than `u·|x|`: `E_ij` gains `η`, dV gains
///   `η·|g|·Σ_i |dO_i|` (P's rounding), and every gradient `η` for its own rounding;
/// - **accumulation**: `γ = (n + 2)·ε` for `n` = the longest query or key sequence; GQA sums
///   each term over the group's query heads;
/// - **softcap** `c`: the score is `c·tanh(scale·q·k / c)`, so `dS` is multiplied by `1 − t²`
///   (`t` the tanh), which `tanh.approx` gets wrong by up to
///   [`BwdErrorModel::softcap_grad_error`]; that adds `2^-10·|P ∘ (dP − D)|` to `E_ij`, and the
///   other terms of `E_ij` are scaled by `1 − t²` with it; the softcap's score error joins
///   `δP` ([`ErrorModel::softcap_score_error`]);
/// - **head gates** `g`: `dP = g·dO V^T` and `dV = g·P^T dO`, so the terms in `dO` scale by
///   `|g|` (the value bound of `ΔD` is `max|v|·max|g|`, as in the forward);
///   `d(gate) = Σ_ij P_ij (dO_i · V_j)` is off by `(δP + d·ε + γ_N)·Σ_ij P_ij |dO_i · V_j|`,
///   `γ_N = (N + 64)·ε` over its `N = sq·sk` f32 terms (a thread's serial sum, the warp's
///   shuffles and the atomics across warps and CTAs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BwdErrorModel {
    /// The type of q, k, v, o, dO and the gradients.
    pub dtype: DType,
    /// `max|v|`.
    pub value_bound: f64,
    pub head_dim: usize,
    /// The longest query and key sequences of any item.
    pub seqlen_q: usize,
    pub seqlen_k: usize,
    /// See [`score_bound`].
    pub score_bound: f64,
    /// The call's softcap `c`, if any.
    pub softcap: Option<f32>,
}

impl BwdErrorModel {
    /// `u` of the 16-bit type.
    pub fn u(&self) -> f64 {
        self.dtype.unit_roundoff()
    }

    /// Bound on `|O_kernel − O|` per element (the forward's tolerance).
    pub fn o_error(&self) -> f64 {
        Tolerance::attention_output(self.dtype, self.value_bound).max_abs
    }

    /// Relative error of each recomputed `P_ij`.
    pub fn p_rel_error(&self) -> f64 {
        let forward = ErrorModel {
            dtype: self.dtype,
            value_bound: self.value_bound,
            head_dim: self.head_dim,
            seqlen_k: self.seqlen_k,
            score_bound: self.score_bound,
            softcap: self.softcap,
        };
        // The forward's LSE error (softcap included) plus this recomputation's own score error
        // (the same again: the softcap's tanh.approx once more, and the dot product).
        forward.lse().max_abs
            + forward.softcap_score_error()
            + F32_UNIT_ROUNDOFF * ((self.head_dim as f64 + 2.0) * self.score_bound + 4.0)
    }

    /// Absolute error of the softcap's derivative `1 - t²` (`tanh.approx` relative error on
    /// `|t| <= 1`: `|Δ(t²)| <= 2·2^-11`); 0 without a softcap.
    pub fn softcap_grad_error(&self) -> f64 {
        if self.softcap.is_some() {
            2.0 * TANH_APPROX_REL_ERROR
        } else {
            0.0
        }
    }

    /// Absolute rounding error of a value below the 16-bit type's smallest normal (half its
    /// subnormal spacing): `2^-25` for f16, `2^-134` for bf16. The backward rounds normalised
    /// probabilities `P`, `dS` and the gradients themselves to the 16-bit type, all of which can
    /// be that small (a far key under ALiBi), where the relative bound `u·|x|` does not hold:
    /// each such rounding gets `η` on top of its `u` term.
    pub fn underflow(&self) -> f64 {
        match self.dtype {
            DType::F16 => (-25f64).exp2(),
            DType::Bf16 => (-134f64).exp2(),
        }
    }

    /// `γ` of the f32 accumulations.
    pub fn accumulation(&self) -> f64 {
        F32_UNIT_ROUNDOFF * (self.seqlen_q.max(self.seqlen_k) as f64 + 2.0)
    }
}

/// Largest per-row entropy tolerance (nats) a checked case may have: a derived tolerance above
/// it would be too loose to catch a wrong entropy, so the checkers fail such a case instead.
pub const ENTROPY_TOLERANCE_CAP: f64 = 1e-2;

/// Largest softcap the random-case generators combine with an entropy request. The softcap term
/// of [`ErrorModel::entropy_row`] is `2^-11·W_c ≤ 2^-11·c·D` (`D` the row's score spread), which
/// alone reached the cap at `c = 21.9, D ≈ 1` (a d256 varlen causal case whose entropy was right
/// to 1.8e-6): a derived tolerance that loose cannot tell a wrong entropy from a right one, so
/// the generators keep `c` at most this with entropy on (larger softcaps are still drawn, and
/// checked on O and LSE, without it).
pub const ENTROPY_SOFTCAP_MAX: f32 = 8.0;

/// The moments of one row's attention distribution `p` (over its visible keys) that bound a
/// kernel's entropy error ([`ErrorModel::entropy_row`]); the reference computes them in f64.
/// Scores `s` are the final ones (scaled, softcapped, with ALiBi).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EntropyTerms {
    /// `D = Σ_j p_j |s_j − E_p s|`.
    pub spread: f64,
    /// `W = Σ_j p_j |s_j − E_p s|·A_j`, `A_j = scale·Σ_c |q_c k_c| + |ALiBi bias_j|`.
    pub weighted_spread: f64,
    /// `W_c = Σ_j p_j |s_j − E_p s|·|c·tanh(x_j / c)|` for a softcap `c` (`x_j` the scaled
    /// dot product), else 0.
    pub softcap_spread: f64,
    /// `G = E_p[m − s]`, `m` the row's largest score.
    pub gap: f64,
    /// `S_row = max_j A_j` over the visible keys.
    pub max_score_magnitude: f64,
    /// Visible keys of the row.
    pub keys: usize,
}

/// A bound `S` on `scale·Σ_c |q_c k_c| + |ALiBi bias|` over every (query, key) pair, from the
/// largest magnitudes: `scale·d·max|q|·max|k| + max|slope|·(max_sq + max_sk)` (the ALiBi
/// distance `|i + sk − sq − j|` is below `sq + sk`). Softcap only shrinks scores, but the dot
/// product's error arises before it, so it does not tighten the bound.
pub fn score_bound(
    q: &[f32],
    k: &[f32],
    head_dim: usize,
    scale: f32,
    alibi_slopes: Option<&[f32]>,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
) -> f64 {
    let max_abs = |xs: &[f32]| xs.iter().fold(0f64, |a, &x| a.max(f64::from(x).abs()));
    let dot = f64::from(scale).abs() * head_dim as f64 * max_abs(q) * max_abs(k);
    let bias = alibi_slopes.map_or(0.0, |a| max_abs(a) * (max_seqlen_q + max_seqlen_k) as f64);
    dot + bias
}

/// A non-finite disagreement between output and reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mismatch {
    pub index: usize,
    pub out: f32,
    pub reference: f32,
}

/// Error measures of one output buffer against its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// `(out.len(), reference.len())` when they differ (then nothing else was measured).
    pub len_mismatch: Option<(usize, usize)>,
    /// Largest `|out − ref|` over elements where both are finite.
    pub max_abs: f64,
    /// Index of `max_abs` (`None` if no element was finite in both).
    pub worst_index: Option<usize>,
    /// `‖out − ref‖₂ / ‖ref‖₂` over elements where both are finite; 0 if both norms are 0 and
    /// infinite if only the difference is non-zero.
    pub rel_l2: f64,
    /// First element where the non-finite values do not agree: NaN (or ±inf) in `out` where the
    /// reference is finite, an infinity not matched by the same infinity, or a NaN reference.
    pub first_nonfinite_mismatch: Option<Mismatch>,
    /// How many elements disagree that way.
    pub nonfinite_mismatches: usize,
}

/// Measures `out` against `reference` element by element (both in the same layout).
pub fn compare(out: &[f32], reference: &[f32]) -> Comparison {
    let mut c = Comparison {
        len_mismatch: None,
        max_abs: 0.0,
        worst_index: None,
        rel_l2: 0.0,
        first_nonfinite_mismatch: None,
        nonfinite_mismatches: 0,
    };
    if out.len() != reference.len() {
        c.len_mismatch = Some((out.len(), reference.len()));
        return c;
    }
    let (mut diff_sq, mut ref_sq) = (0f64, 0f64);
    for (index, (&o, &r)) in out.iter().zip(reference).enumerate() {
        if o.is_finite() && r.is_finite() {
            let diff = (f64::from(o) - f64::from(r)).abs();
            if c.worst_index.is_none() || diff > c.max_abs {
                c.max_abs = diff;
                c.worst_index = Some(index);
            }
            diff_sq += diff * diff;
            ref_sq += f64::from(r) * f64::from(r);
        } else if r.is_infinite() && o == r {
            // Matching infinities (e.g. the -inf LSE of a fully masked row) are exact.
        } else {
            // A NaN reference also lands here: the reference never legitimately yields NaN.
            c.nonfinite_mismatches += 1;
            c.first_nonfinite_mismatch.get_or_insert(Mismatch {
                index,
                out: o,
                reference: r,
            });
        }
    }
    c.rel_l2 = if diff_sq == 0.0 {
        0.0
    } else {
        (diff_sq / ref_sq).sqrt() // +inf when ref_sq is 0
    };
    c
}

impl Comparison {
    /// The verdict against `tol`, naming the offending element on failure.
    pub fn check(&self, tol: &Tolerance) -> Result<(), String> {
        if let Some((o, r)) = self.len_mismatch {
            return Err(format!("length mismatch: output {o}, reference {r}"));
        }
        if let Some(m) = self.first_nonfinite_mismatch {
            return Err(format!(
                "element {}: out {} vs ref {} ({} non-finite mismatches)",
                m.index, m.out, m.reference, self.nonfinite_mismatches
            ));
        }
        if self.max_abs > tol.max_abs {
            return Err(format!(
                "element {}: |out - ref| = {:e} > max_abs {:e} (rel_l2 {:e})",
                self.worst_index.unwrap_or(0),
                self.max_abs,
                tol.max_abs,
                self.rel_l2
            ));
        }
        if let Some(limit) = tol.rel_l2 {
            if self.rel_l2 > limit {
                return Err(format!(
                    "rel_l2 {:e} > {:e} (worst element {}: |diff| {:e})",
                    self.rel_l2,
                    limit,
                    self.worst_index.unwrap_or(0),
                    self.max_abs
                ));
            }
        }
        Ok(())
    }
}

/// [`compare`] with a tolerance per element (`tolerances[i]` bounds `|out[i] − reference[i]|`),
/// for outputs such as the entropy whose allowed error depends on each row's data. Non-finite
/// values must agree exactly, as for [`Comparison::check`]. `Ok` carries the largest
/// `|out − ref| / tolerance`.
pub fn check_each(out: &[f32], reference: &[f32], tolerances: &[f64]) -> Result<f64, String> {
    if tolerances.len() != reference.len() {
        return Err(format!(
            "{} tolerances for {} reference elements",
            tolerances.len(),
            reference.len()
        ));
    }
    let unbounded = Tolerance {
        max_abs: f64::INFINITY,
        rel_l2: None,
    };
    compare(out, reference).check(&unbounded)?;
    let mut worst = 0f64;
    for (i, ((&o, &r), &tol)) in out.iter().zip(reference).zip(tolerances).enumerate() {
        if !(o.is_finite() && r.is_finite()) {
            continue; // matching infinities, checked above
        }
        let diff = (f64::from(o) - f64::from(r)).abs();
        if diff > tol {
            return Err(format!(
                "element {i}: |out - ref| = {diff:e} > its tolerance {tol:e} (out {o}, ref {r})"
            ));
        }
        worst = worst.max(if tol > 0.0 { diff / tol } else { 0.0 });
    }
    Ok(worst)
}

#[cfg(test)]
mod tests;
