//! The CUDA launch path of paged decode, merge_states and KV append: the same plans and params
//! bytes as the emulator ([`crate::decode`]), on the caller's stream. Per run: O(1) buffer
//! checks (presence, sizes, alignment, aliasing) with typed errors before any launch, then the
//! decode and (if planned) the split combine, queued back to back. No allocation and no
//! host-device synchronisation, so a server can capture the calls in a CUDA graph; the split
//! workspace is one f32 buffer the caller allocates once ([`DecodePlan::workspace`] states its
//! size) and passes to every run. Any cudarc buffer works: whole `CudaSlice`s or
//! `CudaView`/`CudaViewMut`s carved from an arena or a KV-cache allocation.

use super::{launch_one_struct, opt_read, opt_write, read, write, CudaBackend, Guard};
use crate::decode::append::{KvAppendBuffers, KvAppendPlan};
use crate::decode::merge::{MergeBuffers, MergePlan, MergeStates};
use crate::decode::plan::{DecodeBuffers, DecodePlan, DeviceBuf};
use crate::element::Element;
use crate::error::{driver_error, Error, Result, TensorName};
use crate::validate::binding::DevBuf;
use cudarc::driver::{CudaFunction, CudaStream, DevicePtr, DevicePtrMut};

/// Buffers of one decode run (layouts in `kernels/params.h`, sizes from the plan). Required
/// tensors go to [`DecodeArgs::new`]; each optional one is a builder method.
pub struct DecodeArgs<'a, T> {
    q: &'a dyn DevicePtr<T>,
    k_cache: &'a dyn DevicePtr<T>,
    v_cache: &'a dyn DevicePtr<T>,
    o: &'a mut dyn DevicePtrMut<T>,
    block_table: &'a dyn DevicePtr<i32>,
    cache_seqlens: &'a dyn DevicePtr<i32>,
    cu_seqlens_q: Option<&'a dyn DevicePtr<i32>>,
    lse: Option<&'a mut dyn DevicePtrMut<f32>>,
    entropy: Option<&'a mut dyn DevicePtrMut<f32>>,
    alibi_slopes: Option<&'a dyn DevicePtr<f32>>,
    head_gates: Option<&'a dyn DevicePtr<f32>>,
    workspace: Option<&'a mut dyn DevicePtrMut<f32>>,
}

impl<'a, T> DecodeArgs<'a, T> {
    /// q and the page pools in, o out; `block_table [b, max_pages_per_seq]` and
    /// `cache_seqlens [b]` (i32, device-resident, checked by the kernel).
    pub fn new(
        q: &'a impl DevicePtr<T>,
        k_cache: &'a impl DevicePtr<T>,
        v_cache: &'a impl DevicePtr<T>,
        o: &'a mut impl DevicePtrMut<T>,
        block_table: &'a impl DevicePtr<i32>,
        cache_seqlens: &'a impl DevicePtr<i32>,
    ) -> Self {
        DecodeArgs {
            q,
            k_cache,
            v_cache,
            o,
            block_table,
            cache_seqlens,
            cu_seqlens_q: None,
            lse: None,
            entropy: None,
            alibi_slopes: None,
            head_gates: None,
            workspace: None,
        }
    }
    /// `cu_seqlens_q [b + 1]` (i32) of a varlen plan.
    pub fn cu_seqlens_q(mut self, cu: &'a impl DevicePtr<i32>) -> Self {
        self.cu_seqlens_q = Some(cu);
        self
    }
    /// Also write the LSE of each row (`[b, hq, sq_new]` padded, `[hq, total_q]` varlen).
    pub fn lse(mut self, lse: &'a mut impl DevicePtrMut<f32>) -> Self {
        self.lse = Some(lse);
        self
    }
    /// Also write the entropy of each row (same layout as LSE).
    pub fn entropy(mut self, entropy: &'a mut impl DevicePtrMut<f32>) -> Self {
        self.entropy = Some(entropy);
        self
    }
    /// ALiBi slopes `[hq]`.
    pub fn alibi_slopes(mut self, slopes: &'a impl DevicePtr<f32>) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }
    /// Per-head output gates `[hq]`.
    pub fn head_gates(mut self, gates: &'a impl DevicePtr<f32>) -> Self {
        self.head_gates = Some(gates);
        self
    }
    /// The split workspace: at least [`crate::decode::WorkspaceLayout::elems`] f32 of the
    /// plan (required when the plan has a combine; a plan without one ignores it, so a server
    /// can pass its one workspace to every plan).
    pub fn workspace(mut self, ws: &'a mut impl DevicePtrMut<f32>) -> Self {
        self.workspace = Some(ws);
        self
    }
}

/// Buffers of one merge run: [`MergeArgs::stacked`] or [`MergeArgs::pair`], then optionally
/// the merged LSE.
pub struct MergeArgs<'a, T> {
    o_a: &'a dyn DevicePtr<T>,
    lse_a: &'a dyn DevicePtr<f32>,
    b: Option<(&'a dyn DevicePtr<T>, &'a dyn DevicePtr<f32>)>,
    o: &'a mut dyn DevicePtrMut<T>,
    lse: Option<&'a mut dyn DevicePtrMut<f32>>,
}

impl<'a, T> MergeArgs<'a, T> {
    /// N states stacked: `o_states [n, rows, heads, d]`, `lse_states` per the plan's layout.
    pub fn stacked(
        o_states: &'a impl DevicePtr<T>,
        lse_states: &'a impl DevicePtr<f32>,
        o: &'a mut impl DevicePtrMut<T>,
    ) -> Self {
        MergeArgs {
            o_a: o_states,
            lse_a: lse_states,
            b: None,
            o,
            lse: None,
        }
    }
    /// Two states in separate buffers.
    pub fn pair(
        o_a: &'a impl DevicePtr<T>,
        lse_a: &'a impl DevicePtr<f32>,
        o_b: &'a impl DevicePtr<T>,
        lse_b: &'a impl DevicePtr<f32>,
        o: &'a mut impl DevicePtrMut<T>,
    ) -> Self {
        MergeArgs {
            o_a,
            lse_a,
            b: Some((o_b, lse_b)),
            o,
            lse: None,
        }
    }
    /// Also write the merged LSE.
    pub fn lse(mut self, lse: &'a mut impl DevicePtrMut<f32>) -> Self {
        self.lse = Some(lse);
        self
    }
}

/// Buffers of one KV-append run: new rows `[num_tokens, hkv, d]`, the pools, the slots.
pub struct KvAppendArgs<'a, T> {
    pub k_new: &'a dyn DevicePtr<T>,
    pub v_new: &'a dyn DevicePtr<T>,
    pub k_cache: &'a mut dyn DevicePtrMut<T>,
    pub v_cache: &'a mut dyn DevicePtrMut<T>,
    pub slot_mapping: &'a dyn DevicePtr<i32>,
}

/// The decode, combine, merge and append functions of one device.
pub(super) struct DecodeFunctions {
    /// One per row of the decode kernel table, in table order.
    pub decode: Vec<CudaFunction>,
    /// Split combine: (f16, bf16).
    pub combine: (CudaFunction, CudaFunction),
    /// Public merge_states: (f16, bf16).
    pub merge: (CudaFunction, CudaFunction),
    pub kv_append: CudaFunction,
}

fn dev(b: DevBuf) -> DeviceBuf {
    DeviceBuf {
        addr: b.addr,
        len: b.len as u64,
    }
}

fn opt_dev(b: Option<DevBuf>) -> DeviceBuf {
    b.map_or(DeviceBuf::default(), dev)
}

fn check_dtype<T: Element>(tensor: TensorName, plan_dtype: crate::dtype::DType) -> Result<()> {
    if plan_dtype != T::DTYPE {
        return Err(Error::DTypeMismatch {
            tensor,
            expected: plan_dtype,
            found: T::DTYPE,
        });
    }
    Ok(())
}

impl CudaBackend {
    fn decode_functions(&self) -> &DecodeFunctions {
        &self.decode
    }

    /// Runs `plan` with `args` on `stream`: the decode, then the split combine if the plan has
    /// one. Asynchronous, no allocation, no synchronisation (graph-capturable); every buffer is
    /// checked against the plan first, and nothing is launched if any check fails.
    pub fn decode<T: Element>(
        &self,
        stream: &CudaStream,
        plan: &DecodePlan,
        args: DecodeArgs<'_, T>,
    ) -> Result<()> {
        check_dtype::<T>(TensorName::Q, plan.problem.dtype)?;
        if plan.problem.kv_dtype.is_fp8() {
            // DecodeArgs types the pools as T; FP8 pools and their scales are emulator-only.
            return Err(Error::KvPoolMismatch {
                expected: "16-bit pages (the CUDA decode path takes no FP8 pools yet)",
                found: "FP8 codes",
            });
        }
        let DecodeArgs {
            q,
            k_cache,
            v_cache,
            o,
            block_table,
            cache_seqlens,
            cu_seqlens_q,
            lse,
            entropy,
            alibi_slopes,
            head_gates,
            workspace,
        } = args;
        // The guards record cudarc's stream-ordering events once the launches are queued.
        let (q, _q) = read(q, stream);
        let (k_cache, _k) = read(k_cache, stream);
        let (v_cache, _v) = read(v_cache, stream);
        let (o, _o) = write(o, stream);
        let (block_table, _bt) = read(block_table, stream);
        let (cache_seqlens, _cs) = read(cache_seqlens, stream);
        let (cu_q, _cu) = opt_read(cu_seqlens_q, stream);
        let (lse, _lse) = opt_write(lse, stream);
        let (entropy, _ent) = opt_write(entropy, stream);
        let (alibi, _alibi) = opt_read(alibi_slopes, stream);
        let (gates, _gates) = opt_read(head_gates, stream);
        let (ws, _ws): (Option<DevBuf>, Option<Guard<'_>>) = opt_write(workspace, stream);
        let (partial_o, partial_lse, partial_entropy) = plan.carve_workspace(opt_dev(ws))?;
        let bufs = DecodeBuffers {
            q: dev(q),
            k_cache: dev(k_cache),
            v_cache: dev(v_cache),
            o: dev(o),
            block_table: dev(block_table),
            cache_seqlens: dev(cache_seqlens),
            cu_seqlens_q: opt_dev(cu_q),
            lse: opt_dev(lse),
            entropy: opt_dev(entropy),
            alibi_slopes: opt_dev(alibi),
            head_gates: opt_dev(gates),
            partial_o,
            partial_lse,
            partial_entropy,
            ..DecodeBuffers::default()
        };
        let (decode_params, combine_params) = plan.params(&bufs)?;
        let f = self.decode_functions();
        let index = crate::decode::kernels::DECODE_KERNELS
            .iter()
            .position(|r| r.entry == plan.kernel.entry)
            .ok_or_else(|| Error::NoKernel {
                entry: plan.kernel.entry.to_string(),
            })?;
        self.context().bind_to_thread().map_err(driver_error)?;
        let l = &plan.decode;
        // SAFETY: `params` checked every buffer against the plan's extents (presence, size,
        // alignment, no output overlapping another operand), the borrows in `args` keep them
        // alive for this call and cudarc's stream ordering for the kernels; device-resident
        // indices (block table, lengths, cu_seqlens) are checked by the kernel, which traps.
        unsafe {
            launch_one_struct(
                &f.decode[index],
                l.grid,
                l.block,
                l.dynamic_smem_bytes,
                stream.cu_stream(),
                decode_params,
            )?;
        }
        if let (Some(c), Some(cp)) = (&plan.combine, combine_params) {
            let func = match plan.problem.dtype {
                crate::dtype::DType::F16 => &f.combine.0,
                crate::dtype::DType::Bf16 => &f.combine.1,
            };
            // SAFETY: as above; the combine reads the workspace the decode wrote, in stream
            // order, and writes o / lse / entropy, all checked by `params`.
            unsafe {
                launch_one_struct(
                    func,
                    c.grid,
                    c.block,
                    c.dynamic_smem_bytes,
                    stream.cu_stream(),
                    cp,
                )?;
            }
        }
        Ok(())
    }

    /// Merges attention states per `plan` (stacked or pair, as the plan says) on `stream`.
    /// Asynchronous, no allocation, no synchronisation.
    pub fn merge_states<T: Element>(
        &self,
        stream: &CudaStream,
        plan: &MergePlan,
        args: MergeArgs<'_, T>,
    ) -> Result<()> {
        check_dtype::<T>(TensorName::OStates, plan.problem.dtype)?;
        let pair = plan.problem.states == MergeStates::Pair;
        match (pair, args.b.is_some()) {
            (true, false) => {
                return Err(Error::MissingBuffer {
                    tensor: TensorName::OB,
                })
            }
            (false, true) => {
                return Err(Error::UnexpectedBuffer {
                    tensor: TensorName::OB,
                })
            }
            _ => {}
        }
        let MergeArgs {
            o_a,
            lse_a,
            b,
            o,
            lse,
        } = args;
        let (o_a, _oa) = read(o_a, stream);
        let (lse_a, _la) = read(lse_a, stream);
        let (o_b, _ob) = opt_read(b.map(|x| x.0), stream);
        let (lse_b, _lb) = opt_read(b.map(|x| x.1), stream);
        let (o, _o) = write(o, stream);
        let (lse, _lse) = opt_write(lse, stream);
        let params = plan.params(&MergeBuffers {
            o_states: dev(o_a),
            lse_states: dev(lse_a),
            o_b: opt_dev(o_b),
            lse_b: opt_dev(lse_b),
            o: dev(o),
            lse: opt_dev(lse),
        })?;
        let f = self.decode_functions();
        let func = match plan.problem.dtype {
            crate::dtype::DType::F16 => &f.merge.0,
            crate::dtype::DType::Bf16 => &f.merge.1,
        };
        self.context().bind_to_thread().map_err(driver_error)?;
        let l = &plan.launch;
        // SAFETY: `params` checked every buffer against the plan (presence, size, alignment,
        // the outputs overlapping no input); the borrows keep them alive for this call and
        // cudarc's stream ordering for the kernel.
        unsafe {
            launch_one_struct(
                func,
                l.grid,
                l.block,
                l.dynamic_smem_bytes,
                stream.cu_stream(),
                params,
            )
        }
    }

    /// Writes new K/V rows into the page pools per `plan` on `stream`. Asynchronous, no
    /// allocation, no synchronisation; slots are checked by the kernel (out of range traps).
    pub fn kv_append<T: Element>(
        &self,
        stream: &CudaStream,
        plan: &KvAppendPlan,
        args: KvAppendArgs<'_, T>,
    ) -> Result<()> {
        check_dtype::<T>(TensorName::KNew, plan.pools.dtype)?;
        plan.require_16bit_slots()?;
        let KvAppendArgs {
            k_new,
            v_new,
            k_cache,
            v_cache,
            slot_mapping,
        } = args;
        let (k_new, _kn) = read(k_new, stream);
        let (v_new, _vn) = read(v_new, stream);
        let (k_cache, _kc) = write(k_cache, stream);
        let (v_cache, _vc) = write(v_cache, stream);
        let (slots, _s) = read(slot_mapping, stream);
        let params = plan.params(&KvAppendBuffers {
            k_new: dev(k_new),
            v_new: dev(v_new),
            k_cache: dev(k_cache),
            v_cache: dev(v_cache),
            slot_mapping: dev(slots),
            ..KvAppendBuffers::default()
        })?;
        self.context().bind_to_thread().map_err(driver_error)?;
        let l = &plan.launch;
        // SAFETY: `params` checked every buffer against the plan; slots are device-resident and
        // checked by the kernel against num_pages x page_size (trap).
        unsafe {
            launch_one_struct(
                &self.decode_functions().kv_append,
                l.grid,
                l.block,
                l.dynamic_smem_bytes,
                stream.cu_stream(),
                params,
            )
        }
    }
}
