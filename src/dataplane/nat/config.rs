//! NAT gateway configuration: behaviours (mapping, filtering, pooling, port handling), timeouts and
//! limits, with one preset per [`Profile`]. Plain data: the topology layer fills it in, the NAT core
//! only reads it. Every value of a profile can be overridden after [`NatConfig::profile`].
//!
//! # Profiles and where their numbers come from
//!
//! | | `rfc` (default) | `aws` | `gcp` | `alibaba` |
//! |---|---|---|---|---|
//! | mapping | endpoint-independent | address-and-port-dependent (symmetric) | endpoint-independent | endpoint-independent |
//! | filtering | address-and-port-dependent | APDF | APDF | APDF |
//! | port preservation | yes | no (random) | no (random inside the instance's block) | yes |
//! | UDP | 300 s | 350 s | 30 s | 60 s |
//! | TCP established | 7440 s | 350 s | 1200 s | 900 s |
//! | TCP transitory | 240 s | 350 s | 30 s | 60 s (assumed) |
//! | TCP TIME_WAIT | 240 s | 350 s | 120 s | 120 s (assumed) |
//! | ICMP | 60 s | 350 s | 30 s | 60 s (assumed) |
//!
//! - `rfc`: RFC 4787 REQ-1 (EIM), REQ-2 (paired pooling), REQ-3 (port preservation allowed), REQ-5
//!   (UDP mapping timer at least 2 min; 300 s as recommended, and as Linux's UDP "stream" timeout),
//!   REQ-8 (APDF recommended when security matters); RFC 5382 REQ-5 (established idle-timeout at
//!   least 2 h 4 min, transitory at least 4 min); RFC 5508 REQ-1 (ICMP query timeout at least 60 s).
//! - `aws`: NAT gateway documentation: a 350 s idle timeout for every flow, after which the
//!   gateway answers a packet of the stale TCP flow with a RST (`aws_rst_on_expired`); at most
//!   55,000 simultaneous connections from one EIP to one destination (ip, port, protocol). The
//!   mapping is symmetric, so ports are allocated per destination and the 55,000 limit is modelled
//!   by a 55,000-port range (1024..=56023).
//! - `gcp`: Cloud NAT defaults: UDP 30 s, TCP established 1200 s, transitory 30 s, TIME_WAIT 120 s,
//!   ICMP 30 s; static port allocation with `min_ports_per_vm` = 64 ports per instance, reserved
//!   up front as a block on one NAT IP. (Cloud NAT announced a 30 s TIME_WAIT default for gateways
//!   created after September 2026; override `tcp_time_wait` for that.)
//! - `alibaba`: NAT Gateway FAQ: idle SNAT connections time out after 900 s (TCP) and 60 s (UDP).
//!   Transitory, TIME_WAIT and ICMP values are not published; the values above are assumptions.

use std::time::Duration;

/// New inbound flows per outside source address per second a gateway admits by default: far
/// above what one legitimate client opens (a load generator from one address opening more
/// raises it), far below a flood (hping3 sends about 190,000 SYNs per second here).
pub const DEFAULT_NEW_PER_SOURCE: u32 = 5000;

/// Half-open inbound TCP sessions one outside source may hold by default
/// ([`NatConfig::half_open_per_source`]): as many as Linux's default SYN backlog of a listener
/// (`tcp_max_syn_backlog`, 1024 on small machines); a client that completes its handshakes holds
/// one per connection it is opening at that moment.
pub const DEFAULT_HALF_OPEN_PER_SOURCE: u32 = 1024;

/// A preset of behaviours and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// RFC 4787 / 5382 / 5508 conformant (the default).
    #[default]
    Rfc,
    /// AWS NAT gateway.
    Aws,
    /// Google Cloud NAT.
    Gcp,
    /// Alibaba Cloud NAT Gateway.
    Alibaba,
}

/// Which inbound packets a mapping lets through (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filtering {
    /// Any remote may send to a mapped external endpoint (RFC 4787 "full cone").
    EndpointIndependent,
    /// A remote address the internal endpoint has sent to may answer from any port.
    AddressDependent,
    /// Only the exact remote address and port the internal endpoint sent to (the default).
    #[default]
    AddressAndPortDependent,
}

/// How an internal endpoint is mapped (RFC 4787 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mapping {
    /// One external endpoint per internal endpoint, whatever the destination (RFC 4787 REQ-1).
    #[default]
    EndpointIndependent,
    /// A new external endpoint per destination (symmetric NAT): an external port is unique per
    /// (external ip, destination ip, destination port, protocol) only.
    AddressAndPortDependent,
}

/// Idle timeouts: a session expires when no packet refreshed it for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// UDP, until a packet has been seen in both directions.
    pub udp: Duration,
    /// UDP after traffic in both directions (a "stream").
    pub udp_stream: Duration,
    /// TCP after the handshake (SYN seen both ways) and before any FIN or RST.
    pub tcp_established: Duration,
    /// TCP half-open (SYN one way), half-closed (FIN one way) or reset (RST seen).
    pub tcp_transitory: Duration,
    /// TCP after a FIN in both directions.
    pub tcp_time_wait: Duration,
    /// ICMP query (echo) sessions.
    pub icmp: Duration,
}

impl Timeouts {
    /// The preset for `profile` (see the module table).
    pub fn for_profile(profile: Profile) -> Self {
        let s = Duration::from_secs;
        match profile {
            Profile::Rfc => Timeouts {
                udp: s(300),
                udp_stream: s(300),
                tcp_established: s(7440),
                tcp_transitory: s(240),
                tcp_time_wait: s(240),
                icmp: s(60),
            },
            Profile::Aws => Timeouts {
                udp: s(350),
                udp_stream: s(350),
                tcp_established: s(350),
                tcp_transitory: s(350),
                tcp_time_wait: s(350),
                icmp: s(350),
            },
            Profile::Gcp => Timeouts {
                udp: s(30),
                udp_stream: s(30),
                tcp_established: s(1200),
                tcp_transitory: s(30),
                tcp_time_wait: s(120),
                icmp: s(30),
            },
            Profile::Alibaba => Timeouts {
                udp: s(60),
                udp_stream: s(60),
                tcp_established: s(900),
                tcp_transitory: s(60),
                tcp_time_wait: s(120),
                icmp: s(60),
            },
        }
    }
}

/// Everything the NAT core needs to know about one NAT gateway's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// The preset this configuration started from (informational once fields are overridden).
    pub profile: Profile,
    pub timeouts: Timeouts,
    pub filtering: Filtering,
    pub mapping: Mapping,
    /// External ports (and ICMP identifiers) handed out, inclusive.
    pub port_range: (u16, u16),
    /// Keep the internal source port as the external port when it is free and in range (RFC 4787
    /// REQ-3 allows it; it makes EIM mappings predictable for peer-to-peer applications).
    pub port_preservation: bool,
    /// Per-instance port block (GCP `min_ports_per_vm`): each owner gets this many consecutive ports
    /// on one EIP, reserved on its first flow; its mappings only use ports in its block, and the
    /// block is kept until [`super::NatGateway::remove_owner`]. `None`: one shared pool.
    pub ports_per_owner: Option<u16>,
    /// Hard upper bound on sessions; new flows beyond it are refused (`TableFull`), existing ones
    /// are never evicted (except transitory ones when `early_drop_transitory`).
    pub max_entries: usize,
    /// Most simultaneous sessions one owner (instance) may have.
    pub per_instance_max_conns: Option<u32>,
    /// Most new sessions one owner may open per second (a fixed one-second window).
    pub per_instance_new_per_sec: Option<u32>,
    /// Most new inbound-initiated sessions (DNAT, or an endpoint-independent filter admitting a
    /// new remote) one outside source address may open per second: a SYN or UDP flood from one
    /// address is refused here, before it makes state or reaches the instance, while other
    /// sources keep opening theirs. [`DEFAULT_NEW_PER_SOURCE`] unless set; `None`: no limit.
    pub per_source_new_per_sec: Option<u32>,
    /// Most half-open inbound TCP sessions (SYN seen from the outside, its handshake ACK not yet)
    /// one outside source address may hold: past it, that source's new SYNs are refused
    /// (`nat_source_half_open`) until its half-open sessions complete, time out or are
    /// early-dropped. A SYN flood from one address then reaches the instance with at most this
    /// many SYNs per transitory timeout instead of its rate limit every second.
    /// [`DEFAULT_HALF_OPEN_PER_SOURCE`] unless set; `None`: no limit.
    pub half_open_per_source: Option<u32>,
    /// How long an external port stays reserved after its last session ended, so that a remote
    /// still in TIME_WAIT (or with packets in flight) does not see a new flow on the old port.
    /// RFC 6146's 4-minute TCP TIME_WAIT is the model; 120 s (2 MSL as Linux and Cloud NAT use)
    /// by default. During the delay the mapping is kept, so the same internal endpoint gets it
    /// back; nobody else does.
    pub port_reuse_delay: Duration,
    /// When the table is full, drop one half-open or closing TCP session (SYN only, RST seen, or
    /// TIME_WAIT) to make room, found by a bounded scan; established sessions are never dropped.
    /// Without it, a new inbound session (DNAT, a filter admitting a remote) still takes the
    /// place of a half-open one the outside opened, so a SYN flood cannot fill the table for
    /// everyone.
    pub early_drop_transitory: bool,
    /// Tells the caller to answer refused new flows with ICMP "communication administratively
    /// prohibited" (type 3 code 13) instead of dropping silently ([`super::NatGateway::refusal_reply`]).
    pub icmp_prohibited_on_full: bool,
    /// AWS behaviour: an outbound TCP packet that is not a SYN and has no session (typically the
    /// 350 s idle timeout expired it) is answered with a RST to the internal host.
    pub aws_rst_on_expired: bool,
    /// Answer the outside's SYNs to DNAT rules with SYN cookies (`super::synproxy`): no session
    /// exists until the client completes its handshake, then the gateway opens the connection to
    /// the instance itself. A SYN flood then makes no state at all and never reaches the
    /// instance. Off by default (the proxied connection runs without TCP timestamps).
    pub syn_proxy: bool,
    /// Inbound packets refresh a session's idle timer too (RFC 4787 REQ-6 makes outbound refresh
    /// mandatory, inbound optional; real cloud NATs refresh both ways).
    pub inbound_refresh: bool,
    /// Size of the table that lets non-first fragments follow the first one.
    pub fragment_entries: usize,
    /// How long a fragment-tracking entry lives after the first fragment (as a reassembly timer).
    pub fragment_timeout: Duration,
}

impl NatConfig {
    /// The preset for `profile` with the default limits (1 M sessions, no per-instance quotas).
    pub fn profile(profile: Profile) -> Self {
        let base = NatConfig {
            profile,
            timeouts: Timeouts::for_profile(profile),
            filtering: Filtering::AddressAndPortDependent,
            mapping: Mapping::EndpointIndependent,
            port_range: (1024, 65535),
            port_preservation: true,
            ports_per_owner: None,
            max_entries: 1 << 20,
            per_instance_max_conns: None,
            per_instance_new_per_sec: None,
            per_source_new_per_sec: Some(DEFAULT_NEW_PER_SOURCE),
            half_open_per_source: Some(DEFAULT_HALF_OPEN_PER_SOURCE),
            port_reuse_delay: Duration::from_secs(120),
            early_drop_transitory: false,
            icmp_prohibited_on_full: false,
            aws_rst_on_expired: false,
            syn_proxy: false,
            inbound_refresh: true,
            fragment_entries: 4096,
            fragment_timeout: Duration::from_secs(30),
        };
        match profile {
            Profile::Rfc => base,
            Profile::Aws => NatConfig {
                mapping: Mapping::AddressAndPortDependent,
                port_range: (1024, 1024 + 55_000 - 1),
                port_preservation: false,
                aws_rst_on_expired: true,
                ..base
            },
            Profile::Gcp => NatConfig {
                port_preservation: false,
                ports_per_owner: Some(64),
                ..base
            },
            Profile::Alibaba => base,
        }
    }

    /// Checks the values the core relies on; the topology layer reports the message to the user.
    pub fn validate(&self) -> Result<(), &'static str> {
        let (lo, hi) = self.port_range;
        if lo == 0 || lo > hi {
            return Err("port_range must be non-empty and must not include port 0");
        }
        if let Some(block) = self.ports_per_owner
            && (block == 0 || u32::from(block) > u32::from(hi) - u32::from(lo) + 1)
        {
            return Err("ports_per_owner must be between 1 and the size of port_range");
        }
        if self.max_entries == 0 || self.max_entries > u32::MAX as usize / 2 {
            return Err("max_entries must be between 1 and 2^31 - 1");
        }
        if self.per_source_new_per_sec == Some(0) {
            return Err("per_source_new_per_sec must be at least 1 (leave it out for the default)");
        }
        if self.half_open_per_source == Some(0) {
            return Err("half_open_per_source must be at least 1 (leave it out for the default)");
        }
        if self.fragment_entries == 0 || self.fragment_entries > 1 << 20 {
            return Err("fragment_entries must be between 1 and 2^20");
        }
        Ok(())
    }
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig::profile(Profile::Rfc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_profile_meets_rfc_minimums() {
        let c = NatConfig::profile(Profile::Rfc);
        // RFC 4787 REQ-5, RFC 5382 REQ-5, RFC 5508 REQ-1.
        assert!(c.timeouts.udp >= Duration::from_secs(120));
        assert!(c.timeouts.tcp_established >= Duration::from_secs(2 * 3600 + 4 * 60));
        assert!(c.timeouts.tcp_transitory >= Duration::from_secs(240));
        assert!(c.timeouts.icmp >= Duration::from_secs(60));
        assert_eq!(c.mapping, Mapping::EndpointIndependent);
        assert_eq!(c.filtering, Filtering::AddressAndPortDependent);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn aws_profile_is_symmetric_350s_with_55000_ports() {
        let c = NatConfig::profile(Profile::Aws);
        assert_eq!(c.mapping, Mapping::AddressAndPortDependent);
        assert!(!c.port_preservation);
        assert!(c.aws_rst_on_expired);
        assert_eq!(c.timeouts.tcp_established, Duration::from_secs(350));
        assert_eq!(
            u32::from(c.port_range.1) - u32::from(c.port_range.0) + 1,
            55_000
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn gcp_and_alibaba_presets_validate() {
        let g = NatConfig::profile(Profile::Gcp);
        assert_eq!(g.ports_per_owner, Some(64));
        assert_eq!(g.timeouts.udp, Duration::from_secs(30));
        assert!(g.validate().is_ok());
        let a = NatConfig::profile(Profile::Alibaba);
        assert_eq!(a.timeouts.tcp_established, Duration::from_secs(900));
        assert!(a.validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        let mut c = NatConfig {
            port_range: (0, 10),
            ..NatConfig::default()
        };
        assert!(c.validate().is_err());
        c.port_range = (100, 10);
        assert!(c.validate().is_err());
        c.port_range = (100, 110);
        c.ports_per_owner = Some(20);
        assert!(c.validate().is_err());
    }
}
