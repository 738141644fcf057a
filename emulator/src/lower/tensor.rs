//! Tensor-core family: `mma.sync.aligned.{m16n8k16,m16n8k8}.row.col` (f16/bf16 inputs, f16/f32
//! accumulators), `ldmatrix.sync.aligned.m8n8.{x1,x2,x4}(.trans).shared.b16` and its mirror
//! `stmatrix.sync.aligned.m8n8.{x1,x2,x4}(.trans).shared.b16`.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::{Space, Ty};
use super::quals::Quals;
use super::Lowerer;

impl Lowerer {
    pub(super) fn lower_tensor(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let base = q.base();
        // Both are warp-wide `.sync.aligned` instructions.
        q.has("sync");
        q.has("aligned");
        match base {
            "mma" => self.lower_mma(i, q),
            "stmatrix" => self.lower_stmatrix(i, q),
            _ => self.lower_ldmatrix(i, q),
        }
    }

    /// The shape, count and space qualifiers shared by `ldmatrix` and `stmatrix`:
    /// (number of matrices, `.trans`, generic addressing).
    fn matrix_quals(&self, i: &ast::Instr, q: &mut Quals) -> Result<(usize, bool, bool), EmuError> {
        if !q.has("m8n8") || !q.has("b16") {
            return self.unsupported(&i.opcode);
        }
        let num = match q.one_of(&[("x1", 1usize), ("x2", 2), ("x4", 4)]) {
            Some(n) => n,
            None => return self.bad("ldmatrix/stmatrix needs .x1/.x2/.x4"),
        };
        let trans = q.has("trans");
        let generic = match q.space() {
            Some(super::super::types::Space::Shared) => false,
            None => true,
            Some(_) => return self.unsupported(&i.opcode),
        };
        Ok((num, trans, generic))
    }

    fn lower_stmatrix(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        self.ops(i, 2)?;
        let (num, trans, generic) = self.matrix_quals(i, q)?;
        let o = &i.operands;
        let addr = self.addr_in(&o[0], matrix_space(generic))?;
        let mut srcs = [NONE; 4];
        match &o[1] {
            Operand::Vec(v) if v.len() == num => {
                for (k, x) in v.iter().enumerate() {
                    srcs[k] = self.src(x, Ty::B32)?;
                }
            }
            // PTX ISA "stmatrix": a brace-enclosed vector of 1, 2 or 4 registers, even for .x1.
            _ => return self.bad("stmatrix sources must be a vector of .num registers"),
        }
        self.push(
            i,
            Op::Stmatrix(MatrixOp {
                num: num as u8,
                trans,
                regs: srcs,
                addr,
                generic,
            }),
            Class::MemShared,
        )
    }

    fn lower_ldmatrix(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        self.ops(i, 2)?;
        let (num, trans, generic) = self.matrix_quals(i, q)?;
        let o = &i.operands;
        let mut ds = [NONE; 4];
        match &o[0] {
            Operand::Vec(v) if v.len() == num => {
                for (k, d) in v.iter().enumerate() {
                    ds[k] = self.dst(d)?;
                }
            }
            d if num == 1 => ds[0] = self.dst(d)?,
            _ => return self.bad("ldmatrix destination count does not match .num"),
        }
        let addr = self.addr_in(&o[1], matrix_space(generic))?;
        self.push(
            i,
            Op::Ldmatrix(MatrixOp {
                num: num as u8,
                trans,
                regs: ds,
                addr,
                generic,
            }),
            Class::MemShared,
        )
    }

    fn lower_mma(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        let shape = match q.one_of(&[
            ("m16n8k16", MmaShape::M16N8K16),
            ("m16n8k8", MmaShape::M16N8K8),
        ]) {
            Some(s) => s,
            None => return self.unsupported(&i.opcode),
        };
        let types = q.types();
        if !q.has("row") || !q.has("col") || types.len() != 4 {
            return self.unsupported(&i.opcode);
        }
        let (dt, at, bt, ct) = (types[0], types[1], types[2], types[3]);
        let bf16 = match (at, bt) {
            (Ty::F16, Ty::F16) => false,
            (Ty::Bf16, Ty::Bf16) => true,
            _ => return self.unsupported(&i.opcode),
        };
        if bf16 && (dt != Ty::F32 || ct != Ty::F32) {
            return self.unsupported(&i.opcode);
        }
        if !matches!(dt, Ty::F32 | Ty::F16) || !matches!(ct, Ty::F32 | Ty::F16) {
            return self.unsupported(&i.opcode);
        }
        self.ops(i, 4)?;
        let (na, nb) = match shape {
            MmaShape::M16N8K16 => (4, 2),
            MmaShape::M16N8K8 => (2, 1),
        };
        let nd = if dt == Ty::F32 { 4 } else { 2 };
        let nc = if ct == Ty::F32 { 4 } else { 2 };
        let vecs = |l: &mut Self, op: &Operand, n: usize, dst: bool| -> Result<[R; 4], EmuError> {
            let mut out = [NONE; 4];
            match op {
                Operand::Vec(v) if v.len() == n => {
                    for (k, x) in v.iter().enumerate() {
                        out[k] = if dst { l.dst(x)? } else { l.src(x, Ty::B32)? };
                    }
                    Ok(out)
                }
                _ => l.bad("mma operand vector has the wrong length"),
            }
        };
        let o = &i.operands;
        let d = vecs(self, &o[0], nd, true)?;
        let a = vecs(self, &o[1], na, false)?;
        let b4 = vecs(self, &o[2], nb, false)?;
        let c = vecs(self, &o[3], nc, false)?;
        let op = Op::Mma(MmaOp {
            shape,
            bf16,
            c_f32: ct == Ty::F32,
            d_f32: dt == Ty::F32,
            d,
            a,
            b: [b4[0], b4[1]],
            c,
        });
        self.push(i, op, Class::Tensor)
    }
}

/// The state space `ldmatrix`/`stmatrix` address (shared unless generic addressing).
fn matrix_space(generic: bool) -> Space {
    if generic {
        Space::Generic
    } else {
        Space::Shared
    }
}
