//! GPU timing of the forward kernel with CUDA events: warm-up launches, then many timed
//! launches rotating over several independent input sets (so the L2 cache does not hold the
//! inputs of the timed launch), returning every launch's time. Used by `flashmha bench`.

use super::CudaBackend;
use crate::buffers::FwdBuffers;
use crate::error::Result;
use crate::plan::plan_forward;
use crate::problem::FwdProblem;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaSlice, DevicePtr};

/// Launch times in milliseconds, one per timed launch.
pub fn time_forward(
    backend: &CudaBackend,
    problem: &FwdProblem,
    input_sets: usize,
    warmup: usize,
    iters: usize,
) -> Result<Vec<f32>> {
    let ctx = backend.context();
    let stream = ctx.default_stream();
    // Random bits would include NaN/Inf patterns; small integers scaled by 1/64 are exact in
    // both f16 and bf16 and keep scores in a realistic range.
    let fill = |n: usize, salt: u64| -> Vec<u16> {
        (0..n as u64)
            .map(|i| {
                let x = ((i.wrapping_mul(2654435761).wrapping_add(salt) >> 7) % 129) as f32 - 64.0;
                problem.dtype.bits_from_f32(x / 64.0)
            })
            .collect()
    };
    let mut sets: Vec<[CudaSlice<u16>; 4]> = Vec::with_capacity(input_sets);
    for s in 0..input_sets as u64 {
        sets.push([
            stream.clone_htod(&fill(problem.q.len, 3 * s))?,
            stream.clone_htod(&fill(problem.k.len, 3 * s + 1))?,
            stream.clone_htod(&fill(problem.v.len, 3 * s + 2))?,
            stream.alloc_zeros::<u16>(problem.o.len)?,
        ]);
    }
    let plans = sets
        .iter()
        .map(|[q, k, v, o]| {
            let addr = |s: &CudaSlice<u16>| s.device_ptr(&stream).0;
            let bufs = FwdBuffers {
                q: addr(q),
                k: addr(k),
                v: addr(v),
                o: addr(o),
                ..Default::default()
            };
            debug_assert_eq!(bufs.q % 16, 0, "cudarc allocations are 256-byte aligned");
            plan_forward(problem, &bufs)
        })
        .collect::<Result<Vec<_>>>()?;
    // SAFETY (both loops): every plan came from plan_forward for buffers in `sets`, which live
    // until this function has synchronised on the last launch.
    for i in 0..warmup {
        unsafe { backend.launch(&plans[i % plans.len()], &stream)? };
    }
    let mut times = Vec::with_capacity(iters);
    for i in 0..iters {
        let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        unsafe { backend.launch(&plans[i % plans.len()], &stream)? };
        let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        end.synchronize()?;
        times.push(start.elapsed_ms(&end)?);
    }
    Ok(times)
}
