//! Shared helpers of the emulator integration tests: test-kernel PTX, parameter packing, random
//! data. (A module of the `fidelity` and `ops` test binaries.)
#![allow(dead_code)]

use flashmha::emulator::{
    Device, DevicePtr, Finding, FindingKind, LaunchConfig, LaunchReport, Module,
};
use rand::{Rng, SeedableRng};

/// Parses the PTX the build compiled from `kernels/emu_tests/<stem>.cu`.
pub fn module(stem: &str) -> Module {
    let ptx = flashmha::common::build_info::emu_test_ptx(stem)
        .unwrap_or_else(|| panic!("no emu test PTX `{stem}`"));
    Module::parse(ptx).unwrap_or_else(|e| panic!("{stem}: {e}"))
}

/// One kernel argument.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(DevicePtr),
    U32(u32),
    I32(i32),
    F32(f32),
}

/// Lays the arguments out at the offsets the entry declares.
pub fn params(m: &Module, entry: &str, args: &[Arg]) -> Vec<u8> {
    let layout = m.param_layout(entry).expect("entry");
    assert_eq!(layout.len(), args.len(), "argument count of {entry}");
    let mut buf = vec![0u8; m.param_size(entry).unwrap()];
    for (p, a) in layout.iter().zip(args) {
        let bytes: Vec<u8> = match *a {
            Arg::Ptr(d) => d.0.to_le_bytes().to_vec(),
            Arg::U32(v) => v.to_le_bytes().to_vec(),
            Arg::I32(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
        };
        assert_eq!(bytes.len() as u32, p.size, "size of parameter {}", p.name);
        buf[p.offset as usize..p.offset as usize + bytes.len()].copy_from_slice(&bytes);
    }
    buf
}

pub fn cfg(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        dynamic_smem_bytes: 0,
    }
}

pub fn launch(
    dev: &mut Device,
    m: &Module,
    entry: &str,
    grid: u32,
    block: u32,
    args: &[Arg],
) -> LaunchReport {
    let p = params(m, entry, args);
    dev.launch(m, entry, &cfg(grid, block), &p)
        .unwrap_or_else(|e| panic!("{entry}: {e}"))
}

/// What the tests ask of a launch report.
pub trait ReportExt: Sized {
    /// The report, insisting that it has no finding (each finding names its kernel).
    fn clean(self) -> Self;
    /// The one finding of `kind`, insisting there is exactly one.
    fn only(&self, kind: FindingKind) -> &Finding;
}

impl ReportExt for LaunchReport {
    fn clean(self) -> Self {
        assert!(
            self.findings.is_empty(),
            "the launch produced findings:\n{}",
            self.findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        self
    }

    fn only(&self, kind: FindingKind) -> &Finding {
        let mut of_kind = self.of_kind(kind);
        let first = of_kind.next();
        assert!(
            first.is_some() && of_kind.next().is_none(),
            "expected exactly one {kind:?}: {:?}",
            self.findings
        );
        first.unwrap()
    }
}

/// A fresh random seed, or `FLASHMHA_SEED` to repeat a run; printed either way.
pub fn seed() -> u64 {
    let seed = std::env::var("FLASHMHA_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("FLASHMHA_SEED={seed}");
    seed
}

/// Runs `entry` of `m` as one CTA of `block` threads on (`input`, a fresh output of `n`
/// elements), insisting on a clean report; the output.
pub fn run_in_out<T: bytemuck::Pod, U: bytemuck::Pod>(
    m: &Module,
    entry: &str,
    block: u32,
    input: &[T],
    n: usize,
) -> Vec<U> {
    let mut dev = Device::new();
    let pin = upload(&mut dev, input);
    let pout = dev.alloc(n * std::mem::size_of::<U>());
    launch(
        &mut dev,
        m,
        entry,
        1,
        block,
        &[Arg::Ptr(pin), Arg::Ptr(pout)],
    )
    .clean();
    download(&dev, pout, n)
}

/// The (row, q head) pairs a key of KV head `g` reaches: every row of `0..rows` that `sees`
/// it, in each of the `group` q heads that share that KV head.
pub fn rows_of_group(
    rows: usize,
    g: usize,
    group: usize,
    sees: impl Fn(usize) -> bool,
) -> Vec<(usize, usize)> {
    (0..rows)
        .filter(|&i| sees(i))
        .flat_map(|i| (g * group..(g + 1) * group).map(move |h| (i, h)))
        .collect()
}

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub fn upload<T: bytemuck::Pod>(dev: &mut Device, v: &[T]) -> DevicePtr {
    dev.upload(bytemuck::cast_slice(v))
}

pub fn download<T: bytemuck::Pod>(dev: &Device, p: DevicePtr, n: usize) -> Vec<T> {
    let bytes = dev.read(p, n * std::mem::size_of::<T>()).unwrap();
    let mut out = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&bytes);
    out
}

/// Random floats in [-range, range), never all zero.
pub fn rand_f32(r: &mut impl Rng, n: usize, range: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-range..range)).collect()
}
