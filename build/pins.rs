//! Reads `toolchain/pins.env`, the one file that pins toolkit versions (shared with `.ci/run`).

use std::collections::HashMap;
use std::path::Path;

/// The pinned toolkit: wheel specs, package names and target architectures.
pub struct Pins {
    values: HashMap<String, String>,
}

impl Pins {
    pub fn load(path: &Path) -> Pins {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut values = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=value: {line}", path.display()));
            values.insert(
                key.trim().to_string(),
                value.trim().trim_matches('"').to_string(),
            );
        }
        Pins { values }
    }

    pub fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("toolchain/pins.env lacks {key}"))
    }

    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// The version pinned for one wheel of a `KEY` list, e.g. `nvidia-cuda-nvcc` -> `13.5.37`.
    pub fn wheel_version(&self, key: &str, package: &str) -> String {
        self.list(key)
            .into_iter()
            .find_map(|spec| {
                let (name, version) = spec.split_once("==")?;
                (name == package).then(|| version.to_string())
            })
            .unwrap_or_else(|| panic!("toolchain/pins.env: {key} pins no {package}"))
    }
}
