//! GPU timing of the forward kernel with CUDA events: warm-up launches, then many timed
//! launches rotating over several independent input sets (so the L2 cache does not hold the
//! inputs of the timed launch), returning every launch's time. Used by `flashmha bench`.

use super::CudaBackend;
use crate::api::{Attention, FwdArgs};
use crate::common::dtype::DType;
use crate::common::element::Element;
use crate::common::error::{driver_error, Result};
use crate::ops::forward::plan::FwdPlan;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaSlice;

/// A launch of the plan over input set `i % sets` (typed buffers prepared once).
type Launcher<'a> = Box<dyn FnMut(usize) -> Result<()> + 'a>;

/// Launch times in milliseconds, one per timed launch, of `plan` on contiguous inputs of its
/// element type.
pub fn time_forward(
    backend: &CudaBackend,
    plan: &FwdPlan,
    input_sets: usize,
    warmup: usize,
    iters: usize,
) -> Result<Vec<f32>> {
    let stream = backend.context().default_stream();
    let mut launch = match plan.dtype() {
        DType::F16 => launcher::<half::f16>(backend, plan, input_sets)?,
        DType::Bf16 => launcher::<half::bf16>(backend, plan, input_sets)?,
    };
    for i in 0..warmup {
        launch(i)?;
    }
    let mut times = Vec::with_capacity(iters);
    for i in 0..iters {
        let start = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver_error)?;
        launch(i)?;
        let end = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver_error)?;
        end.synchronize().map_err(driver_error)?;
        times.push(start.elapsed_ms(&end).map_err(driver_error)?);
    }
    Ok(times)
}

/// Uploads `input_sets` independent q / k / v sets of `T` (and an O for each) for `plan`, and
/// returns the launch over set `i % input_sets`.
fn launcher<'a, T: Element>(
    backend: &'a CudaBackend,
    plan: &'a FwdPlan,
    input_sets: usize,
) -> Result<Launcher<'a>> {
    let stream = backend.context().default_stream();
    let x = plan.extents();
    // Random bits would include NaN/Inf patterns; small integers scaled by 1/64 are exact in
    // both f16 and bf16 and keep scores in a realistic range.
    let fill = |n: usize, salt: u64| -> Vec<T> {
        (0..n as u64)
            .map(|i| {
                let v = ((i.wrapping_mul(2654435761).wrapping_add(salt) >> 7) % 129) as f32 - 64.0;
                T::from_f32(v / 64.0)
            })
            .collect()
    };
    // At least one set: `i % sets` must never divide by zero.
    let input_sets = input_sets.max(1);
    let mut sets: Vec<[CudaSlice<T>; 4]> = Vec::with_capacity(input_sets);
    for s in 0..input_sets as u64 {
        sets.push([
            stream.clone_htod(&fill(x.q, 3 * s)).map_err(driver_error)?,
            stream
                .clone_htod(&fill(x.k, 3 * s + 1))
                .map_err(driver_error)?,
            stream
                .clone_htod(&fill(x.v, 3 * s + 2))
                .map_err(driver_error)?,
            stream.alloc_zeros::<T>(x.o).map_err(driver_error)?,
        ]);
    }
    Ok(Box::new(move |i: usize| -> Result<()> {
        let n = sets.len();
        let [q, k, v, o] = &mut sets[i % n];
        backend.run(&stream, plan, FwdArgs::new(q, k, v, o))
    }))
}
