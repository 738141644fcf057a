//! Per-head robustness under adversarial perturbation (issue 22, item 2): for each head, the
//! largest singular value of the Jacobian of its output O (`[sq, d]`) with respect to its inputs
//! (Q, K, V of the sequence, only K / V, or only Q: [`Wrt`]), by power iteration on `J^T J` that
//! alternates the fused JVP kernel (`J v`, [`crate::ops::jvp`]) and the backward kernels
//! (`J^T u`, [`crate::ops::backward`]) on the PTX emulator; the mean amplification `|J r|` of
//! random unit directions `r`; their ratio (how much worse the worst direction is than a typical
//! one); and the non-linear change of the head's output under the adversarial perturbation of
//! size epsilon (the top right singular vector scaled to epsilon times the norm of the selected
//! inputs, both signs, the worse kept), through the real forward kernel. The "robustness
//! contribution" of a head is the same top singular value measured on the combined output of
//! all heads (the concatenation, every head's gate 1) minus the one with that head gated off
//! (gate 0): positive when the head makes the layer less stable.
//!
//! Numerics: the kernels read 16-bit tangents, so every tangent and cotangent is uploaded with
//! unit RMS per element (scaled by sqrt(n) / |t|) and the result scaled back: no tangent
//! underflows. The top singular value comes from a subspace iteration on J^T J (3 vectors,
//! Rayleigh-Ritz); the estimate is sqrt(|J^T J u|) for the unit Ritz vector u (a lower bound of
//! sigma, tighter than |J u|). The iteration stops when, on two iterations in a row, both the
//! estimate's remaining relative error extrapolated from its last two changes and the relative
//! gap between the two lower bounds (zero only at a singular vector) are at most
//! [`Settings::rel_tol`]; one that does not within
//! [`Settings::max_iters`] is reported as not
//! converged with its last estimate ([`SpectralEstimate::converged`]), never an error.

use std::str::FromStr;

use rand::{Rng, SeedableRng};

use crate::api::{Attention, BwdArgs, FwdArgs, JvpArgs};
use crate::backend::emulator::EmulatorBackend;
use crate::backend::Backend;
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{Dim, Error, Result, TensorName};
use crate::common::options::AttnOptions;
use crate::common::target::KernelTarget;
use crate::ops::backward::{BwdPlan, BwdShape};
use crate::ops::forward::plan::FwdPlan;
use crate::ops::forward::problem::{FwdShape, Heads};
use crate::ops::jvp::{JvpPlan, JvpShape};

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
    /// The power iteration stops when its estimated remaining relative error (the last relative
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
    /// Empty for the gated-off configurations of the contribution.
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

fn norm(xs: &[f64]) -> f64 {
    xs.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn tangent_norm(t: &Tangent) -> f64 {
    t.iter().map(|p| norm(p).powi(2)).sum::<f64>().sqrt()
}

/// Vectors the subspace iteration carries (see `LayerOp::top_singular`).
const BLOCK: usize = 3;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn tangent_dot(a: &Tangent, b: &Tangent) -> f64 {
    a.iter().zip(b).map(|(x, y)| dot(x, y)).sum()
}

/// `sum_j c_j t_j`.
fn combine(ts: &[Tangent], c: &[f64]) -> Tangent {
    std::array::from_fn(|p| {
        (0..ts[0][p].len())
            .map(|e| ts.iter().zip(c).map(|(t, cj)| cj * t[p][e]).sum())
            .collect()
    })
}

/// Modified Gram-Schmidt, twice (the second pass removes what rounding left of the first); a
/// vector that vanishes (dependent on the others) is dropped.
fn orthonormalise(ts: &mut Vec<Tangent>) {
    for _ in 0..2 {
        let mut out: Vec<Tangent> = Vec::with_capacity(ts.len());
        for mut t in ts.drain(..) {
            for u in &out {
                let c = tangent_dot(&t, u);
                t.iter_mut()
                    .zip(u)
                    .for_each(|(tp, up)| tp.iter_mut().zip(up).for_each(|(x, y)| *x -= c * y));
            }
            let n = tangent_norm(&t);
            if n > 0.0 && n.is_finite() {
                t.iter_mut().flatten().for_each(|x| *x /= n);
                out.push(t);
            }
        }
        *ts = out;
    }
}

/// The forward, JVP and backward of one layer configuration at fixed inputs, on the emulator.
struct LayerOp<'e, T: Element> {
    be: &'e EmulatorBackend,
    stream: <EmulatorBackend as Backend>::Stream,
    fwd: FwdPlan,
    jvp: JvpPlan,
    bwd: BwdPlan,
    /// The primal (rounded to T), host and device.
    x: [Vec<f32>; 3],
    dev: [<EmulatorBackend as Backend>::Buffer<T>; 3],
    o: <EmulatorBackend as Backend>::Buffer<T>,
    lse: <EmulatorBackend as Backend>::Buffer<f32>,
    o_host: Vec<f64>,
    slopes: Option<<EmulatorBackend as Backend>::Buffer<f32>>,
    gates: Option<<EmulatorBackend as Backend>::Buffer<f32>>,
    sel: [bool; 3],
}

impl<'e, T: Element> LayerOp<'e, T> {
    fn new(
        be: &'e EmulatorBackend,
        shape: FwdShape,
        x: [Vec<f32>; 3],
        (slopes, gates): (Option<&[f32]>, Option<&[f32]>),
        sel: [bool; 3],
    ) -> Result<Self> {
        let stream = be.stream()?;
        let fwd = FwdPlan::new_for(be.target(), T::DTYPE, &shape)?;
        let jvp = JvpPlan::new_for(be.target(), T::DTYPE, &JvpShape::new(shape))?;
        let bwd = BwdPlan::new_for(be.target(), T::DTYPE, &BwdShape::new(shape))?;
        let x = x.map(|p| {
            p.iter()
                .map(|&v| T::from_f32(v).to_f32())
                .collect::<Vec<f32>>()
        });
        let up = |p: &[f32]| -> Result<_> {
            let t: Vec<T> = p.iter().map(|&v| T::from_f32(v)).collect();
            be.upload(&stream, &t)
        };
        let dev = [up(&x[0])?, up(&x[1])?, up(&x[2])?];
        let slopes = slopes.map(|s| be.upload(&stream, s)).transpose()?;
        let gates = gates.map(|g| be.upload(&stream, g)).transpose()?;
        let mut op = LayerOp {
            be,
            o: be.alloc_zeros::<T>(&stream, x[0].len())?,
            lse: be.alloc_zeros::<f32>(&stream, fwd.extents().row_stats.max(1))?,
            stream,
            fwd,
            jvp,
            bwd,
            x,
            dev,
            o_host: Vec::new(),
            slopes,
            gates,
            sel,
        };
        let mut args = FwdArgs::new(&op.dev[0], &op.dev[1], &op.dev[2], &mut op.o).lse(&mut op.lse);
        if let Some(s) = &op.slopes {
            args = args.alibi_slopes(s);
        }
        if let Some(g) = &op.gates {
            args = args.head_gates(g);
        }
        be.run(&op.stream, &op.fwd, args)?;
        op.o_host = op.download(&op.o)?;
        Ok(op)
    }

    fn download(&self, b: &<EmulatorBackend as Backend>::Buffer<T>) -> Result<Vec<f64>> {
        Ok(self
            .be
            .download(&self.stream, b)?
            .iter()
            .map(|x| f64::from(x.to_f32()))
            .collect())
    }

    /// `xs * mul` in the element type (the upload of a scaled tangent).
    fn upload_scaled(
        &self,
        xs: &[f64],
        mul: f64,
    ) -> Result<<EmulatorBackend as Backend>::Buffer<T>> {
        let t: Vec<T> = xs.iter().map(|&x| T::from_f32((x * mul) as f32)).collect();
        self.be.upload(&self.stream, &t)
    }

    /// Elements of the selected inputs.
    fn selected_len(&self) -> usize {
        (0..3)
            .filter(|&i| self.sel[i])
            .map(|i| self.x[i].len())
            .sum()
    }

    /// A Gaussian unit tangent over the selected inputs.
    fn random_tangent(&self, rng: &mut rand::rngs::StdRng) -> Tangent {
        let mut t: Tangent = std::array::from_fn(|i| {
            (0..self.x[i].len())
                .map(|_| {
                    if self.sel[i] {
                        // Box-Muller: a standard normal from two uniforms.
                        let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                    } else {
                        0.0
                    }
                })
                .collect()
        });
        let n = tangent_norm(&t);
        t.iter_mut().flatten().for_each(|x| *x /= n);
        t
    }

    /// `J t` (f64, laid out like o).
    fn jv(&self, t: &Tangent) -> Result<Vec<f64>> {
        let n = tangent_norm(t);
        if n == 0.0 {
            return Ok(vec![0.0; self.x[0].len()]);
        }
        let mul = (self.selected_len() as f64).sqrt() / n;
        let [dq, dk, dv] = [
            self.upload_scaled(&t[0], mul)?,
            self.upload_scaled(&t[1], mul)?,
            self.upload_scaled(&t[2], mul)?,
        ];
        let mut o = self.be.alloc_zeros::<T>(&self.stream, self.x[0].len())?;
        let mut ot = self.be.alloc_zeros::<T>(&self.stream, self.x[0].len())?;
        let mut args = JvpArgs::new(
            (&self.dev[0], &self.dev[1], &self.dev[2]),
            (&dq, &dk, &dv),
            (&mut o, &mut ot),
        );
        if let Some(s) = &self.slopes {
            args = args.alibi_slopes(s);
        }
        if let Some(g) = &self.gates {
            args = args.head_gates(g);
        }
        self.be.jvp(&self.stream, &self.jvp, args)?;
        Ok(self.download(&ot)?.iter().map(|x| x / mul).collect())
    }

    /// `J^T u` restricted to the selected inputs.
    fn jtu(&self, u: &[f64]) -> Result<Tangent> {
        let n = norm(u);
        let zeros = || -> Tangent { std::array::from_fn(|i| vec![0.0; self.x[i].len()]) };
        if n == 0.0 {
            return Ok(zeros());
        }
        let mul = (u.len() as f64).sqrt() / n;
        let d_o = self.upload_scaled(u, mul)?;
        let be = self.be;
        let mut dq = be.alloc_zeros::<T>(&self.stream, self.x[0].len())?;
        let mut dk = be.alloc_zeros::<T>(&self.stream, self.x[1].len())?;
        let mut dv = be.alloc_zeros::<T>(&self.stream, self.x[2].len())?;
        let mut ws = be.alloc_zeros::<f32>(&self.stream, self.bwd.workspace_len().max(1))?;
        let mut args = BwdArgs::new(
            (&self.dev[0], &self.dev[1], &self.dev[2]),
            (&self.o, &self.lse),
            &d_o,
            (&mut dq, &mut dk, &mut dv),
            &mut ws,
        );
        if let Some(s) = &self.slopes {
            args = args.alibi_slopes(s);
        }
        if let Some(g) = &self.gates {
            args = args.head_gates(g);
        }
        be.backward(&self.stream, &self.bwd, args)?;
        let mut t = zeros();
        for (i, b) in [&dq, &dk, &dv].into_iter().enumerate() {
            if self.sel[i] {
                t[i] = self.download(b)?.iter().map(|x| x / mul).collect();
            }
        }
        Ok(t)
    }

    /// The forward's O at the primal plus `delta` (rounded to T on upload); returns O and the
    /// norm of the perturbation that was actually applied (after rounding).
    fn forward_at(&self, delta: &Tangent) -> Result<(Vec<f64>, f64)> {
        let mut applied = 0.0;
        let mut bufs = Vec::with_capacity(3);
        for (x0, d0) in self.x.iter().zip(delta) {
            let moved: Vec<T> = x0
                .iter()
                .zip(d0)
                .map(|(&x, &d)| T::from_f32((f64::from(x) + d) as f32))
                .collect();
            applied += moved
                .iter()
                .zip(x0)
                .map(|(m, &x)| (f64::from(m.to_f32()) - f64::from(x)).powi(2))
                .sum::<f64>();
            bufs.push(self.be.upload(&self.stream, &moved)?);
        }
        let mut o = self.be.alloc_zeros::<T>(&self.stream, self.x[0].len())?;
        let mut args = FwdArgs::new(&bufs[0], &bufs[1], &bufs[2], &mut o);
        if let Some(s) = &self.slopes {
            args = args.alibi_slopes(s);
        }
        if let Some(g) = &self.gates {
            args = args.head_gates(g);
        }
        self.be.run(&self.stream, &self.fwd, args)?;
        Ok((self.download(&o)?, applied.sqrt()))
    }

    /// Subspace (block power) iteration on J^T J with [`BLOCK`] vectors and a Rayleigh-Ritz
    /// step; returns the estimate and the top Ritz vector (unit). A single vector is not enough:
    /// when the top two singular values are within a few percent, a random start's component on
    /// the top one grows so slowly that the estimate settles at the second (a 2% low
    /// "converged" answer in a test against the exact SVD); the block converges at the rate
    /// (sigma_(BLOCK+1) / sigma_1)^2 instead.
    fn top_singular(
        &self,
        s: &Settings,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<(SpectralEstimate, Tangent)> {
        let mut vs: Vec<Tangent> = (0..BLOCK).map(|_| self.random_tangent(rng)).collect();
        orthonormalise(&mut vs);
        let mut est = SpectralEstimate {
            sigma: f64::NAN,
            converged: false,
            iterations: 0,
            last_rel_change: f64::INFINITY,
        };
        let mut top = vs[0].clone();
        // Consecutive iterations that met the stopping test (one alone can be a fluke of a
        // small step between two 16-bit rounded products).
        let mut calm = 0;
        for it in 1..=s.max_iters {
            if vs.is_empty() {
                // Every iterate vanished (J^T J V rounded to 0): nothing left to refine.
                return Ok((est, top));
            }
            est.iterations = it;
            let ws = vs.iter().map(|v| self.jv(v)).collect::<Result<Vec<_>>>()?;
            // Rayleigh-Ritz: G = (J V)^T (J V) = V^T J^T J V; its top eigenpair (theta, y)
            // gives the Ritz vector u = V y and |J u| = sqrt(theta) <= sigma.
            let g = nalgebra::DMatrix::from_fn(vs.len(), vs.len(), |a, b| dot(&ws[a], &ws[b]));
            if !g.iter().all(|x| x.is_finite()) {
                // A NaN or inf reached the output: report it, never loop on it.
                est.sigma = f64::NAN;
                return Ok((est, top));
            }
            let eig = g.symmetric_eigen();
            let i = eig.eigenvalues.imax();
            let (theta, y) = (eig.eigenvalues[i].max(0.0), eig.eigenvectors.column(i));
            top = combine(&vs, y.as_slice());
            if theta == 0.0 {
                // J V = 0 for generic start vectors: J is 0 on the selected inputs.
                est = SpectralEstimate {
                    sigma: 0.0,
                    converged: true,
                    iterations: it,
                    last_rel_change: 0.0,
                };
                return Ok((est, top));
            }
            let lo = theta.sqrt();
            let zs = ws.iter().map(|w| self.jtu(w)).collect::<Result<Vec<_>>>()?;
            // J^T J u = Z y: |J^T J u| <= sigma^2 and |J u|^2 <= |J^T J u|, so sqrt(|Z y|) is
            // the tighter lower bound; the two agree only at a singular vector.
            let hi = tangent_norm(&combine(&zs, y.as_slice())).sqrt();
            if !hi.is_finite() {
                est.sigma = lo;
                return Ok((est, top));
            }
            let sigma = hi.max(lo);
            let gap = (sigma - lo) / sigma;
            let change = (sigma - est.sigma).abs() / sigma;
            let prev_change = est.last_rel_change;
            est.sigma = sigma;
            est.last_rel_change = if change.is_nan() {
                f64::INFINITY
            } else {
                change
            };
            // The estimate approaches sigma geometrically: with successive changes c' < c the
            // distance still to go is about c' r / (1 - r), r = c' / c, which exceeds c' when
            // convergence is slow (r > 1/2). Stop on that distance and on the two bounds' gap,
            // both within the tolerance on two iterations in a row.
            let r = est.last_rel_change / prev_change;
            let to_go = if r < 1.0 {
                est.last_rel_change.max(est.last_rel_change * r / (1.0 - r))
            } else {
                est.last_rel_change
            };
            calm = if to_go.max(gap) <= s.rel_tol {
                calm + 1
            } else {
                0
            };
            if calm >= 2 {
                est.converged = true;
                return Ok((est, top));
            }
            vs = zs;
            orthonormalise(&mut vs);
        }
        Ok((est, top))
    }

    /// Every figure of this configuration; the epsilon curve only if `with_curve`.
    fn figures(&self, s: &Settings, seed: u64, with_curve: bool) -> Result<Figures> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (top, v1) = self.top_singular(s, &mut rng)?;
        let mut mean = 0.0;
        for _ in 0..s.random_samples {
            mean += norm(&self.jv(&self.random_tangent(&mut rng))?);
        }
        mean /= s.random_samples as f64;
        let mut epsilon_curve = Vec::new();
        if with_curve {
            let x_norm = (0..3)
                .filter(|&i| self.sel[i])
                .map(|i| self.x[i].iter().map(|&x| f64::from(x).powi(2)).sum::<f64>())
                .sum::<f64>()
                .sqrt();
            let o_norm = norm(&self.o_host);
            for &eps in &s.epsilons {
                let mut worst = (0.0, 0.0);
                for sign in [1.0, -1.0] {
                    let delta: Tangent = v1
                        .clone()
                        .map(|p| p.iter().map(|x| sign * eps * x_norm * x).collect());
                    let (o, applied) = self.forward_at(&delta)?;
                    let change = norm(
                        &o.iter()
                            .zip(&self.o_host)
                            .map(|(a, b)| a - b)
                            .collect::<Vec<f64>>(),
                    );
                    let amp = if applied > 0.0 { change / applied } else { 0.0 };
                    if amp >= worst.0 {
                        worst = (amp, change);
                    }
                }
                epsilon_curve.push(EpsilonPoint {
                    epsilon: eps,
                    amplification: worst.0,
                    relative_change: if o_norm > 0.0 { worst.1 / o_norm } else { 0.0 },
                });
            }
        }
        Ok(Figures {
            ratio: top.sigma / mean,
            top,
            mean_random: mean,
            epsilon_curve,
        })
    }
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

/// Measures every head of `layer` (see the module docs) on the emulator.
pub fn measure(layer: &LayerInputs, settings: &Settings) -> Result<RobustnessReport> {
    settings.validate()?;
    check_inputs(layer)?;
    match layer.dtype {
        DType::F16 => measure_typed::<half::f16>(layer, settings),
        DType::Bf16 => measure_typed::<half::bf16>(layer, settings),
    }
}

fn measure_typed<T: Element>(l: &LayerInputs, s: &Settings) -> Result<RobustnessReport> {
    let be = EmulatorBackend::new(KernelTarget::Ampere);
    let (hq, d) = (l.heads.q, l.head_dim);
    let sel = s.wrt.selects();
    let shape =
        |heads| FwdShape::padded(1, l.seqlen_q, l.seqlen_k, heads, d).with_options(l.options);
    // Each head alone: its q rows, its kv head's k / v, its slope (a one-head problem).
    let mut heads = Vec::with_capacity(hq);
    for h in 0..hq {
        let x = head_inputs(l, h);
        let slope = l.alibi_slopes.map(|sl| [sl[h]]);
        let op = LayerOp::<T>::new(
            &be,
            shape(Heads::mha(1)),
            x,
            (slope.as_ref().map(|s| &s[..]), None),
            sel,
        )?;
        heads.push(op.figures(s, s.seed.wrapping_add(h as u64), true)?);
    }
    // The combined output, every gate 1, then each head gated off.
    let x = [l.q.to_vec(), l.k.to_vec(), l.v.to_vec()];
    let combined_seed = s.seed.wrapping_add(hq as u64);
    let gated = |off: Option<usize>, with_curve: bool| -> Result<Figures> {
        let gates: Vec<f32> = (0..hq)
            .map(|h| if Some(h) == off { 0.0 } else { 1.0 })
            .collect();
        let slopes_and_gates = (l.alibi_slopes, Some(&gates[..]));
        LayerOp::<T>::new(&be, shape(l.heads), x.clone(), slopes_and_gates, sel)?.figures(
            s,
            combined_seed,
            with_curve,
        )
    };
    let combined = gated(None, true)?;
    let without = (0..hq)
        .map(|h| gated(Some(h), false))
        .collect::<Result<Vec<Figures>>>()?;
    Ok(RobustnessReport {
        settings: s.clone(),
        heads,
        combined,
        without,
    })
}

/// The per-head table as CSV: one row per head, then `combined` (the columns of a head's own
/// output; `sigma_without` and `contribution` are the combined output's with that head gated
/// off), then the epsilon curves in long form.
pub fn robustness_csv(r: &RobustnessReport) -> String {
    let mut s = String::from(
        "head,sigma_max,converged,iterations,last_rel_change,mean_random,ratio,sigma_without,contribution\n",
    );
    let row = |name: String, f: &Figures, without: Option<(f64, f64)>| {
        let (w, c) = without.map_or((String::new(), String::new()), |(w, c)| {
            (format!("{w:.6e}"), format!("{c:.6e}"))
        });
        format!(
            "{name},{:.6e},{},{},{:.3e},{:.6e},{:.4},{w},{c}\n",
            f.top.sigma,
            f.top.converged,
            f.top.iterations,
            f.top.last_rel_change,
            f.mean_random,
            f.ratio
        )
    };
    for (h, f) in r.heads.iter().enumerate() {
        s += &row(
            h.to_string(),
            f,
            Some((r.without[h].top.sigma, r.contribution(h))),
        );
    }
    s += &row("combined".to_string(), &r.combined, None);
    s += "\nhead,epsilon,amplification,amplification_over_sigma,relative_output_change\n";
    let curve = |name: String, f: &Figures| -> String {
        f.epsilon_curve
            .iter()
            .map(|p| {
                format!(
                    "{name},{},{:.6e},{:.4},{:.6e}\n",
                    p.epsilon,
                    p.amplification,
                    p.amplification / f.top.sigma,
                    p.relative_change
                )
            })
            .collect()
    };
    for (h, f) in r.heads.iter().enumerate() {
        s += &curve(h.to_string(), f);
    }
    s + &curve("combined".to_string(), &r.combined)
}

/// Rows of the terminal table: head, sigma (or "not converged: last"), mean random, ratio,
/// amplification at the largest epsilon over sigma, contribution.
pub fn robustness_rows(r: &RobustnessReport) -> Vec<[String; 6]> {
    let sigma = |f: &Figures| {
        if f.top.converged {
            format!("{:.4}", f.top.sigma)
        } else {
            format!(
                "not converged in {}: last {:.4} (change {:.1e})",
                f.top.iterations, f.top.sigma, f.top.last_rel_change
            )
        }
    };
    let last_eps = |f: &Figures| {
        f.epsilon_curve.last().map_or(String::new(), |p| {
            format!("{:.3} at eps {}", p.amplification / f.top.sigma, p.epsilon)
        })
    };
    let mut rows: Vec<[String; 6]> = r
        .heads
        .iter()
        .enumerate()
        .map(|(h, f)| {
            [
                h.to_string(),
                sigma(f),
                format!("{:.4}", f.mean_random),
                format!("{:.2}", f.ratio),
                last_eps(f),
                format!("{:+.4}", r.contribution(h)),
            ]
        })
        .collect();
    let c = &r.combined;
    rows.push([
        "all (combined)".to_string(),
        sigma(c),
        format!("{:.4}", c.mean_random),
        format!("{:.2}", c.ratio),
        last_eps(c),
        String::new(),
    ]);
    rows
}

/// Headers of [`robustness_rows`].
pub const ROBUSTNESS_HEADERS: [&str; 6] = [
    "head",
    "sigma_max (worst-case gain)",
    "mean random gain",
    "ratio",
    "non-linear gain / sigma",
    "contribution to layer sigma",
];

/// Pixel size of the robustness figure (two panels).
const PLOT_SIZE: (u32, u32) = (1300, 540);

/// Bars of the worst-case and mean random gain per head (left) and the epsilon curves (right).
struct RobustnessPlot<'a>(&'a RobustnessReport);

impl super::plots::Figure for RobustnessPlot<'_> {
    fn size(&self) -> (u32, u32) {
        PLOT_SIZE
    }
    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> super::plots::DrawResult<DB> {
        use super::plots::FAMILY;
        use plotters::prelude::*;
        let r = self.0;
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(PLOT_SIZE.0 * 11 / 20);
        let n = r.heads.len();
        let top = r
            .heads
            .iter()
            .map(|f| f.top.sigma)
            .filter(|s| s.is_finite())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let mut bars = ChartBuilder::on(&left)
            .caption(
                format!("Jacobian gain per head (w.r.t. {})", r.settings.wrt.label()),
                (FAMILY, 19),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..top)?;
        bars.configure_mesh()
            .disable_x_mesh()
            .x_labels(n.min(32))
            .x_label_formatter(&|v| format!("{}", v.round() as i64))
            .x_desc("head")
            .y_desc("|J v| / |v|")
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        let worst = RGBColor(178, 24, 43);
        let random = RGBColor(150, 150, 150);
        bars.draw_series(r.heads.iter().enumerate().map(|(h, f)| {
            let x = h as f64;
            Rectangle::new([(x - 0.38, 0.0), (x, f.top.sigma.max(0.0))], worst.filled())
        }))?
        .label("worst direction: top singular value")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], worst.filled()));
        bars.draw_series(r.heads.iter().enumerate().map(|(h, f)| {
            let x = h as f64;
            Rectangle::new(
                [(x, 0.0), (x + 0.38, f.mean_random.max(0.0))],
                random.filled(),
            )
        }))?
        .label("random directions: mean gain")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], random.filled()));
        bars.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()?;

        let eps: Vec<f64> = r.settings.epsilons.clone();
        let (lo, hi) = eps
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), &e| (a.min(e), b.max(e)));
        let (lo, hi) = if lo < hi {
            (lo, hi)
        } else {
            (lo * 0.5, lo * 2.0)
        };
        let ys = r
            .heads
            .iter()
            .flat_map(|f| {
                f.epsilon_curve
                    .iter()
                    .map(move |p| p.amplification / f.top.sigma)
            })
            .filter(|y| y.is_finite());
        let y_hi = ys.fold(1.0f64, f64::max) * 1.1;
        let mut curves = ChartBuilder::on(&right)
            .caption("Non-linear gain / linear prediction", (FAMILY, 19))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..y_hi)?;
        curves
            .configure_mesh()
            .x_desc("epsilon (perturbation / input norm)")
            .y_desc("gain(eps) / sigma_max")
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        for (h, f) in r.heads.iter().enumerate() {
            let color = Palette99::pick(h).to_rgba();
            let pts: Vec<(f64, f64)> = f
                .epsilon_curve
                .iter()
                .map(|p| (p.epsilon, p.amplification / f.top.sigma))
                .filter(|(_, y)| y.is_finite())
                .collect();
            curves
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(format!("head {h}"))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
            curves.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        if n <= 16 {
            curves
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font((FAMILY, 12))
                .draw()?;
        }
        Ok(())
    }
}

/// Writes `<dir>/robustness.csv` and the figure `<dir>/robustness.{png,svg}` (the font must be
/// loaded: [`super::plots::load_font`]); returns the paths.
pub fn write_robustness(
    dir: &std::path::Path,
    r: &RobustnessReport,
) -> Result<Vec<std::path::PathBuf>> {
    let csv = dir.join("robustness.csv");
    std::fs::write(&csv, robustness_csv(r)).map_err(|source| Error::Io {
        path: csv.clone(),
        source,
    })?;
    let [png, svg] = super::plots::write_figure(&dir.join("robustness"), &RobustnessPlot(r))?;
    Ok(vec![csv, png, svg])
}
