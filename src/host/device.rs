//! The backends as the host runner ([`super::runner`]) uses them: any [`Backend`] (the
//! emulator's [`EmulatorBackend`] or the [`CudaBackend`]) that can also say what its last call's
//! launches reported ([`HarnessBackend`]), and one run's [`Session`] on it: uploads, outputs
//! poisoned with the one [`POISON_BYTE`], read backs, and the verdict of a call (an emulator
//! finding is a report for the judge, not an error). The runner drives the ops through the same
//! calls a server makes ([`crate::api::Attention`]). For checks, benchmarks and tests only.

use crate::backend::emulator::EmulatorBackend;
use crate::backend::{Backend, Pod};
use crate::common::error::{EmulatorError, Error, Result};
use crate::cuda::CudaBackend;
use crate::emulator::LaunchReport;

/// The one poison byte: every output buffer starts as all-ones bytes, a NaN in f16, bf16 and
/// f32 alike, so an element the kernel fails to write cannot pass a comparison. A NaN the
/// kernel writes has another pattern (PTX's canonical NaN is `0x7fff_ffff`).
pub const POISON_BYTE: u8 = 0xFF;

/// A backend the host runner runs on: a [`Backend`] whose last call's launch reports (findings
/// and counters) can be read.
pub trait HarnessBackend: Backend {
    /// The report of each launch of the last call, in order (none on a GPU).
    fn reports(&self) -> Vec<LaunchReport>;
}

impl HarnessBackend for EmulatorBackend {
    fn reports(&self) -> Vec<LaunchReport> {
        self.last_reports().into_iter().map(|(_, r)| r).collect()
    }
}

impl HarnessBackend for CudaBackend {
    fn reports(&self) -> Vec<LaunchReport> {
        Vec::new()
    }
}

/// One run on a backend: its stream, and the uploads and read backs of host data.
pub struct Session<'b, B: HarnessBackend> {
    pub backend: &'b B,
    pub stream: B::Stream,
}

impl<'b, B: HarnessBackend> Session<'b, B> {
    pub fn new(backend: &'b B) -> Result<Self> {
        Ok(Session {
            backend,
            stream: backend.stream()?,
        })
    }

    /// A buffer holding `data`.
    pub fn put<T: Pod>(&self, data: &[T]) -> Result<B::Buffer<T>> {
        self.backend.upload(&self.stream, data)
    }

    /// [`Session::put`] of optional data.
    pub fn put_opt<T: Pod>(&self, data: Option<&[T]>) -> Result<Option<B::Buffer<T>>> {
        data.map(|d| self.put(d)).transpose()
    }

    /// An output buffer of `n` elements of `T`, every byte [`POISON_BYTE`].
    pub fn poisoned<T: Pod>(&self, n: usize) -> Result<B::Buffer<T>> {
        let bytes = n
            .checked_mul(std::mem::size_of::<T>())
            .ok_or(Error::SizeOverflow {
                what: "a poisoned output buffer",
            })?;
        self.put::<T>(&bytemuck::pod_collect_to_vec(&vec![POISON_BYTE; bytes]))
    }

    /// A poisoned output when `n` is given.
    pub fn poisoned_opt<T: Pod>(&self, n: Option<usize>) -> Result<Option<B::Buffer<T>>> {
        n.map(|n| self.poisoned(n)).transpose()
    }

    /// The contents of `b` once every queued launch has run.
    pub fn get<T: Pod>(&self, b: &B::Buffer<T>) -> Result<Vec<T>> {
        self.backend.download(&self.stream, b)
    }

    /// [`Session::get`] of an optional buffer.
    pub fn get_opt<T: Pod>(&self, b: Option<&B::Buffer<T>>) -> Result<Option<Vec<T>>> {
        b.map(|b| self.get(b)).transpose()
    }

    /// The reports of a call just made (`call` is its result): a kernel finding is kept in the
    /// reports for the judge (the outputs are read back as they are), any other error is the
    /// run's error.
    pub fn reports(&self, call: Result<()>) -> Result<Vec<LaunchReport>> {
        match call {
            Ok(()) | Err(Error::Emulator(EmulatorError::KernelFinding { .. })) => {
                Ok(self.backend.reports())
            }
            Err(e) => Err(e),
        }
    }
}
