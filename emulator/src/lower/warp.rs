//! Warp-collective family: `shfl.sync`, `vote.sync`, `match.sync`, `redux.sync`,
//! `activemask`.

use super::super::ast;
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::Ty;
use super::quals::Quals;
use super::Lowerer;

impl Lowerer {
    pub(super) fn lower_warp(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let base = q.base();
        let o = &i.operands;
        if base == "activemask" {
            q.types();
            self.ops(i, 1)?;
            let d = self.dst(&o[0])?;
            return self.push(i, Op::Activemask { d }, Class::Shuffle);
        }
        // The pre-Volta forms without `.sync` have no member mask; not implemented.
        if !q.has("sync") {
            return self.unsupported(&i.opcode);
        }
        match base {
            "elect" => {
                self.ops(i, 2)?;
                let (d, p) = match &o[0] {
                    ast::Operand::Pair(d, p) => {
                        let d = if d == "_" {
                            NONE
                        } else {
                            self.dst(&ast::Operand::Reg(d.clone()))?
                        };
                        (d, self.dst(&ast::Operand::Reg(p.clone()))?)
                    }
                    _ => return self.bad("elect.sync needs a d|p destination"),
                };
                let mask = self.src(&o[1], Ty::B32)?;
                self.push(i, Op::Elect { d, p, mask }, Class::Shuffle)
            }
            "shfl" => {
                self.ops(i, 5)?;
                let mode = match q.one_of(&[
                    ("up", ShflMode::Up),
                    ("down", ShflMode::Down),
                    ("bfly", ShflMode::Bfly),
                    ("idx", ShflMode::Idx),
                ]) {
                    Some(m) => m,
                    None => return self.bad("shfl mode missing"),
                };
                q.types();
                let (d, p) = self.dst_pair(&o[0])?;
                let a = self.src(&o[1], Ty::B32)?;
                let b = self.src(&o[2], Ty::B32)?;
                let c = self.src(&o[3], Ty::B32)?;
                let mask = self.src(&o[4], Ty::B32)?;
                self.push(
                    i,
                    Op::Shfl {
                        mode,
                        d,
                        p,
                        a,
                        b,
                        c,
                        mask,
                    },
                    Class::Shuffle,
                )
            }
            "vote" => {
                self.ops(i, 3)?;
                let mode = match q.one_of(&[
                    ("all", VoteMode::All),
                    ("any", VoteMode::Any),
                    ("uni", VoteMode::Uni),
                    ("ballot", VoteMode::Ballot),
                ]) {
                    Some(m) => m,
                    None => return self.unsupported(&i.opcode),
                };
                q.types();
                let d = self.dst(&o[0])?;
                let (a, neg) = match &o[1] {
                    ast::Operand::Not(n) => {
                        (self.src(&ast::Operand::Reg(n.clone()), Ty::Pred)?, true)
                    }
                    other => (self.src(other, Ty::Pred)?, false),
                };
                let mask = self.src(&o[2], Ty::B32)?;
                self.push(
                    i,
                    Op::Vote {
                        mode,
                        d,
                        a,
                        neg,
                        mask,
                    },
                    Class::Shuffle,
                )
            }
            "match" => {
                self.ops(i, 3)?;
                let all = match q.one_of(&[("all", true), ("any", false)]) {
                    Some(a) => a,
                    None => return self.bad("match needs .any or .all"),
                };
                let ty = q.types().last().copied().unwrap_or(Ty::B32);
                let (d, p) = self.dst_pair(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let mask = self.src(&o[2], Ty::B32)?;
                self.push(i, Op::Match { all, d, p, a, mask }, Class::Shuffle)
            }
            _ => {
                // redux
                self.ops(i, 3)?;
                let ty = self.one_ty(q)?;
                if ty.is_float() {
                    return self.unsupported(&i.opcode);
                }
                let s = ty.is_signed();
                let k = match q.one_of(&[
                    ("add", ReduxK::Add),
                    ("min", ReduxK::Min(s)),
                    ("max", ReduxK::Max(s)),
                    ("and", ReduxK::And),
                    ("or", ReduxK::Or),
                    ("xor", ReduxK::Xor),
                ]) {
                    Some(k) => k,
                    None => return self.unsupported(&i.opcode),
                };
                let d = self.dst(&o[0])?;
                let a = self.src(&o[1], ty)?;
                let mask = self.src(&o[2], Ty::B32)?;
                self.push(i, Op::Redux { k, d, a, mask }, Class::Shuffle)
            }
        }
    }
}
