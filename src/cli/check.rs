//! `flashmha check`: random forward configurations on the emulator (or a GPU), each compared with
//! the candle reference; prints a pass/fail table with the errors and exits non-zero on failure.

use super::table;
use flashmha::check::forward::{run_case, run_case_cuda, CheckCase};
use flashmha::common::build_info::FWD_KERNELS;
use flashmha::common::dtype::DType;
use flashmha::ops::forward::validate::{compiled_head_dims, forward_kernel_for};
use flashmha::KernelTarget;
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
}

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

pub fn run(args: &CheckArgs) -> super::CliResult<bool> {
    // Lengths are drawn from 1..=max-len: an empty range has no case to draw.
    super::positive("--max-len", &[args.max_len])?;
    if let Some(d) = args.head_dim {
        super::positive("--head-dim", &[d])?;
    }
    if args.decode {
        return super::check_decode::run(args);
    }
    // On a GPU the device's own kernels unless a flag names others (a T4 runs sm_75 ones).
    let backend_target = if args.gpu {
        Some(flashmha::cuda::CudaBackend::new(0)?.target())
    } else {
        None
    };
    let target = args
        .target()
        .or(backend_target)
        .unwrap_or(KernelTarget::Ampere);
    let dtypes = args.dtypes(target)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "flashmha check: {} cases, seed {seed}, on {}",
        args.cases,
        if args.gpu { "GPU" } else { "the emulator" }
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Per dtype: the head dims to draw from (compiled ones, and every multiple of 8 up to the
    // widest compiled one, which runs on the next compiled kernel), or the one asked for.
    let mut draws = Vec::new();
    for &dtype in &dtypes {
        let compiled: Vec<usize> = compiled_head_dims(FWD_KERNELS, target, dtype)
            .into_iter()
            .map(|d| d as usize)
            .collect();
        let served: Vec<usize> = (1..=MAX_DRAWN_HEAD_DIM / 8)
            .map(|i| 8 * i)
            .filter(|&d| forward_kernel_for(FWD_KERNELS, target, dtype, d).is_some())
            .collect();
        match args.head_dim {
            Some(d) if forward_kernel_for(FWD_KERNELS, target, dtype, d).is_none() => {
                return Err(flashmha::Error::UnsupportedHeadDim {
                    dtype,
                    head_dim: d,
                    target,
                    supported: compiled.iter().map(|&d| d as u32).collect(),
                }
                .into())
            }
            Some(d) => draws.push((vec![d], vec![d])),
            None if served.is_empty() => {
                return Err(flashmha::Error::UnsupportedOnTarget {
                    what: "the forward of this dtype",
                    target,
                }
                .into())
            }
            None => draws.push((compiled, served)),
        }
    }
    let bar = super::progress::bar(args.cases, "cases");
    let mut t = table::new(&[
        "#",
        "case",
        "O max err (tol)",
        "LSE max err (tol)",
        "entropy max err (tol)",
        "findings",
        "result",
    ]);
    let mut all_passed = true;
    for n in 0..args.cases {
        let dtype = dtypes[n % dtypes.len()];
        // Half the cases at a compiled head dim, half at any served multiple of 8.
        let (compiled, served) = &draws[n % dtypes.len()];
        let dims = if rng.random_bool(0.5) {
            compiled
        } else {
            served
        };
        let mut case = CheckCase::random(&mut rng, &[dtype], dims, args.max_len);
        case.target = target;
        bar.set_message(case.describe());
        let outcome = if args.gpu {
            run_case_cuda(&case)?
        } else {
            run_case(&case)?
        };
        let err = |name: &str| {
            outcome
                .outputs
                .iter()
                .find(|o| o.name == name)
                .map_or("-".to_string(), |o| {
                    format!("{:.2e} ({:.1e})", o.max_abs, o.tolerance.max_abs)
                })
        };
        let passed = outcome.passed();
        all_passed &= passed;
        t.add_row(vec![
            n.to_string(),
            case.describe(),
            err("o"),
            err("lse"),
            err("entropy"),
            outcome.findings.len().to_string(),
            if passed {
                "pass".into()
            } else {
                format!("FAIL: {}", outcome.failures().join("; "))
            },
        ]);
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
