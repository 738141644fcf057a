//! `flashmha info`: the toolkit the build used, every embedded kernel with its ptxas figures per
//! architecture, and whether a GPU is usable here.

use super::table;
use flashmha::common::build_info::{self, FWD_KERNELS, MODULES, TOOLKIT};
use flashmha::cuda;

pub fn run() -> super::CliResult<()> {
    let mut t = table::new(&["toolkit", ""]);
    t.add_row(vec![
        "nvcc",
        &format!("{} ({})", TOOLKIT.nvcc_version, TOOLKIT.nvcc_source),
    ]);
    t.add_row(vec!["nvcc path", TOOLKIT.nvcc_path]);
    t.add_row(vec!["libclang (bindgen)", TOOLKIT.libclang]);
    let mut ptx_archs: Vec<&str> = MODULES.iter().map(|m| m.ptx_arch).collect();
    ptx_archs.sort_unstable();
    ptx_archs.dedup();
    let ptx_list = ptx_archs.join(", ");
    t.add_row(vec!["embedded PTX", &ptx_list]);
    println!("{t}");

    let mut t = table::new(&[
        "entry",
        "module",
        "arch",
        "registers",
        "static smem B",
        "dynamic smem B",
        "stack B",
        "spill B (st/ld)",
        "cubin KiB",
    ]);
    for m in MODULES {
        for entry in m.entries {
            let dynamic = FWD_KERNELS
                .iter()
                .find(|r| r.entry == *entry)
                .map_or("-".to_string(), |r| r.smem_bytes.to_string());
            for s in build_info::ptxas_stats(entry) {
                let cubin = m
                    .cubins
                    .iter()
                    .find(|c| c.arch == s.arch)
                    .map_or(0, |c| c.bytes.len());
                t.add_row(vec![
                    entry.to_string(),
                    m.name.to_string(),
                    s.arch.to_string(),
                    s.registers.to_string(),
                    s.static_smem_bytes.to_string(),
                    dynamic.clone(),
                    s.stack_frame_bytes.to_string(),
                    format!("{}/{}", s.spill_store_bytes, s.spill_load_bytes),
                    format!("{:.1}", cubin as f64 / 1024.0),
                ]);
            }
        }
    }
    println!("{t}");

    let mut t = table::new(&[
        "forward kernel",
        "target",
        "dtype",
        "head dim (d_qk / d_v)",
        "block m x n",
        "warps",
    ]);
    for r in FWD_KERNELS {
        t.add_row(vec![
            r.entry.to_string(),
            r.target.to_string(),
            r.dtype.to_string(),
            // d_qk, or "d_qk / d_v" for a pair row (issue 23).
            if r.head_dim_v == r.head_dim {
                r.head_dim.to_string()
            } else {
                format!("{} / {}", r.head_dim, r.head_dim_v)
            },
            format!("{} x {}", r.block_m, r.block_n),
            r.num_warps.to_string(),
        ]);
    }
    println!("{t}");

    println!("{}", gpu_line());
    Ok(())
}

fn gpu_line() -> String {
    if !cuda::driver_present() {
        return "GPU: none (no CUDA driver library on this machine; the emulator backend runs \
                every kernel instead)"
            .into();
    }
    match cuda::CudaBackend::new(0) {
        Ok(b) => {
            let (major, minor) = b.compute_capability();
            let name = b.context().name().unwrap_or_else(|_| "unknown".into());
            format!("GPU: {name} (compute capability {major}.{minor}), kernels loaded")
        }
        Err(e) => format!("GPU: driver present but unusable: {e}"),
    }
}
