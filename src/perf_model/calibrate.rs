//! Calibration of the SM simulation ([`super::timing`]) on kernels measured on hardware by
//! others: FlashAttention-2's forward, compiled from its public sources outside the repository
//! (neither the build nor a script that makes it is committed), is emulated, traced and
//! simulated exactly as our own forward, and its predicted TFLOP/s are set beside the published
//! ones ([`PUBLISHED`]).
//!
//! The build directory holds a manifest next to the PTX (one item per line):
//! - `ptx FILE`: the PTX file (relative to the manifest's directory);
//! - `size N`: bytes of the kernels' one by-value parameter struct (`Flash_fwd_params`);
//! - `field NAME OFFSET`: the byte offset of a field of it (from the compiler's `offsetof`);
//! - `kernel ENTRY key=value ...`: one entry with `head_dim`, `block_m`, `block_n`, `threads`,
//!   `regs` (ptxas), `smem` (dynamic shared bytes), `causal` (0/1), `dtype` (bf16/f16),
//!   `gpus` (comma-separated [`PUBLISHED`] GPU names whose dispatch picks this instantiation)
//!   and optionally `role` ([`Role`]: `fwd`, the default, or the backward's `bwd_main`,
//!   `bwd_pre`, `bwd_dq`; the backward is [`super::calibrate_bwd`]).
//!
//! The fields filled are the ones a plain padded forward reads (pointers, strides, sizes, scales,
//! the window for causal, no dropout); every other byte is zero, as a zero-initialised struct.

use std::collections::HashMap;
use std::path::Path;

use super::gpus::GpuSpec;
use super::launch_work::tile_counts;
use super::pipes::{ctas_per_sm, LaunchShape};
use super::timing::{makespan, sm_config_window, CtaClocks, CtaTraces};
use crate::backend::emulator::require_clean;
use crate::common::dtype::DType;
use crate::common::error::{EmulatorError, Error, Result};
use crate::common::options::AttnOptions;
use crate::emulated::HostInputs;
use crate::emulator::timing::KernelTrace;
use crate::emulator::{Device, LaunchConfig, Module};
use crate::problem::{FwdProblem, SeqLayout};

/// What a foreign kernel of the manifest is (its `role=` key; `fwd` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A forward kernel.
    Fwd,
    /// The backward's main kernel (dQ, dK, dV of one KV column block per CTA).
    BwdMain,
    /// The backward's preprocess (rowsum(dO * O), dQ accumulator cleared).
    BwdPre,
    /// The backward's dQ conversion (f32 accumulator to the output type).
    BwdConvertDq,
}

/// One foreign kernel of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKernel {
    pub entry: String,
    pub role: Role,
    pub head_dim: usize,
    pub block_m: usize,
    pub block_n: usize,
    pub threads: u32,
    pub regs: u32,
    pub smem: u32,
    pub causal: bool,
    pub dtype: DType,
    /// The GPUs (names of [`PUBLISHED`]) on which the foreign library's dispatch picks this
    /// instantiation for its head dim.
    pub gpus: Vec<String>,
}

/// A parsed manifest: the PTX text, the parameter struct's layout and the kernels.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub ptx: String,
    pub param_size: usize,
    pub fields: HashMap<String, usize>,
    pub kernels: Vec<ForeignKernel>,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Emulator(EmulatorError::Launch(format!(
        "calibration manifest: {what}"
    )))
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.parse()
        .map_err(|_| bad(format!("{what}: not a number: {s}")))
}

/// Parses the manifest text (`ptx` is the PTX file's text, read by the caller).
pub fn parse_manifest(text: &str, read_ptx: impl Fn(&str) -> Result<String>) -> Result<Manifest> {
    let mut m = Manifest {
        ptx: String::new(),
        param_size: 0,
        fields: HashMap::new(),
        kernels: Vec::new(),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["ptx", file] => m.ptx = read_ptx(file)?,
            ["size", n] => m.param_size = num(n, "size")?,
            ["field", name, off] => {
                m.fields.insert(name.to_string(), num(off, name)?);
            }
            ["kernel", entry, kv @ ..] => {
                let kv: HashMap<&str, &str> = kv.iter().filter_map(|s| s.split_once('=')).collect();
                let get = |k: &str| {
                    kv.get(k)
                        .copied()
                        .ok_or_else(|| bad(format!("{entry}: no {k}")))
                };
                let role = match kv.get("role").copied().unwrap_or("fwd") {
                    "fwd" => Role::Fwd,
                    "bwd_main" => Role::BwdMain,
                    "bwd_pre" => Role::BwdPre,
                    "bwd_dq" => Role::BwdConvertDq,
                    r => return Err(bad(format!("{entry}: role {r}"))),
                };
                m.kernels.push(ForeignKernel {
                    entry: entry.to_string(),
                    role,
                    head_dim: num(get("head_dim")?, "head_dim")?,
                    block_m: num(get("block_m")?, "block_m")?,
                    block_n: num(get("block_n")?, "block_n")?,
                    threads: num(get("threads")?, "threads")?,
                    regs: num(get("regs")?, "regs")?,
                    smem: num(get("smem")?, "smem")?,
                    causal: get("causal")? == "1",
                    dtype: match get("dtype")? {
                        "bf16" => DType::Bf16,
                        "f16" => DType::F16,
                        d => return Err(bad(format!("{entry}: dtype {d}"))),
                    },
                    gpus: get("gpus")?.split(',').map(str::to_string).collect(),
                });
            }
            _ => return Err(bad(format!("unknown line: {line}"))),
        }
    }
    if m.ptx.is_empty() || m.param_size == 0 || m.kernels.is_empty() {
        return Err(bad("needs a ptx, a size and at least one kernel"));
    }
    if m.param_size > 4096 {
        return Err(bad(format!("parameter struct of {} bytes", m.param_size)));
    }
    // Sizes the traces allocate from: refused past what any attention kernel has, so that no
    // manifest makes a host size overflow or an emulated allocation fail.
    for k in &m.kernels {
        let ok = (1..=512).contains(&k.head_dim)
            && (1..=256).contains(&k.block_m)
            && (1..=256).contains(&k.block_n)
            && (32..=1024).contains(&k.threads)
            && k.regs <= 255
            && k.smem <= 256 * 1024;
        if !ok {
            return Err(bad(format!("{}: a size out of range", k.entry)));
        }
    }
    Ok(m)
}

/// Reads `dir/manifest.txt` and the PTX it names.
pub fn load_manifest(dir: &Path) -> Result<Manifest> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| bad(format!("{}: {e}", p.display())));
    parse_manifest(&read(&dir.join("manifest.txt"))?, |f| read(&dir.join(f)))
}

/// The parameter struct's bytes with `fields` written at their manifest offsets.
pub(super) struct ParamBytes<'a> {
    pub(super) bytes: Vec<u8>,
    offsets: &'a HashMap<String, usize>,
}

impl<'a> ParamBytes<'a> {
    /// A zeroed struct of the manifest's size.
    pub(super) fn new(m: &'a Manifest) -> ParamBytes<'a> {
        ParamBytes {
            bytes: vec![0u8; m.param_size],
            offsets: &m.fields,
        }
    }

    pub(super) fn put(&mut self, name: &str, le: &[u8]) -> Result<()> {
        let off = *self
            .offsets
            .get(name)
            .ok_or_else(|| bad(format!("no field {name}")))?;
        let end = off
            .checked_add(le.len())
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| bad(format!("field {name} at {off} outside the struct")))?;
        self.bytes[off..end].copy_from_slice(le);
        Ok(())
    }
}

/// Writes the fields of the forward's parameter struct a plain padded launch of `k` on one head
/// of `sq` queries and `sk` keys reads: the addresses of q, k, v, o and the LSE, the
/// strides of a `[batch, seqlen, heads = 1, d]` layout (as the FA2 Python interface passes
/// it), the sizes, the scales, the window for causal, no dropout. The backward's struct starts
/// with the same fields.
pub(super) fn fill_fwd_params(
    pb: &mut ParamBytes<'_>,
    [q, kk, v, o, lse]: [u64; 5],
    k: &ForeignKernel,
    sq: usize,
    sk: usize,
) -> Result<()> {
    let d = k.head_dim;
    let i32s = |x: i64| (x as i32).to_le_bytes();
    for (name, ptr) in [
        ("q_ptr", q),
        ("k_ptr", kk),
        ("v_ptr", v),
        ("o_ptr", o),
        ("softmax_lse_ptr", lse),
    ] {
        pb.put(name, &ptr.to_le_bytes())?;
    }
    // Layout [batch, seqlen, heads = 1, d], as the FA2 Python interface passes it.
    for t in ["q", "o"] {
        pb.put(
            &format!("{t}_batch_stride"),
            &((sq * d) as i64).to_le_bytes(),
        )?;
    }
    for t in ["k", "v"] {
        pb.put(
            &format!("{t}_batch_stride"),
            &((sk * d) as i64).to_le_bytes(),
        )?;
    }
    for t in ["q", "k", "v", "o"] {
        pb.put(&format!("{t}_row_stride"), &(d as i64).to_le_bytes())?;
        pb.put(&format!("{t}_head_stride"), &(d as i64).to_le_bytes())?;
    }
    let round = |x: usize, to: usize| x.div_ceil(to) * to;
    for (name, val) in [
        ("h", 1),
        ("h_k", 1),
        ("h_h_k_ratio", 1),
        ("b", 1),
        ("seqlen_q", sq as i64),
        ("seqlen_k", sk as i64),
        ("d", d as i64),
        ("seqlen_q_rounded", round(sq, 128) as i64),
        ("seqlen_k_rounded", round(sk, 128) as i64),
        ("d_rounded", d as i64),
        ("window_size_left", -1),
        ("window_size_right", if k.causal { 0 } else { -1 }),
        ("num_splits", 1),
    ] {
        pb.put(name, &i32s(val))?;
    }
    let scale = 1.0 / (d as f32).sqrt();
    for (name, val) in [
        ("scale_softmax", scale),
        ("scale_softmax_log2", scale * std::f32::consts::LOG2_E),
        ("p_dropout", 1.0),
        ("rp_dropout", 1.0),
        ("scale_softmax_rp_dropout", scale),
    ] {
        pb.put(name, &val.to_le_bytes())?;
    }
    pb.put("is_bf16", &[u8::from(k.dtype == DType::Bf16)])?;
    pb.put("is_causal", &[u8::from(k.causal)])?;
    pb.put("is_seqlens_k_cumulative", &[1])?;
    Ok(())
}

/// Emulates and traces the first CTA of `k` on one head of `sq` queries and `sk` keys (inputs
/// uniform in [-1, 1), the same draw as our forward's traces).
pub fn trace_foreign(
    m: &Manifest,
    module: &Module,
    k: &ForeignKernel,
    sq: usize,
    sk: usize,
) -> Result<KernelTrace> {
    let d = k.head_dim;
    let p = FwdProblem::contiguous(
        k.dtype,
        SeqLayout::Padded {
            batch: 1,
            seqlen_q: sq,
            seqlen_k: sk,
        },
        1,
        1,
        d,
        AttnOptions {
            causal: k.causal,
            ..Default::default()
        },
    );
    let host = HostInputs::random(&p, 7);
    let mut dev = Device::new();
    let bytes = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let q = dev.upload(&bytes(&host.q));
    let kk = dev.upload(&bytes(&host.k));
    let v = dev.upload(&bytes(&host.v));
    let o = dev.alloc(sq * d * 2);
    let lse = dev.alloc(sq * 4);
    let mut pb = ParamBytes::new(m);
    fill_fwd_params(&mut pb, [q.0, kk.0, v.0, o.0, lse.0], k, sq, sk)?;
    let cfg = LaunchConfig {
        grid: [sq.div_ceil(k.block_m) as u32, 1, 1],
        block: [k.threads, 1, 1],
        dynamic_smem_bytes: k.smem,
    };
    let (report, trace) = dev.launch_traced(module, &k.entry, &cfg, &pb.bytes, &[[0, 0, 0]])?;
    require_clean(&report)?;
    Ok(trace)
}

/// The three traced one-Q-tile launches of `k` (8 and 16 KV tiles, causal on its own keys).
pub fn foreign_traces(m: &Manifest, module: &Module, k: &ForeignKernel) -> Result<CtaTraces> {
    let (bm, bn) = (k.block_m, k.block_n);
    let plain = ForeignKernel {
        causal: false,
        ..k.clone()
    };
    let causal = ForeignKernel {
        causal: true,
        ..k.clone()
    };
    Ok(CtaTraces::new(
        (bm, bn),
        trace_foreign(m, module, &plain, bm, 8 * bn)?,
        trace_foreign(m, module, &plain, bm, 16 * bn)?,
        trace_foreign(m, module, &causal, bm, bm)?,
    ))
}

/// CTAs of `k` resident per SM of `gpu` (ptxas registers, dynamic shared memory, threads).
pub fn foreign_resident(k: &ForeignKernel, gpu: &GpuSpec) -> u32 {
    let shape = LaunchShape {
        ctas: 1,
        threads_per_cta: k.threads,
        regs_per_thread: k.regs,
        smem_per_cta: k.smem,
        spill_bytes_per_thread: 0,
        setmaxnreg_regs_per_cta: 0,
    };
    ctas_per_sm(gpu, &shape).0.max(1)
}

/// A benchmark configuration of the FlashAttention papers: hidden 2048 (heads = 2048 / d),
/// 16k tokens (batch = 16384 / seqlen), square.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaperConfig {
    pub head_dim: usize,
    pub seqlen: usize,
    pub causal: bool,
}

impl PaperConfig {
    pub fn batch_heads(&self) -> usize {
        (16384 / self.seqlen).max(1) * (2048 / self.head_dim)
    }

    /// The papers' FLOP count: 4 x seqlen^2 x d per head, halved with the causal mask.
    pub fn flops(&self) -> f64 {
        let f =
            4.0 * (self.seqlen * self.seqlen * self.head_dim) as f64 * self.batch_heads() as f64;
        if self.causal {
            f / 2.0
        } else {
            f
        }
    }
}

/// Predicted seconds of `cfg` from per-CTA clocks `c` of a `(block_m, block_n)` kernel on `gpu`:
/// the makespan of every CTA over `SMs x resident` slots, floored by the compulsory DRAM bytes
/// (Q, K, V read and O written once per head) at the DRAM bandwidth.
pub fn predict_paper(
    c: &CtaClocks,
    tiles: (usize, usize),
    cfg: &PaperConfig,
    gpu: &GpuSpec,
) -> f64 {
    let counts = tile_counts(cfg.seqlen, cfg.seqlen, cfg.causal, tiles.0, tiles.1);
    let durations = (0..cfg.batch_heads()).flat_map(|_| counts.iter().map(|&(t, m)| c.of(t, m)));
    let sm = makespan(durations, c.resident as usize * gpu.sms as usize) / gpu.clock_hz;
    let bytes = 4.0 * (cfg.seqlen * cfg.head_dim * 2) as f64 * cfg.batch_heads() as f64;
    sm.max(bytes / gpu.dram_bytes_per_s)
}

/// Which benchmark a published figure is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Forward,
    /// FLOPs 2.5 x the forward's (the papers' count: 5 matmuls against 2).
    Backward,
    /// FLOPs 3.5 x the forward's.
    ForwardBackward,
}

/// Published TFLOP/s of FlashAttention-2 (bf16/f16, the sm_80 kernels: on H100 FA2 runs them
/// too), per (GPU name, pass, head dim, causal), at seqlen 512, 1k, 2k, 4k, 8k, 16k (hidden
/// 2048, 16k tokens).
///
/// H100 SXM5: FlashAttention-3 paper (Shah et al. 2024, arXiv 2407.08608), the bars labelled
/// FlashAttention-2 as transcribed from the figure images at subtext.edge.nugit.net/image/...
/// (the bar labels, not a re-measurement): Figure 5, forward ({e27582d2..., 4ec66909...,
/// 55f47a10..., 9b7cf01f..., 72bb6693..., 662fef77...}), Figure 6, backward without causal
/// mask, hd64 and hd128 ({40bf2854..., f60142e2...}). The FlashAttention-2 paper's A100
/// figures (its Figures 4-6) are images whose bar values were not found as numbers; its text's
/// maxima are [`super::calibrate_bwd::ANCHORS`].
pub const PUBLISHED: [(&str, Pass, usize, bool, [f64; 6]); 8] = [
    (
        "H100",
        Pass::Forward,
        64,
        false,
        [282.0, 306.0, 318.0, 321.0, 322.0, 324.0],
    ),
    (
        "H100",
        Pass::Forward,
        64,
        true,
        [180.0, 229.0, 262.0, 284.0, 295.0, 299.0],
    ),
    (
        "H100",
        Pass::Forward,
        128,
        false,
        [309.0, 350.0, 362.0, 368.0, 370.0, 370.0],
    ),
    (
        "H100",
        Pass::Forward,
        128,
        true,
        [191.0, 260.0, 298.0, 319.0, 333.0, 335.0],
    ),
    (
        "H100",
        Pass::Forward,
        256,
        false,
        [275.0, 313.0, 321.0, 323.0, 324.0, 326.0],
    ),
    (
        "H100",
        Pass::Forward,
        256,
        true,
        [208.0, 251.0, 278.0, 293.0, 297.0, 298.0],
    ),
    (
        "H100",
        Pass::Backward,
        64,
        false,
        [198.0, 238.0, 264.0, 279.0, 287.0, 291.0],
    ),
    (
        "H100",
        Pass::Backward,
        128,
        false,
        [214.0, 260.0, 291.0, 310.0, 318.0, 322.0],
    ),
];

/// FlashAttention-3's published forward TFLOP/s on H100 SXM5 (same figure), hd128 non-causal:
/// the holdout, never fitted.
pub const FA3_HOLDOUT_HD128: [f64; 6] = [467.0, 565.0, 625.0, 638.0, 646.0, 648.0];

/// The paper sequence lengths.
pub const SEQLENS: [usize; 6] = [512, 1024, 2048, 4096, 8192, 16384];

/// One row of the calibration table.
#[derive(Debug, Clone, PartialEq)]
pub struct CalRow {
    pub entry: String,
    pub config: PaperConfig,
    pub resident: u32,
    /// The published figure of this configuration (`None`: none published as a number).
    pub published_tflops: Option<f64>,
    /// Predicted TFLOP/s per scheduling window (in the order asked for).
    pub predicted_tflops: Vec<f64>,
}

/// The published TFLOP/s of `(gpu_key, pass, d, causal)` in [`PUBLISHED`], one per
/// [`SEQLENS`].
pub fn published(gpu_key: &str, pass: Pass, d: usize, causal: bool) -> Option<[f64; 6]> {
    PUBLISHED
        .iter()
        .find(|p| (p.0, p.1, p.2, p.3) == (gpu_key, pass, d, causal))
        .map(|p| p.4)
}

/// The kernels of `m` in `role` and `dtype` that the foreign library's dispatch runs on
/// `gpu_key`, one per (head dim, causal), in manifest order.
pub fn kernels_for<'a>(
    m: &'a Manifest,
    role: Role,
    gpu_key: &str,
    dtype: DType,
) -> Vec<&'a ForeignKernel> {
    let mut out: Vec<&ForeignKernel> = Vec::new();
    for k in &m.kernels {
        let fits = k.role == role && k.dtype == dtype && k.gpus.iter().any(|g| g == gpu_key);
        if fits
            && !out
                .iter()
                .any(|o| (o.head_dim, o.causal) == (k.head_dim, k.causal))
        {
            out.push(k);
        }
    }
    out
}

/// Simulates every forward kernel of `m` in `dtype` that FA2 runs on `gpu` (`gpu_key` names
/// its rows in [`PUBLISHED`] and the manifest's `gpus`) at the scheduling windows `windows`,
/// and returns one row per paper configuration, with the published figure where there is one.
pub fn calibrate(
    m: &Manifest,
    gpu: &GpuSpec,
    gpu_key: &str,
    dtype: DType,
    windows: &[u32],
) -> Result<Vec<CalRow>> {
    let module = Module::parse(&m.ptx)?;
    let mut rows = Vec::new();
    for k in kernels_for(m, Role::Fwd, gpu_key, dtype) {
        let (d, causal) = (k.head_dim, k.causal);
        let published = published(gpu_key, Pass::Forward, d, causal);
        let traces = foreign_traces(m, &module, k)?;
        let resident = foreign_resident(k, gpu);
        let clocks = windows
            .iter()
            .map(|&w| traces.clocks(resident, &sm_config_window(gpu, w)))
            .collect::<Result<Vec<_>>>()?;
        for (i, &seqlen) in SEQLENS.iter().enumerate() {
            let config = PaperConfig {
                head_dim: d,
                seqlen,
                causal,
            };
            let predicted_tflops = clocks
                .iter()
                .map(|c| {
                    config.flops() / predict_paper(c, (k.block_m, k.block_n), &config, gpu) / 1e12
                })
                .collect();
            rows.push(CalRow {
                entry: k.entry.clone(),
                config,
                resident,
                published_tflops: published.map(|p| p[i]),
                predicted_tflops,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_and_refuses_garbage() {
        let text = "ptx a.ptx\nsize 16\nfield q_ptr 0\nfield h 8\n\
                    kernel e head_dim=64 block_m=128 block_n=128 threads=128 regs=200 smem=49152 causal=1 dtype=f16 gpus=H100,A100\n";
        let m = parse_manifest(text, |f| Ok(format!("// {f}"))).unwrap();
        assert_eq!(m.ptx, "// a.ptx");
        assert_eq!((m.param_size, m.fields["h"]), (16, 8));
        let k = &m.kernels[0];
        assert_eq!(
            (k.head_dim, k.block_n, k.smem, k.causal, k.dtype),
            (64, 128, 49152, true, DType::F16)
        );
        assert_eq!(k.gpus, ["H100", "A100"]);
        assert_eq!(k.role, Role::Fwd);
        let bwd = parse_manifest(
            &text.replace("kernel e ", "kernel e role=bwd_main "),
            |_| Ok("x".into()),
        )
        .unwrap();
        assert_eq!(bwd.kernels[0].role, Role::BwdMain);
        assert!(kernels_for(&bwd, Role::Fwd, "A100", DType::F16).is_empty());
        assert_eq!(
            kernels_for(&bwd, Role::BwdMain, "A100", DType::F16).len(),
            1
        );
        assert!(kernels_for(&bwd, Role::BwdMain, "T4", DType::F16).is_empty());
        for broken in [
            "size x\n",
            "ptx a\nsize 8\n",
            "ptx a\nsize 8\nkernel e head_dim=64\n",
            "bogus\n",
            &*text.replace("head_dim=64", "head_dim=18446744073709551615"),
            &*text.replace("block_m=128", "block_m=0"),
            &*text.replace("size 16", "size 99999999"),
            &*text.replace("kernel e ", "kernel e role=bwd "),
        ] {
            assert!(
                parse_manifest(broken, |_| Ok("x".into())).is_err(),
                "{broken}"
            );
        }
        // A field past the struct's end is an error, not a panic.
        let mut pb = ParamBytes {
            bytes: vec![0; 16],
            offsets: &m.fields,
        };
        assert!(pb.put("h", &[1; 8]).is_ok());
        assert!(pb.put("h", &[1; 9]).is_err());
        assert!(pb.put("nope", &[1]).is_err());
    }

    #[test]
    fn paper_configs_count_flops_as_the_papers() {
        let c = PaperConfig {
            head_dim: 128,
            seqlen: 2048,
            causal: false,
        };
        // batch 8, 16 heads: 4 x 2048^2 x 128 x 128 items.
        assert_eq!(c.batch_heads(), 128);
        assert_eq!(c.flops(), 4.0 * 2048.0 * 2048.0 * 128.0 * 128.0);
        assert_eq!(PaperConfig { causal: true, ..c }.flops() * 2.0, c.flops());
    }
}
