//! PTX fundamental types (`.u32`, `.f16x2`, `.pred`, ...) and state spaces, shared by the parser,
//! the lowering pass and the executor.

/// A PTX scalar (or packed-pair) type as written in a type qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    Tf32,
    F32,
    F64,
    Pred,
}

/// How the bits of a type are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TyKind {
    Bits,
    Unsigned,
    Signed,
    Float,
    Pred,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "b128" => Ty::B128,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "tf32" => Ty::Tf32,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    /// Size in bits (a predicate counts as 1).
    pub fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 | Ty::Tf32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::B128 => 128,
        }
    }

    /// Size in bytes as stored in memory.
    pub fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }

    pub fn kind(self) -> TyKind {
        match self {
            Ty::B8 | Ty::B16 | Ty::B32 | Ty::B64 | Ty::B128 => TyKind::Bits,
            Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 => TyKind::Unsigned,
            Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64 => TyKind::Signed,
            Ty::Pred => TyKind::Pred,
            _ => TyKind::Float,
        }
    }

    pub fn is_signed(self) -> bool {
        self.kind() == TyKind::Signed
    }

    pub fn is_float(self) -> bool {
        self.kind() == TyKind::Float
    }
}

/// A PTX state space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    Generic,
    Global,
    Shared,
    Local,
    Param,
    Const,
}

impl Space {
    pub fn parse(s: &str) -> Option<Space> {
        Some(match s {
            "global" => Space::Global,
            // One space: a shared::cluster address of a peer CTA carries its rank in a tag
            // that the accesses decode (exec/cluster.rs).
            "shared" | "shared::cta" | "shared::cluster" => Space::Shared,
            "local" => Space::Local,
            "param" | "param::entry" | "param::func" => Space::Param,
            "const" => Space::Const,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Space::Generic => "generic",
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
            Space::Param => "param",
            Space::Const => "const",
        }
    }
}
