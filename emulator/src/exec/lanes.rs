//! Applying a per-lane function to all active lanes of a warp's register file, and the bit
//! helpers every ALU family shares. Registers are 64-bit slots holding the value zero-extended
//! from the register's width.

use crate::program::R;

pub const FULL: u32 = u32::MAX;

#[inline(always)]
pub fn mask(w: u8) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

#[inline(always)]
pub fn sext(x: u64, w: u8) -> i64 {
    if w >= 64 {
        x as i64
    } else {
        ((x << (64 - w)) as i64) >> (64 - w)
    }
}

#[inline(always)]
pub fn lane_slice(regs: &[u64], r: R) -> [u64; 32] {
    let i = r as usize * 32;
    regs[i..i + 32].try_into().unwrap()
}

/// Writes `f(l)` to lane `l` of the destination slots `dv` for the lanes in `m` (all 32 without
/// a mask test when `m` is full).
#[inline(always)]
fn write_lanes(dv: &mut [u64], m: u32, f: impl Fn(usize) -> u64) {
    if m == FULL {
        for (l, d) in dv.iter_mut().enumerate() {
            *d = f(l);
        }
    } else {
        for (l, d) in dv.iter_mut().enumerate() {
            if m >> l & 1 != 0 {
                *d = f(l);
            }
        }
    }
}

/// The 32 lane slots of register `d`.
#[inline(always)]
fn dst_slots(regs: &mut [u64], d: R) -> &mut [u64] {
    let di = d as usize * 32;
    &mut regs[di..di + 32]
}

/// `d = f(a)` on the lanes in `m`.
#[inline(always)]
pub fn lanes1(regs: &mut [u64], m: u32, d: R, a: R, f: impl Fn(u64) -> u64) {
    let av = lane_slice(regs, a);
    write_lanes(dst_slots(regs, d), m, |l| f(av[l]));
}

/// `d = f(a, b)` on the lanes in `m`.
#[inline(always)]
pub fn lanes2(regs: &mut [u64], m: u32, d: R, a: R, b: R, f: impl Fn(u64, u64) -> u64) {
    let (av, bv) = (lane_slice(regs, a), lane_slice(regs, b));
    write_lanes(dst_slots(regs, d), m, |l| f(av[l], bv[l]));
}

/// `d = f(a, b, c)` on the lanes in `m`.
#[inline(always)]
pub fn lanes3(regs: &mut [u64], m: u32, d: R, a: R, b: R, c: R, f: impl Fn(u64, u64, u64) -> u64) {
    let (av, bv, cv) = (
        lane_slice(regs, a),
        lane_slice(regs, b),
        lane_slice(regs, c),
    );
    write_lanes(dst_slots(regs, d), m, |l| f(av[l], bv[l], cv[l]));
}

#[inline(always)]
pub fn f32b(x: u64) -> f32 {
    f32::from_bits(x as u32)
}

#[inline(always)]
pub fn bf32(x: f32) -> u64 {
    x.to_bits() as u64
}
