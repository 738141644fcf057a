//! Modelled GPU time from emulator counters (DESIGN.md section 5): the larger of tensor-core
//! time, DRAM time and instruction-issue time, on a table of published peaks. Pure arithmetic;
//! every figure it produces is a *model*, not a measurement, and is labelled so.

use crate::emulator::Counters;

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
}

/// A100 SXM4 80 GB: 312 TFLOP/s bf16 dense, 2039 GB/s, 108 SMs at a 1410 MHz boost clock.
pub const A100: GpuPeaks = GpuPeaks {
    name: "A100-SXM4-80GB",
    tensor_flops: 312e12,
    dram_bytes: 2039e9,
    warp_issue: 108.0 * 4.0 * 1410e6,
};

/// H100 SXM5: 989 TFLOP/s bf16 dense (wgmma; our mma.sync path reaches far less, so the
/// tensor term is optimistic for this kernel), 3350 GB/s, 132 SMs at 1830 MHz.
pub const H100: GpuPeaks = GpuPeaks {
    name: "H100-SXM5",
    tensor_flops: 989e12,
    dram_bytes: 3350e9,
    warp_issue: 132.0 * 4.0 * 1830e6,
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

/// Models one launch. DRAM bytes are the 32-byte sectors the kernel touched (every global
/// access counted as DRAM traffic: an upper bound, since L2 absorbs re-reads of K/V across Q
/// tiles). Assumes the grid fills the GPU; small grids would be slower.
pub fn model(c: &Counters, gpu: &GpuPeaks) -> Modelled {
    Modelled {
        tensor_s: c.tensor_flops as f64 / gpu.tensor_flops,
        dram_s: (c.global_sectors * 32) as f64 / gpu.dram_bytes,
        issue_s: c.warp_instructions as f64 / gpu.warp_issue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_term_bounds_the_time() {
        let c = Counters {
            tensor_flops: 312_000_000_000, // 1 ms of A100 tensor time
            global_sectors: 1_000,
            warp_instructions: 1_000,
            ..Default::default()
        };
        let m = model(&c, &A100);
        assert!((m.seconds() - 1e-3).abs() < 1e-12);
        assert_eq!(m.bound(), Bound::Tensor);
        let c = Counters {
            tensor_flops: 1,
            global_sectors: 2039e9 as u64 / 32, // 1 s of DRAM traffic
            warp_instructions: 1,
            ..Default::default()
        };
        assert_eq!(model(&c, &A100).bound(), Bound::Dram);
        let c = Counters {
            warp_instructions: 1_000_000_000,
            ..Default::default()
        };
        let m = model(&c, &H100);
        assert_eq!(m.bound(), Bound::Issue);
        assert!((m.issue_s - 1e9 / (132.0 * 4.0 * 1830e6)).abs() < 1e-15);
    }
}
