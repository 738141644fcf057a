//! The backward run the ops tests share: host inputs uploaded to a fresh emulated device, the
//! gradients and the workspace poisoned with NaN (so an element the kernels do not write
//! fails), one `Attention::backward` call, the gradients downloaded. (A module of the `ops`
//! test binary.)

#![allow(dead_code)]

use flashmha::api::{Attention, BwdArgs};
use flashmha::backend::emulator::EmulatorBackend;
use flashmha::backend::Backend;
use flashmha::common::element::Element;
use flashmha::ops::backward::BwdPlan;
use flashmha::KernelTarget;

/// The host inputs of one padded backward run, each laid out as the plan's shape says.
pub struct BwdHost<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub o: &'a [T],
    pub d_o: &'a [T],
    /// f32, the forward's.
    pub lse: &'a [f32],
}

/// dQ, dK, dV buffers of `lens` elements after `plan` ran on `h` (any failure panics).
pub fn emulated_backward<T: Element>(
    plan: &BwdPlan,
    h: &BwdHost<T>,
    lens: [usize; 3],
) -> [Vec<T>; 3] {
    emulated_backward_with_sinks(plan, h, lens, None).0
}

/// [`emulated_backward`] with the forward's `sinks` (`[hq]`) given, and d(sink) (`[hq]`,
/// poisoned first; empty without sinks).
pub fn emulated_backward_with_sinks<T: Element>(
    plan: &BwdPlan,
    h: &BwdHost<T>,
    lens: [usize; 3],
    sinks: Option<&[f32]>,
) -> ([Vec<T>; 3], Vec<f32>) {
    let be = EmulatorBackend::new(KernelTarget::Ampere);
    let s = be.stream().unwrap();
    let up = |x: &[T]| be.upload(&s, x).unwrap();
    let (q, k, v, o, d_o) = (up(h.q), up(h.k), up(h.v), up(h.o), up(h.d_o));
    let lse = be.upload(&s, h.lse).unwrap();
    let [mut dq, mut dk, mut dv] = lens.map(|n| up(&vec![T::from_f32(f32::NAN); n]));
    let mut ws = be
        .upload(&s, &vec![f32::NAN; plan.workspace_len()])
        .unwrap();
    let z = sinks.map(|x| be.upload(&s, x).unwrap());
    let mut dz = sinks.map(|x| be.upload(&s, &vec![f32::NAN; x.len()]).unwrap());
    let args = BwdArgs::new(
        (&q, &k, &v),
        (&o, &lse),
        &d_o,
        (&mut dq, &mut dk, &mut dv),
        &mut ws,
    );
    let args = match (&z, dz.as_mut()) {
        (Some(z), Some(dz)) => args.sinks(z).sink_grads(dz),
        _ => args,
    };
    be.backward(&s, plan, args).unwrap();
    let d_sinks = dz.map(|b| be.download(&s, &b).unwrap());
    (
        [&dq, &dk, &dv].map(|b| be.download(&s, b).unwrap()),
        d_sinks.unwrap_or_default(),
    )
}
