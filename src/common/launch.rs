//! The launch contract between ops and backends: a plan binds its buffers into at most a few
//! [`Launch`] values (entry, grid, block, dynamic shared memory, and the params struct's bytes),
//! and a backend runs a slice of them without knowing which op made them. The params bytes are
//! held inline (no heap), so binding and launching allocate nothing and can be captured in a CUDA
//! graph.

use crate::common::abi::{FlashFwdTmaParams, ParamsBytes};

/// Bytes of the largest params struct any kernel takes (the sm_90a forward's
/// `FlashFwdTmaParams`: three 128-byte tensor maps and the forward params).
pub const MAX_PARAMS_BYTES: usize = std::mem::size_of::<FlashFwdTmaParams>();

/// A params struct's bytes, 64-byte aligned as `FlashFwdTmaParams` (whose tensor maps must be)
/// requires.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct ParamsBlock {
    bytes: [u8; MAX_PARAMS_BYTES],
}

/// One kernel launch, ready for any backend.
#[derive(Clone, Copy)]
pub struct Launch {
    /// The `.entry` name (the registry finds its module).
    pub entry: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_smem_bytes: u32,
    /// Thread-block cluster shape (`[1, 1, 1]`: no cluster; a larger one launches with the
    /// cluster-dimension attribute, sm_90+).
    pub cluster: [u32; 3],
    params: ParamsBlock,
    params_len: usize,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("entry", &self.entry)
            .field("grid", &self.grid)
            .field("block", &self.block)
            .field("dynamic_smem_bytes", &self.dynamic_smem_bytes)
            .field("cluster", &self.cluster)
            .field("params_len", &self.params_len)
            .finish()
    }
}

impl PartialEq for Launch {
    fn eq(&self, other: &Self) -> bool {
        (
            self.entry,
            self.grid,
            self.block,
            self.dynamic_smem_bytes,
            self.cluster,
        ) == (
            other.entry,
            other.grid,
            other.block,
            other.dynamic_smem_bytes,
            other.cluster,
        ) && self.params() == other.params()
    }
}

impl Eq for Launch {}

impl Launch {
    /// A launch's geometry without params yet (what a plan holds before `bind`).
    pub const fn geometry(
        entry: &'static str,
        grid: [u32; 3],
        block: [u32; 3],
        dynamic_smem_bytes: u32,
    ) -> Launch {
        Launch {
            entry,
            grid,
            block,
            dynamic_smem_bytes,
            cluster: [1, 1, 1],
            params: ParamsBlock {
                bytes: [0; MAX_PARAMS_BYTES],
            },
            params_len: 0,
        }
    }

    /// This launch in thread-block clusters of `cluster` CTAs (each dimension divides the grid).
    pub const fn with_cluster(mut self, cluster: [u32; 3]) -> Launch {
        self.cluster = cluster;
        self
    }

    /// Whether the launch names a cluster of more than one CTA.
    pub fn is_cluster(&self) -> bool {
        self.cluster != [1, 1, 1]
    }

    /// This launch with `params` as its parameter bytes.
    pub fn with_params<P: ParamsBytes>(mut self, params: &P) -> Launch {
        const { assert!(std::mem::size_of::<P>() <= MAX_PARAMS_BYTES) };
        let b = params.as_bytes();
        self.params.bytes[..b.len()].copy_from_slice(b);
        self.params.bytes[b.len()..].fill(0);
        self.params_len = b.len();
        self
    }

    /// The params struct's bytes, exactly as the kernel's `.param` space holds them.
    pub fn params(&self) -> &[u8] {
        &self.params.bytes[..self.params_len]
    }

    /// A pointer to the params struct for `cuLaunchKernel`'s `kernelParams[0]` (our kernels take
    /// one struct by value); 64-byte aligned.
    pub fn params_ptr(&self) -> *const u8 {
        self.params.bytes.as_ptr()
    }

    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&b| u64::from(b)).product()
    }
}

/// The launches of one op call, in order (decode: the split kernel, then its combine). Fixed
/// capacity: no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launches {
    list: [Option<Launch>; Launches::CAPACITY],
}

impl Launches {
    /// Most launches one op call makes.
    pub const CAPACITY: usize = 2;

    /// No launch (e.g. an append of zero tokens).
    pub fn none() -> Launches {
        Launches { list: [None, None] }
    }

    pub fn one(l: Launch) -> Launches {
        Launches {
            list: [Some(l), None],
        }
    }

    pub fn two(first: Launch, second: Option<Launch>) -> Launches {
        Launches {
            list: [Some(first), second],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Launch> {
        self.list.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Launch> for Launches {
    fn from(l: Launch) -> Launches {
        Launches::one(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::abi::{FlashFwdParams, HeadSimParams};

    #[test]
    fn params_bytes_are_the_structs_bytes_and_nothing_more() {
        let p = FlashFwdParams {
            head_dim: 0x0102_0304,
            seqlen_k: 7,
            ..Default::default()
        };
        let l = Launch::geometry("e", [1, 2, 3], [128, 1, 1], 4096).with_params(&p);
        assert_eq!(l.params(), p.as_bytes());
        assert_eq!(l.params_ptr() as usize % 64, 0);
        assert_eq!(l.threads_per_block(), 128);
        // Rebinding a smaller struct leaves no stale bytes behind.
        let h = HeadSimParams {
            num_heads: 3,
            ..Default::default()
        };
        let l2 = l.with_params(&h);
        assert_eq!(l2.params(), h.as_bytes());
        assert_ne!(l, l2);
        let ls = Launches::two(l, Some(l2));
        assert_eq!(ls.len(), 2);
        assert_eq!(Launches::from(l).iter().count(), 1);
    }
}
