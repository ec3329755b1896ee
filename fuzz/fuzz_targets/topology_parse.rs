//! Any text given to the topology parser yields a plan or located diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = vpcd::topology::parse("fuzz.toml", text) {
        // Rendering must not panic either.
        let _ = e.to_string();
    }
});
