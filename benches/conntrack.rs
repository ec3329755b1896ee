//! NAT connection-table benchmark (filled in with the gateway).

fn main() {}
