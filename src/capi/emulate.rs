//! The C ABI's emulator entry points: a plan run on the PTX emulator with host buffers, so C
//! and C++ clients (and CI) exercise the exact kernels without a GPU. Inputs are copied into an
//! emulator device, outputs are poisoned with NaN there (an element the kernel does not write
//! cannot pass for a result), the plan is bound to the emulator buffers (the same O(1) checks
//! as on a GPU) and run, and the outputs are copied back. Any finding of the emulator (an
//! out-of-bounds access, a race, a trap) fails the call.

use super::convert;
use super::ffi::{self, flashmha_status};
use super::plan::Plan;
use super::status::{guard, CallError};
use crate::backend::emulator as backend;
use crate::element::Element;
use crate::emulator::{Device, DevicePtr};
use crate::error::{EmulatorError, Error};
use crate::host::POISON_U16;
use crate::plan::FwdPlan;
use crate::validate::binding::{check_host_bufs, DevBuf, FwdBufs};

/// The bytes of a host buffer of `elem` bytes per element.
///
/// # Safety
/// `b.data` must point to `b.len * elem` readable bytes that nothing writes during the call.
unsafe fn host_bytes<'a>(b: DevBuf, elem: usize) -> &'a [u8] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(b.addr as *const u8, b.len * elem) }
}

/// Copies `len` elements of `elem` bytes of an emulator buffer back to the host buffer `host`.
///
/// # Safety
/// `host.addr` must point to `host.len * elem` writable bytes.
unsafe fn copy_back(dev: &Device, at: DevicePtr, host: DevBuf, elem: usize) -> crate::Result<()> {
    let bytes = dev.read(at, host.len * elem)?;
    // SAFETY: `bytes` is a fresh buffer of exactly the host buffer's size; the caller's contract
    // makes the destination writable; a fresh Vec cannot overlap caller memory.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), host.addr as *mut u8, bytes.len()) };
    Ok(())
}

/// Runs `plan` on host buffers `host` (see the module docs).
///
/// # Safety
/// Each buffer in `host` must be host memory of at least its declared length (elements of its
/// type); the inputs must not be written during the call.
unsafe fn emulate<T: Element>(plan: &FwdPlan<T>, host: &FwdBufs) -> Result<(), CallError> {
    let elem = std::mem::size_of::<T>();
    // The caller's buffers obey the GPU path's rules (an output overlapping an input is
    // refused) before they are copied into the emulator's own, disjoint allocations.
    check_host_bufs(plan.extents(), elem, host)?;
    let mut dev = Device::new();
    // Required buffers that are NULL are passed on as absent (address 0) so that `bind` names
    // them; everything else gets an emulator allocation of the declared size.
    let mut input = |b: DevBuf, elem: usize| -> crate::Result<DevBuf> {
        if b.addr == 0 {
            return Ok(b);
        }
        // SAFETY: the caller's contract for input buffers.
        let ptr = dev.upload(unsafe { host_bytes(b, elem) });
        Ok(backend::dev_buf(ptr, b.len))
    };
    let q = input(host.q, elem)?;
    let k = input(host.k, elem)?;
    let v = input(host.v, elem)?;
    let alibi_slopes = host.alibi_slopes.map(|b| input(b, 4)).transpose()?;
    let head_gates = host.head_gates.map(|b| input(b, 4)).transpose()?;
    let cu_seqlens = host
        .cu_seqlens
        .map(|(cq, ck)| Ok::<_, Error>((input(cq, 4)?, input(ck, 4)?)))
        .transpose()?;
    let mut output = |b: DevBuf, pattern: &[u8]| -> DevBuf {
        if b.addr == 0 {
            return b;
        }
        let bytes: Vec<u8> = pattern
            .iter()
            .copied()
            .cycle()
            .take(b.len * pattern.len())
            .collect();
        backend::dev_buf(dev.upload(&bytes), b.len)
    };
    let poison16 = POISON_U16.to_ne_bytes();
    let poison32 = u32::MAX.to_ne_bytes();
    let o = output(host.o, &poison16);
    let lse = host.lse.map(|b| output(b, &poison32));
    let entropy = host.entropy.map(|b| output(b, &poison32));
    let bufs = FwdBufs {
        q,
        k,
        v,
        o,
        lse,
        entropy,
        alibi_slopes,
        head_gates,
        cu_seqlens,
    };
    let (_, report) = backend::run(&mut dev, plan, &bufs)?;
    if !report.findings.is_empty() {
        return Err(Error::Emulator(EmulatorError::Findings {
            count: report.findings.len(),
            first: report.findings[0].to_string(),
        })
        .into());
    }
    let outputs = [
        (Some(o), Some(host.o), elem),
        (lse, host.lse, 4),
        (entropy, host.entropy, 4),
    ];
    for (dev_buf, host_buf, elem) in outputs {
        if let (Some(d), Some(h)) = (dev_buf, host_buf) {
            // SAFETY: output buffers are writable for their declared length (caller's contract).
            unsafe { copy_back(&dev, DevicePtr(d.addr), h, elem) }?;
        }
    }
    Ok(())
}

/// # Safety
/// See `flashmha_emulate_run`.
unsafe fn emulate_plan(plan: &Plan, host: &ffi::flashmha_bufs) -> Result<(), CallError> {
    let host = convert::bufs(host)?;
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match plan {
            Plan::F16(p) => emulate(p, &host),
            Plan::Bf16(p) => emulate(p, &host),
        }
    }
}

/// `flashmha_status flashmha_emulate_run(const flashmha_plan *plan,
/// const flashmha_bufs *host_bufs)`
///
/// # Safety
/// `plan` is NULL or a live handle; `host_bufs` is NULL or valid, and each buffer in it is
/// host memory of at least its declared length; inputs are not written during the call.
#[no_mangle]
pub unsafe extern "C" fn flashmha_emulate_run(
    plan: *const ffi::flashmha_plan,
    host_bufs: *const ffi::flashmha_bufs,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (plan, host) = unsafe {
            (
                Plan::from_handle(plan)?,
                convert::deref(host_bufs, "host_bufs")?,
            )
        };
        // SAFETY: forwarded from this function's contract.
        unsafe { emulate_plan(plan, host) }
    })
}

/// `flashmha_status flashmha_emulate_forward(const flashmha_shape *shape,
/// const flashmha_bufs *host_bufs)`
///
/// # Safety
/// As for `flashmha_emulate_run`, with `shape` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn flashmha_emulate_forward(
    shape: *const ffi::flashmha_shape,
    host_bufs: *const ffi::flashmha_bufs,
) -> flashmha_status {
    guard(|| {
        // SAFETY: the caller's contract for each pointer.
        let (shape, host) = unsafe {
            (
                convert::deref(shape, "shape")?,
                convert::deref(host_bufs, "host_bufs")?,
            )
        };
        let (dtype, shape) = convert::shape(shape)?;
        let plan = Plan::new(dtype, &shape)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { emulate_plan(&plan, host) }
    })
}
