//! The records a topology file may declare in a zone: their types and their values as written,
//! parsed into typed data for the resolver.
//!
//! Values use zone-file syntax, one record per entry: `A "10.0.1.20"`, `AAAA "2001:db8::1"`,
//! `CNAME "db.corp.example"`, `TXT "any text"`, `SRV "10 5 5432 db.corp.example"` (priority,
//! weight, port, target), `MX "10 mail.corp.example"` (preference, exchange). Targets are absolute
//! names (a trailing dot is optional). Validation (`topology::validate::dns`) reports a parse
//! error at the value's location; the resolver only ever sees parsed [`RecordData`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SRV, TXT};
use hickory_proto::rr::{Name, RData};

use super::names::parse_domain;

/// The record types a zone may hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
pub enum RecordKind {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "CNAME")]
    Cname,
    #[serde(rename = "TXT")]
    Txt,
    #[serde(rename = "SRV")]
    Srv,
    #[serde(rename = "MX")]
    Mx,
}

impl RecordKind {
    /// The type as written in files and shown in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Cname => "CNAME",
            RecordKind::Txt => "TXT",
            RecordKind::Srv => "SRV",
            RecordKind::Mx => "MX",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record's data, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Name),
    /// The text as written; split into 255-byte strings on the wire.
    Txt(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    Mx {
        preference: u16,
        exchange: Name,
    },
}

/// Longest TXT value accepted: what fits a UDP answer of the largest EDNS size we serve, with
/// room for the header, the question and the record's own overhead.
pub const MAX_TXT_LEN: usize = 4000;

impl RecordData {
    /// Parses `value` as a record of type `kind`; the error says what to write instead.
    pub fn parse(kind: RecordKind, value: &str) -> Result<RecordData, String> {
        match kind {
            RecordKind::A => Ipv4Addr::from_str(value).map(RecordData::A).map_err(|_| {
                format!("`{value}` is not an IPv4 address; write it like \"10.0.1.20\"")
            }),
            RecordKind::Aaaa => Ipv6Addr::from_str(value)
                .map(RecordData::Aaaa)
                .map_err(|_| {
                    format!("`{value}` is not an IPv6 address; write it like \"2001:db8::1\"")
                }),
            RecordKind::Cname => parse_domain(value).map(RecordData::Cname),
            RecordKind::Txt if value.len() > MAX_TXT_LEN => Err(format!(
                "a TXT value of {} bytes is too long; at most {MAX_TXT_LEN} bytes",
                value.len()
            )),
            RecordKind::Txt if !value.is_ascii() => {
                Err("a TXT value must be ASCII text".to_string())
            }
            RecordKind::Txt => Ok(RecordData::Txt(value.to_string())),
            RecordKind::Srv => parse_srv(value),
            RecordKind::Mx => parse_mx(value),
        }
    }

    /// The record's type.
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordData::A(_) => RecordKind::A,
            RecordData::Aaaa(_) => RecordKind::Aaaa,
            RecordData::Cname(_) => RecordKind::Cname,
            RecordData::Txt(_) => RecordKind::Txt,
            RecordData::Srv { .. } => RecordKind::Srv,
            RecordData::Mx { .. } => RecordKind::Mx,
        }
    }

    /// The wire form.
    pub fn to_rdata(&self) -> RData {
        match self {
            RecordData::A(a) => RData::A(A(*a)),
            RecordData::Aaaa(a) => RData::AAAA(AAAA(*a)),
            RecordData::Cname(n) => RData::CNAME(CNAME(n.clone())),
            RecordData::Txt(t) => RData::TXT(TXT::from_bytes(t.as_bytes().chunks(255).collect())),
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => RData::SRV(SRV::new(*priority, *weight, *port, target.clone())),
            RecordData::Mx {
                preference,
                exchange,
            } => RData::MX(MX::new(*preference, exchange.clone())),
        }
    }
}

/// `PRIORITY WEIGHT PORT TARGET`.
fn parse_srv(value: &str) -> Result<RecordData, String> {
    let bad = || {
        format!(
            "`{value}` is not an SRV value; write \"PRIORITY WEIGHT PORT TARGET\", like \"10 5 5432 db.corp.example\""
        )
    };
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [priority, weight, port, target] = fields.as_slice() else {
        return Err(bad());
    };
    let number = |s: &str| s.parse::<u16>().map_err(|_| bad());
    Ok(RecordData::Srv {
        priority: number(priority)?,
        weight: number(weight)?,
        port: number(port)?,
        target: parse_domain(target)?,
    })
}

/// `PREFERENCE EXCHANGE`.
fn parse_mx(value: &str) -> Result<RecordData, String> {
    let bad = || {
        format!(
            "`{value}` is not an MX value; write \"PREFERENCE EXCHANGE\", like \"10 mail.corp.example\""
        )
    };
    let fields: Vec<&str> = value.split_whitespace().collect();
    let [preference, exchange] = fields.as_slice() else {
        return Err(bad());
    };
    Ok(RecordData::Mx {
        preference: preference.parse().map_err(|_| bad())?,
        exchange: parse_domain(exchange)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_zone_file_syntax_parse() {
        assert_eq!(
            RecordData::parse(RecordKind::A, "10.0.1.20"),
            Ok(RecordData::A(Ipv4Addr::new(10, 0, 1, 20)))
        );
        let srv = RecordData::parse(RecordKind::Srv, "10 5 5432 db.corp.example").unwrap();
        assert_eq!(srv.kind(), RecordKind::Srv);
        assert!(matches!(srv, RecordData::Srv { port: 5432, .. }));
        let mx = RecordData::parse(RecordKind::Mx, "10 mail.corp.example.").unwrap();
        assert!(matches!(mx, RecordData::Mx { preference: 10, .. }));
    }

    #[test]
    fn bad_values_say_what_to_write() {
        let e = RecordData::parse(RecordKind::A, "10.0.1").unwrap_err();
        assert!(e.contains("not an IPv4 address"), "{e}");
        let e = RecordData::parse(RecordKind::Srv, "10 5 db").unwrap_err();
        assert!(e.contains("PRIORITY WEIGHT PORT TARGET"), "{e}");
        let e = RecordData::parse(RecordKind::Mx, "x mail.example").unwrap_err();
        assert!(e.contains("PREFERENCE EXCHANGE"), "{e}");
        let e = RecordData::parse(RecordKind::Cname, "a..b").unwrap_err();
        assert!(e.contains("empty label"), "{e}");
        assert!(RecordData::parse(RecordKind::Txt, &"x".repeat(MAX_TXT_LEN + 1)).is_err());
    }

    #[test]
    fn long_txt_is_split_into_255_byte_strings() {
        let RData::TXT(txt) = RecordData::Txt("y".repeat(600)).to_rdata() else {
            panic!("a TXT record");
        };
        let lens: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lens, vec![255, 255, 90]);
    }
}
