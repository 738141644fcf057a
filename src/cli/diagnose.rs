//! `flashmha diagnose`: head diagnostics of one attention call. Generates q/k/v (or reads them
//! from `.npy` / raw f32 files), runs attention for O and per-row entropy, runs the
//! head-similarity kernel over O, analyses the matrix (spectrum, effective heads, near-duplicate
//! clusters), probes what each head encodes, measures per-head robustness, prints a summary and
//! writes a report folder (CSV, Markdown, PNG, SVG). Every kernel runs on one backend: the PTX
//! emulator, or the first GPU with `--gpu` (the same calls). Reads only the input files given;
//! writes only inside `--out`.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};

use super::{CliError, CliResult as Result};
use flashmha::backend::emulator::EmulatorBackend;
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::common::target::KernelTarget;
use flashmha::diagnostics::probe::{self, ProbeConfig, Property};
use flashmha::diagnostics::{self, report, EntropySource, SimilarityMatrix};
use flashmha::host::device::HarnessBackend;
use flashmha::host::HostInputs;
use flashmha::problem::FwdProblem;
use flashmha::reference;

/// Generated query heads get increasingly sharp attention: q of head h is multiplied by
/// 2^(SHARPNESS_LOG2_MIN + h / (H - 1) * SHARPNESS_LOG2_SPAN), i.e. 0.5 .. 8, so the heads'
/// entropies differ visibly.
const SHARPNESS_LOG2_MIN: f32 = -1.0;
const SHARPNESS_LOG2_SPAN: f32 = 4.0;

/// Where the similarity matrix is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimilarityBackend {
    /// The head-similarity CUDA kernel, on the run's backend: the PTX emulator (with its
    /// memory/race checks), or the GPU with --gpu.
    #[value(alias = "kernel")]
    Emulator,
    /// `flashmha::reference::head_similarity` on the CPU (candle, f64).
    Reference,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DiagnoseArgs {
    /// Query heads (generated inputs, or raw input files).
    #[arg(long, default_value_t = 16)]
    pub heads: usize,
    /// KV heads (GQA when fewer than --heads). Default: --heads.
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Sequence length (queries and keys).
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Head dimension: one the forward kernel is compiled for (see `flashmha info`).
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Batch items.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seed of the generated q/k/v.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Element type the kernels read: f16 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: DType,
    /// Causal attention.
    #[arg(long)]
    pub causal: bool,
    /// Plant a duplicate head: query head DST gets SRC's queries (and, without GQA, its keys and
    /// values). Format SRC:DST; repeatable.
    #[arg(long = "duplicate", value_name = "SRC:DST", value_parser = parse_pair)]
    pub duplicates: Vec<(usize, usize)>,
    /// Noise added to planted duplicates, relative to the inputs' range (0: exact copies).
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_noise: f32,
    /// Queries from a file instead of generated: `.npy` (float32/float64, C order, shape
    /// [seq, heads, dim] or [batch, seq, heads, dim]) or raw little-endian f32 of shape
    /// [batch, seq, heads, dim] from the flags. Needs --k and --v.
    #[arg(long, requires_all = ["k", "v"])]
    pub q: Option<PathBuf>,
    /// Keys, as --q (raw: [batch, seq, kv_heads, dim]).
    #[arg(long, requires = "q")]
    pub k: Option<PathBuf>,
    /// Values, as --k.
    #[arg(long, requires = "q")]
    pub v: Option<PathBuf>,
    /// Mean cosine similarity at or above which two heads are near-duplicates.
    #[arg(long, default_value_t = diagnostics::DEFAULT_DUPLICATE_THRESHOLD)]
    pub threshold: f32,
    /// Where the similarity matrix is computed.
    #[arg(long, value_enum, default_value = "emulator")]
    pub similarity: SimilarityBackend,
    /// Run every kernel (forward, head similarity, JVP, backward) on the first GPU instead of the
    /// PTX emulator.
    #[arg(long)]
    pub gpu: bool,
    /// Report folder.
    #[arg(long, default_value = "diagnose_report")]
    pub out: PathBuf,
    /// TrueType font for the plots (default: $FLASHMHA_FONT, then the system's fonts).
    #[arg(long)]
    pub font: Option<PathBuf>,
    /// Probe what each head encodes: NAME=labels.npy, an integer .npy with one non-negative label
    /// per token ([batch * seq] or [batch, seq], the tokens of the inputs). Repeatable. Without
    /// it, generated inputs get a demo property planted in two heads and a random control.
    #[arg(long = "probe", value_name = "NAME=PATH", value_parser = parse_probe)]
    pub probes: Vec<(String, PathBuf)>,
    /// Cross-validation folds of the probes.
    #[arg(long, default_value_t = probe::DEFAULT_FOLDS)]
    pub probe_folds: usize,
    /// Ridge strength of the probes, relative to the mean variance of an output feature.
    #[arg(long, default_value_t = probe::DEFAULT_RIDGE)]
    pub probe_ridge: f64,
    /// Generated inputs: plant no demo property (and probe nothing unless --probe is given).
    #[arg(long)]
    pub no_probe_demo: bool,
    #[command(flatten)]
    pub robustness: super::diagnose_robustness::RobustnessArgs,
}

fn parse_probe(s: &str) -> std::result::Result<(String, PathBuf), String> {
    probe::parse_probe_arg(s).map_err(|e| e.to_string())
}

fn parse_pair(s: &str) -> std::result::Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected SRC:DST"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{x}` is not a head index"))
    };
    Ok((num(a)?, num(b)?))
}

/// q, k, v as f32 (already rounded to the dtype) and their shape.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    dim: usize,
    origin: String,
    /// The demo properties planted into generated inputs, and what was planted where.
    demo: Option<(Vec<Property>, String)>,
}

/// O, per-row entropy, and where they came from.
struct ForwardOutputs {
    /// `[batch, seq, heads, dim]`, rounded to the dtype as the fused kernel would write it.
    o: Vec<f32>,
    /// `[batch, heads, seq]`, nats.
    entropy: Vec<f32>,
    source: EntropySource,
}

pub fn run(args: &DiagnoseArgs) -> Result<()> {
    if !(args.threshold.is_finite() && (-1.0..=1.0).contains(&args.threshold)) {
        return Err(CliError::Usage(format!(
            "--threshold {} must be in [-1, 1]",
            args.threshold
        )));
    }
    // Fail on a missing font or bad robustness settings before minutes of emulation, not after.
    let font = diagnostics::plots::load_font(args.font.as_deref())?;
    let robustness = args.robustness.settings(args.seed)?;
    // The backend first: without a GPU, --gpu is a typed error before anything runs.
    if args.gpu {
        let gpu = flashmha::cuda::CudaBackend::new(0)?;
        diagnose_on(&gpu, "the GPU", args, &font, &robustness)
    } else {
        let emulator = EmulatorBackend::new(KernelTarget::Ampere);
        diagnose_on(&emulator, "the PTX emulator", args, &font, &robustness)
    }
}

/// Everything after the checks, every kernel on `backend` (named `on` in reports).
fn diagnose_on<B: HarnessBackend>(
    backend: &B,
    on: &str,
    args: &DiagnoseArgs,
    font: &Path,
    robustness: &diagnostics::robustness::Settings,
) -> Result<()> {
    let inputs = load_or_generate(args, args.dtype)?;
    let tokens = inputs.batch * inputs.seq;
    // Label files and probe settings are checked before the (slow) emulated forward.
    let (properties, probe_origin) = probe_properties(args, &inputs)?;
    let probe_config = ProbeConfig {
        folds: args.probe_folds,
        ridge: args.probe_ridge,
        seed: args.seed,
    };
    if !properties.is_empty() {
        probe_config.check(tokens).map_err(flashmha::Error::from)?;
    }
    let fwd = forward_outputs(backend, &inputs, (args.causal, args.gpu), args.dtype)?;
    let (matrix, matrix_source, emulator) = similarity(backend, on, args, &inputs, &fwd.o)?;
    let analysis = diagnostics::analyze(&matrix, args.threshold);
    let entropy =
        diagnostics::per_head_entropy(&fwd.entropy, inputs.batch, inputs.heads, inputs.seq)?;

    let probe_map = if properties.is_empty() {
        None
    } else {
        let (h, d) = (inputs.heads, inputs.dim);
        Some(
            probe::probe_heads(&fwd.o, tokens, h, d, &properties, &probe_config)
                .map_err(flashmha::Error::from)?,
        )
    };
    let dups: Vec<String> = args
        .duplicates
        .iter()
        .map(|(s, d)| format!("{s}->{d}"))
        .collect();
    let run = vec![
        ("inputs".to_string(), inputs.origin.clone()),
        (
            "shape".to_string(),
            format!(
                "batch {} x seq {} x heads {} (kv {}) x dim {}",
                inputs.batch, inputs.seq, inputs.heads, inputs.kv_heads, inputs.dim
            ),
        ),
        ("dtype".to_string(), args.dtype.to_string()),
        ("causal".to_string(), args.causal.to_string()),
        (
            "planted duplicates".to_string(),
            if dups.is_empty() {
                "none".to_string()
            } else {
                format!("{} (noise {})", dups.join(", "), args.duplicate_noise)
            },
        ),
        ("font".to_string(), font.display().to_string()),
        ("probed properties".to_string(), probe_origin),
    ];
    let rep = report::Report {
        run,
        matrix: &matrix,
        matrix_source,
        tokens,
        analysis: &analysis,
        entropy: &entropy,
        entropy_source: fwd.source,
        emulator,
        probe: probe_map.as_ref(),
    };
    let mut files = report::write_report(&args.out, &rep)?;
    print_summary(&rep);
    if !args.robustness.no_robustness {
        // Batch item 0: the first seq rows of the [batch, seq, heads, dim] tensors.
        let (rows_q, rows_kv) = (inputs.seq * inputs.heads, inputs.seq * inputs.kv_heads);
        let item0 = diagnostics::robustness::LayerInputs {
            q: &inputs.q[..rows_q * inputs.dim],
            k: &inputs.k[..rows_kv * inputs.dim],
            v: &inputs.v[..rows_kv * inputs.dim],
            seqlen_q: inputs.seq,
            seqlen_k: inputs.seq,
            heads: flashmha::Heads::gqa(inputs.heads, inputs.kv_heads),
            head_dim: inputs.dim,
            options: AttnOptions {
                causal: args.causal,
                ..AttnOptions::default()
            },
            alibi_slopes: None,
            dtype: args.dtype,
        };
        files.extend(super::diagnose_robustness::run(
            backend,
            &args.robustness,
            robustness,
            &item0,
            &args.out,
        )?);
    }
    println!(
        "report written to {}/ ({} files)",
        args.out.display(),
        files.len()
    );
    Ok(())
}

fn load_or_generate(args: &DiagnoseArgs, dtype: DType) -> Result<Inputs> {
    let mut inp = match (&args.q, &args.k, &args.v) {
        (Some(q), Some(k), Some(v)) => load(args, q, k, v)?,
        _ => generate(args)?,
    };
    if inp.dim == 0 || inp.dim % 8 != 0 || inp.dim > 256 {
        return Err(CliError::Usage(format!(
            "head dim {} must be a positive multiple of 8, at most 256",
            inp.dim
        )));
    }
    if args.q.is_none() && args.probes.is_empty() && !args.no_probe_demo {
        inp.demo = Some(plant_probe_demo(args, &mut inp)?);
    }
    plant_duplicates(args, &mut inp)?;
    for x in [&mut inp.q, &mut inp.k, &mut inp.v] {
        reference::rounding::round_in_place(x, dtype);
    }
    Ok(inp)
}

fn load(args: &DiagnoseArgs, q: &Path, k: &Path, v: &Path) -> Result<Inputs> {
    use diagnostics::npy::read_tensor;
    let kv_heads = args.kv_heads.unwrap_or(args.heads);
    let qt = read_tensor(q, &[args.batch, args.seq, args.heads, args.dim])?;
    let kt = read_tensor(k, &[args.batch, args.seq, kv_heads, args.dim])?;
    let vt = read_tensor(v, &[args.batch, args.seq, kv_heads, args.dim])?;
    // [s, h, d] is one batch item.
    let as4 = |s: &[usize], name: &str| -> Result<[usize; 4]> {
        match *s {
            [a, b, c] => Ok([1, a, b, c]),
            [a, b, c, d] => Ok([a, b, c, d]),
            _ => Err(CliError::Usage(format!(
                "--{name}: shape {s:?} is neither [seq, heads, dim] nor [batch, seq, heads, dim]"
            ))),
        }
    };
    let (qs, ks, vs) = (
        as4(&qt.shape, "q")?,
        as4(&kt.shape, "k")?,
        as4(&vt.shape, "v")?,
    );
    if ks != vs || qs[0] != ks[0] || qs[1] != ks[1] || qs[3] != ks[3] {
        return Err(CliError::Usage(format!(
            "q {qs:?}, k {ks:?}, v {vs:?}: batch, seq and dim must agree and k, v must match"
        )));
    }
    Ok(Inputs {
        q: qt.data,
        k: kt.data,
        v: vt.data,
        batch: qs[0],
        seq: qs[1],
        heads: qs[2],
        kv_heads: ks[2],
        dim: qs[3],
        origin: format!("{}, {}, {}", q.display(), k.display(), v.display()),
        demo: None,
    })
}

fn generate(args: &DiagnoseArgs) -> Result<Inputs> {
    let (b, s, h, d) = (args.batch, args.seq, args.heads, args.dim);
    let hkv = args.kv_heads.unwrap_or(h);
    if b == 0 || s == 0 || h == 0 || hkv == 0 {
        return Err(CliError::Usage(
            "--batch, --seq, --heads and --kv-heads must be >= 1".into(),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut uniform =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let mut q = uniform(b * s * h * d);
    let k = uniform(b * s * hkv * d);
    let v = uniform(b * s * hkv * d);
    for (i, x) in q.iter_mut().enumerate() {
        let head = (i / d) % h;
        let t = if h > 1 {
            head as f32 / (h - 1) as f32
        } else {
            0.0
        };
        *x *= (SHARPNESS_LOG2_MIN + t * SHARPNESS_LOG2_SPAN).exp2();
    }
    Ok(Inputs {
        q,
        k,
        v,
        batch: b,
        seq: s,
        heads: h,
        kv_heads: hkv,
        dim: d,
        origin: format!(
            "generated (seed {}, uniform [-1, 1), q sharpened 0.5..8 by head)",
            args.seed
        ),
        demo: None,
    })
}

/// Copies SRC's inputs into DST for every `--duplicate SRC:DST`, plus relative noise.
fn plant_duplicates(args: &DiagnoseArgs, inp: &mut Inputs) -> Result<()> {
    let (h, hkv, d) = (inp.heads, inp.kv_heads, inp.dim);
    if h % hkv != 0 {
        return Err(CliError::Usage(format!(
            "heads {h} is not a multiple of kv heads {hkv}"
        )));
    }
    let group = h / hkv;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x9e37_79b9_7f4a_7c15);
    let noise = args.duplicate_noise;
    for &(src, dst) in &args.duplicates {
        if src >= h || dst >= h || src == dst {
            return Err(CliError::Usage(format!(
                "--duplicate {src}:{dst}: heads must differ and be < {h}"
            )));
        }
        if hkv != h && src / group != dst / group {
            return Err(CliError::Usage(format!(
                "--duplicate {src}:{dst}: with GQA both query heads must share a KV head \
                 (groups of {group})"
            )));
        }
        let mut copy = |x: &mut Vec<f32>, heads: usize, s: usize, t: usize| {
            for row in 0..x.len() / (heads * d) {
                for e in 0..d {
                    let jitter = if noise > 0.0 {
                        noise * rng.random_range(-1.0f32..1.0)
                    } else {
                        0.0
                    };
                    x[(row * heads + t) * d + e] = x[(row * heads + s) * d + e] + jitter;
                }
            }
        };
        copy(&mut inp.q, h, src, dst);
        if hkv == h {
            copy(&mut inp.k, h, src, dst);
            copy(&mut inp.v, h, src, dst);
        }
    }
    Ok(())
}

/// Query heads that carry the demo property: up to two, from the last head down, skipping heads
/// named by --duplicate and (GQA) KV groups already used, so no other plant overwrites them.
fn probe_demo_carriers(args: &DiagnoseArgs, inp: &Inputs) -> Vec<usize> {
    let group = (inp.heads / inp.kv_heads.max(1)).max(1);
    let mut carriers: Vec<usize> = Vec::new();
    for h in (0..inp.heads).rev() {
        let duplicated = args.duplicates.iter().any(|&(s, d)| s == h || d == h);
        if !duplicated && carriers.iter().all(|&c| c / group != h / group) {
            carriers.push(h);
        }
        if carriers.len() == 2 {
            break;
        }
    }
    carriers.sort_unstable();
    carriers
}

/// Plants the demo property (4 classes) into generated inputs ([`probe::plant_property`]) and
/// draws a 3-class control property no head carries.
fn plant_probe_demo(args: &DiagnoseArgs, inp: &mut Inputs) -> Result<(Vec<Property>, String)> {
    const PLANTED_CLASSES: usize = 4;
    const CONTROL_CLASSES: usize = 3;
    let carriers = probe_demo_carriers(args, inp);
    let labels = probe::plant_property(
        probe::PlantTarget {
            q: &mut inp.q,
            k: &mut inp.k,
            v: &mut inp.v,
            heads: inp.heads,
            kv_heads: inp.kv_heads,
            dim: inp.dim,
        },
        &carriers,
        PLANTED_CLASSES,
        args.seed ^ 0x7f4a_7c15_9e37_79b9,
    )
    .map_err(flashmha::Error::from)?;
    let tokens = labels.len();
    let control = probe::random_labels(tokens, CONTROL_CLASSES, args.seed ^ 0x2545_f491_4f6c_dd1d);
    let what = format!(
        "demo: 'planted' ({PLANTED_CLASSES} classes) carried by heads {} (each attends to its own \
         token; its value is a random linear map of the label plus noise), 'random' \
         ({CONTROL_CLASSES} classes, a control no head carries)",
        probe::heads_text(&carriers)
    );
    let props = vec![
        Property {
            name: "planted".into(),
            labels,
        },
        Property {
            name: "random".into(),
            labels: control,
        },
    ];
    Ok((props, what))
}

/// The properties to probe (the --probe label files, checked against the inputs' tokens, or
/// the demo's) and how reports describe them.
fn probe_properties(args: &DiagnoseArgs, inp: &Inputs) -> Result<(Vec<Property>, String)> {
    if let Some((props, what)) = &inp.demo {
        return Ok((props.clone(), what.clone()));
    }
    if args.probes.is_empty() {
        return Ok((Vec::new(), "none".into()));
    }
    let mut props = Vec::with_capacity(args.probes.len());
    for (name, path) in &args.probes {
        props.push(probe::read_property(name, path, inp.batch, inp.seq)?);
    }
    let files: Vec<String> = args
        .probes
        .iter()
        .map(|(n, p)| format!("{n}={}", p.display()))
        .collect();
    Ok((props, files.join(", ")))
}

/// O and per-row entropy from the fused forward kernel (its `entropy` output), run on
/// `backend`; any emulator finding is an error.
fn forward_outputs<B: HarnessBackend>(
    backend: &B,
    inp: &Inputs,
    (causal, gpu): (bool, bool),
    dtype: DType,
) -> Result<ForwardOutputs> {
    let options = AttnOptions {
        causal,
        ..AttnOptions::default()
    };
    let mut problem = FwdProblem::padded(
        dtype,
        inp.batch,
        (inp.seq, inp.seq),
        (inp.heads, inp.kv_heads),
        inp.dim,
        options,
    );
    problem.entropy_len = Some(problem.row_stats_len());
    problem.target = backend.target();
    let bits = |x: &[f32]| x.iter().map(|&v| dtype.bits_from_f32(v)).collect();
    let run = flashmha::host::runner::forward(
        backend,
        &problem,
        &HostInputs {
            q: bits(&inp.q),
            k: bits(&inp.k),
            v: bits(&inp.v),
            ..HostInputs::default()
        },
    )?;
    if let Some(f) = run.report.findings.first() {
        return Err(CliError::Failed(format!(
            "forward kernel: {} findings, first: {f}",
            run.report.findings.len()
        )));
    }
    Ok(ForwardOutputs {
        o: run
            .outputs
            .o
            .iter()
            .map(|&b| dtype.f32_from_bits(b))
            .collect(),
        entropy: run.outputs.entropy.unwrap_or_default(),
        source: if gpu {
            EntropySource::FusedKernelOnGpu
        } else {
            EntropySource::FusedKernel
        },
    })
}

/// The mean similarity matrix of `o: [tokens, heads, dim]`, a label of where it was computed,
/// and the emulator's report when it ran there.
fn similarity<B: HarnessBackend>(
    backend: &B,
    on: &str,
    args: &DiagnoseArgs,
    inp: &Inputs,
    o: &[f32],
) -> Result<(SimilarityMatrix, String, Option<String>)> {
    let (h, d) = (inp.heads, inp.dim);
    let tokens = inp.batch * inp.seq;
    match args.similarity {
        SimilarityBackend::Reference => {
            let m = reference::head_similarity(o, tokens, h, d)
                .map_err(|e| flashmha::Error::Reference(e.to_string()))?;
            Ok((
                SimilarityMatrix::new(h, m)?,
                "reference (CPU, candle f64)".to_string(),
                None,
            ))
        }
        SimilarityBackend::Emulator => {
            let (m, rep) =
                diagnostics::head_similarity_on_f32(backend, o, args.dtype, [tokens, h, d])?;
            // A GPU has no findings or counters to report.
            let emulated = !args.gpu;
            Ok((
                m,
                format!("head-similarity kernel on {on}"),
                emulated.then(|| diagnostics::describe_launch(&rep)),
            ))
        }
    }
}

fn print_summary(r: &report::Report) {
    let a = r.analysis;
    let h = r.matrix.heads();
    let mut t = crate::cli::table::new(&["", "value"]);
    for (k, v) in &r.run {
        t.add_row(vec![k.clone(), v.clone()]);
    }
    t.add_row(vec!["similarity".to_string(), r.matrix_source.clone()]);
    t.add_row(vec![
        "effective distinct heads".to_string(),
        format!(
            "{:.2} of {h} (participation ratio of the spectrum)",
            a.spectrum.effective_heads
        ),
    ]);
    if let Some((i, j, c)) = a.most_similar_pair {
        t.add_row(vec![
            "most similar pair".to_string(),
            format!("heads {i} and {j}: mean cos {c:.4}"),
        ]);
    }
    t.add_row(vec![
        "largest eigenvalues".to_string(),
        a.spectrum.largest(6, 2),
    ]);
    println!("{t}");

    let mut c = crate::cli::table::new(&[
        "cluster",
        &format!("heads (mean cos >= {:.2})", a.threshold),
        "min cos",
        "max cos",
    ]);
    for (k, cl) in a.clusters.iter().enumerate() {
        c.add_row(vec![
            k.to_string(),
            cl.heads_joined(", "),
            format!("{:.4}", cl.min_similarity),
            format!("{:.4}", cl.max_similarity),
        ]);
    }
    if a.clusters.is_empty() {
        println!("no near-duplicate heads at mean cos >= {:.2}", a.threshold);
    } else {
        println!("{c}");
    }

    let mut e = crate::cli::table::new(&[
        "head",
        &format!("entropy mean (nats, {})", r.entropy_source.label()),
        "min",
        "max",
    ]);
    for x in r.entropy {
        e.add_row(vec![
            x.head.to_string(),
            format!("{:.4}", x.mean),
            format!("{:.4}", x.min),
            format!("{:.4}", x.max),
        ]);
    }
    println!("{e}");
    if let Some(map) = r.probe {
        let mut p = crate::cli::table::new(&[
            "property",
            "classes",
            "majority",
            "random proj.",
            "top heads (CV accuracy)",
            "heads above chance",
        ]);
        for x in &map.properties {
            p.add_row(vec![
                x.name.clone(),
                x.classes.len().to_string(),
                format!("{:.3}", x.majority),
                format!("{:.3}", x.random_projection),
                probe::top_heads_text(x, 3),
                probe::heads_text(&x.encoding_heads()),
            ]);
        }
        println!("probing map: {}\n{p}", map.config);
    }
}
