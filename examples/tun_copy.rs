//! A bare TUN copy loop: the reference peer `scripts/bench.sh` measures vpcd against.
//!
//! `tun_copy F_NS H_NS` makes two network namespaces with a TUN device each (through
//! [`vpcd::netns`], like `vpcd up`): `F_NS` holds 10.99.1.10/24 with a default route via 10.99.1.1,
//! `H_NS` holds 198.51.100.10/24 with a default route via 198.51.100.1. Two threads, one per
//! direction, each do a blocking `read()` of one packet from one device and `write()` it to the
//! other: one packet per syscall, no parsing, no NAT, no batching — the floor of what a
//! userspace forwarder without offloads can do, which vpcd's real path is compared to.
//!
//! Prints `ready` once both devices serve, runs until SIGINT/SIGTERM/SIGHUP, then removes both
//! namespaces. Root only. Build with `cargo build --release --example tun_copy`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use vpcd::netns::{self, PortConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [f_ns, h_ns] = args.as_slice() else {
        eprintln!("usage: tun_copy F_NAMESPACE H_NAMESPACE");
        std::process::exit(2);
    };
    // Block the stop signals here, before any thread exists, so every thread inherits the mask
    // and only the sigwait below sees them.
    let mut stop = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        stop.add(s);
    }
    if let Err(e) = stop.thread_block() {
        eprintln!("tun_copy: blocking signals: {e}");
        std::process::exit(2);
    }
    let side = |ns: &str, addr: [u8; 4], gw: [u8; 4]| {
        netns::create_with_tun(
            ns,
            PortConfig {
                addr: Ipv4Addr::from(addr),
                secondary: Vec::new(),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::from(gw)),
                mtu: 1500,
                resolv_conf: None,
            },
        )
    };
    let f = match side(f_ns, [10, 99, 1, 10], [10, 99, 1, 1]) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("tun_copy: {e}");
            std::process::exit(2);
        }
    };
    let h = match side(h_ns, [198, 51, 100, 10], [198, 51, 100, 1]) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("tun_copy: {e}");
            let _ = netns::delete(f_ns);
            std::process::exit(2);
        }
    };
    for (from, to) in [(f.clone(), h.clone()), (h, f)] {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match from.recv(&mut buf) {
                    Ok(n) => {
                        let _ = to.send(&buf[..n]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
    }
    println!("ready");
    let _ = stop.wait();
    for ns in [f_ns, h_ns] {
        if let Err(e) = netns::delete(ns) {
            eprintln!("tun_copy: {e}");
        }
    }
}
