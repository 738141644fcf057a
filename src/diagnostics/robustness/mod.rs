//! Per-head robustness under adversarial perturbation (issue 22, item 2): for each head, the
//! largest singular value of the Jacobian of its output O (`[sq, d]`) with respect to its inputs
//! (Q, K, V of the sequence, only K / V, or only Q: [`Wrt`]), by a block Krylov iteration on
//! `J^T J` that alternates the fused JVP kernel (`J v`, [`crate::ops::jvp`]) and the backward
//! kernels (`J^T u`, [`crate::ops::backward`]) on any backend (the PTX emulator or a GPU); the
//! mean amplification `|J r|` of random unit directions `r`; their ratio (how much worse the
//! worst direction is than a typical one); and the non-linear change of the head's output under
//! the adversarial perturbation of size epsilon (the top right singular vector scaled to epsilon
//! times the norm of the selected inputs, both signs, the worse kept), through the real forward
//! kernel. The "robustness contribution" of a head is the same top singular value measured on
//! the combined output of all heads (the concatenation, every head's gate 1) minus the one with
//! that head gated off (gate 0): positive when the head makes the layer less stable; each
//! gated-off configuration gets its random gain and epsilon curve too.
//!
//! Cost: every head is measured at once (`stack.rs`: the heads side by side in one launch of
//! each kernel, three vectors per head in the batch), so an iteration is one JVP
//! launch and one backward for the whole layer, and a head that has converged leaves the launch.
//! The combined output needs no iteration of its own: a query head reads only its KV head, so
//! the layer's Jacobian is block diagonal over KV groups (over heads without GQA). Its top
//! singular value is the largest of the blocks', the one with head `h` gated off the largest of
//! the blocks with `h`'s removed (without GQA) or replaced by its group with `h` gated off (with
//! GQA, measured as a unit of its own); its random gain is measured with the blocks' random
//! directions side by side (one direction over the whole layer); its epsilon curve moves the
//! worst block's inputs and runs the real forward of that block (every other head's output is
//! unchanged bit for bit).
//!
//! Numerics: the kernels read 16-bit tangents, so every tangent and cotangent is uploaded with
//! unit RMS per element and the result scaled back: no tangent underflows. The estimate is
//! sqrt(|J^T J u|) for the unit Ritz vector u (a lower bound of sigma, tighter than |J u|). The
//! iteration stops when, on two iterations in a row, both the estimate's remaining relative
//! error extrapolated from its last two changes and the relative gap between the two lower
//! bounds (zero only at a singular vector) are at most [`Settings::rel_tol`]; one that does not
//! within [`Settings::max_iters`] is reported as not converged with its last estimate
//! ([`SpectralEstimate::converged`]), never an error.

use std::str::FromStr;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::backend::emulator::EmulatorBackend;
use crate::backend::Backend;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{Dim, Error, Result, TensorName};
use crate::common::options::AttnOptions;
use crate::common::target::KernelTarget;
use crate::ops::forward::problem::Heads;

mod report;
mod stack;
mod subspace;

pub use report::{robustness_csv, robustness_rows, write_robustness, ROBUSTNESS_HEADERS};
use stack::{Stack, Unit};

/// Which inputs the Jacobian is taken with respect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrt {
    /// Q, K and V.
    Qkv,
    /// K and V only (a perturbation of the context the queries read).
    Kv,
    /// Q only.
    Q,
}

impl Wrt {
    /// Which of (q, k, v) are perturbed.
    fn selects(self) -> [bool; 3] {
        match self {
            Wrt::Qkv => [true, true, true],
            Wrt::Kv => [false, true, true],
            Wrt::Q => [true, false, false],
        }
    }

    /// How reports and the CLI name it.
    pub fn label(self) -> &'static str {
        match self {
            Wrt::Qkv => "qkv",
            Wrt::Kv => "kv",
            Wrt::Q => "q",
        }
    }
}

impl FromStr for Wrt {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Wrt, String> {
        match s {
            "qkv" => Ok(Wrt::Qkv),
            "kv" => Ok(Wrt::Kv),
            "q" => Ok(Wrt::Q),
            other => Err(format!("`{other}`: expected qkv, kv or q")),
        }
    }
}

/// How the figures are measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub wrt: Wrt,
    /// The iteration stops when its estimated remaining relative error (the last relative
    /// change, extrapolated over the geometric convergence of the last two) and the gap between
    /// |J v| and sqrt(|J^T J v|) are at most this, twice in a row.
    pub rel_tol: f64,
    /// Iteration budget (each iteration: one JVP launch and one backward, three launches).
    pub max_iters: usize,
    /// Random unit directions averaged for the mean amplification.
    pub random_samples: usize,
    /// Perturbation sizes, relative to the norm of the selected inputs (each finite, > 0).
    pub epsilons: Vec<f64>,
    /// Seeds the start vector and the random directions.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            wrt: Wrt::Qkv,
            rel_tol: 1e-3,
            max_iters: 60,
            random_samples: 8,
            epsilons: vec![0.01, 0.03, 0.1, 0.3],
            seed: 0,
        }
    }
}

impl Settings {
    /// Typed errors for settings no measurement can use.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting, value: f64, rule| {
            Err(Error::InvalidSetting {
                setting,
                value,
                rule,
            })
        };
        if !(self.rel_tol.is_finite() && self.rel_tol > 0.0) {
            return bad("rel_tol", self.rel_tol, "must be finite and > 0");
        }
        if self.max_iters == 0 {
            return bad("max_iters", 0.0, "must be >= 1");
        }
        if self.random_samples == 0 {
            return bad("random_samples", 0.0, "must be >= 1");
        }
        for &e in &self.epsilons {
            if !(e.is_finite() && e > 0.0) {
                return bad("epsilon", e, "must be finite and > 0");
            }
        }
        Ok(())
    }
}

/// One attention layer's inputs for one sequence: `q: [sq, hq, d]`, `k, v: [sk, hkv, d]`
/// (f32, rounded to `dtype` before use), with its options and optional ALiBi slopes `[hq]`.
#[derive(Debug, Clone, Copy)]
pub struct LayerInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub seqlen_q: usize,
    pub seqlen_k: usize,
    pub heads: Heads,
    pub head_dim: usize,
    pub options: AttnOptions,
    pub alibi_slopes: Option<&'a [f32]>,
    pub dtype: DType,
}

/// A top singular value estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpectralEstimate {
    /// The last estimate of the largest singular value.
    pub sigma: f64,
    pub converged: bool,
    pub iterations: usize,
    /// The last relative change of the estimate.
    pub last_rel_change: f64,
}

/// The output change under the adversarial perturbation of relative size `epsilon`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpsilonPoint {
    pub epsilon: f64,
    /// `|O(x + delta) - O(x)| / |delta|`, the worse of `delta = +-epsilon |x| v1`: equals the
    /// top singular value while the head is linear at that scale.
    pub amplification: f64,
    /// `|O(x + delta) - O(x)| / |O(x)|`.
    pub relative_change: f64,
}

/// The figures of one head (its own output) or of the combined output.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub top: SpectralEstimate,
    /// Mean `|J r|` over random unit directions `r`.
    pub mean_random: f64,
    /// `top.sigma / mean_random`.
    pub ratio: f64,
    pub epsilon_curve: Vec<EpsilonPoint>,
}

/// The whole measurement of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustnessReport {
    pub settings: Settings,
    /// Per head, on the head's own (ungated) output.
    pub heads: Vec<Figures>,
    /// The combined output of all heads.
    pub combined: Figures,
    /// Per head: the combined output's figures with that head gated off.
    pub without: Vec<Figures>,
}

impl RobustnessReport {
    /// `combined.top.sigma - without[h].top.sigma`: how much head `h` adds to the worst-case
    /// amplification of the layer (negative: the layer is more stable with it).
    pub fn contribution(&self, h: usize) -> f64 {
        self.combined.top.sigma - self.without[h].top.sigma
    }

    /// The heads ranked by their own top singular value, largest first.
    pub fn most_fragile(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.heads.len()).collect();
        order.sort_by(|&a, &b| self.heads[b].top.sigma.total_cmp(&self.heads[a].top.sigma));
        order
    }
}

/// A tangent of (q, k, v), f64 on the host.
type Tangent = [Vec<f64>; 3];

/// A unit's top singular value estimate and its unit top right singular vector.
type Top = (SpectralEstimate, Tangent);

fn norm(xs: &[f64]) -> f64 {
    xs.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn tangent_norm(t: &Tangent) -> f64 {
    t.iter().map(|p| norm(p).powi(2)).sum::<f64>().sqrt()
}

/// Checks the layer's buffers against its shape (typed errors, no panic on any size).
fn check_inputs(l: &LayerInputs) -> Result<()> {
    let (hq, hkv, d) = (l.heads.q, l.heads.kv, l.head_dim);
    let rows = |seq: usize, heads: usize| {
        seq.checked_mul(heads)
            .and_then(|n| n.checked_mul(d))
            .ok_or(Error::SizeOverflow {
                what: "the robustness inputs",
            })
    };
    for (tensor, got, want) in [
        (TensorName::Q, l.q.len(), rows(l.seqlen_q, hq)?),
        (TensorName::K, l.k.len(), rows(l.seqlen_k, hkv)?),
        (TensorName::V, l.v.len(), rows(l.seqlen_k, hkv)?),
    ] {
        if got != want {
            return Err(Error::DimMismatch {
                tensor,
                dim: Dim::Len,
                expected: want,
                found: got,
            });
        }
        if want == 0 {
            return Err(Error::EmptyDim {
                tensor,
                dim: Dim::Len,
            });
        }
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(Error::DimMismatch {
            tensor: TensorName::K,
            dim: Dim::Heads,
            expected: hq,
            found: hkv,
        });
    }
    if let Some(s) = l.alibi_slopes {
        if s.len() != hq {
            return Err(Error::DimMismatch {
                tensor: TensorName::AlibiSlopes,
                dim: Dim::Len,
                expected: hq,
                found: s.len(),
            });
        }
    }
    Ok(())
}

/// Head `h`'s own inputs in `l` (a one-head problem): its q rows `[sq, d]` and its kv head's
/// k, v `[sk, d]` (GQA: the kv head `h / (hq / hkv)`). `l` must be valid (`measure` checks it).
pub fn head_inputs(l: &LayerInputs, h: usize) -> [Vec<f32>; 3] {
    let (hq, hkv, d) = (l.heads.q, l.heads.kv, l.head_dim);
    let pick = |x: &[f32], rows: usize, heads: usize, at: usize| -> Vec<f32> {
        (0..rows)
            .flat_map(|i| {
                x[(i * heads + at) * d..(i * heads + at + 1) * d]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let kvh = h / (hq / hkv);
    [
        pick(l.q, l.seqlen_q, hq, h),
        pick(l.k, l.seqlen_k, hkv, kvh),
        pick(l.v, l.seqlen_k, hkv, kvh),
    ]
}

impl LayerInputs<'_> {
    /// The first `tokens` queries and keys of the sequence (all of it if shorter).
    pub fn first_tokens(&self, tokens: usize) -> Self {
        let (sq, sk) = (self.seqlen_q.min(tokens), self.seqlen_k.min(tokens));
        let (hq, hkv, d) = (self.heads.q, self.heads.kv, self.head_dim);
        LayerInputs {
            q: &self.q[..(sq * hq * d).min(self.q.len())],
            k: &self.k[..(sk * hkv * d).min(self.k.len())],
            v: &self.v[..(sk * hkv * d).min(self.v.len())],
            seqlen_q: sq,
            seqlen_k: sk,
            ..*self
        }
    }
}

/// Measures every head of `layer` (see the module docs) on the PTX emulator.
pub fn measure(layer: &LayerInputs, settings: &Settings) -> Result<RobustnessReport> {
    measure_on(&EmulatorBackend::new(KernelTarget::Ampere), layer, settings)
}

/// Measures every head of `layer` on `backend` (the emulator or a GPU: the same launches).
/// Settings and inputs are checked before anything runs.
pub fn measure_on<B: Backend>(
    backend: &B,
    layer: &LayerInputs,
    settings: &Settings,
) -> Result<RobustnessReport> {
    settings.validate()?;
    check_inputs(layer)?;
    match layer.dtype {
        DType::F16 => measure_typed::<B, half::f16>(backend, layer, settings),
        DType::Bf16 => measure_typed::<B, half::bf16>(backend, layer, settings),
    }
}

/// A unit of one of the stacks: `(stack, unit)`, stack 0 the heads alone, 1 the KV groups.
type Block = (usize, usize);

/// The worst of `+-eps * scale * v1` per epsilon, from the forward's `(change, applied)` pairs
/// in the order [`perturbations`] made them; `o_norm` scales the relative change.
fn curve(eps: &[f64], changes: &[(f64, f64)], o_norm: f64) -> Vec<EpsilonPoint> {
    eps.iter()
        .zip(changes.chunks(2))
        .map(|(&epsilon, pair)| {
            let mut worst = (0.0, 0.0);
            for &(change, applied) in pair {
                let amp = if applied > 0.0 { change / applied } else { 0.0 };
                if amp >= worst.0 {
                    worst = (amp, change);
                }
            }
            EpsilonPoint {
                epsilon,
                amplification: worst.0,
                relative_change: if o_norm > 0.0 { worst.1 / o_norm } else { 0.0 },
            }
        })
        .collect()
}

/// `+-eps * scale * v1` for each epsilon (plus first).
fn perturbations(eps: &[f64], scale: f64, v1: &Tangent) -> Vec<Tangent> {
    eps.iter()
        .flat_map(|&e| {
            [1.0, -1.0].map(|sign| {
                v1.clone()
                    .map(|p| p.iter().map(|x| sign * e * scale * x).collect())
            })
        })
        .collect()
}

/// Per unit, the forward's `(change, applied)` for each of its perturbations `deltas[u]`, in
/// launches of the stack's batch.
fn changes<B: Backend, T: Element>(
    stack: &Stack<'_, B, T>,
    deltas: &[Vec<Tangent>],
) -> Result<Vec<Vec<(f64, f64)>>> {
    subspace::in_batches(stack.batch(), deltas, |part| stack.forward_change(part))
}

/// The stack of `units` and each unit's top singular value and vector.
fn iterate<'b, B: Backend, T: Element>(
    be: &'b B,
    l: &LayerInputs,
    s: &Settings,
    units: &[Unit],
    rngs: &mut [StdRng],
) -> Result<(Stack<'b, B, T>, Vec<Top>)> {
    let sel = s.wrt.selects();
    let stack = Stack::<B, T>::new(be, l, units, subspace::BLOCK, sel)?;
    let rebuild = |kept: &[usize]| {
        let some: Vec<Unit> = kept.iter().map(|&u| units[u].clone()).collect();
        Stack::<B, T>::new(be, l, &some, subspace::BLOCK, sel)
    };
    let tops = subspace::top_singular_all(&stack, &rebuild, rngs, s)?;
    Ok((stack, tops))
}

/// The configuration of `blocks` (the layer's output with every head outside them gated off):
/// its top singular value is the largest of its blocks' (the Jacobian is block diagonal over
/// them; NaN if any is), converged when all are; returns it and the block it comes from.
fn worst_block(
    blocks: &[Block],
    top: &dyn Fn(Block) -> SpectralEstimate,
) -> (SpectralEstimate, Option<Block>) {
    let mut est = SpectralEstimate {
        sigma: 0.0,
        converged: true,
        iterations: 0,
        last_rel_change: 0.0,
    };
    let mut from = None;
    for &b in blocks {
        let t = top(b);
        // A NaN block makes the configuration's sigma NaN for good.
        if (from.is_none() || t.sigma > est.sigma || t.sigma.is_nan()) && !est.sigma.is_nan() {
            est.sigma = t.sigma;
            from = Some(b);
        }
        est.converged &= t.converged;
        est.iterations = est.iterations.max(t.iterations);
        est.last_rel_change = est.last_rel_change.max(t.last_rel_change);
    }
    (est, from)
}

fn measure_typed<B: Backend, T: Element>(
    be: &B,
    l: &LayerInputs,
    s: &Settings,
) -> Result<RobustnessReport> {
    let (hq, hkv) = (l.heads.q, l.heads.kv);
    let group = hq / hkv;
    let sel = s.wrt.selects();
    let seeded = |k: usize| StdRng::seed_from_u64(s.seed.wrapping_add(k as u64));
    let draw = |rng: &mut StdRng, lens: [usize; 3]| -> Vec<Tangent> {
        (0..s.random_samples)
            .map(|_| subspace::gaussian(rng, lens, sel))
            .collect()
    };
    // Stack 0: each head alone (its q rows, its KV head's k / v, its slope).
    let heads: Vec<Unit> = (0..hq)
        .map(|h| Unit {
            q_heads: vec![(h, 1.0)],
            kv_heads: vec![h / group],
        })
        .collect();
    let mut rngs: Vec<StdRng> = (0..hq).map(seeded).collect();
    let (stack0, tops0) = iterate::<B, T>(be, l, s, &heads, &mut rngs)?;
    let lens0 = stack0.zero_tangent().map(|p| p.len());
    let samples0: Vec<Vec<Tangent>> = rngs.iter_mut().map(|r| draw(r, lens0)).collect();
    let gains0 = subspace::gains(&stack0, &samples0)?;
    let head_sample_norms: Vec<Vec<f64>> = samples0
        .iter()
        .map(|per| per.iter().map(tangent_norm).collect())
        .collect();
    let mut stacks = vec![stack0];
    let mut tops = vec![tops0];
    let mut gains = vec![gains0];
    // The combined output's Jacobian is block diagonal over KV groups (a query head reads only
    // its KV head): without GQA the blocks are the heads of stack 0, and gating head h off
    // removes its block; with GQA, stack 1 holds each group, then each group with one head
    // gated off (which replaces the group's block).
    let (partition, samples): (Vec<Block>, Vec<Vec<Tangent>>) = if group == 1 {
        ((0..hq).map(|h| (0, h)).collect(), samples0)
    } else {
        let mut units: Vec<Unit> = (0..hkv)
            .map(|g| Unit {
                q_heads: (0..group).map(|j| (g * group + j, 1.0)).collect(),
                kv_heads: vec![g],
            })
            .collect();
        units.extend((0..hq).map(|h| {
            Unit {
                q_heads: (0..group)
                    .map(|j| {
                        let at = h / group * group + j;
                        (at, if at == h { 0.0 } else { 1.0 })
                    })
                    .collect(),
                kv_heads: vec![h / group],
            }
        }));
        let mut rngs: Vec<StdRng> = (0..units.len()).map(|k| seeded(hq + k)).collect();
        let (stack1, tops1) = iterate::<B, T>(be, l, s, &units, &mut rngs)?;
        let lens1 = stack1.zero_tangent().map(|p| p.len());
        let groups: Vec<Vec<Tangent>> = rngs[..hkv].iter_mut().map(|r| draw(r, lens1)).collect();
        // A gated-off configuration sees the same random directions as its group.
        let mut samples1 = groups.clone();
        samples1.extend((0..hq).map(|h| groups[h / group].clone()));
        gains.push(subspace::gains(&stack1, &samples1)?);
        stacks.push(stack1);
        tops.push(tops1);
        ((0..hkv).map(|g| (1, g)).collect(), groups)
    };
    let without_blocks = |h: usize| -> Vec<Block> {
        if group == 1 {
            partition.iter().copied().filter(|&b| b != (0, h)).collect()
        } else {
            let g = h / group;
            let swap = |b: Block| if b == (1, g) { (1, hkv + h) } else { b };
            partition.iter().copied().map(swap).collect()
        }
    };
    let configs: Vec<Vec<Block>> = std::iter::once(partition.clone())
        .chain((0..hq).map(without_blocks))
        .collect();
    let top_of = |(st, u): Block| tops[st][u].0;
    // Random directions over the whole layer: the partition's samples side by side.
    let sample_norms: Vec<f64> = (0..s.random_samples)
        .map(|j| {
            samples
                .iter()
                .map(|per| tangent_norm(&per[j]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let mean_gain = |blocks: &[Block]| -> f64 {
        let total: f64 = (0..s.random_samples)
            .map(|j| {
                let sq: f64 = blocks.iter().map(|&(st, u)| gains[st][u][j].powi(2)).sum();
                sq.sqrt() / sample_norms[j]
            })
            .sum();
        total / s.random_samples as f64
    };
    let layer_scale = partition
        .iter()
        .map(|&(st, u)| stacks[st].selected(u).1.powi(2))
        .sum::<f64>()
        .sqrt();

    // Epsilon perturbations, one list per unit of each stack: each head's own (its top vector
    // at its own input's scale), then each configuration's worst block's (the layer's scale;
    // configurations sharing that block share the forward runs).
    let mut deltas: Vec<Vec<Vec<Tangent>>> = stacks
        .iter()
        .map(|st| vec![Vec::new(); st.units()])
        .collect();
    for (h, (_, v1)) in tops[0].iter().enumerate() {
        deltas[0][h] = perturbations(&s.epsilons, stacks[0].selected(h).1, v1);
    }
    let worst: Vec<(SpectralEstimate, Option<Block>)> =
        configs.iter().map(|c| worst_block(c, &top_of)).collect();
    let mut shared: Vec<(Block, usize)> = Vec::new();
    for &(_, from) in &worst {
        if let Some((st, u)) = from {
            if !shared.iter().any(|&(b, _)| b == (st, u)) {
                shared.push(((st, u), deltas[st][u].len()));
                let more = perturbations(&s.epsilons, layer_scale, &tops[st][u].1);
                deltas[st][u].extend(more);
            }
        }
    }
    let mut moved = Vec::with_capacity(stacks.len());
    for (st, d) in stacks.iter().zip(&deltas) {
        moved.push(changes(st, d)?);
    }
    let span = 2 * s.epsilons.len();
    let o_norm = |blocks: &[Block]| -> f64 {
        blocks
            .iter()
            .map(|&(st, u)| norm(stacks[st].output(u)).powi(2))
            .sum::<f64>()
            .sqrt()
    };

    let config_figures =
        |(blocks, (top, from)): (&Vec<Block>, &(SpectralEstimate, Option<Block>))| {
            let mean_random = mean_gain(blocks);
            let epsilon_curve = match from {
                Some((st, u)) => {
                    let at = shared
                        .iter()
                        .find(|(b, _)| *b == (*st, *u))
                        .map_or(0, |x| x.1);
                    curve(&s.epsilons, &moved[*st][*u][at..at + span], o_norm(blocks))
                }
                // Every head gated off: the output does not move.
                None => curve(&s.epsilons, &vec![(0.0, 0.0); span], 0.0),
            };
            Figures {
                ratio: top.sigma / mean_random,
                top: *top,
                mean_random,
                epsilon_curve,
            }
        };
    let mut config: Vec<Figures> = configs.iter().zip(&worst).map(config_figures).collect();
    let without = config.split_off(1);
    let combined = config.remove(0);
    let heads = (0..hq)
        .map(|h| {
            let top = tops[0][h].0;
            let mean_random = gains[0][h]
                .iter()
                .zip(&head_sample_norms[h])
                .map(|(g, n)| g / n)
                .sum::<f64>()
                / s.random_samples as f64;
            let o = norm(stacks[0].output(h));
            Figures {
                ratio: top.sigma / mean_random,
                top,
                mean_random,
                epsilon_curve: curve(&s.epsilons, &moved[0][h][..span], o),
            }
        })
        .collect();
    Ok(RobustnessReport {
        settings: s.clone(),
        heads,
        combined,
        without,
    })
}
