//! One CTA's shared memory plus its shadow state for the checks:
//! * per byte, whether it was ever written (uninitialised-read check), is the destination of a
//!   `cp.async` that has not completed yet (cp.async hazard check), the destination of a bulk /
//!   tensor (TMA) copy whose mbarrier phase has not completed, or an mbarrier object (which only
//!   `mbarrier` instructions may touch); plus two flags for the asynchronous proxy: written by
//!   the generic proxy since the last `fence.proxy.async` (a TMA store reading it is a hazard),
//!   and source of a bulk store not yet waited for with `cp.async.bulk.wait_group.read`;
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
/// Destination of a bulk/TMA copy in flight, or landed before its mbarrier phase completed.
pub const BULK: u8 = 3;
/// Part of an initialised mbarrier object.
pub const MBAR: u8 = 4;
const KIND: u8 = 0x3F;
/// Written by the generic proxy since the last `fence.proxy.async`.
const DIRTY: u8 = 0x40;
/// Source of a bulk store whose reads were not waited for.
const STORE_SRC: u8 = 0x80;

const MULTI: u64 = 0xFFFF;

/// The hazard of a generic read (`write` false) or write of a byte in state `kind` that an
/// in-flight `cp.async` or bulk copy will still write, or that holds an mbarrier object.
#[inline(always)]
fn in_flight_hazard(kind: u8, write: bool) -> Option<Hazard> {
    match kind {
        PENDING if write => Some(Hazard::PendingWrite),
        PENDING => Some(Hazard::PendingRead),
        BULK if write => Some(Hazard::BulkPendingWrite),
        BULK => Some(Hazard::BulkPendingRead),
        MBAR => Some(Hazard::MbarAccess),
        _ => None,
    }
}

/// The thread that last wrote a byte with shadow word `s`, when it wrote in epoch `ep` from a
/// warp other than `warp` (a conflict for an access by `warp` in the same epoch).
#[inline(always)]
fn writer_in_other_warp(s: u64, ep: u64, warp: u32) -> Option<u32> {
    let wt = s & 0xFFFF;
    (wt != 0 && (s >> 16) & 0xFFFF == ep && (wt - 1) as u32 / 32 != warp).then(|| (wt - 1) as u32)
}

/// The write-after-read hazard of a write by `warp` on a byte whose shadow is `s`: a reader of
/// another warp (or several readers) in epoch `ep`.
#[inline]
fn reader_in_other_warp(s: u64, ep: u64, warp: u32) -> Option<Hazard> {
    let rt = (s >> 32) & 0xFFFF;
    (rt != 0 && s >> 48 == ep && (rt == MULTI || (rt - 1) as u32 / 32 != warp))
        .then(|| Hazard::War((rt != MULTI).then(|| (rt - 1) as u32)))
}

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
    /// Read of a bulk/TMA copy destination before its mbarrier phase completed.
    BulkPendingRead,
    /// Write to a bulk/TMA copy destination before its mbarrier phase completed.
    BulkPendingWrite,
    /// Write to the source of a bulk store before `cp.async.bulk.wait_group.read`.
    StoreSourceWrite,
    /// A plain access to an mbarrier object.
    MbarAccess,
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
            let kind = self.state[b] & KIND;
            if let Some(h) = in_flight_hazard(kind, false) {
                hz.get_or_insert(h);
            } else if kind != INIT && self.check_uninit {
                hz.get_or_insert(Hazard::Uninit);
            }
            if !self.check_races {
                continue;
            }
            let s = self.shadow[b];
            if let Some(t) = writer_in_other_warp(s, ep, warp) {
                hz.get_or_insert(Hazard::Raw(t));
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
            let st = self.state[b];
            // A landing `cp.async` writes the bytes its own pending mark guards.
            if !(completing && st & KIND == PENDING) {
                if let Some(h) = in_flight_hazard(st & KIND, true) {
                    hz.get_or_insert(h);
                }
            }
            if st & STORE_SRC != 0 {
                hz.get_or_insert(Hazard::StoreSourceWrite);
            }
            // A generic-proxy write (`cp.async` included).
            self.state[b] = INIT | DIRTY | (st & STORE_SRC);
            if !self.check_races {
                continue;
            }
            let s = self.shadow[b];
            if let Some(t) = writer_in_other_warp(s, ep, warp) {
                hz.get_or_insert(Hazard::Waw(t));
            }
            if let Some(h) = reader_in_other_warp(s, ep, warp) {
                hz.get_or_insert(h);
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
            let st = self.state[b];
            if st & KIND == PENDING {
                hz = Some(Hazard::PendingWrite);
            }
            self.state[b] = PENDING | (st & !KIND);
        }
        hz
    }

    /// Marks `[off, off+len)` as the destination of a bulk/TMA copy just issued by `tid` (a
    /// peer's key for a multicast from another CTA); returns a hazard if a copy is already in
    /// flight there (or it is an mbarrier), an in-flight wgmma still reads it, or a thread of
    /// another warp read it since the last barrier or mbarrier phase completed: the async write
    /// may land before that read on hardware (the stage's "empty" wait is missing).
    pub fn bulk_mark(&mut self, off: usize, len: usize, tid: u32) -> Option<Hazard> {
        let mut hz = self.wgmma_operand_hazard(off, len);
        let ep = self.ep();
        let warp = tid / 32;
        for b in off..off + len {
            let st = self.state[b];
            match st & KIND {
                PENDING | BULK => hz = Some(Hazard::BulkPendingWrite),
                MBAR => hz = Some(Hazard::MbarAccess),
                _ => {}
            }
            if st & STORE_SRC != 0 {
                hz = Some(Hazard::StoreSourceWrite);
            }
            if self.check_races && hz.is_none() {
                hz = reader_in_other_warp(self.shadow[b], ep, warp);
            }
            // An async-proxy write: it does not need a proxy fence before a TMA store.
            self.state[b] = BULK | (st & STORE_SRC);
        }
        hz
    }

    /// Records the landing of a bulk/TMA copy issued by `tid` for the race checker (a write
    /// in the current epoch); the bytes stay `BULK` until [`SharedMem::bulk_release`].
    pub fn bulk_land(&mut self, off: usize, len: usize, tid: u32) -> Option<Hazard> {
        if !self.check_races {
            return None;
        }
        let ep = self.ep();
        let warp = tid / 32;
        let mut hz = None;
        for b in off..off + len {
            let s = self.shadow[b];
            if let Some(h) = reader_in_other_warp(s, ep, warp) {
                hz.get_or_insert(h);
            }
            self.shadow[b] = (tid as u64 + 1) | (ep << 16);
        }
        hz
    }

    /// The mbarrier phase a bulk/TMA copy completed on has completed: its bytes are readable.
    pub fn bulk_release(&mut self, off: usize, len: usize) {
        for b in off..off + len {
            if self.state[b] & KIND == BULK {
                self.state[b] = INIT | (self.state[b] & !KIND);
            }
        }
    }

    /// Checks a bulk store's read of `[off, off+len)` by thread `tid` and marks the bytes as
    /// its source until `wait_group.read`. Returns the read hazard and whether a byte was
    /// written by the generic proxy after the last `fence.proxy.async`.
    pub fn store_source(&mut self, off: usize, len: usize, tid: u32) -> (Option<Hazard>, bool) {
        let hz = self.read_check(off, len, tid);
        let mut dirty = false;
        for b in off..off + len {
            dirty |= self.state[b] & DIRTY != 0;
            self.state[b] |= STORE_SRC;
        }
        (hz, dirty)
    }

    /// The bulk store reading `[off, off+len)` has finished reading.
    pub fn clear_store_source(&mut self, off: usize, len: usize) {
        for b in off..off + len {
            self.state[b] &= !STORE_SRC;
        }
    }

    /// `fence.proxy.async` on shared memory: every generic-proxy write so far is ordered before
    /// later async-proxy accesses. (Any thread's fence clears every byte: this can hide a
    /// missing fence in another thread, never report one that is there.)
    pub fn fence_proxy_async(&mut self) {
        for s in self.state.iter_mut() {
            *s &= !DIRTY;
        }
    }

    /// `mbarrier.init` at `off`: the 8 bytes become an mbarrier object. Returns a hazard when
    /// an async copy is still writing them.
    pub fn mbar_mark(&mut self, off: usize) -> Option<Hazard> {
        let mut hz = None;
        for b in off..off + 8 {
            if matches!(self.state[b] & KIND, PENDING | BULK) {
                hz = Some(Hazard::BulkPendingWrite);
            }
            self.state[b] = MBAR;
        }
        hz
    }

    /// `mbarrier.inval`: the 8 bytes are ordinary (initialised) memory again.
    pub fn mbar_clear(&mut self, off: usize) {
        for b in off..off + 8 {
            if self.state[b] & KIND == MBAR {
                self.state[b] = INIT;
            }
        }
    }
}

impl SharedMem {
    /// Records an atomic access: atomics never race with each other, so only the cp.async check
    /// applies; the bytes become initialised.
    pub fn atomic_touch(&mut self, off: usize, len: usize) -> Option<Hazard> {
        let mut hz = self.wgmma_operand_hazard(off, len);
        for b in off..off + len {
            let st = self.state[b];
            match st & KIND {
                PENDING => hz = Some(Hazard::PendingWrite),
                BULK => hz = Some(Hazard::BulkPendingWrite),
                MBAR => hz = Some(Hazard::MbarAccess),
                _ => {}
            }
            if st & STORE_SRC != 0 {
                hz = Some(Hazard::StoreSourceWrite);
            }
            self.state[b] = INIT | DIRTY | (st & STORE_SRC);
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
    fn async_proxy_states() {
        let mut s = SharedMem::new(64);
        // A TMA destination: unreadable and unwritable until its phase completes.
        assert_eq!(s.bulk_mark(0, 16, 0), None);
        assert_eq!(s.read_check(4, 4, 0), Some(Hazard::BulkPendingRead));
        assert_eq!(
            s.write_check(8, 4, 0, false),
            Some(Hazard::BulkPendingWrite)
        );
        assert_eq!(s.bulk_mark(0, 16, 0), Some(Hazard::BulkPendingWrite));
        assert_eq!(s.bulk_land(0, 16, 0), None);
        s.bulk_release(0, 16);
        s.next_epoch();
        assert_eq!(s.read_check(0, 16, 40), None);
        // Generic writes need a proxy fence before a bulk store reads them; the store's source
        // must not be overwritten until released.
        s.write_check(16, 16, 0, false);
        assert_eq!(s.store_source(16, 16, 0), (None, true));
        assert_eq!(
            s.write_check(20, 4, 0, false),
            Some(Hazard::StoreSourceWrite)
        );
        s.clear_store_source(16, 16);
        s.fence_proxy_async();
        assert_eq!(s.store_source(16, 16, 0), (None, false));
        // An mbarrier object is off limits to plain accesses until invalidated.
        assert_eq!(s.mbar_mark(32), None);
        assert_eq!(s.read_check(32, 8, 0), Some(Hazard::MbarAccess));
        assert_eq!(s.atomic_touch(32, 4), Some(Hazard::MbarAccess));
        s.mbar_clear(32);
        assert_eq!(s.write_check(32, 8, 0, false), None);
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
