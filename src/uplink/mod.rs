//! The public uplink: traffic to addresses no simulated host owns leaves through host sockets (issue 7).
