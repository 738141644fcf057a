//! The execution engine: runs one cluster of CTAs (one CTA without a cluster shape) to
//! completion, the warps of all its CTAs in one loop (`cluster.rs` for what CTAs share).
//!
//! Scheduling model (independent thread scheduling, executed warp-wide where possible): every
//! lane has its own PC. A warp runs one *group* at a time, the lanes converged at the lowest PC
//! among its runnable lanes; the group executes an instruction for all its lanes at once (the
//! common, fast case is the full warp). A branch that splits the group writes the lanes' PCs and
//! re-picks the lowest-PC group; when the running group reaches the PC where other lanes wait,
//! they merge back in. Collectives block: a group reaching `shfl`/`vote`/`mma`/`ldmatrix`/
//! `bar.warp.sync` without all required lanes waits until the others arrive; `bar.sync` waits on
//! a [`Waitable`] (`sync.rs`), and so does `mbarrier.try_wait` (`mbarrier.rs`). When nothing
//! can run, the stall is resolved: in-flight bulk/TMA copies land or mbarrier waits time out
//! (`mbarrier.rs`), a waitable missing only exited threads completes (with a finding), a
//! collective whose members cannot all arrive is forced (with a finding), and otherwise the CTA
//! is reported as deadlocked and abandoned. Nothing ever hangs.

mod async_copy;
mod bulk;
pub(crate) mod cluster;
mod collective;
mod compare;
mod convert;
mod float;
mod int;
mod lanes;
mod mbarrier;
mod mem;
mod sfu;
mod sync;
mod tensor;
mod wgmma;

use super::counters::RawCounters;
use super::findings::{FindingKind, FindingSink};
use super::memory::GlobalMemory;
use super::program::*;
use super::shared::SharedMem;
use sync::{Waitable, Waitables};
pub(crate) use wgmma::FenceWatch;

/// Everything shared by all CTAs of one launch.
pub(crate) struct LaunchCtx<'a> {
    pub prog: &'a Program,
    pub gmem: &'a GlobalMemory,
    /// This launch's epoch for the cross-CTA global write check (`memory.rs`, `WriterTag`).
    pub epoch: u32,
    pub params: &'a [u8],
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Cluster shape (CTAs per cluster in each dimension; divides `grid`).
    pub cluster: [u32; 3],
    /// The launch named a cluster shape (`%is_explicit_cluster`).
    pub explicit_cluster: bool,
    pub dyn_smem: u32,
    /// Constant registers with module-variable relocations applied.
    pub consts: &'a [(R, u64)],
    pub max_warp_insts: u64,
    pub check_races: bool,
    pub check_uninit: bool,
    /// The registers the `wgmma.fence` check watches (`None`: the program has no wgmma).
    pub fence_watch: Option<&'a wgmma::FenceWatch>,
    /// The CTAs to trace for the timing model (`timing/trace.rs`); `None` in plain launches.
    pub trace: Option<&'a crate::timing::trace::TraceSink>,
}

/// One in-flight `cp.async` of one lane.
#[derive(Clone)]
pub(crate) struct CpRec {
    /// Commit-group sequence number, or `u32::MAX` while uncommitted.
    pub group: u32,
    pub dst: u32,
    pub len: u8,
    pub data: [u8; 16],
}

#[derive(Default, Clone)]
pub(crate) struct LaneCp {
    pub recs: Vec<CpRec>,
    pub committed: u32,
}

pub(crate) struct Warp {
    pub id: u32,
    pub regs: Vec<u64>,
    pub present: u32,
    pub exited: u32,
    pub bar_wait: u32,
    pub coll_wait: u32,
    pub pcs: [u32; 32],
    /// What each lane in `bar_wait` waits on.
    pub waiting_on: [Waitable; 32],
    pub group: u32,
    pub gpc: u32,
    pub merge_pc: u32,
    /// Set when a stall resolution forces the current group through a collective.
    pub force: bool,
    pub local: Vec<u8>,
    pub cp: Vec<LaneCp>,
    /// In-flight `wgmma.mma_async` and commit groups (`wgmma.rs`).
    pub wg: wgmma::WgState,
}

/// Per-CTA state besides the warps.
pub(crate) struct Env<'a> {
    pub ctx: &'a LaunchCtx<'a>,
    pub cta: [u32; 3],
    /// Rank in the cluster (`%cluster_ctarank`).
    pub rank: u32,
    /// The other CTAs of the cluster, in rank order, lent while one of this CTA's warps runs
    /// (`cluster.rs`); empty otherwise.
    pub peers: Vec<Env<'a>>,
    /// The barrier.cluster state (used in the rank-0 CTA only).
    pub cbar: cluster::ClusterBar,
    /// Per thread, its barrier.cluster arrivals and waits so far.
    pub cbar_counts: Vec<[u32; 2]>,
    /// Every thread exited: peers may no longer touch this shared memory.
    pub finished: bool,
    /// A completed mbarrier phase had an arrival from a peer CTA: the scheduler starts a new
    /// race-checker epoch in every CTA of the cluster (`cluster.rs`).
    pub cluster_epoch: bool,
    pub smem: SharedMem,
    pub findings: FindingSink,
    pub cnt: RawCounters,
    /// Barriers and other waitables of the CTA.
    pub waits: Waitables,
    /// In-flight bulk/TMA copies and bulk async-groups (`bulk.rs`).
    pub async_proxy: bulk::AsyncProxy,
    /// Warpgroup `wgmma.mma_async` operations (`wgmma.rs`).
    pub wgmma: wgmma::Warpgroups,
    pub nthreads: u32,
    pub exited_threads: u32,
    pub abort: bool,
    pub clock: u64,
    pub local_size: u32,
    /// The instruction trace of this CTA, when the launch asked for it (`timing/trace.rs`).
    pub trace: Option<Box<crate::timing::trace::Recorder>>,
}

impl Env<'_> {
    pub fn report(
        &mut self,
        kind: FindingKind,
        pc: u32,
        tid: u32,
        addr: Option<u64>,
        other: Option<u32>,
        detail: impl FnOnce() -> String,
    ) {
        self.findings
            .report(kind, pc, self.cta, tid, addr, other, detail);
    }
}

#[inline]
fn lanes(m: u32) -> impl Iterator<Item = usize> {
    let mut m = m;
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            Some(l)
        }
    })
}

impl Warp {
    #[inline]
    pub fn live(&self) -> u32 {
        self.present & !self.exited
    }

    #[inline]
    pub fn r(&self, r: R, lane: usize) -> u64 {
        self.regs[r as usize * 32 + lane]
    }

    #[inline]
    pub fn set(&mut self, r: R, lane: usize, v: u64) {
        self.regs[r as usize * 32 + lane] = v;
    }

    #[inline]
    fn pred_mask(&self, r: R, neg: bool) -> u32 {
        let s = &self.regs[r as usize * 32..r as usize * 32 + 32];
        let mut m = 0u32;
        for (l, v) in s.iter().enumerate() {
            m |= ((*v & 1) as u32) << l;
        }
        if neg {
            !m
        } else {
            m
        }
    }

    /// Saves the running group's PC into its lanes and clears the group.
    fn park_group(&mut self) {
        for l in lanes(self.group) {
            self.pcs[l] = self.gpc;
        }
        self.group = 0;
    }

    fn update_merge_pc(&mut self) {
        let others = self.live() & !self.bar_wait & !self.group;
        self.merge_pc = lanes(others).map(|l| self.pcs[l]).min().unwrap_or(u32::MAX);
    }

    /// Picks the lowest-PC group of runnable lanes; false if none can run.
    fn pick_group(&mut self) -> bool {
        let cand = self.live() & !self.bar_wait & !self.coll_wait;
        let Some(min) = lanes(cand).map(|l| self.pcs[l]).min() else {
            self.group = 0;
            return false;
        };
        let mut g = 0u32;
        for l in lanes(self.live() & !self.bar_wait) {
            if self.pcs[l] == min {
                g |= 1 << l;
            }
        }
        self.coll_wait &= !g;
        self.group = g;
        self.gpc = min;
        self.update_merge_pc();
        true
    }

    fn merge(&mut self) {
        for l in lanes(self.live() & !self.bar_wait & !self.group) {
            if self.pcs[l] == self.gpc {
                self.group |= 1 << l;
                self.coll_wait &= !(1 << l);
            }
        }
        self.update_merge_pc();
    }

    /// Parks `lanes_` at `pc`, waiting on `wt` until it completes.
    fn wait_on(&mut self, lanes_: u32, pc: u32, wt: Waitable) {
        for l in lanes(lanes_) {
            self.pcs[l] = pc;
            self.waiting_on[l] = wt;
        }
        self.bar_wait |= lanes_;
    }

    /// Ends the current instruction for the group: all its lanes continue at `pc + 1`.
    #[inline]
    fn next(&mut self) {
        self.gpc += 1;
    }

    /// The lanes in `stay` continue at the next instruction; the rest of the group left it.
    fn continue_with(&mut self, stay: u32) {
        self.group = stay;
        if stay != 0 {
            self.gpc += 1;
            self.update_merge_pc();
        }
    }
}

const SLICE: u64 = 20_000;

/// Builds the environment and warps of the CTA `cta`, rank `rank` of its cluster.
fn new_cta<'a>(ctx: &'a LaunchCtx<'a>, cta: [u32; 3], rank: u32) -> (Env<'a>, Vec<Warp>) {
    let prog = ctx.prog;
    let [bx, by, bz] = ctx.block;
    let nthreads = bx * by * bz;
    let nwarps = nthreads.div_ceil(32);
    let total_smem = prog.dyn_smem_offset as usize + ctx.dyn_smem as usize;
    let total_smem = if ctx.dyn_smem == 0 {
        prog.static_smem as usize
    } else {
        total_smem
    };
    let mut smem = SharedMem::new(total_smem);
    smem.check_races = ctx.check_races;
    smem.check_uninit = ctx.check_uninit;
    let mut cnt = RawCounters::new(prog.insts.len());
    cnt.ctas = 1;
    cnt.threads = nthreads as u64;
    let env = Env {
        ctx,
        cta,
        rank,
        peers: Vec::new(),
        cbar: Default::default(),
        cbar_counts: vec![[0, 0]; nthreads as usize],
        finished: false,
        cluster_epoch: false,
        smem,
        findings: FindingSink::default(),
        cnt,
        waits: Waitables::new(),
        async_proxy: bulk::AsyncProxy::default(),
        wgmma: wgmma::Warpgroups::new(nwarps),
        nthreads,
        exited_threads: 0,
        abort: false,
        clock: 0,
        local_size: prog.local_size,
        trace: ctx
            .trace
            .and_then(|t| t.recorder_for(ctx.grid, cta, nwarps)),
    };
    let warps = (0..nwarps)
        .map(|w| new_warp(ctx, w, nthreads, nwarps, cta, total_smem as u64))
        .collect();
    (env, warps)
}

/// Runs `f` on the environment of the CTA at `c` with the other CTAs of the cluster lent to
/// its `peers` (`cluster.rs`).
fn with_peers<'a, T>(envs: &mut Vec<Env<'a>>, c: usize, f: impl FnOnce(&mut Env<'a>) -> T) -> T {
    let mut me = envs.remove(c);
    me.peers = std::mem::take(envs);
    let out = f(&mut me);
    *envs = std::mem::take(&mut me.peers);
    envs.insert(c, me);
    out
}

/// Releases the waiters of every completed waitable in every CTA of the cluster; a phase a
/// peer arrived on starts a new race-checker epoch everywhere (`cluster.rs`).
fn drain_completions(envs: &mut [Env], warps: &mut [Vec<Warp>]) {
    loop {
        let mut any = false;
        for (env, ws) in envs.iter_mut().zip(warps.iter_mut()) {
            while let Some(wt) = env.waits.take_completion() {
                sync::release(ws, env, wt);
                any = true;
            }
        }
        if envs.iter().any(|e| e.cluster_epoch) {
            for e in envs.iter_mut() {
                e.cluster_epoch = false;
                e.smem.next_epoch();
            }
        }
        if !any {
            break;
        }
    }
}

/// Runs one cluster (its first CTA at `first`; one CTA for launches without a cluster shape)
/// and returns its findings and counters.
pub(crate) fn run_cluster(ctx: &LaunchCtx, first: [u32; 3]) -> (FindingSink, RawCounters) {
    let [cx, cy, cz] = ctx.cluster;
    let n = cx * cy * cz;
    let (mut envs, mut warps): (Vec<Env>, Vec<Vec<Warp>>) = (0..n)
        .map(|r| {
            let at = [r % cx, (r / cx) % cy, r / (cx * cy)];
            let cta = [first[0] + at[0], first[1] + at[1], first[2] + at[2]];
            new_cta(ctx, cta, r)
        })
        .unzip();
    'run: loop {
        let mut progressed = false;
        let mut all_done = true;
        for c in 0..envs.len() {
            for wi in 0..warps[c].len() {
                if warps[c][wi].live() == 0 {
                    continue;
                }
                all_done = false;
                let w = &mut warps[c][wi];
                if with_peers(&mut envs, c, |env| run_warp(w, env)) > 0 {
                    progressed = true;
                }
                drain_completions(&mut envs, &mut warps);
                if envs.iter().any(|e| e.abort) {
                    break 'run;
                }
            }
            if !envs[c].finished && warps[c].iter().all(|w| w.live() == 0) {
                envs[c].finished = true;
            }
        }
        if all_done {
            break;
        }
        if !progressed && !resolve_cluster_stall(&mut envs, &mut warps) {
            break;
        }
    }
    let mut sink = FindingSink::default();
    let mut cnt = RawCounters::new(ctx.prog.insts.len());
    for (mut env, ws) in envs.into_iter().zip(warps) {
        for w in ws {
            recycle(w.regs);
        }
        if let (Some(t), Some(rec)) = (ctx.trace, env.trace.take()) {
            t.push(ctx.grid, rec.finish(&env.cnt));
        }
        sink.merge(env.findings);
        cnt.merge(&env.cnt);
    }
    (sink, cnt)
}

thread_local! {
    /// Register files of finished warps, reused by the next CTA on this host thread: a kernel
    /// can declare thousands of registers, and fresh zeroed allocations of that size cost page
    /// faults on every CTA.
    static REG_POOL: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_regs(len: usize) -> Vec<u64> {
    let mut v = REG_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    v.clear();
    v.resize(len, 0);
    v
}

fn recycle(v: Vec<u64>) {
    REG_POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < 64 {
            p.push(v);
        }
    });
}

fn new_warp(
    ctx: &LaunchCtx,
    w: u32,
    nthreads: u32,
    nwarps: u32,
    cta: [u32; 3],
    total_smem: u64,
) -> Warp {
    let prog = ctx.prog;
    let mut regs = take_regs(prog.nregs * 32);
    for &(r, v) in ctx.consts {
        regs[r as usize * 32..r as usize * 32 + 32].fill(v);
    }
    let [bx, by, _] = ctx.block;
    let present = if (w + 1) * 32 <= nthreads {
        u32::MAX
    } else {
        (1u32 << (nthreads - w * 32)) - 1
    };
    for &(r, sp) in &prog.specials {
        for l in 0..32u32 {
            let t = w * 32 + l;
            let tid = [t % bx, (t / bx) % by, t / (bx * by)];
            let v: u64 = match sp {
                Special::Tid(c) => tid[c as usize] as u64,
                Special::Ntid(c) => ctx.block[c as usize] as u64,
                Special::Ctaid(c) => cta[c as usize] as u64,
                Special::Nctaid(c) => ctx.grid[c as usize] as u64,
                Special::Laneid => l as u64,
                Special::Warpid => w as u64,
                Special::Nwarpid => nwarps as u64,
                Special::LanemaskEq => 1u64 << l,
                Special::LanemaskLt => (1u64 << l) - 1,
                Special::LanemaskLe => (1u64 << (l + 1)) - 1,
                Special::LanemaskGt => (u32::MAX as u64) & !((1u64 << (l + 1)) - 1),
                Special::LanemaskGe => (u32::MAX as u64) & !((1u64 << l) - 1),
                Special::DynSmem => ctx.dyn_smem as u64,
                Special::TotalSmem => total_smem,
                Special::Zero => 0,
                Special::Clusterid(c) => (cta[c as usize] / ctx.cluster[c as usize]) as u64,
                Special::Nclusterid(c) => (ctx.grid[c as usize] / ctx.cluster[c as usize]) as u64,
                Special::ClusterCtaid(c) => (cta[c as usize] % ctx.cluster[c as usize]) as u64,
                Special::ClusterNctaid(c) => ctx.cluster[c as usize] as u64,
                Special::ClusterCtarank => {
                    let [cx, cy, _] = ctx.cluster;
                    let at = [cta[0] % cx, cta[1] % cy, cta[2] % ctx.cluster[2]];
                    (at[0] + cx * (at[1] + cy * at[2])) as u64
                }
                Special::ClusterNctarank => ctx.cluster.iter().product::<u32>() as u64,
                Special::IsExplicitCluster => ctx.explicit_cluster as u64,
            };
            regs[r as usize * 32 + l as usize] = v;
        }
    }
    Warp {
        id: w,
        regs,
        present,
        exited: 0,
        bar_wait: 0,
        coll_wait: 0,
        pcs: [0; 32],
        waiting_on: [Waitable::Barrier(0); 32],
        group: 0,
        gpc: 0,
        merge_pc: u32::MAX,
        force: false,
        local: vec![0; prog.local_size as usize * 32],
        cp: vec![LaneCp::default(); 32],
        wg: Default::default(),
    }
}

/// Executes a lane-parallel register op for the lanes in `active` (not empty).
#[inline(always)]
fn exec_lane_op(op: &LaneOp, regs: &mut [u64], active: u32) {
    match *op {
        LaneOp::Bin { k, d, a, b } => int::exec_bin(k, regs, active, d, a, b),
        LaneOp::Un { k, d, a } => int::exec_un(k, regs, active, d, a),
        LaneOp::Tern { k, d, a, b, c } => int::exec_tern(k, regs, active, d, a, b, c),
        LaneOp::FBin {
            op,
            ty,
            mods,
            d,
            a,
            b,
        } => float::exec_fbin(op, ty, mods, regs, active, d, a, b),
        LaneOp::FUn { k, ty, ftz, d, a } => float::exec_fun(k, ty, ftz, regs, active, d, a),
        LaneOp::Fma {
            ty,
            mods,
            d,
            a,
            b,
            c,
        } => float::exec_fma(ty, mods, regs, active, d, a, b, c),
        LaneOp::SlctF32 { ftz, d, a, b, c } => float::exec_slct_f32(ftz, regs, active, d, a, b, c),
        LaneOp::Sfu { k, d, a } => sfu::exec_sfu(k, regs, active, d, a),
        LaneOp::Cvt { k, d, a } => convert::exec_cvt(&k, regs, active, d, a),
        LaneOp::CvtPack {
            fmt,
            rnd,
            relu,
            satfinite,
            d,
            a,
            b,
        } => convert::exec_cvt_pack(fmt, rnd, relu, satfinite, regs, active, d, a, b),
        LaneOp::Cvta {
            to_space,
            window,
            dmask,
            d,
            a,
        } => convert::exec_cvta(to_space, window, dmask, regs, active, d, a),
    }
}

/// Executes a per-lane memory access (`ld`, `st`, `atom`/`red`, `cp.async`) for the lanes in
/// `active`.
#[inline(always)]
fn exec_memory_op(w: &mut Warp, env: &mut Env, pc: u32, active: u32, op: &Op) {
    match op {
        Op::Ld(op) => mem::exec_ld(w, env, pc, active, op),
        Op::St(op) => mem::exec_st(w, env, pc, active, op),
        Op::Atom(op) => mem::exec_atom(w, env, pc, active, op),
        Op::CpAsync(op) => async_copy::exec_cp_async(w, env, pc, active, op),
        _ => unreachable!("not a memory op: {op:?}"),
    }
}

/// Nothing could run in any CTA of the cluster: resolve the stall or give up on the cluster.
/// Returns false to stop.
fn resolve_cluster_stall(envs: &mut Vec<Env>, warps: &mut [Vec<Warp>]) -> bool {
    // In-flight bulk copies land (in every CTA: a multicast completes on each), then mbarrier
    // try_waits time out, then the CTA-local resolutions.
    let mut landed = false;
    for c in 0..envs.len() {
        landed |= with_peers(envs, c, bulk::land_all);
    }
    let mut resolved = landed;
    for (c, ws) in warps.iter_mut().enumerate() {
        if resolved {
            break;
        }
        resolved = with_peers(envs, c, |env| mbarrier::time_out(ws, env));
    }
    if !resolved {
        resolved = with_peers(envs, 0, cluster::release_if_only_exited_missing);
    }
    for (c, ws) in warps.iter_mut().enumerate() {
        if resolved {
            break;
        }
        resolved = with_peers(envs, c, |env| resolve_stall(ws, env));
    }
    if resolved {
        drain_completions(envs, warps);
        return true;
    }
    let waiting: Vec<String> = envs.iter().flat_map(sync::describe_pending).collect();
    let any_stuck = warps.iter().flatten().any(|w| w.bar_wait & w.live() != 0);
    for (c, (env, ws)) in envs.iter_mut().zip(warps.iter()).enumerate() {
        let stuck = ws.iter().find_map(|w| {
            lanes(w.bar_wait & w.live())
                .next()
                .map(|l| (w.pcs[l], w.id * 32 + l as u32))
        });
        // Without a parked lane anywhere, the first CTA carries the report.
        let stuck = stuck.or((!any_stuck && c == 0).then_some((0, 0)));
        if let Some((pc, tid)) = stuck {
            env.report(FindingKind::Deadlock, pc, tid, None, None, || {
                format!(
                    "no thread can make progress ({}); CTA abandoned",
                    waiting.join(", ")
                )
            });
        }
        env.abort = true;
    }
    false
}

/// The CTA-local stall resolutions after landing and time-outs; true when one applied.
fn resolve_stall(warps: &mut [Warp], env: &mut Env) -> bool {
    // A waitable that only misses exited threads.
    if sync::release_if_only_exited_missing(warps, env) {
        return true;
    }
    // A warp collective whose members cannot all arrive: force the lowest-PC waiting group.
    for w in warps.iter_mut() {
        let waiting = w.coll_wait & w.live();
        if waiting == 0 {
            continue;
        }
        let pc = lanes(waiting).map(|l| w.pcs[l]).min().unwrap();
        let mut g = 0u32;
        for l in lanes(waiting) {
            if w.pcs[l] == pc {
                g |= 1 << l;
            }
        }
        let others: Vec<String> = lanes(w.live() & !g)
            .map(|l| {
                let at = env
                    .ctx
                    .prog
                    .insts
                    .get(w.pcs[l] as usize)
                    .map(|i| i.line)
                    .unwrap_or(0);
                format!("lane {l} at line {at}")
            })
            .take(4)
            .collect();
        let first = w.id * 32 + g.trailing_zeros();
        let exited = w.present & w.exited;
        env.report(FindingKind::DivergentCollective, pc, first, None, None, || {
            format!(
                "lanes {g:#010x} wait at a warp collective the other lanes never reach ({}); exited lanes {exited:#010x}",
                others.join(", ")
            )
        });
        w.coll_wait &= !g;
        w.group = g;
        w.gpc = pc;
        w.force = true;
        w.update_merge_pc();
        return true;
    }
    // A warpgroup operation some warp can never issue.
    wgmma::force_at_stall(warps, env)
}

/// Runs the warp until it stalls, exits, finishes its time slice or completes a barrier.
/// Returns the number of warp-instructions executed.
fn run_warp(w: &mut Warp, env: &mut Env) -> u64 {
    let prog = env.ctx.prog;
    let insts = &prog.insts[..];
    let mut n = 0u64;
    loop {
        if w.group == 0 && !w.pick_group() {
            break;
        }
        if w.gpc == w.merge_pc {
            w.merge();
        }
        if n >= SLICE || env.waits.has_completion() || env.abort {
            w.park_group();
            break;
        }
        let pc = w.gpc;
        let inst = &insts[pc as usize];
        let g = w.group;
        let active = if inst.guard == NONE {
            g
        } else {
            w.pred_mask(inst.guard, inst.guard_neg) & g
        };
        n += 1;
        env.clock += 1;
        env.cnt.per_pc[pc as usize] += 1;
        env.cnt.thread_instructions += active.count_ones() as u64;
        if env.trace.is_some() {
            crate::timing::trace::record(w, env, pc, inst, active);
        }
        if w.wg.active() {
            wgmma::check_access(w, env, pc, &inst.op, active);
        }
        if let Some(fw) = env.ctx.fence_watch {
            if active != 0 && fw.watches(pc) {
                wgmma::touch(w, fw, pc);
            }
        }
        if env.clock > env.ctx.max_warp_insts {
            let limit = env.ctx.max_warp_insts;
            env.report(
                FindingKind::InstructionLimit,
                pc,
                w.id * 32 + g.trailing_zeros(),
                None,
                None,
                || format!("CTA exceeded {limit} warp-instructions; abandoned"),
            );
            env.abort = true;
            break;
        }
        match inst.op {
            Op::Mov { d, a, mask } => {
                lanes::lanes1(&mut w.regs, active, d, a, |x| x & mask);
                w.next();
            }
            Op::Lane(ref op) => {
                if active != 0 {
                    exec_lane_op(op, &mut w.regs, active);
                }
                w.next();
            }
            Op::Bfi {
                w: width,
                d,
                a,
                b,
                c,
                e,
            } => {
                int::exec_bfi(width, &mut w.regs, active, d, [a, b, c, e]);
                w.next();
            }
            Op::Setp {
                ty,
                cmp,
                out,
                d,
                dn,
                a,
                b,
                comb,
            } => {
                compare::exec_setp(w, active, ty, cmp, out, [d, dn, a, b], comb);
                w.next();
            }
            Op::Pack {
                d,
                parts,
                n: np,
                bits,
            } => {
                let m = lanes::mask(bits);
                for l in lanes(active) {
                    let mut v = 0u64;
                    for (k, p) in parts.iter().take(np as usize).enumerate() {
                        v |= (w.r(*p, l) & m) << (k as u32 * bits as u32);
                    }
                    w.set(d, l, v);
                }
                w.next();
            }
            Op::Unpack { ds, n: np, bits, a } => {
                let m = lanes::mask(bits);
                for l in lanes(active) {
                    let v = w.r(a, l);
                    for (k, d) in ds.iter().take(np as usize).enumerate() {
                        if *d != NONE {
                            w.set(*d, l, (v >> (k as u32 * bits as u32)) & m);
                        }
                    }
                }
                w.next();
            }
            Op::Ld(_) | Op::St(_) | Op::Atom(_) | Op::CpAsync(_) => {
                exec_memory_op(w, env, pc, active, &inst.op);
                w.next();
            }
            Op::CpCommit => {
                for l in lanes(active) {
                    let lc = &mut w.cp[l];
                    let gid = lc.committed;
                    for r in lc.recs.iter_mut().filter(|r| r.group == u32::MAX) {
                        r.group = gid;
                    }
                    lc.committed += 1;
                }
                w.next();
            }
            Op::CpWait { n: keep } => {
                for l in lanes(active) {
                    let target = w.cp[l].committed.saturating_sub(keep);
                    async_copy::complete_cp(w, env, pc, l, target);
                }
                w.next();
            }
            Op::Bra { target } => {
                if active == g {
                    w.gpc = target;
                    if target > w.merge_pc {
                        // Other lanes wait at a lower PC: let them catch up (min-PC scheduling).
                        w.park_group();
                    }
                } else if active == 0 {
                    w.next();
                } else {
                    for l in lanes(active) {
                        w.pcs[l] = target;
                    }
                    for l in lanes(g & !active) {
                        w.pcs[l] = pc + 1;
                    }
                    w.group = 0;
                }
            }
            Op::Exit => {
                for l in lanes(active) {
                    async_copy::complete_cp(w, env, pc, l, u32::MAX);
                }
                w.exited |= active;
                env.exited_threads += active.count_ones();
                if w.live() == 0 {
                    wgmma::abandon(w, env);
                }
                w.continue_with(g & !active);
            }
            Op::Trap => {
                if active != 0 {
                    env.report(
                        FindingKind::Trap,
                        pc,
                        w.id * 32 + active.trailing_zeros(),
                        None,
                        None,
                        || "trap executed; kernel aborted".to_string(),
                    );
                    env.abort = true;
                    break;
                }
                w.next();
            }
            Op::Bar { id, count, arrive } => {
                if active == 0 {
                    w.next();
                    continue;
                }
                sync::exec_bar(w, env, pc, active, id, count, arrive);
            }
            Op::BarWarp { mask } => {
                if collective::ready(w, env, pc, active, mask) {
                    w.next();
                }
            }
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b,
                c,
                mask,
            } => {
                if collective::ready(w, env, pc, active, mask) {
                    collective::shfl(w, active, mode, d, p, a, b, c);
                    w.next();
                }
            }
            Op::Vote {
                mode,
                d,
                a,
                neg,
                mask,
            } => {
                if collective::ready(w, env, pc, active, mask) {
                    collective::vote(w, active, mode, d, a, neg);
                    w.next();
                }
            }
            Op::Match { all, d, p, a, mask } => {
                if collective::ready(w, env, pc, active, mask) {
                    collective::match_sync(w, active, all, d, p, a);
                    w.next();
                }
            }
            Op::Redux { k, d, a, mask } => {
                if collective::ready(w, env, pc, active, mask) {
                    collective::redux(w, active, k, d, a);
                    w.next();
                }
            }
            Op::Elect { d, p, mask } => {
                if collective::ready(w, env, pc, active, mask) {
                    collective::elect(w, active, d, p, mask);
                    w.next();
                }
            }
            Op::Activemask { d } => {
                for l in lanes(active) {
                    w.set(d, l, g as u64);
                }
                w.next();
            }
            Op::Mma(ref op) => {
                if collective::ready_aligned(w, env, pc, active) {
                    tensor::mma(w, env, op);
                    w.next();
                }
            }
            Op::Ldmatrix(ref op) => {
                if collective::ready_aligned(w, env, pc, active) {
                    tensor::exec_ldmatrix(w, env, pc, op);
                    w.next();
                }
            }
            Op::Stmatrix(ref op) => {
                if collective::ready_aligned(w, env, pc, active) {
                    tensor::exec_stmatrix(w, env, pc, op);
                    w.next();
                }
            }
            Op::Wgmma(ref op) => {
                if collective::ready_aligned(w, env, pc, active) {
                    wgmma::exec_wgmma(w, env, pc, op);
                    w.next();
                }
            }
            Op::WgmmaFence => {
                // Orders the warp's register accesses before its next wgmma (the check of
                // `wgmma.rs` counts fences).
                if collective::ready_aligned(w, env, pc, active) {
                    wgmma::fence(w);
                    w.next();
                }
            }
            Op::WgmmaCommit => {
                if collective::ready_aligned(w, env, pc, active) {
                    wgmma::commit(w);
                    w.next();
                }
            }
            Op::WgmmaWait { n: keep } => {
                if collective::ready_aligned(w, env, pc, active) {
                    if wgmma::wait(w, env, keep) {
                        w.next();
                    } else {
                        // Some operation it retires misses a warp's issue: block until the
                        // warpgroup executes it (`wgmma::on_complete`).
                        w.wait_on(g, pc, Waitable::Wgmma(w.id / 4));
                        w.continue_with(0);
                        w.update_merge_pc();
                    }
                }
            }
            Op::Clock { d } => {
                let c = env.clock;
                for l in lanes(active) {
                    w.set(d, l, c);
                }
                w.next();
            }
            Op::Async(AsyncOp::ClusterBar { wait }) => cluster::exec_bar(w, env, pc, active, wait),
            Op::Async(op) => bulk::exec_async(w, env, pc, active, op),
            Op::Nop => w.next(),
        }
    }
    if env.trace.is_some() {
        crate::timing::trace::flush(env);
    }
    n
}
