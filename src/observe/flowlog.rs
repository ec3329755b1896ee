//! Flow logs: packets aggregated into AWS VPC Flow Logs–style records per capture window.
//!
//! # What a packet leaves behind
//!
//! Records are per port (the `interface-id` is the port's name, `VPC/INSTANCE` or
//! `internet/HOST`) and per direction as that port's interface sees it:
//!
//! - **Forwarded** from port A to port B: an `egress` `ACCEPT` record at A with the packet as A
//!   sent it (before NAT), and an `ingress` `ACCEPT` record at B with the packet as B received it
//!   (`srcaddr`/`dstaddr`/ports after NAT), whose `pkt-srcaddr`/`pkt-dstaddr` are the addresses
//!   before NAT. So an SNATed call shows the private source in `pkt-srcaddr` of the public host's
//!   ingress record, and a DNATed one the EIP in `pkt-dstaddr` of the instance's. On an egress
//!   record `pkt-*` equals `srcaddr`/`dstaddr`.
//! - **Dropped**: a `REJECT` record at the port it came in on, direction `egress` (that port sent
//!   it), with `reject-reason` = [`DropReason::label`] — which also says which side refused it
//!   (`sg_ingress` is the receiver's security group, `nacl_inbound` its subnet's ACL). The fabric
//!   does not name the would-be receiver of a dropped packet, so no record appears at its port.
//! - **Answered by the fabric** (`Verdict::Reply`): the packet that was answered gets an `egress`
//!   record at its port — `ACCEPT` when the answer is the subnet gateway's echo reply, `REJECT`
//!   when it is an error: `ttl_exceeded` (Time Exceeded at the NAT gateway hop), `too_big`
//!   (fragmentation needed), or `refused` (the NAT gateway refused the flow with an ICMP
//!   administratively-prohibited or a TCP RST). The generated packet gets an `ingress` `ACCEPT`
//!   record at the port it is delivered to, addressed as delivered (it was never translated).
//!
//! Records are keyed by (port, direction, action, reject reason, protocol, addresses, ports,
//! pre-NAT addresses, ICMP type and code): the flow's 5-tuple as that interface saw it. `packets`
//! and `bytes` (IP lengths) add up, counted as on the wire: a superpacket (TSO/GRO, see
//! [`crate::dataplane::offload`]) is the segments it stands for, each with its headers, on both
//! sides and when dropped; `start`/`end` are the first and last packet of the flow in the
//! window, in unix seconds (`epoch` + `now`); `tcp-flags` is the OR of the flags seen, reported
//! like AWS: FIN, SYN, RST, and ACK only together with SYN (SYN-ACK = 18).
//!
//! # Windows and bounds
//!
//! Windows are `window` long, aligned on multiples of it from `Instant::ZERO`. A window closes at
//! its end ([`FlowLog::poll_timeout`] / [`FlowLog::handle_timeout`], or the first packet after it
//! if the caller is late): its records move to the finished list, which the caller drains
//! ([`FlowLog::drain_into`]). [`FlowLog::flush_all`] closes the current window early (shutdown).
//! The table holds at most `max_flows` flows, allocated up front; once full, packets of new flows
//! in that window are counted per port and become one `SKIPDATA` record per port with their packet
//! and byte totals (AWS: "some flow log records were skipped during the aggregation interval").
//! Nothing is lost silently: every packet handed to [`FlowLog::record`] (every segment of a
//! superpacket) ends up in exactly one `OK` or `SKIPDATA` record's `packets` (two for a forwarded
//! or answered packet: one per side).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use foldhash::fast::FixedState;
use serde::Serialize;

use super::{PROTO_ICMP, PROTO_TCP, PacketFacts};
use crate::dataplane::packet::{
    ICMP_DEST_UNREACHABLE, ICMP_TIME_EXCEEDED, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};
use crate::dataplane::{DropReason, Verdict};
use crate::tables::{PortId, PortOwner, Tables};
use crate::time::Instant;

/// The AWS flow-log format version whose fields these records carry (`pkt-srcaddr`, `tcp-flags`:
/// v3; `flow-direction`: v5).
pub const FLOW_LOG_VERSION: u8 = 5;

/// AWS's default aggregation interval is 10 min, with 1 min as the other choice; vpcd uses 1 min.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Flows tracked per window before packets are counted as skipped: 65,536 buckets of 73 bytes
/// (key, counts, control byte), about 4.6 MiB, allocated once.
pub const DEFAULT_MAX_FLOWS: usize = 50_000;

/// How a flow log aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLogConfig {
    /// Length of a capture window (at least 1 ms; shorter values are raised to it).
    pub window: Duration,
    /// Flows per window; more are counted as `SKIPDATA`. At least 1.
    pub max_flows: usize,
    /// Unix time of `Instant::ZERO`: records' `start`/`end` are `epoch + now`. The runtime passes
    /// the wall clock at its start; the simulator 0 unless told otherwise.
    pub epoch: Duration,
    /// Written as `account-id` when set.
    pub account_id: Option<String>,
    /// Seeds the table's hasher. A runtime facing guests passes an unpredictable value (guests
    /// choose the keys).
    pub seed: u64,
}

impl Default for FlowLogConfig {
    fn default() -> Self {
        FlowLogConfig {
            window: DEFAULT_WINDOW,
            max_flows: DEFAULT_MAX_FLOWS,
            epoch: Duration::ZERO,
            account_id: None,
            seed: 0x666c_6f77, // "flow"
        }
    }
}

/// Which way a packet crossed the port's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Into the port's instance or host (delivered by the fabric).
    Ingress,
    /// Out of it (sent into the fabric).
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Accept,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogStatus {
    /// The record describes its flow completely.
    Ok,
    /// Packets of flows that did not fit into the table this window: only counted.
    Skipdata,
}

/// Why a flow was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The fabric dropped it.
    Dropped(DropReason),
    /// The NAT gateway answered it with an ICMP administratively-prohibited or a TCP RST.
    Refused,
}

impl RejectReason {
    /// The `reject-reason` field: [`DropReason::label`], or `refused`.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Dropped(r) => r.label(),
            RejectReason::Refused => "refused",
        }
    }
}

impl Serialize for RejectReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// One flow-log record: AWS VPC Flow Logs fields (hyphenated names, as AWS writes them) plus
/// vpcd's. Fields that do not apply are `None` (JSON `null`, AWS's `-`): every flow field of a
/// `SKIPDATA` record; `vpc-id`/`subnet-id`/`instance-id` of an internet host's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlowRecord {
    pub version: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The port's name: `VPC/INSTANCE` or `internet/HOST`.
    pub interface_id: String,
    pub srcaddr: Option<Ipv4Addr>,
    pub dstaddr: Option<Ipv4Addr>,
    /// 0 for protocols without ports (ICMP: see `icmp-type`).
    pub srcport: Option<u16>,
    pub dstport: Option<u16>,
    /// IANA protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub protocol: Option<u8>,
    pub packets: u64,
    pub bytes: u64,
    /// Unix seconds of the first and last packet in the window (of the window for `SKIPDATA`).
    pub start: u64,
    pub end: u64,
    pub action: Option<Action>,
    pub log_status: LogStatus,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub instance_id: Option<String>,
    pub tcp_flags: Option<u8>,
    pub flow_direction: Option<Direction>,
    pub pkt_srcaddr: Option<Ipv4Addr>,
    pub pkt_dstaddr: Option<Ipv4Addr>,
    /// For `REJECT`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<RejectReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// The port, for programs (not written).
    #[serde(skip)]
    pub port: PortId,
    /// First and last packet on the flow log's clock (not written).
    #[serde(skip)]
    pub first: Instant,
    #[serde(skip)]
    pub last: Instant,
}

/// The aggregation key: one flow as one interface saw it. (A hand-packed `Hash` writing four
/// words was measured slower than the derived one with foldhash.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    port: u32,
    direction: Direction,
    action: Action,
    reason: Option<RejectReason>,
    /// `None` for packets that were not readable IPv4.
    flow: Option<FlowLogKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowLogKey {
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    icmp: Option<(u8, u8)>,
    pkt_src: Ipv4Addr,
    pkt_dst: Ipv4Addr,
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    packets: u64,
    bytes: u64,
    first: Instant,
    last: Instant,
    tcp_flags: u8,
}

/// Packets of flows that found the table full, for one port.
#[derive(Debug, Clone, Copy, Default)]
struct Skipped {
    packets: u64,
    bytes: u64,
}

/// Names a port's records carry, resolved once per table version (not per packet).
#[derive(Debug, Clone)]
struct PortLabels {
    interface_id: String,
    vpc_id: Option<String>,
    subnet_id: Option<String>,
    instance_id: Option<String>,
}

/// The flow-log aggregator. Sans-IO: see the module docs for what it records and when to call
/// what.
#[derive(Debug)]
pub struct FlowLog {
    config: FlowLogConfig,
    window: Duration,
    table: HashMap<Key, Counts, FixedState>,
    /// Per port (index = port id); the last slot counts ports the tables do not know.
    skipped: Vec<Skipped>,
    skipped_any: bool,
    /// Start of the current window; meaningful while something is counted.
    window_start: Instant,
    finished: Vec<FlowRecord>,
    labels: Vec<PortLabels>,
}

impl FlowLog {
    /// A flow log for the ports of `tables` (names are resolved from them when windows close).
    /// Allocates its whole table here.
    pub fn new(tables: &Tables, config: FlowLogConfig) -> FlowLog {
        let max_flows = config.max_flows.max(1);
        let window = config.window.max(Duration::from_millis(1));
        let mut log = FlowLog {
            table: HashMap::with_capacity_and_hasher(max_flows, FixedState::with_seed(config.seed)),
            config: FlowLogConfig {
                max_flows,
                window,
                ..config
            },
            window,
            skipped: Vec::new(),
            skipped_any: false,
            window_start: Instant::ZERO,
            finished: Vec::new(),
            labels: Vec::new(),
        };
        log.set_tables(tables);
        log
    }

    pub fn config(&self) -> &FlowLogConfig {
        &self.config
    }

    /// Picks up port names from new tables (after `Fabric::swap_tables`). Flows already counted
    /// are reported under the new names of their port numbers.
    pub fn set_tables(&mut self, tables: &Tables) {
        self.labels = tables.ports.iter().map(|p| labels(tables, p)).collect();
        self.skipped
            .resize(tables.ports.len() + 1, Skipped::default());
    }

    /// Records one packet the fabric has handled: `before` are its facts read before
    /// `Fabric::handle_meta` ([`PacketFacts::parse_with`] of `buf[..len]` and the metadata it came
    /// with: the sender's record and a drop count the segments it sent), `verdict` what the fabric
    /// returned, and `buf` the buffer after it (the translated or generated packet; the
    /// receiver's record counts the segments of `verdict`'s metadata). Call it for
    /// every packet, with a `now` that never goes backwards. [`super::Observer::handle`] does all
    /// this. No allocation, lock or I/O.
    pub fn record(
        &mut self,
        now: Instant,
        ingress: PortId,
        before: Option<PacketFacts>,
        verdict: Verdict,
        buf: &[u8],
    ) {
        if now >= self.window_end() {
            self.close(now);
        }
        match verdict {
            Verdict::Forward { port, len, meta } => {
                let after = PacketFacts::parse_with(buf.get(..len).unwrap_or(buf), meta).or(before);
                self.count(
                    now,
                    ingress,
                    Direction::Egress,
                    Action::Accept,
                    None,
                    before,
                    before,
                );
                self.count(
                    now,
                    port,
                    Direction::Ingress,
                    Action::Accept,
                    None,
                    after,
                    before,
                );
            }
            Verdict::Reply { port, len } => {
                let reply = PacketFacts::parse(buf.get(..len).unwrap_or(buf));
                let reason = reply.and_then(answered_with);
                let action = if reason.is_some() {
                    Action::Reject
                } else {
                    Action::Accept
                };
                self.count(
                    now,
                    ingress,
                    Direction::Egress,
                    action,
                    reason,
                    before,
                    before,
                );
                self.count(
                    now,
                    port,
                    Direction::Ingress,
                    Action::Accept,
                    None,
                    reply,
                    reply,
                );
            }
            Verdict::Drop(r) => {
                let reason = Some(RejectReason::Dropped(r));
                self.count(
                    now,
                    ingress,
                    Direction::Egress,
                    Action::Reject,
                    reason,
                    before,
                    before,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn count(
        &mut self,
        now: Instant,
        port: PortId,
        direction: Direction,
        action: Action,
        reason: Option<RejectReason>,
        seen: Option<PacketFacts>,
        pre: Option<PacketFacts>,
    ) {
        let flow = seen.map(|f| FlowLogKey {
            proto: f.proto,
            src: f.src,
            dst: f.dst,
            src_port: f.src_port,
            dst_port: f.dst_port,
            icmp: f.icmp,
            pkt_src: pre.map_or(f.src, |p| p.src),
            pkt_dst: pre.map_or(f.dst, |p| p.dst),
        });
        // An unreadable packet is one packet of unknown length.
        let (packets, bytes) = seen
            .or(pre)
            .map_or((1, 0), |f| (u64::from(f.segments), f.wire_bytes));
        let flags = seen.map_or(0, |f| {
            if f.proto == PROTO_TCP {
                aws_tcp_flags(f.tcp_flags)
            } else {
                0
            }
        });
        let key = Key {
            port: port.0,
            direction,
            action,
            reason,
            flow,
        };
        if let Some(c) = self.table.get_mut(&key) {
            c.packets += packets;
            c.bytes += bytes;
            c.last = now;
            c.tcp_flags |= flags;
        } else if self.table.len() < self.config.max_flows {
            self.table.insert(
                key,
                Counts {
                    packets,
                    bytes,
                    first: now,
                    last: now,
                    tcp_flags: flags,
                },
            );
        } else {
            let last = self.skipped.len().saturating_sub(1);
            if let Some(s) = self.skipped.get_mut(port.index().min(last)) {
                s.packets += packets;
                s.bytes += bytes;
                self.skipped_any = true;
            }
        }
    }

    fn window_end(&self) -> Instant {
        self.window_start + self.window
    }

    fn is_empty(&self) -> bool {
        self.table.is_empty() && !self.skipped_any
    }

    /// When the current window ends, if anything is counted in it: call
    /// [`FlowLog::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_empty()).then(|| self.window_end())
    }

    /// Closes the current window if `now` is at or past its end; its records are then ready for
    /// [`FlowLog::drain_into`]. Calling it late is harmless (records keep their packet times).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.window_end() {
            self.close(now);
        }
    }

    /// Closes the current window at `now` whatever its end (clean shutdown, or before reading
    /// the records in a test): afterwards every packet recorded so far is in a finished record.
    pub fn flush_all(&mut self, now: Instant) {
        self.emit(now.clamp(self.window_start, self.window_end()));
    }

    /// Moves the finished records into `out` (in window order; within a window, sorted by port,
    /// direction and flow, so output is deterministic).
    pub fn drain_into(&mut self, out: &mut Vec<FlowRecord>) {
        out.append(&mut self.finished);
    }

    /// Finished records not drained yet.
    pub fn finished(&self) -> &[FlowRecord] {
        &self.finished
    }

    /// Flows counted in the current window.
    pub fn active_flows(&self) -> usize {
        self.table.len()
    }

    /// Ends the current window and starts the one containing `now`.
    fn close(&mut self, now: Instant) {
        let end = self.window_end();
        self.emit(end);
        let w = self.window.as_micros().max(1) as u64;
        self.window_start = Instant::from_micros(now.micros() / w * w);
    }

    /// Turns everything counted into finished records; `end` is the window's end for `SKIPDATA`.
    fn emit(&mut self, end: Instant) {
        let start = self.window_start;
        let first = self.finished.len();
        let unix = |t: Instant| (self.config.epoch + Duration::from_micros(t.micros())).as_secs();
        for (key, c) in self.table.drain() {
            let labels = self.labels.get(key.port as usize);
            let f = key.flow;
            let is_icmp = f.is_some_and(|f| f.proto == PROTO_ICMP);
            self.finished.push(FlowRecord {
                version: FLOW_LOG_VERSION,
                account_id: self.config.account_id.clone(),
                interface_id: labels
                    .map_or_else(|| format!("port-{}", key.port), |l| l.interface_id.clone()),
                srcaddr: f.map(|f| f.src),
                dstaddr: f.map(|f| f.dst),
                srcport: f.map(|f| f.src_port),
                dstport: f.map(|f| f.dst_port),
                protocol: f.map(|f| f.proto),
                packets: c.packets,
                bytes: c.bytes,
                start: unix(c.first),
                end: unix(c.last),
                action: Some(key.action),
                log_status: LogStatus::Ok,
                vpc_id: labels.and_then(|l| l.vpc_id.clone()),
                subnet_id: labels.and_then(|l| l.subnet_id.clone()),
                instance_id: labels.and_then(|l| l.instance_id.clone()),
                tcp_flags: f.map(|_| c.tcp_flags),
                flow_direction: Some(key.direction),
                pkt_srcaddr: f.map(|f| f.pkt_src),
                pkt_dstaddr: f.map(|f| f.pkt_dst),
                reject_reason: key.reason,
                icmp_type: f.and_then(|f| f.icmp).filter(|_| is_icmp).map(|i| i.0),
                icmp_code: f.and_then(|f| f.icmp).filter(|_| is_icmp).map(|i| i.1),
                port: PortId(key.port),
                first: c.first,
                last: c.last,
            });
        }
        if self.skipped_any {
            for (i, s) in self.skipped.iter_mut().enumerate() {
                if s.packets == 0 {
                    continue;
                }
                let labels = self.labels.get(i);
                self.finished.push(FlowRecord {
                    version: FLOW_LOG_VERSION,
                    account_id: self.config.account_id.clone(),
                    interface_id: labels
                        .map_or_else(|| "unknown-port".to_string(), |l| l.interface_id.clone()),
                    srcaddr: None,
                    dstaddr: None,
                    srcport: None,
                    dstport: None,
                    protocol: None,
                    packets: s.packets,
                    bytes: s.bytes,
                    start: unix(start),
                    end: unix(end),
                    action: None,
                    log_status: LogStatus::Skipdata,
                    vpc_id: labels.and_then(|l| l.vpc_id.clone()),
                    subnet_id: labels.and_then(|l| l.subnet_id.clone()),
                    instance_id: labels.and_then(|l| l.instance_id.clone()),
                    tcp_flags: None,
                    flow_direction: None,
                    pkt_srcaddr: None,
                    pkt_dstaddr: None,
                    reject_reason: None,
                    icmp_type: None,
                    icmp_code: None,
                    port: PortId(i as u32),
                    first: start,
                    last: end,
                });
                *s = Skipped::default();
            }
            self.skipped_any = false;
        }
        self.finished[first..].sort_by(|a, b| {
            (
                a.port,
                a.log_status as u8,
                a.flow_direction.map(|d| d as u8),
            )
                .cmp(&(
                    b.port,
                    b.log_status as u8,
                    b.flow_direction.map(|d| d as u8),
                ))
                .then_with(|| a.first.cmp(&b.first))
                .then_with(|| {
                    (a.srcaddr, a.dstaddr, a.srcport, a.dstport)
                        .cmp(&(b.srcaddr, b.dstaddr, b.srcport, b.dstport))
                })
        });
    }
}

/// What a generated reply says about the packet it answers: `None` for an echo reply (the
/// gateway accepted it), a reject reason for an error or a RST.
fn answered_with(reply: PacketFacts) -> Option<RejectReason> {
    match (reply.proto, reply.icmp) {
        (PROTO_ICMP, Some((ICMP_TIME_EXCEEDED, _))) => {
            Some(RejectReason::Dropped(DropReason::TtlExceeded))
        }
        // Code 4: fragmentation needed.
        (PROTO_ICMP, Some((ICMP_DEST_UNREACHABLE, 4))) => {
            Some(RejectReason::Dropped(DropReason::TooBig))
        }
        (PROTO_ICMP, Some((ICMP_DEST_UNREACHABLE, _))) => Some(RejectReason::Refused),
        (PROTO_TCP, _) if reply.tcp_flags & TCP_RST != 0 => Some(RejectReason::Refused),
        _ => None,
    }
}

/// One packet's flags as AWS reports them: FIN, SYN and RST, and ACK only with SYN (SYN-ACK =
/// 18); a record ORs its packets' values, so a plain handshake's client side shows 2, not 18.
fn aws_tcp_flags(flags: u8) -> u8 {
    let mut f = flags & (TCP_FIN | TCP_SYN | TCP_RST);
    if flags & TCP_SYN != 0 {
        f |= flags & TCP_ACK;
    }
    f
}

fn labels(tables: &Tables, p: &crate::tables::PortInfo) -> PortLabels {
    match p.owner {
        PortOwner::Instance {
            vpc,
            subnet,
            instance: _,
        } => {
            let v = tables.vpcs.get(vpc as usize);
            PortLabels {
                interface_id: p.name.to_string(),
                vpc_id: v.map(|v| v.name.clone()),
                subnet_id: v
                    .and_then(|v| v.subnets.get(subnet as usize))
                    .map(|s| s.name.clone()),
                instance_id: Some(
                    p.name
                        .split_once('/')
                        .map_or(&*p.name, |(_, i)| i)
                        .to_string(),
                ),
            }
        }
        PortOwner::Host { .. } | PortOwner::Uplink => PortLabels {
            interface_id: p.name.to_string(),
            vpc_id: None,
            subnet_id: None,
            instance_id: None,
        },
        PortOwner::Resolver { vpc } => PortLabels {
            interface_id: p.name.to_string(),
            vpc_id: tables.vpcs.get(vpc as usize).map(|v| v.name.clone()),
            subnet_id: None,
            instance_id: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::dataplane::offload::PacketMeta;
    use crate::observe::PROTO_UDP;
    use crate::observe::tests::{superpacket, udp_superpacket, wire_segments};
    use crate::topology::compile::tables as compile;

    fn tables() -> Tables {
        let plan = crate::topology::parse(
            "flowlog.toml",
            r#"
            [[vpc]]
            name = "t"
            cidr = "10.0.0.0/16"
            subnet = [{ name = "s", cidr = "10.0.1.0/24" }]
            instance = [
                { name = "a", subnet = "s", ip = "10.0.1.10" },
                { name = "b", subnet = "s", ip = "10.0.1.20" },
            ]
            [internet]
            host = [{ name = "web", ip = "198.51.100.10" }]
            "#,
        )
        .expect("valid topology");
        compile(&plan)
    }

    /// A 40-byte TCP packet.
    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[33] = flags;
        p
    }

    fn log(window: Duration, max_flows: usize) -> FlowLog {
        FlowLog::new(
            &tables(),
            FlowLogConfig {
                window,
                max_flows,
                ..FlowLogConfig::default()
            },
        )
    }

    #[test]
    fn a_forwarded_packet_is_egress_at_the_sender_and_ingress_at_the_receiver_after_nat() {
        let mut log = log(Duration::from_secs(60), 16);
        let sent = tcp([10, 0, 1, 10], [198, 51, 100, 10], 40000, 80, 0x02);
        let translated = tcp([203, 0, 113, 10], [198, 51, 100, 10], 1024, 80, 0x02);
        let before = PacketFacts::parse(&sent);
        let v = Verdict::Forward {
            port: PortId(2),
            len: 40,
            meta: PacketMeta::COMPLETE,
        };
        log.record(Instant::from_secs(1), PortId(0), before, v, &translated);
        log.flush_all(Instant::from_secs(2));
        let mut out = Vec::new();
        log.drain_into(&mut out);
        assert_eq!(out.len(), 2, "{out:#?}");
        let egress = &out[0];
        assert_eq!(egress.interface_id, "t/a");
        assert_eq!(egress.flow_direction, Some(Direction::Egress));
        assert_eq!(egress.srcaddr, Some(Ipv4Addr::new(10, 0, 1, 10)));
        assert_eq!(egress.srcport, Some(40000));
        let ingress = &out[1];
        assert_eq!(ingress.interface_id, "internet/web");
        assert_eq!(ingress.srcaddr, Some(Ipv4Addr::new(203, 0, 113, 10)));
        assert_eq!(ingress.srcport, Some(1024));
        assert_eq!(ingress.pkt_srcaddr, Some(Ipv4Addr::new(10, 0, 1, 10)));
        assert_eq!((ingress.packets, ingress.bytes), (1, 40));
        assert_eq!(ingress.start, 1);
    }

    #[test]
    fn unreadable_packets_are_still_counted() {
        let mut log = log(Duration::from_secs(60), 16);
        let v = Verdict::Drop(DropReason::NotIp);
        log.record(Instant::ZERO, PortId(1), None, v, &[0x00, 0x01]);
        log.record(Instant::ZERO, PortId(99), None, v, &[]);
        log.flush_all(Instant::ZERO);
        let mut out = Vec::new();
        log.drain_into(&mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| r.srcaddr.is_none() && r.packets == 1));
        assert_eq!(out[1].interface_id, "port-99");
    }

    #[test]
    fn entry_sizes() {
        // What one tracked flow costs (the table stores key and counts inline): 72 bytes on
        // x86_64, so the default 50,000 flows fit 65,536 buckets, about 4.6 MiB.
        assert!(std::mem::size_of::<Key>() + std::mem::size_of::<Counts>() <= 72);
    }

    #[test]
    fn tcp_flags_are_reported_like_aws() {
        assert_eq!(aws_tcp_flags(0x12), 18, "SYN-ACK");
        assert_eq!(aws_tcp_flags(0x10), 0, "a bare ACK is not reported");
        assert_eq!(aws_tcp_flags(0x19), 1, "FIN (with ACK and PSH)");
        assert_eq!(aws_tcp_flags(0x14), 4, "RST");
    }

    #[test]
    fn the_table_never_grows_past_its_first_allocation() {
        let mut log = log(Duration::from_secs(60), 8);
        let capacity = log.table.capacity();
        for i in 0..1000u16 {
            let p = tcp([10, 0, 1, 10], [10, 0, 1, 20], i, 80, 0x02);
            let v = Verdict::Forward {
                port: PortId(1),
                len: 40,
                meta: PacketMeta::COMPLETE,
            };
            log.record(
                Instant::from_micros(u64::from(i)),
                PortId(0),
                PacketFacts::parse(&p),
                v,
                &p,
            );
        }
        assert_eq!(log.table.capacity(), capacity);
        assert_eq!(log.active_flows(), 8);
    }

    /// Records `p` (with `meta`) sent by port 0 at time zero.
    fn record_sent(log: &mut FlowLog, p: &[u8], meta: PacketMeta, v: Verdict) {
        log.record(
            Instant::ZERO,
            PortId(0),
            PacketFacts::parse_with(p, meta),
            v,
            p,
        );
    }

    fn drained(mut log: FlowLog, now: Instant) -> Vec<FlowRecord> {
        log.flush_all(now);
        let mut out = Vec::new();
        log.drain_into(&mut out);
        out
    }

    #[test]
    fn a_forwarded_tcp_superpacket_counts_its_segments_and_their_headers_on_both_sides() {
        let (p, meta) = superpacket(
            PROTO_TCP,
            ([10, 0, 1, 10], 40000),
            ([10, 0, 1, 20], 80),
            TCP_FIN,
            4000,
            1448,
        );
        let mut log = log(Duration::from_secs(60), 16);
        let v = Verdict::Forward {
            port: PortId(1),
            len: p.len(),
            meta,
        };
        record_sent(&mut log, &p, meta, v);
        let out = drained(log, Instant::ZERO);
        assert_eq!(out.len(), 2, "{out:#?}");
        for r in &out {
            // 1448 + 1448 + 1104 bytes of payload, 52 bytes of headers each.
            assert_eq!((r.packets, r.bytes), (3, 4000 + 3 * 52), "{r:?}");
            assert_eq!(r.tcp_flags, Some(1), "the FIN (of the last segment)");
        }
    }

    #[test]
    fn the_receivers_record_counts_the_packets_the_fabric_forwarded() {
        // The verdict's metadata describes what leaves: here one ordinary packet (as if the
        // superpacket had been sent on whole), so the receiver counts one.
        let (p, meta) = udp_superpacket(3000, 1200);
        let mut log = log(Duration::from_secs(60), 16);
        let v = Verdict::Forward {
            port: PortId(1),
            len: p.len(),
            meta: PacketMeta::COMPLETE,
        };
        record_sent(&mut log, &p, meta, v);
        let out = drained(log, Instant::ZERO);
        let counts: Vec<_> = out
            .iter()
            .map(|r| (r.flow_direction, r.packets, r.bytes))
            .collect();
        assert_eq!(
            counts,
            [
                (Some(Direction::Egress), 3, 3028 + 2 * 28),
                (Some(Direction::Ingress), 1, 3028)
            ]
        );
    }

    #[test]
    fn a_dropped_udp_superpacket_counts_every_segment() {
        let (p, meta) = udp_superpacket(3000, 1200);
        let mut log = log(Duration::from_secs(60), 16);
        let v = Verdict::Drop(DropReason::SecurityGroupIngress);
        record_sent(&mut log, &p, meta, v);
        let out = drained(log, Instant::ZERO);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].action, Some(Action::Reject));
        assert_eq!((out[0].packets, out[0].bytes), (3, 3000 + 3 * 28));
    }

    #[test]
    fn skipped_superpackets_count_their_segments() {
        let mut log = log(Duration::from_secs(60), 1);
        for sport in [40000, 40001] {
            let (p, meta) = superpacket(
                PROTO_TCP,
                ([10, 0, 1, 10], sport),
                ([10, 0, 1, 20], 80),
                0,
                2000,
                1000,
            );
            let v = Verdict::Drop(DropReason::NoRoute);
            record_sent(&mut log, &p, meta, v);
        }
        let out = drained(log, Instant::ZERO);
        let skipped: Vec<_> = out
            .iter()
            .filter(|r| r.log_status == LogStatus::Skipdata)
            .map(|r| (r.packets, r.bytes))
            .collect();
        assert_eq!(skipped, [(2, 2000 + 2 * 52)]);
    }

    #[derive(Debug, Clone)]
    struct Pkt {
        gap_ms: u64,
        from: u32,
        sport: u16,
        verdict: u8,
        to: u32,
    }

    fn pkt() -> impl Strategy<Value = Pkt> {
        (0u64..400, 0u32..4, 1u16..6, 0u8..3, 0u32..3).prop_map(
            |(gap_ms, from, sport, verdict, to)| Pkt {
                gap_ms,
                from,
                sport,
                verdict,
                to,
            },
        )
    }

    proptest! {
        /// Every packet is in exactly one record per side it touched (OK or SKIPDATA), no window
        /// holds more flows than the bound, and every record lies inside one window.
        #[test]
        fn records_account_for_every_packet_within_bounds(
            packets in proptest::collection::vec(pkt(), 1..200),
            max_flows in 1usize..6,
            window_ms in 50u64..2000,
            drain_every in 1usize..50,
        ) {
            let window = Duration::from_millis(window_ms);
            let mut log = log(window, max_flows);
            let mut now = Instant::ZERO;
            let mut expected = 0u64;
            let mut out = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                now += Duration::from_millis(p.gap_ms);
                if log.poll_timeout().is_some_and(|t| t <= now) && i % 2 == 0 {
                    log.handle_timeout(now); // sometimes on time, sometimes left to record()
                }
                let bytes = tcp([10, 0, 1, 10], [10, 0, 1, 20], p.sport, 80, 0x10);
                let v = match p.verdict {
                    0 => Verdict::Drop(DropReason::SecurityGroupIngress),
                    1 => Verdict::Forward { port: PortId(p.to), len: 40, meta: PacketMeta::COMPLETE },
                    _ => Verdict::Reply { port: PortId(p.to), len: 40 },
                };
                expected += if p.verdict == 0 { 1 } else { 2 };
                log.record(now, PortId(p.from), PacketFacts::parse(&bytes), v, &bytes);
                prop_assert!(log.active_flows() <= max_flows);
                if i % drain_every == 0 {
                    log.drain_into(&mut out);
                }
            }
            log.flush_all(now);
            log.drain_into(&mut out);
            prop_assert_eq!(log.poll_timeout(), None);
            let total: u64 = out.iter().map(|r| r.packets).sum();
            prop_assert_eq!(total, expected);
            let bytes: u64 = out.iter().map(|r| r.bytes).sum();
            prop_assert_eq!(bytes, expected * 40);
            let w = window.as_micros() as u64;
            let mut per_window = std::collections::BTreeMap::new();
            for r in &out {
                let k = r.first.micros() / w;
                if r.log_status == LogStatus::Ok {
                    prop_assert_eq!(r.last.micros() / w, k, "one window: {:?}", r);
                    *per_window.entry(k).or_insert(0usize) += 1;
                } else {
                    // Its window, or up to the flush that closed it early.
                    prop_assert!(r.last.micros() <= (k + 1) * w, "{:?}", r);
                }
            }
            prop_assert!(per_window.values().all(|n| *n <= max_flows), "{:?}", per_window);
        }

        /// A superpacket, forwarded or dropped, leaves the records its wire segments would
        /// leave one by one (cut by the core's segmenter): same packets, bytes and flags.
        #[test]
        fn a_superpacket_is_logged_as_its_segments(
            tcp in any::<bool>(),
            flags in any::<u8>(),
            payload in 0usize..6000,
            mss in 1u16..1500,
            dropped in any::<bool>(),
        ) {
            let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
            // An established flow's segments: no SYN or RST.
            let flags = flags & !(TCP_SYN | TCP_RST);
            let (p, meta) = superpacket(
                proto, ([10, 0, 1, 10], 40000), ([10, 0, 1, 20], 80), flags, payload, mss,
            );
            let verdict = |len, meta| if dropped {
                Verdict::Drop(DropReason::SecurityGroupIngress)
            } else {
                Verdict::Forward { port: PortId(1), len, meta }
            };
            let mut whole = log(Duration::from_secs(60), 16);
            let v = verdict(p.len(), meta);
            whole.record(Instant::ZERO, PortId(0), PacketFacts::parse_with(&p, meta), v, &p);
            let mut each = log(Duration::from_secs(60), 16);
            for s in wire_segments(&p, meta) {
                let v = verdict(s.len(), PacketMeta::COMPLETE);
                each.record(Instant::ZERO, PortId(0), PacketFacts::parse(&s), v, &s);
            }
            prop_assert_eq!(drained(whole, Instant::ZERO), drained(each, Instant::ZERO));
        }
    }
}
