//! Any request body the control API is given, for any operation (the first input byte picks
//! one of `Change::OPS`, or a batch), is decoded into changes or refused with located errors,
//! and the changes apply or are refused, never a panic. The incremental path
//! (`ControlState::apply`) and the whole-file path (`ControlState::apply_full`) must agree on
//! every change: the same state or the same errors.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vpcd::control::{Change, ControlState, decode_batch};

/// A topology with instances, EIPs, a NAT gateway, security groups and DNAT to change.
fn state() -> &'static ControlState {
    static STATE: OnceLock<ControlState> = OnceLock::new();
    STATE.get_or_init(|| {
        ControlState::from_text(
            "web-tier.toml",
            include_str!("../../topologies/web-tier.toml"),
        )
        .expect("the bundled topology loads")
    })
}

fuzz_target!(|input: (u8, &[u8])| {
    let (pick, body) = input;
    let changes = match Change::OPS.get(pick as usize) {
        Some(op) => Change::decode(op, body).map(|c| vec![c]),
        None => decode_batch(body),
    };
    let Ok(changes) = changes else {
        return;
    };
    let state = state();
    for change in &changes {
        let fast = state.apply(change);
        let full = state.apply_full(change);
        match (&fast, &full) {
            (Ok(a), Ok(b)) => {
                assert!(a == b, "{change:?}: the two paths made different states");
                assert_eq!(a.export(), b.export(), "{change:?}");
            }
            (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{change:?}"),
            _ => panic!("{change:?}: one path refused, the other did not: {fast:?} / {full:?}"),
        }
        if let Ok(next) = fast {
            // What the journal records reads back as the same change.
            let request = change.request().expect("a change serializes");
            let body = serde_json::to_vec(&request).expect("JSON");
            let again = Change::decode(change.op(), &body).expect("a recorded change decodes");
            assert_eq!(&again, change);
            let _ = next.export();
        }
    }
    if changes.len() > 1 {
        let _ = state.apply_batch(&changes);
    }
});
