//! The device the host runner ([`super::runner`]) works on: one small interface over both
//! backends (upload, poison, launch, read back), so that every op is run from host data by one
//! generic function whatever executes it. [`crate::emulator::Device`] implements it through
//! [`crate::backend::emulator::launch`] (with the emulator's findings and counters per launch);
//! [`GpuDevice`] through [`CudaBackend::launch_raw`] on the device's default stream, keeping
//! every allocation alive until it is dropped. For checks, benchmarks and tests only: nothing
//! here is on a server's launch path.

use crate::backend::cuda::CudaBackend;
use crate::common::binding::DevBuf;
use crate::common::error::{driver_error, Result};
use crate::common::launch::Launches;
use crate::emulator::{Device, DevicePtr, LaunchReport};
use crate::ops::forward::plan::FwdLaunch;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr as _};
use std::sync::Arc;

/// The one poison byte: every output buffer starts as all-ones bytes, a NaN in f16, bf16 and
/// f32 alike, so an element the kernel fails to write cannot pass a comparison. A NaN the
/// kernel writes has another pattern (PTX's canonical NaN is `0x7fff_ffff`).
pub const POISON_BYTE: u8 = 0xFF;

/// What the host runner needs of a device: allocations from host bytes, reads back, and the
/// backend's one launch path.
pub trait HostDevice {
    /// A new allocation holding `bytes` (at least one byte is allocated, so an empty buffer is
    /// still present); returns its device address.
    fn upload_bytes(&mut self, bytes: &[u8]) -> Result<u64>;
    /// `len` bytes from `addr`, after every launch queued so far has finished.
    fn download_bytes(&mut self, addr: u64, len: usize) -> Result<Vec<u8>>;
    /// Runs bound launches in order; the emulator's reports (none on a GPU).
    fn launch(&mut self, launches: &Launches) -> Result<Vec<LaunchReport>>;
    /// Runs a bound forward launch (its sm_90a tensor maps encoded by this backend's encoder).
    fn launch_forward(&mut self, launch: &FwdLaunch) -> Result<Vec<LaunchReport>>;

    /// Uploads `data` as a buffer of `data.len()` elements.
    fn put<T: bytemuck::Pod>(&mut self, data: &[T]) -> Result<DevBuf>
    where
        Self: Sized,
    {
        Ok(DevBuf::new(
            self.upload_bytes(bytemuck::cast_slice(data))?,
            data.len(),
        ))
    }

    /// An output buffer of `n` elements of `T`, every byte [`POISON_BYTE`].
    fn poisoned<T: bytemuck::Pod>(&mut self, n: usize) -> Result<DevBuf>
    where
        Self: Sized,
    {
        // Lengths here come from host-side sizes the plan accepted; the product fits.
        let bytes = vec![POISON_BYTE; n * std::mem::size_of::<T>()];
        Ok(DevBuf::new(self.upload_bytes(&bytes)?, n))
    }

    /// The elements of `b`.
    fn get<T: bytemuck::Pod>(&mut self, b: DevBuf) -> Result<Vec<T>>
    where
        Self: Sized,
    {
        let bytes = self.download_bytes(b.addr, b.len as usize * std::mem::size_of::<T>())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

impl HostDevice for Device {
    fn upload_bytes(&mut self, bytes: &[u8]) -> Result<u64> {
        let ptr = self.alloc(bytes.len().max(1));
        self.write(ptr, bytes)?;
        Ok(ptr.0)
    }

    fn download_bytes(&mut self, addr: u64, len: usize) -> Result<Vec<u8>> {
        Ok(self.read(DevicePtr(addr), len)?)
    }

    fn launch(&mut self, launches: &Launches) -> Result<Vec<LaunchReport>> {
        launches
            .iter()
            .map(|l| crate::backend::emulator::launch(self, l))
            .collect()
    }

    fn launch_forward(&mut self, launch: &FwdLaunch) -> Result<Vec<LaunchReport>> {
        Ok(vec![crate::backend::emulator::launch_bound(self, launch)?])
    }
}

/// A GPU seen through [`HostDevice`]: allocations on `backend`'s context, launches on its
/// default stream. Allocations live until the device is dropped.
pub struct GpuDevice<'b> {
    backend: &'b CudaBackend,
    stream: Arc<CudaStream>,
    /// Every allocation made, with its address.
    allocs: Vec<(u64, CudaSlice<u8>)>,
}

impl<'b> GpuDevice<'b> {
    pub fn new(backend: &'b CudaBackend) -> GpuDevice<'b> {
        GpuDevice {
            backend,
            stream: backend.context().default_stream(),
            allocs: Vec::new(),
        }
    }
}

impl HostDevice for GpuDevice<'_> {
    fn upload_bytes(&mut self, bytes: &[u8]) -> Result<u64> {
        let data = if bytes.is_empty() { &[0u8][..] } else { bytes };
        let slice = self.stream.clone_htod(data).map_err(driver_error)?;
        // The guard records stream order for this read of the address; it ends here.
        let addr = slice.device_ptr(&self.stream).0;
        self.allocs.push((addr, slice));
        Ok(addr)
    }

    fn download_bytes(&mut self, addr: u64, len: usize) -> Result<Vec<u8>> {
        self.stream.synchronize().map_err(driver_error)?;
        let (start, slice) = self
            .allocs
            .iter()
            .find_map(|(base, s)| {
                let start = usize::try_from(addr.checked_sub(*base)?).ok()?;
                (start.checked_add(len)? <= s.len()).then_some((start, s))
            })
            // What the driver says of a pointer it did not allocate.
            .ok_or_else(|| crate::common::error::Error::Cuda {
                code: 1,
                name: "CUDA_ERROR_INVALID_VALUE: not inside an allocation of this GpuDevice".into(),
            })?;
        self.stream
            .clone_dtoh(&slice.slice(start..start + len))
            .map_err(driver_error)
    }

    fn launch(&mut self, launches: &Launches) -> Result<Vec<LaunchReport>> {
        // SAFETY: `launches` come from a plan's `bind` over allocations of this device (made on
        // the backend's context), which `self.allocs` keeps alive until after the stream has
        // run them (every read back synchronises first; dropping frees in stream order).
        unsafe { self.backend.launch_raw(launches, self.stream.cu_stream())? };
        Ok(Vec::new())
    }

    fn launch_forward(&mut self, launch: &FwdLaunch) -> Result<Vec<LaunchReport>> {
        // SAFETY: as for `launch`: bound by `FwdPlan::bind` over allocations `self` keeps alive.
        unsafe {
            self.backend
                .launch_bound_raw(launch, self.stream.cu_stream())?
        };
        Ok(Vec::new())
    }
}
