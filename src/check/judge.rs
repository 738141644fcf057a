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
use crate::reference::tolerance::{ErrorModel, ENTROPY_TOLERANCE_CAP};
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

/// The entropy against per-row tolerances, under the module's policy: every row within its
/// tolerance, and the loosest tolerance at most [`ENTROPY_TOLERANCE_CAP`].
pub fn entropy(out: &[f32], reference: &[f32], tolerances: &[f64]) -> OutputCheck {
    let c = compare(out, reference);
    let loosest = tolerances.iter().fold(0f64, |a, &t| a.max(t));
    let mut errors = Vec::new();
    if let Err(e) = check_each(out, reference, tolerances) {
        errors.push(e);
    }
    if loosest > ENTROPY_TOLERANCE_CAP {
        errors.push(format!(
            "entropy tolerance {loosest:e} exceeds {ENTROPY_TOLERANCE_CAP:e}"
        ));
    }
    OutputCheck {
        name: "entropy",
        max_abs: c.max_abs,
        rel_l2: c.rel_l2,
        tolerance: Tolerance {
            max_abs: loosest,
            rel_l2: None,
        },
        verdict: if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        },
    }
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

/// The error model of one attention call: value bound `max|v| · max|gate|` (gate 1 when
/// absent) and the score bound of [`score_bound`].
pub fn error_model(i: &AttentionInputs<'_>) -> ErrorModel {
    ErrorModel {
        dtype: i.dtype,
        value_bound: max_finite_abs(i.v) * i.head_gates.map_or(1.0, max_finite_abs),
        head_dim: i.head_dim,
        seqlen_k: i.max_seqlen_k,
        score_bound: score_bound(
            i.q,
            i.k,
            i.head_dim,
            i.softmax_scale,
            i.alibi_slopes,
            i.max_seqlen_q,
            i.max_seqlen_k,
        ),
        softcap: i.softcap,
    }
}
