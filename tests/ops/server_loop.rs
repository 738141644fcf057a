//! A server's attention calls written once, generic over the backend, as a server in this
//! crate's users' hands would write them: varlen prefill, the prompt's K/V appended to paged
//! pools, several GQA decode steps (append + split decode, planned once through
//! `PagedAttention`), and a cascade merge (prefix pages and suffix pages attended separately,
//! then merged). Run here on the emulator backend, whose device and buffers persist across the
//! calls as a GPU's do, and compared at every stage with the candle reference; the same function
//! runs on `CudaBackend` unchanged (`cuda_server_loop`, on the emulated CUDA driver without a GPU).

use flashmha::api::{
    Attention, BatchBounds, DecodeArgs, FwdArgs, KvAppendArgs, MergeArgs, PagedAttention, PagedKv,
    RowStats,
};
use flashmha::backend::emulator::EmulatorBackend;
use flashmha::backend::Backend;
use flashmha::ops::decode::KvCacheDType;
use flashmha::ops::kv_append::{AppendIndex, KvAppendPlan};
use flashmha::ops::merge::{MergePlan, MergeProblem, MergeStates, StatsLayout};
use flashmha::reference::{self, ReferenceInputs, Tolerance};
use flashmha::{AttnOptions, DType, FwdPlan, FwdShape, Heads, KernelTarget, SeqShape};
use half::f16;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// What the loop produced at each stage (host copies) and what it fed in, for the judge.
struct Trace {
    hq: usize,
    hkv: usize,
    d: usize,
    /// Per sequence, every K / V row it holds at the end ([len, hkv, d] each).
    k_hist: Vec<Vec<f16>>,
    v_hist: Vec<Vec<f16>>,
    prefill: Stage,
    steps: Vec<Stage>,
    cascade: Stage,
}

/// Head counts and head dim of a judged stage.
struct Dims {
    hq: usize,
    hkv: usize,
    d: usize,
}

/// One stage's queries, the sequence lengths its keys span, and its outputs.
struct Stage {
    q: Vec<f16>,
    /// Keys each sequence's queries attend to, and how many query rows it has.
    kv_lens: Vec<usize>,
    q_lens: Vec<usize>,
    causal: bool,
    o: Vec<f16>,
    /// `[hq, total_q]` (varlen forward layout).
    lse: Vec<f32>,
}

fn random_f16(rng: &mut impl Rng, n: usize) -> Vec<f16> {
    (0..n)
        .map(|_| f16::from_f32(rng.random_range(-1.0f32..1.0)))
        .collect()
}

fn cumsum(lens: &[usize]) -> Vec<i32> {
    std::iter::once(0)
        .chain(lens.iter().scan(0i32, |acc, &l| {
            *acc += l as i32;
            Some(*acc)
        }))
        .collect()
}

/// `[rows, heads]` -> `[heads, rows]`.
fn transpose(x: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    (0..heads)
        .flat_map(|h| (0..rows).map(move |r| x[r * heads + h]))
        .collect()
}

/// The server loop, generic over the backend. Every buffer lives on `be` between calls.
fn serve<B: Backend>(be: &B, seed: u64) -> flashmha::Result<Trace> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stream = be.stream()?;
    // GQA 8 query / 2 KV heads of d64 (f16); 16-token pages; 3 sequences whose prompts span
    // more than one page (the cascade splits off the first page as the shared prefix).
    let (hq, hkv, d, page, batch, steps) = (8, 2, 64, 16, 3, 3);
    let prompt: Vec<usize> = (0..batch).map(|_| rng.random_range(17..40)).collect();
    let max_len = prompt.iter().max().unwrap() + steps;
    let max_pages_per_seq = max_len.div_ceil(page);
    let num_pages = batch * max_pages_per_seq + 2;
    // Each sequence owns shuffled pages (a real allocator's free list is in no order).
    let mut free: Vec<i32> = (0..num_pages as i32).collect();
    free.shuffle(&mut rng);
    let block_table: Vec<i32> = free[..batch * max_pages_per_seq].to_vec();
    let slot = |b: usize, pos: usize| {
        block_table[b * max_pages_per_seq + pos / page] * page as i32 + (pos % page) as i32
    };

    // Prefill: varlen causal forward with LSE over the prompts.
    let total: usize = prompt.iter().sum();
    let q = random_f16(&mut rng, total * hq * d);
    let k = random_f16(&mut rng, total * hkv * d);
    let v = random_f16(&mut rng, total * hkv * d);
    let cu = cumsum(&prompt);
    let seq = SeqShape::Varlen {
        batch,
        max_seqlen_q: *prompt.iter().max().unwrap(),
        max_seqlen_k: *prompt.iter().max().unwrap(),
        total_q: total,
        total_k: total,
    };
    let causal = AttnOptions {
        causal: true,
        ..Default::default()
    };
    let shape = FwdShape::varlen(seq, Heads::gqa(hq, hkv), d).with_options(causal);
    let fwd = FwdPlan::new_for(be.target(), DType::F16, &shape)?;
    let (dq, dk, dv) = (
        be.upload(&stream, &q)?,
        be.upload(&stream, &k)?,
        be.upload(&stream, &v)?,
    );
    let dcu = be.upload(&stream, &cu)?;
    let mut o = be.alloc_zeros::<f16>(&stream, total * hq * d)?;
    let mut lse = be.alloc_zeros::<f32>(&stream, hq * total)?;
    let args = FwdArgs::new(&dq, &dk, &dv, &mut o)
        .lse(&mut lse)
        .cu_seqlens(&dcu, &dcu);
    be.run(&stream, &fwd, args)?;
    let prefill = Stage {
        q,
        kv_lens: prompt.clone(),
        q_lens: prompt.clone(),
        causal: true,
        o: be.download(&stream, &o)?,
        lse: be.download(&stream, &lse)?,
    };

    // The paged pools, planned once for the decode steps (one new token per sequence).
    let stats = RowStats {
        lse: true,
        entropy: false,
    };
    let kv = (KvCacheDType::Same, Default::default());
    let paged = plan_f16(
        be,
        kv,
        (hq, hkv, d),
        (num_pages, page, max_pages_per_seq),
        batch,
        stats,
    )?;
    let pool_elems = num_pages * page * hkv * d;
    let mut k_cache = be.alloc_zeros::<f16>(&stream, pool_elems)?;
    let mut v_cache = be.alloc_zeros::<f16>(&stream, pool_elems)?;
    let ws_len = usize::try_from(paged.workspace_elems()).unwrap().max(1);
    let mut workspace = be.alloc_zeros::<f32>(&stream, ws_len)?;
    let d_table = be.upload(&stream, &block_table)?;

    // The prompts' K/V go into the pools: an append plan over the same pools description.
    let prompt_slots: Vec<i32> = (0..batch)
        .flat_map(|b| (0..prompt[b]).map(move |p| (b, p)))
        .map(|(b, p)| slot(b, p))
        .collect();
    let prompt_append =
        KvAppendPlan::new_for(be.target(), paged.problem(), total, AppendIndex::Slots)?;
    let d_slots = be.upload(&stream, &prompt_slots)?;
    let args = KvAppendArgs::new(&dk, &dv, &mut k_cache, &mut v_cache).slots(&d_slots);
    be.kv_append(&stream, &prompt_append, args)?;
    let mut k_hist: Vec<Vec<f16>> = (0..batch)
        .map(|b| k[cu[b] as usize * hkv * d..cu[b + 1] as usize * hkv * d].to_vec())
        .collect();
    let mut v_hist: Vec<Vec<f16>> = (0..batch)
        .map(|b| v[cu[b] as usize * hkv * d..cu[b + 1] as usize * hkv * d].to_vec())
        .collect();

    // Decode steps: append each sequence's new token, then attend over its whole cache.
    let mut lens = prompt.clone();
    let mut step_outputs = Vec::new();
    let mut o = be.alloc_zeros::<f16>(&stream, batch * hq * d)?;
    let mut lse = be.alloc_zeros::<f32>(&stream, batch * hq)?;
    // The step's device inputs live in buffers allocated once and refreshed in place, as a
    // server replaying one captured graph per step does.
    let mut dq = be.alloc_zeros::<f16>(&stream, batch * hq * d)?;
    let mut dkn = be.alloc_zeros::<f16>(&stream, batch * hkv * d)?;
    let mut dvn = be.alloc_zeros::<f16>(&stream, batch * hkv * d)?;
    let mut d_slots = be.alloc_zeros::<i32>(&stream, batch)?;
    let mut d_lens = be.alloc_zeros::<i32>(&stream, batch)?;
    for _ in 0..steps {
        let q = random_f16(&mut rng, batch * hq * d);
        let k_new = random_f16(&mut rng, batch * hkv * d);
        let v_new = random_f16(&mut rng, batch * hkv * d);
        let slots: Vec<i32> = (0..batch).map(|b| slot(b, lens[b])).collect();
        for b in 0..batch {
            lens[b] += 1;
            k_hist[b].extend_from_slice(&k_new[b * hkv * d..(b + 1) * hkv * d]);
            v_hist[b].extend_from_slice(&v_new[b * hkv * d..(b + 1) * hkv * d]);
        }
        let seqlens: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        be.copy_in(&stream, &q, &mut dq)?;
        be.copy_in(&stream, &k_new, &mut dkn)?;
        be.copy_in(&stream, &v_new, &mut dvn)?;
        be.copy_in(&stream, &slots, &mut d_slots)?;
        be.copy_in(&stream, &seqlens, &mut d_lens)?;
        let args = KvAppendArgs::new(&dkn, &dvn, &mut k_cache, &mut v_cache).slots(&d_slots);
        paged.append(be, &stream, args)?;
        let args = DecodeArgs::new(&dq, &k_cache, &v_cache, &mut o, &d_table, &d_lens)
            .lse(&mut lse)
            .workspace(&mut workspace);
        paged.decode(be, &stream, args)?;
        step_outputs.push(Stage {
            q,
            kv_lens: lens.clone(),
            q_lens: vec![1; batch],
            causal: false,
            o: be.download(&stream, &o)?,
            // The decode writes [b, hq, 1]: rows-major; the judge reads [hq, rows].
            lse: transpose(&be.download(&stream, &lse)?, batch, hq),
        });
    }

    // Cascade: the last step's queries against the first page (a shared prefix) and against
    // the rest (each sequence's own pages, through a block table starting one page later),
    // each with its LSE, then merged; the result must be the attention over every key.
    let q = step_outputs.last().unwrap().q.clone();
    let dq = be.upload(&stream, &q)?;
    let prefix_lens = vec![page as i32; batch];
    let suffix_lens: Vec<i32> = lens.iter().map(|&l| (l - page) as i32).collect();
    let suffix_table: Vec<i32> = (0..batch)
        .flat_map(|b| {
            let row = &block_table[b * max_pages_per_seq..(b + 1) * max_pages_per_seq];
            row[1..].iter().copied().chain([row[0]])
        })
        .collect();
    let mut states = Vec::new();
    for (table, seqlens) in [(&block_table, &prefix_lens), (&suffix_table, &suffix_lens)] {
        let (dt, dl) = (be.upload(&stream, table)?, be.upload(&stream, seqlens)?);
        let mut o_part = be.alloc_zeros::<f16>(&stream, batch * hq * d)?;
        let mut lse_part = be.alloc_zeros::<f32>(&stream, batch * hq)?;
        let args = DecodeArgs::new(&dq, &k_cache, &v_cache, &mut o_part, &dt, &dl)
            .lse(&mut lse_part)
            .workspace(&mut workspace);
        paged.decode(be, &stream, args)?;
        states.push((o_part, lse_part));
    }
    let merge = merge_pair_plan(be.target(), batch, hq, d)?;
    let (a, b) = (&states[0], &states[1]);
    let args = MergeArgs::pair(&a.0, &a.1, &b.0, &b.1, &mut o).lse(&mut lse);
    be.merge_states(&stream, &merge, args)?;
    let cascade = Stage {
        q,
        kv_lens: lens.clone(),
        q_lens: vec![1; batch],
        causal: false,
        o: be.download(&stream, &o)?,
        lse: transpose(&be.download(&stream, &lse)?, batch, hq),
    };
    Ok(Trace {
        hq,
        hkv,
        d,
        k_hist,
        v_hist,
        prefill,
        steps: step_outputs,
        cascade,
    })
}

/// Compares one stage with the candle reference over each sequence's first `kv_lens` keys.
fn judge(t: &Trace, s: &Stage, what: &str, o_units: f64) {
    judge_over((t.hq, t.hkv, t.d), (&t.k_hist, &t.v_hist), s, what, o_units);
}

/// [`judge`] over explicit K / V histories (`[len, hkv, d]` per sequence).
fn judge_over(
    (hq, hkv, d): (usize, usize, usize),
    (k_hist, v_hist): (&[Vec<f16>], &[Vec<f16>]),
    s: &Stage,
    what: &str,
    o_units: f64,
) {
    let t = Dims { hq, hkv, d };
    let f = |x: &[f16]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
    let row = t.hkv * t.d;
    let k: Vec<f32> = (0..s.kv_lens.len())
        .flat_map(|b| f(&k_hist[b][..s.kv_lens[b] * row]))
        .collect();
    let v: Vec<f32> = (0..s.kv_lens.len())
        .flat_map(|b| f(&v_hist[b][..s.kv_lens[b] * row]))
        .collect();
    let q = f(&s.q);
    let (cu_q, cu_k) = (cumsum(&s.q_lens), cumsum(&s.kv_lens));
    let options = AttnOptions {
        causal: s.causal,
        ..Default::default()
    };
    let r = reference::attention(&ReferenceInputs::varlen(
        (&q, &k, &v),
        (&cu_q, &cu_k),
        (t.hq, t.hkv),
        t.d,
        &options,
    ))
    .unwrap();
    let mut tol = Tolerance::attention_output(DType::F16, 1.0);
    tol.max_abs *= o_units;
    reference::compare(&f(&s.o), &r.o)
        .check(&tol)
        .unwrap_or_else(|e| panic!("{what}: O {e}"));
    let scale = 1.0 / (t.d as f32).sqrt();
    let bound = reference::score_bound(
        &q,
        &k,
        t.d,
        scale,
        None,
        1,
        *s.kv_lens.iter().max().unwrap(),
    );
    let n = *s.kv_lens.iter().max().unwrap();
    reference::compare(&s.lse, &r.lse)
        .check(&Tolerance::lse(t.d, n, bound))
        .unwrap_or_else(|e| panic!("{what}: LSE {e}"));
}

fn check_trace(t: &Trace) {
    judge(t, &t.prefill, "prefill", 1.0);
    for (i, s) in t.steps.iter().enumerate() {
        judge(t, s, &format!("decode step {i}"), 1.0);
    }
    // Two f16 partial outputs are rounded before the merge: one more rounding of each.
    judge(t, &t.cascade, "cascade merge", 2.0);
}

#[test]
fn one_generic_server_loop_runs_on_the_emulator_and_matches_the_reference() {
    let seed = rand::random::<u64>();
    eprintln!("server loop seed {seed}");
    for target in [KernelTarget::Ampere, KernelTarget::Turing] {
        let be = EmulatorBackend::new(target);
        let trace = serve(&be, seed).unwrap_or_else(|e| panic!("{target}: {e}"));
        check_trace(&trace);
        // Counters stay readable after a call (the cascade's merge was the last one).
        let reports = be.last_reports();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].0.contains("merge"), "{}", reports[0].0);
        assert!(reports[0].1.is_clean());
        assert!(reports[0].1.counters.warp_instructions > 0);
    }
}

/// The merge of two f16 states of `rows` x `heads` rows, LSE `[rows, heads]`.
fn merge_pair_plan(
    target: KernelTarget,
    rows: usize,
    heads: usize,
    head_dim: usize,
) -> flashmha::Result<MergePlan> {
    let problem = MergeProblem {
        dtype: DType::F16,
        states: MergeStates::Pair,
        rows,
        heads,
        head_dim,
        lse_layout: StatsLayout::RowsHeads,
    };
    MergePlan::new_for(target, &problem)
}

/// Plans f16 queries over contiguous NHD pools of `kv_dtype` (`Same`: 16-bit pages) for
/// `batch` sequences of one new token each, default options.
fn plan_f16<B: Backend>(
    be: &B,
    (kv_dtype, kv_scales): (KvCacheDType, flashmha::ops::decode::KvScaleGranularity),
    (num_heads_q, num_heads_kv, head_dim): (usize, usize, usize),
    (num_pages, page_size, max_pages_per_seq): (usize, usize, usize),
    batch: usize,
    stats: RowStats,
) -> flashmha::Result<PagedAttention> {
    let pools = PagedKv {
        dtype: DType::F16,
        kv_dtype,
        kv_scales,
        num_heads_q,
        num_heads_kv,
        head_dim,
        num_pages,
        page_size,
        head_major: false,
    };
    let bounds = BatchBounds {
        batch,
        new_tokens: 1,
        max_pages_per_seq,
    };
    PagedAttention::new(be, &pools, &bounds, &AttnOptions::default(), stats)
}

/// FP8 pools through the same generic calls: the append quantises into codes equal, bit for
/// bit, to the host codec's, and the decode over them matches the reference on the
/// dequantised keys and values (per-KV-head scales, GQA, split-KV).
fn fp8_step<B: Backend>(be: &B, seed: u64) -> flashmha::Result<()> {
    use flashmha::ops::decode::KvScaleGranularity;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stream = be.stream()?;
    let (hq, hkv, d, page, batch) = (8, 2, 64, 16, 2);
    let lens: Vec<usize> = (0..batch).map(|_| rng.random_range(5..60)).collect();
    let max_pages_per_seq = 4;
    let num_pages = batch * max_pages_per_seq;
    for kv_dtype in [KvCacheDType::Fp8E4M3, KvCacheDType::Fp8E5M2] {
        let kv = (kv_dtype, KvScaleGranularity::PerKvHead);
        let pages = (num_pages, page, max_pages_per_seq);
        let paged = plan_f16(be, kv, (hq, hkv, d), pages, batch, RowStats::default())?;
        // Every token of every sequence appended in one call (a prompt), at shuffled pages.
        let total: usize = lens.iter().sum();
        let k = random_f16(&mut rng, total * hkv * d);
        let v = random_f16(&mut rng, total * hkv * d);
        let k_scales: Vec<f32> = (0..hkv).map(|_| rng.random_range(0.002f32..0.02)).collect();
        let v_scales: Vec<f32> = (0..hkv).map(|_| rng.random_range(0.002f32..0.02)).collect();
        let mut pages: Vec<i32> = (0..num_pages as i32).collect();
        pages.shuffle(&mut rng);
        let slot = |b: usize, p: usize| {
            pages[b * max_pages_per_seq + p / page] * page as i32 + (p % page) as i32
        };
        let slots: Vec<i32> = (0..batch)
            .flat_map(|b| (0..lens[b]).map(move |p| (b, p)))
            .map(|(b, p)| slot(b, p))
            .collect();
        let append =
            KvAppendPlan::new_for(be.target(), paged.problem(), total, AppendIndex::Slots)?;
        let (dk, dv) = (be.upload(&stream, &k)?, be.upload(&stream, &v)?);
        let (dks, dvs) = (
            be.upload(&stream, &k_scales)?,
            be.upload(&stream, &v_scales)?,
        );
        let pool_len = num_pages * page * hkv * d;
        let mut k_codes = be.alloc_zeros::<u8>(&stream, pool_len)?;
        let mut v_codes = be.alloc_zeros::<u8>(&stream, pool_len)?;
        let d_slots = be.upload(&stream, &slots)?;
        let args =
            KvAppendArgs::fp8(&dk, &dv, &mut k_codes, &mut v_codes, &dks, &dvs).slots(&d_slots);
        be.kv_append(&stream, &append, args)?;
        // The pools hold the host codec's codes of x / scale at each token's slot.
        let got_k = be.download(&stream, &k_codes)?;
        let mut k_deq = vec![0f32; k.len()];
        let mut v_deq = vec![0f32; v.len()];
        let got_v = be.download(&stream, &v_codes)?;
        for (t, &sl) in slots.iter().enumerate() {
            for h in 0..hkv {
                for c in 0..d {
                    let (src, dst) = ((t * hkv + h) * d + c, (sl as usize * hkv + h) * d + c);
                    for (x, scale, got, deq) in [
                        (&k, k_scales[h], &got_k, &mut k_deq),
                        (&v, v_scales[h], &got_v, &mut v_deq),
                    ] {
                        let code = kv_dtype.encode(x[src].to_f32() / scale);
                        assert_eq!(got[dst], code, "{kv_dtype:?} token {t} head {h} col {c}");
                        deq[src] = kv_dtype.decode(code) * scale;
                    }
                }
            }
        }
        // Decode one query per sequence over its whole cache.
        let q = random_f16(&mut rng, batch * hq * d);
        let dq = be.upload(&stream, &q)?;
        let table = be.upload(&stream, &pages)?;
        let d_lens = be.upload(&stream, &lens.iter().map(|&l| l as i32).collect::<Vec<_>>())?;
        let mut o = be.alloc_zeros::<f16>(&stream, batch * hq * d)?;
        let mut ws = be.alloc_zeros::<f32>(
            &stream,
            usize::try_from(paged.workspace_elems()).unwrap().max(1),
        )?;
        let args = DecodeArgs::fp8(&dq, &k_codes, &v_codes, &dks, &dvs, &mut o, &table, &d_lens)
            .workspace(&mut ws);
        paged.decode(be, &stream, args)?;
        let qf: Vec<f32> = q.iter().map(|x| x.to_f32()).collect();
        let (cu_q, cu_k) = (cumsum(&vec![1; batch]), cumsum(&lens));
        let options = AttnOptions::default();
        let r = reference::attention(&ReferenceInputs::varlen(
            (&qf, &k_deq, &v_deq),
            (&cu_q, &cu_k),
            (hq, hkv),
            d,
            &options,
        ))
        .unwrap();
        let vmax = v_deq.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
        // The kernel rounds each dequantised value to f16 before the mma: one more rounding.
        let mut tol = Tolerance::attention_output(DType::F16, vmax);
        tol.max_abs *= 2.0;
        let out: Vec<f32> = be
            .download(&stream, &o)?
            .iter()
            .map(|x| x.to_f32())
            .collect();
        reference::compare(&out, &r.o)
            .check(&tol)
            .unwrap_or_else(|e| panic!("{kv_dtype:?} decode: O {e}"));
    }
    Ok(())
}

#[test]
fn fp8_pools_through_the_generic_calls_match_the_host_codec_and_the_reference() {
    let seed = rand::random::<u64>();
    eprintln!("fp8 seed {seed}");
    for target in [KernelTarget::Ampere, KernelTarget::Hopper] {
        fp8_step(&EmulatorBackend::new(target), seed).unwrap_or_else(|e| panic!("{target}: {e}"));
    }
    // Turing has no FP8 decode kernels: a typed error when planning, nothing launched.
    let err = fp8_step(&EmulatorBackend::new(KernelTarget::Turing), seed).unwrap_err();
    assert!(err.to_string().contains("FP8"), "{err}");
}

#[test]
fn a_finding_is_an_error_naming_the_kernel_tensor_and_element() {
    use flashmha::common::error::{EmulatorError, Error, TensorName};
    // A block-table entry past the pool traps in the kernel; a slot past the pool likewise.
    // Both are device data the host cannot see: the emulator reports the trap as a typed error.
    let be = EmulatorBackend::new(KernelTarget::Ampere);
    let stream = be.stream().unwrap();
    let kv = (KvCacheDType::Same, Default::default());
    let paged = plan_f16(&be, kv, (4, 4, 64), (2, 16, 2), 1, RowStats::default()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let n = 2 * 16 * 4 * 64;
    let k = be.upload(&stream, &random_f16(&mut rng, n)).unwrap();
    let v = be.upload(&stream, &random_f16(&mut rng, n)).unwrap();
    let q = be.upload(&stream, &random_f16(&mut rng, 4 * 64)).unwrap();
    let mut o = be.alloc_zeros::<f16>(&stream, 4 * 64).unwrap();
    let table = be.upload(&stream, &[0i32, 7]).unwrap(); // page 7 of 2
    let lens = be.upload(&stream, &[20i32]).unwrap();
    let mut ws = be
        .alloc_zeros::<f32>(&stream, paged.workspace_elems().max(1) as usize)
        .unwrap();
    let args = DecodeArgs::new(&q, &k, &v, &mut o, &table, &lens).workspace(&mut ws);
    let err = paged.decode(&be, &stream, args).unwrap_err();
    match &err {
        Error::Emulator(EmulatorError::KernelFinding { kernel, count, .. }) => {
            assert!(kernel.contains("decode"), "{err}");
            assert!(*count >= 1);
        }
        e => panic!("expected a kernel finding, got {e}"),
    }
    // A buffer too short for the plan is refused before any launch, naming the tensor.
    let short = be.alloc_zeros::<f16>(&stream, 10).unwrap();
    let table = be.upload(&stream, &[0i32, 1]).unwrap();
    let args = DecodeArgs::new(&short, &k, &v, &mut o, &table, &lens).workspace(&mut ws);
    match paged.decode(&be, &stream, args).unwrap_err() {
        Error::BufferTooSmall { tensor, .. } => assert_eq!(tensor, TensorName::Q),
        e => panic!("expected BufferTooSmall for q, got {e}"),
    }
    // Buffers of another element type than the plan's: a typed error before any launch, for
    // the forward as for every op (each plan holds its dtype).
    let shape = FwdShape::padded(1, 4, 4, Heads::mha(4), 64);
    let bf16_plan = FwdPlan::new_for(be.target(), DType::Bf16, &shape).unwrap();
    let x = be
        .upload(&stream, &random_f16(&mut rng, 4 * 4 * 64))
        .unwrap();
    let mut y = be.alloc_zeros::<f16>(&stream, 4 * 4 * 64).unwrap();
    match be.run(&stream, &bf16_plan, FwdArgs::new(&x, &x, &x, &mut y)) {
        Err(Error::DTypeMismatch { tensor, .. }) => assert_eq!(tensor, TensorName::Q),
        r => panic!("expected DTypeMismatch, got {r:?}"),
    }
    // A copy larger than its destination is refused, and writes nothing.
    let before = be.download(&stream, &y).unwrap();
    match be.copy_in(&stream, &random_f16(&mut rng, 4 * 4 * 64 + 1), &mut y) {
        Err(Error::CopyTooLarge { elements, capacity }) => {
            assert_eq!((elements, capacity), (4 * 4 * 64 + 1, 4 * 4 * 64))
        }
        r => panic!("expected CopyTooLarge, got {r:?}"),
    }
    assert_eq!(be.download(&stream, &y).unwrap(), before);
    // Absurd sizes are typed errors, never a panic or an aborting allocation.
    for n in [usize::MAX, usize::MAX / 2, 1 << 40] {
        assert!(be.alloc_zeros::<f32>(&stream, n).is_err(), "{n}");
    }
    // A buffer of another emulated device is refused, not read at a stale address.
    let other = EmulatorBackend::new(KernelTarget::Ampere);
    let foreign = other
        .upload(&other.stream().unwrap(), &random_f16(&mut rng, 4 * 64))
        .unwrap();
    let args = DecodeArgs::new(&foreign, &k, &v, &mut o, &table, &lens).workspace(&mut ws);
    assert!(paged.decode(&be, &stream, args).is_err());
}

#[test]
fn a_global_out_of_bounds_finding_names_the_tensor_and_the_element() {
    use flashmha::backend::BoundTensors;
    use flashmha::common::binding::DevBuf;
    use flashmha::common::error::TensorName;
    // The mapping the emulator backend applies to a finding's address.
    let mut bound = BoundTensors::default();
    let q = DevBuf {
        addr: 4096,
        len: 256,
    };
    bound.push(TensorName::Q, q, 2);
    bound.push(
        TensorName::KCache,
        DevBuf {
            addr: 65536,
            len: 1024,
        },
        2,
    );
    let past = q.addr + 2 * 300;
    assert_eq!(bound.locate(past), Some((TensorName::Q, 300, false)));
    assert_eq!(
        bound.locate(65536 + 2 * 5),
        Some((TensorName::KCache, 5, true))
    );
}

/// The same loop through `CudaBackend` on every device (the emulated sm_80, sm_75 and sm_90, or
/// a GPU runner's).
#[test]
fn cuda_server_loop() {
    let seed = rand::random::<u64>();
    eprintln!("cuda server loop seed {seed}");
    for be in crate::cuda_support::backends(|_| true) {
        let trace = serve(&be, seed).unwrap_or_else(|e| {
            panic!("{}: {e}\n{}", be.target(), crate::cuda_support::findings())
        });
        check_trace(&trace);
    }
}

/// One layer's device buffers of the graph test (`[batch, heads, d]` rows; pools
/// `[num_pages, page, hkv, d]`; LSE `[batch, hq]`).
struct LayerBufs<B: Backend> {
    q: B::Buffer<f16>,
    k_new: B::Buffer<f16>,
    v_new: B::Buffer<f16>,
    k_cache: B::Buffer<f16>,
    v_cache: B::Buffer<f16>,
    o: B::Buffer<f16>,
    lse: B::Buffer<f32>,
}

/// The step's shared device inputs: block table `[batch, max_pages]`, cache lengths and slots
/// `[batch]`, and the split workspace every layer reuses.
struct StepBufs<B: Backend> {
    table: B::Buffer<i32>,
    lens: B::Buffer<i32>,
    slots: B::Buffer<i32>,
    workspace: B::Buffer<f32>,
}

/// A step's host inputs: per layer (q, k_new, v_new), and the table, lengths and slots.
struct StepInputs {
    layers: Vec<(Vec<f16>, Vec<f16>, Vec<f16>)>,
    table: Vec<i32>,
    lens: Vec<i32>,
    slots: Vec<i32>,
}

/// Allocates a model's buffers for `paged` (`layers` layers, `batch` sequences).
fn alloc_model<B: Backend>(
    be: &B,
    stream: &B::Stream,
    paged: &PagedAttention,
    layers: usize,
) -> flashmha::Result<(Vec<LayerBufs<B>>, StepBufs<B>)> {
    let p = paged.problem();
    let (batch, hq, hkv, d) = (p.batch, p.num_heads_q, p.num_heads_kv, p.head_dim);
    let pool = p.cache_span(&p.k_strides) as usize;
    let mut out = Vec::new();
    for _ in 0..layers {
        out.push(LayerBufs {
            q: be.alloc_zeros(stream, batch * hq * d)?,
            k_new: be.alloc_zeros(stream, batch * hkv * d)?,
            v_new: be.alloc_zeros(stream, batch * hkv * d)?,
            k_cache: be.alloc_zeros(stream, pool)?,
            v_cache: be.alloc_zeros(stream, pool)?,
            o: be.alloc_zeros(stream, batch * hq * d)?,
            lse: be.alloc_zeros(stream, batch * hq)?,
        });
    }
    let step = StepBufs {
        table: be.alloc_zeros(stream, batch * p.max_pages_per_seq)?,
        lens: be.alloc_zeros(stream, batch)?,
        slots: be.alloc_zeros(stream, batch)?,
        workspace: be.alloc_zeros(stream, (paged.workspace_elems() as usize).max(1))?,
    };
    Ok((out, step))
}

/// One decode step of the model: per layer, append the new token's K/V, then decode (with the
/// split combine the plan may need). What the graph captures, and what the eager twin runs.
fn decode_step<B: Backend>(
    be: &B,
    stream: &B::Stream,
    paged: &PagedAttention,
    layers: &mut [LayerBufs<B>],
    step: &mut StepBufs<B>,
) -> flashmha::Result<()> {
    for l in layers.iter_mut() {
        let args = KvAppendArgs::new(&l.k_new, &l.v_new, &mut l.k_cache, &mut l.v_cache)
            .slots(&step.slots);
        paged.append(be, stream, args)?;
        let args = DecodeArgs::new(
            &l.q,
            &l.k_cache,
            &l.v_cache,
            &mut l.o,
            &step.table,
            &step.lens,
        )
        .lse(&mut l.lse)
        .workspace(&mut step.workspace);
        paged.decode(be, stream, args)?;
    }
    Ok(())
}

/// Copies a step's host inputs into the buffers the step (or its graph) reads.
fn refresh<B: Backend>(
    be: &B,
    stream: &B::Stream,
    layers: &mut [LayerBufs<B>],
    step: &mut StepBufs<B>,
    inputs: &StepInputs,
) -> flashmha::Result<()> {
    for (l, (q, k, v)) in layers.iter_mut().zip(&inputs.layers) {
        be.copy_in(stream, q, &mut l.q)?;
        be.copy_in(stream, k, &mut l.k_new)?;
        be.copy_in(stream, v, &mut l.v_new)?;
    }
    be.copy_in(stream, &inputs.table, &mut step.table)?;
    be.copy_in(stream, &inputs.lens, &mut step.lens)?;
    be.copy_in(stream, &inputs.slots, &mut step.slots)
}

/// A two-layer decode step (append + split decode + combine per layer, planned once for upper
/// bounds) captured into a CUDA graph once through `CudaBackend` on the emulated driver, then
/// replayed for 24 steps while the device-side lengths, block tables (pages handed out as
/// sequences grow, a sequence retired and its row reused with other pages) and slots change.
/// Every step of every layer matches the candle reference and, on the emulated driver, equals
/// bit for bit the same calls run eagerly on the emulator backend.
#[test]
fn a_captured_decode_step_replays_every_step_of_a_two_layer_model() {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode_enum};
    const LAYERS: usize = 2;
    const STEPS: usize = 24;
    // On a GPU runner the replay is checked the same way, without the driver's launch log.
    let driver = crate::cuda_support::emulated();
    let seed = rand::random::<u64>();
    eprintln!("graph test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (hq, hkv, d, page, batch, max_pages) = (4, 2, 64, 16, 2, 3);
    let num_pages = batch * max_pages + 2;
    let be = flashmha::cuda::CudaBackend::new(0).unwrap();
    let twin = EmulatorBackend::new(be.target()).with_sm_count(be.sm_count().unwrap());
    let kv = (KvCacheDType::Same, Default::default());
    let stats = RowStats {
        lse: true,
        entropy: false,
    };
    let dims = (hq, hkv, d);
    let pools = (num_pages, page, max_pages);
    let paged = plan_f16(&be, kv, dims, pools, batch, stats).unwrap();
    let twin_paged = plan_f16(&twin, kv, dims, pools, batch, stats).unwrap();
    assert_eq!(
        paged.decode_plan().num_splits,
        twin_paged.decode_plan().num_splits
    );

    // A stream of its own (graphs cannot capture the legacy stream); every buffer is used on
    // it only, so cudarc's cross-stream events are off (a wait on an event recorded outside
    // the capture would end it, as on a GPU).
    let ctx = be.context().clone();
    // SAFETY: every buffer of this test is used on `stream` only.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().unwrap();
    let (mut layers, mut step) = alloc_model(&be, &stream, &paged, LAYERS).unwrap();
    let tstream = twin.stream().unwrap();
    let (mut tlayers, mut tstep) = alloc_model(&twin, &tstream, &twin_paged, LAYERS).unwrap();

    let before = driver.map(|d| d.thread_launches().len());
    stream
        .begin_capture(CUstreamCaptureMode_enum::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    decode_step(&be, &stream, &paged, &mut layers, &mut step).unwrap();
    let graph = stream
        .end_capture(CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("a graph");
    if let (Some(driver), Some(before)) = (driver, before) {
        // The capture recorded every launch of the step on our stream, and ran none of them.
        let captured: Vec<_> = driver.thread_launches()[before..].to_vec();
        let per_layer = 2 + paged.decode_plan().combine.is_some() as usize;
        assert_eq!(captured.len(), LAYERS * per_layer);
        let own = stream.cu_stream() as u64;
        assert!(captured.iter().all(|r| r.captured == 1 && r.stream == own));
    }

    // The host side of a paged server: pages handed out from a shuffled free list as
    // sequences grow; sequence 1 retires at step 10 and a new one takes its row.
    let mut free: Vec<i32> = (0..num_pages as i32).collect();
    free.shuffle(&mut rng);
    let mut pages: Vec<Vec<i32>> = vec![Vec::new(); batch];
    let mut lens = vec![0usize; batch];
    let mut k_hist = vec![vec![Vec::<f16>::new(); batch]; LAYERS];
    let mut v_hist = vec![vec![Vec::<f16>::new(); batch]; LAYERS];
    for s in 0..STEPS {
        if s == 10 {
            free.append(&mut pages[1]);
            free.shuffle(&mut rng);
            lens[1] = 0;
            for l in 0..LAYERS {
                k_hist[l][1].clear();
                v_hist[l][1].clear();
            }
        }
        let mut slots = vec![0i32; batch];
        for b in 0..batch {
            if lens[b] % page == 0 {
                pages[b].push(free.pop().expect("a free page"));
            }
            slots[b] = pages[b][lens[b] / page] * page as i32 + (lens[b] % page) as i32;
            lens[b] += 1;
        }
        let mut table = vec![0i32; batch * max_pages];
        for b in 0..batch {
            table[b * max_pages..b * max_pages + pages[b].len()].copy_from_slice(&pages[b]);
        }
        let inputs = StepInputs {
            layers: (0..LAYERS)
                .map(|_| {
                    (
                        random_f16(&mut rng, batch * hq * d),
                        random_f16(&mut rng, batch * hkv * d),
                        random_f16(&mut rng, batch * hkv * d),
                    )
                })
                .collect(),
            table,
            lens: lens.iter().map(|&l| l as i32).collect(),
            slots,
        };
        for (l, (_, k, v)) in inputs.layers.iter().enumerate() {
            for b in 0..batch {
                k_hist[l][b].extend_from_slice(&k[b * hkv * d..(b + 1) * hkv * d]);
                v_hist[l][b].extend_from_slice(&v[b * hkv * d..(b + 1) * hkv * d]);
            }
        }
        refresh(&be, &stream, &mut layers, &mut step, &inputs).unwrap();
        graph.launch().unwrap();
        refresh(&twin, &tstream, &mut tlayers, &mut tstep, &inputs).unwrap();
        decode_step(&twin, &tstream, &twin_paged, &mut tlayers, &mut tstep).unwrap();
        for l in 0..LAYERS {
            let what = format!("step {s}, layer {l}");
            let o = be
                .download(&stream, &layers[l].o)
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", crate::cuda_support::findings()));
            let lse = be.download(&stream, &layers[l].lse).unwrap();
            let (to, tlse) = (
                twin.download(&tstream, &tlayers[l].o).unwrap(),
                twin.download(&tstream, &tlayers[l].lse).unwrap(),
            );
            // Bit for bit on the emulated driver (the same PTX on the same emulator); a GPU's
            // tensor cores round differently from the emulator, so there only the reference.
            if driver.is_some() {
                assert!(
                    o.iter()
                        .map(|x| x.to_bits())
                        .eq(to.iter().map(|x| x.to_bits())),
                    "{what}: the replay's O differs from the eager run's"
                );
                assert!(
                    lse.iter()
                        .map(|x| x.to_bits())
                        .eq(tlse.iter().map(|x| x.to_bits())),
                    "{what}: the replay's LSE differs from the eager run's"
                );
            }
            let stage = Stage {
                q: inputs.layers[l].0.clone(),
                kv_lens: lens.clone(),
                q_lens: vec![1; batch],
                causal: false,
                o,
                lse: transpose(&lse, batch, hq),
            };
            judge_over(dims, (&k_hist[l], &v_hist[l]), &stage, &what, 1.0);
        }
    }
}

/// Capture turns "nothing on the launch path allocates or synchronises" into a tested property:
/// the emulated driver refuses both inside a capture, as a GPU's does, and the capture then
/// fails cleanly (a typed error, no graph) instead of recording a partial step.
#[test]
fn a_capture_fails_cleanly_when_a_launch_path_allocates_or_synchronises() {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode_enum};
    if crate::cuda_support::emulated().is_none() {
        eprintln!("skipped: checked on the emulated driver");
        return;
    }
    let be = flashmha::cuda::CudaBackend::new(0).unwrap();
    let ctx = be.context().clone();
    // SAFETY: every buffer of this test is used on `stream` only.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().unwrap();
    let kv = (KvCacheDType::Same, Default::default());
    let paged = plan_f16(&be, kv, (4, 2, 64), (6, 16, 2), 2, RowStats::default()).unwrap();
    let (mut layers, mut step) = alloc_model(&be, &stream, &paged, 1).unwrap();
    let cuda_err = |e: flashmha::Error| match e {
        flashmha::Error::Cuda { .. } => e.to_string(),
        other => panic!("not a driver error: {other}"),
    };
    {
        type Misstep<'a> = Box<dyn Fn(&flashmha::cuda::CudaBackend) -> flashmha::Result<()> + 'a>;
        let missteps: [(&str, Misstep); 3] = [
            // A launch path that allocated its workspace per call.
            (
                "allocation",
                Box::new(|be| be.alloc_zeros::<f32>(&stream, 64).map(|_| ())),
            ),
            // One that synchronised (e.g. to read a length back).
            ("synchronisation", Box::new(|be| be.synchronize(&stream))),
            (
                "download",
                Box::new(|be| be.download(&stream, &step.lens).map(|_| ())),
            ),
        ];
        for (what, misstep) in &missteps {
            stream
                .begin_capture(CUstreamCaptureMode_enum::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .unwrap();
            let e = misstep(&be).expect_err(what);
            assert!(cuda_err(e).contains("CAPTURE"), "{what}");
            let end = stream.end_capture(CUgraphInstantiate_flags(0));
            assert!(end.is_err(), "{what}: the capture must be invalidated");
        }
    }
    // The real step captures cleanly, and the stream works afterwards.
    stream
        .begin_capture(CUstreamCaptureMode_enum::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    decode_step(&be, &stream, &paged, &mut layers, &mut step).unwrap();
    assert!(stream
        .end_capture(CUgraphInstantiate_flags(0))
        .unwrap()
        .is_some());
    be.synchronize(&stream).unwrap();
}

/// What the emulated driver saw the calling thread do: its counters and its launch log.
fn driver_snapshot(
    d: &flashmha_cuda_emu::EmulatedDriver,
) -> (flashmha_cuda_emu::ThreadCounters, usize) {
    (d.thread_counters(), d.thread_launches().len())
}

/// The launch path of forward, KV append, decode (+ combine) and merge through `CudaBackend` on
/// each emulated device: no allocation, no free, no synchronisation and no module load inside
/// the calls; every kernel lands on the caller's stream (not the legacy default one); and each
/// launch is the plan's (entry, grid, block and the dynamic shared memory it planned).
#[test]
fn the_launch_path_allocates_nothing_syncs_nothing_and_runs_on_the_callers_stream() {
    let Some(driver) = crate::cuda_support::emulated() else {
        eprintln!("skipped: counted by the emulated driver");
        return;
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for be in crate::cuda_support::backends(|_| true) {
        let target = be.target();
        let stream = be.context().new_stream().unwrap();
        // Everything is allocated and filled before the calls.
        let (hq, hkv, d, page, batch) = (4, 2, 64, 16, 2);
        let kv = (KvCacheDType::Same, Default::default());
        let stats = RowStats {
            lse: true,
            entropy: false,
        };
        let paged = plan_f16(&be, kv, (hq, hkv, d), (6, page, 3), batch, stats).unwrap();
        let (mut layers, mut step) = alloc_model(&be, &stream, &paged, 1).unwrap();
        let inputs = StepInputs {
            layers: vec![(
                random_f16(&mut rng, batch * hq * d),
                random_f16(&mut rng, batch * hkv * d),
                random_f16(&mut rng, batch * hkv * d),
            )],
            table: vec![4, 1, 0, 2, 5, 3],
            lens: vec![20, 33],
            slots: vec![4 * 16 + 3, 5 * 16 + 7],
        };
        refresh(&be, &stream, &mut layers, &mut step, &inputs).unwrap();
        let lens = [37usize, 5];
        let total: usize = lens.iter().sum();
        let cu = cumsum(&lens);
        let seq = SeqShape::Varlen {
            batch,
            max_seqlen_q: 37,
            max_seqlen_k: 37,
            total_q: total,
            total_k: total,
        };
        let shape = FwdShape::varlen(seq, Heads::gqa(hq, hkv), d);
        let fwd = FwdPlan::new_for(target, DType::F16, &shape).unwrap();
        let q = be
            .upload(&stream, &random_f16(&mut rng, total * hq * d))
            .unwrap();
        let k = be
            .upload(&stream, &random_f16(&mut rng, total * hkv * d))
            .unwrap();
        let v = be
            .upload(&stream, &random_f16(&mut rng, total * hkv * d))
            .unwrap();
        let dcu = be.upload(&stream, &cu).unwrap();
        let mut o = be.alloc_zeros::<f16>(&stream, total * hq * d).unwrap();
        let mut lse = be.alloc_zeros::<f32>(&stream, hq * total).unwrap();
        let merge = merge_pair_plan(target, batch, hq, d).unwrap();
        let (mo, mlse) = (
            be.upload(&stream, &random_f16(&mut rng, batch * hq * d))
                .unwrap(),
            be.upload(&stream, &vec![0.5f32; batch * hq]).unwrap(),
        );
        let mut merged = be.alloc_zeros::<f16>(&stream, batch * hq * d).unwrap();
        be.synchronize(&stream).unwrap();

        let (c0, n0) = driver_snapshot(driver);
        let args = FwdArgs::new(&q, &k, &v, &mut o)
            .lse(&mut lse)
            .cu_seqlens(&dcu, &dcu);
        be.run(&stream, &fwd, args).unwrap();
        decode_step(&be, &stream, &paged, &mut layers, &mut step).unwrap();
        let l = &layers[0];
        be.merge_states(
            &stream,
            &merge,
            MergeArgs::pair(&l.o, &l.lse, &mo, &mlse, &mut merged),
        )
        .unwrap();
        let (c1, _) = driver_snapshot(driver);
        let records = driver.thread_launches()[n0..].to_vec();
        be.synchronize(&stream)
            .unwrap_or_else(|e| panic!("{target}: {e}\n{}", crate::cuda_support::findings()));

        assert_eq!(
            c1.allocs, c0.allocs,
            "{target}: an allocation on the launch path"
        );
        assert_eq!(c1.frees, c0.frees, "{target}: a free on the launch path");
        assert_eq!(
            c1.syncs, c0.syncs,
            "{target}: a synchronisation on the launch path"
        );
        assert_eq!(
            c1.module_loads, c0.module_loads,
            "{target}: a module load on a call"
        );
        let f = fwd.launch();
        let dp = paged.decode_plan();
        let mut planned = vec![(f.kernel.entry, f.grid, f.block, f.dynamic_smem_bytes)];
        let mut push = |l: &flashmha::common::launch::Launch| {
            planned.push((l.entry, l.grid, l.block, l.dynamic_smem_bytes))
        };
        push(&paged.append_plan().launch);
        push(&dp.decode);
        if let Some(c) = &dp.combine {
            push(c);
        }
        push(&merge.launch);
        let seen: Vec<_> = records
            .iter()
            .map(|r| (r.entry(), r.grid, r.block, r.dynamic_smem_bytes))
            .collect();
        assert_eq!(
            seen, planned,
            "{target}: the launches differ from the plans'"
        );
        let own = stream.cu_stream() as u64;
        assert_ne!(own, 0);
        assert!(
            records.iter().all(|r| r.stream == own && r.captured == 0),
            "{target}: a launch off the caller's stream"
        );
    }
}

/// A trap on the CUDA path (a block-table entry past the pools) is what the CUDA backend's
/// docs promise: the launch is queued, the next synchronisation returns the driver's
/// `CUDA_ERROR_ILLEGAL_INSTRUCTION` as `Error::Cuda`, every later call on the context fails the
/// same way, and a backend created anew once every user dropped the old one works. On the
/// emulated driver's device 3, kept for faults (a trap poisons its primary context for every
/// thread of the process, as on a GPU).
#[test]
fn a_trap_on_the_cuda_path_poisons_the_context_until_it_is_created_anew() {
    if crate::cuda_support::emulated().is_none() {
        eprintln!("skipped: faults a context on purpose, on the emulated driver only");
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let (hq, hkv, d, page, batch) = (4, 2, 64, 16, 2);
    let kv = (KvCacheDType::Same, Default::default());
    let inputs = |bad: i32, rng: &mut rand::rngs::StdRng| StepInputs {
        layers: vec![(
            random_f16(rng, batch * hq * d),
            random_f16(rng, batch * hkv * d),
            random_f16(rng, batch * hkv * d),
        )],
        table: vec![4, bad, 0, 2, 5, 3],
        lens: vec![20, 17],
        slots: vec![4 * 16 + 3, 2 * 16],
    };
    let illegal = |e: flashmha::Error| match e {
        flashmha::Error::Cuda { name, .. } => assert_eq!(name, "CUDA_ERROR_ILLEGAL_INSTRUCTION"),
        other => panic!("not the driver's trap error: {other}"),
    };
    // A backend on device 3 that has queued one decode step over `table_entry`'s page.
    type Queued = (
        flashmha::cuda::CudaBackend,
        std::sync::Arc<cudarc::driver::CudaStream>,
        Vec<LayerBufs<flashmha::cuda::CudaBackend>>,
        StepBufs<flashmha::cuda::CudaBackend>,
    );
    let mut queue_step = |table_entry: i32| -> Queued {
        let be = flashmha::cuda::CudaBackend::new(3).unwrap();
        let stream = be.stream().unwrap();
        let dims = (hq, hkv, d);
        let paged = plan_f16(&be, kv, dims, (6, page, 3), batch, RowStats::default()).unwrap();
        let (mut layers, mut step) = alloc_model(&be, &stream, &paged, 1).unwrap();
        let step_inputs = inputs(table_entry, &mut rng);
        refresh(&be, &stream, &mut layers, &mut step, &step_inputs).unwrap();
        // Queued: the launch itself succeeds, as an asynchronous launch does.
        decode_step(&be, &stream, &paged, &mut layers, &mut step).unwrap();
        (be, stream, layers, step)
    };
    {
        let (be, stream, _layers, step) = queue_step(999);
        illegal(be.synchronize(&stream).unwrap_err());
        illegal(be.alloc_zeros::<f32>(&stream, 8).map(|_| ()).unwrap_err());
        illegal(be.download(&stream, &step.lens).map(|_| ()).unwrap_err());
    }
    // Every user dropped it: a new backend gets a new context, and the same step with a good
    // table runs clean.
    let (be, stream, layers, _step) = queue_step(1);
    let o = be.download(&stream, &layers[0].o).unwrap();
    assert!(o.iter().all(|x| x.is_finite()));
}
