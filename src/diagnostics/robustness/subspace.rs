//! The top singular value of every unit of a [`Stack`] at once: a block Krylov (block Lanczos
//! with full reorthogonalisation) iteration on `J^T J` with [`BLOCK`] new vectors per iteration
//! and a Rayleigh-Ritz step over the whole basis per unit, the units advancing in lockstep so
//! that each iteration is one JVP launch and one backward for all of them. A single power
//! vector is not enough: when the top two singular values are within a few percent, a random
//! start's component on the top one grows so slowly that the estimate settles at the second (a
//! 2% low "converged" answer in a test against the exact SVD). The Krylov basis (up to
//! `MAX_BASIS` vectors, then restarted from the top Ritz vectors) keeps every direction the
//! iteration has seen, which needs fewer launches than a subspace iteration that keeps only the
//! last block.
//!
//! The estimate is `sqrt(|J^T J u|)` for the unit Ritz vector `u` (a lower bound of sigma,
//! tighter than `|J u|`). A unit stops when, on two iterations in a row, both the estimate's
//! remaining relative error extrapolated from its last two changes and the relative gap between
//! the two lower bounds (zero only at a singular vector) are at most the tolerance; one that
//! does not within the budget keeps its last estimate, reported as not converged. A unit that
//! converged leaves the stack: the rest run on a smaller stack once at most half remain.

use rand::rngs::StdRng;

use crate::backend::Backend;
use crate::common::element::Element;
use crate::common::error::Result;

use super::stack::Stack;
use super::{norm, tangent_norm, Settings, SpectralEstimate, Tangent, Top};

/// New vectors per unit and iteration (the batch of the stack's launches).
pub(super) const BLOCK: usize = 3;

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

/// A Gaussian tangent (not normalised) over the parts `sel` picks of a unit whose parts have
/// `lens` elements; zeros elsewhere.
pub(super) fn gaussian(rng: &mut StdRng, lens: [usize; 3], sel: [bool; 3]) -> Tangent {
    use rand::Rng;
    std::array::from_fn(|p| {
        (0..lens[p])
            .map(|_| {
                if sel[p] {
                    // Box-Muller: a standard normal from two uniforms.
                    let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                } else {
                    0.0
                }
            })
            .collect()
    })
}

/// `sum_j c_j x_j` of flat vectors.
fn combine_flat(xs: &[Vec<f64>], c: &[f64]) -> Vec<f64> {
    (0..xs[0].len())
        .map(|e| xs.iter().zip(c).map(|(x, cj)| cj * x[e]).sum())
        .collect()
}

/// Removes from each of `ts` its components along the orthonormal `basis` (twice: the second
/// pass removes what rounding left of the first).
fn project_out(ts: &mut [Tangent], basis: &[Tangent]) {
    for _ in 0..2 {
        for t in ts.iter_mut() {
            for u in basis {
                let c = tangent_dot(t, u);
                t.iter_mut()
                    .zip(u)
                    .for_each(|(tp, up)| tp.iter_mut().zip(up).for_each(|(x, y)| *x -= c * y));
            }
        }
    }
}

/// Most basis vectors one unit keeps before a restart (from its top [`BLOCK`] Ritz vectors).
const MAX_BASIS: usize = 8 * BLOCK;

/// One unit's iteration state: a block Krylov basis of `J^T J` (orthonormal), `J` and
/// `J^T J` of each basis vector, and the next block to apply.
struct Subspace {
    vs: Vec<Tangent>,
    basis: Vec<Tangent>,
    /// `J b` of each basis vector `b`.
    jb: Vec<Vec<f64>>,
    /// `J^T J b` of each basis vector `b`.
    zb: Vec<Tangent>,
    /// The top [`BLOCK`] eigenvectors of the projected `J^T J` (coefficients over the basis).
    ritz_vectors: Vec<Vec<f64>>,
    est: SpectralEstimate,
    top: Tangent,
    /// Consecutive iterations that met the stopping test (one alone can be a fluke of a small
    /// step between two 16-bit rounded products).
    calm: usize,
    done: bool,
}

impl Subspace {
    fn new(mut vs: Vec<Tangent>) -> Subspace {
        orthonormalise(&mut vs);
        let top = vs.first().cloned().unwrap_or_default();
        Subspace {
            done: vs.is_empty(),
            vs,
            basis: Vec::new(),
            jb: Vec::new(),
            zb: Vec::new(),
            ritz_vectors: Vec::new(),
            est: SpectralEstimate {
                sigma: f64::NAN,
                converged: false,
                iterations: 0,
                last_rel_change: f64::INFINITY,
            },
            top,
            calm: 0,
        }
    }

    /// Adds the block just applied (`ws = J V`) to the basis, then Rayleigh-Ritz over the whole
    /// basis `B`: `G = (J B)^T (J B) = B^T J^T J B`; its top eigenpair `(theta, y)` gives the
    /// Ritz vector `u = B y` and `|J u| = sqrt(theta) <= sigma`. Returns `y` and
    /// `sqrt(theta)`, or None when the unit is finished (NaN, or `J` zero).
    fn ritz(&mut self, it: usize, ws: &[Vec<f64>]) -> Option<(Vec<f64>, f64)> {
        self.est.iterations = it;
        self.basis.append(&mut self.vs);
        self.jb.extend(ws.iter().cloned());
        let n = self.basis.len();
        let g = nalgebra::DMatrix::from_fn(n, n, |a, b| dot(&self.jb[a], &self.jb[b]));
        if !g.iter().all(|x| x.is_finite()) {
            // A NaN or inf reached the output: report it, never loop on it.
            self.est.sigma = f64::NAN;
            self.done = true;
            return None;
        }
        let eig = g.symmetric_eigen();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        self.ritz_vectors = order
            .iter()
            .take(BLOCK)
            .map(|&i| eig.eigenvectors.column(i).as_slice().to_vec())
            .collect();
        let theta = eig.eigenvalues[order[0]].max(0.0);
        let y = self.ritz_vectors[0].clone();
        self.top = combine(&self.basis, &y);
        if theta == 0.0 {
            // J V = 0 for generic start vectors: J is 0 on the selected inputs.
            self.est = SpectralEstimate {
                sigma: 0.0,
                converged: true,
                iterations: it,
                last_rel_change: 0.0,
            };
            self.done = true;
            return None;
        }
        Some((y, theta.sqrt()))
    }

    /// The step after `ritz`: `zs = J^T J V` of the block just applied, `(y, lo)` from `ritz`.
    fn advance(&mut self, zs: Vec<Tangent>, (y, lo): (Vec<f64>, f64), s: &Settings) {
        self.zb.extend(zs.iter().cloned());
        // J^T J u = Z y: |J^T J u| <= sigma^2 and |J u|^2 <= |J^T J u|, so sqrt(|Z y|) is the
        // tighter lower bound; the two agree only at a singular vector.
        let hi = tangent_norm(&combine(&self.zb, &y)).sqrt();
        if !hi.is_finite() {
            self.est.sigma = lo;
            self.done = true;
            return;
        }
        let sigma = hi.max(lo);
        let gap = (sigma - lo) / sigma;
        let change = (sigma - self.est.sigma).abs() / sigma;
        let prev_change = self.est.last_rel_change;
        self.est.sigma = sigma;
        self.est.last_rel_change = if change.is_nan() {
            f64::INFINITY
        } else {
            change
        };
        // The estimate approaches sigma geometrically: with successive changes c' < c the
        // distance still to go is about c' r / (1 - r), r = c' / c, which exceeds c' when
        // convergence is slow (r > 1/2). Stop on that distance and on the two bounds' gap,
        // both within the tolerance on two iterations in a row.
        let c = self.est.last_rel_change;
        let r = c / prev_change;
        let to_go = if r < 1.0 { c.max(c * r / (1.0 - r)) } else { c };
        self.calm = if to_go.max(gap) <= s.rel_tol {
            self.calm + 1
        } else {
            0
        };
        if self.calm >= 2 {
            self.est.converged = true;
            self.done = true;
            return;
        }
        // The next block: J^T J of the block just applied, orthogonal to the basis (the Krylov
        // space grows by a block per iteration). A full basis restarts from the top Ritz
        // vectors (their J and J^T J are combinations of the basis vectors'), continuing with
        // their J^T J.
        let mut next = zs;
        if self.basis.len() + BLOCK > MAX_BASIS {
            let ys = std::mem::take(&mut self.ritz_vectors);
            self.basis = ys.iter().map(|y| combine(&self.basis, y)).collect();
            self.jb = ys.iter().map(|y| combine_flat(&self.jb, y)).collect();
            self.zb = ys.iter().map(|y| combine(&self.zb, y)).collect();
            next = self.zb.clone();
        }
        project_out(&mut next, &self.basis);
        orthonormalise(&mut next);
        self.vs = next;
        // Every new direction vanished: the basis holds an invariant subspace of J^T J (a small
        // problem whose inputs the basis spans), so the Ritz value is exact.
        if self.vs.is_empty() {
            self.est.converged = true;
            self.done = true;
        }
    }
}

/// The estimate and the unit top Ritz vector of every unit of `full`,
/// each started from [`BLOCK`] Gaussian vectors of its own generator. `rebuild(kept)` makes the
/// stack of a subset of the units (in the given order) when at most half of them still run.
pub(super) fn top_singular_all<'b, B: Backend, T: Element, R>(
    full: &Stack<'b, B, T>,
    rebuild: &R,
    rngs: &mut [StdRng],
    s: &Settings,
) -> Result<Vec<Top>>
where
    R: Fn(&[usize]) -> Result<Stack<'b, B, T>>,
{
    let lens = full.zero_tangent().map(|p| p.len());
    let sel = full.sel();
    let mut st: Vec<Subspace> = rngs
        .iter_mut()
        .map(|rng| Subspace::new((0..BLOCK).map(|_| gaussian(rng, lens, sel)).collect()))
        .collect();
    // `order[i]`: the unit in place i of the current stack.
    let mut order: Vec<usize> = (0..st.len()).collect();
    let mut smaller: Option<Stack<'b, B, T>> = None;
    for it in 1..=s.max_iters {
        let running: Vec<usize> = order.iter().copied().filter(|&u| !st[u].done).collect();
        if running.is_empty() {
            break;
        }
        if running.len() * 2 <= order.len() && running.len() < order.len() {
            smaller = Some(rebuild(&running)?);
            order = running;
        }
        let stack = smaller.as_ref().unwrap_or(full);
        let idle: &[Tangent] = &[];
        let vs: Vec<&[Tangent]> = order
            .iter()
            .map(|&u| if st[u].done { idle } else { &st[u].vs[..] })
            .collect();
        let ws = stack.jv(&vs)?;
        let mut steps: Vec<Option<(Vec<f64>, f64)>> = Vec::with_capacity(order.len());
        for (i, &u) in order.iter().enumerate() {
            steps.push(if st[u].done {
                None
            } else {
                st[u].ritz(it, &ws[i])
            });
        }
        let none: &[Vec<f64>] = &[];
        let cs: Vec<&[Vec<f64>]> = steps
            .iter()
            .zip(&ws)
            .map(|(step, w)| if step.is_some() { &w[..] } else { none })
            .collect();
        let zs = stack.jtu(&cs)?;
        for ((i, &u), step) in order.iter().enumerate().zip(steps) {
            if let Some(step) = step {
                st[u].advance(zs[i].clone(), step, s);
            }
        }
    }
    Ok(st
        .into_iter()
        .map(|x| {
            let n = tangent_norm(&x.top);
            let top = if n > 0.0 && n.is_finite() {
                x.top.map(|p| p.iter().map(|v| v / n).collect())
            } else {
                x.top
            };
            (x.est, top)
        })
        .collect())
}

/// `run` over the items of every unit (`items[u]`, any number each) in launches of `batch`:
/// each call gets the next `batch` items of every unit; the results come back per unit, in order.
pub(super) fn in_batches<X, Y>(
    batch: usize,
    items: &[Vec<X>],
    mut run: impl FnMut(&[&[X]]) -> Result<Vec<Vec<Y>>>,
) -> Result<Vec<Vec<Y>>> {
    let count = items.iter().map(Vec::len).max().unwrap_or(0);
    let mut out: Vec<Vec<Y>> = items.iter().map(|_| Vec::new()).collect();
    let mut from = 0;
    while from < count {
        let to = (from + batch).min(count);
        let part: Vec<&[X]> = items
            .iter()
            .map(|x| &x[from.min(x.len())..to.min(x.len())])
            .collect();
        for (u, ys) in run(&part)?.into_iter().enumerate() {
            out[u].extend(ys);
        }
        from = to;
    }
    Ok(out)
}

/// Per unit `u`, `|J_u t|` for each of its tangents `samples[u]` (any number), in launches of
/// the stack's batch.
pub(super) fn gains<B: Backend, T: Element>(
    stack: &Stack<'_, B, T>,
    samples: &[Vec<Tangent>],
) -> Result<Vec<Vec<f64>>> {
    in_batches(stack.batch(), samples, |part| {
        let ws = stack.jv(part)?;
        Ok(ws
            .iter()
            .map(|w| w.iter().map(|x| norm(x)).collect())
            .collect())
    })
}
