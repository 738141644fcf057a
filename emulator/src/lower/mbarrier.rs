//! mbarrier family: `mbarrier.init`, `.inval`, `.arrive` / `.arrive_drop` (with count,
//! `.expect_tx`, `.noComplete`), `.expect_tx`, `.complete_tx`, `.test_wait` / `.try_wait`
//! (state token or `.parity`, optional suspend-time hint), `.pending_count`, on `.shared::cta`,
//! `.shared::cluster` (a peer CTA's object through `mapa`: arrivals and tx-counts) or generic
//! addresses, with any
//! `.sem` / `.scope` qualifier (the model is sequentially consistent). Semantics in
//! `exec/mbarrier.rs`.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::Ty;
use super::quals::{is_ignorable_mem_qual, Quals};
use super::Lowerer;

impl Lowerer {
    pub(super) fn lower_mbarrier(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let o = &i.operands;
        // `.relaxed` / `.release` / `.acquire` and `.cta` / `.cluster`.
        q.ignore(is_ignorable_mem_qual);
        let space =
            q.take(|s| matches!(s, "shared" | "shared::cta" | "shared::cluster").then_some(()));
        let generic = space.is_none();
        let k = if q.has("init") {
            MbarK::Init
        } else if q.has("inval") {
            MbarK::Inval
        } else if q.has("arrive") || q.has("arrive_drop") {
            let drop = i.opcode.contains(".arrive_drop");
            MbarK::Arrive {
                expect_tx: q.has("expect_tx"),
                drop,
                no_complete: q.has("noComplete"),
            }
        } else if q.has("expect_tx") {
            MbarK::ExpectTx
        } else if q.has("complete_tx") {
            MbarK::CompleteTx
        } else if q.has("test_wait") || q.has("try_wait") {
            MbarK::Wait {
                parity: q.has("parity"),
                try_wait: i.opcode.contains(".try_wait"),
            }
        } else if q.has("pending_count") {
            MbarK::PendingCount
        } else {
            return self.unsupported(&i.opcode);
        };
        if q.types() != [Ty::B64] {
            return self.bad("mbarrier instructions take the .b64 type");
        }
        let (mut d, mut a, mut b) = (NONE, NONE, NONE);
        let addr_at = match k {
            MbarK::Init | MbarK::ExpectTx | MbarK::CompleteTx => {
                self.ops(i, 2)?;
                a = self.src(&o[1], Ty::U32)?;
                0
            }
            MbarK::Inval => {
                self.ops(i, 1)?;
                0
            }
            MbarK::Arrive { expect_tx, .. } => {
                self.ops(i, if expect_tx { 3 } else { 2 })?;
                d = self.dst(&o[0])?;
                let mut next = 2;
                if expect_tx {
                    b = self.src(&o[2], Ty::U32)?;
                    next = 3;
                }
                if let Some(c) = o.get(next) {
                    a = self.src(c, Ty::U32)?;
                }
                if o.len() > next + 1 {
                    return self.bad("too many operands for mbarrier.arrive");
                }
                1
            }
            MbarK::Wait { try_wait, .. } => {
                self.ops(i, 3)?;
                d = self.dst(&o[0])?;
                a = self.src(&o[2], Ty::U64)?;
                match o.get(3) {
                    // The suspend-time hint only bounds how long hardware may suspend.
                    Some(h) if try_wait => {
                        self.src(h, Ty::U32)?;
                    }
                    Some(_) => return self.bad("test_wait takes no suspend-time hint"),
                    None => {}
                }
                1
            }
            MbarK::PendingCount => {
                self.ops(i, 2)?;
                d = self.dst(&o[0])?;
                a = self.src(&o[1], Ty::U64)?;
                let op = AsyncOp::Mbar(MbarOp {
                    k,
                    d,
                    addr: Addr {
                        base: self.zero,
                        off: 0,
                    },
                    generic: false,
                    a,
                    b,
                });
                return self.push(i, Op::Async(op), Class::Sync);
            }
        };
        if !matches!(o[addr_at], Operand::Addr(..)) {
            return self.bad("expected the mbarrier address `[addr]`");
        }
        let addr = self.addr(&o[addr_at])?;
        let op = AsyncOp::Mbar(MbarOp {
            k,
            d,
            addr,
            generic,
            a,
            b,
        });
        self.push(i, Op::Async(op), Class::Sync)
    }
}
