//! The uplink's packet builders (RSTs for refused connects, ICMP errors, UDP datagrams, IPv4
//! fragments, echo messages) and its classifier under arbitrary bytes: nothing panics and every
//! packet built is well formed (the checks are in `src/uplink/packet_fuzz.rs`, which a proptest
//! there runs as well).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vpcd::uplink::packet_fuzz::run(data);
});
