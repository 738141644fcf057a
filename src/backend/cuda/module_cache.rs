//! The CUDA backend's module cache: each embedded module (one `.cu` file's image) is loaded into
//! a context at most once, and every entry is looked up in the module that defines it. Before
//! this cache the backend loaded a whole module per entry (about 42 loads of 5 modules), and on a
//! device that only has PTX (compute capability 10.x and newer) the driver JIT-compiled the same
//! module once per entry.
//!
//! The cache is generic over what a load yields so that its one-load-per-module contract is
//! unit-tested without a driver (the tests count loader calls over every kernel table).

use crate::common::build_info::{self, ModuleImage};
use crate::common::error::{Error, Result};

/// Modules loaded so far, keyed by their image (module names are unique in `build_info::MODULES`).
/// Filled while a backend is built, never on a launch path.
pub(crate) struct ModuleCache<M> {
    loaded: Vec<(&'static str, M)>,
    loads: usize,
}

impl<M: Clone> ModuleCache<M> {
    pub(crate) fn new() -> Self {
        ModuleCache {
            loaded: Vec::new(),
            loads: 0,
        }
    }

    /// The module defining `entry`, loaded with `load` the first time any of its entries is
    /// asked for.
    pub(crate) fn module_for(
        &mut self,
        entry: &str,
        load: impl FnOnce(&'static ModuleImage) -> Result<M>,
    ) -> Result<(M, &'static ModuleImage)> {
        let image = build_info::module_of(entry).ok_or_else(|| Error::NoKernel {
            entry: entry.to_string(),
        })?;
        if let Some((_, m)) = self.loaded.iter().find(|(name, _)| *name == image.name) {
            return Ok((m.clone(), image));
        }
        let m = load(image)?;
        self.loads += 1;
        self.loaded.push((image.name, m.clone()));
        Ok((m, image))
    }

    /// How many modules were loaded (each at most once).
    pub(crate) fn loads(&self) -> usize {
        self.loads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::build_info::{FWD_KERNELS, MODULES};
    use crate::ops::decode::kernels::DECODE_KERNELS;
    use std::collections::BTreeSet;

    /// Asking for every entry of every module, in kernel-table order and then again, loads each
    /// module exactly once.
    #[test]
    fn every_module_is_loaded_once_whatever_the_number_of_entries() {
        let mut cache = ModuleCache::<usize>::new();
        let mut calls = 0usize;
        let entries: Vec<&str> = FWD_KERNELS
            .iter()
            .map(|r| r.entry)
            .chain(DECODE_KERNELS.iter().map(|r| r.entry))
            .chain(MODULES.iter().flat_map(|m| m.entries.iter().copied()))
            .collect();
        assert!(
            entries.len() > MODULES.len(),
            "the tables name several entries per module"
        );
        for _pass in 0..2 {
            for e in &entries {
                let (id, image) = cache
                    .module_for(e, |img| {
                        calls += 1;
                        Ok(MODULES.iter().position(|m| m.name == img.name).unwrap())
                    })
                    .unwrap();
                assert!(image.entries.contains(e), "{e} looked up in {}", image.name);
                assert_eq!(
                    MODULES[id].name, image.name,
                    "{e}: cached module of another image"
                );
            }
        }
        let distinct: BTreeSet<&str> = entries
            .iter()
            .map(|e| build_info::module_of(e).unwrap().name)
            .collect();
        assert_eq!(calls, distinct.len());
        assert_eq!(cache.loads(), distinct.len());
    }

    #[test]
    fn an_unknown_entry_is_a_typed_error_and_loads_nothing() {
        let mut cache = ModuleCache::<()>::new();
        let err = cache
            .module_for("no_such_entry", |_| panic!("must not load"))
            .unwrap_err();
        assert!(matches!(err, Error::NoKernel { .. }), "{err:?}");
        assert_eq!(cache.loads(), 0);
    }

    #[test]
    fn a_failed_load_is_not_cached() {
        let mut cache = ModuleCache::<u8>::new();
        let entry = FWD_KERNELS[0].entry;
        let err = cache
            .module_for(entry, |_| Err(Error::NoKernel { entry: "x".into() }))
            .unwrap_err();
        assert!(matches!(err, Error::NoKernel { .. }));
        let (m, _) = cache.module_for(entry, |_| Ok(7)).unwrap();
        assert_eq!((m, cache.loads()), (7, 1));
    }
}
