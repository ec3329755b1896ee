//! Query-log records: one per answered query, in the shape of Route 53 Resolver query logs.
//!
//! Sans-IO: a [`QueryLogRecord`] is built from an [`Answered`] and who asked; the shell writes
//! them as JSON lines (`runtime::dns_upstream::QueryLogFile`). Fields, as Route 53 names them:
//! `version`, `vpc_id`, `query_timestamp` (RFC 3339, UTC, milliseconds), `query_name` (fully
//! qualified), `query_type`, `query_class`, `rcode`, `answers` (`Rdata`, `Type`, `Class`),
//! `srcaddr`, `srcport`, `transport` (`UDP`, `TCP`), `srcids` (`instance`: the asking instance's
//! name, when the address is one of the VPC's). Not Route 53's: `source` (`local`, `cache`,
//! `upstream`: where the answer came from) and `truncated`. Dropped queries have no record (they
//! are counted).

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::DNSClass;
use serde::Serialize;

use super::{Answered, Source, Transport};

/// The format version, as Route 53 writes it.
pub const VERSION: &str = "1.100000";

/// One answered query. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryLogRecord {
    pub version: &'static str,
    pub vpc_id: String,
    pub query_timestamp: String,
    pub query_name: String,
    pub query_type: String,
    pub query_class: String,
    pub rcode: String,
    pub answers: Vec<LoggedAnswer>,
    pub srcaddr: String,
    pub srcport: String,
    pub transport: &'static str,
    pub srcids: SourceIds,
    pub source: &'static str,
    pub truncated: bool,
    /// Route 53's DNS Firewall fields, when a rule matched: `ALLOW`, `ALERT` or `BLOCK`, and the
    /// rule's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall_rule_action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall_rule: Option<String>,
}

/// One record of the answer section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedAnswer {
    #[serde(rename = "Rdata")]
    pub rdata: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Class")]
    pub class: String,
}

/// Who asked, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceIds {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// Who asked and when, besides what the answer says.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub vpc: &'a str,
    /// Unix time of the answer.
    pub at: Duration,
    pub addr: IpAddr,
    pub port: u16,
    pub transport: Transport,
    pub instance: Option<&'a str>,
}

impl QueryLogRecord {
    /// The record of `answered`, asked by `who`.
    pub fn new(answered: &Answered, who: Asker<'_>) -> QueryLogRecord {
        let (name, qtype) = answered
            .question
            .as_ref()
            .map_or((String::from("-"), String::from("-")), |(n, t)| {
                (n.to_ascii(), t.to_string())
            });
        QueryLogRecord {
            version: VERSION,
            vpc_id: who.vpc.to_string(),
            query_timestamp: rfc3339(who.at),
            query_name: name,
            query_type: qtype,
            query_class: DNSClass::IN.to_string(),
            rcode: rcode_name(answered.rcode),
            answers: answered
                .answers
                .iter()
                .map(|r| LoggedAnswer {
                    rdata: r.data.to_string(),
                    kind: r.record_type().to_string(),
                    class: r.dns_class.to_string(),
                })
                .collect(),
            srcaddr: who.addr.to_string(),
            srcport: who.port.to_string(),
            transport: match who.transport {
                Transport::Udp => "UDP",
                Transport::Tcp => "TCP",
            },
            srcids: SourceIds {
                instance: who.instance.map(str::to_string),
            },
            source: match answered.source {
                Source::Local => "local",
                Source::Cache => "cache",
                Source::Upstream => "upstream",
            },
            truncated: answered.truncated,
            firewall_rule_action: answered.firewall.as_ref().map(|f| f.action),
            firewall_rule: answered.firewall.as_ref().map(|f| f.rule.clone()),
        }
    }
}

/// The rcode's mnemonic as DNS tools print it (RFC 6895: `NOERROR`, `NXDOMAIN`, ...); others by
/// number.
pub fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => u16::from(other).to_string(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a Unix time (the proleptic Gregorian calendar; days from civil
/// after Howard Hinnant's algorithm).
pub fn rfc3339(t: Duration) -> String {
    let secs = t.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        t.subsec_millis()
    )
}

/// (year, month, day) of the `z`th day after 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789.
        assert_eq!(
            rfc3339(Duration::from_millis(951_827_696_789)),
            "2000-02-29T12:34:56.789Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(1_796_256_000)),
            "2026-12-03T00:00:00.000Z"
        );
    }
}
