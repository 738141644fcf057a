//! The qualifier parser every instruction's lowering goes through: the opcode's dot-separated
//! qualifiers, each marked when a lowering consumes it. After lowering, [`Quals::leftover`] names
//! the first qualifier nobody consumed, and the instruction is rejected with its PTX line, so a
//! qualifier the executor does not implement can never be silently ignored.

use super::super::softfloat::Rnd;
use super::super::types::{Space, Ty};

pub(super) struct Quals<'a> {
    base: &'a str,
    items: Vec<&'a str>,
    used: Vec<bool>,
}

impl<'a> Quals<'a> {
    /// Splits `opcode` into its base name and qualifiers.
    pub fn split(opcode: &'a str) -> Quals<'a> {
        let mut parts = opcode.split('.');
        let base = parts.next().unwrap_or("");
        let items: Vec<&str> = parts.collect();
        let used = vec![false; items.len()];
        Quals { base, items, used }
    }

    /// The opcode's base name (`add` of `add.sat.s32`): what a family dispatches on.
    pub fn base(&self) -> &'a str {
        self.base
    }

    /// Consumes `q` if present.
    pub fn has(&mut self, q: &str) -> bool {
        let mut found = false;
        for (k, it) in self.items.iter().enumerate() {
            if *it == q {
                self.used[k] = true;
                found = true;
            }
        }
        found
    }

    /// The qualifier at position `k` (without consuming it).
    pub fn at(&self, k: usize) -> Option<&'a str> {
        self.items.get(k).copied()
    }

    /// Consumes the first not yet consumed qualifier `f` maps to a value, and returns that value.
    pub fn take<T>(&mut self, f: impl Fn(&str) -> Option<T>) -> Option<T> {
        for (k, it) in self.items.iter().enumerate() {
            if self.used[k] {
                continue;
            }
            if let Some(v) = f(it) {
                self.used[k] = true;
                return Some(v);
            }
        }
        None
    }

    /// Consumes the first qualifier found in `table` and returns its value.
    pub fn one_of<T: Copy>(&mut self, table: &[(&str, T)]) -> Option<T> {
        self.take(|q| table.iter().find(|(n, _)| *n == q).map(|(_, v)| *v))
    }

    /// Consumes every qualifier `f` accepts.
    pub fn ignore(&mut self, f: impl Fn(&str) -> bool) {
        for (k, it) in self.items.iter().enumerate() {
            if f(it) {
                self.used[k] = true;
            }
        }
    }

    /// Consumes and returns every type qualifier, in order.
    pub fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        for (k, it) in self.items.iter().enumerate() {
            if let Some(t) = Ty::parse(it) {
                self.used[k] = true;
                out.push(t);
            }
        }
        out
    }

    /// The last type qualifier, without consuming it (for dispatch between families).
    pub fn peek_ty(&self) -> Option<Ty> {
        self.items.iter().rev().find_map(|q| Ty::parse(q))
    }

    /// Consumes the state-space qualifier, if any.
    pub fn space(&mut self) -> Option<Space> {
        self.take(Space::parse)
    }

    /// The first qualifier nobody consumed.
    pub fn leftover(&self) -> Option<&'a str> {
        self.items
            .iter()
            .zip(&self.used)
            .find(|(_, u)| !**u)
            .map(|(q, _)| *q)
    }
}

/// A rounding-mode qualifier (float `.rn` or integer `.rni` forms).
pub(super) fn rnd_of(q: &str) -> Option<Rnd> {
    Some(match q {
        "rn" | "rni" => Rnd::Rn,
        "rz" | "rzi" => Rnd::Rz,
        "rm" | "rmi" => Rnd::Rm,
        "rp" | "rpi" => Rnd::Rp,
        "rna" => Rnd::Rna,
        _ => return None,
    })
}

/// Qualifiers that only tune caching, memory ordering or scope; the emulator is sequentially
/// consistent and cache-less, so they do not change results.
pub(super) fn is_ignorable_mem_qual(q: &str) -> bool {
    matches!(
        q,
        "weak"
            | "volatile"
            | "relaxed"
            | "acquire"
            | "release"
            | "acq_rel"
            | "mmio"
            | "sc"
            | "cta"
            | "gpu"
            | "sys"
            | "cluster"
            | "nc"
            | "ca"
            | "cg"
            | "cs"
            | "lu"
            | "cv"
            | "wb"
            | "wt"
            | "unified"
    ) || q.starts_with("L1::")
        || q.starts_with("L2::")
        || q.starts_with("level::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_the_unconsumed_qualifier() {
        let mut q = Quals::split("add.sat.s32");
        assert_eq!(q.base(), "add");
        assert_eq!(q.types(), vec![Ty::S32]);
        assert_eq!(q.leftover(), Some("sat"));
        assert!(q.has("sat"));
        assert_eq!(q.leftover(), None);
    }

    #[test]
    fn take_and_one_of_consume_only_the_match() {
        let mut q = Quals::split("shfl.sync.bfly.b32");
        assert_eq!(q.one_of(&[("up", 1), ("bfly", 2)]), Some(2));
        assert!(!q.has("up"));
        assert_eq!(q.leftover(), Some("sync"));
        assert_eq!(q.take(|s| (s == "sync").then_some(7)), Some(7));
        assert_eq!(q.leftover(), Some("b32"));
        assert_eq!(q.peek_ty(), Some(Ty::B32));
        assert_eq!(q.leftover(), Some("b32"));
    }
}
