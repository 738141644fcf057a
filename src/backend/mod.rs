//! The two backends that run what a plan binds: [`cuda`] (cudarc, a real GPU) and [`emulator`]
//! (our PTX interpreter, anywhere), behind one trait, [`Backend`]. Neither knows any op: each has
//! a module cache, device buffers, an ordering handle (a stream) and one launch path for the
//! [`Launches`] a plan's `bind` returns, with the same params bytes of the same module images.
//! The ops' calls over any backend ([`crate::api`]) are written once on top of this trait, so a
//! server that is generic over `B: Backend` runs its attention calls on the emulator in its CI
//! and on CUDA in production.

pub mod cuda;
#[cfg(feature = "emulator")]
pub mod emulator;

use crate::common::binding::DevBuf;
use crate::common::error::{Error, Result, TensorName};
use crate::common::launch::Launches;
use crate::common::target::KernelTarget;
use crate::ops::forward::tma::TmaMapDesc;

/// What a device buffer may hold: plain bits, valid as zeros (the 16-bit floats, f32, i32, u8).
pub trait Pod:
    bytemuck::Pod + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits
{
}
impl<T: bytemuck::Pod + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> Pod for T {}

/// One device: its kernels, its memory and its launch path. Implemented by
/// [`cuda::CudaBackend`] and [`emulator::EmulatorBackend`]; the ops' calls are the provided
/// methods of [`crate::api::Attention`], for every backend at once.
pub trait Backend {
    /// The ordering handle calls are queued on: a CUDA stream, or the emulator's stream (which
    /// runs each launch when it is queued, in order).
    type Stream;
    /// An owned device buffer of `T` (`CudaSlice<T>`, [`emulator::EmuBuffer<T>`]); a backend's
    /// views of one (`CudaView`, [`emulator::EmuView`]) are arguments too.
    type Buffer<T: Pod>: Read<Self, T> + Write<Self, T>;
    /// What keeps a bound buffer's use ordered on its stream until the launch is queued (cudarc's
    /// stream events; nothing on the emulator).
    type Guard<'a>;

    /// The kernel family this device runs: plan with `Plan::new_for(backend.target(), ..)`.
    fn target(&self) -> KernelTarget;
    /// Streaming multiprocessors (the input of decode's split heuristic).
    fn sm_count(&self) -> Result<u32>;
    /// The default stream of this backend.
    fn stream(&self) -> Result<Self::Stream>;
    /// `n` elements of `T`, zeroed.
    fn alloc_zeros<T: Pod>(&self, stream: &Self::Stream, n: usize) -> Result<Self::Buffer<T>>;
    /// A new buffer holding `data`.
    fn upload<T: Pod>(&self, stream: &Self::Stream, data: &[T]) -> Result<Self::Buffer<T>>;
    /// Overwrites the start of `dst` with `data` ([`Error::CopyTooLarge`] if it does not fit,
    /// one rule on every backend): how a server refreshes the inputs of buffers a
    /// captured graph reads.
    fn copy_in<T: Pod>(
        &self,
        stream: &Self::Stream,
        data: &[T],
        dst: &mut Self::Buffer<T>,
    ) -> Result<()>;
    /// The contents of `src`, after everything queued before on `stream` (synchronises).
    fn download<T: Pod>(&self, stream: &Self::Stream, src: &Self::Buffer<T>) -> Result<Vec<T>>;
    /// Waits for everything queued on `stream`.
    fn synchronize(&self, stream: &Self::Stream) -> Result<()>;

    /// The one launch path: each launch of `launches` in order on `stream`. `bound` names the
    /// buffers the launches use (for errors that name a tensor and an element, not an address).
    ///
    /// # Safety
    /// `launches` must come from a plan's `bind` over buffers of this backend (as `bound` lists
    /// them) that stay allocated, and are not otherwise written, until `stream` has run them.
    unsafe fn launch(
        &self,
        stream: &Self::Stream,
        launches: &Launches,
        bound: &BoundTensors,
    ) -> Result<()>;
    /// Zeroes `bytes` bytes at `buf` in stream order (the head-similarity accumulator).
    ///
    /// # Safety
    /// `buf` must be memory of this backend holding at least `bytes` bytes, alive until `stream`
    /// has run the write.
    unsafe fn zero(&self, stream: &Self::Stream, buf: DevBuf, bytes: u64) -> Result<()>;
    /// Encodes an sm_90a tensor map over `addr` (the driver's encoder on CUDA, the emulator's
    /// own otherwise): 128 bytes the kernel's params carry.
    fn encode_tensor_map(&self, name: &str, desc: &TmaMapDesc, addr: u64) -> Result<[u8; 128]>;
}

/// `elements` fit in a buffer of `capacity` ([`Backend::copy_in`]'s one rule).
pub(crate) fn fits(elements: usize, capacity: usize) -> Result<()> {
    if elements <= capacity {
        return Ok(());
    }
    Err(Error::CopyTooLarge {
        elements: elements as u64,
        capacity: capacity as u64,
    })
}

/// A buffer a launch reads: binds it on `stream` (its address and element count, and the
/// guard that orders the use).
pub trait Read<B: Backend + ?Sized, T> {
    fn bind_read<'a>(
        &'a self,
        backend: &B,
        stream: &'a B::Stream,
    ) -> Result<(DevBuf, B::Guard<'a>)>;
}

/// A buffer a launch writes.
pub trait Write<B: Backend + ?Sized, T> {
    fn bind_write<'a>(
        &'a mut self,
        backend: &B,
        stream: &'a B::Stream,
    ) -> Result<(DevBuf, B::Guard<'a>)>;
}

/// The tensors one call bound: name, buffer, element size. A fixed array (no allocation); the
/// emulator names the tensor and the element a finding's address falls in or next to.
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundTensors {
    items: [Option<(TensorName, DevBuf, u64)>; Self::CAPACITY],
    len: usize,
}

impl BoundTensors {
    /// The most buffers any op binds (decode: 16).
    pub const CAPACITY: usize = 16;

    /// Records `buf` as `tensor` (`elem_bytes` per element); absent buffers are skipped. A
    /// call binding more than [`Self::CAPACITY`] keeps the first ones (names are a diagnostic).
    pub fn push(&mut self, tensor: TensorName, buf: DevBuf, elem_bytes: u64) {
        if buf.is_present() && self.len < Self::CAPACITY {
            self.items[self.len] = Some((tensor, buf, elem_bytes));
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (TensorName, DevBuf, u64)> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }

    /// The tensor `addr` lies in, with the element index, or else the nearest one below it with
    /// the index `addr` would be (past its end).
    pub fn locate(&self, addr: u64) -> Option<(TensorName, u64, bool)> {
        self.iter()
            .filter(|(_, b, _)| b.addr <= addr)
            .max_by_key(|(_, b, _)| b.addr)
            .map(|(t, b, eb)| {
                let index = (addr - b.addr) / eb.max(1);
                (t, index, index < b.len)
            })
    }
}

/// Binds one call's arguments on a stream and records each as a named tensor; the guards it
/// returns are the caller's to keep until the launch is queued.
pub(crate) struct Binder<'s, B: Backend + ?Sized> {
    backend: &'s B,
    stream: &'s B::Stream,
    pub bound: BoundTensors,
}

impl<'s, B: Backend + ?Sized> Binder<'s, B> {
    pub fn new(backend: &'s B, stream: &'s B::Stream) -> Self {
        Binder {
            backend,
            stream,
            bound: BoundTensors::default(),
        }
    }

    /// A buffer the launch reads, if given (absent: no buffer, no guard; the plan's binding
    /// table says whether it may be absent).
    pub fn read<'b, T>(
        &mut self,
        tensor: TensorName,
        arg: Option<&'s (dyn Read<B, T> + 'b)>,
    ) -> Result<(DevBuf, Option<B::Guard<'s>>)> {
        let bound = arg.map(|a| a.bind_read(self.backend, self.stream));
        self.record::<T, _>(tensor, bound)
    }

    /// A buffer the launch writes, if given.
    pub fn write<'b, T>(
        &mut self,
        tensor: TensorName,
        arg: Option<&'s mut (dyn Write<B, T> + 'b)>,
    ) -> Result<(DevBuf, Option<B::Guard<'s>>)> {
        let bound = arg.map(|a| a.bind_write(self.backend, self.stream));
        self.record::<T, _>(tensor, bound)
    }

    /// Records a bound buffer of `T` elements as `tensor`.
    fn record<T, G>(
        &mut self,
        tensor: TensorName,
        bound: Option<Result<(DevBuf, G)>>,
    ) -> Result<(DevBuf, Option<G>)> {
        match bound.transpose()? {
            None => Ok((DevBuf::ABSENT, None)),
            Some((buf, guard)) => {
                self.bound
                    .push(tensor, buf, std::mem::size_of::<T>() as u64);
                Ok((buf, Some(guard)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_address_is_named_by_the_tensor_it_falls_in_or_runs_past() {
        let mut b = BoundTensors::default();
        b.push(
            TensorName::Q,
            DevBuf {
                addr: 1000,
                len: 10,
            },
            2,
        );
        b.push(TensorName::KCache, DevBuf { addr: 5000, len: 4 }, 4);
        b.push(TensorName::O, DevBuf::ABSENT, 2);
        assert_eq!(b.iter().count(), 2);
        assert_eq!(b.locate(1006), Some((TensorName::Q, 3, true)));
        assert_eq!(b.locate(1020), Some((TensorName::Q, 10, false)));
        assert_eq!(b.locate(5012), Some((TensorName::KCache, 3, true)));
        assert_eq!(b.locate(5016), Some((TensorName::KCache, 4, false)));
        assert_eq!(b.locate(999), None);
    }
}
