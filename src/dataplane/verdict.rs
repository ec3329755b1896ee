//! What the dataplane tells its caller to do with a packet.

use std::fmt;

use super::PortId;
use super::nat::NatDrop;
use super::offload::PacketMeta;

/// The decision for one packet. The packet (or the reply that replaced it) is in the caller's
/// buffer, `len` bytes long.
#[must_use = "a verdict says where the packet goes; ignoring it loses the packet"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `buf[..len]` out of `port`. `meta` is the packet's offload metadata (as it came in,
    /// with a partial checksum possibly completed): a port that cannot take a superpacket or a
    /// partial checksum sends what [`super::offload::Segmenter`] makes of it.
    Forward {
        port: PortId,
        len: usize,
        meta: PacketMeta,
    },
    /// The buffer now holds a generated packet (ICMP reply or error); send `buf[..len]` out of `port`.
    Reply { port: PortId, len: usize },
    /// Drop it; the reason has been counted.
    Drop(DropReason),
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
        NatPortAllocation => PortAllocation;
        NatNoMapping => NoMapping;
        NatFiltered => Filtered;
        NatTcpNoSession => TcpNoSession;
        NatIcmpErrorNoMapping => IcmpErrorNoMapping;
        NatFragmentOutOfOrder => FragmentOutOfOrder;
        NatFragmentTableFull => FragmentTableFull;
        NatConflict => Conflict;
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
