//! `vpcd explain`: why a packet from one endpoint reaches (or does not reach) a target, found by
//! a static walk of the compiled tables — like a cloud's reachability analyzer, without sending a
//! packet.
//!
//! [`explain`] is a pure function of the plan and the compiled [`Tables`]: it never touches a
//! [`crate::dataplane::Fabric`] or its state. Every decision it reports comes from the functions
//! the fabric itself calls — [`route::lookup_route`] / [`route::next_hop`] for routing inside a
//! VPC, [`public::public_next`] on the public segment (a host, the uplink, or an EIP and what it
//! is bound to), [`firewall::sg_check`] and [`firewall::acl_check`] for security groups and
//! network ACLs, the NAT gateway tables for SNAT pools and DNAT entries — so the walk and the
//! dataplane cannot drift apart; `tests/explain_props.rs` checks that they agree on random rule
//! sets and topologies.
//!
//! [`route::lookup_route`]: crate::dataplane::route::lookup_route
//! [`route::next_hop`]: crate::dataplane::route::next_hop
//! [`public::public_next`]: crate::dataplane::public::public_next
//! [`firewall::sg_check`]: crate::dataplane::firewall::sg_check
//! [`firewall::acl_check`]: crate::dataplane::firewall::acl_check
//!
//! The walk follows the fabric's order: port checks, martian filter, route, the sender's egress
//! security groups, the VPC's egress allow-list (on the way out), the network ACLs at each subnet
//! edge crossed, NAT (SNAT, the public segment — a host, an EIP, or the uplink to the host's
//! network — DNAT or a 1:1 EIP), the receiver's ingress security groups. Then the return path:
//! replies pass the security groups as a tracked flow, but network ACLs are stateless, so the
//! walk checks the reply against every ACL it crosses on the way back (destination port = the
//! client's source port); a reply that leaves a 1:1 EIP's instance through a NAT route does not
//! come back through the same translation, and the walk follows it. The verdict is `reachable`
//! only when both ways pass.
//!
//! Assumptions (stated in the output where they matter): the first packet is a TCP SYN, a UDP
//! datagram or an ICMP echo request with TTL 64 and a size below every MTU; the client's source
//! port (and echo identifier) is `source_port` (default 49152, the first port the simulator's
//! probes use); a NAT gateway keeps the source port (its default; the `aws` profile picks a random
//! one) and uses the first EIP of the pool; no flow is tracked yet.
//!
//! Layout: `query` parses the question (`FROM`, `TO`) and builds the first packet's facts;
//! `walk` takes the decisions hop by hop; `render` writes the text.

mod query;
mod render;
mod walk;

pub use query::{DEFAULT_SOURCE_PORT, Query, QueryError, first_packet_facts};

use std::net::{SocketAddr, SocketAddrV4};

use crate::dataplane::{DropReason, PortId};
use crate::tables::Tables;
use crate::topology::plan::Plan;

/// What the fabric does with the flow's first packet, as the walk predicts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPacket {
    /// Forwarded out of this port.
    Delivered(PortId),
    /// Answered by the fabric (the subnet gateway's echo reply).
    Answered,
    /// Dropped for this reason.
    Dropped(DropReason),
}

/// The end of the walk: whether the flow works both ways. (Not the dataplane's per-packet
/// [`crate::dataplane::Verdict`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    Reachable,
    Blocked {
        /// The blocking component, named (`network ACL web-acl inbound rule 100`).
        component: String,
        /// The drop reason's label, or `wrong_target` when the packet reaches someone else.
        label: &'static str,
    },
}

/// The result: numbered hops and a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `explain FROM -> TO (...)`.
    pub title: String,
    pub hops: Vec<String>,
    pub reachability: Reachability,
    pub first_packet: FirstPacket,
    /// The TCP or UDP flow the walk sends out through the uplink, and the index of that hop in
    /// `hops`: what a running network can look up (see [`Explanation::live_uplink`]).
    pub uplink: Option<(UplinkFlow, usize)>,
}

/// A flow out through the uplink as the walk predicts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkFlow {
    /// 6 or 17.
    pub protocol: u8,
    /// The sender's address and port before SNAT.
    pub internal: SocketAddrV4,
    /// After SNAT (as predicted: the mapping's port may differ in a running network).
    pub public: SocketAddrV4,
    pub remote: SocketAddrV4,
}

/// What a running network has for an [`UplinkFlow`]: the NAT mapping and its host socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveUplink {
    pub public: SocketAddrV4,
    /// The host socket's local address (`0.0.0.0` when bound to every address); `None` while
    /// the uplink has no socket for the mapping.
    pub host_socket: Option<SocketAddr>,
}

impl Explanation {
    /// Adds what the running network has for the uplink flow to its hop: the mapping the NAT
    /// gave and the host socket behind it, or that no session exists yet.
    pub fn live_uplink(&mut self, live: Option<LiveUplink>) {
        let Some((flow, at)) = self.uplink else {
            return;
        };
        let Some(hop) = self.hops.get_mut(at) else {
            return;
        };
        match live {
            Some(LiveUplink {
                public,
                host_socket: Some(h),
            }) => hop.push_str(&format!(
                "; now: the NAT mapping of {} is {public}, its host socket {h}",
                flow.internal
            )),
            Some(LiveUplink {
                public,
                host_socket: None,
            }) => hop.push_str(&format!(
                "; now: the NAT mapping of {} is {public}, no host socket open for it",
                flow.internal
            )),
            None => hop.push_str(&format!(
                "; now: no NAT session of {} through the uplink",
                flow.internal
            )),
        }
    }
}

/// Explains `q` over `tables` (compiled from `plan`).
pub fn explain(plan: &Plan, tables: &Tables, q: &Query) -> Explanation {
    let from_name = query::endpoint_name(plan, q.from);
    let src = query::endpoint_ip(plan, q.from);
    let facts = first_packet_facts(src, q);
    let trace = walk::walk(plan, tables, q, facts);
    let (reachability, first) = match trace.end {
        Ok(()) => (Reachability::Reachable, trace.first),
        Err(b) => (
            Reachability::Blocked {
                component: b.component,
                label: b.label,
            },
            trace.first.or(b.reason.map(FirstPacket::Dropped)),
        ),
    };
    Explanation {
        title: render::title(&from_name, q),
        hops: trace.hops,
        reachability,
        first_packet: first.unwrap_or(FirstPacket::Dropped(DropReason::UnknownPort)),
        uplink: trace.uplink,
    }
}

/// Explains every probe of a plan whose result disagrees with `expect` (for `vpcd test`).
pub fn explain_probe(
    plan: &Plan,
    tables: &Tables,
    probe: &crate::topology::plan::ProbePlan,
) -> Explanation {
    let q = Query {
        from: probe.from,
        to: probe.to.clone(),
        to_endpoint: probe.to_endpoint,
        to_addr: probe.to_addr,
        source_port: DEFAULT_SOURCE_PORT,
    };
    explain(plan, tables, &q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology;

    const TEXT: &str = r#"
[[vpc]]
name = "a"
cidr = "10.0.0.0/16"
  [[vpc.subnet]]
  name = "s1"
  cidr = "10.0.1.0/24"
  network_acl = "acl"
  [[vpc.subnet]]
  name = "s2"
  cidr = "10.0.2.0/24"
  [[vpc.network_acl]]
  name = "acl"
  inbound = [{ rule = 100, action = "deny", protocol = "tcp", ports = 22, cidr = "0.0.0.0/0" },
             { rule = 200, action = "allow", protocol = "all", cidr = "0.0.0.0/0" }]
  outbound = [{ rule = 100, action = "allow", protocol = "all", cidr = "0.0.0.0/0" }]
  [[vpc.instance]]
  name = "x"
  subnet = "s1"
  ip = "10.0.1.10"
  [[vpc.instance]]
  name = "y"
  subnet = "s2"
  ip = "10.0.2.10"
"#;

    fn run(from: &str, to: &str) -> Explanation {
        let plan = topology::parse("t.toml", TEXT).unwrap();
        let t = crate::topology::compile::tables(&plan);
        let q = Query::parse(&plan, from, to).unwrap();
        explain(&plan, &t, &q)
    }

    #[test]
    fn names_the_acl_rule_that_blocks() {
        let e = run("a/y", "a/x:22/tcp");
        assert_eq!(
            e.verdict_line(),
            "verdict: blocked by network ACL acl inbound rule 100 (nacl_inbound)"
        );
        assert_eq!(
            e.first_packet,
            FirstPacket::Dropped(DropReason::NetworkAclInbound)
        );
    }

    #[test]
    fn default_group_members_reach_each_other() {
        let e = run("a/y", "a/x:80/tcp");
        assert!(e.reachable(), "{}", e.render());
        assert!(e.render().contains("the VPC default group"));
    }

    #[test]
    fn unknown_endpoints_and_bad_targets_are_query_errors() {
        let plan = topology::parse("t.toml", TEXT).unwrap();
        assert!(matches!(
            Query::parse(&plan, "a/nope", "10.0.0.1/icmp"),
            Err(QueryError::UnknownEndpoint(_))
        ));
        assert!(matches!(
            Query::parse(&plan, "a/x", "10.0.0.1:99"),
            Err(QueryError::BadTarget(_))
        ));
    }
}
