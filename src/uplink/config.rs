//! What an [`Uplink`](super::Uplink) is told at start: its address on the public segment, which
//! host address each EIP's flows use, the host listeners for ingress, what it refuses to reach,
//! and its limits and timeouts.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ipnet::Ipv4Net;

/// How the uplink carries ICMP echo (ping) to the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IcmpMode {
    /// Unprivileged ICMP sockets (`SOCK_DGRAM`/`IPPROTO_ICMP`) when `net.ipv4.ping_group_range`
    /// admits the process's group, else a raw ICMP socket (root or `CAP_NET_RAW`), else none.
    #[default]
    Auto,
    /// Only unprivileged ICMP sockets.
    Datagram,
    /// Only a raw ICMP socket.
    Raw,
    /// Echo requests are dropped (counted as [`UplinkDrop::IcmpUnavailable`](super::UplinkDrop)).
    Off,
}

/// A host listener that opens flows into the segment: connections accepted on `host` become
/// TCP connections to `target` (an EIP and port) whose source is the real client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// Where the host socket listens (`0.0.0.0:8080`, `127.0.0.1:0` for an ephemeral port).
    pub host: SocketAddr,
    /// The public destination inside the segment.
    pub target: SocketAddrV4,
}

/// Bounds on what the uplink holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP flows at once (egress and ingress together); SYNs beyond it get a RST.
    pub tcp_flows: usize,
    /// UDP flows (host sockets) at once; datagrams of new flows beyond it are dropped.
    pub udp_flows: usize,
    /// ICMP echo flows at once.
    pub icmp_flows: usize,
    /// Bytes of each TCP flow's buffer, per direction (the segment-side window). A flow holds at
    /// most twice this much; memory is touched only as data is buffered.
    pub tcp_buffer: usize,
    /// Connections accepted by host listeners that wait for [`Uplink::poll`](super::Uplink::poll);
    /// more are closed at once.
    pub pending_accepts: usize,
    /// Packets towards the segment that wait for [`Uplink::take_tx`](super::Uplink::take_tx).
    pub tx_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tcp_flows: 4096,
            udp_flows: 4096,
            icmp_flows: 256,
            tcp_buffer: 1 << 20,
            pending_accepts: 128,
            tx_queue: 4096,
        }
    }
}

/// How long flows wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A host `connect` that takes longer makes the held SYN a host-unreachable error.
    pub connect: Duration,
    /// A TCP flow with no packet and no byte either way for this long is reset on both sides.
    pub tcp_idle: Duration,
    /// A UDP flow's host socket is closed after this long without a datagram either way.
    pub udp_idle: Duration,
    /// An echo flow's host socket is closed after this long without a request or reply.
    pub icmp_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            tcp_idle: Duration::from_secs(7440),
            udp_idle: Duration::from_secs(120),
            icmp_idle: Duration::from_secs(30),
        }
    }
}

/// The uplink's configuration. Build it with [`UplinkConfig::new`] and adjust the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    /// The uplink's own address on the public segment (usually the segment's gateway): the source
    /// of the ICMP errors it sends.
    pub address: Ipv4Addr,
    /// Largest packet towards the segment, IP header included (longer UDP and echo replies are
    /// fragmented; TCP segments fit).
    pub mtu: usize,
    /// `(EIP, host address)`: flows whose public source is the EIP bind their host sockets to the
    /// host address, so the outside sees it. Other sources use unbound sockets.
    pub host_bind: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Host listeners for ingress.
    pub listen: Vec<Listen>,
    /// Destinations the uplink refuses (an administratively-prohibited ICMP error for TCP and
    /// UDP, a counted drop for echo). [`UplinkConfig::new`] refuses the host's loopback,
    /// link-local (cloud metadata) and other non-unicast ranges; tests that talk to loopback
    /// servers clear it.
    pub blocked: Vec<Ipv4Net>,
    pub icmp: IcmpMode,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Feeds the segment-side TCP stack's initial sequence numbers.
    pub seed: u64,
}

impl UplinkConfig {
    /// Defaults for an uplink at `address`: MTU 1500, no binds, no listeners, loopback and
    /// link-local blocked, ICMP mode `Auto`.
    pub fn new(address: Ipv4Addr) -> UplinkConfig {
        UplinkConfig {
            address,
            mtu: 1500,
            host_bind: Vec::new(),
            listen: Vec::new(),
            blocked: default_blocked(),
            icmp: IcmpMode::Auto,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            seed: 0x7570_6c6b, // "uplk"
        }
    }

    /// The host address flows from public address `eip` bind to, if it names one.
    pub fn bind_for(&self, eip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.host_bind
            .iter()
            .find(|(e, _)| *e == eip)
            .map(|(_, host)| *host)
    }

    /// Whether the uplink refuses to reach `dst`.
    pub fn is_blocked(&self, dst: Ipv4Addr) -> bool {
        self.blocked.iter().any(|net| net.contains(&dst))
    }

    /// What is wrong with this configuration, if anything (checked by
    /// [`Uplink::new`](super::Uplink::new)).
    pub fn validate(&self) -> Result<(), String> {
        if self.mtu < 576 || self.mtu > 65535 {
            return Err(format!(
                "uplink mtu {} is out of range: use 576..=65535",
                self.mtu
            ));
        }
        if self.limits.tcp_buffer < 4096 || self.limits.tcp_buffer > 1 << 30 {
            return Err(format!(
                "uplink tcp_buffer {} is out of range: use 4096..=1 GiB",
                self.limits.tcp_buffer
            ));
        }
        if self.address.is_unspecified() || self.address.is_multicast() {
            return Err(format!(
                "uplink address {} is not a unicast address: give the public segment's gateway",
                self.address
            ));
        }
        let t = &self.timeouts;
        if t.connect.is_zero() || t.connect >= t.tcp_idle {
            return Err(format!(
                "uplink connect timeout {:?} must be above zero and below tcp_idle {:?}",
                t.connect, t.tcp_idle
            ));
        }
        if t.udp_idle.is_zero() || t.icmp_idle.is_zero() {
            return Err("uplink udp_idle and icmp_idle must be above zero".into());
        }
        for (i, (eip, _)) in self.host_bind.iter().enumerate() {
            if self.host_bind[..i].iter().any(|(e, _)| e == eip) {
                return Err(format!("EIP {eip} names two host_bind addresses: keep one"));
            }
        }
        for l in &self.listen {
            if l.target.port() == 0 || l.target.ip().is_unspecified() {
                return Err(format!(
                    "host_listen {} targets {}: give an EIP and a port",
                    l.host, l.target
                ));
            }
        }
        Ok(())
    }
}

/// Ranges an uplink refuses by default: "this network", loopback, link-local (where cloud
/// metadata services live), multicast and reserved/broadcast.
pub fn default_blocked() -> Vec<Ipv4Net> {
    [
        (Ipv4Addr::new(0, 0, 0, 0), 8),
        (Ipv4Addr::new(127, 0, 0, 0), 8),
        (Ipv4Addr::new(169, 254, 0, 0), 16),
        (Ipv4Addr::new(224, 0, 0, 0), 4),
        (Ipv4Addr::new(240, 0, 0, 0), 4),
    ]
    .into_iter()
    .filter_map(|(a, p)| Ipv4Net::new(a, p).ok())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_are_looked_up_by_eip() {
        let mut c = UplinkConfig::new(Ipv4Addr::new(203, 0, 113, 1));
        c.host_bind
            .push((Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(
            c.bind_for(Ipv4Addr::new(203, 0, 113, 10)),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(c.bind_for(Ipv4Addr::new(203, 0, 113, 11)), None);
    }

    #[test]
    fn default_blocks_loopback_and_metadata_but_not_public_addresses() {
        let c = UplinkConfig::new(Ipv4Addr::new(203, 0, 113, 1));
        assert!(c.is_blocked(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(c.is_blocked(Ipv4Addr::new(169, 254, 169, 254)));
        assert!(c.is_blocked(Ipv4Addr::new(255, 255, 255, 255)));
        assert!(!c.is_blocked(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn bad_configurations_say_what_to_change() {
        let mut c = UplinkConfig::new(Ipv4Addr::new(203, 0, 113, 1));
        c.mtu = 100;
        assert!(c.validate().unwrap_err().contains("576"));
        let mut c = UplinkConfig::new(Ipv4Addr::new(203, 0, 113, 1));
        c.host_bind = vec![
            (Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(127, 0, 0, 2)),
            (Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(127, 0, 0, 3)),
        ];
        assert!(c.validate().unwrap_err().contains("203.0.113.10"));
        let mut c = UplinkConfig::new(Ipv4Addr::new(203, 0, 113, 1));
        c.listen.push(Listen {
            host: "127.0.0.1:0".parse().unwrap(),
            target: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 0),
        });
        assert!(c.validate().unwrap_err().contains("port"));
        let mut c = UplinkConfig::new(Ipv4Addr::new(203, 0, 113, 1));
        c.timeouts.tcp_idle = Duration::from_secs(5);
        assert!(c.validate().unwrap_err().contains("tcp_idle"));
    }
}
