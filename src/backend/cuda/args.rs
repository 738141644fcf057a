//! The buffers of one forward run on the CUDA backend. Any cudarc buffer works: a whole
//! `CudaSlice`, or a `CudaView` / `CudaViewMut` carved from an arena or a KV-cache allocation.
//! Required tensors go to [`FwdArgs::new`]; each optional one is a builder method, so a call
//! states each buffer once. [`Dense`] / [`DenseMut`] add the dims for the one-call
//! [`super::CudaBackend::forward`].

use cudarc::driver::{DevicePtr, DevicePtrMut};

/// Buffers of one forward run (layouts in `kernels/params.h`; sizes from the plan).
pub struct FwdArgs<'a, T> {
    pub(super) q: &'a dyn DevicePtr<T>,
    pub(super) k: &'a dyn DevicePtr<T>,
    pub(super) v: &'a dyn DevicePtr<T>,
    pub(super) o: &'a mut dyn DevicePtrMut<T>,
    pub(super) lse: Option<&'a mut dyn DevicePtrMut<f32>>,
    pub(super) entropy: Option<&'a mut dyn DevicePtrMut<f32>>,
    pub(super) alibi_slopes: Option<&'a dyn DevicePtr<f32>>,
    pub(super) head_gates: Option<&'a dyn DevicePtr<f32>>,
    pub(super) cu_seqlens: Option<(&'a dyn DevicePtr<i32>, &'a dyn DevicePtr<i32>)>,
}

impl<'a, T> FwdArgs<'a, T> {
    /// q, k, v in; o out. Elements of the plan's type.
    pub fn new(
        q: &'a impl DevicePtr<T>,
        k: &'a impl DevicePtr<T>,
        v: &'a impl DevicePtr<T>,
        o: &'a mut impl DevicePtrMut<T>,
    ) -> Self {
        FwdArgs {
            q,
            k,
            v,
            o,
            lse: None,
            entropy: None,
            alibi_slopes: None,
            head_gates: None,
            cu_seqlens: None,
        }
    }

    /// Also write the log-sum-exp of each score row (natural log, f32; `[b, hq, sq]` padded,
    /// `[hq, total_q]` varlen).
    pub fn lse(mut self, lse: &'a mut impl DevicePtrMut<f32>) -> Self {
        self.lse = Some(lse);
        self
    }

    /// Also write the Shannon entropy of each attention row (nats, f32; same layout as LSE).
    pub fn entropy(mut self, entropy: &'a mut impl DevicePtrMut<f32>) -> Self {
        self.entropy = Some(entropy);
        self
    }

    /// ALiBi slopes `[hq]` (f32): bias `-slope * |i + sk - sq - j|` on the scaled scores.
    pub fn alibi_slopes(mut self, slopes: &'a impl DevicePtr<f32>) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }

    /// Per-head output gates `[hq]` (f32): O of head `h` is multiplied by `gates[h]`.
    pub fn head_gates(mut self, gates: &'a impl DevicePtr<f32>) -> Self {
        self.head_gates = Some(gates);
        self
    }

    /// Device `cu_seqlens_q` and `cu_seqlens_k` (`[batch + 1]` i32 each): required by a varlen
    /// plan, rejected by a padded one. Their contents are checked by the kernel.
    pub fn cu_seqlens(mut self, q: &'a impl DevicePtr<i32>, k: &'a impl DevicePtr<i32>) -> Self {
        self.cu_seqlens = Some((q, k));
        self
    }
}

/// A contiguous `[batch, seq, heads, head_dim]` input tensor on the device.
pub struct Dense<'a, T> {
    pub(super) buf: &'a dyn DevicePtr<T>,
    pub(super) dims: [usize; 4],
}

impl<'a, T> Dense<'a, T> {
    /// `buf` read as `[batch, seq, heads, head_dim]`, row-major.
    pub fn new(buf: &'a impl DevicePtr<T>, dims: [usize; 4]) -> Self {
        Dense { buf, dims }
    }
}

/// A contiguous `[batch, seq, heads, head_dim]` output tensor on the device.
pub struct DenseMut<'a, T> {
    pub(super) buf: &'a mut dyn DevicePtrMut<T>,
    pub(super) dims: [usize; 4],
}

impl<'a, T> DenseMut<'a, T> {
    /// `buf` written as `[batch, seq, heads, head_dim]`, row-major.
    pub fn new(buf: &'a mut impl DevicePtrMut<T>, dims: [usize; 4]) -> Self {
        DenseMut { buf, dims }
    }
}
