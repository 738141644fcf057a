//! Barrier and synchronisation family: `bar`/`barrier` (`.sync`, `.arrive`, named barriers with
//! a thread count, `.aligned`), `bar.warp.sync`, memory fences (`membar`, `fence`: no-ops in the
//! sequentially consistent model) and `nanosleep`/`pmevent`.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::Ty;
use super::quals::{is_ignorable_mem_qual, Quals};
use super::Lowerer;

impl Lowerer {
    pub(super) fn lower_sync(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let base = q.base();
        let o = &i.operands;
        match base {
            "bar" | "barrier" => {
                if q.has("cluster") {
                    // `barrier.cluster.arrive{.release,.relaxed}{.aligned}` /
                    // `barrier.cluster.wait{.acquire}{.aligned}` (exec/cluster.rs).
                    q.has("aligned");
                    let wait = match q.one_of(&[("arrive", false), ("wait", true)]) {
                        Some(w) => w,
                        None => return self.unsupported(&i.opcode),
                    };
                    q.ignore(|s| matches!(s, "release" | "relaxed" | "acquire"));
                    if !i.operands.is_empty() {
                        return self.bad("barrier.cluster takes no operands");
                    }
                    return self.push(i, Op::Async(AsyncOp::ClusterBar { wait }), Class::Sync);
                }
                if q.has("warp") {
                    if !q.has("sync") {
                        return self.unsupported(&i.opcode);
                    }
                    self.ops(i, 1)?;
                    let mask = self.src(&o[0], Ty::B32)?;
                    return self.push(i, Op::BarWarp { mask }, Class::Sync);
                }
                // `.cta` is the default (and only) scope of these barriers.
                q.has("cta");
                q.has("aligned");
                let arrive = q.has("arrive");
                if !arrive {
                    q.has("sync");
                }
                self.ops(i, 1)?;
                let id = self.src(&o[0], Ty::U32)?;
                let count = if o.len() > 1 {
                    self.src(&o[1], Ty::U32)?
                } else {
                    NONE
                };
                self.push(i, Op::Bar { id, count, arrive }, Class::Sync)
            }
            "membar" => {
                q.one_of(&[("cta", ()), ("gl", ()), ("sys", ())]);
                self.push(i, Op::Nop, Class::Sync)
            }
            "fence" if q.at(0) == Some("proxy") && q.at(1) == Some("async") => {
                // `fence.proxy.async{.shared::cta,.shared::cluster,.global}`: orders the
                // generic proxy before the async proxy (the plain form covers every space).
                q.has("proxy");
                q.has("async");
                let global = q.has("global");
                let shared = q
                    .take(|s| {
                        matches!(s, "shared" | "shared::cta" | "shared::cluster").then_some(())
                    })
                    .is_some();
                let op = AsyncOp::FenceProxyAsync {
                    shared: shared || !global,
                };
                self.push(i, Op::Async(op), Class::Sync)
            }
            "fence" => {
                // Thread fences order memory; the model is sequentially consistent. Proxy
                // fences order the generic and async proxies, which one memory models as one.
                q.ignore(|s| {
                    is_ignorable_mem_qual(s)
                        || matches!(
                            s,
                            "proxy"
                                | "async"
                                | "alias"
                                | "mbarrier_init"
                                | "global"
                                | "shared::cta"
                                | "shared::cluster"
                                | "shared"
                        )
                });
                self.push(i, Op::Nop, Class::Sync)
            }
            "griddepcontrol" => {
                // Programmatic dependent launch: with one launch at a time there is no
                // prerequisite grid to wait for and no dependent grid to release.
                if q.one_of(&[("wait", ()), ("launch_dependents", ())])
                    .is_none()
                {
                    return self.unsupported(&i.opcode);
                }
                self.push(i, Op::Nop, Class::Sync)
            }
            "setmaxnreg" => {
                // A register-allocation hint for warpgroups; the emulator's register files are
                // unbounded. The operand must still be the immediate count the ISA requires.
                if q.one_of(&[("inc", ()), ("dec", ())]).is_none() {
                    return self.unsupported(&i.opcode);
                }
                q.has("sync");
                q.has("aligned");
                q.types();
                self.ops(i, 1)?;
                match i.operands[0] {
                    Operand::Int(n) if (24..=256).contains(&n) && n % 8 == 0 => {}
                    _ => {
                        return self.bad("setmaxnreg needs an immediate in 24..=256, multiple of 8")
                    }
                }
                self.push(i, Op::Nop, Class::Other)
            }
            _ => {
                // nanosleep / pmevent
                q.types();
                q.has("mask");
                self.push(i, Op::Nop, Class::Other)
            }
        }
    }
}
