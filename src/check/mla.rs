//! The MLA decode checker (issue 23 item 3): random cases drawn by the paged decode's generator
//! ([`DecodeCase`]: random page tables with shuffled pages, garbage table entries past each
//! length, NaN in every unread cache slot and spare page, random lengths, varlen, masks,
//! modifiers, sinks, split policies) with one latent KV head of 576 dims, 16-bit or FP8 pages, run
//! by the MLA kernel and judged by the paged decode's judge ([`check_outputs`]) against the
//! candle reference over the gathered pages, the value pool being the latent pool with its 64
//! rope dims zeroed (so the reference's 576-dim O is the MLA O followed by 64 zeros).

use super::decode::{check_outputs, BuiltCase, DecodeCase};
use super::judge::Judgement;
use crate::backend::emulator::EmulatorBackend;
use crate::common::dtype::DType;
use crate::common::error::Result;
use crate::common::geometry::Strides;
use crate::common::target::KernelTarget;
use crate::host::device::HarnessBackend;
use crate::host::runner::{self, DecodeRun};
use crate::ops::decode::{DecodeProblem, KvCacheDType, QueryLayout};
use crate::ops::mla_decode::{MlaDecodePlan, MlaDecodeProblem, MLA_D_QK, MLA_D_V};
use crate::reference::paged::{item_rows, row_offset};
use rand::Rng;

/// A random MLA case: `hq` query heads on the one latent head, caches of up to `max_len` keys.
/// Emulator cost grows with hq x keys x 1088 mma columns: keep CI cases small.
pub fn random_case(rng: &mut impl Rng, heads: &[usize], max_len: usize) -> DecodeCase {
    let mut c = DecodeCase::random_on(
        rng,
        Some(KernelTarget::Ampere),
        &[DType::F16, DType::Bf16],
        &[MLA_D_QK],
        max_len,
    );
    c.head_dim = MLA_D_QK;
    // One latent pool serves as K and V: the decode view's V rows are the K rows.
    c.head_dim_v = MLA_D_QK;
    c.num_heads_kv = 1;
    c.group = heads[rng.random_range(0..heads.len())];
    // FP8 latent pages (either format) in a quarter of the cases.
    c.kv_dtype = match rng.random_range(0..8) {
        0 => KvCacheDType::Fp8E4M3,
        1 => KvCacheDType::Fp8E5M2,
        _ => KvCacheDType::Same,
    };
    c.head_major_pages = false;
    c
}

/// [`random_case`] for `target`: on Hopper, mostly cases the sm_90a kernel serves (16-bit pages
/// of 64 or 128 keys, so the 64-key TMA tiles meet page ends, spare slots and the cache's end
/// inside a page) and one in eight it leaves to the sm_80 kernel (FP8 pages or another page
/// size), so both of Hopper's paths are drawn.
pub fn random_case_for(
    rng: &mut impl Rng,
    target: KernelTarget,
    heads: &[usize],
    max_len: usize,
) -> DecodeCase {
    let mut c = random_case(rng, heads, max_len);
    if target == KernelTarget::Hopper {
        c.target = target;
        if rng.random_range(0..8) != 0 {
            c.kv_dtype = KvCacheDType::Same;
            c.page_size = if rng.random_bool(0.75) { 64 } else { 128 };
        }
    }
    c
}

/// The MLA view of a built decode case (q, pool and table as built; o with 512 dims).
pub fn mla_problem(p: &DecodeProblem) -> MlaDecodeProblem {
    let (hq, d_v) = (p.num_heads_q, MLA_D_V as i64);
    let sq = match p.queries {
        QueryLayout::Padded { sq_new } => sq_new,
        QueryLayout::Varlen { .. } => 1,
    };
    MlaDecodeProblem {
        dtype: p.dtype,
        batch: p.batch,
        num_heads_q: hq,
        queries: p.queries.clone(),
        q_strides: p.q_strides,
        o_strides: Strides {
            batch: sq as i64 * hq as i64 * d_v,
            row: hq as i64 * d_v,
            head: d_v,
        },
        num_pages: p.num_pages,
        page_size: p.page_size,
        cache_strides: p.k_strides,
        kv_dtype: p.kv_dtype,
        max_pages_per_seq: p.max_pages_per_seq,
        block_table_stride: p.block_table_stride,
        max_cache_len: p.max_cache_len,
        options: p.options,
        alibi: p.alibi,
        gates: p.gates,
        sinks: p.sinks,
        lse: p.lse,
        entropy: p.entropy,
    }
}

/// What one MLA case gave.
pub struct MlaOutcome {
    pub plan: MlaDecodePlan,
    pub run: DecodeRun,
    pub judgement: Judgement,
}

/// Builds, plans (`case.split`), runs on a fresh emulated device of `case.target` and judges
/// `case` (made by [`random_case`] / [`random_case_for`] or with head_dim 576, one KV head and
/// NHD pages).
pub fn run_case(case: &DecodeCase) -> Result<MlaOutcome> {
    run_case_on(&EmulatorBackend::new(case.target), case)
}

/// [`run_case`] on `backend` (an emulator or a GPU of the sm_80+ kernels).
pub fn run_case_on<B: HarnessBackend>(backend: &B, case: &DecodeCase) -> Result<MlaOutcome> {
    let built = case.build();
    let mp = mla_problem(&built.problem);
    let plan = MlaDecodePlan::new_for(backend.target(), &mp, case.split)?;
    let run = runner::mla_decode(backend, &plan, &built.inputs)?;
    let judgement = judge(&built, &mp, &run)?;
    Ok(MlaOutcome {
        plan,
        run,
        judgement,
    })
}

/// Judges an MLA run of `built` (findings and every output) through the paged decode's judge.
pub fn judge(built: &BuiltCase, mp: &MlaDecodeProblem, run: &DecodeRun) -> Result<Judgement> {
    let p = &built.problem;
    let zero = p.dtype.bits_from_f32(0.0);
    // The value pool: the latent rows (contiguous, one head) with the rope dims zeroed.
    let mut reference = BuiltCase {
        problem: p.clone(),
        inputs: built.inputs.clone(),
    };
    // FP8: the codes with the rope codes 0 (the value 0), under the pool's one scale.
    let inp = &mut reference.inputs;
    inp.v_cache = inp.k_cache.clone();
    for row in inp.v_cache.chunks_exact_mut(MLA_D_QK) {
        row[MLA_D_V..].fill(zero);
    }
    inp.v_cache_fp8 = inp.k_cache_fp8.clone();
    for row in inp.v_cache_fp8.chunks_exact_mut(MLA_D_QK) {
        row[MLA_D_V..].fill(0);
    }
    inp.v_scales = inp.k_scales.clone();
    // The kernel's O (512 dims, the MLA o layout) in the decode view's layout, rope dims 0.
    let rows = item_rows(p, built.inputs.cu_seqlens_q.as_deref());
    let total_q = rows.last().map_or(0, |r| r.1);
    let mut o = vec![zero; p.q_span(&p.o_strides) as usize];
    let mla_view = mp.as_decode();
    for r in 0..total_q {
        for h in 0..p.num_heads_q {
            let src = row_offset(&mla_view, &mp.o_strides, &rows, r, h);
            let dst = row_offset(p, &p.o_strides, &rows, r, h);
            o[dst..dst + MLA_D_V].copy_from_slice(&run.o[src..src + MLA_D_V]);
        }
    }
    let mut j = check_outputs(&reference, &o, run.lse.as_deref(), run.entropy.as_deref())?;
    j.findings = run.findings().iter().map(|f| f.to_string()).collect();
    Ok(j)
}
