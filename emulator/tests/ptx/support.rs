//! Helpers every family's tests use.

use flashmha_emulator::LaunchConfig;

/// A 1-d launch: `grid` CTAs of `threads` threads, no dynamic shared memory.
pub fn linear(grid: u32, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid: [grid, 1, 1],
        block: [threads, 1, 1],
        dynamic_smem_bytes: 0,
    }
}
