//! The MLA decode launch plan: a pure function of a validated [`MlaDecodeProblem`] and a
//! [`SplitPolicy`] giving the kernel, grid, split count, workspace size and the combine launch;
//! then, per run, [`MlaDecodePlan::params`] fills the params from buffer addresses with O(1)
//! checks (no allocation, no device access), as [`crate::ops::decode::DecodePlan`] does: the
//! split heuristic, the workspace layout, the buffer table and the params fill are the paged
//! decode's, run with d_o = 512 (src/ops/decode/plan.rs).
//!
//! Split heuristic: the paged decode's ([`crate::ops::decode::plan::choose_splits`]) with
//! `batch x row tiles` base CTAs and `hq x sq_new` packed rows (its byte rule keeps the partial
//! states, ~4 KB per packed row and split written and read, within 1% of the cached rows), except
//! when the grid has fewer CTAs than the device has SMs: then only the per-split minimum of
//! [`crate::ops::decode::plan::MIN_KEYS_PER_SPLIT`] keys bounds the split count (a batch of one
//! 128-head sequence is 4 CTAs: 1 split would leave 128 of 132 SMs idle).

use super::abi::mla_tma_params;
use super::kernels::MlaKernelRow;
use super::problem::{MlaDecodeProblem, MLA_D_V};
use super::tma::describe_pool;
use super::validate::validate_mla_decode_for;
use crate::common::abi::{FlashMlaDecodeParams, MergeStatesParams, TENSOR_MAP_BYTES};
use crate::common::binding::{check, DevBuf};
use crate::common::error::{Result, TensorName};
use crate::common::launch::{Launch, Launches};
use crate::common::target::KernelTarget;
use crate::ops::decode::plan::{
    choose_splits, combine_launch, decode_params, decode_specs, resolve_splits, DecodeBuffers,
    SplitPolicy, WorkspaceLayout,
};
use crate::ops::forward::plan::WARP_SIZE;
use crate::ops::forward::tma::TmaMapDesc;

/// Everything needed to run one MLA decode shape, independent of buffer addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct MlaDecodePlan {
    pub problem: MlaDecodeProblem,
    pub kernel: MlaKernelRow,
    pub decode: Launch,
    pub num_splits: u32,
    /// Keys per split when fixed (batch-invariant), else 0 (derived per item in the kernel).
    pub split_keys: u32,
    /// `partial_o [splits, total_q, hq, 512]`, `partial_lse` / `partial_entropy [splits,
    /// total_q, hq]` f32 (one caller-owned buffer; none without a combine).
    pub workspace: WorkspaceLayout,
    /// The split combine (the paged decode's, over 512 dims), when the decode writes partial
    /// states.
    pub combine: Option<Launch>,
    /// The latent pool's tensor map (without its address) when the kernel is the sm_90a one
    /// (`FlashMlaDecodeTmaParams`); `None` for the sm_80+ kernel (`FlashMlaDecodeParams`).
    pub pool_map: Option<TmaMapDesc>,
}

/// One run's checked MLA decode launches before the sm_90a pool map is encoded (a backend's
/// encoder needs the device: the driver's or the emulator's).
#[derive(Debug, Clone, Copy)]
pub struct MlaLaunches {
    decode: Launch,
    params: FlashMlaDecodeParams,
    pool_map: Option<TmaMapDesc>,
    combine: Option<Launch>,
}

impl MlaLaunches {
    /// The launches, the pool map (sm_90a kernel only) encoded over the bound pool by `encode`.
    pub fn to_launches(
        &self,
        encode: impl FnOnce(TensorName, &TmaMapDesc, u64) -> Result<[u8; TENSOR_MAP_BYTES]>,
    ) -> Result<Launches> {
        let launch = match &self.pool_map {
            Some(map) => {
                let bytes = encode(TensorName::KCache, map, self.params.decode.k_cache as u64)?;
                self.decode
                    .with_params(&mla_tma_params(&bytes, &self.params))
            }
            None => self.decode.with_params(&self.params),
        };
        Ok(Launches::two(launch, self.combine))
    }
}

/// CTAs per cluster of the sm_90a kernel when the row tiles pair up.
const SM90_CLUSTER_CTAS: u64 = 2;

impl MlaDecodePlan {
    /// Validates `problem` and plans it under `policy` with the kernels `target` runs (sm_80+
    /// `mma.sync`; on Hopper the sm_90a `wgmma` kernel where it serves the pool, see
    /// [`validate_mla_decode_for`]). Pure; then [`MlaDecodePlan::bind`] per run.
    pub fn new_for(
        target: KernelTarget,
        problem: &MlaDecodeProblem,
        policy: SplitPolicy,
    ) -> Result<MlaDecodePlan> {
        let kernel = *validate_mla_decode_for(target, problem)?;
        let d = problem.as_decode();
        let rows = (problem.num_heads_q * d.max_seqlen_q()) as u64;
        let row_tiles = rows.div_ceil(u64::from(kernel.tile_rows));
        let base_ctas = problem.batch as u64 * row_tiles;
        let max_len = problem.max_cache_len as u64;
        let (num_splits, split_keys) = match policy {
            // Fewer CTAs than SMs (a few sequences of 128 heads: 4 CTAs each): the paged
            // decode's byte rule (>= 256 keys per split per packed row, i.e. 32768 keys for 128
            // heads) would leave nearly every SM idle, so split for time, with only the
            // per-split minimum of MIN_KEYS_PER_SPLIT keys (one packed row's worth).
            SplitPolicy::Auto { num_sms } if base_ctas < u64::from(num_sms) => {
                (choose_splits(base_ctas, 1, max_len, num_sms), 0)
            }
            _ => resolve_splits(policy, base_ctas, rows, max_len)?,
        };
        let split_output = num_splits > 1 || split_keys > 0;
        let workspace = WorkspaceLayout::for_splits(
            split_output,
            num_splits,
            d.total_q() as u64 * problem.num_heads_q as u64,
            MLA_D_V as u64,
            problem.entropy,
        );
        let decode = Launch::geometry(
            kernel.entry,
            // Row tiles fastest: the tiles reading one split's keys launch together.
            [row_tiles as u32, num_splits, problem.batch as u32],
            [kernel.num_warps * WARP_SIZE, 1, 1],
            kernel.smem_bytes,
        );
        // The sm_90a kernel reads each page once per PAIR of row tiles when they run as a
        // 2-CTA cluster (multicast TMA; kernels/sm90/flash_mla_decode_sm90_cta.cuh): 128 heads
        // are 2 tiles of 64 rows, which would otherwise each read every latent row.
        let decode = if kernel.sm90 && row_tiles.is_multiple_of(SM90_CLUSTER_CTAS) {
            decode.with_cluster([SM90_CLUSTER_CTAS as u32, 1, 1])
        } else {
            decode
        };
        Ok(MlaDecodePlan {
            problem: problem.clone(),
            kernel,
            decode,
            num_splits,
            split_keys,
            workspace,
            combine: combine_launch(target.shared_kernels(), &d, split_output)?,
            pool_map: if kernel.sm90 {
                describe_pool(problem)
            } else {
                None
            },
        })
    }

    /// Binds `bufs` (checked as [`MlaDecodePlan::params`] does) into the launches of one run;
    /// the sm_90a kernel's pool map is encoded over the bound pool by `encode` (the backend's
    /// encoder: the driver's on a GPU, the emulator's otherwise), which the sm_80+ kernel never
    /// calls.
    pub fn bind(
        &self,
        bufs: &DecodeBuffers,
        encode: impl FnOnce(TensorName, &TmaMapDesc, u64) -> Result<[u8; TENSOR_MAP_BYTES]>,
    ) -> Result<Launches> {
        self.bind_checked(bufs)?.to_launches(encode)
    }

    /// [`MlaDecodePlan::bind`] up to the tensor map: every buffer checked, the params filled,
    /// the pool map (sm_90a) left for the backend that launches ([`MlaLaunches::to_launches`]),
    /// as the forward's [`crate::ops::forward::plan::FwdLaunch`] does.
    pub fn bind_checked(&self, bufs: &DecodeBuffers) -> Result<MlaLaunches> {
        let (params, combine) = self.params(bufs)?;
        Ok(MlaLaunches {
            decode: self.decode,
            params,
            pool_map: self.pool_map,
            combine: self.combine.zip(combine).map(|(l, c)| l.with_params(&c)),
        })
    }

    /// The params of the decode and (if any) combine launch for `bufs`, after O(1) checks of
    /// buffer presence, sizes and alignment (the paged decode's table with 512 output dims).
    /// The paged decode's buffers: `k_cache` is the latent pool (q's type or FP8 codes) and
    /// `k_scales` its one scale (FP8); `v_cache` / `v_scales` are ignored (the latent pool is
    /// both).
    pub fn params(
        &self,
        bufs: &DecodeBuffers,
    ) -> Result<(FlashMlaDecodeParams, Option<MergeStatesParams>)> {
        let d = self.problem.as_decode();
        let bufs = DecodeBuffers {
            v_cache: bufs.k_cache,
            v_scales: bufs.k_scales,
            ..*bufs
        };
        let split_output = self.combine.is_some();
        check(&decode_specs(
            &d,
            MLA_D_V,
            &self.workspace,
            split_output,
            &bufs,
        ))?;
        let splits = (self.num_splits, self.split_keys, split_output);
        let (decode, combine) = decode_params(&d, MLA_D_V, splits, &bufs);
        let params = FlashMlaDecodeParams {
            decode,
            head_dim_v: MLA_D_V as i32,
            pad0: 0,
        };
        Ok((params, combine))
    }

    /// Carves one caller-owned f32 workspace into (partial O, partial LSE, partial entropy),
    /// as [`crate::ops::decode::DecodePlan::carve_workspace`].
    pub fn carve_workspace(&self, ws: DevBuf) -> Result<(DevBuf, DevBuf, DevBuf)> {
        crate::ops::decode::plan::carve(self.combine.is_some(), &self.workspace, ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::dtype::DType;
    use crate::common::error::Error;
    use crate::ops::decode::KvCacheDType;
    use crate::ops::mla_decode::MLA_D_QK;

    fn problem(batch: usize, hq: usize, sq: usize, cache: usize) -> MlaDecodeProblem {
        let pages = cache.div_ceil(64).max(1);
        let mut p =
            MlaDecodeProblem::contiguous(DType::Bf16, batch, sq, hq, batch * pages, 64, pages);
        p.max_cache_len = cache;
        p
    }

    #[test]
    fn plan_packs_every_head_of_an_item_into_32_row_tiles() {
        for (hq, sq, tiles) in [
            (16, 1, 1),
            (32, 1, 1),
            (64, 1, 2),
            (128, 1, 4),
            (16, 2, 1),
            (128, 2, 8),
        ] {
            let plan = MlaDecodePlan::new_for(
                KernelTarget::Ampere,
                &problem(3, hq, sq, 4096),
                SplitPolicy::Count(1),
            )
            .unwrap();
            assert_eq!(plan.decode.grid, [tiles, 1, 3], "hq {hq} sq {sq}");
            assert!(plan.combine.is_none());
            assert_eq!(plan.workspace.elems(), 0);
        }
    }

    #[test]
    fn hopper_plans_the_sm90_kernel_where_it_serves_the_pool() {
        let p = problem(2, 128, 1, 4096); // 16-bit pages of 64 keys
        let hopper = MlaDecodePlan::new_for(KernelTarget::Hopper, &p, SplitPolicy::Count(1));
        let hopper = hopper.unwrap();
        assert!(hopper.kernel.sm90, "{}", hopper.kernel.entry);
        assert_eq!(hopper.decode.grid, [2, 1, 2]); // 64-row tiles: 128 heads = 2
        assert_eq!(
            hopper.decode.cluster,
            [2, 1, 1],
            "a 2-CTA cluster shares the pages"
        );
        // One tile (64 heads), or an odd number of tiles: no cluster.
        for (hq, sq) in [(64, 1), (64, 3)] {
            let one = MlaDecodePlan::new_for(
                KernelTarget::Hopper,
                &problem(2, hq, sq, 4096),
                SplitPolicy::Count(1),
            );
            assert_eq!(one.unwrap().decode.cluster, [1, 1, 1], "hq {hq} sq {sq}");
        }
        assert_eq!(hopper.decode.block, [256, 1, 1]);
        assert!(hopper.pool_map.is_some());
        let ampere = MlaDecodePlan::new_for(KernelTarget::Ampere, &p, SplitPolicy::Count(1));
        let ampere = ampere.unwrap();
        assert!(!ampere.kernel.sm90 && ampere.pool_map.is_none());
        assert_eq!(ampere.decode.grid, [4, 1, 2]);
        // FP8 pages and page sizes off the 64-key tile run the sm_80 kernel on Hopper.
        let mut fp8 = p.clone();
        fp8.kv_dtype = KvCacheDType::Fp8E4M3;
        let plan = MlaDecodePlan::new_for(KernelTarget::Hopper, &fp8, SplitPolicy::Count(1));
        let plan = plan.unwrap();
        assert!(!plan.kernel.sm90 && plan.kernel.kv_bytes == 1);
        let mut small = problem(2, 16, 1, 4096);
        small.page_size = 16;
        small.cache_strides = crate::common::geometry::PageStrides::nhd(16, 1, MLA_D_QK);
        small.max_pages_per_seq = 256;
        small.block_table_stride = 256;
        let plan = MlaDecodePlan::new_for(KernelTarget::Hopper, &small, SplitPolicy::Count(1));
        assert!(!plan.unwrap().kernel.sm90);
        // The sm_90a launch encodes the pool's map over the bound pool; the sm_80 one never
        // calls the encoder.
        let buf = |slot: u64, elems: u64| DevBuf {
            addr: slot << 24,
            len: elems,
        };
        let b = DecodeBuffers {
            q: buf(1, 2 * 128 * MLA_D_QK as u64),
            k_cache: buf(2, p.num_pages as u64 * 64 * MLA_D_QK as u64),
            o: buf(3, 2 * 128 * MLA_D_V as u64),
            block_table: buf(4, 2 * 64),
            cache_seqlens: buf(5, 2),
            ..DecodeBuffers::default()
        };
        let mut seen = None;
        let l = hopper.bind(&b, |name, desc, addr| {
            seen = Some((name, *desc, addr));
            Ok([9; TENSOR_MAP_BYTES])
        });
        let l = l.unwrap();
        assert_eq!(
            seen,
            Some((TensorName::KCache, hopper.pool_map.unwrap(), 2 << 24))
        );
        let first = l.iter().next().unwrap();
        assert_eq!(first.params()[..TENSOR_MAP_BYTES], [9; TENSOR_MAP_BYTES]);
        assert!(ampere.bind(&b, |_, _, _| panic!("no map")).is_ok());
    }

    #[test]
    fn split_plan_sizes_the_workspace_with_512_output_dims() {
        let p = problem(2, 16, 1, 8192);
        let plan = MlaDecodePlan::new_for(KernelTarget::Hopper, &p, SplitPolicy::Count(4)).unwrap();
        assert_eq!(plan.num_splits, 4);
        assert_eq!(plan.workspace.partial_o, 4 * 2 * 16 * MLA_D_V as u64);
        assert_eq!(plan.workspace.partial_lse, 4 * 2 * 16);
        assert!(plan.combine.is_some());
        // Auto: a small batch on 132 SMs splits; a batch that fills the device does not. One
        // 128-head sequence of 4096 keys (4 CTAs) splits for time: 4096 / 256 keys.
        let one = problem(1, 128, 1, 4096);
        let auto = MlaDecodePlan::new_for(
            KernelTarget::Ampere,
            &one,
            SplitPolicy::Auto { num_sms: 132 },
        )
        .unwrap();
        assert_eq!(auto.num_splits, 16);
        let auto =
            MlaDecodePlan::new_for(KernelTarget::Ampere, &p, SplitPolicy::Auto { num_sms: 132 })
                .unwrap();
        assert!(auto.num_splits > 1);
        let full = problem(264, 16, 1, 8192);
        let auto = MlaDecodePlan::new_for(
            KernelTarget::Ampere,
            &full,
            SplitPolicy::Auto { num_sms: 132 },
        )
        .unwrap();
        assert_eq!(auto.num_splits, 1);
    }

    #[test]
    fn bad_problems_are_typed_errors() {
        let good = problem(2, 16, 1, 256);
        let plan = |p: &MlaDecodeProblem| {
            MlaDecodePlan::new_for(KernelTarget::Ampere, p, SplitPolicy::Count(1))
        };
        assert!(plan(&good).is_ok());
        let mut p = good.clone();
        p.num_heads_q = 0;
        assert!(matches!(plan(&p), Err(Error::EmptyDim { .. })));
        let mut p = good.clone();
        p.batch = 0;
        assert!(matches!(plan(&p), Err(Error::EmptyDim { .. })));
        let mut p = good.clone();
        p.batch = usize::MAX;
        assert!(plan(&p).is_err());
        let mut p = good.clone();
        p.page_size = 0;
        assert!(plan(&p).is_err());
        let mut p = good.clone();
        p.max_cache_len = usize::MAX;
        assert!(plan(&p).is_err());
        let mut p = good.clone();
        p.kv_dtype = KvCacheDType::Fp8E4M3;
        let fp8 = plan(&p).unwrap();
        assert!(fp8.kernel.entry.contains("_fp8_"), "{}", fp8.kernel.entry);
        let mut p = good.clone();
        p.o_strides.head = (MLA_D_V / 2) as i64; // heads of o overlap
        assert!(plan(&p).is_err());
        let mut p = good.clone();
        p.q_strides.row = 3; // misaligned
        assert!(plan(&p).is_err());
        let mut p = good.clone();
        p.options.softmax_scale = Some(f32::NAN);
        assert!(plan(&p).is_err());
        assert!(matches!(
            MlaDecodePlan::new_for(KernelTarget::Turing, &good, SplitPolicy::Count(1)),
            Err(Error::UnsupportedOnTarget { .. })
        ));
        assert!(matches!(
            MlaDecodePlan::new_for(KernelTarget::Ampere, &good, SplitPolicy::Count(0)),
            Err(Error::SplitCount { .. })
        ));
        // o of 2 x 16 rows of 512 is what the buffer table asks for (576 is not needed); one
        // element less is a typed error. Distinct 1 MiB-aligned buffers.
        let plan = plan(&good).unwrap();
        let buf = |slot: u64, elems: u64| DevBuf {
            addr: slot << 24,
            len: elems,
        };
        let o_len = 2 * 16 * MLA_D_V as u64;
        let mut b = DecodeBuffers {
            q: buf(1, 2 * 16 * MLA_D_QK as u64),
            k_cache: buf(2, good.num_pages as u64 * 64 * MLA_D_QK as u64),
            o: buf(3, o_len),
            block_table: buf(4, 2 * 4),
            cache_seqlens: buf(5, 2),
            ..DecodeBuffers::default()
        };
        assert!(plan.params(&b).is_ok(), "{:?}", plan.params(&b).err());
        b.o = buf(3, o_len - 1);
        assert!(matches!(plan.params(&b), Err(Error::BufferTooSmall { .. })));
    }
}
