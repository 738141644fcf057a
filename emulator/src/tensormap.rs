//! Tensor maps for the emulator: the host-side encoder of the fields the CUDA driver's
//! `cuTensorMapEncodeTiled` takes, into the opaque 128-byte object a kernel parameter (or global
//! memory) carries, and the decoder the TMA instructions (`cp.async.bulk.tensor`,
//! `cp.async.bulk.prefetch.tensor`, `prefetch.tensormap`) use on the device side.
//!
//! On a GPU the 128 bytes are the driver's private format; kernels never look inside, so the
//! emulator defines its own. The checks follow the requirements listed in the CUDA Driver API
//! reference, "Tensor Map Object Management: cuTensorMapEncodeTiled" (cuda.h of CUDA 13), and
//! each violation is a typed [`TensorMapError`]. Only the non-interleaved tiled mode is
//! implemented (interleaved layouts are rejected as unsupported).
//!
//! # Layout of the 128 bytes (little endian)
//! | offset | size | field                                                           |
//! |--------|------|-----------------------------------------------------------------|
//! | 0      | 4    | magic `FMTM`                                                    |
//! | 4      | 1    | layout version (1)                                              |
//! | 5      | 1    | data type (numbered as `CUtensorMapDataType`)                   |
//! | 6      | 1    | rank (1..=5)                                                    |
//! | 7      | 1    | interleave (0 = none)                                           |
//! | 8      | 1    | swizzle (0 none, 1 32B, 2 64B, 3 128B)                          |
//! | 9      | 1    | L2 promotion (0 none, 1 64B, 2 128B, 3 256B)                    |
//! | 10     | 1    | OOB fill (0 zero, 1 NaN)                                        |
//! | 11     | 5    | zero                                                            |
//! | 16     | 8    | global address                                                  |
//! | 24     | 40   | global dims, 5 x u64 (unused dims 0)                            |
//! | 64     | 32   | global strides in bytes of dims 1..=4, 4 x u64                  |
//! | 96     | 10   | box dims, 5 x u16                                               |
//! | 106    | 5    | element strides, 5 x u8                                         |
//! | 111    | 1    | zero                                                            |
//! | 112    | 8    | FNV-1a checksum of bytes 0..112 (detects a kernel reading junk) |
//! | 120    | 8    | zero                                                            |

use std::fmt;

/// Size of a tensor-map object (`CUtensorMap`).
pub const TENSOR_MAP_BYTES: usize = 128;
/// Alignment a tensor map must have in memory (CUDA Driver API: "tensorMap address must be
/// aligned to 64 bytes").
pub const TENSOR_MAP_ALIGN: u64 = 64;

const MAGIC: [u8; 4] = *b"FMTM";
const VERSION: u8 = 1;

/// Element type of the tensor (`CUtensorMapDataType`, same numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TmaDataType {
    U8 = 0,
    U16,
    U32,
    I32,
    U64,
    I64,
    F16,
    F32,
    F64,
    Bf16,
    F32Ftz,
    Tf32,
    Tf32Ftz,
}

impl TmaDataType {
    /// Every type, in discriminant order (the order of the driver's `CUtensorMapDataType`).
    pub const ALL: [TmaDataType; 13] = [
        TmaDataType::U8,
        TmaDataType::U16,
        TmaDataType::U32,
        TmaDataType::I32,
        TmaDataType::U64,
        TmaDataType::I64,
        TmaDataType::F16,
        TmaDataType::F32,
        TmaDataType::F64,
        TmaDataType::Bf16,
        TmaDataType::F32Ftz,
        TmaDataType::Tf32,
        TmaDataType::Tf32Ftz,
    ];

    /// Bytes per element.
    pub fn size(self) -> u32 {
        match self {
            TmaDataType::U8 => 1,
            TmaDataType::U16 | TmaDataType::F16 | TmaDataType::Bf16 => 2,
            TmaDataType::U64 | TmaDataType::I64 | TmaDataType::F64 => 8,
            _ => 4,
        }
    }

    /// Whether the NaN out-of-bounds fill is allowed (floating-point types only).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            TmaDataType::F16
                | TmaDataType::F32
                | TmaDataType::F64
                | TmaDataType::Bf16
                | TmaDataType::F32Ftz
                | TmaDataType::Tf32
                | TmaDataType::Tf32Ftz
        )
    }
}

/// `CUtensorMapInterleave`. Only `None` is implemented by the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TmaInterleave {
    None = 0,
    B16,
    B32,
}

/// `CUtensorMapSwizzle` (the 16-byte-chunk modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TmaSwizzle {
    None = 0,
    B32,
    B64,
    B128,
}

impl TmaSwizzle {
    /// The swizzle span in bytes (0 for none).
    pub fn span(self) -> u32 {
        match self {
            TmaSwizzle::None => 0,
            TmaSwizzle::B32 => 32,
            TmaSwizzle::B64 => 64,
            TmaSwizzle::B128 => 128,
        }
    }

    /// Where byte `off` of the dense box lands in shared memory (`off` is the absolute
    /// shared-memory offset). The 16-byte chunk index within each 128-byte line is XORed with
    /// the line index modulo span/16: bits [4, 4+b) ^= bits [7, 7+b) with b = 1, 2, 3 for 32B,
    /// 64B, 128B (PTX ISA "Tensors: Tensor Swizzling Modes"; the pattern repeats every 256,
    /// 512, 1024 bytes).
    pub fn apply(self, off: u32) -> u32 {
        let mask = match self {
            TmaSwizzle::None => return off,
            TmaSwizzle::B32 => 1,
            TmaSwizzle::B64 => 3,
            TmaSwizzle::B128 => 7,
        };
        off ^ (((off >> 7) & mask) << 4)
    }

    /// Shared-memory alignment a swizzled box needs so the pattern starts at its first byte
    /// (the repeat size; 128 bytes without swizzle).
    pub fn smem_align(self) -> u32 {
        match self {
            TmaSwizzle::None => 128,
            TmaSwizzle::B32 => 256,
            TmaSwizzle::B64 => 512,
            TmaSwizzle::B128 => 1024,
        }
    }
}

/// `CUtensorMapL2promotion` (a cache hint; no effect on results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TmaL2Promotion {
    None = 0,
    B64,
    B128,
    B256,
}

/// `CUtensorMapFloatOOBfill`: what out-of-bounds box elements read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TmaOobFill {
    /// Zeros.
    None = 0,
    /// A NaN (the emulator writes all-ones bytes, a NaN in every float format).
    NanRequestZeroFma,
}

/// The fields of `cuTensorMapEncodeTiled`. The rank is `global_dim.len()`; dimension 0 is the
/// innermost (contiguous) one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TiledTensorMap {
    pub data_type: TmaDataType,
    /// Device address of the tensor's first element.
    pub global_address: u64,
    /// Elements per dimension (rank entries).
    pub global_dim: Vec<u64>,
    /// Byte stride of dimensions 1.. (rank - 1 entries; dimension 0 is contiguous).
    pub global_strides: Vec<u64>,
    /// Box (tile) size in elements per dimension (rank entries).
    pub box_dim: Vec<u32>,
    /// Traversal stride per dimension (rank entries; entry 0 is ignored, as by the driver).
    pub element_strides: Vec<u32>,
    pub interleave: TmaInterleave,
    pub swizzle: TmaSwizzle,
    pub l2_promotion: TmaL2Promotion,
    pub oob_fill: TmaOobFill,
}

/// Why a tensor map cannot be encoded (or the 128 bytes a kernel used are not one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorMapError {
    #[error("tensor rank {0} is not in 1..=5")]
    Rank(usize),
    #[error("{what} has {got} entries, the rank needs {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("global address {0:#x} is not 16-byte aligned")]
    AddressAlignment(u64),
    #[error("global dimension {dim} is {value}; it must be in 1..=2^31")]
    GlobalDim { dim: usize, value: u64 },
    #[error(
        "global stride of dimension {dim} is {value} bytes; it must be a multiple of 16 below 2^40"
    )]
    GlobalStride { dim: usize, value: u64 },
    #[error("box dimension {dim} is {value}; it must be in 1..=256")]
    BoxDim { dim: usize, value: u32 },
    #[error("box inner dimension is {0} bytes; it must be a multiple of 16")]
    BoxInnerBytes(u64),
    #[error("element stride of dimension {dim} is {value}; it must be in 1..=8")]
    ElementStride { dim: usize, value: u32 },
    #[error("box inner dimension of {inner} bytes exceeds the {span}-byte swizzle span")]
    SwizzleSpan { inner: u64, span: u32 },
    #[error("the NaN out-of-bounds fill needs a floating-point data type, not {0:?}")]
    OobFillNotFloat(TmaDataType),
    #[error("interleaved layouts ({0:?}) are not implemented by the emulator")]
    Unsupported(TmaInterleave),
    #[error("the bytes are not a tensor map encoded by this emulator ({0})")]
    Corrupt(&'static str),
}

/// An encoded tensor map: the 128 bytes to place in a kernel parameter (declared
/// `.param .align 64 .b8 name[128]`) or in 64-byte aligned global memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TensorMap {
    bytes: [u8; TENSOR_MAP_BYTES],
}

impl fmt::Debug for TensorMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match TensorMap::decode(&self.bytes) {
            Ok(d) => write!(f, "TensorMap({d:?})"),
            Err(e) => write!(f, "TensorMap(<{e}>)"),
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The fields of a tiled map that the driver's rules constrain (dimension 0 first; `strides`
/// are the byte strides of dimensions 1 and up).
struct Fields<'a> {
    data_type: TmaDataType,
    address: u64,
    dims: &'a [u64],
    strides: &'a [u64],
    box_dim: &'a [u32],
    elem_strides: &'a [u32],
    swizzle: TmaSwizzle,
    nan_fill: bool,
}

/// The rules `cuTensorMapEncodeTiled` applies (CUDA driver API reference, "Tensor Map Object
/// Managment"): the encoder checks them before it writes a map, and the decoder again before a
/// TMA instruction uses one, so a map forged or corrupted in memory (a valid checksum over bad
/// fields) is a finding at that instruction, never a division by zero or a silent run.
fn check_fields(f: &Fields) -> Result<(), TensorMapError> {
    if !f.address.is_multiple_of(16) {
        return Err(TensorMapError::AddressAlignment(f.address));
    }
    for (dim, &v) in f.dims.iter().enumerate() {
        if v == 0 || v > 1 << 31 {
            return Err(TensorMapError::GlobalDim { dim, value: v });
        }
    }
    for (k, &v) in f.strides.iter().enumerate() {
        if !v.is_multiple_of(16) || v >= 1 << 40 {
            return Err(TensorMapError::GlobalStride {
                dim: k + 1,
                value: v,
            });
        }
    }
    for (dim, &v) in f.box_dim.iter().enumerate() {
        if v == 0 || v > 256 {
            return Err(TensorMapError::BoxDim { dim, value: v });
        }
    }
    let inner = f.box_dim[0] as u64 * f.data_type.size() as u64;
    if !inner.is_multiple_of(16) {
        return Err(TensorMapError::BoxInnerBytes(inner));
    }
    for (dim, &v) in f.elem_strides.iter().enumerate() {
        if v == 0 || v > 8 {
            return Err(TensorMapError::ElementStride { dim, value: v });
        }
    }
    let span = f.swizzle.span();
    if span > 0 && inner > span as u64 {
        return Err(TensorMapError::SwizzleSpan { inner, span });
    }
    if f.nan_fill && !f.data_type.is_float() {
        return Err(TensorMapError::OobFillNotFloat(f.data_type));
    }
    Ok(())
}

impl TensorMap {
    /// Validates the fields as `cuTensorMapEncodeTiled` does and encodes them.
    pub fn encode_tiled(d: &TiledTensorMap) -> Result<TensorMap, TensorMapError> {
        let rank = d.global_dim.len();
        if !(1..=5).contains(&rank) {
            return Err(TensorMapError::Rank(rank));
        }
        let len = |what, got: usize, expected: usize| {
            if got == expected {
                Ok(())
            } else {
                Err(TensorMapError::Length {
                    what,
                    expected,
                    got,
                })
            }
        };
        len("global_strides", d.global_strides.len(), rank - 1)?;
        len("box_dim", d.box_dim.len(), rank)?;
        len("element_strides", d.element_strides.len(), rank)?;
        if d.interleave != TmaInterleave::None {
            return Err(TensorMapError::Unsupported(d.interleave));
        }
        check_fields(&Fields {
            data_type: d.data_type,
            address: d.global_address,
            dims: &d.global_dim,
            strides: &d.global_strides,
            box_dim: &d.box_dim,
            elem_strides: &d.element_strides,
            swizzle: d.swizzle,
            nan_fill: d.oob_fill == TmaOobFill::NanRequestZeroFma,
        })?;
        let mut b = [0u8; TENSOR_MAP_BYTES];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = d.data_type as u8;
        b[6] = rank as u8;
        b[7] = d.interleave as u8;
        b[8] = d.swizzle as u8;
        b[9] = d.l2_promotion as u8;
        b[10] = d.oob_fill as u8;
        b[16..24].copy_from_slice(&d.global_address.to_le_bytes());
        for (k, v) in d.global_dim.iter().enumerate() {
            b[24 + 8 * k..32 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
        for (k, v) in d.global_strides.iter().enumerate() {
            b[64 + 8 * k..72 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
        for (k, v) in d.box_dim.iter().enumerate() {
            b[96 + 2 * k..98 + 2 * k].copy_from_slice(&(*v as u16).to_le_bytes());
        }
        for (k, v) in d.element_strides.iter().enumerate() {
            b[106 + k] = *v as u8;
        }
        let sum = fnv1a(&b[..112]);
        b[112..120].copy_from_slice(&sum.to_le_bytes());
        Ok(TensorMap { bytes: b })
    }

    /// The 128 opaque bytes.
    pub fn as_bytes(&self) -> &[u8; TENSOR_MAP_BYTES] {
        &self.bytes
    }

    /// Decodes 128 bytes written by [`TensorMap::encode_tiled`].
    pub fn decode(bytes: &[u8]) -> Result<TiledTensorMap, TensorMapError> {
        let m = Decoded::from_bytes(bytes)?;
        let rank = m.rank as usize;
        Ok(TiledTensorMap {
            data_type: m.data_type,
            global_address: m.address,
            global_dim: m.dims[..rank].to_vec(),
            global_strides: m.strides[1..rank].to_vec(),
            box_dim: m.box_dim[..rank].to_vec(),
            element_strides: m.elem_strides[..rank].to_vec(),
            interleave: TmaInterleave::None,
            swizzle: m.swizzle,
            l2_promotion: m.l2,
            oob_fill: if m.nan_fill {
                TmaOobFill::NanRequestZeroFma
            } else {
                TmaOobFill::None
            },
        })
    }
}

/// A decoded tensor map in the fixed-size form the TMA engine walks (no allocation per copy).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decoded {
    pub data_type: TmaDataType,
    pub rank: u8,
    pub address: u64,
    pub dims: [u64; 5],
    /// Byte strides; `strides[0]` is the element size.
    pub strides: [u64; 5],
    pub box_dim: [u32; 5],
    pub elem_strides: [u32; 5],
    pub swizzle: TmaSwizzle,
    pub l2: TmaL2Promotion,
    pub nan_fill: bool,
}

impl Decoded {
    pub fn from_bytes(b: &[u8]) -> Result<Decoded, TensorMapError> {
        if b.len() < TENSOR_MAP_BYTES || b[0..4] != MAGIC {
            return Err(TensorMapError::Corrupt("no tensor-map magic"));
        }
        if b[4] != VERSION {
            return Err(TensorMapError::Corrupt("unknown layout version"));
        }
        let sum = u64::from_le_bytes(b[112..120].try_into().unwrap());
        if sum != fnv1a(&b[..112]) {
            return Err(TensorMapError::Corrupt("checksum mismatch"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let data_type = *TmaDataType::ALL
            .get(b[5] as usize)
            .ok_or(TensorMapError::Corrupt("data type"))?;
        let rank = b[6];
        if !(1..=5).contains(&rank) || b[7] != 0 {
            return Err(TensorMapError::Corrupt("rank or interleave"));
        }
        let swizzle = match b[8] {
            0 => TmaSwizzle::None,
            1 => TmaSwizzle::B32,
            2 => TmaSwizzle::B64,
            3 => TmaSwizzle::B128,
            _ => return Err(TensorMapError::Corrupt("swizzle")),
        };
        let l2 = match b[9] {
            0 => TmaL2Promotion::None,
            1 => TmaL2Promotion::B64,
            2 => TmaL2Promotion::B128,
            3 => TmaL2Promotion::B256,
            _ => return Err(TensorMapError::Corrupt("L2 promotion")),
        };
        let mut m = Decoded {
            data_type,
            rank,
            address: u64_at(16),
            dims: [1; 5],
            strides: [0; 5],
            box_dim: [1; 5],
            elem_strides: [1; 5],
            swizzle,
            l2,
            nan_fill: b[10] == 1,
        };
        m.strides[0] = data_type.size() as u64;
        for k in 0..rank as usize {
            m.dims[k] = u64_at(24 + 8 * k);
            m.box_dim[k] = u16::from_le_bytes([b[96 + 2 * k], b[97 + 2 * k]]) as u32;
            m.elem_strides[k] = b[106 + k] as u32;
            if k > 0 {
                m.strides[k] = u64_at(64 + 8 * (k - 1));
            }
        }
        let r = rank as usize;
        check_fields(&Fields {
            data_type,
            address: m.address,
            dims: &m.dims[..r],
            strides: &m.strides[1..r],
            box_dim: &m.box_dim[..r],
            elem_strides: &m.elem_strides[..r],
            swizzle,
            nan_fill: m.nan_fill,
        })?;
        Ok(m)
    }

    /// Elements traversed along dimension `k` (`ceil(box / element stride)`; the element
    /// stride of dimension 0 is ignored, as the driver documents).
    pub fn extent(&self, k: usize) -> u32 {
        if k == 0 {
            self.box_dim[0]
        } else {
            self.box_dim[k].div_ceil(self.elem_strides[k])
        }
    }

    /// Bytes the box occupies in shared memory (and the transaction bytes of one load).
    pub fn box_bytes(&self) -> u64 {
        (0..self.rank as usize)
            .map(|k| self.extent(k) as u64)
            .product::<u64>()
            * self.strides[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> TiledTensorMap {
        TiledTensorMap {
            data_type: TmaDataType::F16,
            global_address: 0x1000,
            global_dim: vec![64, 100],
            global_strides: vec![128],
            box_dim: vec![64, 8],
            element_strides: vec![1, 1],
            interleave: TmaInterleave::None,
            swizzle: TmaSwizzle::B128,
            l2_promotion: TmaL2Promotion::B128,
            oob_fill: TmaOobFill::None,
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let m = TensorMap::encode_tiled(&desc()).unwrap();
        assert_eq!(TensorMap::decode(m.as_bytes()).unwrap(), desc());
        let mut b = *m.as_bytes();
        b[30] ^= 1;
        assert!(matches!(
            TensorMap::decode(&b),
            Err(TensorMapError::Corrupt(_))
        ));
        assert_eq!(Decoded::from_bytes(m.as_bytes()).unwrap().box_bytes(), 1024);
    }

    /// A map forged in memory with a valid checksum over fields the encoder refuses is refused
    /// by the decoder too (it was a division by zero for element stride 0, and a silent run for
    /// a misaligned address or a 2^63 dimension).
    #[test]
    fn forged_maps_with_valid_checksums_are_refused_not_run() {
        let good = *TensorMap::encode_tiled(&desc()).unwrap().as_bytes();
        let forge = |edit: &dyn Fn(&mut [u8; TENSOR_MAP_BYTES])| {
            let mut b = good;
            edit(&mut b);
            let sum = fnv1a(&b[..112]);
            b[112..120].copy_from_slice(&sum.to_le_bytes());
            b
        };
        let cases: [(&str, [u8; TENSOR_MAP_BYTES]); 5] = [
            ("element stride 0", forge(&|b| b[107] = 0)),
            ("address 7 bytes off", forge(&|b| b[16] += 7)),
            (
                "dimension 2^63",
                forge(&|b| b[24..32].copy_from_slice(&(1u64 << 63).to_le_bytes())),
            ),
            (
                "box dim 0",
                forge(&|b| b[98..100].copy_from_slice(&0u16.to_le_bytes())),
            ),
            // Was an overflow of the row address (`g * stride`) in exec/bulk.rs.
            (
                "global stride 2^63",
                forge(&|b| b[64..72].copy_from_slice(&(1u64 << 63).to_le_bytes())),
            ),
        ];
        for (what, b) in cases {
            assert!(Decoded::from_bytes(&b).is_err(), "{what}");
            assert!(TensorMap::decode(&b).is_err(), "{what}");
        }
        // The same edit without the checksum fixed is still a corrupt map.
        let mut b = good;
        b[107] = 0;
        assert!(matches!(
            Decoded::from_bytes(&b),
            Err(TensorMapError::Corrupt(_))
        ));
    }

    #[test]
    fn swizzle_permutes_chunks_within_a_line() {
        for sw in [TmaSwizzle::B32, TmaSwizzle::B64, TmaSwizzle::B128] {
            let n = sw.smem_align();
            let mut seen: Vec<u32> = (0..n).map(|o| sw.apply(o)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{sw:?} is a permutation");
        }
        // 128B: line 1 swaps chunks 0 and 1.
        assert_eq!(TmaSwizzle::B128.apply(128), 144);
    }
}
