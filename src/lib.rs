//! vpcd: a userspace virtual network that behaves like a cloud VPC.
//!
//! Layers, top to bottom (see `ARCHITECTURE.md` for what each owns and must not touch):
//! - [`topology`]: the TOML model, validation with located errors, the resolved [`topology::Plan`];
//! - [`tables`]: lookup tables compiled from a plan (by [`topology::compile`]), swapped atomically
//!   on change;
//! - [`dataplane`]: the sans-IO packet core, `handle(now, port, buf) -> Verdict`;
//! - [`explain`]: `vpcd explain`, a static walk of the compiled tables that names what blocks a
//!   flow, using the dataplane's own decision functions;
//! - [`observe`]: flow logs and packet capture, wrappers around the fabric call;
//! - [`inspect`]: the control plane's reads of a fabric (counter snapshot, connection listing)
//!   and connection flushes, pure functions the runtime and the API share;
//! - [`sim`]: in-process smoltcp hosts on a virtual clock, and the probes `vpcd test` runs;
//! - [`control`]: the effective topology (file plus API changes), typed change requests validated
//!   like files, and its durable copy in a state directory;
//! - [`runtime`]: `vpcd up`'s I/O shell (TUN ports in namespaces made by [`netns`], sim ports, one
//!   tokio loop) around the same dataplane.
//!
//! The dataplane does no I/O and reads no clock: [`time::Instant`] is passed in.
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod control;
pub mod dataplane;
pub mod dns;
pub mod explain;
pub mod inspect;
pub mod netns;
pub mod observe;
pub mod runtime;
pub mod sim;
pub mod tables;
pub mod time;
pub mod topology;
pub mod uplink;
