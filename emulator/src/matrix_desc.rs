//! The 64-bit shared-memory matrix descriptor of `wgmma.mma_async` and the shared-memory layouts
//! it describes (PTX ISA "Asynchronous Warpgroup Level Matrix Shared Memory Layout", sections
//! "Matrix Descriptor Format" and the canonical K-major / MN-major layouts built from core
//! matrices). Public so that tests and host code can build descriptors and place operands with
//! the same arithmetic the emulator uses to read them.
//!
//! Descriptor fields (bit ranges inclusive), every byte quantity encoded as `value >> 4`:
//!
//! | bits  | field                                                     |
//! |-------|-----------------------------------------------------------|
//! | 0-13  | matrix start address in shared memory                     |
//! | 16-29 | leading dimension byte offset (LBO)                       |
//! | 32-45 | stride dimension byte offset (SBO)                        |
//! | 49-51 | matrix base offset (pattern phase of the start address)   |
//! | 62-63 | swizzle mode: 0 none, 1 128-byte, 2 64-byte, 3 32-byte    |
//!
//! Layouts, for 16-bit elements (a core matrix is 8 rows of 16 bytes); `mn` indexes M (for A)
//! or N (for B), `k` the reduction dimension:
//! * K-major, no swizzle: core matrix `(mn/8, k/8)` at `mn/8 * SBO + k/8 * LBO`, row `mn%8`
//!   at 16 bytes per row, element `k%8` inside the row.
//! * K-major, swizzle width W (32/64/128 bytes): rows of W bytes, `mn%8 * W + k*2` inside an
//!   8-row atom, atoms along MN at SBO (LBO unused while K fits in one row, as for k16).
//! * MN-major, no swizzle: core matrix `(mn/8, k/8)` at `mn/8 * SBO + k/8 * LBO`, row `k%8`
//!   at 16 bytes per row, element `mn%8` inside the row.
//! * MN-major, swizzle width W: rows of W bytes hold W/2 consecutive MN elements, `k%8 * W`
//!   selects the row inside an 8-row atom; atoms along MN at LBO, groups of 8 k-rows at SBO.
//!
//! The swizzle permutes the 16-byte chunks of each W-byte row by XOR with the row's phase in
//! the pattern (bits 4.. of the address XOR bits 7..: 3 bits for 128B, 2 for 64B, 1 for 32B).
//! The phase is counted from the start address, whose own phase is the descriptor's base
//! offset; with the base offset the ISA prescribes (`(start >> 7) & 7`, 0 for pattern-aligned
//! tiles) this is the same as swizzling the absolute address, which is what TMA writes.

/// Swizzle mode of a matrix descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swizzle {
    None,
    B32,
    B64,
    B128,
}

impl Swizzle {
    /// The 2-bit descriptor encoding (bits 62-63).
    pub fn code(self) -> u64 {
        match self {
            Swizzle::None => 0,
            Swizzle::B128 => 1,
            Swizzle::B64 => 2,
            Swizzle::B32 => 3,
        }
    }

    pub fn from_code(c: u64) -> Swizzle {
        match c & 3 {
            0 => Swizzle::None,
            1 => Swizzle::B128,
            2 => Swizzle::B64,
            _ => Swizzle::B32,
        }
    }

    /// Row width of the swizzle atom in bytes (16 for no swizzle: one core-matrix row).
    pub fn width(self) -> u32 {
        match self {
            Swizzle::None => 16,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }

    /// Mask of the row-phase bits XORed into address bits 4.. .
    fn phase_mask(self) -> u32 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 1,
            Swizzle::B64 => 3,
            Swizzle::B128 => 7,
        }
    }
}

/// Which dimension is contiguous in shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Major {
    /// K contiguous (imm-trans = 0): A row-major, B column-major.
    K,
    /// M (for A) or N (for B) contiguous (imm-trans = 1).
    MN,
}

/// A decoded matrix descriptor; byte quantities are in bytes (not the `>> 4` encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatrixDesc {
    pub start: u32,
    pub lbo: u32,
    pub sbo: u32,
    pub base_offset: u8,
    pub swizzle: Swizzle,
}

impl MatrixDesc {
    /// Decodes the 64-bit descriptor (bits outside the fields are ignored).
    pub fn decode(d: u64) -> MatrixDesc {
        let field = |lo: u32| (((d >> lo) & 0x3FFF) as u32) << 4;
        MatrixDesc {
            start: field(0),
            lbo: field(16),
            sbo: field(32),
            base_offset: ((d >> 49) & 7) as u8,
            swizzle: Swizzle::from_code(d >> 62),
        }
    }

    /// Encodes the descriptor; byte quantities lose their low 4 bits and are truncated to the
    /// 14-bit fields, as the hardware encoding does.
    pub fn encode(&self) -> u64 {
        let f = |v: u32| ((v >> 4) & 0x3FFF) as u64;
        f(self.start)
            | f(self.lbo) << 16
            | f(self.sbo) << 32
            | ((self.base_offset & 7) as u64) << 49
            | self.swizzle.code() << 62
    }

    /// Shared-memory byte address of element (`mn`, `k`) of a 16-bit operand in `major` order.
    pub fn element_addr(&self, major: Major, mn: u32, k: u32) -> u32 {
        const EB: u32 = 2;
        let w = self.swizzle.width();
        let linear = match (major, self.swizzle) {
            (Major::K, Swizzle::None) => {
                (mn / 8) * self.sbo + (k / 8) * self.lbo + (mn % 8) * 16 + (k % 8) * EB
            }
            (Major::K, _) => {
                let kb = k * EB;
                (mn / 8) * self.sbo + (kb / w) * self.lbo + (mn % 8) * w + kb % w
            }
            (Major::MN, Swizzle::None) => {
                (mn / 8) * self.sbo + (k / 8) * self.lbo + (k % 8) * 16 + (mn % 8) * EB
            }
            (Major::MN, _) => {
                let per_row = w / EB;
                (mn / per_row) * self.lbo + (k / 8) * self.sbo + (k % 8) * w + (mn % per_row) * EB
            }
        };
        self.swizzle_addr(self.start.wrapping_add(linear))
    }

    /// Applies the swizzle to an unswizzled address of this operand.
    pub fn swizzle_addr(&self, a: u32) -> u32 {
        let m = self.swizzle.phase_mask();
        if m == 0 {
            return a;
        }
        // Row phase relative to the start address, plus the start's own phase (base offset).
        let rows = (a >> 7).wrapping_sub(self.start >> 7);
        let phase = rows.wrapping_add(self.base_offset as u32) & m;
        a ^ (phase << 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let d = MatrixDesc {
            start: 0x1_2340,
            lbo: 0x80,
            sbo: 0x400,
            base_offset: 5,
            swizzle: Swizzle::B64,
        };
        assert_eq!(MatrixDesc::decode(d.encode()), d);
    }
}
