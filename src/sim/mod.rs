//! In-process hosts (smoltcp) on a virtual clock, and the probes `vpcd test` runs.
