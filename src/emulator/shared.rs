//! One CTA's shared memory plus its shadow state for the checks:
//! * per byte, whether it was ever written (uninitialised-read check) or is the destination of a
//!   `cp.async` that has not completed yet (cp.async hazard check);
//! * per byte, the last writer and the last reader(s) stamped with the CTA's barrier epoch
//!   (racecheck). Two accesses race when they touch the same byte in the same epoch (no barrier
//!   completed in between), come from different warps, and at least one is a write. Accesses
//!   from the same warp are treated as ordered (lockstep / warp-synchronous code) - see the module
//!   docs for this limitation.
//!
//! * per byte, how many in-flight `wgmma.mma_async` read it as an operand (wgmma hazard check:
//!   writing such a byte before the reader's `wgmma.wait_group` is a finding).
//!
//! Epochs are 16-bit in the shadow; when the counter wraps the stamps are cleared, so no stale
//! stamp can ever compare equal to a new epoch.

pub const UNINIT: u8 = 0;
pub const INIT: u8 = 1;
pub const PENDING: u8 = 2;

const MULTI: u64 = 0xFFFF;

/// A problem found by a shadow check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hazard {
    /// Read-after-write by `other` (a thread id, linear in the CTA).
    Raw(u32),
    /// Write-after-read; `other` is `None` when several warps read.
    War(Option<u32>),
    Waw(u32),
    PendingRead,
    PendingWrite,
    Uninit,
    /// A write to a shared-memory operand of a `wgmma.mma_async` still in flight.
    WgmmaOperandWrite,
}

pub struct SharedMem {
    pub data: Vec<u8>,
    state: Vec<u8>,
    /// bits 0-15 writer tid+1, 16-31 write epoch, 32-47 reader tid+1 (MULTI: several warps),
    /// 48-63 read epoch.
    shadow: Vec<u64>,
    epoch: u64,
    /// Per byte, the number of in-flight wgmma reading it; empty until the first wgmma.
    wgmma_readers: Vec<u16>,
    pub check_races: bool,
    pub check_uninit: bool,
}

impl SharedMem {
    pub fn new(size: usize) -> Self {
        SharedMem {
            data: vec![super::memory::POISON; size],
            state: vec![UNINIT; size],
            shadow: vec![0; size],
            epoch: 1,
            wgmma_readers: Vec::new(),
            check_races: true,
            check_uninit: true,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Called when a CTA barrier completes.
    pub fn next_epoch(&mut self) {
        self.epoch += 1;
        if self.epoch & 0xFFFF == 0 {
            // 16-bit stamps wrapped: forget all stamps (they are all from older epochs anyway).
            self.shadow.iter_mut().for_each(|s| *s = 0);
            self.epoch += 1;
        }
    }

    #[inline]
    fn ep(&self) -> u64 {
        self.epoch & 0xFFFF
    }

    /// Checks and records a read of `[off, off+len)` by thread `tid`. Returns the first hazard.
    #[inline]
    pub fn read_check(&mut self, off: usize, len: usize, tid: u32) -> Option<Hazard> {
        let ep = self.ep();
        let me = tid as u64 + 1;
        let warp = tid / 32;
        let mut hz = None;
        for b in off..off + len {
            match self.state[b] {
                INIT => {}
                PENDING => {
                    hz.get_or_insert(Hazard::PendingRead);
                }
                _ => {
                    if self.check_uninit {
                        hz.get_or_insert(Hazard::Uninit);
                    }
                }
            }
            if !self.check_races {
                continue;
            }
            let s = self.shadow[b];
            let wt = s & 0xFFFF;
            if wt != 0 && (s >> 16) & 0xFFFF == ep && (wt - 1) as u32 / 32 != warp {
                hz.get_or_insert(Hazard::Raw((wt - 1) as u32));
            }
            let rt = (s >> 32) & 0xFFFF;
            let re = s >> 48;
            let new_rt = if re == ep && rt != 0 && rt != me {
                if rt == MULTI || (rt - 1) as u32 / 32 != warp {
                    MULTI
                } else {
                    rt
                }
            } else {
                me
            };
            self.shadow[b] = (s & 0xFFFF_FFFF) | (new_rt << 32) | (ep << 48);
        }
        hz
    }

    /// Checks and records a write of `[off, off+len)` by thread `tid`; marks the bytes
    /// initialised. `completing` is set when a `cp.async` lands (its pending mark is expected).
    #[inline]
    pub fn write_check(
        &mut self,
        off: usize,
        len: usize,
        tid: u32,
        completing: bool,
    ) -> Option<Hazard> {
        let ep = self.ep();
        let me = tid as u64 + 1;
        let warp = tid / 32;
        let mut hz = None;
        if let Some(h) = self.wgmma_operand_hazard(off, len) {
            hz = Some(h);
        }
        for b in off..off + len {
            if self.state[b] == PENDING && !completing {
                hz.get_or_insert(Hazard::PendingWrite);
            }
            self.state[b] = INIT;
            if !self.check_races {
                continue;
            }
            let s = self.shadow[b];
            let wt = s & 0xFFFF;
            if wt != 0 && (s >> 16) & 0xFFFF == ep && (wt - 1) as u32 / 32 != warp {
                hz.get_or_insert(Hazard::Waw((wt - 1) as u32));
            }
            let rt = (s >> 32) & 0xFFFF;
            if rt != 0 && s >> 48 == ep && (rt == MULTI || (rt - 1) as u32 / 32 != warp) {
                hz.get_or_insert(Hazard::War(if rt == MULTI {
                    None
                } else {
                    Some((rt - 1) as u32)
                }));
            }
            self.shadow[b] = me | (ep << 16);
        }
        hz
    }

    /// Marks `[off, off+len)` as the destination of an in-flight `cp.async`; returns a hazard if
    /// another copy is already in flight there.
    pub fn mark_pending(&mut self, off: usize, len: usize) -> Option<Hazard> {
        let mut hz = None;
        for b in off..off + len {
            if self.state[b] == PENDING {
                hz = Some(Hazard::PendingWrite);
            }
            self.state[b] = PENDING;
        }
        hz
    }
}

impl SharedMem {
    /// Records an atomic access: atomics never race with each other, so only the cp.async check
    /// applies; the bytes become initialised.
    pub fn atomic_touch(&mut self, off: usize, len: usize) -> Option<Hazard> {
        let mut hz = self.wgmma_operand_hazard(off, len);
        for b in off..off + len {
            if self.state[b] == PENDING {
                hz = Some(Hazard::PendingWrite);
            }
            self.state[b] = INIT;
        }
        hz
    }
}

impl SharedMem {
    /// Marks `[off, off+len)` as read by one more in-flight wgmma.
    pub fn wgmma_mark(&mut self, off: usize, len: usize) {
        if self.wgmma_readers.is_empty() {
            self.wgmma_readers = vec![0; self.data.len()];
        }
        for c in &mut self.wgmma_readers[off..off + len] {
            *c = c.saturating_add(1);
        }
    }

    /// The wgmma that marked `[off, off+len)` completed (or was abandoned).
    pub fn wgmma_unmark(&mut self, off: usize, len: usize) {
        if let Some(cs) = self.wgmma_readers.get_mut(off..off + len) {
            for c in cs {
                *c = c.saturating_sub(1);
            }
        }
    }

    fn wgmma_operand_hazard(&self, off: usize, len: usize) -> Option<Hazard> {
        let cs = self.wgmma_readers.get(off..off + len)?;
        cs.iter()
            .any(|&c| c > 0)
            .then_some(Hazard::WgmmaOperandWrite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn race_rules() {
        let mut s = SharedMem::new(64);
        assert_eq!(s.write_check(0, 4, 0, false), None);
        // same warp reads: ordered
        assert_eq!(s.read_check(0, 4, 5), None);
        // other warp reads in the same epoch: RAW
        assert_eq!(s.read_check(0, 4, 40), Some(Hazard::Raw(0)));
        // other warp writes: WAW (reported before WAR)
        assert_eq!(s.write_check(0, 4, 64, false), Some(Hazard::Waw(0)));
        s.next_epoch();
        assert_eq!(s.read_check(0, 4, 1), None);
        assert_eq!(s.read_check(0, 4, 33), None);
        // write after reads by two warps
        assert_eq!(s.write_check(0, 1, 70, false), Some(Hazard::War(None)));
        // uninitialised
        assert_eq!(s.read_check(8, 2, 0), Some(Hazard::Uninit));
        // pending
        s.mark_pending(16, 16);
        assert_eq!(s.read_check(20, 4, 0), Some(Hazard::PendingRead));
        assert_eq!(s.write_check(16, 16, 0, true), None);
        assert_eq!(s.read_check(20, 4, 0), None);
    }

    #[test]
    fn wgmma_operands_are_write_protected_until_unmarked() {
        let mut s = SharedMem::new(64);
        s.write_check(0, 64, 0, false);
        s.wgmma_mark(16, 8);
        s.wgmma_mark(16, 8);
        assert_eq!(s.read_check(16, 8, 0), None, "reading an operand is fine");
        assert_eq!(
            s.write_check(20, 2, 0, false),
            Some(Hazard::WgmmaOperandWrite)
        );
        assert_eq!(s.write_check(24, 4, 0, false), None, "outside the operand");
        s.wgmma_unmark(16, 8);
        assert_eq!(s.atomic_touch(16, 4), Some(Hazard::WgmmaOperandWrite));
        s.wgmma_unmark(16, 8);
        assert_eq!(s.write_check(16, 8, 0, false), None);
    }

    #[test]
    fn epoch_wrap_clears_stamps() {
        let mut s = SharedMem::new(4);
        s.write_check(0, 4, 0, false);
        for _ in 0..0x1_0000 {
            s.next_epoch();
        }
        assert_eq!(s.read_check(0, 4, 40), None);
    }
}
