//! The uplink's plain counters: flows, bytes, and drops by reason. Read them with
//! [`Uplink::counters`](super::Uplink::counters) and export them on scrape; nothing here locks or
//! allocates.

use std::fmt;

macro_rules! uplink_drops {
    ($($variant:ident => $label:literal, $text:literal;)*) => {
        /// Why the uplink dropped a packet or refused a flow: the counter label and its meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum UplinkDrop {
            $($variant,)*
        }

        impl UplinkDrop {
            /// Every reason, in counter order.
            pub const ALL: &'static [UplinkDrop] = &[$(UplinkDrop::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// A short stable label (`snake_case`) for counters and logs.
            pub fn label(self) -> &'static str {
                match self {
                    $(UplinkDrop::$variant => $label,)*
                }
            }

            /// What it means, for people.
            pub fn describe(self) -> &'static str {
                match self {
                    $(UplinkDrop::$variant => $text,)*
                }
            }
        }
    };
}

uplink_drops! {
    Malformed => "malformed", "the packet is not a well-formed IPv4 packet";
    Fragment => "fragment", "IPv4 fragments are not carried by the uplink (TCP does not fragment; UDP and ICMP must fit the MTU)";
    Protocol => "protocol", "only TCP, UDP and ICMP echo requests leave through the uplink";
    Blocked => "blocked", "the destination is in the uplink's blocked ranges (loopback, link-local, ...)";
    TcpFlowLimit => "tcp_flow_limit", "too many TCP flows through the uplink: the SYN got a RST";
    UdpFlowLimit => "udp_flow_limit", "too many UDP flows through the uplink";
    IcmpFlowLimit => "icmp_flow_limit", "too many ICMP echo flows through the uplink";
    IcmpUnavailable => "icmp_unavailable", "no ICMP socket kind is available (ping_group_range excludes this group and there is no CAP_NET_RAW), or ICMP is off";
    HostSocket => "host_socket", "a host socket could not be opened or refused the datagram (bind address missing, buffer full)";
    TxQueueFull => "tx_queue_full", "the queue towards the segment was full (the loop did not take packets)";
    RxQueueFull => "rx_queue_full", "the segment-side TCP stack's input queue was full";
    IngressBacklog => "ingress_backlog", "a host listener accepted more connections than wait to be opened: closed";
    IngressNotIpv4 => "ingress_not_ipv4", "a host listener accepted an IPv6 client, which a function cannot see as a source";
    TcpSetup => "tcp_setup", "the segment-side TCP stack refused a connection setup (address or state)";
}

impl fmt::Display for UplinkDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Counts since the uplink started. "To host" is the direction segment -> outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkCounters {
    /// Egress TCP flows whose host connect succeeded (ingress ones count in `ingress_accepted`).
    pub tcp_opened: u64,
    /// Egress connects the host refused (answered with a RST to the function).
    pub tcp_refused: u64,
    /// Egress connects that timed out or found the host/net unreachable (answered with ICMP).
    pub tcp_unreachable: u64,
    /// TCP flows that ended with a RST from either side.
    pub tcp_reset: u64,
    /// TCP flows ended by the idle timeout.
    pub tcp_expired: u64,
    /// Ingress connections accepted on host listeners.
    pub ingress_accepted: u64,
    /// Ingress connections the function refused or never answered.
    pub ingress_refused: u64,
    pub udp_opened: u64,
    pub udp_expired: u64,
    /// ICMP port-unreachable errors passed to functions for UDP flows.
    pub udp_unreachable: u64,
    pub icmp_opened: u64,
    pub icmp_expired: u64,
    pub echo_requests: u64,
    pub echo_replies: u64,
    /// Payload bytes written to host sockets (TCP stream bytes, UDP and echo payloads).
    pub bytes_to_host: u64,
    /// Payload bytes read from host sockets.
    pub bytes_from_host: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    drops: [u64; UplinkDrop::COUNT],
}

impl Default for UplinkCounters {
    fn default() -> Self {
        UplinkCounters {
            tcp_opened: 0,
            tcp_refused: 0,
            tcp_unreachable: 0,
            tcp_reset: 0,
            tcp_expired: 0,
            ingress_accepted: 0,
            ingress_refused: 0,
            udp_opened: 0,
            udp_expired: 0,
            udp_unreachable: 0,
            icmp_opened: 0,
            icmp_expired: 0,
            echo_requests: 0,
            echo_replies: 0,
            bytes_to_host: 0,
            bytes_from_host: 0,
            packets_in: 0,
            packets_out: 0,
            drops: [0; UplinkDrop::COUNT],
        }
    }
}

impl UplinkCounters {
    pub fn drop(&mut self, reason: UplinkDrop) {
        self.drops[reason as usize] += 1;
    }

    /// Drops counted for `reason`.
    pub fn drops(&self, reason: UplinkDrop) -> u64 {
        self.drops[reason as usize]
    }

    /// Every reason with a non-zero count.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (UplinkDrop, u64)> + '_ {
        UplinkDrop::ALL
            .iter()
            .map(|r| (*r, self.drops(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Flows open right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActiveFlows {
    /// TCP flows waiting for their host connect.
    pub tcp_connecting: usize,
    /// TCP flows with a segment-side socket (handshake, open or closing).
    pub tcp_open: usize,
    pub udp: usize,
    pub icmp: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_count_by_reason_and_labels_are_unique() {
        let mut c = UplinkCounters::default();
        c.drop(UplinkDrop::Blocked);
        c.drop(UplinkDrop::Blocked);
        c.drop(UplinkDrop::Fragment);
        assert_eq!(c.drops(UplinkDrop::Blocked), 2);
        assert_eq!(
            c.nonzero_drops().collect::<Vec<_>>(),
            [(UplinkDrop::Fragment, 1), (UplinkDrop::Blocked, 2)]
        );
        let mut labels: Vec<_> = UplinkDrop::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), UplinkDrop::COUNT);
        assert!(UplinkDrop::ALL.iter().all(|r| !r.describe().is_empty()));
    }
}
