//! `flashmha check`, `--backward`, `--decode` and `--mla`: random forward, backward or
//! paged-decode cases on the emulator (the forward and decode also on a GPU), each run through the one host runner and judged against the candle
//! reference by the one judge (src/check/judge.rs); one driver prints the pass/fail table with
//! each output's error and tolerance and exits non-zero on any failure.

use super::table;
use super::CliResult;
use flashmha::check::backward::{run_case as run_bwd_case, BwdCheckCase};
use flashmha::check::decode::{run_decode_case, run_decode_case_on, DecodeCase};
use flashmha::check::forward::{run_case, run_case_on, CheckCase};
use flashmha::check::judge::Judgement;
use flashmha::common::build_info::FWD_KERNELS;
use flashmha::common::dtype::DType;
use flashmha::cuda::CudaBackend;
use flashmha::ops::backward::kernels::compiled_head_dims as bwd_compiled_head_dims;
use flashmha::ops::decode::kernels::DECODE_KERNELS;
use flashmha::ops::decode::validate::decode_width_for;
use flashmha::ops::forward::validate::{
    compiled_head_dim_pairs, compiled_head_dims, forward_kernel_for,
};
use flashmha::KernelTarget;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Number of random configurations.
    #[arg(long, default_value_t = 12)]
    pub(super) cases: usize,
    /// Seed of the configuration generator (random when omitted; printed either way).
    #[arg(long)]
    pub(super) seed: Option<u64>,
    /// Longest sequence to draw (lengths are uniform in 1..=max-len).
    #[arg(long, default_value_t = 160)]
    pub(super) max_len: usize,
    /// Restrict to one dtype (f16 or bf16).
    #[arg(long)]
    pub(super) dtype: Option<DType>,
    /// Restrict to one head dim.
    #[arg(long)]
    pub(super) head_dim: Option<usize>,
    /// Run on the first GPU instead of the emulator.
    #[arg(long)]
    pub(super) gpu: bool,
    /// Run the Turing (sm_75) kernels instead of the sm_80+ ones (f16 only).
    #[arg(long, conflicts_with = "hopper")]
    pub(super) turing: bool,
    /// Run the Hopper (sm_90a: TMA, wgmma) forward kernels instead of the sm_80+ ones, at the
    /// head dims they were compiled for (the others run the sm_80+ kernels on sm_90 anyway).
    #[arg(long)]
    pub(super) hopper: bool,
    /// Paged decode instead of the forward: random paged-KV cases (page sizes, layouts, shared
    /// and shuffled pages, GQA, splits, options) on the emulator (or --gpu) against the candle
    /// reference over the gathered pages (`--max-len` bounds the cache lengths).
    #[arg(long)]
    pub(super) decode: bool,
    /// MLA decode (d_qk 576, d_v 512, one latent KV head, 16, 32 or 64 query heads, 16-bit or
    /// FP8 pages) instead of the forward: random paged cases as `--decode` draws them, half of
    /// them on the sm_90a kernel (`--hopper`: all).
    #[arg(long, conflicts_with = "decode")]
    pub(super) mla: bool,
    /// The backward (dQ, dK, dV, d(gate), d(sink)) instead of the forward: random cases of the
    /// forward's generator (GQA, varlen, masks, softcap, ALiBi, gates, sinks, f16/bf16) with deterministic mode
    /// on or off, forward then backward on the emulator, against candle's autograd.
    #[arg(long, conflicts_with_all = ["decode", "mla", "gpu", "turing", "hopper"])]
    pub(super) backward: bool,
}

/// The outputs an attention call's judgement holds (forward and decodes).
const ATTENTION_OUTPUTS: &[(&str, &str)] = &[("o", "O"), ("lse", "LSE"), ("entropy", "entropy")];

/// Random forward cases draw head dims up to this (the widest compiled kernel, d256).
const MAX_DRAWN_HEAD_DIM: usize = 256;

impl CheckArgs {
    /// The kernels `--turing` / `--hopper` ask for (`None`: the default).
    pub(super) fn target(&self) -> Option<KernelTarget> {
        if self.turing {
            Some(KernelTarget::Turing)
        } else if self.hopper {
            Some(KernelTarget::Hopper)
        } else {
            None
        }
    }

    /// `--dtype` if `target` has kernels for it (else a typed error), or every dtype it has.
    pub(super) fn dtypes(&self, target: KernelTarget) -> super::CliResult<Vec<DType>> {
        Ok(match self.dtype {
            Some(d) if !target.supports(d) => {
                return Err(flashmha::Error::UnsupportedDType { dtype: d, target }.into())
            }
            Some(d) => vec![d],
            None => [DType::F16, DType::Bf16]
                .into_iter()
                .filter(|d| target.supports(*d))
                .collect(),
        })
    }
}

/// One checked case: its description, the op's own columns, and the judge's verdict.
struct Checked {
    case: String,
    extra: Vec<String>,
    judgement: Judgement,
}

/// Draws, runs and judges case `n` of an op.
type CaseRunner<'a> = Box<dyn FnMut(&mut StdRng, usize) -> CliResult<Checked> + 'a>;

/// One op's side of `flashmha check`: what its cases are called, its own table columns, and its
/// case runner (its flags are validated when this is built, before anything is printed).
struct Op<'a> {
    what: &'static str,
    extra_header: &'static [&'static str],
    /// The outputs whose error (and tolerance) get a column each: (judged name, column name).
    outputs: &'static [(&'static str, &'static str)],
    cases: CaseRunner<'a>,
}

pub fn run(args: &CheckArgs) -> CliResult<bool> {
    // Lengths are drawn from 1..=max-len: an empty range has no case to draw.
    super::positive("--max-len", &[args.max_len])?;
    if let Some(d) = args.head_dim {
        super::positive("--head-dim", &[d])?;
    }
    let backend = args.gpu.then(|| CudaBackend::new(0)).transpose()?;
    let mut op = if args.backward {
        backward_op(args)?
    } else if args.mla {
        mla_op(args, backend.as_ref())
    } else if args.decode {
        decode_op(args, backend.as_ref())?
    } else {
        forward_op(args, backend.as_ref())?
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "flashmha check{}: {} {}, seed {seed}, on {}",
        if args.backward {
            " --backward"
        } else if args.mla {
            " --mla"
        } else if args.decode {
            " --decode"
        } else {
            ""
        },
        args.cases,
        op.what,
        if args.gpu { "GPU" } else { "the emulator" }
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let bar = super::progress::bar(args.cases, "cases");
    let mut header = vec!["#", "case"];
    header.extend(op.extra_header);
    let output_headers: Vec<String> = op
        .outputs
        .iter()
        .map(|(_, column)| format!("{column} max err (tol)"))
        .collect();
    header.extend(output_headers.iter().map(String::as_str));
    header.extend(["findings", "result"]);
    let mut t = table::new(&header);
    let mut all_passed = true;
    for n in 0..args.cases {
        bar.set_message(format!("case {n}"));
        let c = (op.cases)(&mut rng, n)?;
        let j = &c.judgement;
        let err = |name: &str| {
            j.output(name).map_or("-".to_string(), |o| {
                format!("{:.2e} ({:.1e})", o.max_abs, o.tolerance.max_abs)
            })
        };
        let passed = j.passed();
        all_passed &= passed;
        let mut row = vec![n.to_string(), c.case];
        row.extend(c.extra);
        row.extend(op.outputs.iter().map(|(name, _)| err(name)));
        row.extend([
            j.findings.len().to_string(),
            if passed {
                "pass".into()
            } else {
                format!("FAIL: {}", j.failures().join("; "))
            },
        ]);
        t.add_row(row);
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{t}");
    println!(
        "{}",
        if all_passed {
            "all cases passed"
        } else {
            "FAILURES (rerun with --seed to reproduce)"
        }
    );
    Ok(all_passed)
}

/// One dtype's head dims to draw from, `(dtype, compiled, served)`: `--head-dim` alone when
/// `serves` it (else a typed error listing `compiled`), or the compiled dims and every dim the
/// kernels serve (an error naming `what` when there is none).
fn head_dim_draw(
    args: &CheckArgs,
    dtype: DType,
    target: KernelTarget,
    what: &'static str,
    serves: impl Fn(usize) -> bool,
    compiled: Vec<usize>,
    served: Vec<usize>,
) -> CliResult<(DType, Vec<usize>, Vec<usize>)> {
    match args.head_dim {
        Some(d) if !serves(d) => Err(flashmha::Error::UnsupportedHeadDim {
            dtype,
            head_dim: d,
            target,
            supported: compiled.iter().map(|&d| d as u32).collect(),
        }
        .into()),
        Some(d) => Ok((dtype, vec![d], vec![d])),
        None if served.is_empty() => {
            Err(flashmha::Error::UnsupportedOnTarget { what, target }.into())
        }
        None => Ok((dtype, compiled, served)),
    }
}

/// Case `n`'s dtype (the dtypes in turn) and, at random, its compiled or its served head dims.
fn pick_draw<'d>(
    draws: &'d [(DType, Vec<usize>, Vec<usize>)],
    rng: &mut StdRng,
    n: usize,
) -> (DType, &'d [usize]) {
    let (dtype, compiled, served) = &draws[n % draws.len()];
    (
        *dtype,
        if rng.random_bool(0.5) {
            compiled
        } else {
            served
        },
    )
}

/// The forward: per dtype, half the cases at a compiled head dim and half at any multiple of 8
/// a compiled kernel serves (the next wider one), or `--head-dim` when the library runs it.
fn forward_op<'a>(args: &'a CheckArgs, backend: Option<&'a CudaBackend>) -> CliResult<Op<'a>> {
    // On a GPU the device's own kernels unless a flag names others (a T4 runs sm_75 ones).
    let target = args
        .target()
        .or(backend.map(CudaBackend::target))
        .unwrap_or(KernelTarget::Ampere);
    let dtypes = args.dtypes(target)?;
    let mut draws = Vec::new();
    // d_qk != d_v pairs (issue 23) of each dtype, drawn for a fifth of the cases unless
    // --head-dim names one dim.
    let mut pairs = Vec::new();
    for &dtype in &dtypes {
        pairs.push((dtype, compiled_head_dim_pairs(FWD_KERNELS, target, dtype)));
        let compiled: Vec<usize> = compiled_head_dims(FWD_KERNELS, target, dtype)
            .into_iter()
            .map(|d| d as usize)
            .collect();
        let served: Vec<usize> = (1..=MAX_DRAWN_HEAD_DIM / 8)
            .map(|i| 8 * i)
            .filter(|&d| forward_kernel_for(FWD_KERNELS, target, dtype, d).is_some())
            .collect();
        draws.push(head_dim_draw(
            args,
            dtype,
            target,
            "the forward of this dtype",
            |d| forward_kernel_for(FWD_KERNELS, target, dtype, d).is_some(),
            compiled,
            served,
        )?);
    }
    Ok(Op {
        what: "cases",
        extra_header: &[],
        outputs: ATTENTION_OUTPUTS,
        cases: Box::new(move |rng, n| {
            let (dtype, dims) = pick_draw(&draws, rng, n);
            let mut case = CheckCase::random(rng, &[dtype], dims, args.max_len);
            case.target = target;
            let dtype_pairs = pairs.iter().find(|(dt, _)| *dt == dtype).map(|(_, p)| p);
            if let Some(p) = dtype_pairs.filter(|p| !p.is_empty() && args.head_dim.is_none()) {
                if rng.random_bool(0.2) {
                    let (d, dv) = p[rng.random_range(0..p.len())];
                    case = case.with_head_dim_pair((d as usize, dv as usize));
                }
            }
            let judgement = match backend {
                Some(b) => run_case_on(b, &case)?,
                None => run_case(&case)?,
            };
            Ok(Checked {
                case: case.describe(),
                extra: Vec::new(),
                judgement,
            })
        }),
    })
}

/// Paged decode: the kernels asked for, else on a GPU the device's own (a T4: f16 over 16-bit
/// pages), else a mix of the Ampere and Turing kernels (as the property tests draw); head dims
/// among the compiled decode rows half the time, else every multiple of 8 they serve (the
/// forward's rule, `decode_width_for`), or `--head-dim`.
fn decode_op<'a>(args: &'a CheckArgs, backend: Option<&'a CudaBackend>) -> CliResult<Op<'a>> {
    let target = args.target().or(backend.map(CudaBackend::target));
    // Decode rows exist for Ampere and Turing; Hopper decodes with the Ampere rows.
    let rows_of = target.unwrap_or(KernelTarget::Ampere).shared_kernels();
    let dtypes = args.dtypes(rows_of)?;
    // Sorted and distinct, so that every head dim is drawn equally often.
    let compiled: Vec<usize> = {
        let mut v: Vec<usize> = DECODE_KERNELS
            .iter()
            .filter(|r| r.target == rows_of && dtypes.contains(&r.dtype))
            .map(|r| r.head_dim as usize)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let serves = |d: usize| {
        dtypes
            .iter()
            .all(|&dt| decode_width_for(rows_of, dt, 2, d).is_some())
    };
    let (dims, served) = match args.head_dim {
        Some(d) if serves(d) => (vec![d], vec![d]),
        Some(d) => {
            return Err(flashmha::Error::UnsupportedHeadDim {
                dtype: dtypes[0],
                head_dim: d,
                target: rows_of,
                supported: compiled.iter().map(|&d| d as u32).collect(),
            }
            .into())
        }
        None => {
            let served: Vec<usize> = (1..=MAX_DRAWN_HEAD_DIM / 8)
                .map(|i| 8 * i)
                .filter(|&d| serves(d))
                .collect();
            (compiled, served)
        }
    };
    if dims.is_empty() || served.is_empty() {
        return Err(flashmha::Error::UnsupportedOnTarget {
            what: "the paged decode of this dtype",
            target: rows_of,
        }
        .into());
    }
    Ok(Op {
        what: "paged-decode cases",
        extra_header: &["splits"],
        outputs: ATTENTION_OUTPUTS,
        cases: Box::new(move |rng, _| {
            let dims = if rng.random_bool(0.5) { &dims } else { &served };
            let case = DecodeCase::random_on(rng, target, &dtypes, dims, args.max_len);
            let outcome = match backend {
                // The device's kernels, whichever target the case was drawn for.
                Some(b) => run_decode_case_on(b, b.target(), &case)?,
                None => run_decode_case(&case).map_err(super::CliError::Failed)?,
            };
            Ok(Checked {
                case: case.describe(),
                extra: vec![outcome.plan.num_splits.to_string()],
                judgement: outcome.judgement,
            })
        }),
    })
}

/// MLA decode: random cases of src/check/mla.rs (16, 32 or 64 query heads; each 16-key block of
/// a 32-row sm_80 tile is 272 mma on the emulator, each 64-key tile of the 64-row sm_90a kernel
/// 80 wgmma), on the emulator (half the cases on the sm_90a kernel, all with --hopper) or the
/// GPU.
fn mla_op<'a>(args: &'a CheckArgs, backend: Option<&'a CudaBackend>) -> Op<'a> {
    Op {
        what: "MLA decode cases",
        extra_header: &["kernel", "splits"],
        outputs: ATTENTION_OUTPUTS,
        cases: Box::new(move |rng, _| {
            // The emulator draws sm_90a cases in half the runs (all with --hopper); a GPU
            // runs the kernels of its own target.
            let target = match backend {
                Some(b) => b.target(),
                None if args.hopper || rng.random_bool(0.5) => KernelTarget::Hopper,
                None => KernelTarget::Ampere,
            };
            let case =
                flashmha::check::mla::random_case_for(rng, target, &[16, 32, 64], args.max_len);
            let outcome = match backend {
                Some(b) => flashmha::check::mla::run_case_on(b, &case)?,
                None => flashmha::check::mla::run_case(&case)?,
            };
            Ok(Checked {
                case: case.describe(),
                extra: vec![
                    if outcome.plan.kernel.sm90 {
                        "sm_90a wgmma"
                    } else {
                        "sm_80 mma.sync"
                    }
                    .to_string(),
                    outcome.plan.num_splits.to_string(),
                ],
                judgement: outcome.judgement,
            })
        }),
    }
}

/// The backward (emulator, sm_80+ kernels): per dtype in turn, half the cases at a compiled
/// backward head dim and half at any multiple of 8 up to the widest (served by the next wider
/// kernel), or `--head-dim`.
fn backward_op(args: &CheckArgs) -> CliResult<Op<'_>> {
    let dtypes = args.dtypes(KernelTarget::Ampere)?;
    let mut draws = Vec::new();
    for &dtype in &dtypes {
        let compiled: Vec<usize> = bwd_compiled_head_dims(dtype)
            .into_iter()
            .map(|d| d as usize)
            .collect();
        let widest = compiled.iter().copied().max().unwrap_or(0);
        let served: Vec<usize> = (1..=widest / 8).map(|i| 8 * i).collect();
        draws.push(head_dim_draw(
            args,
            dtype,
            KernelTarget::Ampere,
            "the backward of this dtype",
            |d| d % 8 == 0 && d <= widest,
            compiled,
            served,
        )?);
    }
    Ok(Op {
        what: "backward cases",
        extra_header: &[],
        outputs: &[
            ("dq", "dQ"),
            ("dk", "dK"),
            ("dv", "dV"),
            ("d_gates", "d(gate)"),
            ("d_sinks", "d(sink)"),
        ],
        cases: Box::new(move |rng, n| {
            let (dtype, dims) = pick_draw(&draws, rng, n);
            let case = BwdCheckCase::random(rng, &[dtype], dims, args.max_len);
            Ok(Checked {
                case: case.describe(),
                extra: Vec::new(),
                judgement: run_bwd_case(&case)?,
            })
        }),
    })
}
