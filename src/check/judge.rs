//! The one judge of kernel outputs: every check (forward, paged decode, and any other op whose
//! outputs are compared with the candle reference) measures each output against the reference
//! with [`output`] / [`entropy`] and collects the verdicts, with the emulator's findings, in a
//! [`Judgement`]. Tolerances come from [`crate::reference::tolerance`] only.
//!
//! Entropy policy (one for every op): each row is held to its own derived tolerance
//! ([`ErrorModel::entropy_row`]) **and** the case fails when its loosest row tolerance exceeds
//! [`ENTROPY_TOLERANCE_CAP`]. The per-row check is what makes a wrong entropy fail; the cap
//! makes a case whose derived bound became too loose to tell right from wrong fail loudly
//! instead of passing on a bound that says nothing. Both are reported, so this is the stricter
//! of the two policies the forward and decode checks had (the forward skipped the row check
//! once the cap was exceeded, the decode check did both); it is sound because the random-case
//! generators keep softcaps at most [`ENTROPY_SOFTCAP_MAX`] whenever entropy is requested, the
//! only input that drives the derived bound past the cap at the sizes checked.
//!
//! [`ENTROPY_SOFTCAP_MAX`]: crate::reference::tolerance::ENTROPY_SOFTCAP_MAX

use crate::common::dtype::DType;
use crate::reference::tolerance::{BwdErrorModel, ErrorModel, ENTROPY_TOLERANCE_CAP};
use crate::reference::{check_each, compare, score_bound, ReferenceOutputs, Tolerance};

/// Errors of one checked output, with the tolerance it was held to (for the entropy, the
/// loosest row's).
#[derive(Debug, Clone)]
pub struct OutputCheck {
    pub name: &'static str,
    pub max_abs: f64,
    pub rel_l2: f64,
    pub tolerance: Tolerance,
    pub verdict: std::result::Result<(), String>,
}

/// The outcome of one checked case: every output's check and the emulator's findings.
#[derive(Debug, Clone, Default)]
pub struct Judgement {
    pub outputs: Vec<OutputCheck>,
    /// Emulator findings (memory, races, hazards) of every launch; empty on a GPU.
    pub findings: Vec<String>,
}

impl Judgement {
    /// No finding and every output within its tolerance.
    pub fn passed(&self) -> bool {
        self.findings.is_empty() && self.outputs.iter().all(|o| o.verdict.is_ok())
    }

    /// One line per failure (findings first), for test messages and the CLI.
    pub fn failures(&self) -> Vec<String> {
        let mut f = self.findings.clone();
        for o in &self.outputs {
            if let Err(e) = &o.verdict {
                f.push(format!("{}: {e}", o.name));
            }
        }
        f
    }

    /// The check of output `name`, if it was produced.
    pub fn output(&self, name: &str) -> Option<&OutputCheck> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

/// `out` against `reference` under one tolerance for every element.
pub fn output(
    name: &'static str,
    out: &[f32],
    reference: &[f32],
    tolerance: Tolerance,
) -> OutputCheck {
    let c = compare(out, reference);
    OutputCheck {
        name,
        max_abs: c.max_abs,
        rel_l2: c.rel_l2,
        tolerance,
        verdict: c.check(&tolerance),
    }
}

/// `out` against `reference` with a tolerance per element (the backward's gradients, the
/// entropy's rows); the reported tolerance is the loosest.
pub fn per_element(
    name: &'static str,
    out: &[f32],
    reference: &[f32],
    tolerances: &[f64],
) -> OutputCheck {
    let loosest = Tolerance {
        max_abs: tolerances.iter().fold(0f64, |a, &t| a.max(t)),
        rel_l2: None,
    };
    OutputCheck {
        verdict: check_each(out, reference, tolerances).map(|_| ()),
        ..output(name, out, reference, loosest)
    }
}

/// The entropy against per-row tolerances, under the module's policy: every row within its
/// tolerance, and the loosest tolerance at most [`ENTROPY_TOLERANCE_CAP`].
pub fn entropy(out: &[f32], reference: &[f32], tolerances: &[f64]) -> OutputCheck {
    let mut check = per_element("entropy", out, reference, tolerances);
    let loosest = check.tolerance.max_abs;
    let mut errors: Vec<String> = check.verdict.err().into_iter().collect();
    if loosest > ENTROPY_TOLERANCE_CAP {
        errors.push(format!(
            "entropy tolerance {loosest:e} exceeds {ENTROPY_TOLERANCE_CAP:e}"
        ));
    }
    check.verdict = if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    };
    check
}

/// What an attention kernel wrote, as f32 in the reference's layouts (O `[rows, hq, d]`,
/// LSE / entropy as [`ReferenceOutputs`] holds them); `None` for an output not requested.
#[derive(Debug, Clone, Copy)]
pub struct AttentionOutputs<'a> {
    pub o: &'a [f32],
    pub lse: Option<&'a [f32]>,
    pub entropy: Option<&'a [f32]>,
}

/// Checks O, LSE and entropy (those produced) of one attention call against the reference,
/// under `model`'s tolerances.
pub fn attention(
    model: &ErrorModel,
    out: AttentionOutputs<'_>,
    reference: &ReferenceOutputs,
) -> Vec<OutputCheck> {
    let mut checks = vec![output("o", out.o, &reference.o, model.output())];
    if let Some(lse) = out.lse {
        checks.push(output("lse", lse, &reference.lse, model.lse()));
    }
    if let Some(h) = out.entropy {
        checks.push(entropy(
            h,
            &reference.entropy,
            &model.entropy_rows(&reference.entropy_terms),
        ));
    }
    checks
}

/// The inputs an attention call's [`ErrorModel`] is derived from (f32 values as the kernel
/// read them; non-finite values, e.g. NaN-filled unused cache slots, are ignored).
#[derive(Debug, Clone, Copy)]
pub struct AttentionInputs<'a> {
    pub dtype: DType,
    pub head_dim: usize,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub head_gates: Option<&'a [f32]>,
    pub alibi_slopes: Option<&'a [f32]>,
    pub softmax_scale: f32,
    pub softcap: Option<f32>,
    /// Longest query run of an item, and longest key sequence.
    pub max_seqlen_q: usize,
    pub max_seqlen_k: usize,
}

/// Largest finite magnitude of `xs` (0 when there is none).
fn max_finite_abs(xs: &[f32]) -> f64 {
    xs.iter().fold(0f64, |a, &x| {
        if x.is_finite() {
            a.max(f64::from(x).abs())
        } else {
            a
        }
    })
}

/// `max|v| · max|gate|` (gate 1 when absent): the bound both error models take for values.
fn value_bound(i: &AttentionInputs<'_>) -> f64 {
    max_finite_abs(i.v) * i.head_gates.map_or(1.0, max_finite_abs)
}

fn inputs_score_bound(i: &AttentionInputs<'_>) -> f64 {
    score_bound(
        i.q,
        i.k,
        i.head_dim,
        i.softmax_scale,
        i.alibi_slopes,
        i.max_seqlen_q,
        i.max_seqlen_k,
    )
}

/// The error model of one attention call: value bound `max|v| · max|gate|` (gate 1 when
/// absent) and the score bound of [`score_bound`].
pub fn error_model(i: &AttentionInputs<'_>) -> ErrorModel {
    ErrorModel {
        dtype: i.dtype,
        value_bound: value_bound(i),
        head_dim: i.head_dim,
        seqlen_k: i.max_seqlen_k,
        score_bound: inputs_score_bound(i),
        softcap: i.softcap,
    }
}

/// The error model of the backward of one attention call (the same bounds as
/// [`error_model`], and the query length dK / dV sum over).
pub fn backward_error_model(i: &AttentionInputs<'_>) -> BwdErrorModel {
    BwdErrorModel {
        dtype: i.dtype,
        value_bound: value_bound(i),
        head_dim: i.head_dim,
        seqlen_q: i.max_seqlen_q,
        seqlen_k: i.max_seqlen_k,
        score_bound: inputs_score_bound(i),
        softcap: i.softcap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_rows_are_each_held_to_their_own_tolerance_and_the_loosest_to_the_cap() {
        let reference = [0.5f32, 1.0, 2.0];
        // Every row within its tolerance and the loosest below the cap: pass.
        let tight = [1e-6, 1e-5, 1e-4];
        let out = [0.5f32 + 5e-7, 1.0 - 5e-6, 2.0];
        let c = entropy(&out, &reference, &tight);
        assert!(c.verdict.is_ok(), "{:?}", c.verdict);
        assert_eq!(c.tolerance.max_abs, 1e-4);
        // One row off by more than its own tolerance (though within the loosest): fail.
        let off = [0.5f32 + 5e-5, 1.0, 2.0];
        let c = entropy(&off, &reference, &tight);
        assert!(
            c.verdict.as_ref().unwrap_err().contains("element 0"),
            "{c:?}"
        );
        // Right values under a bound looser than the cap: fail, naming the cap.
        let loose = [1e-6, 2.0 * ENTROPY_TOLERANCE_CAP, 1e-6];
        let c = entropy(&reference, &reference, &loose);
        assert!(c.verdict.as_ref().unwrap_err().contains("exceeds"), "{c:?}");
        // Both at once: both reported.
        let both = entropy(&off, &reference, &[1e-6, 2.0 * ENTROPY_TOLERANCE_CAP, 1e-6]);
        let msg = both.verdict.unwrap_err();
        assert!(
            msg.contains("element 0") && msg.contains("exceeds"),
            "{msg}"
        );
        // An unwritten (poisoned) row fails whatever its tolerance.
        let c = entropy(&[f32::NAN, 1.0, 2.0], &reference, &tight);
        assert!(c.verdict.is_err());
    }

    #[test]
    fn per_element_holds_each_element_to_its_own_tolerance() {
        let reference = [1.0f32, -2.0, 0.5];
        let tols = [1e-3, 1e-1, 1e-4];
        let c = per_element("dq", &[1.0005, -2.05, 0.5], &reference, &tols);
        assert!(c.verdict.is_ok(), "{:?}", c.verdict);
        assert_eq!(c.tolerance.max_abs, 1e-1);
        // Within the loosest tolerance but not its own: fail.
        let c = per_element("dq", &[1.0, -2.0, 0.501], &reference, &tols);
        assert!(c.verdict.unwrap_err().contains("element 2"));
        // An unwritten (NaN-poisoned) gradient element fails.
        let c = per_element("dk", &[f32::NAN, -2.0, 0.5], &reference, &tols);
        assert!(c.verdict.is_err());
    }

    #[test]
    fn a_judgement_passes_only_without_findings_and_failed_outputs() {
        let tol = Tolerance {
            max_abs: 1e-3,
            rel_l2: None,
        };
        let ok = output("o", &[1.0, 2.0], &[1.0, 2.0005], tol);
        let bad = output("lse", &[1.0, 2.1], &[1.0, 2.0], tol);
        let mut j = Judgement {
            outputs: vec![ok.clone()],
            findings: Vec::new(),
        };
        assert!(j.passed() && j.failures().is_empty());
        assert!(j.output("o").is_some() && j.output("lse").is_none());
        j.findings.push("race".into());
        assert!(!j.passed());
        assert_eq!(j.failures(), vec!["race".to_string()]);
        let j = Judgement {
            outputs: vec![ok, bad],
            findings: Vec::new(),
        };
        assert!(!j.passed());
        assert!(j.failures()[0].starts_with("lse: "), "{:?}", j.failures());
    }
}
