//! Superpackets with arbitrary GSO metadata through `Fabric::handle_meta`, then the `Segmenter`
//! and `complete_checksum` for what is forwarded: nothing panics, and every segment leaves with
//! complete checksums within the egress MTU (the checks are in `fuzz/shared/offload_case.rs`,
//! which `tests/dataplane_props.rs` runs as a proptest too).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../shared/offload_case.rs"]
mod offload_case;

fuzz_target!(|data: &[u8]| {
    offload_case::run(data);
});
