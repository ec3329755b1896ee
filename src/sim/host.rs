//! One simulated host: a smoltcp interface and socket set behind a [`QueueDevice`].
//!
//! Every instance and internet host of a plan becomes one `Host`, whether the topology attaches it
//! with `sim` or `netns` (`vpcd test` never creates namespaces). A host owns nothing but its stack:
//! the sockets a probe needs are added for that probe and removed after it.

use std::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::device::QueueDevice;
use super::resolver::DnsService;
use crate::tables::PortId;
use crate::time::Instant;

/// The virtual clock as smoltcp sees it.
pub fn smol_instant(now: Instant) -> SmolInstant {
    SmolInstant::from_micros(i64::try_from(now.micros()).unwrap_or(i64::MAX))
}

/// Back from smoltcp's clock; instants before zero are zero.
pub fn from_smol(t: SmolInstant) -> Instant {
    Instant::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
}

/// SplitMix64: a tiny, well-mixed, seedable generator step (no dependency, no global state).
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How a host is addressed: its address, the prefix of its segment and where its default route
/// points (the subnet gateway `.1` for instances, any address of the public block for hosts: with
/// medium-IP there is no ARP, so the gateway only has to exist in the route table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    pub ip: Ipv4Addr,
    /// Further addresses (an internet host's `secondary_ips`, at most
    /// [`crate::topology::model::MAX_SECONDARY_IPS`]), same prefix.
    pub secondary: Vec<Ipv4Addr>,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mtu: usize,
}

/// A medium-IP smoltcp interface on `device` with the address, prefix and default route of
/// `addressing`. `seed` feeds smoltcp's generator (TCP initial sequence numbers). Shared by the
/// simulator's hosts and `vpcd up`'s `sim` ports.
pub fn interface(
    device: &mut QueueDevice,
    addressing: &Addressing,
    seed: u64,
    now: Instant,
) -> Interface {
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = seed;
    let mut iface = Interface::new(config, device, smol_instant(now));
    iface.update_ip_addrs(|addrs| {
        // The interface holds four addresses (smoltcp's `iface-max-addr-count-4`): validation
        // allows a primary and three secondary ones, so none is lost.
        for a in std::iter::once(addressing.ip).chain(addressing.secondary.iter().copied()) {
            let _ = addrs.push(IpCidr::new(
                IpAddress::Ipv4(a),
                addressing.prefix_len.min(32),
            ));
        }
    });
    // The route table holds several entries; one default route always fits.
    let _ = iface
        .routes_mut()
        .add_default_ipv4_route(addressing.gateway);
    iface
}

pub(crate) struct Host {
    /// `VPC/INSTANCE` or `internet/HOST`.
    pub name: String,
    pub port: PortId,
    pub ip: Ipv4Addr,
    pub iface: Interface,
    pub device: QueueDevice,
    pub sockets: SocketSet<'static>,
    /// A VPC resolver's port 53, on the resolver's host only.
    pub dns: Option<DnsService>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("ip", &self.ip)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Builds the stack. `seed` feeds smoltcp's generator (TCP initial sequence numbers), so two
    /// runs with the same seed send the same bytes.
    pub fn new(
        name: String,
        port: PortId,
        addressing: Addressing,
        seed: u64,
        now: Instant,
    ) -> Host {
        let mut device = QueueDevice::new(addressing.mtu);
        let iface = interface(&mut device, &addressing, seed, now);
        Host {
            name,
            port,
            ip: addressing.ip,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            dns: None,
        }
    }

    /// The host of a VPC resolver: port 53 answering from `view`.
    pub fn resolver(mut self, view: std::sync::Arc<crate::dns::View>) -> Host {
        self.dns = Some(DnsService::new(view, &mut self.iface, &mut self.sockets));
        self
    }

    /// Lets the stack read what arrived and send what its sockets queued. Returns whether a socket
    /// may have changed state.
    pub fn poll(&mut self, now: Instant) -> bool {
        let r = self
            .iface
            .poll(smol_instant(now), &mut self.device, &mut self.sockets);
        if let Some(dns) = &mut self.dns {
            // Answer what arrived, and let the answers leave in this step.
            dns.serve(&mut self.sockets, now);
            self.iface
                .poll(smol_instant(now), &mut self.device, &mut self.sockets);
        }
        r == smoltcp::iface::PollResult::SocketStateChanged
    }

    /// When the stack next wants a poll (a retransmission, a delayed ACK), if ever. May be `now` or
    /// earlier when a socket has something to send.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let stack = self
            .iface
            .poll_at(smol_instant(now), &self.sockets)
            .map(from_smol);
        // A resolver waiting for forwarded answers looks for them again soon.
        let forwards = self
            .dns
            .as_ref()
            .filter(|d| d.is_waiting())
            .map(|_| now + super::resolver::FORWARD_POLL);
        match (stack, forwards) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_conversion_round_trips() {
        let t = Instant::from_micros(3_000_050);
        assert_eq!(smol_instant(t).total_micros(), 3_000_050);
        assert_eq!(from_smol(smol_instant(t)), t);
        assert_eq!(from_smol(SmolInstant::from_micros(-5)), Instant::ZERO);
    }

    #[test]
    fn splitmix_is_deterministic_and_spreads() {
        assert_eq!(splitmix64(1), splitmix64(1));
        assert_ne!(splitmix64(1), splitmix64(2));
        assert_ne!(splitmix64(0), 0);
    }

    #[test]
    fn a_fresh_host_is_addressed_and_idle() {
        let mut h = Host::new(
            "vpc/a".into(),
            PortId(0),
            Addressing {
                ip: Ipv4Addr::new(10, 0, 1, 10),
                secondary: Vec::new(),
                prefix_len: 24,
                gateway: Ipv4Addr::new(10, 0, 1, 1),
                mtu: 1500,
            },
            7,
            Instant::ZERO,
        );
        assert_eq!(h.iface.ipv4_addr(), Some(Ipv4Addr::new(10, 0, 1, 10)));
        assert!(!h.poll(Instant::ZERO));
        assert_eq!(h.poll_at(Instant::ZERO), None);
        assert_eq!(h.device.tx_len(), 0);
    }
}
