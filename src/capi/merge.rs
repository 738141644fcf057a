//! The C ABI of the merge of attention states: a plan handle (`flashmha_merge_plan_*`, a boxed
//! [`MergePlan`] made by `MergePlan::new_for`) run on a context or on the
//! emulator through the shared path of `op.rs`; both check the buffers with
//! [`MergePlan::bind`].

use super::convert;
use super::ffi;
use super::host::{HostMirror, Role};
use super::op::{self, Op};
use super::status::CallError;
use crate::common::launch::Launches;
use crate::cuda::CudaBackend;
use crate::ops::merge::{MergePlan, MergeStates};

/// The merge of attention states on the shared C ABI path.
struct Merge;

impl Op for Merge {
    type Plan = MergePlan;
    type Bufs = ffi::flashmha_merge_bufs;
    type Bound = Launches;

    fn bind(p: &MergePlan, b: &Self::Bufs) -> Result<Launches, CallError> {
        Ok(p.bind(&convert::merge_bufs(b))?.into())
    }

    unsafe fn mirror(
        p: &MergePlan,
        m: &mut HostMirror,
        host: &Self::Bufs,
    ) -> Result<Self::Bufs, CallError> {
        let e = p.problem.dtype.size();
        // A stacked plan rejects a given o_b / lse_b (checked on the host addresses first), so
        // they are the pair's here.
        let b_role = Role::Input.when(p.problem.states == MergeStates::Pair);
        // SAFETY: the caller's contract for each buffer.
        unsafe {
            Ok(ffi::flashmha_merge_bufs {
                o_states: m.mirror(host.o_states, e, Role::Input)?,
                lse_states: m.mirror(host.lse_states, 4, Role::Input)?,
                o_b: m.mirror(host.o_b, e, b_role)?,
                lse_b: m.mirror(host.lse_b, 4, b_role)?,
                o: m.mirror(host.o, e, Role::Output)?,
                lse: m.mirror(host.lse, 4, Role::Output)?,
            })
        }
    }
}

op::handle_entry_points!(Merge, flashmha_merge_plan, flashmha_merge_bufs;
    run: flashmha_merge_run, emulate: flashmha_emulate_merge_run,
    destroy: flashmha_merge_plan_destroy);

/// Plans for the context's device or, without one, for the default kernels.
fn make(s: &ffi::flashmha_merge_shape, ctx: Option<&CudaBackend>) -> Result<MergePlan, CallError> {
    let problem = convert::merge_problem(s)?;
    Ok(MergePlan::new_for(op::target(ctx), &problem)?)
}

op::create_entry_points!(flashmha_merge_shape, flashmha_merge_plan, make;
    create: flashmha_merge_plan_create, for_context: flashmha_merge_plan_create_for_context);

#[cfg(test)]
mod tests {
    use super::*;

    fn create(s: &ffi::flashmha_merge_shape) -> (ffi::flashmha_status, bool) {
        let mut p: *mut ffi::flashmha_merge_plan = std::ptr::null_mut();
        // SAFETY: valid pointers to locals.
        let code = unsafe { flashmha_merge_plan_create(s, &mut p) };
        let made = !p.is_null();
        // SAFETY: NULL or the plan just made, destroyed once.
        unsafe { flashmha_merge_plan_destroy(p) };
        (code, made)
    }

    #[test]
    fn shapes_are_planned_or_typed_errors_never_a_panic() {
        let base = ffi::flashmha_merge_shape {
            dtype: ffi::FLASHMHA_DTYPE_F16,
            form: ffi::FLASHMHA_MERGE_STACKED,
            num_states: 3,
            rows: 5,
            heads: 4,
            head_dim: 64,
            lse_layout: ffi::FLASHMHA_STATS_ROWS_HEADS,
        };
        assert_eq!(create(&base), (ffi::FLASHMHA_OK, true));
        let edits: [fn(&mut ffi::flashmha_merge_shape); 6] = [
            |s| s.num_states = usize::MAX,
            |s| s.rows = usize::MAX,
            |s| s.heads = usize::MAX,
            |s| s.head_dim = usize::MAX - 3,
            |s| s.head_dim = 6,
            |s| s.rows = 0,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut s = base;
            edit(&mut s);
            let (code, made) = create(&s);
            assert_ne!(code, ffi::FLASHMHA_OK, "edit {i}");
            assert_ne!(code, ffi::FLASHMHA_ERR_INTERNAL, "edit {i}");
            assert!(!made, "edit {i}");
        }
    }

    /// Merges two states of `rows x heads x 64` f16 (values from `seed`) on the emulator
    /// through the C ABI; the merged O bits.
    fn emulated_merge(seed: u32, rows: usize, heads: usize) -> Vec<u16> {
        let shape = ffi::flashmha_merge_shape {
            dtype: ffi::FLASHMHA_DTYPE_F16,
            form: ffi::FLASHMHA_MERGE_PAIR,
            num_states: 2,
            rows,
            heads,
            head_dim: 64,
            lse_layout: ffi::FLASHMHA_STATS_HEADS_ROWS,
        };
        let n = rows * heads * 64;
        let value = |i: usize| {
            let x = ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2000;
            half::f16::from_f32(x as f32 / 1000.0 - 0.9995).to_bits()
        };
        let mut o_a: Vec<u16> = (0..n).map(value).collect();
        let mut o_b: Vec<u16> = (0..n).map(|i| value(i + n)).collect();
        let mut lse_a: Vec<f32> = (0..rows * heads)
            .map(|i| (i % 7) as f32 * 0.3 - 1.0)
            .collect();
        let mut lse_b: Vec<f32> = (0..rows * heads).map(|i| (i % 5) as f32 * 0.2).collect();
        let mut o = vec![0u16; n];
        let b = |p: *mut std::ffi::c_void, len: usize| ffi::flashmha_buf { data: p, len };
        let bufs = ffi::flashmha_merge_bufs {
            o_states: b(o_a.as_mut_ptr().cast(), n),
            lse_states: b(lse_a.as_mut_ptr().cast(), rows * heads),
            o_b: b(o_b.as_mut_ptr().cast(), n),
            lse_b: b(lse_b.as_mut_ptr().cast(), rows * heads),
            o: b(o.as_mut_ptr().cast(), n),
            lse: b(std::ptr::null_mut(), 0),
        };
        let mut plan: *mut ffi::flashmha_merge_plan = std::ptr::null_mut();
        // SAFETY: pointers to locals; every buffer holds its declared length.
        unsafe {
            assert_eq!(
                flashmha_merge_plan_create(&shape, &mut plan),
                ffi::FLASHMHA_OK
            );
            assert_eq!(flashmha_emulate_merge_run(plan, &bufs), ffi::FLASHMHA_OK);
            flashmha_merge_plan_destroy(plan);
        }
        o
    }

    #[test]
    fn emulated_runs_from_several_threads_agree_and_keep_their_own_error_messages() {
        // The header says the emulator entry points may be called from several threads and
        // that the error message is per thread.
        let alone = emulated_merge(7, 6, 3);
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..4)
                .map(|t| {
                    scope.spawn(move || {
                        // Odd threads fail first (a shape without heads), then all run the
                        // same merge.
                        if t % 2 == 1 {
                            let (code, _) = create(&ffi::flashmha_merge_shape {
                                dtype: ffi::FLASHMHA_DTYPE_F16,
                                form: ffi::FLASHMHA_MERGE_PAIR,
                                num_states: 2,
                                rows: 1,
                                heads: 0,
                                head_dim: 64,
                                lse_layout: ffi::FLASHMHA_STATS_HEADS_ROWS,
                            });
                            assert_eq!(code, ffi::FLASHMHA_ERR_SHAPE);
                        }
                        // SAFETY: read on this thread before its next flashmha call.
                        let before = unsafe {
                            std::ffi::CStr::from_ptr(super::super::flashmha_last_error_message())
                        }
                        .to_owned();
                        assert_eq!(before.is_empty(), t % 2 == 0, "thread {t}: {before:?}");
                        emulated_merge(7, 6, 3)
                    })
                })
                .collect();
            for run in runs {
                assert_eq!(run.join().unwrap(), alone);
            }
        });
        // The merge wrote real values (not the NaN poison, not zeros).
        assert!(alone.iter().all(|&x| x & 0x7c00 != 0x7c00));
        assert!(alone.iter().any(|&x| x != 0));
    }
}
