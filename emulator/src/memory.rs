//! Device global memory: bounded allocations at distinct, non-adjacent device addresses.
//! Storage is `AtomicU64` words so that CTAs running on different host threads can share it
//! without `unsafe`: plain loads/stores are relaxed atomics (plain moves on x86-64), partial-word
//! stores and PTX atomics are compare-exchange loops, so atomics are exact across CTAs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use crate::program::PARAM_WINDOW;

/// First device address handed out; far below the shared/local/param generic windows.
const BASE: u64 = 0x0000_0100_0000_0000;
/// Unmapped gap after every allocation so that running off the end never lands in a neighbour.
const GUARD: u64 = 64 * 1024;
const ALIGN: u64 = 256;

/// Byte newly allocated memory is filled with: every f16/bf16/f32/f64 made of it is a NaN, so an
/// output element the kernel forgot to write is visible.
pub const POISON: u8 = 0xFF;

pub struct Alloc {
    pub base: u64,
    pub len: u64,
    words: Box<[AtomicU64]>,
    /// Which CTA of which launch last wrote each word ([`WriterTag`]), made on the first kernel
    /// store so that inputs never pay for it; `None` when the host could not spare the memory
    /// (the check is then skipped for this allocation, never a false finding).
    writers: OnceLock<Option<Box<[AtomicU64]>>>,
}

/// Who wrote a global word in the current launch: CTAs of one launch are unordered (the
/// emulator runs them in parallel, the GPU in any order), so two of them writing the same byte
/// is a race whose result depends on the schedule. A tag is one `u64`: the launch epoch
/// (24 bits, 0 = never written by a kernel), the writing CTA's linear index (32 bits,
/// [`WriterTag::SHARED`] when CTAs wrote disjoint bytes of the word) and the mask of the word's
/// bytes written in this launch (8 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterTag {
    pub epoch: u32,
    pub cta: u32,
}

impl WriterTag {
    /// The word holds bytes of more than one CTA (each disjoint so far). Further overlaps are
    /// not attributed (no false finding; a missed race at worst).
    pub const SHARED: u32 = u32::MAX;
    /// Epochs wrap at 2^24 launches (a stale tag can then alias a new launch: a word written in
    /// launch e and next in launch e + 2^24 by another CTA; accepted).
    pub const EPOCH_MASK: u32 = (1 << 24) - 1;

    fn pack(self, mask: u8) -> u64 {
        ((self.epoch & Self::EPOCH_MASK) as u64) << 40 | (self.cta as u64) << 8 | mask as u64
    }

    fn unpack(v: u64) -> (u32, u32, u8) {
        ((v >> 40) as u32, (v >> 8) as u32, v as u8)
    }
}

pub struct GlobalMemory {
    allocs: Vec<Alloc>,
    next: u64,
}

/// The same as [`GlobalMemory::new`]: allocations start at `BASE`, never at address 0, which
/// callers (the crate's buffer binding) read as "no buffer". A derived `Default` started at 0.
impl Default for GlobalMemory {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an access could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Address range not (entirely) inside one allocation.
    OutOfBounds,
    /// An allocation the device address space (below the generic windows) or the host cannot
    /// hold.
    OutOfMemory,
}

impl GlobalMemory {
    pub fn new() -> Self {
        GlobalMemory {
            allocs: Vec::new(),
            next: BASE,
        }
    }

    /// Allocates `len` bytes (poisoned), or fails without allocating when the addresses would
    /// run into the generic windows (program.rs, `PARAM_WINDOW` is the lowest) or the host
    /// refuses the memory (`try_reserve`, not an abort).
    pub fn try_alloc(&mut self, len: u64) -> Result<u64, Fault> {
        let base = self.next;
        let next = base
            .checked_add(len.max(1))
            .and_then(|end| end.checked_add(GUARD))
            .and_then(|end| end.checked_next_multiple_of(ALIGN))
            .filter(|&end| end <= PARAM_WINDOW)
            .ok_or(Fault::OutOfMemory)?;
        let n = usize::try_from(len.div_ceil(8).max(1)).map_err(|_| Fault::OutOfMemory)?;
        let mut words = Vec::new();
        words.try_reserve_exact(n).map_err(|_| Fault::OutOfMemory)?;
        let poison = u64::from_ne_bytes([POISON; 8]);
        words.extend((0..n).map(|_| AtomicU64::new(poison)));
        self.next = next;
        // Allocations are created in increasing address order, so the vector stays sorted.
        self.allocs.push(Alloc {
            base,
            len,
            words: words.into_boxed_slice(),
            writers: OnceLock::new(),
        });
        Ok(base)
    }

    pub fn free(&mut self, base: u64) -> bool {
        match self.allocs.binary_search_by_key(&base, |a| a.base) {
            Ok(i) => {
                self.allocs.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// The allocation containing all of `[addr, addr+len)`, and the offset of `addr` in it.
    #[inline]
    pub fn find(&self, addr: u64, len: u64) -> Result<(&Alloc, usize), Fault> {
        let i = self.allocs.partition_point(|a| a.base <= addr);
        if i == 0 {
            return Err(Fault::OutOfBounds);
        }
        let a = &self.allocs[i - 1];
        let off = addr - a.base;
        if off.checked_add(len).is_some_and(|end| end <= a.len) {
            Ok((a, off as usize))
        } else {
            Err(Fault::OutOfBounds)
        }
    }

    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), Fault> {
        let (a, off) = self.find(addr, out.len() as u64)?;
        a.read(off, out);
        Ok(())
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        let (a, off) = self.find(addr, data.len() as u64)?;
        a.write(off, data);
        Ok(())
    }
}

impl Alloc {
    #[inline]
    pub fn read(&self, off: usize, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() {
            let o = off + i;
            let (w, b) = (o / 8, o % 8);
            let n = (8 - b).min(out.len() - i);
            let v = self.words[w].load(Relaxed).to_le_bytes();
            out[i..i + n].copy_from_slice(&v[b..b + n]);
            i += n;
        }
    }

    #[inline]
    pub fn write(&self, off: usize, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let o = off + i;
            let (w, b) = (o / 8, o % 8);
            let n = (8 - b).min(data.len() - i);
            if n == 8 {
                self.words[w].store(
                    u64::from_le_bytes(data[i..i + 8].try_into().unwrap()),
                    Relaxed,
                );
            } else {
                let _ = self.words[w].fetch_update(Relaxed, Relaxed, |old| {
                    let mut v = old.to_le_bytes();
                    v[b..b + n].copy_from_slice(&data[i..i + n]);
                    Some(u64::from_le_bytes(v))
                });
            }
            i += n;
        }
    }

    /// A kernel store: writes `data` like [`Alloc::write`] and records `tag` as the writer of
    /// its bytes. Returns the first byte offset (in the allocation) that another CTA of the same
    /// launch had already written, if any: a cross-CTA write-write race.
    pub fn write_by(&self, off: usize, data: &[u8], tag: WriterTag) -> Option<usize> {
        self.write(off, data);
        let writers = self
            .writers
            .get_or_init(|| {
                let mut v = Vec::new();
                v.try_reserve_exact(self.words.len()).ok()?;
                v.extend(self.words.iter().map(|_| AtomicU64::new(0)));
                Some(v.into_boxed_slice())
            })
            .as_ref()?;
        let mut race = None;
        let mut i = 0;
        while i < data.len() {
            let o = off + i;
            let (w, b) = (o / 8, o % 8);
            let n = (8 - b).min(data.len() - i);
            let mask = (((1u16 << n) - 1) << b) as u8;
            let epoch = tag.epoch & WriterTag::EPOCH_MASK;
            let _ = writers[w].fetch_update(Relaxed, Relaxed, |old| {
                let (e, cta, m) = WriterTag::unpack(old);
                Some(if e != epoch {
                    tag.pack(mask)
                } else if cta == tag.cta || cta == WriterTag::SHARED {
                    old | mask as u64
                } else if m & mask != 0 {
                    race.get_or_insert(w * 8 + (m & mask).trailing_zeros() as usize);
                    tag.pack(mask)
                } else {
                    WriterTag {
                        epoch,
                        cta: WriterTag::SHARED,
                    }
                    .pack(m | mask)
                })
            });
            i += n;
        }
        race
    }

    /// Atomic read-modify-write of a naturally aligned 4- or 8-byte value; returns the old value.
    pub fn rmw(&self, off: usize, size: usize, f: impl Fn(u64) -> u64) -> u64 {
        let (w, b) = (off / 8, off % 8);
        if size == 8 {
            return self.words[w]
                .fetch_update(Relaxed, Relaxed, |old| Some(f(old)))
                .unwrap();
        }
        let shift = b * 8;
        let old = self.words[w]
            .fetch_update(Relaxed, Relaxed, |word| {
                let cur = (word >> shift) & 0xFFFF_FFFF;
                let new = f(cur) & 0xFFFF_FFFF;
                Some((word & !(0xFFFF_FFFFu64 << shift)) | (new << shift))
            })
            .unwrap();
        (old >> shift) & 0xFFFF_FFFF
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A default-built memory (and so `Device::default()`) never hands out address 0, which
    /// binding reads as an absent buffer.
    #[test]
    fn default_is_new_and_never_allocates_at_zero() {
        let mut g = GlobalMemory::default();
        let first = g.try_alloc(16).unwrap();
        assert_eq!(first, GlobalMemory::new().try_alloc(16).unwrap());
        assert_ne!(first, 0);
    }

    #[test]
    fn allocations_are_bounded_and_apart() {
        let mut g = GlobalMemory::new();
        let a = g.try_alloc(100).unwrap();
        let b = g.try_alloc(8).unwrap();
        assert!(b >= a + 100 + GUARD);
        assert!(g.write(a + 96, &[1, 2, 3, 4]).is_ok());
        assert_eq!(g.write(a + 97, &[1, 2, 3, 4]), Err(Fault::OutOfBounds));
        assert_eq!(g.read(a - 1, &mut [0u8; 1]), Err(Fault::OutOfBounds));
        let mut buf = [0u8; 4];
        g.read(a + 96, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        g.read(b, &mut buf).unwrap();
        assert_eq!(buf, [POISON; 4]);
        assert!(g.free(a));
        assert_eq!(g.read(a, &mut buf), Err(Fault::OutOfBounds));
    }

    /// Two CTAs of one launch writing the same byte race; disjoint bytes of one word, the same
    /// CTA twice, or another launch do not.
    #[test]
    fn writer_tags_find_cross_cta_overlaps_only() {
        let mut g = GlobalMemory::new();
        let a = g.try_alloc(64).unwrap();
        let (al, _) = g.find(a, 64).unwrap();
        let t = |epoch, cta| WriterTag { epoch, cta };
        assert_eq!(al.write_by(0, &[1; 4], t(1, 0)), None);
        assert_eq!(
            al.write_by(4, &[2; 4], t(1, 1)),
            None,
            "disjoint halves of a word"
        );
        assert_eq!(al.write_by(16, &[3; 8], t(1, 2)), None);
        assert_eq!(al.write_by(16, &[3; 8], t(1, 2)), None, "same CTA again");
        assert_eq!(
            al.write_by(21, &[4; 6], t(1, 3)),
            Some(21),
            "CTA 3 over CTA 2's bytes"
        );
        assert_eq!(
            al.write_by(16, &[5; 8], t(2, 7)),
            None,
            "a new launch starts clean"
        );
        let mut back = [0u8; 8];
        al.read(16, &mut back);
        assert_eq!(back, [5; 8], "the store itself always lands");
    }

    #[test]
    fn unaligned_spanning_writes_and_rmw() {
        let mut g = GlobalMemory::new();
        let a = g.try_alloc(32).unwrap();
        let data: Vec<u8> = (0..13).collect();
        g.write(a + 5, &data).unwrap();
        let mut back = vec![0u8; 13];
        g.read(a + 5, &mut back).unwrap();
        assert_eq!(back, data);
        let (al, off) = g.find(a + 4, 4).unwrap();
        let old = al.rmw(off, 4, |v| v.wrapping_add(1));
        assert_eq!(old, u32::from_le_bytes([0xFF, 0, 1, 2]) as u64);
    }
}
