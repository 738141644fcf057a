//! Binding: the one device-buffer type of every op ([`DevBuf`]) and the one per-run checker
//! ([`check`]) that each op drives with a fixed table of [`BufSpec`]s (tensor, buffer, elements
//! the plan needs, element size, alignment, role). O(1) in the number of buffers, no allocation;
//! runs before every launch, so a bad binding is a typed error and nothing is written.

use crate::common::error::{AlignWhat, Error, Result, TensorName};

/// One device buffer: base address (0 = absent) and how many elements of its type are available
/// from there. Each backend fills it from its own buffer types (cudarc slices and views,
/// emulator allocations, C pointers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevBuf {
    pub addr: u64,
    pub len: u64,
}

impl DevBuf {
    /// No buffer.
    pub const ABSENT: DevBuf = DevBuf { addr: 0, len: 0 };

    /// `len` elements at `addr` (`usize` lengths from host-side containers).
    pub fn new(addr: u64, len: usize) -> DevBuf {
        DevBuf {
            addr,
            len: len as u64,
        }
    }

    pub fn is_present(&self) -> bool {
        self.addr != 0
    }

    /// `len` elements starting `offset` elements (of `elem_bytes` bytes) into `self` (absent
    /// when `self` is; the caller checked the offset against `self.len`).
    pub fn slice(&self, offset: u64, len: u64, elem_bytes: u64) -> DevBuf {
        if !self.is_present() {
            return DevBuf::ABSENT;
        }
        DevBuf {
            addr: self.addr.saturating_add(offset.saturating_mul(elem_bytes)),
            len,
        }
    }
}

/// What a plan does with one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Must be present and hold `needed` elements.
    Required,
    /// Checked like `Required` when present; absence turns the feature off (e.g. an LSE output).
    IfPresent,
    /// The plan does not touch it: ignored whatever it holds.
    Unused,
    /// The plan cannot use it and a present one is a mistake ([`Error::UnexpectedBuffer`]).
    Forbidden,
}

/// One row of an op's binding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufSpec {
    pub tensor: TensorName,
    pub buf: DevBuf,
    pub usage: Use,
    /// Elements the kernels may touch (the extent, not the capacity).
    pub needed: u64,
    pub elem_bytes: u64,
    /// Required base alignment in bytes.
    pub align: u64,
    /// Outputs must overlap no other bound buffer.
    pub output: bool,
}

impl BufSpec {
    /// A buffer the launch only reads.
    pub fn input(
        tensor: TensorName,
        buf: DevBuf,
        usage: Use,
        needed: u64,
        elem_bytes: u64,
        align: u64,
    ) -> BufSpec {
        BufSpec {
            tensor,
            buf,
            usage,
            needed,
            elem_bytes,
            align,
            output: false,
        }
    }

    /// This buffer as one the launch writes: it may overlap no other.
    pub fn written(self) -> BufSpec {
        BufSpec {
            output: true,
            ..self
        }
    }

    /// Whether the launch reads or writes this buffer.
    fn bound(&self) -> bool {
        match self.usage {
            Use::Required => true,
            Use::IfPresent => self.buf.is_present(),
            Use::Unused | Use::Forbidden => false,
        }
    }

    /// The address the params struct gets: 0 for a buffer the launch does not use.
    pub fn addr(&self) -> u64 {
        if self.bound() {
            self.buf.addr
        } else {
            0
        }
    }

    /// Byte range the kernels may touch: the extent, not the whole buffer, so two tensors carved
    /// side by side from one arena do not count as overlapping.
    fn span(&self) -> (u64, u64) {
        let bytes = self.needed.saturating_mul(self.elem_bytes);
        (self.buf.addr, self.buf.addr.saturating_add(bytes))
    }
}

/// Checks one binding table: presence, extent, base alignment of every used buffer, then that no
/// output overlaps another bound buffer.
pub fn check(specs: &[BufSpec]) -> Result<()> {
    for s in specs {
        match s.usage {
            Use::Unused => continue,
            Use::Forbidden if s.buf.is_present() => {
                return Err(Error::UnexpectedBuffer { tensor: s.tensor })
            }
            Use::Forbidden | Use::IfPresent if !s.buf.is_present() => continue,
            _ => {}
        }
        if !s.buf.is_present() {
            return Err(Error::MissingBuffer { tensor: s.tensor });
        }
        if s.buf.len < s.needed {
            return Err(Error::BufferTooSmall {
                tensor: s.tensor,
                needed: s.needed,
                available: s.buf.len,
            });
        }
        if !s.buf.addr.is_multiple_of(s.align.max(1)) {
            return Err(Error::Misaligned {
                tensor: s.tensor,
                what: AlignWhat::Base,
                required: s.align as usize,
                value: s.buf.addr,
            });
        }
    }
    for (i, a) in specs.iter().enumerate() {
        if !a.bound() {
            continue;
        }
        let (a0, a1) = a.span();
        for b in &specs[i + 1..] {
            if !(a.output || b.output) || !b.bound() {
                continue;
            }
            let (b0, b1) = b.span();
            if a0 < b1 && b0 < a1 {
                let (first, second) = if a.output { (a, b) } else { (b, a) };
                return Err(Error::Alias {
                    a: first.tensor,
                    b: second.tensor,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use TensorName as T;

    /// `Error` has no `PartialEq` (it wraps I/O errors): compare verdicts by their Debug text.
    macro_rules! same {
        ($a:expr, $b:expr $(,)?) => {
            assert_eq!(format!("{:?}", $a), format!("{:?}", $b))
        };
    }

    fn buf(addr: u64, len: u64) -> DevBuf {
        DevBuf { addr, len }
    }

    #[test]
    fn each_rule_is_a_typed_error() {
        let q = |b, u| BufSpec::input(T::Q, b, u, 64, 2, 16);
        let o = |b| BufSpec::input(T::O, b, Use::Required, 64, 2, 16).written();
        same!(
            check(&[q(DevBuf::ABSENT, Use::Required)]),
            Err::<(), Error>(Error::MissingBuffer { tensor: T::Q })
        );
        same!(
            check(&[q(buf(4096, 63), Use::Required)]),
            Err::<(), Error>(Error::BufferTooSmall {
                tensor: T::Q,
                needed: 64,
                available: 63
            })
        );
        assert!(matches!(
            check(&[q(buf(4104, 64), Use::Required)]),
            Err::<(), Error>(Error::Misaligned { tensor: T::Q, .. })
        ));
        same!(
            check(&[q(buf(4096, 64), Use::Forbidden)]),
            Err::<(), Error>(Error::UnexpectedBuffer { tensor: T::Q })
        );
        // Unused: not even looked at; IfPresent absent: fine.
        same!(
            check(&[
                q(buf(4104, 1), Use::Unused),
                q(DevBuf::ABSENT, Use::IfPresent)
            ]),
            Ok::<(), Error>(())
        );
        // The output overlaps the input's extent: named output first.
        same!(
            check(&[q(buf(4096, 64), Use::Required), o(buf(4096 + 112, 64))]),
            Err::<(), Error>(Error::Alias { a: T::O, b: T::Q })
        );
        // Side by side in one arena: no overlap.
        same!(
            check(&[q(buf(4096, 64), Use::Required), o(buf(4096 + 128, 64))]),
            Ok::<(), Error>(())
        );
        // Two inputs may alias each other (K and V from one buffer are legal).
        let k = BufSpec::input(T::K, buf(4096, 64), Use::Required, 64, 2, 16);
        same!(
            check(&[q(buf(4096, 64), Use::Required), k]),
            Ok::<(), Error>(())
        );
        // An unused buffer cannot alias.
        let lse = BufSpec::input(T::Lse, buf(4096, 64), Use::Unused, 64, 4, 4).written();
        same!(
            check(&[q(buf(4096, 64), Use::Required), lse]),
            Ok::<(), Error>(())
        );
    }

    proptest! {
        /// The overlap verdict equals interval intersection of the extents, whatever the addresses
        /// (saturating near 2^64: no panic).
        #[test]
        fn overlap_is_interval_intersection(a in any::<u64>(), b in any::<u64>(), na in 1u64..1 << 40, nb in 1u64..1 << 40) {
            let (a, b) = ((a & !15).max(16), (b & !15).max(16));
            let specs = [
                BufSpec::input(T::O, buf(a, na), Use::Required, na, 1, 16).written(),
                BufSpec::input(T::Q, buf(b, nb), Use::Required, nb, 1, 16),
            ];
            let (a1, b1) = (a.saturating_add(na), b.saturating_add(nb));
            let overlap = a < b1 && b < a1;
            prop_assert_eq!(check(&specs).is_err(), overlap);
        }
    }
}
