//! Warpgroup tensor-core family (part of the tensor family, its asynchronous half):
//! `wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}` with A from registers or
//! through a shared-memory matrix descriptor and B through a descriptor, plus
//! `wgmma.fence`, `wgmma.commit_group` and `wgmma.wait_group` (PTX ISA "Asynchronous Warpgroup
//! Level Matrix Multiply-Accumulate Instructions"). Illegal PTX (an N outside 8..256 step 8,
//! mixed f16/bf16 inputs, a transpose argument for a register A, a scale other than +-1) is a
//! parse error naming the line; legal forms the emulator does not implement (other shapes,
//! f16 accumulators, sparse) are `Unsupported`.

use super::super::ast::{self, Operand};
use super::super::error::EmuError;
use super::super::program::*;
use super::super::types::Ty;
use super::quals::Quals;
use super::Lowerer;

/// N of a `m64nNk16` shape qualifier, if the qualifier has that form (any number).
fn shape_n(q: &str) -> Option<u32> {
    q.strip_prefix("m64n")?.strip_suffix("k16")?.parse().ok()
}

impl Lowerer {
    pub(super) fn lower_wgmma(&mut self, i: &ast::Instr, q: &mut Quals) -> Result<(), EmuError> {
        // Every wgmma instruction is `.sync.aligned` (warp-synchronous, warpgroup-uniform).
        if !q.has("sync") || !q.has("aligned") {
            return self.unsupported(&i.opcode);
        }
        if q.has("fence") {
            return self.push(i, Op::WgmmaFence, Class::Tensor);
        }
        if q.has("commit_group") {
            return self.push(i, Op::WgmmaCommit, Class::Tensor);
        }
        if q.has("wait_group") {
            self.ops(i, 1)?;
            let n = match i.operands[0] {
                Operand::Int(n) if n <= u32::MAX as u64 => n as u32,
                _ => return self.bad("wgmma.wait_group needs an integer constant"),
            };
            return self.push(i, Op::WgmmaWait { n }, Class::Tensor);
        }
        if !q.has("mma_async") {
            return self.unsupported(&i.opcode);
        }
        let n = match q.take(shape_n) {
            Some(n) if n % 8 == 0 && (8..=256).contains(&n) => n,
            Some(n) => {
                return self.bad(&format!(
                    "wgmma shape m64n{n}k16: N must be a multiple of 8 in 8..256"
                ))
            }
            None => return self.unsupported(&i.opcode),
        };
        let types = q.types();
        let bf16 = match types.as_slice() {
            [Ty::F32, Ty::F16, Ty::F16] => false,
            [Ty::F32, Ty::Bf16, Ty::Bf16] => true,
            [_, Ty::F16 | Ty::Bf16, Ty::F16 | Ty::Bf16] if types[1] != types[2] => {
                return self.bad("wgmma: .atype and .btype must both be .f16 or both .bf16")
            }
            [Ty::Bf16, ..] => return self.bad("wgmma: .bf16 inputs need an .f32 accumulator"),
            _ => return self.unsupported(&i.opcode),
        };
        let o = &i.operands;
        let a_in_regs = matches!(o.get(1), Some(Operand::Vec(_)));
        // Register A: d, a, b-desc, scale-d, imm-scale-a, imm-scale-b, imm-trans-b.
        // Shared A:   d, a-desc, b-desc, scale-d, imm-scale-a, imm-scale-b, imm-trans-a, imm-trans-b.
        let want = if a_in_regs { 7 } else { 8 };
        if a_in_regs && o.len() == 8 {
            return self.bad("wgmma: imm-trans-a is only valid when A is in shared memory");
        }
        if o.len() != want {
            return self.bad(&format!(
                "wgmma.mma_async with this A needs {want} operands"
            ));
        }
        let Operand::Vec(dv) = &o[0] else {
            return self.bad("wgmma: the accumulator must be a vector `{...}`");
        };
        if dv.len() != (n / 2) as usize {
            return self.bad(&format!(
                "wgmma m64n{n}k16 with .f32 accumulators needs {} registers, got {}",
                n / 2,
                dv.len()
            ));
        }
        let start = self.reg_lists.len() as u32;
        for x in dv {
            let r = self.dst(x)?;
            self.reg_lists.push(r);
        }
        let d = RegList { start, len: n / 2 };
        let mut a_regs = [NONE; 4];
        let a_desc = if let Operand::Vec(av) = &o[1] {
            if av.len() != 4 {
                return self.bad("wgmma: a register A is 4 x .b32 registers");
            }
            for (k, x) in av.iter().enumerate() {
                a_regs[k] = self.src(x, Ty::B32)?;
            }
            NONE
        } else {
            self.src(&o[1], Ty::B64)?
        };
        let b_desc = self.src(&o[2], Ty::B64)?;
        let scale_d = self.src(&o[3], Ty::Pred)?;
        let imm = |l: &Self, op: &Operand, what: &str, allowed: &[i64]| -> Result<i64, EmuError> {
            match op {
                Operand::Int(v) if allowed.contains(&(*v as i64)) => Ok(*v as i64),
                _ => l.bad(&format!("wgmma: {what} must be one of {allowed:?}")),
            }
        };
        let neg_a = imm(self, &o[4], "imm-scale-a", &[1, -1])? < 0;
        let neg_b = imm(self, &o[5], "imm-scale-b", &[1, -1])? < 0;
        let (trans_a, trans_b) = if a_in_regs {
            (false, imm(self, &o[6], "imm-trans-b", &[0, 1])? == 1)
        } else {
            (
                imm(self, &o[6], "imm-trans-a", &[0, 1])? == 1,
                imm(self, &o[7], "imm-trans-b", &[0, 1])? == 1,
            )
        };
        let op = WgmmaOp {
            n,
            bf16,
            d,
            a_desc,
            a_regs,
            b_desc,
            scale_d,
            neg_a,
            neg_b,
            trans_a,
            trans_b,
        };
        self.push(i, Op::Wgmma(op), Class::Tensor)
    }
}
