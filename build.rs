//! Build script: finds (or provisions) nvcc and libclang, generates the Rust side of the
//! launch-parameter ABI with bindgen, compiles every kernel to PTX and cubins, and writes the
//! registry of embedded images. Each step lives in its own file under `build/`.

#[path = "build/bindings.rs"]
mod bindings;
#[cfg(feature = "capi")]
#[path = "build/capi.rs"]
mod capi;
#[path = "build/codegen.rs"]
mod codegen;
#[path = "build/compile.rs"]
mod compile;
#[path = "build/decode_table.rs"]
mod decode_table;
#[path = "build/kernel_cache.rs"]
mod kernel_cache;
#[path = "build/kernel_table.rs"]
mod kernel_table;
#[path = "build/libclang.rs"]
mod libclang;
#[path = "build/pins.rs"]
mod pins;
#[path = "build/provision.rs"]
mod provision;
#[path = "build/ptxas_report.rs"]
mod ptxas_report;
#[path = "build/toolkit.rs"]
mod toolkit;

use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let kernels = root.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=toolchain/pins.env");
    println!("cargo:rerun-if-changed=build");
    for var in toolkit::TOOLKIT_ENV.iter().chain(&[
        provision::NO_PROVISION_ENV,
        provision::CACHE_DIR_ENV,
        libclang::LIBCLANG_ENV,
    ]) {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let pins = pins::Pins::load(&root.join("toolchain/pins.env"));
    let libclang = libclang::ensure(&pins);
    bindings::generate(
        &kernels.join("params.h"),
        &out_dir.join("params_bindings.rs"),
    );
    println!("cargo:rerun-if-changed=include");
    // The C++ test client is compiled by the `capi/` member's build script (capi/build.rs), so
    // a downstream crate enabling `capi` never builds it.
    #[cfg(feature = "capi")]
    capi::generate_bindings(
        &root.join("include/flashmha.h"),
        &out_dir.join("capi_bindings.rs"),
    );

    let toolkit = toolkit::locate(&pins);
    println!("cargo:rerun-if-env-changed={}", kernel_cache::NO_CACHE_ENV);
    let cache = kernel_cache::KernelCache::open(&root, &kernels, &toolkit);
    let cubin_archs = pins.list("CUBIN_ARCHS");
    let ptx_arch = pins.get("PTX_ARCH");
    let sm75_cubin_archs = pins.list("SM75_CUBIN_ARCHS");
    let sm75_ptx_arch = pins.get("SM75_PTX_ARCH");
    let sm90_cubin_archs = pins.list("SM90_CUBIN_ARCHS");
    let sm90_ptx_arch = pins.get("SM90_PTX_ARCH");
    let product_out = out_dir.join("kernels");
    let sm75_out = out_dir.join("kernels_sm75");
    let sm90_out = out_dir.join("kernels_sm90");
    let emu_out = out_dir.join("emu_tests");
    for dir in [&product_out, &sm75_out, &sm90_out, &emu_out] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let job = compile::Job {
        toolkit: &toolkit,
        include_dir: &kernels,
        out_dir: &product_out,
        ptx_arch,
        cubin_archs: &cubin_archs,
        cache: cache.as_ref(),
    };
    // Ampere and newer: kernels/sm80/*.cu (cp.async, m16n8k16), and the ABI probes at the root.
    let mut sm80_sources = cu_files(&kernels.join("sm80"));
    sm80_sources.extend(cu_files(&kernels));
    let (mut product, mut stats) = compile::compile_all(&job, &sm80_sources, true);
    // Turing: kernels/sm75/*.cu, their own PTX and cubin (no cp.async, no m16n8k16 there).
    let sm75_job = compile::Job {
        out_dir: &sm75_out,
        ptx_arch: sm75_ptx_arch,
        cubin_archs: &sm75_cubin_archs,
        ..job
    };
    let (sm75_product, sm75_stats) =
        compile::compile_all(&sm75_job, &cu_files(&kernels.join("sm75")), true);
    product.extend(sm75_product);
    stats.extend(sm75_stats);
    // Hopper: kernels/sm90/*.cu (TMA, wgmma, mbarrier), arch-specific compute_90a PTX and
    // sm_90a cubin only.
    let sm90_job = compile::Job {
        out_dir: &sm90_out,
        ptx_arch: sm90_ptx_arch,
        cubin_archs: &sm90_cubin_archs,
        ..job
    };
    let (sm90_product, sm90_stats) =
        compile::compile_all(&sm90_job, &cu_files(&kernels.join("sm90")), true);
    product.extend(sm90_product);
    stats.extend(sm90_stats);
    let emu_job = compile::Job {
        out_dir: &emu_out,
        ..job
    };
    let (emu_tests, _) =
        compile::compile_all(&emu_job, &cu_files(&kernels.join("emu_tests")), false);

    let rows = kernel_table::parse(&kernels.join("kernel_table.h"));
    check_table_against_modules(&rows, &product, |target| match target {
        "Turing" => sm75_ptx_arch,
        "Hopper" => sm90_ptx_arch,
        _ => ptx_arch,
    });
    decode_table::write(&rows, &out_dir.join("decode_generated.rs"));

    codegen::write(
        &codegen::Generated {
            toolkit: &toolkit,
            libclang: &libclang,
            ptx_arch,
            product: &product,
            emu_tests: &emu_tests,
            stats: &stats,
            rows: &rows,
        },
        &out_dir.join("kernels_generated.rs"),
    );
}

/// The `.cu` files directly in `dir`, sorted so the build is deterministic.
fn cu_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "cu"));
    files.sort();
    files
}

/// Every table row must be defined by exactly one compiled module, compiled for the PTX
/// architecture of the row's target (`ptx_arch_of`: an sm_90a row in kernels/sm90/, say).
fn check_table_against_modules<'a>(
    rows: &[kernel_table::KernelRow],
    modules: &[compile::CompiledModule],
    ptx_arch_of: impl Fn(&str) -> &'a str,
) {
    let defined: Vec<(String, &str)> = modules
        .iter()
        .flat_map(|m| {
            codegen::ptx_entries(&std::fs::read_to_string(&m.ptx).unwrap())
                .into_iter()
                .map(|e| (e, m.ptx_arch.as_str()))
        })
        .collect();
    for row in rows {
        let defining: Vec<&str> = defined
            .iter()
            .filter(|(e, _)| *e == row.entry())
            .map(|(_, arch)| *arch)
            .collect();
        assert!(
            defining.len() == 1,
            "kernels/kernel_table.h lists {} but {} compiled modules define it",
            row.entry(),
            defining.len()
        );
        let want = ptx_arch_of(row.target());
        assert!(
            defining[0] == want,
            "kernels/kernel_table.h lists {} as a {} row, but it is compiled for {} (expected {want})",
            row.entry(),
            row.target(),
            defining[0]
        );
    }
}
