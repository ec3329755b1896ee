//! DNS Firewall, in Route 53 Resolver DNS Firewall's shape: a VPC's ordered rules, each a list of
//! domains and an action, the first rule whose list holds the query name deciding.
//!
//! Domains: `bad.example` matches that name only; `*.bad.example` every name below it (not
//! `bad.example` itself), as Route 53 matches. Actions: `allow` (answered as usual, no later rule
//! looked at), `alert` (answered as usual, the query log says which rule matched), `block`
//! (answered NXDOMAIN, NODATA, or with an override CNAME; the query never reaches a zone or an
//! upstream). Rules apply to every query a VPC's resolver answers, its own names included.

use hickory_proto::rr::Name;

/// One domain of a rule's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// This name only.
    Exact(Name),
    /// Every name strictly below this one (`*.NAME`).
    Below(Name),
}

impl DomainPattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &Name) -> bool {
        match self {
            DomainPattern::Exact(n) => n == name,
            DomainPattern::Below(n) => n.zone_of(name) && n.num_labels() < name.num_labels(),
        }
    }
}

/// What a block answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockResponse {
    NxDomain,
    NoData,
    /// A CNAME to `target` with this TTL.
    Override {
        target: Name,
        ttl: u32,
    },
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Allow,
    Alert,
    Block(BlockResponse),
}

impl Action {
    /// As query logs write it (Route 53's `firewall_rule_action`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Alert => "ALERT",
            Action::Block(_) => "BLOCK",
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub domains: Vec<DomainPattern>,
    pub action: Action,
}

/// The first rule of `rules` whose list holds `name`.
pub fn decide<'r>(rules: &'r [Rule], name: &Name) -> Option<&'r Rule> {
    rules
        .iter()
        .find(|r| r.domains.iter().any(|d| d.matches(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::names::parse_domain;

    fn rule(name: &str, domains: &[&str], action: Action) -> Rule {
        Rule {
            name: name.into(),
            domains: domains
                .iter()
                .map(|d| match d.strip_prefix("*.") {
                    Some(rest) => DomainPattern::Below(parse_domain(rest).unwrap()),
                    None => DomainPattern::Exact(parse_domain(d).unwrap()),
                })
                .collect(),
            action,
        }
    }

    #[test]
    fn route53_wildcards_match_below_the_name_only_and_the_first_rule_decides() {
        let rules = [
            rule("ok", &["good.bad.example"], Action::Allow),
            rule(
                "no",
                &["*.bad.example", "bad.example"],
                Action::Block(BlockResponse::NxDomain),
            ),
            rule("watch", &["*.example"], Action::Alert),
        ];
        let d = |n: &str| decide(&rules, &parse_domain(n).unwrap()).map(|r| r.name.as_str());
        assert_eq!(d("good.bad.example"), Some("ok"));
        assert_eq!(d("x.y.bad.example"), Some("no"));
        assert_eq!(d("BAD.example"), Some("no"));
        assert_eq!(d("other.example"), Some("watch"));
        assert_eq!(d("example"), None);
    }
}
