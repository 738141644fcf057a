//! The register budget of a warp-specialised CTA that rebalances its registers with
//! `setmaxnreg` (PTX ISA "setmaxnreg"): the CTA is allocated ptxas's register count for every
//! thread at launch, which is its per-CTA pool; a producer warpgroup then gives registers back
//! (`setmaxnreg.dec`) and the consumer warpgroups take them (`setmaxnreg.inc`, which blocks until
//! the pool holds enough). Occupancy therefore follows the launch allocation
//! ([`super::pipes::regs_per_cta`]); what this file adds is the targets the kernel asks for, read
//! from its PTX, and whether they fit the pool: if they do not, an `inc` waits forever.

/// The `setmaxnreg` targets of one kernel: per-thread registers of its producer warpgroups
/// (`dec`) and of its consumer warpgroups (`inc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegSplit {
    pub producer_warpgroups: u32,
    pub producer_regs: u32,
    pub consumer_warpgroups: u32,
    pub consumer_regs: u32,
}

impl RegSplit {
    /// Registers the CTA's warps hold once every warpgroup has executed its `setmaxnreg`
    /// (128 threads per warpgroup).
    pub fn regs_per_cta(&self) -> u32 {
        128 * (self.producer_warpgroups * self.producer_regs
            + self.consumer_warpgroups * self.consumer_regs)
    }

    /// Whether the split fits the pool `launch_regs_per_cta` (the launch allocation).
    pub fn fits(&self, launch_regs_per_cta: u32) -> bool {
        self.regs_per_cta() <= launch_regs_per_cta
    }
}

/// The split of a kernel whose PTX is `ptx` and whose CTA has `warpgroups` warpgroups, when it
/// uses `setmaxnreg`: the smallest `dec` target is the producers', the largest `inc` target the
/// consumers'. The layout is the sm_90a forward's (kernels/kernel_table.h): one producer
/// warpgroup, the others consumers. `None` without a `dec` / `inc` pair.
pub fn reg_split(ptx: &str, warpgroups: u32) -> Option<RegSplit> {
    let target = |action: &str| {
        let prefix = format!("setmaxnreg.{action}.sync.aligned.u32");
        ptx.lines()
            .filter_map(|l| l.trim_start().strip_prefix(prefix.as_str()))
            .filter_map(|rest| rest.trim().trim_end_matches(';').trim().parse::<u32>().ok())
            .collect::<Vec<u32>>()
    };
    let dec = target("dec").into_iter().min()?;
    let inc = target("inc").into_iter().max()?;
    (warpgroups >= 2).then_some(RegSplit {
        producer_warpgroups: 1,
        producer_regs: dec,
        consumer_warpgroups: warpgroups - 1,
        consumer_regs: inc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fa3_split_fills_a_384_thread_pool_exactly() {
        let ptx = "\t@%p1 bra LBB0_2;\n\tsetmaxnreg.dec.sync.aligned.u32 24;\n\tbra LBB0_3;\n\
                   LBB0_2:\n\tsetmaxnreg.inc.sync.aligned.u32 240;\n";
        let split = reg_split(ptx, 3).unwrap();
        assert_eq!(
            split,
            RegSplit {
                producer_warpgroups: 1,
                producer_regs: 24,
                consumer_warpgroups: 2,
                consumer_regs: 240,
            }
        );
        // 128 x 24 + 256 x 240 = 64512 = 168 registers x 384 threads: the whole pool of a CTA
        // launched at ptxas's 168 (65536 / 384 rounded down to a multiple of 8).
        assert_eq!(split.regs_per_cta(), 64512);
        assert!(split.fits(168 * 384));
        // A producer at 40 would leave the consumers' inc 2048 registers short: it would block
        // forever.
        let greedy = RegSplit {
            producer_regs: 40,
            ..split
        };
        assert_eq!(greedy.regs_per_cta(), 66560);
        assert!(!greedy.fits(168 * 384));
    }

    #[test]
    fn kernels_without_setmaxnreg_have_no_split() {
        assert_eq!(reg_split("\tmma.sync.aligned.m16n8k16;\n", 3), None);
        // A dec alone (no consumer asks for more) is not a producer / consumer split.
        assert_eq!(
            reg_split("\tsetmaxnreg.dec.sync.aligned.u32 24;\n", 3),
            None
        );
        assert_eq!(
            reg_split(
                "\tsetmaxnreg.dec.sync.aligned.u32 24;\n\tsetmaxnreg.inc.sync.aligned.u32 240;\n",
                1
            ),
            None
        );
    }
}
