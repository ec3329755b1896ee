//! `vpcd ctl dns`: the VPC resolvers' private zones and the simulated internet's public zones
//! (`--public`) with their records, DNS Firewall domain lists and rules,
//! egress by name, a question asked of a running resolver (`dns query`, a small `dig`), and the
//! query log (`dns query-log`, like `flow-log`).
//!
//! Changes are the API's operations (`add_zone`, `add_zone_record`, ...); they take effect in the
//! running resolvers at once (a new record answers the next query).

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::path_segment;
use super::observe::absolute;
use super::table::{Table, cell, field, fields, list};
use super::{Call, body};

#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Private zones (public ones with --public): list, show, add, remove, associate,
    /// disassociate.
    #[command(subcommand)]
    Zone(ZoneCommand),
    /// Records of a zone (A, AAAA, CNAME, TXT, SRV, MX); --public for a public zone.
    #[command(subcommand)]
    Record(RecordCommand),
    /// DNS Firewall domain lists: named domains that rules reference.
    #[command(subcommand, name = "domain-list")]
    DomainList(DomainListCommand),
    /// DNS Firewall rules (domains or a domain list, with allow, alert or block).
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// Egress allowed by name: the names a VPC's instances may reach.
    #[command(subcommand)]
    Egress(EgressCommand),
    /// Ask the running resolver of an instance's VPC, on the instance's behalf (like `dig`
    /// there).
    Query {
        /// The name, like db.corp.example or fn-a1.tenant-a.vpc.internal.
        name: String,
        /// The record type.
        #[arg(
            long = "type",
            short = 't',
            default_value = "A",
            conflicts_with = "reverse"
        )]
        kind: String,
        /// NAME is an IPv4 address: ask for its PTR record (its `in-addr.arpa` name), as `dig -x`.
        #[arg(short = 'x', long)]
        reverse: bool,
        /// The instance that asks (`VPC/INSTANCE`): its VPC's zones and rules apply.
        #[arg(long, value_name = "VPC/INSTANCE")]
        from: String,
    },
    /// The resolvers' query log (Route 53 Resolver query-log fields, JSON lines).
    #[command(subcommand)]
    QueryLog(QueryLogCommand),
}

impl DnsCommand {
    pub(super) fn call(&self) -> Result<Call, String> {
        Ok(match self {
            DnsCommand::Zone(c) => c.call(),
            DnsCommand::Record(c) => c.call(),
            DnsCommand::DomainList(c) => c.call(),
            DnsCommand::Firewall(c) => c.call(),
            DnsCommand::Egress(c) => c.call(),
            DnsCommand::Query {
                name,
                kind,
                reverse,
                from,
            } => {
                super::split_ref("--from", from)?;
                let (name, kind) = if *reverse {
                    (reverse_name(name)?, "PTR".to_string())
                } else {
                    (name.clone(), kind.clone())
                };
                Call::post(
                    "/v1/dns/query",
                    json!({"from": from, "name": name, "type": kind}),
                    |v| Ok(answer(v)),
                )
            }
            DnsCommand::QueryLog(c) => c.call(),
        })
    }
}

/// `10.1.0.10` -> `10.0.1.10.in-addr.arpa`.
fn reverse_name(addr: &str) -> Result<String, String> {
    let a: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("-x `{addr}`: write an IPv4 address, e.g. 10.0.1.10"))?;
    let [a, b, c, d] = a.octets();
    Ok(format!("{d}.{c}.{b}.{a}.in-addr.arpa"))
}

#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// Every private zone with its VPCs (--public: every public zone).
    List {
        #[arg(long)]
        public: bool,
    },
    /// A zone's records.
    Show {
        zone: String,
        /// A public zone of the simulated internet ([[internet.zone]]).
        #[arg(long)]
        public: bool,
    },
    /// Create a private zone answered in the VPCs named (`CreateHostedZone`), or with --public
    /// a public zone answered in every VPC.
    Add {
        /// The apex, like corp.example.
        zone: String,
        /// A VPC whose resolver answers it (repeat for more; at least one, not with --public).
        #[arg(
            long = "vpc",
            value_name = "VPC",
            required_unless_present = "public",
            conflicts_with = "public"
        )]
        vpcs: Vec<String>,
        /// A public zone of the simulated internet ([[internet.zone]]).
        #[arg(long)]
        public: bool,
    },
    /// Delete a zone with its records.
    Remove {
        zone: String,
        #[arg(long)]
        public: bool,
    },
    /// Answer the zone in one more VPC.
    Associate { zone: String, vpc: String },
    /// Stop answering the zone in a VPC (not its last one).
    Disassociate { zone: String, vpc: String },
}

/// The word, list path and operation prefix of private or public zones.
fn kind_of(public: bool) -> (&'static str, &'static str, &'static str) {
    if public {
        ("public zone", "/v1/dns/public-zones", "public_zone")
    } else {
        ("zone", "/v1/dns/zones", "zone")
    }
}

impl ZoneCommand {
    fn call(&self) -> Call {
        match self {
            ZoneCommand::List { public } => {
                let (_, path, _) = kind_of(*public);
                let public = *public;
                Call::get(path.into(), move |v| {
                    let (head, keys): (&[&str], &[&str]) = if public {
                        (&["ZONE", "RECORDS"], &["name", "records"])
                    } else {
                        (&["ZONE", "VPCS", "RECORDS"], &["name", "vpcs", "records"])
                    };
                    let mut t = Table::new(head);
                    for z in list(v, "zones")? {
                        t.row(keys.iter().map(|k| field(z, k)).collect());
                    }
                    Ok(t.render_or(if public {
                        "no public zones"
                    } else {
                        "no private zones"
                    }))
                })
            }
            ZoneCommand::Show { zone, public } => show_zone(zone, *public),
            ZoneCommand::Add { zone, vpcs, public } => {
                if *public {
                    Call::op(
                        "add_public_zone",
                        json!({"name": zone}),
                        format!("added public zone {zone}"),
                    )
                } else {
                    Call::op(
                        "add_zone",
                        json!({"name": zone, "vpcs": vpcs}),
                        format!("added zone {zone} ({})", vpcs.join(", ")),
                    )
                }
            }
            ZoneCommand::Remove { zone, public } => {
                let (what, _, op) = kind_of(*public);
                Call::op(
                    &format!("remove_{op}"),
                    json!({"name": zone}),
                    format!("removed {what} {zone}"),
                )
            }
            ZoneCommand::Associate { zone, vpc } => Call::op(
                "associate_zone",
                json!({"zone": zone, "vpc": vpc}),
                format!("associated zone {zone} with VPC {vpc}"),
            ),
            ZoneCommand::Disassociate { zone, vpc } => Call::op(
                "disassociate_zone",
                json!({"zone": zone, "vpc": vpc}),
                format!("disassociated zone {zone} from VPC {vpc}"),
            ),
        }
    }
}

/// `GET /v1/dns/zones/{zone}` (or `public-zones`): its VPCs, then one row per record.
fn show_zone(zone: &str, public: bool) -> Call {
    let empty = format!("zone {zone} has no records");
    let (_, path, _) = kind_of(public);
    Call::get(format!("{path}/{}", path_segment(zone)), move |v| {
        let mut t = Table::new(&["NAME", "TYPE", "TTL", "VALUE"]);
        for r in list(&v["records"], "records")? {
            t.row(
                ["name", "type", "ttl", "value"]
                    .map(|k| field(r, k))
                    .to_vec(),
            );
        }
        let head = if public {
            fields(&[("ZONE", field(v, "name")), ("PUBLIC", "yes".to_string())])
        } else {
            fields(&[("ZONE", field(v, "name")), ("VPCS", field(v, "vpcs"))])
        };
        Ok(format!("{head}\n{}", t.render_or(&empty)))
    })
}

/// What names a record.
#[derive(Debug, Args)]
pub struct RecordArgs {
    zone: String,
    /// Relative to the zone (`db` for db.corp.example), or `@` for the apex.
    name: String,
    /// A, AAAA, CNAME, TXT, SRV or MX.
    #[arg(value_name = "TYPE")]
    kind: String,
    /// ZONE is a public zone of the simulated internet ([[internet.zone]]).
    #[arg(long)]
    public: bool,
}

#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// A zone's records (as `dns zone show`).
    List {
        zone: String,
        #[arg(long)]
        public: bool,
    },
    /// Add a record (`ChangeResourceRecordSets` CREATE).
    Add {
        #[command(flatten)]
        record: RecordArgs,
        /// Zone-file syntax: 10.0.1.5 (A), db.corp.example (CNAME), "10 mail.corp.example" (MX),
        /// "0 5 5432 db.corp.example" (SRV), text (TXT).
        value: String,
        /// Seconds (default 300).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Remove the records of that name and type, or only the one with VALUE.
    Remove {
        #[command(flatten)]
        record: RecordArgs,
        value: Option<String>,
    },
}

impl RecordCommand {
    fn call(&self) -> Call {
        match self {
            RecordCommand::List { zone, public } => show_zone(zone, *public),
            RecordCommand::Add { record, value, ttl } => {
                let r = record;
                let kind = r.kind.to_ascii_uppercase();
                let (what, _, op) = kind_of(r.public);
                Call::op(
                    &format!("add_{op}_record"),
                    body(vec![
                        ("zone", json!(r.zone)),
                        ("name", json!(r.name)),
                        ("type", json!(kind)),
                        ("value", json!(value)),
                        ("ttl", json!(ttl)),
                    ]),
                    format!(
                        "added {kind} record {} {value} to {what} {}",
                        r.name, r.zone
                    ),
                )
            }
            RecordCommand::Remove { record, value } => {
                let r = record;
                let kind = r.kind.to_ascii_uppercase();
                let (zone_word, _, op) = kind_of(r.public);
                let what = match value {
                    Some(v) => format!("{kind} record {} {v}", r.name),
                    None => format!("{kind} records of {}", r.name),
                };
                Call::op(
                    &format!("remove_{op}_record"),
                    body(vec![
                        ("zone", json!(r.zone)),
                        ("name", json!(r.name)),
                        ("type", json!(kind)),
                        ("value", json!(value)),
                    ]),
                    format!("removed {what} from {zone_word} {}", r.zone),
                )
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DomainListCommand {
    /// Every domain list with its domains and the rules using it.
    List,
    /// One list's domains.
    Show { name: String },
    /// Create a list (`CreateFirewallDomainList`), with DOMAINs if given.
    Add { name: String, domains: Vec<String> },
    /// Delete a list (refused while a rule uses it).
    Remove { name: String },
    /// Add DOMAINs to the list (`UpdateFirewallDomains` ADD): its rules match them at once.
    AddDomains {
        name: String,
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Remove DOMAINs from the list (each must be in it).
    RemoveDomains {
        name: String,
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Make the list hold exactly DOMAINs (none: empty it).
    Replace { name: String, domains: Vec<String> },
}

impl DomainListCommand {
    fn call(&self) -> Call {
        let update = |name: &str, operation: &str, domains: &[String], done: String| {
            Call::op(
                "update_dns_domain_list",
                json!({"name": name, "operation": operation, "domains": domains}),
                done,
            )
        };
        match self {
            DomainListCommand::List => Call::get("/v1/dns/domain-lists".into(), |v| {
                let mut t = Table::new(&["LIST", "DOMAINS", "RULES"]);
                for l in list(v, "lists")? {
                    t.row(["name", "domains", "rules"].map(|k| field(l, k)).to_vec());
                }
                Ok(t.render_or("no DNS domain lists"))
            }),
            DomainListCommand::Show { name } => Call::get(
                format!("/v1/dns/domain-lists/{}", path_segment(name)),
                |v| {
                    let mut t = Table::new(&["DOMAIN"]);
                    for d in list(&v["domains"], "domains")? {
                        t.row(vec![cell(d)]);
                    }
                    Ok(format!(
                        "{}\n{}",
                        fields(&[("LIST", field(v, "name")), ("RULES", field(v, "rules"))]),
                        t.render_or("no domains")
                    ))
                },
            ),
            DomainListCommand::Add { name, domains } => Call::op(
                "add_dns_domain_list",
                json!({"name": name, "domains": domains}),
                format!("added DNS domain list {name}"),
            ),
            DomainListCommand::Remove { name } => Call::op(
                "remove_dns_domain_list",
                json!({"name": name}),
                format!("removed DNS domain list {name}"),
            ),
            DomainListCommand::AddDomains { name, domains } => update(
                name,
                "add",
                domains,
                format!("added {} to DNS domain list {name}", domains.join(", ")),
            ),
            DomainListCommand::RemoveDomains { name, domains } => update(
                name,
                "remove",
                domains,
                format!("removed {} from DNS domain list {name}", domains.join(", ")),
            ),
            DomainListCommand::Replace { name, domains } => update(
                name,
                "replace",
                domains,
                format!("DNS domain list {name} holds: {}", domains.join(", ")),
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirewallAction {
    Allow,
    Alert,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BlockResponse {
    Nxdomain,
    Nodata,
    Override,
}

#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Every DNS Firewall rule, in the order the resolvers apply them.
    List,
    /// Add a rule after the others (`CreateFirewallRule` with its domain list).
    Add {
        name: String,
        /// A VPC whose resolver applies it (repeat for more).
        #[arg(long = "vpc", value_name = "VPC", required = true)]
        vpcs: Vec<String>,
        /// bad.example (that name) or *.bad.example (every name below it); repeat for more.
        #[arg(
            long = "domain",
            value_name = "DOMAIN",
            required_unless_present = "domain_list",
            conflicts_with = "domain_list"
        )]
        domains: Vec<String>,
        /// Match the domains of this DNS domain list instead (as it changes).
        #[arg(long, value_name = "LIST")]
        domain_list: Option<String>,
        #[arg(long, value_enum)]
        action: FirewallAction,
        /// What a blocked query gets (default nxdomain).
        #[arg(long, value_enum)]
        block_response: Option<BlockResponse>,
        /// With --block-response override: the CNAME target answered instead.
        #[arg(long, value_name = "NAME")]
        block_override: Option<String>,
        /// The override's TTL in seconds (default 300).
        #[arg(long, value_name = "SECONDS")]
        block_override_ttl: Option<u32>,
    },
    /// Remove a rule.
    Remove { name: String },
}

fn lower<T: clap::ValueEnum>(v: &T) -> Value {
    v.to_possible_value()
        .map_or(Value::Null, |p| json!(p.get_name()))
}

impl FirewallCommand {
    fn call(&self) -> Call {
        match self {
            FirewallCommand::List => Call::get("/v1/dns/firewall".into(), |v| {
                let keys = ["name", "vpcs", "domains", "action", "block_response"];
                let domains = |r: &Value| match r["domain_list"].as_str() {
                    Some(l) => format!("list {l}"),
                    None => field(r, "domains"),
                };
                let mut t = Table::new(&["RULE", "VPCS", "DOMAINS", "ACTION", "BLOCK_RESPONSE"]);
                for r in list(v, "rules")? {
                    let mut row: Vec<String> = keys.iter().map(|k| field(r, k)).collect();
                    row[2] = domains(r);
                    if !r["block_override"].is_null() {
                        row[4] = format!(
                            "{} {} (ttl {})",
                            row[4],
                            field(r, "block_override"),
                            cell(&r["block_override_ttl"])
                        );
                    }
                    t.row(row);
                }
                Ok(t.render_or("no DNS Firewall rules"))
            }),
            FirewallCommand::Add {
                name,
                vpcs,
                domains,
                domain_list,
                action,
                block_response,
                block_override,
                block_override_ttl,
            } => Call::op(
                "add_dns_firewall_rule",
                body(vec![
                    ("name", json!(name)),
                    ("vpcs", json!(vpcs)),
                    ("domains", json!(domains)),
                    ("domain_list", json!(domain_list)),
                    ("action", lower(action)),
                    (
                        "block_response",
                        block_response.as_ref().map_or(Value::Null, lower),
                    ),
                    ("block_override", json!(block_override)),
                    ("block_override_ttl", json!(block_override_ttl)),
                ]),
                format!("added DNS Firewall rule {name}"),
            ),
            FirewallCommand::Remove { name } => Call::op(
                "remove_dns_firewall_rule",
                json!({"name": name}),
                format!("removed DNS Firewall rule {name}"),
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EgressCommand {
    /// Per VPC, the names its instances may reach.
    List,
    /// Set the names VPC's instances may reach (`api.example.com:443`, `*.example.com`); none:
    /// stop restricting by name.
    Set { vpc: String, allow: Vec<String> },
}

impl EgressCommand {
    fn call(&self) -> Call {
        match self {
            EgressCommand::List => Call::get("/v1/dns/egress-by-name".into(), |v| {
                let mut t = Table::new(&["VPC", "ALLOW"]);
                for e in list(v, "entries")? {
                    t.row(vec![field(e, "vpc"), field(e, "allow")]);
                }
                Ok(t.render_or("no egress by name"))
            }),
            EgressCommand::Set { vpc, allow } => Call::op(
                "set_egress_by_name",
                json!({"vpc": vpc, "allow": allow}),
                if allow.is_empty() {
                    format!("cleared egress by name of VPC {vpc}")
                } else {
                    format!("set egress by name of VPC {vpc}: {}", allow.join(", "))
                },
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum QueryLogCommand {
    /// Whether the query log is on, where it writes and how many records it wrote.
    Status,
    /// Write every resolver's query-log records to TARGET, a file (`-`: vpcd up's stdout).
    Start {
        /// A file inside the daemon's log directory (`vpcd up --log-dir`, default its --state
        /// directory; a relative path is taken from here), or `-`. An existing file is appended
        /// to, never truncated.
        target: String,
        /// Refuse a file that exists already.
        #[arg(long)]
        exclusive: bool,
    },
    /// Stop the query log (what it holds is written first).
    Stop,
}

impl QueryLogCommand {
    fn call(&self) -> Call {
        match self {
            QueryLogCommand::Status => Call::get("/v1/dns/query-log".into(), |v| Ok(query_log(v))),
            QueryLogCommand::Start { target, exclusive } => {
                let target = if target == "-" {
                    target.clone()
                } else {
                    absolute(target)
                };
                let body = body(vec![
                    ("target", json!(target)),
                    ("exclusive", super::observe::exclusive_flag(*exclusive)),
                ]);
                Call::post("/v1/dns/query-log/start", body, |v| {
                    Ok(format!("started the DNS query log\n{}", query_log(v)))
                })
            }
            QueryLogCommand::Stop => Call::post("/v1/dns/query-log/stop", json!({}), |v| {
                Ok(format!("stopped the DNS query log\n{}", query_log(v)))
            }),
        }
    }
}

/// The query-log status as `KEY  value` lines.
fn query_log(v: &Value) -> String {
    let mut rows = vec![
        (
            "ACTIVE",
            if v["active"] == true { "yes" } else { "no" }.to_string(),
        ),
        ("TARGET", field(v, "target")),
        ("RECORDS", field(v, "records")),
    ];
    if !v["error"].is_null() {
        rows.push(("ERROR", field(v, "error")));
    }
    fields(&rows)
}

/// A `dig`-like answer: the status line, then the answer and authority sections.
fn answer(v: &Value) -> String {
    let mut out = format!(
        ";; {} {} from {} (resolver {}): status {}, {} answer(s), source {}{}, {:.2} ms\n",
        field(v, "name"),
        field(v, "type"),
        field(v, "from"),
        field(v, "server"),
        field(v, "rcode"),
        v["answers"].as_array().map_or(0, Vec::len),
        field(v, "source"),
        if v["authoritative"] == true {
            ", authoritative"
        } else {
            ""
        },
        v["query_time_ms"].as_f64().unwrap_or(0.0),
    );
    if !v["firewall_rule"].is_null() {
        out.push_str(&format!(
            ";; DNS Firewall rule {}: {}\n",
            field(v, "firewall_rule"),
            field(v, "firewall_action")
        ));
    }
    for (title, key) in [("ANSWER", "answers"), ("AUTHORITY", "authority")] {
        let records = v[key].as_array().map(Vec::as_slice).unwrap_or_default();
        if records.is_empty() {
            continue;
        }
        let mut t = Table::new(&["NAME", "TTL", "TYPE", "DATA"]);
        for r in records {
            t.row(
                ["name", "ttl", "type", "data"]
                    .map(|k| field(r, k))
                    .to_vec(),
            );
        }
        out.push_str(&format!("\n;; {title}\n{}", t.render()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reads_like_dig() {
        let v = json!({
            "from": "a/fn", "server": "10.1.0.2", "name": "db.corp.example", "type": "A",
            "rcode": "NOERROR", "source": "local", "authoritative": true,
            "answers": [{"name": "db.corp.example.", "type": "A", "ttl": 300, "data": "10.1.1.50"}],
            "authority": [], "firewall_rule": null, "query_time_ms": 0.25
        });
        let text = answer(&v);
        assert!(
            text.starts_with(
                ";; db.corp.example A from a/fn (resolver 10.1.0.2): status NOERROR, 1 answer(s), source local, authoritative, 0.25 ms\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("db.corp.example.  300  A     10.1.1.50"),
            "{text}"
        );
        assert!(!text.contains("AUTHORITY"), "{text}");
    }

    #[test]
    fn reverse_names_are_the_address_backwards_in_in_addr_arpa() {
        assert_eq!(
            reverse_name("10.0.1.20").as_deref(),
            Ok("20.1.0.10.in-addr.arpa")
        );
        assert!(reverse_name("web").is_err_and(|e| e.contains("-x")));
    }

    #[test]
    fn a_blocked_answer_names_its_rule() {
        let v = json!({"rcode": "NXDOMAIN", "answers": [], "authority": [],
                       "firewall_rule": "no-bad", "firewall_action": "BLOCK"});
        assert!(answer(&v).contains(";; DNS Firewall rule no-bad: BLOCK"));
    }
}
