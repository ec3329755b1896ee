//! The names the resolver gives things, and the one check of a domain name as written.
//!
//! The scheme (README.md, "DNS inside the VPC"; ARCHITECTURE.md):
//! - an instance: `INSTANCE.VPC.vpc.internal` (its own VPC only), and the AWS-style
//!   `ip-A-B-C-D.VPC.vpc.internal` for its address;
//! - its reverse name `D.C.B.A.in-addr.arpa` points at the first;
//! - an EIP: `eip-A-B-C-D.vpc.internal` from every VPC, and its reverse name points there.
//!
//! Names are compared case-insensitively (hickory's `Name` hashes and compares so) and are
//! always fully qualified here.

use std::net::Ipv4Addr;

use hickory_proto::rr::Name;

/// The domain every name vpcd makes lives under.
pub const INTERNAL_DOMAIN: &str = "vpc.internal";

/// Longest domain name in text form (RFC 1035: 255 octets on the wire).
const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// Parses a domain name as written in a topology file: labels of letters, digits, `-` and `_`,
/// 1 to 63 characters each, at most 253 in all, with an optional trailing dot. Returns it fully
/// qualified; the error says what is wrong.
pub fn parse_domain(text: &str) -> Result<Name, String> {
    let bare = text.strip_suffix('.').unwrap_or(text);
    if bare.is_empty() {
        return Err("a domain name may not be empty".to_string());
    }
    if bare.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{text}` is {} characters long; a domain name has at most {MAX_NAME_LEN}",
            bare.len()
        ));
    }
    for label in bare.split('.') {
        check_label(text, label)?;
    }
    let mut name = Name::from_ascii(bare).map_err(|e| format!("`{text}`: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

/// One label of `text`: 1 to 63 letters, digits, `-` or `_`.
fn check_label(text: &str, label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!(
            "`{text}` has an empty label; write labels separated by single dots"
        ));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "label `{label}` of `{text}` is {} characters long; a label has at most {MAX_LABEL_LEN}",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(format!(
            "`{text}` contains `{c}`; a label holds letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

/// A name from labels vpcd made itself (topology names, address digits). `None` when a topology
/// name is not a valid label (longer than 63 characters after joining, or empty).
fn name_of(text: &str) -> Option<Name> {
    parse_domain(text).ok()
}

/// A domain as written compared without regard to case or a final dot: `Corp.Example.` and
/// `corp.example` are the same zone.
pub fn domain_key(text: &str) -> String {
    text.trim_end_matches('.').to_ascii_lowercase()
}

/// `VPC.vpc.internal.`: the domain of a VPC's own names.
pub fn vpc_domain(vpc: &str) -> Option<Name> {
    name_of(&format!("{vpc}.{INTERNAL_DOMAIN}"))
}

/// `INSTANCE.VPC.vpc.internal.`
pub fn instance_name(instance: &str, vpc: &str) -> Option<Name> {
    name_of(&format!("{instance}.{vpc}.{INTERNAL_DOMAIN}"))
}

/// `ip-A-B-C-D.VPC.vpc.internal.`, the AWS-style name of a private address.
pub fn ip_name(addr: Ipv4Addr, vpc: &str) -> Option<Name> {
    name_of(&format!("ip-{}.{vpc}.{INTERNAL_DOMAIN}", dashed(addr)))
}

/// `eip-A-B-C-D.vpc.internal.`, the name of an EIP.
pub fn eip_name(addr: Ipv4Addr) -> Name {
    name_of(&format!("eip-{}.{INTERNAL_DOMAIN}", dashed(addr)))
        .expect("digits and dashes are always a valid name")
}

/// `D.C.B.A.in-addr.arpa.`, the reverse name of an address.
pub fn reverse_name(addr: Ipv4Addr) -> Name {
    let [a, b, c, d] = addr.octets();
    name_of(&format!("{d}.{c}.{b}.{a}.in-addr.arpa")).expect("digits are always a valid name")
}

/// The internal domain itself, `vpc.internal.`.
pub fn internal_domain() -> Name {
    name_of(INTERNAL_DOMAIN).expect("the internal domain is a valid name")
}

/// `A-B-C-D`.
fn dashed(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("{a}-{b}-{c}-{d}")
}

/// Whether `name` is `apex` or below it.
pub fn is_within(name: &Name, apex: &Name) -> bool {
    apex.zone_of(name)
}

/// The reserved domains a topology may not declare zones in: vpcd answers them itself.
pub fn reserved_domain(name: &Name) -> Option<&'static str> {
    let arpa = Name::from_ascii("in-addr.arpa.").expect("a valid name");
    if is_within(name, &internal_domain()) {
        Some(INTERNAL_DOMAIN)
    } else if is_within(name, &arpa) {
        Some("in-addr.arpa")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_naming_scheme() {
        let a = Ipv4Addr::new(10, 0, 1, 10);
        assert_eq!(
            instance_name("web", "tenant-a").unwrap().to_string(),
            "web.tenant-a.vpc.internal."
        );
        assert_eq!(
            ip_name(a, "tenant-a").unwrap().to_string(),
            "ip-10-0-1-10.tenant-a.vpc.internal."
        );
        assert_eq!(reverse_name(a).to_string(), "10.1.0.10.in-addr.arpa.");
        assert_eq!(
            eip_name(Ipv4Addr::new(203, 0, 113, 5)).to_string(),
            "eip-203-0-113-5.vpc.internal."
        );
    }

    #[test]
    fn domains_are_checked_label_by_label() {
        assert!(parse_domain("_sip._tcp.corp.example.").is_ok());
        assert!(parse_domain("").is_err());
        assert!(parse_domain(".").is_err());
        assert!(parse_domain("a..b").unwrap_err().contains("empty label"));
        assert!(parse_domain("a b.c").unwrap_err().contains("contains ` `"));
        assert!(
            parse_domain(&"x".repeat(64))
                .unwrap_err()
                .contains("at most 63")
        );
        let long = vec!["abcdefgh"; 30].join(".");
        assert!(parse_domain(&long).unwrap_err().contains("at most 253"));
    }

    #[test]
    fn reserved_domains() {
        assert_eq!(
            reserved_domain(&parse_domain("x.vpc.internal").unwrap()),
            Some("vpc.internal")
        );
        assert_eq!(
            reserved_domain(&parse_domain("10.in-addr.arpa").unwrap()),
            Some("in-addr.arpa")
        );
        assert_eq!(
            reserved_domain(&parse_domain("corp.example").unwrap()),
            None
        );
    }
}
