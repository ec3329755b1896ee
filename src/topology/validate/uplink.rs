//! The public uplink (`[internet] uplink = "host"`): the keys that need it (`host_bind`,
//! `host_listen`), the address it holds on the public segment (the internet CIDR's first
//! address, which no host or EIP may use then), and the host listeners: TCP only, towards a 1:1
//! EIP or a DNAT entry, each on its own host address and port.

use std::net::{SocketAddr, SocketAddrV4};
use std::ops::Range;

use super::super::model::{DnatProtocol, Topology, UplinkMode, Upstream};
use super::super::plan::{EipBinding, EipPlan, InternetPlan, ListenPlan, UplinkPlan};
use super::Checker;
use super::syntax::Step;

const NEEDS_UPLINK: &str = "set `uplink = \"host\"` in [internet], or remove this key";

/// A host listener already accepted, for clash messages.
struct Taken {
    addr: SocketAddr,
    what: String,
    line: usize,
}

/// Whether two listeners cannot both bind: the same port on the same address, or on every
/// address (`0.0.0.0`, `[::]`) and any other.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl Checker<'_> {
    /// The uplink's plan when `uplink = "host"`; reports every key that needs it when it is off.
    pub(super) fn check_uplink(
        &mut self,
        topo: &Topology,
        eips: &[EipPlan],
        internet: &InternetPlan,
    ) -> Option<UplinkPlan> {
        let on = topo
            .internet
            .as_ref()
            .and_then(|i| i.uplink.as_ref())
            .is_some_and(|u| *u.get_ref() == UplinkMode::Host);
        let address = internet.cidr.gateway();
        if on {
            self.check_uplink_address(topo, eips, internet);
        }
        let mut taken: Vec<Taken> = Vec::new();
        let mut listen = Vec::new();
        for (i, (e, plan)) in topo.eip.iter().zip(eips).enumerate() {
            let path = format!("eip[{}]", plan.name);
            let name = &plan.name;
            if let Some(b) = &e.host_bind {
                let a = b.get_ref().0;
                if !on {
                    self.error(
                        b.span(),
                        format!("{path}.host_bind"),
                        format!("EIP {name} has `host_bind`, but the public segment has no uplink"),
                        NEEDS_UPLINK,
                    );
                } else if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                    self.error(
                        b.span(),
                        format!("{path}.host_bind"),
                        format!("host_bind {a} is not a unicast address"),
                        "give an address of an interface of the host vpcd runs on",
                    );
                }
            }
            let single = e.host_listen.0.len() == 1;
            for (j, l) in e.host_listen.0.iter().enumerate() {
                // A single listener written as a string has no span of its own.
                let span = if l.span().is_empty() {
                    self.span_at(&[Step::Key("eip"), Step::Index(i), Step::Key("host_listen")])
                        .unwrap_or_else(|| e.name.span())
                } else {
                    l.span()
                };
                let lpath = if single && l.span().is_empty() {
                    format!("{path}.host_listen")
                } else {
                    format!("{path}.host_listen[{j}]")
                };
                let addr = l.get_ref().0;
                if !on {
                    self.error(
                        span,
                        lpath,
                        format!(
                            "EIP {name} has `host_listen`, but the public segment has no uplink"
                        ),
                        NEEDS_UPLINK,
                    );
                    continue;
                }
                if !matches!(plan.binding, EipBinding::Instance { .. }) {
                    self.error(
                        span,
                        lpath,
                        format!(
                            "EIP {name} has `host_listen`, but it is not the 1:1 EIP of an instance"
                        ),
                        "associate it with an instance (`eip = \"NAME\"` on the instance); for an \
                         EIP of a NAT gateway, put `host_listen` on its DNAT entries",
                    );
                    continue;
                }
                let what = format!("EIP {name}");
                if self.take(&mut taken, addr, span, lpath, what) {
                    listen.push(ListenPlan {
                        host: addr,
                        target: SocketAddrV4::new(plan.address, addr.port()),
                    });
                }
            }
        }
        for v in &topo.vpc {
            for g in &v.nat_gateway {
                for (k, d) in g.dnat.iter().enumerate() {
                    let Some(l) = &d.host_listen else {
                        continue;
                    };
                    let path = format!(
                        "vpc[{}].nat_gateway[{}].dnat[{k}].host_listen",
                        v.name.get_ref(),
                        g.name.get_ref()
                    );
                    if !on {
                        self.error(
                            l.span(),
                            path,
                            "this DNAT entry has `host_listen`, but the public segment has no uplink",
                            NEEDS_UPLINK,
                        );
                        continue;
                    }
                    let protocol = *d.protocol.get_ref();
                    if protocol != DnatProtocol::Tcp {
                        let p = if protocol == DnatProtocol::Udp {
                            "udp"
                        } else {
                            "any"
                        };
                        self.error(
                            l.span(),
                            path,
                            format!(
                                "host_listen accepts TCP connections, and this DNAT entry forwards \
                                 protocol \"{p}\""
                            ),
                            "set `protocol = \"tcp\"` (with a `port`), or remove `host_listen`",
                        );
                        continue;
                    }
                    // A missing port or an unknown EIP is reported by the DNAT checks.
                    let port = d.port.as_ref().map(|p| *p.get_ref()).filter(|p| *p != 0);
                    let eip = eips.iter().find(|e| e.name == *d.eip.get_ref());
                    let what = format!(
                        "the DNAT entry {}:{} of NAT gateway {}/{}",
                        d.eip.get_ref(),
                        port.unwrap_or(0),
                        v.name.get_ref(),
                        g.name.get_ref()
                    );
                    let addr = l.get_ref().0;
                    if self.take(&mut taken, addr, l.span(), path, what)
                        && let (Some(port), Some(eip)) = (port, eip)
                    {
                        listen.push(ListenPlan {
                            host: addr,
                            target: SocketAddrV4::new(eip.address, port),
                        });
                    }
                }
            }
        }
        let resolvers = self.check_resolvers(topo, on);
        on.then_some(UplinkPlan {
            address,
            listen,
            resolvers,
        })
    }

    /// Records a listener; `false` (reported) when an earlier one takes its address and port.
    fn take(
        &mut self,
        taken: &mut Vec<Taken>,
        addr: SocketAddr,
        span: Range<usize>,
        path: String,
        what: String,
    ) -> bool {
        if let Some(t) = taken.iter().find(|t| clash(t.addr, addr)) {
            let (other, line, first) = (t.what.clone(), t.line, t.addr);
            self.error(
                span,
                path,
                format!("host_listen {addr} clashes with {first} of {other} (line {line})"),
                "every host listener needs its own address and port (0.0.0.0 and [::] take the \
                 port on every address)",
            );
            return false;
        }
        let line = self.line_of(span.start);
        taken.push(Taken { addr, what, line });
        true
    }

    /// With the uplink on, the segment's first address is the uplink's own.
    /// `resolvers`: only with the uplink on.
    fn check_resolvers(&mut self, topo: &Topology, on: bool) -> Vec<Upstream> {
        let Some(net) = &topo.internet else {
            return Vec::new();
        };
        if let (false, Some(first)) = (on, net.resolvers.first()) {
            self.error(
                first.span(),
                "internet.resolvers",
                "`resolvers` forward through the uplink, but the public segment has no uplink",
                NEEDS_UPLINK,
            );
        }
        net.resolvers.iter().map(|r| *r.get_ref()).collect()
    }

    fn check_uplink_address(&mut self, topo: &Topology, eips: &[EipPlan], internet: &InternetPlan) {
        let address = internet.cidr.gateway();
        let hint = format!(
            "with `uplink = \"host\"` the first address of the internet CIDR ({address}) is the \
             uplink's; choose another address"
        );
        if let Some(net) = &topo.internet {
            for h in &net.host {
                if h.name.get_ref() == "uplink" {
                    self.error(
                        h.name.span(),
                        format!("internet.host[{}].name", h.name.get_ref()),
                        "a host cannot be named `uplink` while the uplink is on",
                        "`internet/uplink` names the uplink's port (in captures and counters); \
                         choose another name",
                    );
                }
                if h.ip.get_ref().0 == address {
                    self.error(
                        h.ip.span(),
                        format!("internet.host[{}].ip", h.name.get_ref()),
                        format!(
                            "host {}'s address {address} is the uplink's address on the public segment",
                            h.name.get_ref()
                        ),
                        hint.clone(),
                    );
                }
            }
        }
        for (e, plan) in topo.eip.iter().zip(eips) {
            if plan.address == address {
                self.error(
                    e.address.span(),
                    format!("eip[{}].address", plan.name),
                    format!(
                        "EIP {}'s address {address} is the uplink's address on the public segment",
                        plan.name
                    ),
                    hint.clone(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_clash_on_one_port_of_one_address_or_of_every_address() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(clash(a("192.0.2.1:80"), a("192.0.2.1:80")));
        assert!(clash(a("0.0.0.0:80"), a("192.0.2.1:80")));
        assert!(clash(a("192.0.2.1:80"), a("[::]:80")));
        assert!(!clash(a("192.0.2.1:80"), a("192.0.2.2:80")));
        assert!(!clash(a("0.0.0.0:80"), a("0.0.0.0:81")));
    }
}
