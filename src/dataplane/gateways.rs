//! The NAT cores behind every VPC's NAT gateways and 1:1 EIPs, kept in step with the tables.
//!
//! Per VPC: one [`NatGateway`] core per SNAT pool of each NAT gateway (a pool's EIPs are
//! translated by exactly one core), and one core for the VPC's 1:1 EIPs (the internet gateway,
//! which is not a visible hop). Built from the tables by [`Gateways::build`]; on a table swap,
//! [`Gateways::reconcile`] keeps every core whose gateway, pool and behaviour are unchanged — so
//! unrelated flows keep flowing — and applies the DNAT and 1:1 differences rule by rule.

use std::net::Ipv4Addr;

use super::nat::config::{Filtering, NatConfig};
use super::nat::{DnatRule, NatCounters, NatError, NatGateway, SessionView};
use crate::tables::{NatGatewayTable, Tables, VpcTable};
use crate::time::Instant;

/// The cores of one NAT gateway.
#[derive(Debug, Clone)]
pub struct GatewayCores {
    pub name: String,
    /// One core per pool, in the order of `NatGatewayTable::pools`.
    pub pools: Vec<NatGateway>,
}

/// The cores of one VPC.
#[derive(Debug, Clone)]
pub struct VpcCores {
    pub name: String,
    pub nat: Vec<GatewayCores>,
    /// 1:1 EIPs of the VPC's instances.
    pub igw: NatGateway,
}

impl VpcCores {
    /// The core translating pool `pool` of NAT gateway `gateway`.
    pub fn pool(&mut self, gateway: usize, pool: u32) -> Option<&mut NatGateway> {
        self.nat.get_mut(gateway)?.pools.get_mut(pool as usize)
    }
}

/// A problem applying a table change to the NAT state (the change is applied as far as possible).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileProblem {
    /// `VPC/GATEWAY` or `VPC/internet-gateway`.
    pub gateway: String,
    pub error: NatError,
}

/// The name connections and counters of 1:1 EIPs are listed under.
pub const INTERNET_GATEWAY: &str = "internet-gateway";

/// A connection and the gateway that tracks it.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub vpc: &'a str,
    /// The NAT gateway's name, or [`INTERNET_GATEWAY`].
    pub gateway: &'a str,
    pub session: SessionView,
}

/// One gateway's counters, per SNAT pool.
#[derive(Debug, Clone)]
pub struct GatewayCounters<'a> {
    pub vpc: &'a str,
    pub gateway: &'a str,
    pub pools: Vec<NatCounters>,
}

#[derive(Debug, Clone)]
pub struct Gateways {
    vpcs: Vec<VpcCores>,
    seed: u64,
}

/// The behaviour of the internet gateway's 1:1 NAT: every inbound packet to an associated EIP
/// reaches its instance (security groups, not the NAT, decide), as with a cloud's public IP.
fn igw_config() -> NatConfig {
    let mut c = NatConfig::profile(Default::default());
    c.filtering = Filtering::EndpointIndependent;
    c
}

fn derive_seed(seed: u64, a: usize, b: usize, c: usize) -> u64 {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [a, b, c] {
        x = (x ^ v as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 31;
    }
    x
}

impl Gateways {
    /// Builds every core from the tables. Problems (a DNAT rule that cannot be installed) are
    /// returned, not fatal.
    pub fn build(tables: &Tables, seed: u64) -> (Gateways, Vec<ReconcileProblem>) {
        let mut problems = Vec::new();
        let vpcs = tables
            .vpcs
            .iter()
            .enumerate()
            .map(|(vi, v)| build_vpc(v, derive_seed(seed, vi, 0, 0), &mut problems))
            .collect();
        (Gateways { vpcs, seed }, problems)
    }

    /// Moves the NAT state from `old` tables to `new` ones. Cores are matched by VPC and gateway
    /// name; a core whose pool or configuration changed is rebuilt (its flows end, being part of
    /// the change); DNAT rules and 1:1 EIPs are added and removed one by one, so flows of
    /// untouched rules survive.
    pub fn reconcile(&mut self, now: Instant, old: &Tables, new: &Tables) -> Vec<ReconcileProblem> {
        let mut problems = Vec::new();
        let mut old_vpcs: Vec<Option<VpcCores>> = std::mem::take(&mut self.vpcs)
            .into_iter()
            .map(Some)
            .collect();
        for (vi, v) in new.vpcs.iter().enumerate() {
            let found = old
                .vpcs
                .iter()
                .position(|o| o.name == v.name)
                .and_then(|oi| old_vpcs[oi].take().map(|c| (oi, c)));
            let Some((oi, mut cores)) = found else {
                // A new VPC: build it like at start.
                let seed = derive_seed(self.seed, vi, 1, now.micros() as usize);
                self.vpcs.push(build_vpc(v, seed, &mut problems));
                continue;
            };
            let old_v = &old.vpcs[oi];
            let mut old_nat: Vec<Option<GatewayCores>> = std::mem::take(&mut cores.nat)
                .into_iter()
                .map(Some)
                .collect();
            for (gi, g) in v.nat_gateways.iter().enumerate() {
                let prev = old_v
                    .nat_gateways
                    .iter()
                    .position(|o| o.name == g.name)
                    .and_then(|i| old_nat[i].take().map(|c| (i, c)));
                let gw = match prev {
                    Some((i, c)) if same_pools(&old_v.nat_gateways[i], g) => {
                        let mut c = c;
                        problems.extend(update_rules(
                            now,
                            &v.name,
                            &old_v.nat_gateways[i],
                            g,
                            &mut c,
                        ));
                        c
                    }
                    _ => build_gateway(
                        &v.name,
                        g,
                        derive_seed(self.seed, vi, gi, now.micros() as usize),
                        &mut problems,
                    ),
                };
                cores.nat.push(gw);
            }
            // 1:1 EIPs: remove what went away or moved, add what is new.
            for (eip, internal) in &old_v.one_to_one {
                if !v.one_to_one.contains(&(*eip, *internal)) {
                    cores.igw.remove_one_to_one(*eip);
                }
            }
            for (eip, internal) in &v.one_to_one {
                if !old_v.one_to_one.contains(&(*eip, *internal))
                    && let Err(error) = cores.igw.add_one_to_one(*eip, *internal)
                {
                    problems.push(ReconcileProblem {
                        gateway: format!("{}/{INTERNET_GATEWAY}", v.name),
                        error,
                    });
                }
            }
            cores.name = v.name.clone();
            self.vpcs.push(cores);
        }
        problems
    }

    /// The core translating pool `pool` of NAT gateway `gateway` in VPC `vpc`.
    pub fn nat(&mut self, vpc: usize, gateway: usize, pool: u32) -> Option<&mut NatGateway> {
        self.vpcs.get_mut(vpc)?.pool(gateway, pool)
    }

    /// The cores of VPC `vpc` alone: what one stage of the fabric may change.
    pub fn vpc_mut(&mut self, vpc: usize) -> Option<&mut VpcCores> {
        self.vpcs.get_mut(vpc)
    }

    /// The core of VPC `vpc`'s 1:1 EIPs.
    pub fn igw(&mut self, vpc: usize) -> Option<&mut NatGateway> {
        self.vpcs.get_mut(vpc).map(|v| &mut v.igw)
    }

    /// Moves the NAT sessions using the external endpoint `ext` (a pool EIP and port) to `port`
    /// on the same EIP, in the core whose pool holds the EIP (see [`NatGateway::move_port`]):
    /// `Ok(true)` when sessions moved, `Ok(false)` when no core has them (a 1:1 EIP, an ended
    /// flow), `Err` when `port` is in use on the EIP.
    pub fn move_port(
        &mut self,
        proto: super::nat::Proto,
        ext: (Ipv4Addr, u16),
        port: u16,
    ) -> Result<bool, NatError> {
        for core in self
            .vpcs
            .iter_mut()
            .flat_map(|v| v.nat.iter_mut())
            .flat_map(|g| g.pools.iter_mut())
        {
            if core.eips().any(|e| e == ext.0) {
                return core.move_port(proto, ext, port);
            }
        }
        Ok(false)
    }

    /// Every VPC's cores, for listing connections and counters.
    pub fn vpcs(&self) -> &[VpcCores] {
        &self.vpcs
    }

    /// Every connection of every NAT gateway and 1:1 EIP, with where it lives: for listing
    /// (`vpcd ctl conntrack list`) and tests.
    pub fn connections(&self, now: Instant) -> impl Iterator<Item = Connection<'_>> + '_ {
        self.vpcs.iter().flat_map(move |v| {
            let nat = v.nat.iter().flat_map(move |g| {
                g.pools.iter().flat_map(move |core| {
                    core.sessions(now).map(move |session| Connection {
                        vpc: &v.name,
                        gateway: &g.name,
                        session,
                    })
                })
            });
            let igw = v.igw.sessions(now).map(move |session| Connection {
                vpc: &v.name,
                gateway: INTERNET_GATEWAY,
                session,
            });
            nat.chain(igw)
        })
    }

    /// Counters of every NAT gateway (one entry per SNAT pool) and every VPC's 1:1 EIPs.
    pub fn counters(&self) -> Vec<GatewayCounters<'_>> {
        let mut out = Vec::new();
        for v in &self.vpcs {
            for g in &v.nat {
                out.push(GatewayCounters {
                    vpc: &v.name,
                    gateway: &g.name,
                    pools: g.pools.iter().map(|c| c.counters()).collect(),
                });
            }
            out.push(GatewayCounters {
                vpc: &v.name,
                gateway: INTERNET_GATEWAY,
                pools: vec![v.igw.counters()],
            });
        }
        out
    }

    fn cores_mut(&mut self) -> impl Iterator<Item = &mut NatGateway> {
        self.vpcs.iter_mut().flat_map(|v| {
            v.nat
                .iter_mut()
                .flat_map(|g| g.pools.iter_mut())
                .chain(std::iter::once(&mut v.igw))
        })
    }

    /// The earliest time any core needs [`Gateways::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.vpcs
            .iter()
            .flat_map(|v| {
                v.nat
                    .iter()
                    .flat_map(|g| g.pools.iter())
                    .chain(std::iter::once(&v.igw))
            })
            .filter_map(|c| c.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for core in self.cores_mut() {
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now);
            }
        }
    }

    /// Flushes the sessions of internal host `internal` in every core of VPC `vpc` (the control
    /// plane's `flush` of an instance): its next packets are treated as after an expiry.
    /// Returns how many.
    pub fn flush_internal(&mut self, now: Instant, vpc: usize, internal: Ipv4Addr) -> usize {
        let Some(v) = self.vpcs.get_mut(vpc) else {
            return 0;
        };
        v.nat
            .iter_mut()
            .flat_map(|g| g.pools.iter_mut())
            .chain(std::iter::once(&mut v.igw))
            .map(|c| c.flush_internal(now, internal))
            .sum()
    }

    /// Flushes every session of gateway `name` of VPC `vpc`, every pool ([`INTERNET_GATEWAY`]:
    /// the 1:1 core). `None`: the VPC has no such gateway.
    pub fn flush_gateway(&mut self, now: Instant, vpc: usize, name: &str) -> Option<usize> {
        let v = self.vpcs.get_mut(vpc)?;
        if name == INTERNET_GATEWAY {
            return Some(v.igw.flush(now));
        }
        let g = v.nat.iter_mut().find(|g| g.name == name)?;
        Some(g.pools.iter_mut().map(|c| c.flush(now)).sum())
    }

    /// Ends every flow of `owner` (an instance's port) in every core: used when an instance goes.
    pub fn remove_owner(&mut self, now: Instant, owner: u32) -> usize {
        self.cores_mut().map(|c| c.remove_owner(now, owner)).sum()
    }
}

fn build_vpc(v: &VpcTable, seed: u64, problems: &mut Vec<ReconcileProblem>) -> VpcCores {
    let nat = v
        .nat_gateways
        .iter()
        .enumerate()
        .map(|(gi, g)| build_gateway(&v.name, g, derive_seed(seed, gi, 0, 0), problems))
        .collect();
    let mut igw = NatGateway::new(igw_config(), &[], derive_seed(seed, usize::MAX, 0, 0))
        .expect("the internet gateway's fixed configuration is valid");
    for (eip, internal) in &v.one_to_one {
        if let Err(error) = igw.add_one_to_one(*eip, *internal) {
            problems.push(ReconcileProblem {
                gateway: format!("{}/{INTERNET_GATEWAY}", v.name),
                error,
            });
        }
    }
    VpcCores {
        name: v.name.clone(),
        nat,
        igw,
    }
}

fn build_gateway(
    vpc: &str,
    g: &NatGatewayTable,
    seed: u64,
    problems: &mut Vec<ReconcileProblem>,
) -> GatewayCores {
    let pools = g
        .pools
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            let seed = derive_seed(seed, pi, 7, 0);
            // Validation checks the same rules, so this only guards hand-built tables: the
            // problem is reported and the gateway runs on its profile's preset.
            NatGateway::new(g.config.clone(), &p.eips, seed).unwrap_or_else(|error| {
                problems.push(ReconcileProblem {
                    gateway: format!("{vpc}/{}", g.name),
                    error,
                });
                NatGateway::new(NatConfig::profile(g.config.profile), &p.eips, seed)
                    .expect("a profile preset is valid")
            })
        })
        .collect();
    let mut cores = GatewayCores {
        name: g.name.clone(),
        pools,
    };
    for (pool, rule) in &g.dnat {
        add_dnat(vpc, g, &mut cores, *pool, *rule, problems);
    }
    for (pool, eip, internal) in &g.dnat_any {
        if let Some(core) = cores.pools.get_mut(*pool as usize)
            && let Err(error) = core.add_one_to_one(*eip, *internal)
        {
            problems.push(ReconcileProblem {
                gateway: format!("{vpc}/{}", g.name),
                error,
            });
        }
    }
    cores
}

fn add_dnat(
    vpc: &str,
    g: &NatGatewayTable,
    cores: &mut GatewayCores,
    pool: u32,
    rule: DnatRule,
    problems: &mut Vec<ReconcileProblem>,
) {
    if let Some(core) = cores.pools.get_mut(pool as usize)
        && let Err(error) = core.add_dnat(rule)
    {
        problems.push(ReconcileProblem {
            gateway: format!("{vpc}/{}", g.name),
            error,
        });
    }
}

fn same_pools(a: &NatGatewayTable, b: &NatGatewayTable) -> bool {
    a.pools == b.pools && a.config == b.config
}

/// Applies DNAT differences to a gateway whose pools did not change.
fn update_rules(
    now: Instant,
    vpc: &str,
    old: &NatGatewayTable,
    new: &NatGatewayTable,
    cores: &mut GatewayCores,
) -> Vec<ReconcileProblem> {
    let mut problems = Vec::new();
    for (pool, rule) in &old.dnat {
        if !new.dnat.contains(&(*pool, *rule))
            && let Some(core) = cores.pools.get_mut(*pool as usize)
        {
            core.remove_dnat(now, rule.external, rule.protocol);
        }
    }
    for entry in &old.dnat_any {
        if !new.dnat_any.contains(entry)
            && let Some(core) = cores.pools.get_mut(entry.0 as usize)
        {
            core.remove_one_to_one(entry.1);
        }
    }
    for (pool, rule) in &new.dnat {
        if !old.dnat.contains(&(*pool, *rule)) {
            add_dnat(vpc, new, cores, *pool, *rule, &mut problems);
        }
    }
    for entry in &new.dnat_any {
        if !old.dnat_any.contains(entry)
            && let Some(core) = cores.pools.get_mut(entry.0 as usize)
            && let Err(error) = core.add_one_to_one(entry.1, entry.2)
        {
            problems.push(ReconcileProblem {
                gateway: format!("{vpc}/{}", new.name),
                error,
            });
        }
    }
    problems
}
