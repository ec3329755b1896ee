//! The public uplink as a port of `vpcd up` (issue 7): its configuration from the plan, and the
//! [`Uplink`] the loop serves beside the TUN and sim ports.
//!
//! The loop ([`super::event_loop`]) hands the uplink what the fabric forwards to its port
//! ([`UplinkPort::deliver`]), polls it after a batch delivered something to it, when
//! [`Uplink::ready`] resolved, or when its timers fall due ([`UplinkPort::poll`]), and feeds what
//! it sends ([`UplinkPort::take_tx`]) back into the fabric with the uplink's port as ingress, so
//! NAT, security groups, flow logs and captures see it like any public host's packets.
//!
//! The uplink's host sockets live in the namespace `vpcd up` runs in (the "host"): flows from an
//! EIP with `host_bind` bind to that address, `host_listen` listeners accept there. Its
//! configuration is a pure function of the plan ([`config`]), so a reload keeps the running
//! uplink (and its flows) when the configuration is unchanged and rebuilds it otherwise.

use std::io;

use crate::tables::{PortOwner, Tables};
use crate::time::Instant;
use crate::topology::Plan;
use crate::uplink::{Listen, Uplink, UplinkConfig};

use crate::tables::PortId;

/// The uplink and its port id, with what the loop tracks about it.
pub struct UplinkPort {
    pub port: PortId,
    uplink: Uplink,
    /// Something was delivered since the last poll.
    dirty: bool,
    /// When its timers next need a poll.
    deadline: Option<Instant>,
    /// The TUN egress queue its packets filled: neither polled nor drained until it has room.
    pub(super) waits_for: Option<PortId>,
}

impl std::fmt::Debug for UplinkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkPort")
            .field("port", &self.port)
            .field("uplink", &self.uplink)
            .finish_non_exhaustive()
    }
}

/// The uplink's configuration for `plan` compiled into `tables`, or `None` when the plan has no
/// uplink. Its `seed` is 0 (so that two configurations compare equal when the plan did not
/// change them); [`UplinkPort::start`] picks a random one.
pub fn config(plan: &Plan, tables: &Tables) -> Option<UplinkConfig> {
    let up = plan.internet.uplink.as_ref()?;
    let port = tables.ports.iter().find(|p| p.owner == PortOwner::Uplink)?;
    let mut c = UplinkConfig::new(up.address);
    c.mtu = port.mtu as usize;
    c.host_bind = plan.host_binds();
    c.listen = up
        .listen
        .iter()
        .map(|l| Listen {
            host: l.host,
            target: l.target,
        })
        .collect();
    c.seed = 0;
    Some(c)
}

impl UplinkPort {
    /// Starts the uplink on the current tokio runtime (it binds the host listeners and spawns
    /// their tasks) for port `port`; `now` is the loop's clock. Fails with a message naming the
    /// listener that cannot be bound, or the configuration problem.
    pub fn start(port: PortId, mut config: UplinkConfig, now: Instant) -> io::Result<UplinkPort> {
        config.seed = random_seed();
        Ok(UplinkPort {
            port,
            uplink: Uplink::new(config, now)?,
            dirty: false,
            deadline: None,
            waits_for: None,
        })
    }

    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// Hands the uplink a packet the fabric forwarded to its port; [`UplinkPort::poll`] later.
    pub fn deliver(&mut self, now: Instant, packet: &[u8]) {
        self.uplink.deliver(now, packet);
        self.dirty = true;
    }

    /// Tells the fabric's NAT the port the host gave each new UDP mapping whose mapped port was
    /// in use on the host, and the uplink whether the NAT took it (see
    /// [`Uplink::take_port_move`]). Cheap when there is none.
    pub fn learn_ports(&mut self, fabric: &mut crate::dataplane::Fabric) {
        while let Some(m) = self.uplink.take_port_move() {
            let ext = (*m.public.ip(), m.public.port());
            let moved = fabric
                .gateways_mut()
                .move_port(crate::dataplane::nat::Proto::Udp, ext, m.port)
                .unwrap_or(false);
            self.uplink.port_moved(m, moved);
        }
    }

    /// Whether it needs a poll now: something was delivered, or its timers are due.
    pub fn due(&self, now: Instant) -> bool {
        self.dirty || self.deadline.is_some_and(|t| t <= now)
    }

    /// Lets the uplink run (see [`Uplink::poll`]).
    pub fn poll(&mut self, now: Instant) {
        self.dirty = false;
        self.uplink.poll(now);
    }

    /// Moves the next packet towards the segment into `buf` (cut to its size); returns its
    /// length.
    pub fn take_tx(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.uplink.take_tx(buf)
    }

    /// Records when the uplink's timers next need a poll; call after draining
    /// [`UplinkPort::take_tx`].
    pub fn schedule(&mut self, now: Instant) {
        self.deadline = self.uplink.poll_at(now);
    }

    /// When its timers next need a poll (see [`UplinkPort::schedule`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Resolves when host sockets or tasks produced something (see [`Uplink::ready`]).
    pub async fn ready(&self) {
        self.uplink.ready().await
    }

    /// One line for `vpcd up`: the ICMP socket kind and the listeners.
    pub fn describe(&self) -> String {
        let icmp = match self.uplink.icmp() {
            crate::uplink::IcmpKind::Datagram => {
                "ICMP echo through unprivileged ICMP sockets".to_string()
            }
            crate::uplink::IcmpKind::Raw => "ICMP echo through a raw ICMP socket".to_string(),
            crate::uplink::IcmpKind::Unavailable(why) => format!("no ICMP echo ({why})"),
        };
        let listen: Vec<String> = self
            .uplink
            .listen_addrs()
            .iter()
            .zip(&self.uplink.config().listen)
            .map(|(a, l)| format!("{a} -> {}", l.target))
            .collect();
        if listen.is_empty() {
            format!("uplink: host sockets in this namespace; {icmp}; no host listeners")
        } else {
            format!(
                "uplink: host sockets in this namespace; {icmp}; host listeners {}",
                listen.join(", ")
            )
        }
    }

    /// One line for `vpcd up`'s closing summary.
    pub fn summary(&self) -> String {
        let c = self.uplink.counters();
        let drops: Vec<String> = c
            .nonzero_drops()
            .map(|(r, n)| format!("{}={n}", r.label()))
            .collect();
        format!(
            "uplink: {} tcp flow(s) out ({} refused, {} unreachable), {} in through host \
             listeners, {} udp flow(s), {} echo request(s); {} bytes to the host, {} from it{}",
            c.tcp_opened,
            c.tcp_refused,
            c.tcp_unreachable,
            c.ingress_accepted,
            c.udp_opened,
            c.echo_requests,
            c.bytes_to_host,
            c.bytes_from_host,
            if drops.is_empty() {
                String::new()
            } else {
                format!("; dropped {}", drops.join(", "))
            }
        )
    }
}

/// An unpredictable seed for the segment-side stack's initial sequence numbers.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        crate::topology::parse("t.toml", text).expect("valid topology")
    }

    const UPLINK: &str = r#"
[[vpc]]
name = "v"
cidr = "10.1.0.0/16"
subnet = [{ name = "s", cidr = "10.1.1.0/24" }]
instance = [{ name = "i", subnet = "s", eip = "e", mtu = 9000 }, { name = "j", subnet = "s", mtu = 4000 }]

[[eip]]
name = "e"
address = "203.0.113.5"
host_bind = "192.0.2.5"
host_listen = "192.0.2.5:8080"

[internet]
uplink = "host"
"#;

    #[test]
    fn the_config_follows_the_plan() {
        let p = plan(UPLINK);
        let t = crate::topology::compile::tables(&p);
        let c = config(&p, &t).expect("an uplink");
        assert_eq!(
            c.address,
            "198.51.100.1".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert_eq!(c.mtu, 4000, "the smallest instance MTU");
        assert_eq!(
            c.host_bind,
            [("203.0.113.5".parse().unwrap(), "192.0.2.5".parse().unwrap())]
        );
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].target.to_string(), "203.0.113.5:8080");
        assert_eq!(c.seed, 0);
        assert_eq!(c.validate(), Ok(()));
        // The same plan gives the same configuration (a reload keeps the uplink).
        assert_eq!(config(&p, &crate::topology::compile::tables(&p)), Some(c));
        let off = plan("[[vpc]]\nname = \"v\"\ncidr = \"10.1.0.0/16\"\n");
        assert_eq!(config(&off, &crate::topology::compile::tables(&off)), None);
    }
}
