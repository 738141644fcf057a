//! A server's attention calls written once, generic over the backend, as a server in this
//! crate's users' hands would write them: varlen prefill, the prompt's K/V appended to paged
//! pools, several GQA decode steps (append + split decode, planned once through
//! `PagedAttention`), and a cascade merge (prefix pages and suffix pages attended separately,
//! then merged). Run here on the emulator backend, whose device and buffers persist across the
//! calls as a GPU's do, and compared at every stage with the candle reference; the same function
//! runs on `CudaBackend` unchanged (`cuda_server_loop`, ignored without a GPU).

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
    let merge = MergePlan::new_for(
        be.target(),
        &MergeProblem {
            dtype: DType::F16,
            states: MergeStates::Pair,
            rows: batch,
            heads: hq,
            head_dim: d,
            lse_layout: StatsLayout::RowsHeads,
        },
    )?;
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
    let f = |x: &[f16]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
    let row = t.hkv * t.d;
    let k: Vec<f32> = (0..s.kv_lens.len())
        .flat_map(|b| f(&t.k_hist[b][..s.kv_lens[b] * row]))
        .collect();
    let v: Vec<f32> = (0..s.kv_lens.len())
        .flat_map(|b| f(&t.v_hist[b][..s.kv_lens[b] * row]))
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

#[test]
#[ignore = "needs an NVIDIA GPU and driver"]
fn cuda_server_loop() {
    let be = flashmha::cuda::CudaBackend::new(0).unwrap();
    let trace = serve(&be, rand::random()).unwrap();
    check_trace(&trace);
}
