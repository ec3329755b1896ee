//! Why a packet was dropped: [`DropReason`], the fabric's one enum that is at once the counter
//! label, the flow-log field and the text `vpcd test` and `vpcd explain` print, and [`NatDrop`],
//! the NAT gateway's own reasons, lifted into it. A leaf: every part of the core may name a drop
//! reason without importing the parts that produce them.

use std::fmt;

macro_rules! nat_drops {
    ($($variant:ident => $label:literal, $text:literal;)*) => {
        /// Why the NAT did not translate a packet: the counter label and the text for people.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum NatDrop {
            $($variant,)*
        }

        impl NatDrop {
            /// Every reason, in counter order.
            pub const ALL: &'static [NatDrop] = &[$(NatDrop::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// A short stable label (`snake_case`).
            pub fn label(self) -> &'static str {
                match self { $(NatDrop::$variant => $label,)* }
            }

            /// What it means, for people.
            pub fn describe(self) -> &'static str {
                match self { $(NatDrop::$variant => $text,)* }
            }

            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

nat_drops! {
    Malformed => "nat_malformed", "the packet's IPv4 or transport header is truncated or malformed";
    UnsupportedProtocol => "nat_unsupported_protocol", "the NAT translates TCP, UDP and ICMP only";
    UnsupportedIcmp => "nat_unsupported_icmp", "the NAT translates ICMP echo and ICMP errors only";
    NoEip => "nat_no_eip", "the NAT gateway has no EIP to translate to";
    TableFull => "nat_table_full", "the connection table is full; existing flows are kept, new ones refused";
    QuotaConnections => "nat_quota_connections", "the instance has reached its limit of simultaneous connections";
    QuotaRate => "nat_quota_rate", "the instance opened too many new connections this second";
    SourceRate => "nat_source_rate", "this outside source opened too many new inbound flows this second (a flood from one address cannot take the gateway)";
    SourceHalfOpen => "nat_source_half_open", "this outside source holds too many half-open inbound TCP connections (SYNs it never completed: a SYN flood)";
    PortAllocation => "nat_port_allocation", "no free external port on the EIP (ErrorPortAllocation)";
    NoMapping => "nat_no_mapping", "no session, mapping or DNAT rule for this inbound packet";
    Filtered => "nat_filtered", "the mapping's filtering behaviour does not admit this remote endpoint";
    TcpNoSession => "nat_tcp_no_session", "a TCP segment other than SYN with no session (expired or never opened)";
    IcmpErrorNoMapping => "nat_icmp_error_no_mapping", "an ICMP error about a flow the NAT does not know";
    FragmentOutOfOrder => "nat_fragment_out_of_order", "a non-first fragment arrived before its first fragment was translated";
    FragmentTableFull => "nat_fragment_table_full", "the fragment-tracking table is full";
    Conflict => "nat_conflict", "the new flow's addresses collide with an existing session";
    SynProxyCookie => "nat_syn_proxy_cookie", "an ACK to a SYN-proxied DNAT port with no session and no valid cookie (a forged, stale or flooded handshake)";
    SynProxyPending => "nat_syn_proxy_pending", "a segment of a SYN-proxied connection while the instance has not answered the proxy's SYN yet (the client sends it again)";
    SynProxyHeld => "nat_syn_proxy_held", "the client's first early segment of a SYN-proxied connection: kept, and sent to the instance with the handshake's last ACK (not lost)";
}

impl fmt::Display for NatDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

macro_rules! drop_reasons {
    (
        fabric { $($variant:ident => $label:literal, $text:literal;)* }
        nat { $($nvariant:ident => $nat:ident;)* }
    ) => {
        /// Why a packet was dropped: the counter label, the flow-log field and the text
        /// `vpcd test` and `vpcd explain` print. The `Nat*` reasons are the NAT gateway's
        /// ([`NatDrop`]), lifted so that one enum counts every drop.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DropReason {
            $($variant,)*
            $($nvariant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)* $(DropReason::$nvariant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// A short stable label (`snake_case`), used for counters and logs.
            pub fn label(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $label,)*
                    $(DropReason::$nvariant => NatDrop::$nat.label(),)*
                }
            }

            /// What it means, for people.
            pub fn describe(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $text,)*
                    $(DropReason::$nvariant => NatDrop::$nat.describe(),)*
                }
            }

            /// Position in [`DropReason::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl From<NatDrop> for DropReason {
            fn from(d: NatDrop) -> DropReason {
                match d {
                    $(NatDrop::$nat => DropReason::$nvariant,)*
                }
            }
        }
    };
}

drop_reasons! {
    fabric {
    Truncated => "truncated", "the packet is shorter than its headers say";
    BadHeader => "bad_header", "the IPv4 header is malformed (version, header length or total length)";
    BadChecksum => "bad_checksum", "the IPv4 header checksum is wrong";
    Ipv6 => "ipv6", "IPv6 is not routed by this VPC";
    NotIp => "not_ip", "the packet is not IPv4 or IPv6";
    UnknownPort => "unknown_port", "the packet arrived on a port the tables do not know";
    Spoofed => "spoofed", "the source address is not the sending port's address (anti-spoofing)";
    Martian => "martian", "the destination is a broadcast, multicast or reserved address";
    NoRoute => "no_route", "no route in the subnet's route table covers the destination";
    Blackhole => "blackhole", "the matching route is a blackhole";
    NoSuchHost => "no_such_host", "no instance or host has the destination address";
    NoPublicAddress => "no_public_address", "the route goes to the internet gateway but the instance has no EIP";
    UnboundEip => "unbound_eip", "the destination EIP is not associated with anything";
    NoSnatRule => "no_snat_rule", "the source is not covered by any SNAT entry of the NAT gateway";
    ToGateway => "to_gateway", "the subnet gateway answers ICMP echo only";
    TtlExceeded => "ttl_exceeded", "the TTL ran out at a visible hop";
    TooBig => "too_big", "the packet is larger than the egress port's MTU and may not be fragmented here";
    ErrorForError => "error_for_error", "no ICMP error is generated about an ICMP error or a fragment";
    BufferTooSmall => "buffer_too_small", "the caller's buffer is too small for the generated reply";
    SecurityGroupEgress => "sg_egress", "no rule of the sender's security groups allows the packet out (and no tracked flow covers it)";
    SecurityGroupIngress => "sg_ingress", "no rule of the receiver's security groups allows the packet in (and no tracked flow covers it)";
    NetworkAclOutbound => "nacl_outbound", "the source subnet's network ACL denies the packet on the way out (a deny rule or the implicit deny)";
    NetworkAclInbound => "nacl_inbound", "the destination subnet's network ACL denies the packet on the way in (a deny rule or the implicit deny)";
    FlowTableFull => "flow_table_full", "the security groups' flow table is full: new flows are refused until tracked ones expire";
    EgressNotAllowed => "egress_not_allowed", "the VPC's egress_allow list names no rule for the destination of this new flow to the public side";
    BadOffload => "bad_offload", "the packet's offload metadata (segmentation or partial checksum) does not fit its headers";
    }
    nat {
        NatMalformed => Malformed;
        NatUnsupportedProtocol => UnsupportedProtocol;
        NatUnsupportedIcmp => UnsupportedIcmp;
        NatNoEip => NoEip;
        NatTableFull => TableFull;
        NatQuotaConnections => QuotaConnections;
        NatQuotaRate => QuotaRate;
        NatSourceRate => SourceRate;
        NatSourceHalfOpen => SourceHalfOpen;
        NatPortAllocation => PortAllocation;
        NatNoMapping => NoMapping;
        NatFiltered => Filtered;
        NatTcpNoSession => TcpNoSession;
        NatIcmpErrorNoMapping => IcmpErrorNoMapping;
        NatFragmentOutOfOrder => FragmentOutOfOrder;
        NatFragmentTableFull => FragmentTableFull;
        NatConflict => Conflict;
        NatSynProxyCookie => SynProxyCookie;
        NatSynProxyPending => SynProxyPending;
        NatSynProxyHeld => SynProxyHeld;
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nat_drop_has_its_own_reason() {
        for d in NatDrop::ALL {
            let r = DropReason::from(*d);
            assert_eq!(r.label(), d.label());
            assert_eq!(r.describe(), d.describe());
        }
    }

    #[test]
    fn labels_are_unique_and_indexed() {
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
