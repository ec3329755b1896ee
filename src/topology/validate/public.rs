//! The public segment: internet hosts and their addresses, and what counts as a public address
//! (shared with EIPs).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use toml::Spanned;

use super::super::cidr::{Addr, Cidr};
use super::super::model::{self, Topology};
use super::super::plan::{EipPlan, HostPlan, InternetPlan};
use super::Checker;

impl Checker<'_> {
    pub(super) fn check_internet(&mut self, topo: &Topology, eips: &[EipPlan]) -> InternetPlan {
        let default: Cidr = model::DEFAULT_INTERNET_CIDR
            .parse()
            .expect("DEFAULT_INTERNET_CIDR is a valid block");
        let Some(net) = &topo.internet else {
            return InternetPlan {
                cidr: default,
                hosts: Vec::new(),
                uplink: None,
                zones: Vec::new(),
            };
        };
        let cidr = net.cidr.as_ref().map_or(default, |c| *c.get_ref());
        let paths: Vec<String> = net
            .host
            .iter()
            .map(|h| format!("internet.host[{}]", h.name.get_ref()))
            .collect();
        for (h, p) in net.host.iter().zip(&paths) {
            self.check_name(&h.name, p, "host");
        }
        self.index_names(
            net.host.iter().map(|h| &h.name).zip(paths.iter().cloned()),
            "host",
            " on the internet",
        );
        // The public segment: EIPs first (they are declared at the top level), then hosts.
        let mut public: HashMap<Ipv4Addr, String> = HashMap::new();
        for (e, me) in topo.eip.iter().zip(eips) {
            let line = self.line_of(e.address.span().start);
            public
                .entry(me.address)
                .or_insert(format!("EIP {} (line {line})", me.name));
        }
        let mut hosts = Vec::new();
        for (h, p) in net.host.iter().zip(&paths) {
            let name = h.name.get_ref();
            let a = h.ip.get_ref().0;
            self.check_host_addr(&h.ip, &format!("{p}.ip"), name, cidr, &mut public);
            if h.secondary_ips.len() > model::MAX_SECONDARY_IPS {
                self.error(
                    h.secondary_ips[model::MAX_SECONDARY_IPS].span(),
                    format!("{p}.secondary_ips"),
                    format!(
                        "host {name} has {} secondary addresses; at most {} are supported",
                        h.secondary_ips.len(),
                        model::MAX_SECONDARY_IPS
                    ),
                    "give the host at most three secondary_ips, or use another host",
                );
            }
            for (i, s) in h.secondary_ips.iter().enumerate() {
                let at = format!("{p}.secondary_ips[{i}]");
                self.check_host_addr(s, &at, name, cidr, &mut public);
            }
            let mtu = self.check_mtu(h.mtu.as_ref(), p);
            hosts.push(HostPlan {
                name: name.clone(),
                ip: a,
                secondary: h.secondary_ips.iter().map(|s| s.get_ref().0).collect(),
                serve: h.serve.iter().map(|s| *s.get_ref()).collect(),
                attach: h.attach,
                mtu,
                dns_names: Vec::new(),
            });
        }
        self.check_host_dns_names(net, &paths, &mut hosts);
        InternetPlan {
            cidr,
            hosts,
            uplink: None,
            zones: self.check_zones(&net.zone, "internet.zone", None),
        }
    }
}

impl Checker<'_> {
    /// One address of host `name` (its `ip` or a secondary one, at `path`): inside the internet
    /// CIDR, public, and not taken by an EIP or another address on the segment (`public`, which
    /// then records it).
    fn check_host_addr(
        &mut self,
        addr: &Spanned<Addr>,
        path: &str,
        name: &str,
        cidr: Cidr,
        public: &mut HashMap<Ipv4Addr, String>,
    ) {
        let a = addr.get_ref().0;
        if !cidr.contains(a) {
            self.error(
                addr.span(),
                path.to_string(),
                format!("host {name}'s address {a} is outside the internet CIDR {cidr}"),
                format!("choose an address inside {cidr}, or set `cidr` in [internet]"),
            );
        } else if let Some(kind) = non_public(a) {
            self.error(
                addr.span(),
                path.to_string(),
                format!("host {name}'s address {a} is {kind}, not a public address"),
                "internet hosts need public addresses; set [internet] cidr to a documentation range like 198.51.100.0/24",
            );
        } else if let Some(holder) = public.get(&a) {
            self.error(
                addr.span(),
                path.to_string(),
                format!("address {a} is already used by {holder} on the public segment"),
                "every internet host and EIP needs its own address",
            );
        } else {
            let line = self.line_of(addr.span().start);
            public.insert(a, format!("host {name} (line {line})"));
        }
    }
}

/// Why `a` cannot be a public address, if it cannot.
pub(super) fn non_public(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_private() {
        Some("a private (RFC 1918) address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_link_local() {
        Some("a link-local address")
    } else if o[0] == 0 {
        Some("in 0.0.0.0/8 (\"this network\")")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a shared (carrier-grade NAT, RFC 6598) address")
    } else if o[0] >= 224 {
        Some("a multicast or reserved address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        assert!(non_public(Ipv4Addr::new(172, 20, 0, 1)).is_some());
        assert!(non_public(Ipv4Addr::new(100, 64, 0, 1)).is_some());
        assert!(non_public(Ipv4Addr::new(203, 0, 113, 1)).is_none());
    }
}
