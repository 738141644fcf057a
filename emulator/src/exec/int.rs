//! Integer family execution: integer and bitwise arithmetic on all active lanes. Each function
//! reads the bits its PTX type says and masks its result to the destination width.

use super::lanes::*;
use crate::program::*;

fn mul_hi(a: u64, b: u64, w: u8, s: bool) -> u64 {
    if s {
        ((sext(a, w) as i128 * sext(b, w) as i128) >> w) as u64 & mask(w)
    } else {
        (((a & mask(w)) as u128 * (b & mask(w)) as u128) >> w) as u64 & mask(w)
    }
}

fn mul_wide(a: u64, b: u64, w: u8, s: bool) -> u64 {
    if s {
        (sext(a, w).wrapping_mul(sext(b, w))) as u64 & mask(2 * w)
    } else {
        (a & mask(w)).wrapping_mul(b & mask(w)) & mask(2 * w)
    }
}

pub fn exec_bin(k: BinK, regs: &mut [u64], m: u32, d: R, a: R, b: R) {
    match k {
        BinK::Add(w) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| x.wrapping_add(y) & mk)
        }
        BinK::Sub(w) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| x.wrapping_sub(y) & mk)
        }
        BinK::AddSat => lanes2(regs, m, d, a, b, |x, y| {
            ((x as u32 as i32 as i64 + y as u32 as i32 as i64)
                .clamp(i32::MIN as i64, i32::MAX as i64) as i32) as u32 as u64
        }),
        BinK::SubSat => lanes2(regs, m, d, a, b, |x, y| {
            ((x as u32 as i32 as i64 - y as u32 as i32 as i64)
                .clamp(i32::MIN as i64, i32::MAX as i64) as i32) as u32 as u64
        }),
        BinK::MulLo(w) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| x.wrapping_mul(y) & mk)
        }
        BinK::MulHi(w, s) => lanes2(regs, m, d, a, b, |x, y| mul_hi(x, y, w, s)),
        BinK::MulWide(w, s) => lanes2(regs, m, d, a, b, |x, y| mul_wide(x, y, w, s)),
        BinK::Div(w, s) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| {
                if y & mk == 0 {
                    mk
                } else if s {
                    sext(x, w).wrapping_div(sext(y, w)) as u64 & mk
                } else {
                    ((x & mk) / (y & mk)) & mk
                }
            })
        }
        BinK::Rem(w, s) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| {
                if y & mk == 0 {
                    x & mk
                } else if s {
                    sext(x, w).wrapping_rem(sext(y, w)) as u64 & mk
                } else {
                    ((x & mk) % (y & mk)) & mk
                }
            })
        }
        BinK::Min(w, s) | BinK::Max(w, s) => {
            let mk = mask(w);
            let max = matches!(k, BinK::Max(..));
            lanes2(regs, m, d, a, b, |x, y| {
                let lt = if s {
                    sext(x, w) < sext(y, w)
                } else {
                    (x & mk) < (y & mk)
                };
                (if lt != max { x } else { y }) & mk
            })
        }
        BinK::Shl(w) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| {
                let n = y as u32;
                if n >= w as u32 {
                    0
                } else {
                    (x << n) & mk
                }
            })
        }
        BinK::Shr(w, s) => {
            let mk = mask(w);
            lanes2(regs, m, d, a, b, |x, y| {
                let n = (y as u32).min(w as u32);
                if s {
                    (sext(x, w) >> n.min(63)) as u64 & mk
                } else if n >= w as u32 {
                    0
                } else {
                    (x & mk) >> n
                }
            })
        }
        BinK::And => lanes2(regs, m, d, a, b, |x, y| x & y),
        BinK::Or => lanes2(regs, m, d, a, b, |x, y| x | y),
        BinK::Xor => lanes2(regs, m, d, a, b, |x, y| x ^ y),
    }
}

pub fn exec_un(k: UnK, regs: &mut [u64], m: u32, d: R, a: R) {
    match k {
        UnK::Not(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| !x & mk)
        }
        UnK::Cnot => lanes1(regs, m, d, a, |x| (x == 0) as u64),
        UnK::Neg(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| x.wrapping_neg() & mk)
        }
        UnK::Abs(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| sext(x, w).unsigned_abs() & mk)
        }
        UnK::Popc(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| (x & mk).count_ones() as u64)
        }
        UnK::Clz(w) => {
            let mk = mask(w);
            lanes1(regs, m, d, a, |x| {
                ((x & mk).leading_zeros() - (64 - w as u32)) as u64
            })
        }
        UnK::Brev(w) => lanes1(regs, m, d, a, |x| x.reverse_bits() >> (64 - w as u32)),
        UnK::Bfind(w, s, shiftamt) => lanes1(regs, m, d, a, |x| {
            let v = if s && sext(x, w) < 0 {
                !x & mask(w)
            } else {
                x & mask(w)
            };
            if v == 0 {
                0xFFFF_FFFF
            } else {
                let pos = 63 - v.leading_zeros();
                if shiftamt {
                    (w as u32 - 1 - pos) as u64
                } else {
                    pos as u64
                }
            }
        }),
    }
}

fn bfe(a: u64, pos: u64, len: u64, w: u8, s: bool) -> u64 {
    let msb = w as u64 - 1;
    let pos = pos & 0xFF;
    let len = len & 0xFF;
    let sbit = if !s || len == 0 {
        0
    } else {
        (a >> (pos + len - 1).min(msb)) & 1
    };
    let mut d = 0u64;
    for i in 0..w as u64 {
        let bit = if i < len && pos + i <= msb {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    d
}

fn prmt(a: u64, b: u64, c: u64) -> u64 {
    let bytes = ((b & 0xFFFF_FFFF) << 32) | (a & 0xFFFF_FFFF);
    let mut d = 0u64;
    for i in 0..4 {
        let sel = (c >> (4 * i)) & 0xF;
        let mut byte = (bytes >> (8 * (sel & 7))) & 0xFF;
        if sel & 8 != 0 {
            byte = if byte & 0x80 != 0 { 0xFF } else { 0 };
        }
        d |= byte << (8 * i);
    }
    d
}

pub fn exec_tern(k: TerK, regs: &mut [u64], m: u32, d: R, a: R, b: R, c: R) {
    match k {
        TerK::MadLo(w) => {
            let mk = mask(w);
            lanes3(regs, m, d, a, b, c, |x, y, z| {
                x.wrapping_mul(y).wrapping_add(z) & mk
            })
        }
        TerK::MadHi(w, s) => {
            let mk = mask(w);
            lanes3(regs, m, d, a, b, c, |x, y, z| {
                mul_hi(x, y, w, s).wrapping_add(z) & mk
            })
        }
        TerK::MadWide(w, s) => {
            let mk = mask(2 * w);
            lanes3(regs, m, d, a, b, c, |x, y, z| {
                mul_wide(x, y, w, s).wrapping_add(z) & mk
            })
        }
        TerK::Selp => lanes3(
            regs,
            m,
            d,
            a,
            b,
            c,
            |x, y, p| if p & 1 != 0 { x } else { y },
        ),
        TerK::SlctS32 => lanes3(regs, m, d, a, b, c, |x, y, z| {
            if (z as u32 as i32) >= 0 {
                x
            } else {
                y
            }
        }),
        TerK::Bfe(w, s) => lanes3(regs, m, d, a, b, c, |x, y, z| bfe(x, y, z, w, s)),
        TerK::Prmt => lanes3(regs, m, d, a, b, c, prmt),
        TerK::Shf { left, clamp } => lanes3(regs, m, d, a, b, c, |x, y, z| {
            let n = if clamp {
                (z as u32).min(32)
            } else {
                z as u32 & 31
            } as u64;
            let v = ((y & 0xFFFF_FFFF) << 32) | (x & 0xFFFF_FFFF);
            if left {
                ((v << n) >> 32) & 0xFFFF_FFFF
            } else {
                (v >> n) & 0xFFFF_FFFF
            }
        }),
    }
}

pub fn exec_bfi(w: u8, regs: &mut [u64], m: u32, d: R, srcs: [R; 4]) {
    let [a, b, c, e] = srcs;
    let av = lane_slice(regs, a);
    let bv = lane_slice(regs, b);
    let cv = lane_slice(regs, c);
    let ev = lane_slice(regs, e);
    for l in 0..32 {
        if m >> l & 1 == 0 {
            continue;
        }
        let pos = cv[l] & 0xFF;
        let len = ev[l] & 0xFF;
        let mut f = bv[l] & mask(w);
        for i in 0..len {
            if pos + i < w as u64 {
                f = (f & !(1 << (pos + i))) | (((av[l] >> i) & 1) << (pos + i));
            }
        }
        regs[d as usize * 32 + l] = f;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_edge_cases() {
        assert_eq!(bfe(0xF0, 4, 4, 32, false), 0xF);
        assert_eq!(bfe(0xF0, 4, 4, 32, true), 0xFFFF_FFFF);
        assert_eq!(prmt(0x33221100, 0x77665544, 0x5410), 0x55441100);
        assert_eq!(prmt(0x000000F0, 0, 0x8888), 0xFFFF_FFFF);
        assert_eq!(mul_hi(0xFFFF_FFFF, 2, 32, false), 1);
        assert_eq!(mul_hi(0xFFFF_FFFF, 2, 32, true), 0xFFFF_FFFF);
        assert_eq!(mul_wide(0xFFFF_FFFF, 0xFFFF_FFFF, 32, true), 1);
    }
}
