//! Modelled GPU time from emulator counters (DESIGN.md section 5): the larger of tensor-core
//! time, DRAM time and instruction-issue time, on a table of published peaks. Pure arithmetic;
//! every figure it produces is a *model*, not a measurement, and is labelled so.

use crate::emulator::Counters;
use crate::problem::{FwdProblem, SeqLayout};

pub mod tile_figures;

/// Published peaks of one GPU (dense, no sparsity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuPeaks {
    pub name: &'static str,
    /// f16/bf16 tensor-core FLOP/s with f32 accumulation.
    pub tensor_flops: f64,
    /// DRAM bytes/s.
    pub dram_bytes: f64,
    /// Warp-instructions issued per second over the whole GPU (SMs x 4 schedulers x clock).
    pub warp_issue: f64,
    /// L2 cache bytes.
    pub l2_bytes: f64,
}

/// A100 SXM4 80 GB: 312 TFLOP/s bf16 dense, 2039 GB/s, 108 SMs at a 1410 MHz boost clock.
pub const A100: GpuPeaks = GpuPeaks {
    name: "A100-SXM4-80GB",
    tensor_flops: 312e12,
    dram_bytes: 2039e9,
    warp_issue: 108.0 * 4.0 * 1410e6,
    l2_bytes: 40e6,
};

/// H100 SXM5: 989 TFLOP/s bf16 dense (wgmma; our mma.sync path reaches far less, so the
/// tensor term is optimistic for this kernel), 3350 GB/s, 132 SMs at 1830 MHz.
pub const H100: GpuPeaks = GpuPeaks {
    name: "H100-SXM5",
    tensor_flops: 989e12,
    dram_bytes: 3350e9,
    warp_issue: 132.0 * 4.0 * 1830e6,
    l2_bytes: 50e6,
};

/// Which term bounds a modelled time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Tensor,
    Dram,
    Issue,
}

/// A modelled time and its three terms, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Modelled {
    pub tensor_s: f64,
    pub dram_s: f64,
    pub issue_s: f64,
}

impl Modelled {
    pub fn seconds(&self) -> f64 {
        self.tensor_s.max(self.dram_s).max(self.issue_s)
    }

    pub fn bound(&self) -> Bound {
        let t = self.seconds();
        if t == self.tensor_s {
            Bound::Tensor
        } else if t == self.dram_s {
            Bound::Dram
        } else {
            Bound::Issue
        }
    }
}

/// Models one launch moving `dram_bytes` to and from DRAM (see [`dram_bytes`]). Assumes the
/// grid fills the GPU and latency is hidden: a roofline, not a prediction for small grids.
pub fn model(c: &Counters, gpu: &GpuPeaks, dram_bytes: f64) -> Modelled {
    Modelled {
        tensor_s: c.tensor_flops as f64 / gpu.tensor_flops,
        dram_s: dram_bytes / gpu.dram_bytes,
        issue_s: c.warp_instructions as f64 / gpu.warp_issue,
    }
}

/// DRAM traffic of a forward launch: the compulsory bytes when the K and V of every KV head
/// fit in half of L2 together (Q tiles of one head run close together in time, so their K/V
/// re-reads hit L2), else every 32-byte sector the kernel touched (each re-read from DRAM, an
/// upper bound).
pub fn dram_bytes(p: &FwdProblem, c: &Counters, gpu: &GpuPeaks) -> f64 {
    let (_, tk) = p.layout.total_rows();
    let kv = 2.0 * (tk * p.num_heads_kv * p.head_dim * p.dtype.size()) as f64;
    if kv <= gpu.l2_bytes / 2.0 {
        p.compulsory_bytes()
    } else {
        (c.global_sectors * 32) as f64
    }
}

/// Global bytes the FA2 tiling must move for a padded, window-free problem: Q read once and O
/// written once per (item, head), plus K and V re-read by every Q tile for the keys its KV tiles
/// cover (whole `block_n` tiles up to the causal bound, capped at `sk`; rows past `sk` are
/// zero-filled without a read), plus 4 bytes per row for each of LSE and entropy if written.
/// `None` for layouts this model does not cover (varlen, sliding windows).
pub fn tile_model_bytes(p: &FwdProblem, block_m: usize, block_n: usize) -> Option<f64> {
    let SeqLayout::Padded {
        batch,
        seqlen_q: sq,
        seqlen_k: sk,
    } = p.layout
    else {
        return None;
    };
    if p.options.window.is_some() {
        return None;
    }
    let shift = sk as i64 - sq as i64;
    let keys_read: usize = (0..sq.div_ceil(block_m))
        .map(|t| {
            let last_row = ((t + 1) * block_m).min(sq) as i64 - 1;
            let hi = if p.options.causal {
                (last_row + shift + 1).clamp(0, sk as i64) as usize
            } else {
                sk
            };
            (hi.div_ceil(block_n) * block_n).min(sk)
        })
        .sum();
    let e = p.dtype.size() as f64;
    let d = p.head_dim as f64;
    let per_head_elems = 2.0 * sq as f64 * d + 2.0 * keys_read as f64 * d;
    let stats = 4.0 * sq as f64 * [p.lse_len, p.entropy_len].iter().flatten().count() as f64;
    Some((batch * p.num_heads_q) as f64 * (e * per_head_elems + stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::options::AttnOptions;

    #[test]
    fn tile_model_counts_kv_rereads_per_q_tile_and_causal_skipping() {
        let mk = |causal| {
            FwdProblem::contiguous(
                DType::Bf16,
                SeqLayout::Padded {
                    batch: 1,
                    seqlen_q: 128,
                    seqlen_k: 128,
                },
                1,
                1,
                64,
                AttnOptions {
                    causal,
                    ..Default::default()
                },
            )
        };
        // Two Q tiles each read all 128 keys: 2*(128*64)*2B for Q+O, 2*256*64*2B for K+V.
        assert_eq!(
            tile_model_bytes(&mk(false), 64, 64),
            Some((2.0 * 128.0 + 2.0 * 256.0) * 64.0 * 2.0)
        );
        // Causal: tile 0 reads keys 0..64, tile 1 reads 0..128.
        assert_eq!(
            tile_model_bytes(&mk(true), 64, 64),
            Some((2.0 * 128.0 + 2.0 * 192.0) * 64.0 * 2.0)
        );
        let c = Counters {
            global_sectors: 1_000_000,
            ..Default::default()
        };
        // K/V of one 128-key head fit in L2: only compulsory bytes reach DRAM.
        assert_eq!(
            dram_bytes(&mk(false), &c, &A100),
            mk(false).compulsory_bytes()
        );
        let mut p = mk(false);
        p.lse_len = Some(128);
        assert_eq!(
            tile_model_bytes(&p, 64, 64),
            Some((2.0 * 128.0 + 2.0 * 256.0) * 64.0 * 2.0 + 512.0)
        );
    }

    #[test]
    fn the_largest_term_bounds_the_time() {
        let c = Counters {
            tensor_flops: 312_000_000_000, // 1 ms of A100 tensor time
            global_sectors: 1_000,
            warp_instructions: 1_000,
            ..Default::default()
        };
        let m = model(&c, &A100, 1e3);
        assert!((m.seconds() - 1e-3).abs() < 1e-12);
        assert_eq!(m.bound(), Bound::Tensor);
        let c = Counters {
            tensor_flops: 1,
            warp_instructions: 1,
            ..Default::default()
        };
        assert_eq!(model(&c, &A100, 2039e9).bound(), Bound::Dram); // 1 s of DRAM traffic
        let c = Counters {
            warp_instructions: 1_000_000_000,
            ..Default::default()
        };
        let m = model(&c, &H100, 0.0);
        assert_eq!(m.bound(), Bound::Issue);
        assert!((m.issue_s - 1e9 / (132.0 * 4.0 * 1830e6)).abs() < 1e-15);
    }
}
