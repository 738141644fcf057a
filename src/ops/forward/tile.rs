//! Which compiled tile of a head dim the forward plan launches (issue 20, "retile by it"). A
//! head dim has its primary row (FLASHMHA_FWD_KERNELS of kernels/kernel_table.h: fits every
//! sm_80+ part) and may have more tiles (FLASHMHA_FWD_TILE_KERNELS, e.g. d128 with single-buffered
//! K / V in 64 KB). The SM simulation (src/perf_model/timing.rs, `flashmha bench --candidates`)
//! ranks them per GPU; what decides first is residency: a tile wins where more of its warps fit
//! an SM than of the primary row's (A100's 164 KB hold two 64 KB CTAs but one 96 KB CTA). The
//! rule here is that ranking in closed form: the most resident warps per SM from the part's
//! shared memory, registers and threads (CUDA C++ Programming Guide, "Technical Specifications
//! per Compute Capability"); among equals the tile rows in table order, then the primary (the
//! table lists a head dim's tiles in the simulation's order at equal residency). Pure
//! arithmetic, no simulation at plan time; the predicted times behind it are in
//! kernels/kernel_table.h and bench/results/fwd_candidates_bf16.txt.

use crate::common::build_info::{ptxas_stats, FwdKernelRow};
use crate::common::error::{Error, Result};

/// Which row of a head dim a plan launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TileChoice {
    /// The head dim's primary row: fits every part of the target.
    #[default]
    Primary,
    /// The row with the most resident warps per SM on a part of this compute capability
    /// (`major * 10 + minor`, e.g. 80 for A100, 86 for A10, 90 for H100), on ties the first
    /// tile row listed before the primary; the primary on capabilities the rule does not know.
    ForSm(u32),
    /// Exactly this compiled entry (benchmarks and tests of one tile): it must be a row of the
    /// primary row's target, dtype and head dims, else [`Error::NoKernel`].
    Entry(&'static str),
}

/// Per-SM limits of a compute capability that decide residency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmLimits {
    /// Shared memory per SM available to CTAs, bytes.
    pub smem_per_sm: u32,
    /// Shared memory the system reserves per resident CTA, bytes.
    pub smem_reserved_per_cta: u32,
    /// 32-bit registers per SM.
    pub regs_per_sm: u32,
    pub max_threads_per_sm: u32,
    pub max_ctas_per_sm: u32,
}

/// The limits of compute capability `sm` (`major * 10 + minor`) from the CUDA C++
/// Programming Guide's table ("Technical Specifications per Compute Capability"): shared
/// memory per SM 164 KB on 8.0 / 8.7, 100 KB on 8.6 / 8.9 / 12.x, 228 KB on 9.0 / 10.x, 1 KB
/// reserved per CTA, 64 K registers; `None` for a capability it does not list here.
pub fn sm_limits(sm: u32) -> Option<SmLimits> {
    const KB: u32 = 1024;
    let (smem_kb, threads, ctas) = match sm {
        80 | 87 => (164, 2048, 32),
        86 => (100, 1536, 16),
        89 => (100, 1536, 24),
        90 | 100 | 103 => (228, 2048, 32),
        120 | 121 => (100, 1536, 32),
        _ => return None,
    };
    Some(SmLimits {
        smem_per_sm: smem_kb * KB,
        smem_reserved_per_cta: KB,
        regs_per_sm: 64 * KB,
        max_threads_per_sm: threads,
        max_ctas_per_sm: ctas,
    })
}

/// Resident warps per SM of `row` under `lim` with `regs` registers per thread (allocated in
/// units of 8 per thread: 256 per warp).
pub fn resident_warps(row: &FwdKernelRow, lim: &SmLimits, regs: u32) -> u32 {
    let threads = row.num_warps * 32;
    let regs_per_cta = regs.div_ceil(8) * 8 * threads;
    let by_smem = lim.smem_per_sm / (row.smem_bytes + lim.smem_reserved_per_cta);
    let by_regs = lim.regs_per_sm / regs_per_cta.max(1);
    let by_threads = lim.max_threads_per_sm / threads.max(1);
    by_smem
        .min(by_regs)
        .min(by_threads)
        .min(lim.max_ctas_per_sm)
        * row.num_warps
}

/// Registers per thread of `row`'s cubin for compute capability `sm`: the newest cubin
/// architecture at or below it (ptxas figures of this build); 255 when none is recorded.
pub fn registers_on(row: &FwdKernelRow, sm: u32) -> u32 {
    ptxas_stats(row.entry)
        .filter_map(|s| {
            let a: u32 = s
                .arch
                .strip_prefix("sm_")?
                .trim_end_matches('a')
                .parse()
                .ok()?;
            (a <= sm).then_some((a, s.registers))
        })
        .max_by_key(|&(a, _)| a)
        .map_or(255, |(_, r)| r)
}

/// The row `choice` picks among `table`'s rows alike `primary` (target, dtype, d_qk, d_v), with
/// `regs(row, sm)` registers per thread. `primary` itself for [`TileChoice::Primary`] and where
/// the rule knows no limits.
pub fn choose<'t>(
    table: &'t [FwdKernelRow],
    primary: &'t FwdKernelRow,
    choice: TileChoice,
    regs: impl Fn(&FwdKernelRow, u32) -> u32,
) -> Result<&'t FwdKernelRow> {
    let alike = || {
        table.iter().filter(|r| {
            r.target == primary.target
                && r.dtype == primary.dtype
                && r.head_dim == primary.head_dim
                && r.head_dim_v == primary.head_dim_v
        })
    };
    match choice {
        TileChoice::Primary => Ok(primary),
        TileChoice::Entry(e) => alike()
            .find(|r| r.entry == e)
            .ok_or_else(|| Error::NoKernel {
                entry: e.to_string(),
            }),
        TileChoice::ForSm(sm) => {
            let Some(lim) = sm_limits(sm) else {
                return Ok(primary);
            };
            // The row with the most warps; among equals the first tile row listed, then the
            // primary (at equal residency the simulation ranks the tiles in table order ahead
            // of the primary: kernels/kernel_table.h).
            let warps = |r: &FwdKernelRow| resident_warps(r, &lim, regs(r, sm));
            let tiles = alike().filter(|r| !std::ptr::eq(*r, primary));
            let best = tiles
                .chain(std::iter::once(primary))
                .fold(None::<&FwdKernelRow>, |b, r| match b {
                    Some(b) if warps(b) >= warps(r) => Some(b),
                    _ => Some(r),
                });
            Ok(best.unwrap_or(primary))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::dtype::DType;
    use crate::common::target::KernelTarget;

    const fn row(
        entry: &'static str,
        d: u32,
        m: u32,
        n: u32,
        warps: u32,
        smem: u32,
    ) -> FwdKernelRow {
        FwdKernelRow {
            target: KernelTarget::Ampere,
            entry,
            dtype: DType::Bf16,
            head_dim: d,
            head_dim_v: d,
            block_m: m,
            block_n: n,
            num_warps: warps,
            smem_bytes: smem,
        }
    }

    /// A head dim's primary row first, then its tiles (as in kernels/kernel_table.h), and a
    /// row of another head dim that must never be picked for d128.
    const TABLE: &[FwdKernelRow] = &[
        row("d128", 128, 128, 64, 4, 98304),
        row("d64", 64, 128, 64, 4, 49152),
        row("d128_s1", 128, 128, 64, 4, 65536),
        row("d128_w8", 128, 128, 64, 8, 98304),
        row("d128_n32_s1", 128, 128, 32, 4, 49152),
    ];

    /// Registers per thread as ptxas gave them (255 for the 4-warp tiles, 168 for 8 warps).
    fn regs(r: &FwdKernelRow, _sm: u32) -> u32 {
        if r.num_warps == 8 {
            168
        } else {
            255
        }
    }

    fn pick(choice: TileChoice) -> Result<&'static str> {
        choose(TABLE, &TABLE[0], choice, regs).map(|r| r.entry)
    }

    #[test]
    fn residency_counts_shared_memory_registers_and_threads() {
        let a100 = sm_limits(80).unwrap();
        // 96 KB + 1 KB reserved: one CTA of 164 KB; 64 KB: two; 48 KB: three, but 255
        // registers x 128 threads (32 K) hold two.
        assert_eq!(resident_warps(&TABLE[0], &a100, 255), 4);
        assert_eq!(resident_warps(&TABLE[2], &a100, 255), 8);
        assert_eq!(resident_warps(&TABLE[4], &a100, 255), 8);
        assert_eq!(resident_warps(&TABLE[4], &a100, 128), 12);
        // 8 warps at 128 registers: two CTAs (2 x 8 x 32 x 128 = 64 K) but one 96 KB CTA of
        // shared memory; 168 registers allocate as 168 (a multiple of 8), 169 as 176.
        assert_eq!(resident_warps(&TABLE[3], &a100, 169), 8);
        assert_eq!(
            resident_warps(&row("w8", 64, 128, 64, 8, 49152), &a100, 128),
            16
        );
        assert_eq!(
            resident_warps(&row("w8", 64, 128, 64, 8, 49152), &a100, 129),
            8
        );
        let a10 = sm_limits(86).unwrap();
        assert_eq!(resident_warps(&TABLE[2], &a10, 255), 4);
        assert_eq!(resident_warps(&TABLE[4], &a10, 255), 8);
        // sm_86 runs at most 1536 threads: 48 warps.
        assert_eq!(
            resident_warps(&row("tiny", 32, 64, 64, 4, 1024), &a10, 32),
            48
        );
        let h100 = sm_limits(90).unwrap();
        assert_eq!(resident_warps(&TABLE[0], &h100, 255), 8);
        assert_eq!(resident_warps(&TABLE[2], &h100, 255), 8);
    }

    #[test]
    fn the_plan_takes_the_tile_that_fits_most_warps() {
        assert_eq!(pick(TileChoice::Primary).unwrap(), "d128");
        // A100: the first tile that doubles the resident warps (the 64 KB single stage).
        assert_eq!(pick(TileChoice::ForSm(80)).unwrap(), "d128_s1");
        assert_eq!(pick(TileChoice::ForSm(87)).unwrap(), "d128_s1");
        // 100 KB parts: one 8-warp CTA and two 48 KB 4-warp CTAs fit 8 warps each: the
        // first listed of the two.
        for sm in [86, 89, 120] {
            assert_eq!(pick(TileChoice::ForSm(sm)).unwrap(), "d128_w8", "sm_{sm}");
        }
        // H100: registers hold every 4-warp tile at two CTAs: a tie goes to the first tile.
        assert_eq!(pick(TileChoice::ForSm(90)).unwrap(), "d128_s1");
        // A head dim with no other tile keeps its primary everywhere.
        for sm in [80, 86, 90] {
            assert_eq!(
                choose(TABLE, &TABLE[1], TileChoice::ForSm(sm), regs)
                    .unwrap()
                    .entry,
                "d64"
            );
        }
        // Capabilities the rule does not know keep the primary.
        for sm in [0, 75, 95, u32::MAX] {
            assert_eq!(pick(TileChoice::ForSm(sm)).unwrap(), "d128", "sm {sm}");
        }
    }

    #[test]
    fn this_builds_tiles_never_lose_residency() {
        // Every compiled row with the ptxas registers of this build: a plan for a known part
        // picks a row of the primary's head dims that fits at least as many warps as any.
        use crate::common::build_info::FWD_KERNELS;
        let key = |r: &FwdKernelRow| (r.target, r.dtype, r.head_dim, r.head_dim_v);
        let mut tiled = 0;
        // A head dim's primary row is its first (kernels/kernel_table.h lists the tiles after).
        let primaries = FWD_KERNELS
            .iter()
            .enumerate()
            .filter(|(i, r)| !FWD_KERNELS[..*i].iter().any(|o| key(o) == key(r)))
            .map(|(_, r)| r);
        for primary in primaries {
            for sm in [80, 86, 89, 90, 100, 120] {
                let lim = sm_limits(sm).unwrap();
                let got =
                    choose(FWD_KERNELS, primary, TileChoice::ForSm(sm), registers_on).unwrap();
                assert_eq!(key(got), key(primary), "{} on sm_{sm}", primary.entry);
                let warps = |r: &FwdKernelRow| resident_warps(r, &lim, registers_on(r, sm));
                if got.entry != primary.entry {
                    assert!(warps(got) >= warps(primary), "{} on sm_{sm}", got.entry);
                    tiled += 1;
                }
                // No row of the head dim fits more warps than the pick.
                for r in FWD_KERNELS.iter().filter(|r| key(r) == key(primary)) {
                    assert!(
                        warps(r) <= warps(got),
                        "{} beats {} on sm_{sm}",
                        r.entry,
                        got.entry
                    );
                }
            }
        }
        // The A100's d128 forward is held at one 96 KB CTA per SM by shared memory: a tile is
        // compiled that fits two (kernels/kernel_table.h, the retile).
        assert!(tiled > 0);
        let d128 = FWD_KERNELS
            .iter()
            .find(|r| r.entry == "flashmha_fwd_bf16_d128")
            .unwrap();
        let a100 = choose(FWD_KERNELS, d128, TileChoice::ForSm(80), registers_on).unwrap();
        assert!(
            a100.smem_bytes * 2 + 2048 <= sm_limits(80).unwrap().smem_per_sm,
            "{}",
            a100.entry
        );
    }

    #[test]
    fn an_entry_must_be_a_tile_of_the_same_head_dim() {
        assert_eq!(pick(TileChoice::Entry("d128_w8")).unwrap(), "d128_w8");
        assert_eq!(pick(TileChoice::Entry("d128")).unwrap(), "d128");
        for bad in ["d64", "nope", ""] {
            let e = pick(TileChoice::Entry(bad)).unwrap_err();
            assert!(
                matches!(&e, Error::NoKernel { entry } if entry == bad),
                "{e}"
            );
        }
    }
}
