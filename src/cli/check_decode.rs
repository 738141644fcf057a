//! `flashmha check --decode`: random paged-decode cases on the emulator (or `--gpu`, through
//! `CudaBackend::decode`), each compared with the candle reference over the gathered pages
//! (src/check/decode.rs, the property tests' checker); prints each case's max errors,
//! tolerances and findings, and exits non-zero on any failure.

use super::check::CheckArgs;
use super::table;
use flashmha::check::decode::{check_outputs, run_decode_case, DecodeCase};
use flashmha::host::gpu_decode::decode_host;
use flashmha::ops::decode::kernels::DECODE_KERNELS;
use flashmha::ops::decode::DecodePlan;
use flashmha::KernelTarget;
use rand::SeedableRng;

pub fn run(args: &CheckArgs) -> super::CliResult<bool> {
    let backend = if args.gpu {
        Some(flashmha::cuda::CudaBackend::new(0)?)
    } else {
        None
    };
    // The kernels asked for, else on a GPU the device's own (a T4: f16 over 16-bit pages), else
    // a mix of the Ampere and Turing kernels (`None`, as the property tests draw).
    let target = args.target().or(backend.as_ref().map(|b| b.target()));
    // Decode rows exist for Ampere and Turing; Hopper decodes with the Ampere rows.
    let rows_of = target.unwrap_or(KernelTarget::Ampere).shared_kernels();
    let dtypes = args.dtypes(rows_of)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "flashmha check --decode: {} paged-decode cases, seed {seed}, on {}",
        args.cases,
        if args.gpu { "GPU" } else { "the emulator" }
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Sorted and distinct, so that every head dim is drawn equally often.
    let head_dims = |filter: &dyn Fn(usize) -> bool| -> Vec<usize> {
        let mut v: Vec<usize> = DECODE_KERNELS
            .iter()
            .filter(|r| r.target == rows_of && dtypes.contains(&r.dtype))
            .map(|r| r.head_dim as usize)
            .filter(|&d| filter(d))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let dims = head_dims(&|d| args.head_dim.is_none_or(|h| h == d));
    if dims.is_empty() {
        return Err(flashmha::Error::UnsupportedHeadDim {
            dtype: dtypes[0],
            head_dim: args.head_dim.unwrap_or(0),
            target: rows_of,
            supported: head_dims(&|_| true).into_iter().map(|d| d as u32).collect(),
        }
        .into());
    }
    let bar = super::progress::bar(args.cases, "cases");
    let mut t = table::new(&[
        "#",
        "case",
        "splits",
        "O max err (tol)",
        "LSE max err (tol)",
        "entropy max err (tol)",
        "findings",
        "result",
    ]);
    let mut all_passed = true;
    for n in 0..args.cases {
        let case = DecodeCase::random_on(&mut rng, target, &dtypes, &dims, args.max_len);
        bar.set_message(format!("case {n}"));
        let (splits, findings, failures, errors) = match &backend {
            None => {
                let o = run_decode_case(&case).map_err(super::CliError::Failed)?;
                (
                    o.plan.num_splits,
                    o.run.findings().len(),
                    o.failures,
                    o.errors,
                )
            }
            Some(b) => {
                let built = case.build();
                // The device's kernels, whichever target the case was drawn for.
                let plan = DecodePlan::new_for(b.target(), &built.problem, case.split)?;
                let out = decode_host(b, &plan, &built.inputs)?;
                let (failures, errors) =
                    check_outputs(&built, &out.o, out.lse.as_deref(), out.entropy.as_deref());
                (plan.num_splits, 0, failures, errors)
            }
        };
        let err = |name: &str| {
            errors
                .iter()
                .find(|e| e.name == name)
                .map_or("-".to_string(), |e| {
                    format!("{:.2e} ({:.1e})", e.max_abs, e.tolerance)
                })
        };
        let passed = failures.is_empty();
        all_passed &= passed;
        t.add_row(vec![
            n.to_string(),
            case.describe(),
            splits.to_string(),
            err("o"),
            err("lse"),
            err("entropy"),
            findings.to_string(),
            if passed {
                "pass".into()
            } else {
                format!("FAIL: {}", failures.join("; "))
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
