//! Device addresses of one forward call's buffers, as plain numbers, so validation (alignment,
//! aliasing) and the launch plan stay pure and backend-independent. Each backend fills this from
//! its own buffers (cudarc device pointers, or emulator allocations).

/// Device addresses; 0 means "absent" for the optional buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FwdBuffers {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    pub lse: u64,
    pub entropy: u64,
    pub alibi_slopes: u64,
    pub head_gates: u64,
    pub cu_seqlens_q: u64,
    pub cu_seqlens_k: u64,
}
