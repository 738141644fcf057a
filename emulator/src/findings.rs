//! Findings: problems the checks detect while a kernel runs (out-of-bounds, races, hazards,
//! divergent collectives, traps). Each CTA collects them in a [`FindingSink`] that deduplicates
//! by (kind, instruction) and caps how many distinct findings it keeps, so a buggy kernel cannot
//! produce millions of them; the launch merges the sinks.

use std::collections::HashMap;
use std::fmt;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    /// A global access (partially) outside every allocation.
    GlobalOutOfBounds,
    /// A shared access outside the CTA's static + dynamic shared memory.
    SharedOutOfBounds,
    /// A local access outside the thread's local frame.
    LocalOutOfBounds,
    /// A parameter-space access outside the parameter buffer.
    ParamOutOfBounds,
    /// An address not naturally aligned to the access size.
    Misaligned,
    /// Shared memory written by one thread and read by a thread of another warp with no barrier in
    /// between (read-after-write).
    SharedRaceRaw,
    /// Shared memory read by one thread then written by a thread of another warp with no barrier
    /// in between (write-after-read).
    SharedRaceWar,
    /// Two threads of different warps write the same shared byte with no barrier in between.
    SharedRaceWaw,
    /// A read of a `cp.async` destination before the issuing thread waited for its group.
    CpAsyncReadBeforeWait,
    /// A write to a `cp.async` destination before that copy completed.
    CpAsyncWriteBeforeWait,
    /// A write to a shared-memory operand of a `wgmma.mma_async` before the warp's
    /// `wgmma.wait_group` covering it.
    WgmmaOperandWriteBeforeWait,
    /// An accumulator or A-fragment register of an in-flight `wgmma.mma_async` read or written
    /// by another instruction before `wgmma.wait_group`.
    WgmmaAccumulatorBeforeWait,
    /// A `wgmma.mma_async` without the `wgmma.fence` the PTX ISA requires: none before the
    /// warp's first one, or an accumulator / A-fragment register accessed by another
    /// instruction since the warp's last fence.
    WgmmaMissingFence,
    /// Two CTAs of one launch wrote the same global byte with plain (non-atomic) stores: CTAs
    /// are unordered, so which value remains depends on the schedule.
    GlobalRaceWaw,
    /// A read of shared memory nobody has written in this launch.
    UninitSharedRead,
    /// A read of the destination of a bulk/tensor (TMA) copy before the mbarrier phase the
    /// copy completes on has completed.
    BulkReadBeforeComplete,
    /// A write to the destination of a bulk/tensor (TMA) copy (or a second copy to it) before
    /// the mbarrier phase the first copy completes on has completed.
    BulkWriteBeforeComplete,
    /// A write to the shared-memory source of a bulk/tensor store before
    /// `cp.async.bulk.wait_group.read` covered it.
    BulkStoreSourceOverwritten,
    /// A bulk/tensor store reads shared memory written by the generic proxy with no
    /// `fence.proxy.async` in between.
    MissingProxyFence,
    /// An mbarrier used against the PTX ISA rules: not initialised, accessed by plain loads or
    /// stores, more arrivals than pending, tx-count out of range, a bad state token.
    MbarrierMisuse,
    /// A TMA instruction whose tensor-map operand does not hold a valid tensor map, or whose
    /// coordinates do not match its rank.
    TensorMapInvalid,
    /// A CTA rank outside the cluster (`mapa`, a shared::cluster address, a multicast mask).
    InvalidClusterRank,
    /// A cluster rule broken: a peer CTA's shared memory reached after that CTA exited,
    /// `barrier.cluster.wait` without an arrive, two arrives in one phase, an mbarrier wait or
    /// init on a peer's object.
    ClusterMisuse,
    /// Threads reach a warp collective in different places, with different masks, or a member
    /// exited or is predicated off.
    DivergentCollective,
    /// Threads of one barrier generation arrived at different `bar.sync` instructions.
    DivergentBarrier,
    /// A barrier completed only because the threads missing from it had exited.
    BarrierWithExitedThreads,
    /// No thread can make progress (barrier that can never complete).
    Deadlock,
    /// `trap` (or `brkpt`) executed.
    Trap,
    /// The per-CTA instruction budget ran out (infinite loop?).
    InstructionLimit,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::GlobalOutOfBounds => "global out-of-bounds",
            FindingKind::SharedOutOfBounds => "shared out-of-bounds",
            FindingKind::LocalOutOfBounds => "local out-of-bounds",
            FindingKind::ParamOutOfBounds => "param out-of-bounds",
            FindingKind::Misaligned => "misaligned access",
            FindingKind::SharedRaceRaw => "shared race (read after write)",
            FindingKind::SharedRaceWar => "shared race (write after read)",
            FindingKind::SharedRaceWaw => "shared race (write after write)",
            FindingKind::CpAsyncReadBeforeWait => "cp.async destination read before wait",
            FindingKind::CpAsyncWriteBeforeWait => "cp.async destination written before completion",
            FindingKind::WgmmaOperandWriteBeforeWait => {
                "wgmma shared operand written before wait_group"
            }
            FindingKind::WgmmaAccumulatorBeforeWait => {
                "wgmma accumulator or A register accessed before wait_group"
            }
            FindingKind::WgmmaMissingFence => "wgmma.mma_async without the required wgmma.fence",
            FindingKind::GlobalRaceWaw => "global race (two CTAs wrote one byte)",
            FindingKind::UninitSharedRead => "uninitialised shared read",
            FindingKind::BulkReadBeforeComplete => {
                "bulk/TMA destination read before its mbarrier phase completed"
            }
            FindingKind::BulkWriteBeforeComplete => {
                "bulk/TMA destination written before its mbarrier phase completed"
            }
            FindingKind::BulkStoreSourceOverwritten => {
                "bulk store source overwritten before wait_group.read"
            }
            FindingKind::MissingProxyFence => {
                "generic-proxy write read by a bulk store without fence.proxy.async"
            }
            FindingKind::MbarrierMisuse => "mbarrier misuse",
            FindingKind::TensorMapInvalid => "invalid tensor map",
            FindingKind::InvalidClusterRank => "cluster rank out of range",
            FindingKind::ClusterMisuse => "cluster misuse",
            FindingKind::DivergentCollective => "divergent warp collective",
            FindingKind::DivergentBarrier => "divergent barrier",
            FindingKind::BarrierWithExitedThreads => "barrier with exited threads",
            FindingKind::Deadlock => "deadlock",
            FindingKind::Trap => "trap",
            FindingKind::InstructionLimit => "instruction limit exceeded",
        }
    }

    pub fn is_race(self) -> bool {
        matches!(
            self,
            FindingKind::SharedRaceRaw | FindingKind::SharedRaceWar | FindingKind::SharedRaceWaw
        )
    }
}

/// One deduplicated finding: the first occurrence in full, plus how often it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub kernel: String,
    /// PTX source line of the instruction (1-based).
    pub line: u32,
    /// The PTX text of that line.
    pub ptx: String,
    /// CTA index (`%ctaid`) of the first occurrence.
    pub cta: [u32; 3],
    /// Thread index (`%tid`) of the first occurrence.
    pub tid: [u32; 3],
    /// Device address (global: device address; shared/local/param: offset in that space).
    pub address: Option<u64>,
    /// The other thread involved (races, divergent barrier), as `%tid`.
    pub other_tid: Option<[u32; 3]>,
    /// Human-readable specifics (sizes, masks, allocation bounds ...).
    pub detail: String,
    /// Number of occurrences merged into this finding (over all threads and CTAs).
    pub occurrences: u64,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: kernel {} line {} `{}` cta ({},{},{}) thread ({},{},{})",
            self.kind.name(),
            self.kernel,
            self.line,
            self.ptx,
            self.cta[0],
            self.cta[1],
            self.cta[2],
            self.tid[0],
            self.tid[1],
            self.tid[2]
        )?;
        if let Some(a) = self.address {
            write!(f, " address {a:#x}")?;
        }
        if let Some(o) = self.other_tid {
            write!(f, " other thread ({},{},{})", o[0], o[1], o[2])?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if self.occurrences > 1 {
            write!(f, " [{} occurrences]", self.occurrences)?;
        }
        Ok(())
    }
}

/// A finding before kernel name and PTX text are attached.
#[derive(Debug, Clone)]
pub(crate) struct RawFinding {
    pub kind: FindingKind,
    pub pc: u32,
    pub cta: [u32; 3],
    pub tid: u32,
    pub address: Option<u64>,
    pub other_tid: Option<u32>,
    pub detail: String,
    pub occurrences: u64,
}

/// Distinct findings one CTA keeps (further distinct ones are only counted).
pub const MAX_DISTINCT_PER_CTA: usize = 64;
/// Distinct findings one launch reports.
pub const MAX_DISTINCT_PER_LAUNCH: usize = 256;

#[derive(Default)]
pub(crate) struct FindingSink {
    pub list: Vec<RawFinding>,
    index: HashMap<(FindingKind, u32), usize>,
    pub dropped: u64,
}

impl FindingSink {
    /// Records a finding; `detail` is only evaluated for the first occurrence of (kind, pc).
    #[allow(clippy::too_many_arguments)]
    pub fn report(
        &mut self,
        kind: FindingKind,
        pc: u32,
        cta: [u32; 3],
        tid: u32,
        address: Option<u64>,
        other_tid: Option<u32>,
        detail: impl FnOnce() -> String,
    ) {
        if let Some(&i) = self.index.get(&(kind, pc)) {
            self.list[i].occurrences += 1;
            return;
        }
        if self.list.len() >= MAX_DISTINCT_PER_CTA {
            self.dropped += 1;
            return;
        }
        self.index.insert((kind, pc), self.list.len());
        self.list.push(RawFinding {
            kind,
            pc,
            cta,
            tid,
            address,
            other_tid,
            detail: detail(),
            occurrences: 1,
        });
    }

    pub fn merge(&mut self, other: FindingSink) {
        for f in other.list {
            if let Some(&i) = self.index.get(&(f.kind, f.pc)) {
                self.list[i].occurrences += f.occurrences;
            } else if self.list.len() < MAX_DISTINCT_PER_LAUNCH {
                self.index.insert((f.kind, f.pc), self.list.len());
                self.list.push(f);
            } else {
                self.dropped += f.occurrences;
            }
        }
        self.dropped += other.dropped;
    }
}
