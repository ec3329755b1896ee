//! Prometheus metrics at `/metrics`: [`render`] turns one [`Snapshot`] (taken by one query of the
//! loop) into the Prometheus text exposition format, version 0.0.4 ([`CONTENT_TYPE`]).
//!
//! The dataplane keeps plain counters and never touches a metrics library; each scrape builds a
//! fresh `prometheus-client` [`Registry`] from the snapshot and encodes it. Names start with
//! `vpcd_`; counters end in `_total` (the encoder appends it). Labels: `vpc`, `gateway` (a NAT
//! gateway's name, or `internet-gateway` for the VPC's 1:1 EIPs), `endpoint` (`VPC/INSTANCE`,
//! `internet/HOST`), `direction` (`out`/`in` for NAT, `rx`/`tx` for ports), `reason` (the drop
//! reasons' labels, every reason present so that `rate()` works from the first scrape).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vpcd_uptime_seconds` | gauge | |
//! | `vpcd_nat_active_connections`, `vpcd_nat_half_open_connections`, `vpcd_nat_mappings` | gauge | vpc, gateway |
//! | `vpcd_nat_capacity_connections` | gauge | vpc, gateway (NAT gateways only) |
//! | `vpcd_nat_connection_attempts_total`, `vpcd_nat_connections_established_total`, `vpcd_nat_port_allocation_errors_total`, `vpcd_nat_idle_timeouts_total`, `vpcd_nat_early_drops_total`, `vpcd_nat_refused_total`, `vpcd_nat_rst_replies_total`, `vpcd_nat_syn_cookies_total`, `vpcd_nat_syn_proxied_total` | counter | vpc, gateway |
//! | `vpcd_nat_packets_total`, `vpcd_nat_bytes_total` | counter | vpc, gateway, direction |
//! | `vpcd_nat_drops_total` | counter | vpc, gateway, reason |
//! | `vpcd_port_packets_total`, `vpcd_port_bytes_total` | counter | endpoint, direction |
//! | `vpcd_port_drops_total`, `vpcd_port_tx_queue_full_total`, `vpcd_port_flood_rests_total` | counter | endpoint |
//! | `vpcd_drops_total` | counter | reason |
//! | `vpcd_sg_flows`, `vpcd_sg_flows_capacity` | gauge | vpc |
//! | `vpcd_sg_flows_created_total`, `vpcd_sg_flows_expired_total`, `vpcd_sg_flows_refused_total` | counter | vpc |
//! | `vpcd_uplink_tcp_opened_total`, `…_tcp_refused_total`, `…_ingress_accepted_total`, `…_bytes_to_host_total`, … (one per uplink counter) | counter | |
//! | `vpcd_uplink_active_flows` | gauge | kind |
//! | `vpcd_uplink_drops_total` | counter | reason |
//! | `vpcd_dns_responses_total` | counter | vpc, rcode |
//! | `vpcd_dns_dropped_total` | counter | vpc, reason |
//! | `vpcd_dns_cache_hits_total`, `vpcd_dns_forwarded_total`, `vpcd_dns_upstream_failures_total`, `vpcd_dns_upstream_mismatched_total`, `vpcd_dns_blocked_total`, `vpcd_dns_alerted_total`, `vpcd_dns_truncated_total` | counter | vpc |
//! | `vpcd_tun_tx_errors_total`, `vpcd_tun_tx_queue_full_total`, `vpcd_tun_rx_errors_total`, `vpcd_sim_overflows_total`, `vpcd_batches_total`, `vpcd_batched_packets_total`, `vpcd_tun_rx_superpackets_total`, `vpcd_tun_rx_segments_total`, `vpcd_tun_tx_superpackets_total`, `vpcd_tun_tx_segments_total`, `vpcd_segmented_superpackets_total`, `vpcd_segmented_segments_total`, `vpcd_coalesced_packets_total`, `vpcd_superpackets_to_uplink_total`, `vpcd_segment_errors_total`, `vpcd_tun_rx_bad_vnet_total`, `vpcd_tun_flood_rests_total`, `vpcd_tun_tenant_deferred_total` | counter | |

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::inspect::{GatewaySnapshot, Snapshot};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type U64Gauge = Gauge<u64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabels {
    vpc: String,
    gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayDirection {
    vpc: String,
    gateway: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayReason {
    vpc: String,
    gateway: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointDirection {
    endpoint: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VpcLabels {
    vpc: String,
}

/// A registry being filled: registers a family per metric and sets its values.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn counters<L>(&mut self, name: &str, help: &str) -> Family<L, Counter>
    where
        L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<L, Counter>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn gauges<L>(&mut self, name: &str, help: &str) -> Family<L, U64Gauge>
    where
        L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<L, U64Gauge>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        self.registry.register(name, help, c);
    }
}

fn gw(g: &GatewaySnapshot) -> GatewayLabels {
    GatewayLabels {
        vpc: g.vpc.clone(),
        gateway: g.gateway.clone(),
    }
}

fn nat(b: &mut Builder, gateways: &[GatewaySnapshot]) {
    let active = b.gauges::<GatewayLabels>(
        "nat_active_connections",
        "Live sessions in the gateway's connection table",
    );
    let half_open = b.gauges::<GatewayLabels>(
        "nat_half_open_connections",
        "TCP sessions the outside opened whose handshake it has not completed",
    );
    let mappings = b.gauges::<GatewayLabels>(
        "nat_mappings",
        "Endpoint-independent mappings, those in their port-reuse delay included",
    );
    let capacity = b.gauges::<GatewayLabels>(
        "nat_capacity_connections",
        "Most sessions the gateway's connection tables hold (max_entries over its pools)",
    );
    type Field = fn(&GatewaySnapshot) -> u64;
    let plain: [(&str, &str, Field); 9] = [
        (
            "nat_connection_attempts",
            "New flows tried through the gateway, refused ones included",
            |g| g.connection_attempts,
        ),
        ("nat_connections_established", "Sessions created", |g| {
            g.connections_established
        }),
        (
            "nat_port_allocation_errors",
            "New flows refused for lack of a free external port",
            |g| g.port_allocation_errors,
        ),
        (
            "nat_idle_timeouts",
            "Sessions ended by their idle timeout",
            |g| g.idle_timeouts,
        ),
        (
            "nat_early_drops",
            "Transitory sessions evicted to make room",
            |g| g.early_dropped,
        ),
        (
            "nat_refused",
            "New flows refused: table full, quotas, port allocation, no EIP",
            |g| g.refused,
        ),
        (
            "nat_rst_replies",
            "RSTs answered for TCP segments without a session",
            |g| g.rst_replies,
        ),
        (
            "nat_syn_cookies",
            "SYNs the SYN proxy answered with a cookie, making no state",
            |g| g.syn_cookies,
        ),
        (
            "nat_syn_proxied",
            "Connections the SYN proxy opened to an instance after a valid cookie",
            |g| g.syn_proxied,
        ),
    ];
    let families: Vec<(Family<GatewayLabels, Counter>, Field)> = plain
        .iter()
        .map(|(name, help, field)| (b.counters(name, help), *field))
        .collect();
    let packets = b.counters::<GatewayDirection>(
        "nat_packets",
        "Packets translated, private to public (out) and back (in)",
    );
    let bytes = b.counters::<GatewayDirection>(
        "nat_bytes",
        "IP bytes translated, private to public (out) and back (in)",
    );
    let drops = b.counters::<GatewayReason>(
        "nat_drops",
        "Packets the gateway did not translate, by reason",
    );
    for g in gateways {
        let l = gw(g);
        active.get_or_create(&l).set(g.active_connections);
        half_open.get_or_create(&l).set(g.half_open_connections);
        mappings.get_or_create(&l).set(g.mappings);
        if let Some(c) = g.capacity {
            capacity.get_or_create(&l).set(c);
        }
        for (f, field) in &families {
            f.get_or_create(&l).inc_by(field(g));
        }
        for (direction, p, by) in [
            ("out", g.packets_out, g.bytes_out),
            ("in", g.packets_in, g.bytes_in),
        ] {
            let l = GatewayDirection {
                vpc: g.vpc.clone(),
                gateway: g.gateway.clone(),
                direction: direction.into(),
            };
            packets.get_or_create(&l).inc_by(p);
            bytes.get_or_create(&l).inc_by(by);
        }
        for (reason, n) in &g.drops {
            let l = GatewayReason {
                vpc: g.vpc.clone(),
                gateway: g.gateway.clone(),
                reason: (*reason).into(),
            };
            drops.get_or_create(&l).inc_by(*n);
        }
    }
}

fn ports(b: &mut Builder, s: &Snapshot) {
    let packets = b.counters::<EndpointDirection>(
        "port_packets",
        "Packets a port sent into the fabric (rx) and received from it (tx)",
    );
    let bytes = b.counters::<EndpointDirection>(
        "port_bytes",
        "Bytes a port sent into the fabric (rx) and received from it (tx)",
    );
    let drops =
        b.counters::<EndpointLabels>("port_drops", "Packets a port sent that the fabric dropped");
    let full = b.counters::<EndpointLabels>(
        "port_tx_queue_full",
        "Packets for a TUN port lost at its full egress queue",
    );
    let rests = b.counters::<EndpointLabels>(
        "port_flood_rests",
        "Times a TUN port was left unread for a millisecond for flooding vpcd with packets it drops",
    );
    for p in &s.ports {
        for (direction, n, by) in [
            ("rx", p.rx_packets, p.rx_bytes),
            ("tx", p.tx_packets, p.tx_bytes),
        ] {
            let l = EndpointDirection {
                endpoint: p.endpoint.clone(),
                direction: direction.into(),
            };
            packets.get_or_create(&l).inc_by(n);
            bytes.get_or_create(&l).inc_by(by);
        }
        let l = EndpointLabels {
            endpoint: p.endpoint.clone(),
        };
        drops.get_or_create(&l).inc_by(p.drops);
        full.get_or_create(&l).inc_by(p.tx_queue_full);
        rests.get_or_create(&l).inc_by(p.flood_rests);
    }
    let fabric = b.counters::<ReasonLabels>("drops", "Packets the fabric dropped, by reason");
    for (reason, n) in &s.drops {
        fabric
            .get_or_create(&ReasonLabels {
                reason: (*reason).into(),
            })
            .inc_by(*n);
    }
}

fn flow_tables(b: &mut Builder, s: &Snapshot) {
    let active = b.gauges::<VpcLabels>("sg_flows", "Flows the VPC's security groups track");
    let capacity = b.gauges::<VpcLabels>(
        "sg_flows_capacity",
        "Most flows the VPC's security-group flow table holds",
    );
    let created = b.counters::<VpcLabels>("sg_flows_created", "Security-group flows created");
    let expired = b.counters::<VpcLabels>(
        "sg_flows_expired",
        "Security-group flows ended by their idle timeout",
    );
    let refused = b.counters::<VpcLabels>(
        "sg_flows_refused",
        "New flows refused because the security-group flow table was full",
    );
    for t in &s.flow_tables {
        let l = VpcLabels { vpc: t.vpc.clone() };
        active.get_or_create(&l).set(t.active);
        capacity.get_or_create(&l).set(t.capacity);
        created.get_or_create(&l).inc_by(t.created);
        expired.get_or_create(&l).inc_by(t.expired);
        refused.get_or_create(&l).inc_by(t.refused);
    }
}

fn shell(b: &mut Builder, s: &Snapshot) {
    let Some(st) = &s.shell else {
        return;
    };
    b.counter(
        "tun_tx_errors",
        "TUN writes the kernel refused",
        st.tun_tx_errors,
    );
    b.counter(
        "tun_tx_queue_full",
        "Packets lost because their TUN egress queue was full",
        st.tun_tx_queue_full,
    );
    b.counter("tun_rx_errors", "TUN reads that failed", st.tun_rx_errors);
    b.counter(
        "sim_overflows",
        "Packets an in-process (sim) port refused",
        st.sim_overflows,
    );
    b.counter("batches", "Packet batches read from TUN ports", st.batches);
    b.counter(
        "batched_packets",
        "Packets in those batches",
        st.batched_packets,
    );
    b.counter(
        "tun_rx_superpackets",
        "Superpackets (GSO) read from offload TUN ports",
        st.tun_rx_superpackets,
    );
    b.counter(
        "tun_rx_segments",
        "Wire segments the superpackets read from TUN ports stand for",
        st.tun_rx_segments,
    );
    b.counter(
        "tun_tx_superpackets",
        "Superpackets (GSO) written to offload TUN ports",
        st.tun_tx_superpackets,
    );
    b.counter(
        "tun_tx_segments",
        "Wire segments the superpackets written to TUN ports stand for",
        st.tun_tx_segments,
    );
    b.counter(
        "segmented_superpackets",
        "Superpackets cut into segments because their egress port could not take them",
        st.segmented_superpackets,
    );
    b.counter(
        "segmented_segments",
        "Segments those superpackets were cut into",
        st.segmented_segments,
    );
    b.counter(
        "coalesced_packets",
        "Packets merged into a superpacket before their egress write",
        st.coalesced_packets,
    );
    b.counter(
        "superpackets_to_uplink",
        "TCP superpackets handed to the uplink whole",
        st.superpackets_to_uplink,
    );
    b.counter(
        "segment_errors",
        "Packets the shell could not frame or segment for their egress port",
        st.segment_errors,
    );
    b.counter(
        "tun_rx_bad_vnet",
        "TUN reads dropped for a virtio_net_hdr vpcd does not carry",
        st.tun_rx_bad_vnet,
    );
    b.counter(
        "tun_flood_rests",
        "Times a TUN port flooding vpcd with packets it drops was left unread for a millisecond",
        st.tun_flood_rests,
    );
    b.counter(
        "tun_tenant_deferred",
        "Times a readable TUN port waited for the next wake-up because its tenant had used its share",
        st.tun_tenant_deferred,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The public uplink: one counter per uplink counter, open flows by kind, drops by reason.
fn uplink(b: &mut Builder, s: &Snapshot) {
    let Some(u) = &s.uplink else {
        return;
    };
    for (name, value) in &u.counters {
        let help = format!("Uplink counter {name} (see vpcd::uplink::UplinkCounters)");
        b.counter(&format!("uplink_{name}"), &help, *value);
    }
    let active = b.gauges::<KindLabels>("uplink_active_flows", "Flows open through the uplink");
    for (kind, n) in &u.active {
        active
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .set(*n);
    }
    let drops = b.counters::<ReasonLabels>(
        "uplink_drops",
        "Packets the uplink dropped or flows it refused, by reason",
    );
    for (reason, n) in &u.drops {
        drops
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc_by(*n);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VpcRcodeLabels {
    vpc: String,
    rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VpcReasonLabels {
    vpc: String,
    reason: String,
}

/// The VPC resolvers: responses by rcode, drops by reason, the cache, forwarding and the DNS
/// Firewall.
fn dns(b: &mut Builder, s: &Snapshot) {
    let responses =
        b.counters::<VpcRcodeLabels>("dns_responses", "Responses of the VPC resolver, by rcode");
    let dropped = b.counters::<VpcReasonLabels>(
        "dns_dropped",
        "Queries the VPC resolver dropped unanswered, by reason",
    );
    for d in &s.dns {
        for (rcode, n) in d.counters.by_rcode() {
            let l = VpcRcodeLabels {
                vpc: d.vpc.clone(),
                rcode: rcode.to_string(),
            };
            responses.get_or_create(&l).inc_by(n);
        }
        for (reason, n) in d.counters.by_drop() {
            let l = VpcReasonLabels {
                vpc: d.vpc.clone(),
                reason: reason.to_string(),
            };
            dropped.get_or_create(&l).inc_by(n);
        }
    }
    type Field = fn(&crate::dns::Counters) -> u64;
    let per_vpc: [(&str, &str, Field); 7] = [
        (
            "dns_cache_hits",
            "Answers from the cache of forwarded answers",
            |c| c.cache_hits,
        ),
        (
            "dns_forwarded",
            "Queries forwarded to an upstream resolver",
            |c| c.forwarded,
        ),
        (
            "dns_upstream_failures",
            "Forwarded queries no upstream answered",
            |c| c.upstream_failures,
        ),
        (
            "dns_upstream_mismatched",
            "Upstream answers thrown away: another id or question than the query sent",
            |c| c.upstream_mismatched,
        ),
        ("dns_blocked", "Queries a DNS Firewall rule blocked", |c| {
            c.blocked
        }),
        (
            "dns_alerted",
            "Queries a DNS Firewall alert rule matched",
            |c| c.alerted,
        ),
        ("dns_truncated", "Responses sent truncated over UDP", |c| {
            c.truncated
        }),
    ];
    for (name, help, field) in per_vpc {
        let f = b.counters::<VpcLabels>(name, help);
        for d in &s.dns {
            let l = VpcLabels { vpc: d.vpc.clone() };
            f.get_or_create(&l).inc_by(field(&d.counters));
        }
    }
}

/// The Prometheus text exposition of `snapshot` (see the module docs for the metrics).
pub fn render(snapshot: &Snapshot) -> String {
    let mut b = Builder {
        registry: Registry::with_prefix("vpcd"),
    };
    let uptime = Gauge::<f64, AtomicU64>::default();
    uptime.set(snapshot.uptime_s);
    b.registry
        .register("uptime_seconds", "Seconds since the run started", uptime);
    nat(&mut b, &snapshot.gateways);
    ports(&mut b, snapshot);
    flow_tables(&mut b, snapshot);
    shell(&mut b, snapshot);
    uplink(&mut b, snapshot);
    dns(&mut b, snapshot);
    let mut out = String::new();
    // Encoding into a String cannot fail; on the impossible error the partial text is returned.
    let _ = prometheus_text::encode(&mut out, &b.registry);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::dataplane::DropReason;
    use crate::dataplane::nat::NatDrop;
    use crate::inspect::{FlowTableSnapshot, GatewayKind, PortSnapshot, ShellStats};
    use crate::topology::model::Attach;

    fn snapshot() -> Snapshot {
        let mut nat_drops: BTreeMap<&'static str, u64> =
            NatDrop::ALL.iter().map(|r| (r.label(), 0)).collect();
        nat_drops.insert(NatDrop::PortAllocation.label(), 3);
        let mut drops: BTreeMap<&'static str, u64> =
            DropReason::ALL.iter().map(|r| (r.label(), 0)).collect();
        drops.insert(DropReason::SecurityGroupIngress.label(), 7);
        Snapshot {
            uptime_s: 12.5,
            gateways: vec![
                GatewaySnapshot {
                    vpc: "tenant-a".into(),
                    gateway: "egress".into(),
                    kind: GatewayKind::Nat,
                    active_connections: 2,
                    half_open_connections: 1,
                    mappings: 2,
                    capacity: Some(65_536),
                    connection_attempts: 6,
                    connections_established: 3,
                    port_allocation_errors: 3,
                    idle_timeouts: 1,
                    early_dropped: 0,
                    refused: 3,
                    rst_replies: 0,
                    syn_cookies: 0,
                    syn_proxied: 0,
                    packets_out: 10,
                    bytes_out: 1000,
                    packets_in: 8,
                    bytes_in: 800,
                    drops: nat_drops,
                },
                GatewaySnapshot {
                    vpc: "tenant-a".into(),
                    gateway: "internet-gateway".into(),
                    kind: GatewayKind::Internet,
                    active_connections: 0,
                    half_open_connections: 0,
                    mappings: 0,
                    capacity: None,
                    connection_attempts: 0,
                    connections_established: 0,
                    port_allocation_errors: 0,
                    idle_timeouts: 0,
                    early_dropped: 0,
                    refused: 0,
                    rst_replies: 0,
                    syn_cookies: 0,
                    syn_proxied: 0,
                    packets_out: 1,
                    bytes_out: 60,
                    packets_in: 0,
                    bytes_in: 0,
                    drops: BTreeMap::new(),
                },
            ],
            ports: vec![PortSnapshot {
                id: 0,
                endpoint: "tenant-a/fn \"a1\"".into(),
                vpc: Some("tenant-a".into()),
                attach: Attach::Sim,
                rx_packets: 4,
                rx_bytes: 400,
                tx_packets: 5,
                tx_bytes: 500,
                drops: 1,
                tx_queue_full: 2,
                flood_rests: 3,
            }],
            drops,
            flow_tables: vec![FlowTableSnapshot {
                vpc: "tenant-a".into(),
                active: 2,
                capacity: 262_144,
                created: 4,
                expired: 2,
                refused: 0,
            }],
            shell: Some(ShellStats {
                tun_tx_queue_full: 9,
                ..ShellStats::default()
            }),
            uplink: None,
            dns: Vec::new(),
        }
    }

    #[test]
    fn dns_responses_drops_cache_forwarding_and_firewall_are_exported_per_vpc() {
        let mut s = snapshot();
        let counters = crate::dns::Counters {
            noerror: 5,
            nxdomain: 2,
            cache_hits: 3,
            forwarded: 4,
            blocked: 1,
            dropped_too_short: 6,
            ..Default::default()
        };
        s.dns = vec![crate::inspect::DnsSnapshot {
            vpc: "tenant-a".into(),
            counters,
        }];
        let samples = parse(&render(&s));
        let a = [("vpc", "tenant-a")];
        let rcode = |r| [("vpc", "tenant-a"), ("rcode", r)];
        assert_eq!(
            value(&samples, "vpcd_dns_responses_total", &rcode("NOERROR")),
            Some(5.0)
        );
        assert_eq!(
            value(&samples, "vpcd_dns_responses_total", &rcode("NXDOMAIN")),
            Some(2.0)
        );
        assert_eq!(
            value(&samples, "vpcd_dns_responses_total", &rcode("REFUSED")),
            Some(0.0)
        );
        assert_eq!(
            value(
                &samples,
                "vpcd_dns_dropped_total",
                &[("vpc", "tenant-a"), ("reason", "too_short")]
            ),
            Some(6.0)
        );
        assert_eq!(value(&samples, "vpcd_dns_cache_hits_total", &a), Some(3.0));
        assert_eq!(value(&samples, "vpcd_dns_forwarded_total", &a), Some(4.0));
        assert_eq!(value(&samples, "vpcd_dns_blocked_total", &a), Some(1.0));
    }

    #[test]
    fn uplink_counters_flows_and_drops_are_exported() {
        let mut s = snapshot();
        let mut u = crate::inspect::UplinkSnapshot::default();
        u.counters.insert("tcp_opened", 7);
        u.counters.insert("bytes_to_host", 1_000);
        u.active.insert("tcp_open", 3);
        u.drops.insert("blocked", 2);
        s.uplink = Some(u);
        let samples = parse(&render(&s));
        assert_eq!(
            value(&samples, "vpcd_uplink_tcp_opened_total", &[]),
            Some(7.0)
        );
        assert_eq!(
            value(&samples, "vpcd_uplink_bytes_to_host_total", &[]),
            Some(1000.0)
        );
        assert_eq!(
            value(
                &samples,
                "vpcd_uplink_active_flows",
                &[("kind", "tcp_open")]
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &samples,
                "vpcd_uplink_drops_total",
                &[("reason", "blocked")]
            ),
            Some(2.0)
        );
        assert!(
            !render(&snapshot()).contains("vpcd_uplink"),
            "no uplink, no uplink metrics"
        );
    }

    /// One sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the exposition's sample lines (a small reader for the format, enough for tests:
    /// label values with `\"` and `\\` escapes).
    fn parse(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (head, value) = line.rsplit_once(' ').expect("name and value");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = BTreeMap::new();
                    let mut chars = rest.chars().peekable();
                    while chars.peek().is_some() {
                        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                        assert_eq!(chars.next(), Some('"'), "{line}");
                        let mut v = String::new();
                        while let Some(c) = chars.next() {
                            match c {
                                '\\' => v.push(chars.next().expect("escaped char")),
                                '"' => break,
                                c => v.push(c),
                            }
                        }
                        if chars.peek() == Some(&',') {
                            chars.next();
                        }
                        labels.insert(key, v);
                    }
                    (name.to_string(), labels)
                }
            };
            out.push((name, labels, value));
        }
        out
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    #[test]
    fn a_snapshot_renders_as_prometheus_text_with_labels_and_values() {
        let text = render(&snapshot());
        let samples = parse(&text);
        let gw = [("vpc", "tenant-a"), ("gateway", "egress")];
        assert_eq!(value(&samples, "vpcd_uptime_seconds", &[]), Some(12.5));
        assert_eq!(
            value(&samples, "vpcd_nat_active_connections", &gw),
            Some(2.0)
        );
        assert_eq!(
            value(&samples, "vpcd_nat_capacity_connections", &gw),
            Some(65_536.0)
        );
        assert_eq!(
            value(
                &samples,
                "vpcd_nat_capacity_connections",
                &[("vpc", "tenant-a"), ("gateway", "internet-gateway")]
            ),
            None,
            "the stateless internet gateway has no capacity"
        );
        assert_eq!(
            value(&samples, "vpcd_nat_connection_attempts_total", &gw),
            Some(6.0)
        );
        assert_eq!(
            value(&samples, "vpcd_nat_port_allocation_errors_total", &gw),
            Some(3.0)
        );
        assert_eq!(
            value(
                &samples,
                "vpcd_nat_bytes_total",
                &[
                    ("vpc", "tenant-a"),
                    ("gateway", "egress"),
                    ("direction", "in")
                ]
            ),
            Some(800.0)
        );
        assert_eq!(
            value(
                &samples,
                "vpcd_nat_drops_total",
                &[
                    ("vpc", "tenant-a"),
                    ("gateway", "egress"),
                    ("reason", "nat_port_allocation")
                ]
            ),
            Some(3.0)
        );
        assert_eq!(
            value(&samples, "vpcd_drops_total", &[("reason", "sg_ingress")]),
            Some(7.0)
        );
        assert_eq!(
            value(&samples, "vpcd_drops_total", &[("reason", "no_route")]),
            Some(0.0),
            "every reason is exported, zeros included"
        );
        assert_eq!(
            value(
                &samples,
                "vpcd_port_packets_total",
                &[("endpoint", "tenant-a/fn \"a1\""), ("direction", "tx")]
            ),
            Some(5.0),
            "label values are escaped and read back"
        );
        assert_eq!(
            value(&samples, "vpcd_sg_flows", &[("vpc", "tenant-a")]),
            Some(2.0)
        );
        assert_eq!(
            value(&samples, "vpcd_tun_tx_queue_full_total", &[]),
            Some(9.0)
        );
        let a1 = [("endpoint", "tenant-a/fn \"a1\"")];
        assert_eq!(
            value(&samples, "vpcd_port_tx_queue_full_total", &a1),
            Some(2.0)
        );
        assert_eq!(
            value(&samples, "vpcd_port_flood_rests_total", &a1),
            Some(3.0)
        );
    }

    #[test]
    fn names_are_prefixed_counters_end_in_total_and_every_sample_has_a_type() {
        let text = render(&snapshot());
        let mut types: HashMap<String, String> = HashMap::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut it = line["# TYPE ".len()..].split(' ');
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            types.insert(name.to_string(), kind.to_string());
        }
        for (name, _, _) in parse(&text) {
            assert!(name.starts_with("vpcd_"), "{name}");
            let kind = types
                .get(&name)
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name}: {kind}"
            );
        }
    }

    #[test]
    fn a_bare_fabric_snapshot_has_no_shell_metrics() {
        let mut s = snapshot();
        s.shell = None;
        let text = render(&s);
        assert!(!text.contains("vpcd_tun_"), "{text}");
        assert!(text.contains("vpcd_nat_"));
    }
}
