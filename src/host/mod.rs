//! Host-data harness, owned by neither backend: a concrete problem with its sequence lengths
//! ([`problem`]), host inputs and outputs, and the one runner ([`runner`]) that runs every op
//! from host data on any backend ([`device::HarnessBackend`]: the emulator or a GPU): upload
//! inputs, poison outputs with one value, launch through the calls a server makes, read back.
//! [`emulated`] and [`emulated_decode`] are its entry points on a fresh emulator device. For
//! checks, benchmarks, the CLI and the tests; servers use the backends on their own buffers.

#[cfg(feature = "emulator")]
pub mod device;
#[cfg(feature = "emulator")]
pub mod emulated;
#[cfg(feature = "emulator")]
pub mod emulated_decode;
pub mod problem;
#[cfg(feature = "emulator")]
pub mod runner;

/// A 16-bit output element the kernel did not write: every byte of every output starts as
/// `device::POISON_BYTE` (0xFF), a NaN in f16 and bf16.
pub const POISON_U16: u16 = 0xFFFF;

/// The bits of an f32 output element the kernel did not write (all ones: a NaN, and not the
/// pattern of a NaN the kernels compute).
pub const POISON_F32_BITS: u32 = u32::MAX;

/// Host-side inputs of one forward call; element types are raw 16-bit patterns of the
/// problem's dtype (`half::f16::to_bits` / `half::bf16::to_bits`).
#[derive(Debug, Clone, Default)]
pub struct HostInputs {
    pub q: Vec<u16>,
    pub k: Vec<u16>,
    pub v: Vec<u16>,
    pub alibi_slopes: Option<Vec<f32>>,
    pub head_gates: Option<Vec<f32>>,
    /// Attention-sink logits `[hq]`.
    pub sinks: Option<Vec<f32>>,
}

impl HostInputs {
    /// q, k, v of `problem` with values uniform in [-1, 1) rounded to its dtype (never all
    /// zeros), drawn from `seed`; no ALiBi slopes or gates.
    #[cfg(feature = "reference")]
    pub fn random(problem: &problem::FwdProblem, seed: u64) -> HostInputs {
        use rand::Rng;
        Self::drawn(problem, seed, |rng| rng.random_range(-1.0..1.0))
    }

    /// q, k, v of `problem` drawn from the standard normal N(0, 1) (Box-Muller over `seed`'s
    /// uniform stream), rounded to its dtype: the inputs instruction counts are quoted with (a
    /// row max grows more often than with uniform values in [-1, 1), and each growth costs the
    /// O rescale, so non-tensor counts depend on the distribution).
    #[cfg(feature = "reference")]
    pub fn random_normal(problem: &problem::FwdProblem, seed: u64) -> HostInputs {
        use rand::Rng;
        Self::drawn(problem, seed, |rng| {
            // 1 - u in (0, 1]: the log is finite.
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
    }

    /// q, k, v of `problem`, each element `sample`d from `seed`'s stream (q, then k, then v)
    /// and rounded to the dtype; no ALiBi slopes or gates.
    #[cfg(feature = "reference")]
    fn drawn(
        problem: &problem::FwdProblem,
        seed: u64,
        mut sample: impl FnMut(&mut rand::rngs::StdRng) -> f32,
    ) -> HostInputs {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut draw = |n: usize| -> Vec<u16> {
            (0..n)
                .map(|_| problem.dtype.bits_from_f32(sample(&mut rng)))
                .collect()
        };
        HostInputs {
            q: draw(problem.q.len),
            k: draw(problem.k.len),
            v: draw(problem.v.len),
            alibi_slopes: None,
            head_gates: None,
            sinks: None,
        }
    }

    /// Checks the host buffers against `problem`'s lengths.
    pub fn check_against(&self, problem: &problem::FwdProblem) -> crate::common::error::Result<()> {
        use crate::common::error::TensorName;
        check_len(TensorName::Q, problem.q.len, self.q.len())?;
        check_len(TensorName::K, problem.k.len, self.k.len())?;
        check_len(TensorName::V, problem.v.len, self.v.len())?;
        let opt_len = |v: &Option<Vec<f32>>| v.as_ref().map_or(0, Vec::len);
        check_len(
            TensorName::AlibiSlopes,
            problem.alibi_len.unwrap_or(0),
            opt_len(&self.alibi_slopes),
        )?;
        check_len(
            TensorName::HeadGates,
            problem.gates_len.unwrap_or(0),
            opt_len(&self.head_gates),
        )?;
        check_len(
            TensorName::Sinks,
            problem.sinks_len.unwrap_or(0),
            opt_len(&self.sinks),
        )
    }
}

/// A host buffer must hold exactly the `expected` elements the problem describes.
pub(crate) fn check_len(
    tensor: crate::common::error::TensorName,
    expected: usize,
    found: usize,
) -> crate::common::error::Result<()> {
    if expected != found {
        return Err(crate::common::error::Error::DimMismatch {
            tensor,
            dim: crate::common::error::Dim::Len,
            expected,
            found,
        });
    }
    Ok(())
}

/// What the kernel wrote, read back.
#[derive(Debug, Clone)]
pub struct HostOutputs {
    /// Raw 16-bit patterns of the problem's dtype, same layout as the problem's `o`.
    pub o: Vec<u16>,
    pub lse: Option<Vec<f32>>,
    pub entropy: Option<Vec<f32>>,
}
