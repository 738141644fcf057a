//! The backward (issue 21) on layouts other than the contiguous one and on NaN-poisoned inputs,
//! on the emulator:
//! - head-major `[b, h, s, d]` inputs with padded rows, and gradients in yet another strided
//!   layout, give bitwise the gradients of the contiguous run of the same values (the kernels
//!   only address differently);
//! - a NaN in one query row (or in its output gradient) reaches every gradient that row touches
//!   (its own dQ row, the dK and dV of the keys it sees in its kv head), never turns into a zero,
//!   and never leaks into other heads, items or dQ rows (under a causal mask, keys of its kv head
//!   that it does not see may turn NaN through the tile products' 0 * NaN; not checked).

use crate::backward_support::{emulated_backward, BwdHost};
use crate::emulator_support::{rng, seed};
use flashmha::api::Attention;
use flashmha::backend::emulator::EmulatorBackend;
use flashmha::backend::Backend;
use flashmha::common::dtype::DType;
use flashmha::common::geometry::Strides;
use flashmha::common::options::AttnOptions;
use flashmha::ops::backward::{BwdPlan, BwdShape, GradStrides};
use flashmha::ops::forward::problem::QkvoStrides;
use flashmha::{FwdShape, Heads, KernelTarget};
use half::f16;
use rand::Rng;

/// One padded problem (batch 2): dims and the contiguous `[b, s, h, d]` values.
struct Problem {
    sq: usize,
    sk: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    causal: bool,
    q: Vec<f16>,
    k: Vec<f16>,
    v: Vec<f16>,
    o: Vec<f16>,
    lse: Vec<f32>,
    d_o: Vec<f16>,
}

pub(crate) const BATCH: usize = 2;

/// `x` (contiguous `[b, s, h, d]`) placed at `strides` in a buffer of `len` elements filled with
/// -7 elsewhere (also what the JVP layout test in `jvp_props.rs` uses).
pub(crate) fn scatter(
    x: &[f16],
    (s, h, d): (usize, usize, usize),
    st: Strides,
    len: usize,
) -> Vec<f16> {
    let mut out = vec![f16::from_f32(-7.0); len];
    for (i, &val) in x.iter().enumerate() {
        let (b, r, hh, c) = (i / (s * h * d), (i / (h * d)) % s, (i / d) % h, i % d);
        let at = b as i64 * st.batch + r as i64 * st.row + hh as i64 * st.head + c as i64;
        out[at as usize] = val;
    }
    out
}

/// `[b, h, s, d]` with 8 elements of padding after each row.
pub(crate) fn head_major(s: usize, h: usize, d: usize) -> Strides {
    Strides {
        batch: (h * s * (d + 8)) as i64,
        head: (s * (d + 8)) as i64,
        row: (d + 8) as i64,
    }
}

/// `[b, s, h, d]` with 16 elements between heads and a spare row per item.
pub(crate) fn padded(s: usize, h: usize, d: usize) -> Strides {
    Strides {
        batch: ((s + 1) * h * (d + 16)) as i64,
        row: (h * (d + 16)) as i64,
        head: (d + 16) as i64,
    }
}

/// The contiguous `[b, s, h, d]` values of a strided buffer.
fn gather(x: &[f16], (s, h, d): (usize, usize, usize), st: Strides) -> Vec<f16> {
    (0..BATCH * s * h * d)
        .map(|i| {
            let (b, r, hh, c) = (i / (s * h * d), (i / (h * d)) % s, (i / d) % h, i % d);
            x[(b as i64 * st.batch + r as i64 * st.row + hh as i64 * st.head + c as i64) as usize]
        })
        .collect()
}

/// Elements a buffer laid out at `st` needs for `[BATCH, s, h, d]`.
pub(crate) fn extent((s, h, d): (usize, usize, usize), st: Strides) -> usize {
    ((BATCH - 1) as i64 * st.batch + (s - 1) as i64 * st.row + (h - 1) as i64 * st.head) as usize
        + d
}

impl Problem {
    fn draw(seed: u64, causal: bool) -> Problem {
        let mut r = rng(seed);
        let (sq, sk) = (r.random_range(1..=40), r.random_range(1..=40));
        let hkv = r.random_range(1..=2);
        let hq = hkv * r.random_range(1..=3);
        let d = [32usize, 64][r.random_range(0..2)];
        let mut draw = |n: usize| -> Vec<f16> {
            (0..n)
                .map(|_| f16::from_f32(r.random_range(-1.0..1.0)))
                .collect()
        };
        let q = draw(BATCH * sq * hq * d);
        let (k, v) = (draw(BATCH * sk * hkv * d), draw(BATCH * sk * hkv * d));
        let d_o = draw(BATCH * sq * hq * d);
        let mut p = Problem {
            sq,
            sk,
            hq,
            hkv,
            d,
            causal,
            q,
            k,
            v,
            o: Vec::new(),
            lse: Vec::new(),
            d_o,
        };
        p.forward();
        p
    }

    fn shape(&self) -> FwdShape {
        FwdShape::padded(
            BATCH,
            self.sq,
            self.sk,
            Heads::gqa(self.hq, self.hkv),
            self.d,
        )
        .with_options(AttnOptions {
            causal: self.causal,
            ..AttnOptions::default()
        })
    }

    /// O and the LSE of the contiguous forward (through the forward's plan on the emulator).
    fn forward(&mut self) {
        let be = EmulatorBackend::new(KernelTarget::Ampere);
        let s = be.stream().unwrap();
        let plan = flashmha::FwdPlan::new(DType::F16, &self.shape()).unwrap();
        let (q, k, v) = (
            be.upload(&s, &self.q).unwrap(),
            be.upload(&s, &self.k).unwrap(),
            be.upload(&s, &self.v).unwrap(),
        );
        let mut o = be.alloc_zeros::<f16>(&s, self.q.len()).unwrap();
        let mut lse = be
            .alloc_zeros::<f32>(&s, BATCH * self.hq * self.sq)
            .unwrap();
        let args = flashmha::api::FwdArgs::new(&q, &k, &v, &mut o).lse(&mut lse);
        be.run(&s, &plan, args).unwrap();
        self.o = be.download(&s, &o).unwrap();
        self.lse = be.download(&s, &lse).unwrap();
    }

    /// dQ, dK, dV (contiguous values) of a run with the inputs at `inputs` and the gradients at
    /// `grads` strides.
    fn backward(&self, inputs: QkvoStrides, grads: GradStrides) -> [Vec<f16>; 3] {
        let (qd, kd) = ((self.sq, self.hq, self.d), (self.sk, self.hkv, self.d));
        let shape = BwdShape::new(self.shape().with_strides(inputs)).with_grad_strides(grads);
        let plan = BwdPlan::new(DType::F16, &shape).unwrap();
        let place = |x: &[f16], dims, st| scatter(x, dims, st, extent(dims, st));
        let (q, k, v) = (
            place(&self.q, qd, inputs.q),
            place(&self.k, kd, inputs.k),
            place(&self.v, kd, inputs.v),
        );
        let (o, d_o) = (
            place(&self.o, qd, inputs.o),
            place(&self.d_o, qd, grads.d_o),
        );
        let host = BwdHost {
            q: &q,
            k: &k,
            v: &v,
            o: &o,
            d_o: &d_o,
            lse: &self.lse,
        };
        let lens = [
            extent(qd, grads.dq),
            extent(kd, grads.dk),
            extent(kd, grads.dv),
        ];
        let [dq, dk, dv] = emulated_backward(&plan, &host, lens);
        [
            gather(&dq, qd, grads.dq),
            gather(&dk, kd, grads.dk),
            gather(&dv, kd, grads.dv),
        ]
    }

    fn contiguous(&self) -> (QkvoStrides, GradStrides) {
        let q = Strides::contiguous(self.sq, self.hq, self.d);
        let k = Strides::contiguous(self.sk, self.hkv, self.d);
        (
            QkvoStrides { q, k, v: k, o: q },
            GradStrides {
                d_o: q,
                dq: q,
                dk: k,
                dv: k,
            },
        )
    }
}

pub(crate) fn bits(x: &[f16]) -> Vec<u16> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Head-major inputs with padded rows and gradients with padded heads give bitwise the
/// contiguous run's gradients, and never write the padding.
#[test]
fn strided_and_head_major_layouts_give_the_contiguous_gradients() {
    let seed = seed();
    let p = Problem::draw(seed, seed.is_multiple_of(2));
    let (cq, cg) = p.contiguous();
    let want = p.backward(cq, cg);
    assert!(want.iter().flatten().all(|x| x.is_finite()), "seed {seed}");
    let (sq, sk, hq, hkv, d) = (p.sq, p.sk, p.hq, p.hkv, p.d);
    let head_major = |s: usize, h: usize| head_major(s, h, d);
    let padded = |s: usize, h: usize| padded(s, h, d);
    let inputs = QkvoStrides {
        q: head_major(sq, hq),
        k: head_major(sk, hkv),
        v: padded(sk, hkv),
        o: padded(sq, hq),
    };
    let grads = GradStrides {
        d_o: head_major(sq, hq),
        dq: padded(sq, hq),
        dk: padded(sk, hkv),
        dv: head_major(sk, hkv),
    };
    let got = p.backward(inputs, grads);
    for (name, g, w) in [
        ("dq", &got[0], &want[0]),
        ("dk", &got[1], &want[1]),
        ("dv", &got[2], &want[2]),
    ] {
        assert_eq!(bits(g), bits(w), "seed {seed}: {name}");
    }
}

/// A NaN in q row `i` of head `h` (item 0), or in dO there, makes exactly dQ[i, h] and the dK,
/// dV rows of the keys row `i` sees in kv head `h / group` NaN (for a NaN in dO[i, c], dV's
/// column c only); every other gradient element is bitwise the clean run's, except (causal) the
/// dK, dV of keys in the same item and kv head that row `i` does not see, and its own dQ when it
/// sees no key, which the kernels' tile products may turn NaN (0 * NaN): the report of issue 21
/// names this.
#[test]
fn a_nan_input_reaches_exactly_the_gradients_it_touches() {
    let seed = seed();
    for (which, causal) in [("q", false), ("dO", false), ("q", true), ("dO", true)] {
        let mut p = Problem::draw(seed.wrapping_add(causal as u64), causal);
        let (cq, cg) = p.contiguous();
        let clean = p.backward(cq, cg);
        let mut r = rng(seed ^ 0x9e37);
        let (i, h, c) = (
            r.random_range(0..p.sq),
            r.random_range(0..p.hq),
            r.random_range(0..p.d),
        );
        let at = (i * p.hq + h) * p.d + c;
        match which {
            "q" => p.q[at] = f16::NAN,
            _ => p.d_o[at] = f16::NAN,
        }
        // The forward is re-run for a NaN q (its O and LSE row become NaN, as in training).
        if which == "q" {
            p.forward();
        }
        let got = p.backward(cq, cg);
        let kvh = h / (p.hq / p.hkv);
        // Keys row i sees (bottom-right aligned causal mask).
        let sees = |j: usize| !causal || j as i64 <= i as i64 + p.sk as i64 - p.sq as i64;
        let row_has_keys = (0..p.sk).any(sees);
        let expect_nan = |g: usize, x: usize| -> bool {
            if !row_has_keys {
                return false;
            }
            match g {
                0 => x / p.d == i * p.hq + h,
                _ => {
                    let (b, j, hh) = (
                        x / (p.sk * p.hkv * p.d),
                        (x / (p.hkv * p.d)) % p.sk,
                        (x / p.d) % p.hkv,
                    );
                    // dV_j = sum_i P_ij dO_i: a NaN in dO[i, c] reaches column c only; a NaN in
                    // q makes P_ij itself NaN, so every column.
                    let column = g == 1 || which == "q" || x % p.d == c;
                    b == 0 && hh == kvh && sees(j) && column
                }
            }
        };
        // Keys of the same item and kv head that row i does not see (causal): the tile products
        // multiply their zero dS / P by the NaN row (0 * NaN = NaN), so they are not checked.
        // Likewise the row's own dQ when it sees no key (its zero P times the NaN D).
        let unchecked = |g: usize, x: usize| -> bool {
            let (b, hh) = (x / (p.sk * p.hkv * p.d), (x / p.d) % p.hkv);
            match g {
                0 => x / p.d == i * p.hq + h,
                _ => causal && b == 0 && hh == kvh,
            }
        };
        for (g, name) in ["dq", "dk", "dv"].iter().enumerate() {
            for (x, (&a, &b)) in got[g].iter().zip(&clean[g]).enumerate() {
                if unchecked(g, x) && !expect_nan(g, x) {
                    continue;
                }
                if expect_nan(g, x) {
                    assert!(
                        a.is_nan(),
                        "seed {seed} NaN in {which} (row {i} head {h}, causal {causal}): {name}[{x}] = {a}"
                    );
                } else {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "seed {seed} NaN in {which} (row {i} head {h}, causal {causal}, sq {} sk {} hq {} hkv {} d {}): {name}[{x}] leaked", p.sq, p.sk, p.hq, p.hkv, p.d
                    );
                }
            }
        }
    }
}
