//! Modelled GPU time from emulator counters (README.md, "Performance evidence"), per pipe:
//! tensor, shared memory, SFU, FP32, ALU, issue, L2 and DRAM, with occupancy from ptxas
//! registers and shared memory, wave quantisation over the SMs and spill traffic. Pure arithmetic over counted work
//! and a table of cited per-SM throughputs ([`gpus`]); every time it produces is a *model*, not
//! a measurement, and is labelled so.
//!
//! - [`gpus`]: per-SM, per-clock throughputs of A100, A10 (sm_86), L4 (sm_89), T4 (sm_75) and
//!   H100 (one entry for the mma.sync kernels, one for the sm_90a wgmma forward);
//! - [`pipes`]: work -> time per pipe, occupancy, waves, the binding pipe;
//! - [`registers`]: the `setmaxnreg` register split of a warp-specialised CTA and its pool;
//! - [`launch_work`]: the work of a whole launch, extrapolated from small emulated launches;
//! - [`tile_figures`]: main-loop ratios per kernel (ldmatrix, wavefronts, non-tensor per mma);
//! - [`backward`]: the backward's three launches, main-loop figures per mma, modelled time;
//! - `decode`: paged decode (decode launch + split combine) from one emulated item;
//! - [`timing`]: the predicted time from the emulator's cycle-approximate SM simulation
//!   (latency, occupancy, barriers), beside the per-pipe bounds.

use crate::problem::{FwdProblem, SeqLayout};

pub mod backward;
#[cfg(feature = "reference")]
pub mod calibrate;
pub mod calibrate_bwd;
pub mod decode;
pub mod decode_bench;
pub mod gpus;
pub mod launch_work;
pub mod mla_decode;
pub mod pipes;
pub mod registers;
pub mod tile_figures;
pub mod timing;

/// DRAM bytes of a forward launch on `gpu`: the compulsory bytes when the K and V of the heads
/// in flight at once (resident CTAs / Q tiles per head, grid x = Q tile runs fastest) fit in half
/// of L2, so that the other Q tiles of a head re-read them from L2; else every 32-byte sector the
/// kernel touches (each re-read from DRAM: an upper bound).
pub fn dram_bytes(
    p: &FwdProblem,
    global_sectors: f64,
    gpu: &gpus::GpuSpec,
    resident_ctas: u64,
    q_tiles_per_head: u64,
) -> f64 {
    let (_, sk) = p.layout.max_seqlens();
    let heads_in_flight = resident_ctas.div_ceil(q_tiles_per_head.max(1)).max(1) as f64;
    // K rows of d_qk and V rows of d_v elements.
    let kv_in_flight = heads_in_flight * (sk * (p.head_dim + p.head_dim_v) * p.dtype.size()) as f64;
    if kv_in_flight <= gpu.l2_bytes / 2.0 {
        p.compulsory_bytes()
    } else {
        global_sectors * 32.0
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
    // Q / K rows of d_qk, V / O rows of d_v elements.
    let d_both = (p.head_dim + p.head_dim_v) as f64;
    let per_head_elems = sq as f64 * d_both + keys_read as f64 * d_both;
    let stats = 4.0 * sq as f64 * [p.lse_len, p.entropy_len].iter().flatten().count() as f64;
    Some((batch * p.num_heads_q) as f64 * (e * per_head_elems + stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::dtype::DType;
    use crate::common::options::AttnOptions;

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
        let mut p = mk(false);
        p.lse_len = Some(128);
        assert_eq!(
            tile_model_bytes(&p, 64, 64),
            Some((2.0 * 128.0 + 2.0 * 256.0) * 64.0 * 2.0 + 512.0)
        );
    }

    #[test]
    fn dram_is_compulsory_while_the_kv_in_flight_fits_half_of_l2() {
        let p = FwdProblem::contiguous(
            DType::Bf16,
            SeqLayout::Padded {
                batch: 1,
                seqlen_q: 4096,
                seqlen_k: 4096,
            },
            16,
            16,
            128,
            AttnOptions::default(),
        );
        // 108 resident CTAs over 32 Q tiles per head: 4 heads x 2 MiB of K+V = 8 MiB < 20 MB.
        let a100 = &gpus::A100;
        assert_eq!(dram_bytes(&p, 1e12, a100, 108, 32), p.compulsory_bytes());
        // One Q tile per head: 108 heads of K+V in flight (216 MiB) do not fit: every sector.
        assert_eq!(dram_bytes(&p, 1e9, a100, 108, 1), 32e9);
    }
}
