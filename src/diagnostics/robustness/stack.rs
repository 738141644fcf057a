//! Independent sub-problems of one layer ("units": one head alone, a KV group, a KV group with
//! one head gated off) run side by side in one launch of each kernel. A query head reads only
//! its own KV head, so heads placed next to each other in one call do not interact: unit `u`
//! owns query heads `u * gq .. (u + 1) * gq` and KV heads `u * gkv .. (u + 1) * gkv` of the
//! stacked call, and batch item `b` carries the `b`-th vector of every unit (the primal is the
//! same in every item). One JVP launch then applies the Jacobians of every unit to `batch`
//! vectors each, where one launch per head and vector did before: the emulator's per-launch
//! costs (binding, uploads, read backs) are paid once, and its CTAs spread over the host's
//! threads.
//!
//! Every tangent and cotangent is uploaded with unit RMS per element (scaled by
//! `sqrt(n) / |t|` per unit and item) and the result scaled back, so no 16-bit tangent
//! underflows.

use crate::api::{Attention, BwdArgs, FwdArgs, JvpArgs};
use crate::backend::Backend;
use crate::common::element::Element;
use crate::common::error::{Dim, Error, Result, TensorName};
use crate::ops::backward::{BwdPlan, BwdShape};
use crate::ops::forward::plan::FwdPlan;
use crate::ops::forward::problem::{FwdShape, Heads};
use crate::ops::jvp::{JvpPlan, JvpShape};

use super::{norm, tangent_norm, LayerInputs, Tangent};

/// One unit: the layer's query heads it holds (with each one's output gate, 0 or 1) and the
/// layer's KV heads they read (`q_heads.len() / kv_heads.len()` query heads per KV head).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Unit {
    pub q_heads: Vec<(usize, f32)>,
    pub kv_heads: Vec<usize>,
}

/// `$args` with the stack's ALiBi slopes and head gates, when it has them (the forward, JVP and
/// backward arguments each have both setters).
macro_rules! per_head {
    ($stack:expr, $args:expr) => {{
        let mut args = $args;
        if let Some(s) = &$stack.slopes {
            args = args.alibi_slopes(s);
        }
        if let Some(g) = &$stack.gates {
            args = args.head_gates(g);
        }
        args
    }};
}

/// Rows of a `[batch, seq, units * g, d]` tensor that unit `u` owns in item `b`: per sequence
/// row, one run of `g * d` elements.
fn unit_runs(
    (b, seq, units): (usize, usize, usize),
    run: usize,
    u: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..seq).map(move |i| {
        let start = ((b * seq + i) * units + u) * run;
        start..start + run
    })
}

/// `f(u, b)` for each item `b` of each unit's list `lists[u]`, per unit.
fn per_item<X, Y>(lists: &[&[X]], f: impl Fn(usize, usize) -> Y) -> Vec<Vec<Y>> {
    lists
        .iter()
        .enumerate()
        .map(|(u, list)| (0..list.len()).map(|b| f(u, b)).collect())
        .collect()
}

/// The forward, JVP and backward of a set of units at fixed inputs, on one backend.
pub(super) struct Stack<'b, B: Backend, T: Element> {
    be: &'b B,
    stream: B::Stream,
    units: usize,
    /// Vectors per unit in one launch.
    batch: usize,
    seq: [usize; 3],
    /// Elements of one unit's q, k, v: `[sq, gq, d]`, `[sk, gkv, d]`, `[sk, gkv, d]`.
    unit_len: [usize; 3],
    fwd: FwdPlan,
    jvp: JvpPlan,
    bwd: BwdPlan,
    /// One item's primal, rounded to T: q `[sq, units * gq, d]`, k, v `[sk, units * gkv, d]`.
    x: [Vec<f32>; 3],
    /// The primal repeated over the batch, and its forward (O and LSE, the backward's inputs).
    dev: [B::Buffer<T>; 3],
    o: B::Buffer<T>,
    lse: B::Buffer<f32>,
    /// Per unit, its output `[sq, gq, d]` (gated) at the primal.
    o_units: Vec<Vec<f64>>,
    slopes: Option<B::Buffer<f32>>,
    gates: Option<B::Buffer<f32>>,
    /// Which of (q, k, v) are perturbed.
    sel: [bool; 3],
}

impl<'b, B: Backend, T: Element> Stack<'b, B, T> {
    /// The units of `layer` stacked, `batch` vectors per launch (every unit has the same
    /// number of query and KV heads; `measure` checked the layer).
    pub fn new(
        be: &'b B,
        layer: &LayerInputs,
        units: &[Unit],
        batch: usize,
        sel: [bool; 3],
    ) -> Result<Self> {
        let first = units.first().ok_or(Error::EmptyDim {
            tensor: TensorName::Q,
            dim: Dim::Heads,
        })?;
        let (gq, gkv) = (first.q_heads.len(), first.kv_heads.len());
        let (d, n) = (layer.head_dim, units.len());
        let (sq, sk) = (layer.seqlen_q, layer.seqlen_k);
        let (hq, hkv) = (layer.heads.q, layer.heads.kv);
        let too_big = || Error::SizeOverflow {
            what: "the robustness stack",
        };
        let heads_q = n.checked_mul(gq).ok_or_else(too_big)?;
        let heads_kv = n.checked_mul(gkv).ok_or_else(too_big)?;
        // The plans first: they refuse a stack too large for the kernels' 32-bit indices
        // before anything is gathered.
        let shape = FwdShape::padded(batch, sq, sk, Heads::gqa(heads_q, heads_kv), d)
            .with_options(layer.options);
        let fwd = FwdPlan::new_for(be.target(), T::DTYPE, &shape)?;
        let jvp = JvpPlan::new_for(be.target(), T::DTYPE, &JvpShape::new(shape))?;
        let bwd = BwdPlan::new_for(be.target(), T::DTYPE, &BwdShape::new(shape))?;
        // One item: q [sq, units * gq, d] from the layer's [sq, hq, d]; k, v likewise.
        let gather =
            |src: &[f32], rows: usize, layer_heads: usize, pick: &dyn Fn(&Unit) -> Vec<usize>| {
                let mut out = Vec::new();
                for i in 0..rows {
                    for unit in units {
                        for h in pick(unit) {
                            let at = (i * layer_heads + h) * d;
                            out.extend(src[at..at + d].iter().map(|&v| T::from_f32(v).to_f32()));
                        }
                    }
                }
                out
            };
        let q_of = |u: &Unit| u.q_heads.iter().map(|&(h, _)| h).collect::<Vec<_>>();
        let kv_of = |u: &Unit| u.kv_heads.clone();
        let x = [
            gather(layer.q, sq, hq, &q_of),
            gather(layer.k, sk, hkv, &kv_of),
            gather(layer.v, sk, hkv, &kv_of),
        ];
        let stream = be.stream()?;
        let repeat = |p: &[f32]| -> Vec<T> {
            let one: Vec<T> = p.iter().map(|&v| T::from_f32(v)).collect();
            one.repeat(batch)
        };
        let dev = [
            be.upload(&stream, &repeat(&x[0]))?,
            be.upload(&stream, &repeat(&x[1]))?,
            be.upload(&stream, &repeat(&x[2]))?,
        ];
        let per_head = |f: &dyn Fn(&(usize, f32)) -> f32| -> Vec<f32> {
            units.iter().flat_map(|u| u.q_heads.iter().map(f)).collect()
        };
        let slopes = layer
            .alibi_slopes
            .map(|s| be.upload(&stream, &per_head(&|&(h, _)| s[h])))
            .transpose()?;
        let gated = units
            .iter()
            .any(|u| u.q_heads.iter().any(|&(_, g)| g != 1.0));
        let gates = if gated {
            Some(be.upload(&stream, &per_head(&|&(_, g)| g))?)
        } else {
            None
        };
        let mut stack = Stack {
            be,
            units: n,
            batch,
            seq: [sq, sk, sk],
            unit_len: [sq * gq * d, sk * gkv * d, sk * gkv * d],
            o: be.alloc_zeros::<T>(&stream, batch * x[0].len())?,
            lse: be.alloc_zeros::<f32>(&stream, fwd.extents().row_stats.max(1))?,
            stream,
            fwd,
            jvp,
            bwd,
            x,
            dev,
            o_units: Vec::new(),
            slopes,
            gates,
            sel,
        };
        let args = FwdArgs::new(&stack.dev[0], &stack.dev[1], &stack.dev[2], &mut stack.o)
            .lse(&mut stack.lse);
        let args = per_head!(stack, args);
        be.run(&stack.stream, &stack.fwd, args)?;
        let o = stack.download(&stack.o)?;
        stack.o_units = (0..n).map(|u| stack.gather(0, &o, 0, u)).collect();
        Ok(stack)
    }

    pub fn units(&self) -> usize {
        self.units
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Unit `u`'s output at the primal, `[sq, gq, d]`.
    pub fn output(&self, u: usize) -> &[f64] {
        &self.o_units[u]
    }

    /// Elements of unit `u`'s selected inputs, and their norm.
    pub fn selected(&self, u: usize) -> (usize, f64) {
        let mut n = 0;
        let mut sq = 0.0;
        for p in (0..3).filter(|&p| self.sel[p]) {
            let x = self.gather(0, &self.x[p], p, u);
            n += x.len();
            sq += x.iter().map(|x| x * x).sum::<f64>();
        }
        (n, sq.sqrt())
    }

    /// A zero tangent of one unit.
    pub fn zero_tangent(&self) -> Tangent {
        std::array::from_fn(|p| vec![0.0; self.unit_len[p]])
    }

    /// Which of (q, k, v) are perturbed.
    pub fn sel(&self) -> [bool; 3] {
        self.sel
    }

    fn download(&self, b: &B::Buffer<T>) -> Result<Vec<f64>> {
        Ok(self
            .be
            .download(&self.stream, b)?
            .iter()
            .map(|x| f64::from(x.to_f32()))
            .collect())
    }

    /// Unit `u`'s part of item `b` of a stacked tensor of part `p` (0 q / o, 1 k, 2 v).
    fn gather<X: Copy + Into<f64>>(&self, b: usize, big: &[X], p: usize, u: usize) -> Vec<f64> {
        let run = self.unit_len[p] / self.seq[p];
        unit_runs((b, self.seq[p], self.units), run, u)
            .flat_map(|r| big[r].iter().map(|&x| x.into()))
            .collect()
    }

    /// Writes `part * mul` (rounded to T) into unit `u`'s place of item `b` of a stacked tensor of part `p`.
    fn scatter(&self, b: usize, big: &mut [T], p: usize, u: usize, part: &[f64], mul: f64) {
        let run = self.unit_len[p] / self.seq[p];
        for (r, chunk) in unit_runs((b, self.seq[p], self.units), run, u).zip(part.chunks(run)) {
            for (dst, &x) in big[r].iter_mut().zip(chunk) {
                *dst = T::from_f32((x * mul) as f32);
            }
        }
    }

    /// Uploads the three stacked tensors (q, k, v or their tangents).
    fn upload3(&self, big: &[Vec<T>; 3]) -> Result<[B::Buffer<T>; 3]> {
        Ok([
            self.be.upload(&self.stream, &big[0])?,
            self.be.upload(&self.stream, &big[1])?,
            self.be.upload(&self.stream, &big[2])?,
        ])
    }

    fn zeros(&self, p: usize) -> Vec<T> {
        vec![T::from_f32(0.0); self.batch * self.x[p].len()]
    }

    /// Per unit `u`, `J_u t` for each of the (at most `batch`) tangents `ts[u]` (laid out like
    /// the unit's output); a zero tangent gives zeros.
    pub fn jv(&self, ts: &[&[Tangent]]) -> Result<Vec<Vec<Vec<f64>>>> {
        let mut big = [self.zeros(0), self.zeros(1), self.zeros(2)];
        let mut muls = vec![vec![0.0; self.batch]; self.units];
        for (u, list) in ts.iter().enumerate() {
            for (b, t) in list.iter().enumerate() {
                let n = tangent_norm(t);
                if n == 0.0 {
                    continue;
                }
                let len: usize = (0..3).filter(|&p| self.sel[p]).map(|p| t[p].len()).sum();
                muls[u][b] = (len as f64).sqrt() / n;
                for p in (0..3).filter(|&p| self.sel[p]) {
                    self.scatter(b, &mut big[p], p, u, &t[p], muls[u][b]);
                }
            }
        }
        let [dq, dk, dv] = self.upload3(&big)?;
        let len = self.batch * self.x[0].len();
        let mut o = self.be.alloc_zeros::<T>(&self.stream, len)?;
        let mut ot = self.be.alloc_zeros::<T>(&self.stream, len)?;
        let args = JvpArgs::new(
            (&self.dev[0], &self.dev[1], &self.dev[2]),
            (&dq, &dk, &dv),
            (&mut o, &mut ot),
        );
        let args = per_head!(self, args);
        self.be.jvp(&self.stream, &self.jvp, args)?;
        let out = self.download(&ot)?;
        Ok(per_item(ts, |u, b| {
            let mul = muls[u][b];
            if mul == 0.0 {
                return vec![0.0; self.unit_len[0]];
            }
            self.gather(b, &out, 0, u).iter().map(|x| x / mul).collect()
        }))
    }

    /// Per unit `u`, `J_u^T c` for each of the (at most `batch`) cotangents `cs[u]` (laid out
    /// like the unit's output), restricted to the selected inputs.
    pub fn jtu(&self, cs: &[&[Vec<f64>]]) -> Result<Vec<Vec<Tangent>>> {
        let mut d_o = self.zeros(0);
        let mut muls = vec![vec![0.0; self.batch]; self.units];
        for (u, list) in cs.iter().enumerate() {
            for (b, c) in list.iter().enumerate() {
                let n = norm(c);
                if n == 0.0 {
                    continue;
                }
                muls[u][b] = (c.len() as f64).sqrt() / n;
                self.scatter(b, &mut d_o, 0, u, c, muls[u][b]);
            }
        }
        let be = self.be;
        let d_o = be.upload(&self.stream, &d_o)?;
        let len = |p: usize| self.batch * self.x[p].len();
        let mut dq = be.alloc_zeros::<T>(&self.stream, len(0))?;
        let mut dk = be.alloc_zeros::<T>(&self.stream, len(1))?;
        let mut dv = be.alloc_zeros::<T>(&self.stream, len(2))?;
        let mut ws = be.alloc_zeros::<f32>(&self.stream, self.bwd.workspace_len().max(1))?;
        let args = BwdArgs::new(
            (&self.dev[0], &self.dev[1], &self.dev[2]),
            (&self.o, &self.lse),
            &d_o,
            (&mut dq, &mut dk, &mut dv),
            &mut ws,
        );
        let args = per_head!(self, args);
        be.backward(&self.stream, &self.bwd, args)?;
        let mut grads: [Vec<f64>; 3] = Default::default();
        for (p, buf) in [&dq, &dk, &dv].into_iter().enumerate() {
            if self.sel[p] {
                grads[p] = self.download(buf)?;
            }
        }
        Ok(per_item(cs, |u, b| {
            let mul = muls[u][b];
            std::array::from_fn(|p| {
                if self.sel[p] && mul != 0.0 {
                    let g = self.gather(b, &grads[p], p, u);
                    g.iter().map(|x| x / mul).collect()
                } else {
                    vec![0.0; self.unit_len[p]]
                }
            })
        }))
    }

    /// Per unit `u`, the forward at the primal plus each of the (at most `batch`) perturbations
    /// `deltas[u]` (rounded to T on upload): the change of the unit's output and the norm of the
    /// perturbation actually applied (after rounding).
    pub fn forward_change(&self, deltas: &[&[Tangent]]) -> Result<Vec<Vec<(f64, f64)>>> {
        let mut big: [Vec<T>; 3] = std::array::from_fn(|p| {
            let one: Vec<T> = self.x[p].iter().map(|&v| T::from_f32(v)).collect();
            one.repeat(self.batch)
        });
        let mut applied = vec![vec![0.0; self.batch]; self.units];
        for (u, list) in deltas.iter().enumerate() {
            for (b, delta) in list.iter().enumerate() {
                for p in 0..3 {
                    let x0 = self.gather(0, &self.x[p], p, u);
                    // The perturbed input as T holds it: what the forward reads.
                    let moved: Vec<f64> = x0
                        .iter()
                        .zip(&delta[p])
                        .map(|(x, d)| f64::from(T::from_f32((x + d) as f32).to_f32()))
                        .collect();
                    self.scatter(b, &mut big[p], p, u, &moved, 1.0);
                    applied[u][b] += moved
                        .iter()
                        .zip(&x0)
                        .map(|(m, x)| (m - x).powi(2))
                        .sum::<f64>();
                }
            }
        }
        let bufs = self.upload3(&big)?;
        let mut o = self
            .be
            .alloc_zeros::<T>(&self.stream, self.batch * self.x[0].len())?;
        let args = FwdArgs::new(&bufs[0], &bufs[1], &bufs[2], &mut o);
        let args = per_head!(self, args);
        self.be.run(&self.stream, &self.fwd, args)?;
        let out = self.download(&o)?;
        Ok(per_item(deltas, |u, b| {
            let o = self.gather(b, &out, 0, u);
            let change = o
                .iter()
                .zip(&self.o_units[u])
                .map(|(a, c)| (a - c).powi(2))
                .sum::<f64>()
                .sqrt();
            (change, applied[u][b].sqrt())
        }))
    }
}
