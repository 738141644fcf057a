//! Performance counters of one launch. Definitions (all exact, deterministic):
//!
//! * **warp-instruction**: one issue of one PTX instruction by one warp for the group of its
//!   lanes that are converged at that instruction (same PC, scheduled together). Lanes whose
//!   guard predicate is false are still part of the issue (hardware issues predicated-off
//!   instructions too). A warp whose lanes diverge issues the instruction once per group.
//!   A warp-level collective (`shfl`, `mma`, ...) whose lanes arrive in several groups is counted
//!   when each group reaches it and then once when it executes.
//! * **thread-instruction**: lanes of a warp-instruction whose guard predicate is true.
//! * **by class**: warp-instructions split by the static class of the instruction
//!   (see [`Class`]); generic-space `ld`/`st` count as memory-global.
//! * **tensor FLOPs**: 2·m·n·k per executed warp `mma` (4096 for m16n8k16), plus the wgmma
//!   FLOPs.
//! * **wgmma instructions**: executed warpgroup `wgmma.mma_async` (one per warpgroup, counted
//!   by its first warp); **wgmma FLOPs**: 2·64·N·16 per warpgroup instruction (each of its four
//!   warps computes a 16-row slice and adds 2·16·N·16).
//! * **wgmma shared-memory operand bytes**: per warpgroup `wgmma.mma_async`, the bytes of its
//!   operands given by matrix descriptors: A (64·16 elements) when it is in shared memory, and
//!   B (N·16 elements), 2 bytes each. Counted once per warpgroup instruction, not per warp: the
//!   four warps' slices of A partition it, and B is modelled as read once for the warpgroup (the
//!   ISA does not say how hardware delivers it; `perf_model::gpus` states the assumption).
//! * **global bytes requested**: sum over active lanes of the bytes each global access (and each
//!   `cp.async` source read) asks for; **global sectors**: per warp-instruction, the number of
//!   distinct 32-byte aligned sectors those bytes touch, summed.
//! * **shared wavefronts**: per warp-level shared access, lanes are split into phases of 128
//!   bytes (32 lanes for accesses of up to 4 bytes, 16 for 8-byte, 8 for 16-byte; one phase per
//!   8x8 matrix for `ldmatrix`; `cp.async` counts as a store of its copy size). A phase needs as
//!   many wavefronts as the largest number of distinct 4-byte words it touches in any one of the
//!   32 banks (same word = broadcast, no conflict). The **ideal** is, per phase,
//!   ceil(distinct words / 32). needed / ideal is the bank-conflict factor.
//! * **barriers**: completed CTA barrier generations (`bar.sync`/`barrier.sync`), summed over CTAs.
//! * **mbarrier phases**: completed mbarrier phases, summed over CTAs.
//! * **TMA bytes loaded / stored**: bytes the bulk and tensor copies (`cp.async.bulk*`) move:
//!   a load counts its whole box (out-of-bounds fill included, as its transaction bytes do), a
//!   store the bytes it writes to global memory. The global bytes they read or write in bounds
//!   are also in the global load/store bytes and sectors.

use std::fmt;

use super::program::Class;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub ctas: u64,
    pub threads: u64,
    pub warp_instructions: u64,
    pub thread_instructions: u64,
    /// Warp-instructions per class, in the order of [`Class::ALL`].
    pub by_class: Vec<(Class, u64)>,
    pub mma_instructions: u64,
    pub tensor_flops: u64,
    pub wgmma_instructions: u64,
    pub wgmma_flops: u64,
    pub wgmma_smem_bytes: u64,
    pub global_load_bytes: u64,
    pub global_store_bytes: u64,
    pub global_atomic_bytes: u64,
    pub global_sectors: u64,
    pub shared_accesses: u64,
    pub shared_wavefronts: u64,
    pub shared_wavefronts_ideal: u64,
    pub barriers: u64,
    pub mbarrier_phases: u64,
    pub tma_load_bytes: u64,
    pub tma_store_bytes: u64,
    /// Warp-instructions per PTX source line, ascending by line (lines never executed omitted).
    pub per_line: Vec<(u32, u64)>,
}

impl Counters {
    pub fn class(&self, c: Class) -> u64 {
        self.by_class
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }

    pub fn global_bytes_requested(&self) -> u64 {
        self.global_load_bytes + self.global_store_bytes + self.global_atomic_bytes
    }

    /// (name, value) rows for a table.
    pub fn rows(&self) -> Vec<(String, u64)> {
        let mut r = vec![
            ("CTAs".to_string(), self.ctas),
            ("threads".to_string(), self.threads),
            ("warp-instructions".to_string(), self.warp_instructions),
            ("thread-instructions".to_string(), self.thread_instructions),
        ];
        for (c, v) in &self.by_class {
            r.push((format!("  {}", c.name()), *v));
        }
        r.extend([
            ("mma instructions (warp)".to_string(), self.mma_instructions),
            ("tensor FLOPs".to_string(), self.tensor_flops),
            (
                "wgmma instructions (warpgroup)".to_string(),
                self.wgmma_instructions,
            ),
            ("wgmma FLOPs".to_string(), self.wgmma_flops),
            (
                "wgmma smem operand bytes".to_string(),
                self.wgmma_smem_bytes,
            ),
            ("global load bytes".to_string(), self.global_load_bytes),
            ("global store bytes".to_string(), self.global_store_bytes),
            ("global atomic bytes".to_string(), self.global_atomic_bytes),
            ("global 32B sectors".to_string(), self.global_sectors),
            ("shared accesses (warp)".to_string(), self.shared_accesses),
            ("shared wavefronts".to_string(), self.shared_wavefronts),
            (
                "shared wavefronts (ideal)".to_string(),
                self.shared_wavefronts_ideal,
            ),
            ("barriers".to_string(), self.barriers),
            ("mbarrier phases".to_string(), self.mbarrier_phases),
            ("TMA bytes loaded".to_string(), self.tma_load_bytes),
            ("TMA bytes stored".to_string(), self.tma_store_bytes),
        ]);
        r
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, v) in self.rows() {
            writeln!(f, "{name:<28} {v:>16}")?;
        }
        Ok(())
    }
}

/// Raw per-CTA accumulation; turned into [`Counters`] once per launch.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawCounters {
    pub per_pc: Vec<u64>,
    pub thread_instructions: u64,
    pub mma: u64,
    pub flops: u64,
    pub wgmma: u64,
    pub wgmma_flops: u64,
    pub wgmma_smem: u64,
    pub gld: u64,
    pub gst: u64,
    pub gatom: u64,
    pub sectors: u64,
    pub shared_accesses: u64,
    pub wavefronts: u64,
    pub wavefronts_ideal: u64,
    pub barriers: u64,
    pub mbar_phases: u64,
    pub tma_load: u64,
    pub tma_store: u64,
    pub threads: u64,
    pub ctas: u64,
}

impl RawCounters {
    pub fn new(ninst: usize) -> Self {
        RawCounters {
            per_pc: vec![0; ninst],
            ..Default::default()
        }
    }

    pub fn merge(&mut self, o: &RawCounters) {
        for (a, b) in self.per_pc.iter_mut().zip(&o.per_pc) {
            *a += b;
        }
        self.thread_instructions += o.thread_instructions;
        self.mma += o.mma;
        self.flops += o.flops;
        self.wgmma += o.wgmma;
        self.wgmma_flops += o.wgmma_flops;
        self.wgmma_smem += o.wgmma_smem;
        self.gld += o.gld;
        self.gst += o.gst;
        self.gatom += o.gatom;
        self.sectors += o.sectors;
        self.shared_accesses += o.shared_accesses;
        self.wavefronts += o.wavefronts;
        self.wavefronts_ideal += o.wavefronts_ideal;
        self.barriers += o.barriers;
        self.mbar_phases += o.mbar_phases;
        self.tma_load += o.tma_load;
        self.tma_store += o.tma_store;
        self.threads += o.threads;
        self.ctas += o.ctas;
    }

    pub fn finish(&self, classes: &[Class], lines: &[u32]) -> Counters {
        let mut by = vec![0u64; Class::ALL.len()];
        let mut per_line = std::collections::BTreeMap::new();
        for (pc, &n) in self.per_pc.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let ci = Class::ALL.iter().position(|c| *c == classes[pc]).unwrap();
            by[ci] += n;
            *per_line.entry(lines[pc]).or_insert(0u64) += n;
        }
        Counters {
            ctas: self.ctas,
            threads: self.threads,
            warp_instructions: self.per_pc.iter().sum(),
            thread_instructions: self.thread_instructions,
            by_class: Class::ALL.iter().copied().zip(by).collect(),
            mma_instructions: self.mma,
            tensor_flops: self.flops,
            wgmma_instructions: self.wgmma,
            wgmma_flops: self.wgmma_flops,
            wgmma_smem_bytes: self.wgmma_smem,
            global_load_bytes: self.gld,
            global_store_bytes: self.gst,
            global_atomic_bytes: self.gatom,
            global_sectors: self.sectors,
            shared_accesses: self.shared_accesses,
            shared_wavefronts: self.wavefronts,
            shared_wavefronts_ideal: self.wavefronts_ideal,
            barriers: self.barriers,
            mbarrier_phases: self.mbar_phases,
            tma_load_bytes: self.tma_load,
            tma_store_bytes: self.tma_store,
            per_line: per_line.into_iter().collect(),
        }
    }
}

/// Wavefronts (needed, ideal) of one warp-level shared access. `acc` holds (lane, address,
/// bytes) of the active lanes in lane order; `phase_lanes` lanes form one 128-byte phase.
pub(crate) fn wavefronts(acc: &[(u32, u32, u32)], phase_lanes: u32) -> (u64, u64) {
    let mut needed = 0u64;
    let mut ideal = 0u64;
    let mut words = [0u64; 160];
    let mut i = 0;
    while i < acc.len() {
        let phase = acc[i].0 / phase_lanes;
        let mut n = 0;
        while i < acc.len() && acc[i].0 / phase_lanes == phase {
            let (_, addr, len) = acc[i];
            // In u64: an out-of-bounds access near 2^32 (reported by the access) still counts.
            let first = addr as u64 / 4;
            let last = (addr as u64 + len.max(1) as u64 - 1) / 4;
            for w in first..=last {
                if n < words.len() {
                    words[n] = w;
                    n += 1;
                }
            }
            i += 1;
        }
        let ws = &mut words[..n];
        ws.sort_unstable();
        let mut distinct = 0usize;
        let mut banks = [0u8; 32];
        let mut prev = u64::MAX;
        for &w in ws.iter() {
            if w != prev {
                distinct += 1;
                banks[(w % 32) as usize] += 1;
                prev = w;
            }
        }
        needed += *banks.iter().max().unwrap() as u64;
        ideal += distinct.div_ceil(32) as u64;
    }
    (needed, ideal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_free_and_conflicting_patterns() {
        // 32 lanes reading consecutive words: one wavefront.
        let acc: Vec<_> = (0..32).map(|l| (l, l * 4, 4)).collect();
        assert_eq!(wavefronts(&acc, 32), (1, 1));
        // stride of 32 words: all in bank 0, 32-way conflict.
        let acc: Vec<_> = (0..32).map(|l| (l, l * 128, 4)).collect();
        assert_eq!(wavefronts(&acc, 32), (32, 1));
        // broadcast of one word.
        let acc: Vec<_> = (0..32).map(|l| (l, 64, 4)).collect();
        assert_eq!(wavefronts(&acc, 32), (1, 1));
        // 16-byte accesses, consecutive: 4 phases of 8 lanes, conflict free.
        let acc: Vec<_> = (0..32).map(|l| (l, l * 16, 16)).collect();
        assert_eq!(wavefronts(&acc, 8), (4, 4));
        // 16-byte rows with a 128-byte stride (unpadded 64-wide f16 tile): 8-way conflict per phase.
        let acc: Vec<_> = (0..32).map(|l| (l, l * 128, 16)).collect();
        assert_eq!(wavefronts(&acc, 8), (32, 4));
    }
}
