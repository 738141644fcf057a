//! Every shipped kernel module parses and lowers on the emulator (no unsupported instruction).
//! Emulation speed is a benchmark: `cargo bench --bench emulator_speed`.

use flashmha::common::build_info::MODULES;
use flashmha::emulator::Module;

#[test]
fn every_shipped_module_loads() {
    for img in MODULES {
        let m = Module::parse(img.ptx).unwrap_or_else(|e| panic!("{}: {e}", img.name));
        for entry in img.entries {
            assert!(m.entries().any(|e| e == *entry), "{}: {entry}", img.name);
        }
    }
}
