//! Reads and small changes of the running dataplane for the control plane (issue 6): a
//! [`Snapshot`] of every counter the metrics export, the connection listing ([`connections`]) and
//! flushing connections ([`flush`]).
//!
//! Pure functions over a [`Fabric`] and a `now`, so they are tested without a shell: data shaping
//! of the fabric's, the firewall's and the NAT's state, no I/O. The running shell calls them on
//! its own fabric (`Shell::snapshot`, `Shell::connections` and `Shell::flush_connections` in
//! [`crate::runtime::event_loop`]), which is what an API handler runs through
//! [`crate::runtime::Handle::query`]. Each is one pass over counters or a scan of the connection tables
//! (control-plane work, never per packet), bounded by the tables' sizes; the listing builds at
//! most `limit` rows.
//!
//! Names are the user's: endpoints `VPC/INSTANCE` and `internet/HOST`, gateways `VPC/GATEWAY`, and
//! `VPC/internet-gateway` for the VPC's 1:1 EIPs ([`INTERNET_GATEWAY`]). A name that matches
//! nothing is an [`InspectError`] that lists what exists. This module reads the dataplane through
//! its public accessors only and changes it only by flushing sessions and flows.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::dataplane::firewall::FlowView;
use crate::dataplane::gateways::INTERNET_GATEWAY;
use crate::dataplane::nat::{NatCounters, NatDrop, NatGateway, SessionState, SessionView};
use crate::dataplane::{DropReason, Fabric, PortId};
use crate::tables::{PortOwner, Tables, VpcTable};
use crate::time::Instant;
use crate::topology::model::Attach;

/// Rows [`connections`] returns when the filter sets no limit.
pub const DEFAULT_CONN_LIMIT: usize = 1000;
/// Names an error lists before it says how many more there are.
const LISTED_NAMES: usize = 30;

/// Every figure the metrics export, taken in one query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Seconds on the loop's clock (since the run started).
    pub uptime_s: f64,
    /// Every NAT gateway (its pools summed) and every VPC's internet gateway (1:1 EIPs).
    pub gateways: Vec<GatewaySnapshot>,
    /// Every port, in port-id order.
    pub ports: Vec<PortSnapshot>,
    /// Packets the fabric dropped, by [`DropReason::label`] (every reason, zeros included).
    pub drops: BTreeMap<&'static str, u64>,
    /// The security groups' flow table of every VPC.
    pub flow_tables: Vec<FlowTableSnapshot>,
    /// The I/O shell's own losses and batching (`null` for a bare fabric).
    pub shell: Option<ShellStats>,
    /// The public uplink's flows and counters (`null` without `[internet] uplink = "host"`, and
    /// for a bare fabric).
    pub uplink: Option<UplinkSnapshot>,
    /// What each VPC's resolver answered (empty for a bare fabric).
    pub dns: Vec<DnsSnapshot>,
}

/// One VPC resolver's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsSnapshot {
    pub vpc: String,
    pub counters: crate::dns::Counters,
}

/// The I/O shell's own losses and batching: packets it could not hand to an egress port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShellStats {
    /// TUN writes the kernel refused (device gone).
    pub tun_tx_errors: u64,
    /// Packets dropped because their TUN egress queue was full (its writer behind).
    pub tun_tx_queue_full: u64,
    /// TUN reads that failed with something other than "nothing to read".
    pub tun_rx_errors: u64,
    /// Packets a sim port refused (queue full, larger than its MTU).
    pub sim_overflows: u64,
    /// Times the uplink's packets waited for a full TUN egress queue to drain.
    pub uplink_paced: u64,
    /// Batches read, and packets in them (their ratio is the mean batch size).
    pub batches: u64,
    pub batched_packets: u64,
    /// Superpackets (GSO, `virtio_net_hdr`) read from offload TUN ports, and the wire segments
    /// they stand for.
    pub tun_rx_superpackets: u64,
    pub tun_rx_segments: u64,
    /// Superpackets written to offload TUN ports, and the wire segments they stand for.
    pub tun_tx_superpackets: u64,
    pub tun_tx_segments: u64,
    /// Superpackets the shell cut into segments because their egress could not take them (a sim
    /// port, the uplink, a port without offload), and the segments that made.
    pub segmented_superpackets: u64,
    pub segmented_segments: u64,
    /// Packets merged into a superpacket before their egress write (GRO/USO coalescing).
    pub coalesced_packets: u64,
    /// TCP superpackets handed to the uplink whole (its stack reads each as one segment).
    pub superpackets_to_uplink: u64,
    /// Packets the shell could not frame or cut for their egress port (offload metadata that
    /// does not fit the packet; the fabric checks it, so this stays 0).
    pub segment_errors: u64,
    /// TUN reads whose `virtio_net_hdr` was short or described something vpcd does not carry
    /// (IPv6 TCP segmentation, UFO): dropped before the fabric.
    pub tun_rx_bad_vnet: u64,
    /// Times a TUN port flooding the fabric with what it drops was left unread for a while (its
    /// excess then waits, and is dropped, in the kernel's TUN queue).
    pub tun_flood_rests: u64,
    /// Times a readable TUN port was left for the next wake-up because its tenant (its VPC, an
    /// internet host, the uplink) had used its share of this one (`runtime::fair`).
    pub tun_tenant_deferred: u64,
}

/// The public uplink, by counter name (the names of [`crate::uplink::UplinkCounters`]' fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UplinkSnapshot {
    /// Monotonic counters: flows opened, refused, reset, expired; ingress accepted and refused;
    /// echo requests and replies; bytes and packets each way.
    pub counters: BTreeMap<&'static str, u64>,
    /// Flows open now, by kind: `tcp_connecting`, `tcp_open`, `udp`, `icmp`.
    pub active: BTreeMap<&'static str, u64>,
    /// Packets dropped or flows refused, by [`crate::uplink::UplinkDrop::label`] (every reason).
    pub drops: BTreeMap<&'static str, u64>,
}

impl UplinkSnapshot {
    pub fn of(u: &crate::uplink::Uplink) -> UplinkSnapshot {
        let c = u.counters();
        let counters = [
            ("tcp_opened", c.tcp_opened),
            ("tcp_refused", c.tcp_refused),
            ("tcp_unreachable", c.tcp_unreachable),
            ("tcp_reset", c.tcp_reset),
            ("tcp_expired", c.tcp_expired),
            ("ingress_accepted", c.ingress_accepted),
            ("ingress_refused", c.ingress_refused),
            ("udp_opened", c.udp_opened),
            ("udp_expired", c.udp_expired),
            ("udp_unreachable", c.udp_unreachable),
            ("icmp_opened", c.icmp_opened),
            ("icmp_expired", c.icmp_expired),
            ("echo_requests", c.echo_requests),
            ("echo_replies", c.echo_replies),
            ("bytes_to_host", c.bytes_to_host),
            ("bytes_from_host", c.bytes_from_host),
            ("packets_in", c.packets_in),
            ("packets_out", c.packets_out),
        ]
        .into_iter()
        .collect();
        let a = u.active();
        let active = [
            ("tcp_connecting", a.tcp_connecting as u64),
            ("tcp_open", a.tcp_open as u64),
            ("udp", a.udp as u64),
            ("icmp", a.icmp as u64),
        ]
        .into_iter()
        .collect();
        let drops = crate::uplink::UplinkDrop::ALL
            .iter()
            .map(|r| (r.label(), c.drops(*r)))
            .collect();
        UplinkSnapshot {
            counters,
            active,
            drops,
        }
    }
}

/// What a gateway is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// A NAT gateway (SNAT pools, DNAT rules).
    Nat,
    /// The VPC's internet gateway: stateless 1:1 EIP translation.
    Internet,
}

/// One gateway's counters and table occupancy, summed over its SNAT pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewaySnapshot {
    pub vpc: String,
    /// The NAT gateway's name, or `internet-gateway`.
    pub gateway: String,
    pub kind: GatewayKind,
    /// Live sessions (connections) in the connection table.
    pub active_connections: u64,
    /// TCP sessions the outside opened whose handshake it has not completed (a SYN flood shows
    /// here).
    pub half_open_connections: u64,
    /// Endpoint-independent mappings, those in their port-reuse delay included.
    pub mappings: u64,
    /// Most sessions the tables hold (`max_entries` per pool, summed); `null` for the stateless
    /// internet gateway.
    pub capacity: Option<u64>,
    /// New flows tried (refused ones included).
    pub connection_attempts: u64,
    /// Sessions created.
    pub connections_established: u64,
    /// New flows refused for lack of a free external port (AWS's `ErrorPortAllocation`).
    pub port_allocation_errors: u64,
    /// Sessions that ended by their idle timeout.
    pub idle_timeouts: u64,
    /// Transitory sessions evicted to make room.
    pub early_dropped: u64,
    /// New flows refused: table full, quotas, port allocation, no EIP.
    pub refused: u64,
    /// RSTs answered for stale TCP segments (`aws_rst_on_expired`).
    pub rst_replies: u64,
    /// SYNs the SYN proxy answered with a cookie, making no state (`syn_proxy`).
    pub syn_cookies: u64,
    /// Connections the SYN proxy opened to an instance after a valid cookie came back.
    pub syn_proxied: u64,
    /// Translated packets and their IP bytes, private -> public (`out`) and back (`in`).
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Packets the gateway did not translate, by [`NatDrop::label`] (every reason).
    pub drops: BTreeMap<&'static str, u64>,
}

/// One port's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortSnapshot {
    pub id: u32,
    /// `VPC/INSTANCE` or `internet/HOST`.
    pub endpoint: String,
    /// The instance's VPC; `null` for an internet host.
    pub vpc: Option<String>,
    pub attach: Attach,
    /// What the port sent into the fabric.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// What the fabric delivered to it (generated replies included).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets it sent that the fabric dropped.
    pub drops: u64,
    /// Packets for it lost at its full TUN egress queue (0 for other ports and a bare fabric).
    pub tx_queue_full: u64,
    /// Times it was left unread for a while because it flooded the fabric with packets the
    /// fabric drops (TUN ports; 0 for a bare fabric).
    pub flood_rests: u64,
}

/// One VPC's security-group flow table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowTableSnapshot {
    pub vpc: String,
    pub active: u64,
    pub capacity: u64,
    pub created: u64,
    pub expired: u64,
    /// New flows refused because the table was full.
    pub refused: u64,
}

/// Takes every counter of `fabric` at `now` (`shell` stays `None`; the running shell fills it in).
pub fn snapshot(fabric: &Fabric, now: Instant) -> Snapshot {
    let tables = fabric.tables();
    let counters = fabric.counters();
    let mut gateways = Vec::new();
    for v in fabric.gateways().vpcs() {
        for g in &v.nat {
            gateways.push(gateway_snapshot(
                &v.name,
                &g.name,
                GatewayKind::Nat,
                &g.pools,
            ));
        }
        gateways.push(gateway_snapshot(
            &v.name,
            INTERNET_GATEWAY,
            GatewayKind::Internet,
            std::slice::from_ref(&v.igw),
        ));
    }
    let ports = tables
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let c = counters.port(PortId(i as u32));
            PortSnapshot {
                id: i as u32,
                endpoint: p.name.to_string(),
                vpc: match p.owner {
                    PortOwner::Instance { vpc, .. } | PortOwner::Resolver { vpc } => {
                        tables.vpcs.get(vpc as usize).map(|v| v.name.clone())
                    }
                    PortOwner::Host { .. } | PortOwner::Uplink => None,
                },
                attach: p.attach,
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                drops: c.drops,
                tx_queue_full: 0,
                flood_rests: 0,
            }
        })
        .collect();
    let flow_tables = fabric
        .firewall()
        .tables()
        .map(|(vpc, t)| {
            let c = t.counters();
            FlowTableSnapshot {
                vpc: vpc.to_string(),
                active: c.active,
                capacity: u64::from(t.config().max_flows),
                created: c.created,
                expired: c.expired,
                refused: c.refused,
            }
        })
        .collect();
    Snapshot {
        uptime_s: now.micros() as f64 / 1e6,
        gateways,
        ports,
        drops: DropReason::ALL
            .iter()
            .map(|r| (r.label(), counters.drops(*r)))
            .collect(),
        flow_tables,
        shell: None,
        uplink: None,
        dns: Vec::new(),
    }
}

fn gateway_snapshot(
    vpc: &str,
    gateway: &str,
    kind: GatewayKind,
    cores: &[NatGateway],
) -> GatewaySnapshot {
    let mut s = GatewaySnapshot {
        vpc: vpc.to_string(),
        gateway: gateway.to_string(),
        kind,
        active_connections: 0,
        half_open_connections: 0,
        mappings: 0,
        capacity: (kind == GatewayKind::Nat).then_some(0),
        connection_attempts: 0,
        connections_established: 0,
        port_allocation_errors: 0,
        idle_timeouts: 0,
        early_dropped: 0,
        refused: 0,
        rst_replies: 0,
        syn_cookies: 0,
        syn_proxied: 0,
        packets_out: 0,
        bytes_out: 0,
        packets_in: 0,
        bytes_in: 0,
        drops: NatDrop::ALL.iter().map(|r| (r.label(), 0)).collect(),
    };
    for core in cores {
        let c: NatCounters = core.counters();
        s.active_connections += c.active_sessions;
        s.half_open_connections += c.half_open;
        s.mappings += c.mappings;
        if let Some(cap) = &mut s.capacity {
            *cap += core.config().max_entries as u64;
        }
        s.connection_attempts += c.attempts;
        s.connections_established += c.created;
        s.port_allocation_errors += c.drops(NatDrop::PortAllocation);
        s.idle_timeouts += c.expired;
        s.early_dropped += c.early_dropped;
        s.refused += c.refused();
        s.rst_replies += c.rst_replies;
        s.syn_cookies += c.syn_cookies;
        s.syn_proxied += c.syn_proxied;
        s.packets_out += c.out_packets;
        s.bytes_out += c.out_bytes;
        s.packets_in += c.in_packets;
        s.bytes_in += c.in_bytes;
        for (r, n) in c.nonzero_drops() {
            *s.drops.entry(r.label()).or_default() += n;
        }
    }
    s
}

/// Why a listing or a flush was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("no VPC `{name}` in the running network (VPCs: {known})")]
    UnknownVpc { name: String, known: String },
    #[error(
        "no instance `{name}` in the running network (instances: {known}); write VPC/INSTANCE{}",
        bare_hint(.bare_allowed)
    )]
    UnknownInstance {
        name: String,
        known: String,
        bare_allowed: bool,
    },
    #[error(
        "no gateway `{name}` in the running network (gateways: {known}); write VPC/GATEWAY, or \
         VPC/internet-gateway for the VPC's 1:1 EIPs"
    )]
    UnknownGateway { name: String, known: String },
    #[error("`{0}` is not a protocol: write tcp, udp, icmp or an IP protocol number (0-255)")]
    BadProtocol(String),
    #[error(
        "`{0}` is not a connection table: write nat (NAT sessions) or sg (security-group flows)"
    )]
    BadTable(String),
}

fn bare_hint(bare_allowed: &bool) -> &'static str {
    if *bare_allowed {
        " or a bare INSTANCE name"
    } else {
        ""
    }
}

impl InspectError {
    /// Whether the request named something that does not exist (an HTTP 404), rather than being
    /// malformed (400).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            InspectError::UnknownVpc { .. }
                | InspectError::UnknownInstance { .. }
                | InspectError::UnknownGateway { .. }
        )
    }
}

/// `a, b, c` (at most [`LISTED_NAMES`], then how many more), or `none`.
fn list(names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.collect();
    if names.is_empty() {
        return "none".into();
    }
    let mut s = names
        .iter()
        .take(LISTED_NAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED_NAMES {
        s.push_str(&format!(", … ({} more)", names.len() - LISTED_NAMES));
    }
    s
}

/// Which connections to list. Every field is optional; JSON keys are the field names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnFilter {
    /// Only this VPC.
    pub vpc: Option<String>,
    /// Only sessions of this gateway: `VPC/GATEWAY`, `VPC/internet-gateway`, or a bare name
    /// (in every VPC, or in `vpc`). Excludes security-group flows.
    pub gateway: Option<String>,
    /// Only this instance's connections: `VPC/INSTANCE`, or a bare name (in every VPC).
    pub instance: Option<String>,
    /// `tcp`, `udp`, `icmp` or a protocol number.
    pub protocol: Option<String>,
    /// `nat` or `sg`.
    pub table: Option<String>,
    /// Most rows returned ([`DEFAULT_CONN_LIMIT`] when unset); `total` counts them all.
    pub limit: Option<usize>,
}

/// Which table a connection lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnTable {
    /// A NAT gateway's (or the internet gateway's) session.
    Nat,
    /// A flow the VPC's security groups track.
    Sg,
}

/// One connection. Endpoints are `a.b.c.d:port` (ICMP: the query identifier as the port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnRow {
    pub table: ConnTable,
    pub vpc: String,
    /// `nat` only: the gateway's name or `internet-gateway`.
    pub gateway: Option<String>,
    /// `tcp`, `udp`, `icmp`, or the protocol number.
    pub protocol: String,
    /// The VPC side: the private endpoint (`sg`: the initiator when both ends are in the VPC).
    pub internal: String,
    /// `nat` only: the EIP and port the flow uses.
    pub external: Option<String>,
    /// The other end (`nat`: the public peer; `sg`: the peer as the VPC sees it).
    pub remote: String,
    /// The instance at `internal`, `VPC/INSTANCE` (`null` if none has that address now).
    pub instance: Option<String>,
    /// `nat`: `syn_sent`, `syn_received`, `established`, `fin_wait`, `time_wait`, `closing`,
    /// `udp`, `udp_stream`, `icmp_query`. `sg`: `replied` or `unreplied`.
    pub state: String,
    /// `sg` only: `outbound` (the VPC side opened it), `inbound`, or `within` (both ends in the
    /// VPC).
    pub direction: Option<String>,
    pub age_s: u64,
    pub idle_s: u64,
    /// `nat` only: packets and IP bytes private -> public (`out`) and back (`in`).
    pub packets_out: Option<u64>,
    pub packets_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub bytes_in: Option<u64>,
    /// `nat` through the uplink only: the host socket the flow leaves from, `ADDR:PORT` as the
    /// outside sees it (`0.0.0.0` when bound to every address; its port may differ from
    /// `external` only when the host had that one in use).
    pub host_socket: Option<String>,
}

/// The host socket behind a NAT session, by protocol number, external and remote endpoint
/// (see [`ConnRow::host_socket`]).
pub type HostSocketOf<'a> = &'a dyn Fn(u8, (Ipv4Addr, u16), (Ipv4Addr, u16)) -> Option<String>;

/// What [`connections`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnList {
    /// At most `limit` rows, sorted by table, VPC, gateway, internal and remote endpoint.
    pub connections: Vec<ConnRow>,
    /// Every connection that matched.
    pub total: usize,
    /// Whether rows were left out because of the limit.
    pub truncated: bool,
}

/// A filter with its names resolved against the running tables.
struct Resolved {
    vpc: Option<usize>,
    /// `(vpc, gateway name)` pairs whose sessions are listed.
    gateways: Option<Vec<(usize, String)>>,
    /// `(vpc, address)` of the instances whose connections are listed.
    instances: Option<Vec<(usize, Ipv4Addr)>>,
    protocol: Option<u8>,
    table: Option<ConnTable>,
}

fn parse_protocol(p: &str) -> Result<u8, InspectError> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        n => n
            .parse::<u8>()
            .map_err(|_| InspectError::BadProtocol(p.to_string())),
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

fn resolve_vpc(tables: &Tables, name: &str) -> Result<usize, InspectError> {
    tables
        .vpcs
        .iter()
        .position(|v| v.name == name)
        .ok_or_else(|| InspectError::UnknownVpc {
            name: name.to_string(),
            known: list(tables.vpcs.iter().map(|v| v.name.clone())),
        })
}

/// The instances called `name` (`VPC/INSTANCE`, or a bare name when `bare` allows it), as
/// `(vpc, address)`.
fn resolve_instances(
    tables: &Tables,
    name: &str,
    bare: bool,
) -> Result<Vec<(usize, Ipv4Addr)>, InspectError> {
    let instances = tables.ports.iter().filter_map(|p| match p.owner {
        PortOwner::Instance { vpc, .. } => Some((vpc as usize, p)),
        PortOwner::Host { .. } | PortOwner::Uplink | PortOwner::Resolver { .. } => None,
    });
    let found: Vec<(usize, Ipv4Addr)> = instances
        .clone()
        .filter(|(_, p)| {
            &*p.name == name
                || (bare
                    && !name.contains('/')
                    && p.name.split_once('/').is_some_and(|(_, i)| i == name))
        })
        .map(|(vpc, p)| (vpc, p.addr))
        .collect();
    if found.is_empty() {
        return Err(InspectError::UnknownInstance {
            name: name.to_string(),
            known: list(instances.map(|(_, p)| p.name.to_string())),
            bare_allowed: bare,
        });
    }
    Ok(found)
}

/// Every gateway of the running fabric as `(vpc, name)`.
fn all_gateways(fabric: &Fabric) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (vi, v) in fabric.gateways().vpcs().iter().enumerate() {
        out.extend(v.nat.iter().map(|g| (vi, g.name.clone())));
        out.push((vi, INTERNET_GATEWAY.to_string()));
    }
    out
}

fn vpc_name(fabric: &Fabric, vi: usize) -> &str {
    fabric
        .gateways()
        .vpcs()
        .get(vi)
        .map_or("?", |v| v.name.as_str())
}

/// The gateways called `name` (`VPC/GATEWAY`, or a bare name in `vpc` or in every VPC).
fn resolve_gateways(
    fabric: &Fabric,
    vpc: Option<usize>,
    name: &str,
    bare: bool,
) -> Result<Vec<(usize, String)>, InspectError> {
    let all = all_gateways(fabric);
    let found: Vec<(usize, String)> = all
        .iter()
        .filter(|(vi, g)| match name.split_once('/') {
            Some((v, n)) => vpc_name(fabric, *vi) == v && g == n,
            None => bare && g == name && vpc.is_none_or(|x| x == *vi),
        })
        .cloned()
        .collect();
    if found.is_empty() {
        return Err(InspectError::UnknownGateway {
            name: name.to_string(),
            known: list(
                all.iter()
                    .map(|(vi, g)| format!("{}/{g}", vpc_name(fabric, *vi))),
            ),
        });
    }
    Ok(found)
}

fn resolve(fabric: &Fabric, f: &ConnFilter) -> Result<Resolved, InspectError> {
    let tables = fabric.tables();
    let vpc = f
        .vpc
        .as_deref()
        .map(|v| resolve_vpc(tables, v))
        .transpose()?;
    let gateways = f
        .gateway
        .as_deref()
        .map(|g| resolve_gateways(fabric, vpc, g, true))
        .transpose()?;
    let instances = f
        .instance
        .as_deref()
        .map(|i| resolve_instances(tables, i, true))
        .transpose()?;
    let protocol = f.protocol.as_deref().map(parse_protocol).transpose()?;
    let table = match f.table.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("nat") => Some(ConnTable::Nat),
        Some("sg") => Some(ConnTable::Sg),
        Some(_) => {
            return Err(InspectError::BadTable(f.table.clone().unwrap_or_default()));
        }
    };
    Ok(Resolved {
        vpc,
        gateways,
        instances,
        protocol,
        table,
    })
}

impl Resolved {
    fn vpc_ok(&self, vi: usize) -> bool {
        self.vpc.is_none_or(|v| v == vi)
    }

    fn gateway_ok(&self, vi: usize, gateway: &str) -> bool {
        self.gateways
            .as_ref()
            .is_none_or(|gs| gs.iter().any(|(v, g)| *v == vi && g == gateway))
    }

    fn instance_ok(&self, vi: usize, addrs: &[Ipv4Addr]) -> bool {
        self.instances.as_ref().is_none_or(|is| {
            is.iter()
                .any(|(v, a)| *v == vi && addrs.iter().any(|x| x == a))
        })
    }

    fn protocol_ok(&self, p: u8) -> bool {
        self.protocol.is_none_or(|x| x == p)
    }

    fn table_ok(&self, t: ConnTable) -> bool {
        self.table.is_none_or(|x| x == t)
    }
}

fn endpoint((ip, port): (Ipv4Addr, u16)) -> String {
    format!("{ip}:{port}")
}

/// The VPC table of the fabric's VPC `vi` (the gateways and flow tables follow the tables'
/// order; looked up by name if that ever differs).
fn vpc_table<'a>(tables: &'a Tables, vi: usize, name: &str) -> Option<&'a VpcTable> {
    match tables.vpcs.get(vi) {
        Some(v) if v.name == name => Some(v),
        _ => tables.vpcs.iter().find(|v| v.name == name),
    }
}

/// The `VPC/INSTANCE` name of the instance at `addr` in `vpc`.
fn instance_at(tables: &Tables, vpc: Option<&VpcTable>, addr: Ipv4Addr) -> Option<String> {
    let port = vpc?.hosts.get(&addr)?;
    tables.port(*port).map(|p| p.name.to_string())
}

fn state_label(s: SessionState) -> &'static str {
    match s {
        SessionState::SynSent => "syn_sent",
        SessionState::SynReceived => "syn_received",
        SessionState::Established => "established",
        SessionState::FinWait => "fin_wait",
        SessionState::TimeWait => "time_wait",
        SessionState::Closing => "closing",
        SessionState::Udp => "udp",
        SessionState::UdpStream => "udp_stream",
        SessionState::IcmpQuery => "icmp_query",
    }
}

fn nat_row(
    tables: &Tables,
    vpc: &str,
    table: Option<&VpcTable>,
    gateway: &str,
    s: &SessionView,
    host_socket: HostSocketOf,
) -> ConnRow {
    ConnRow {
        table: ConnTable::Nat,
        vpc: vpc.to_string(),
        gateway: Some(gateway.to_string()),
        protocol: protocol_name(s.protocol.number()),
        internal: endpoint(s.internal),
        external: Some(endpoint(s.external)),
        remote: endpoint(s.remote),
        instance: instance_at(tables, table, s.internal.0),
        state: state_label(s.state).to_string(),
        direction: None,
        age_s: s.age.as_secs(),
        idle_s: s.idle.as_secs(),
        packets_out: Some(u64::from(s.packets_out)),
        packets_in: Some(u64::from(s.packets_in)),
        host_socket: host_socket(s.protocol.number(), s.external, s.remote),
        bytes_out: Some(s.bytes_out),
        bytes_in: Some(s.bytes_in),
    }
}

fn sg_row(tables: &Tables, vpc: &str, table: Option<&VpcTable>, f: &FlowView) -> ConnRow {
    let end = |(ip, port): (u32, u16)| (Ipv4Addr::from(ip), port);
    let (init, resp) = if f.initiator_is_a {
        (end(f.key.a), end(f.key.b))
    } else {
        (end(f.key.b), end(f.key.a))
    };
    let init_inst = instance_at(tables, table, init.0);
    let resp_inst = instance_at(tables, table, resp.0);
    let (internal, remote, instance, direction) = match (&init_inst, &resp_inst) {
        (Some(_), Some(_)) => (init, resp, init_inst, "within"),
        (Some(_), None) => (init, resp, init_inst, "outbound"),
        (None, Some(_)) => (resp, init, resp_inst, "inbound"),
        (None, None) => (init, resp, None, "outbound"),
    };
    ConnRow {
        table: ConnTable::Sg,
        vpc: vpc.to_string(),
        gateway: None,
        protocol: protocol_name(f.key.proto),
        internal: endpoint(internal),
        external: None,
        remote: endpoint(remote),
        instance,
        state: if f.replied { "replied" } else { "unreplied" }.to_string(),
        direction: Some(direction.to_string()),
        age_s: u64::from(f.age_secs),
        idle_s: u64::from(f.idle_secs),
        packets_out: None,
        packets_in: None,
        bytes_out: None,
        bytes_in: None,
        host_socket: None,
    }
}

/// Lists the NAT sessions and security-group flows that match `filter` at `now`: a scan of the
/// tables, building at most `limit` rows.
pub fn connections(
    fabric: &Fabric,
    now: Instant,
    filter: &ConnFilter,
) -> Result<ConnList, InspectError> {
    connections_with(fabric, now, filter, &|_, _, _| None)
}

/// [`connections`], with each NAT session's host socket from `host_socket` (the running
/// uplink's).
pub fn connections_with(
    fabric: &Fabric,
    now: Instant,
    filter: &ConnFilter,
    host_socket: HostSocketOf,
) -> Result<ConnList, InspectError> {
    let r = resolve(fabric, filter)?;
    let limit = filter.limit.unwrap_or(DEFAULT_CONN_LIMIT);
    let tables = fabric.tables();
    let mut rows = Vec::new();
    let mut total = 0usize;
    if r.table_ok(ConnTable::Nat) {
        for (vi, v) in fabric.gateways().vpcs().iter().enumerate() {
            if !r.vpc_ok(vi) {
                continue;
            }
            let table = vpc_table(tables, vi, &v.name);
            let cores = v
                .nat
                .iter()
                .flat_map(|g| g.pools.iter().map(move |c| (g.name.as_str(), c)))
                .chain(std::iter::once((INTERNET_GATEWAY, &v.igw)));
            for (gateway, core) in cores {
                if !r.gateway_ok(vi, gateway) {
                    continue;
                }
                for s in core.sessions(now) {
                    if r.protocol_ok(s.protocol.number()) && r.instance_ok(vi, &[s.internal.0]) {
                        total += 1;
                        if rows.len() < limit {
                            rows.push(nat_row(tables, &v.name, table, gateway, &s, host_socket));
                        }
                    }
                }
            }
        }
    }
    if r.table_ok(ConnTable::Sg) && r.gateways.is_none() {
        for (vi, (vpc, flows)) in fabric.firewall().tables().enumerate() {
            if !r.vpc_ok(vi) {
                continue;
            }
            let table = vpc_table(tables, vi, vpc);
            for f in flows.flows(now) {
                let ends = [Ipv4Addr::from(f.key.a.0), Ipv4Addr::from(f.key.b.0)];
                if r.protocol_ok(f.key.proto) && r.instance_ok(vi, &ends) {
                    total += 1;
                    if rows.len() < limit {
                        rows.push(sg_row(tables, vpc, table, &f));
                    }
                }
            }
        }
    }
    rows.sort_by(|a, b| {
        (a.table, &a.vpc, &a.gateway, &a.internal, &a.remote).cmp(&(
            b.table,
            &b.vpc,
            &b.gateway,
            &b.internal,
            &b.remote,
        ))
    });
    Ok(ConnList {
        truncated: total > rows.len(),
        connections: rows,
        total,
    })
}

/// What to flush. JSON: `{"instance": "VPC/INSTANCE"}` or `{"gateway": "VPC/GATEWAY"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum FlushTarget {
    /// The instance's NAT sessions in every gateway of its VPC, and its security-group flows.
    Instance(String),
    /// Every session of the gateway's pools (`VPC/internet-gateway`: the 1:1 core, which keeps
    /// no sessions).
    Gateway(String),
}

/// What [`flush`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Flushed {
    pub nat_sessions: usize,
    pub sg_flows: usize,
}

impl Flushed {
    pub fn total(&self) -> usize {
        self.nat_sessions + self.sg_flows
    }
}

/// Ends connections now. Flushed NAT sessions are gone as after an idle timeout (not counted as
/// one): the next packet of an old flow finds no session (a TCP segment other than SYN is
/// dropped or answered with a RST as the profile says; an inbound packet meets the filtering
/// rules), and their mappings enter the port-reuse delay. Flushed security-group flows meet the
/// rules again with their next packet.
pub fn flush(
    fabric: &mut Fabric,
    now: Instant,
    target: &FlushTarget,
) -> Result<Flushed, InspectError> {
    match target {
        FlushTarget::Instance(name) => {
            let mut done = Flushed::default();
            for (vi, addr) in resolve_instances(fabric.tables(), name, false)? {
                done.nat_sessions += fabric.gateways_mut().flush_internal(now, vi, addr);
                done.sg_flows += fabric.firewall_mut().flush_address(vi, addr);
            }
            Ok(done)
        }
        FlushTarget::Gateway(name) => {
            let mut done = Flushed::default();
            for (vi, g) in resolve_gateways(fabric, None, name, false)? {
                done.nat_sessions += fabric
                    .gateways_mut()
                    .flush_gateway(now, vi, &g)
                    .unwrap_or(0);
            }
            Ok(done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_by_name_and_number() {
        assert_eq!(parse_protocol("TCP"), Ok(6));
        assert_eq!(parse_protocol("17"), Ok(17));
        assert_eq!(parse_protocol("icmp"), Ok(1));
        let e = parse_protocol("sctpx").unwrap_err();
        assert!(e.to_string().contains("tcp, udp, icmp"), "{e}");
        assert!(!e.is_not_found());
        assert_eq!(protocol_name(47), "47");
    }

    #[test]
    fn long_name_lists_are_cut() {
        let l = list((0..40).map(|i| format!("v/i{i}")));
        assert!(l.ends_with(", … (10 more)"), "{l}");
        assert_eq!(list(std::iter::empty()), "none");
    }

    #[test]
    fn filters_and_targets_decode_from_json() {
        let f: ConnFilter =
            serde_json::from_str(r#"{"instance":"fn-a1","protocol":"tcp","limit":5}"#)
                .expect("a filter");
        assert_eq!(f.instance.as_deref(), Some("fn-a1"));
        assert_eq!(f.limit, Some(5));
        assert!(serde_json::from_str::<ConnFilter>(r#"{"bogus":1}"#).is_err());
        let t: FlushTarget =
            serde_json::from_str(r#"{"gateway":"tenant-a/egress"}"#).expect("a target");
        assert_eq!(t, FlushTarget::Gateway("tenant-a/egress".into()));
    }
}
