//! The report of `vpcd test`, built once from the probe results and rendered three ways: a table
//! for people, JSON for scripts, JUnit XML for CI dashboards. Every format carries the same
//! content: each probe's name, endpoints, tags, expected and observed verdict, how the exchange
//! ended, the drop reasons, the `vpcd explain` walk of a failed probe, the summary per tag and
//! the seed that replays the run.
//!
//! Nothing in a report depends on the wall clock or the machine (times are the simulation's
//! virtual time, there is no timestamp or hostname), so equal files, selections and seeds give
//! byte-identical reports.

use std::fmt::Write as _;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};
use serde::{Deserialize, Serialize};

use crate::sim::{Observed, Outcome, ProbeResult};
use crate::topology::model::Expect;

/// Everything a run of `vpcd test` found. Its JSON form is `vpcd test --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The topology file as given on the command line.
    pub file: String,
    /// The simulation's seed: `--seed` replays the run exactly.
    pub seed: u64,
    pub selection: Selection,
    pub summary: Summary,
    /// One entry per tag of the probes that ran, in order of first appearance.
    pub tags: Vec<TagSummary>,
    /// The probes that ran, in file order.
    pub probes: Vec<ProbeReport>,
}

/// What `--probe` and `--tag` asked for (empty: every probe).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// `--probe` patterns; a probe whose name matches any of them runs.
    pub probe: Vec<String>,
    /// `--tag` tags; a probe with any of them runs.
    pub tag: Vec<String>,
    /// Probes in the file (selected or not).
    pub declared: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub probes: usize,
    pub passed: usize,
    pub failed: usize,
    /// The probes' virtual time, added up, in microseconds.
    pub virtual_time_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagSummary {
    pub tag: String,
    pub probes: usize,
    pub passed: usize,
    pub failed: usize,
}

impl TagSummary {
    /// `3 probes, 2 passed, 1 failed`.
    pub fn counts(&self) -> String {
        let s = if self.probes == 1 { "" } else { "s" };
        format!(
            "{} probe{s}, {} passed, {} failed",
            self.probes, self.passed, self.failed
        )
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

impl From<Expect> for Verdict {
    fn from(e: Expect) -> Verdict {
        match e {
            Expect::Allow => Verdict::Allow,
            Expect::Deny => Verdict::Deny,
        }
    }
}

impl From<Observed> for Verdict {
    fn from(o: Observed) -> Verdict {
        match o {
            Observed::Allow => Verdict::Allow,
            Observed::Deny => Verdict::Deny,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeReport {
    pub name: String,
    /// `VPC/INSTANCE` or `internet/HOST`.
    pub from: String,
    /// The target as written.
    pub to: String,
    pub tags: Vec<String>,
    pub expect: Verdict,
    pub observed: Verdict,
    pub passed: bool,
    /// How the exchange ended: `completed`, `timed_out`, `reset`, `wrong_responder`,
    /// `unreachable`, `corrupted`, `not_sent`.
    pub outcome: String,
    /// The table's detail column: who answered, or why it was denied.
    pub detail: String,
    /// Who answered the prober, if anyone did.
    pub answered_by: Option<String>,
    /// Drops the fabric counted during the probe, in counter order.
    pub drops: Vec<DropCount>,
    /// Virtual time the exchange took, in microseconds.
    pub virtual_time_us: u64,
    /// For a failed probe, what `vpcd explain` says about it (numbered hops and verdict).
    pub explain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropCount {
    /// The drop reason's label (`sg_ingress_denied`, ...).
    pub reason: String,
    pub count: u64,
    pub description: String,
}

/// One probe that ran: its tags, its result, and (failed probes only) the explain walk.
pub struct Ran<'a> {
    pub tags: &'a [String],
    pub result: &'a ProbeResult,
    pub explain: Option<String>,
}

impl Report {
    pub fn new(file: &str, seed: u64, selection: Selection, ran: &[Ran<'_>]) -> Report {
        let probes: Vec<ProbeReport> = ran.iter().map(probe_report).collect();
        let passed = probes.iter().filter(|p| p.passed).count();
        let mut tags: Vec<TagSummary> = Vec::new();
        for p in &probes {
            for t in &p.tags {
                let i = match tags.iter().position(|s| &s.tag == t) {
                    Some(i) => i,
                    None => {
                        tags.push(TagSummary {
                            tag: t.clone(),
                            probes: 0,
                            passed: 0,
                            failed: 0,
                        });
                        tags.len() - 1
                    }
                };
                let s = &mut tags[i];
                s.probes += 1;
                if p.passed {
                    s.passed += 1;
                } else {
                    s.failed += 1;
                }
            }
        }
        Report {
            file: file.to_string(),
            seed,
            selection,
            summary: Summary {
                probes: probes.len(),
                passed,
                failed: probes.len() - passed,
                virtual_time_us: probes.iter().map(|p| p.virtual_time_us).sum(),
            },
            tags,
            probes,
        }
    }

    /// Whether every probe that ran held (also when none ran).
    pub fn passed(&self) -> bool {
        self.summary.failed == 0
    }

    /// The table, the summary lines, then the explain walk of every failed probe. The last line
    /// is `N passed, M failed` when nothing failed.
    pub fn table(&self) -> String {
        let header = ["probe", "expected", "observed", "result", "detail"];
        let rows: Vec<[&str; 5]> = self
            .probes
            .iter()
            .map(|p| {
                [
                    p.name.as_str(),
                    p.expect.as_str(),
                    p.observed.as_str(),
                    if p.passed { "ok" } else { "FAIL" },
                    p.detail.as_str(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for cells in std::iter::once(&header).chain(&rows) {
            let mut l = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(cell);
                } else {
                    let _ = write!(l, "{cell:<w$}  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        }
        let s = &self.selection;
        if !s.probe.is_empty() || !s.tag.is_empty() {
            let mut asked = Vec::new();
            asked.extend(s.probe.iter().map(|p| format!("--probe '{p}'")));
            asked.extend(s.tag.iter().map(|t| format!("--tag {t}")));
            let _ = writeln!(
                out,
                "selected {} of {} probes ({})",
                self.summary.probes,
                s.declared,
                asked.join(" ")
            );
        }
        let _ = writeln!(
            out,
            "seed: {} (replay with --seed {})",
            self.seed, self.seed
        );
        for t in &self.tags {
            let _ = writeln!(out, "tag {}: {}", t.tag, t.counts());
        }
        let _ = writeln!(
            out,
            "{} passed, {} failed",
            self.summary.passed, self.summary.failed
        );
        for p in &self.probes {
            if let Some(walk) = &p.explain {
                let _ = writeln!(out, "\nFAIL {}: vpcd explain says", p.name);
                out.push_str(walk);
            }
        }
        out
    }

    /// The report as pretty-printed JSON, ending with a newline.
    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Plain strings and numbers only: this cannot fail.
            format!("{{\"error\": \"{e}\"}}")
        });
        s.push('\n');
        s
    }

    /// The report as JUnit XML: one `<testsuite>` named after the file, one `<testcase>` per
    /// probe (classname from the file, name from the probe), a `<failure>` for each failed probe
    /// with the verdicts and drop reasons as its message and the explain walk as its text. The
    /// seed, the selection and the summary per tag are the suite's properties.
    pub fn junit(&self) -> String {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        // Writing into a Vec cannot fail.
        let _ = self.write_junit(&mut w);
        let mut xml = String::from_utf8(w.into_inner()).unwrap_or_default();
        xml.push('\n');
        xml
    }

    fn write_junit(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let tests = self.summary.probes.to_string();
        let failures = self.summary.failed.to_string();
        let time = seconds(self.summary.virtual_time_us);
        let file = xml_attr(&self.file);
        let classname = classname(&self.file);
        w.create_element("testsuites")
            .with_attributes([
                ("name", "vpcd test"),
                ("tests", tests.as_str()),
                ("failures", failures.as_str()),
                ("errors", "0"),
                ("time", time.as_str()),
            ])
            .write_inner_content(|w| {
                w.create_element("testsuite")
                    .with_attributes([
                        ("name", file.as_str()),
                        ("tests", tests.as_str()),
                        ("failures", failures.as_str()),
                        ("errors", "0"),
                        ("skipped", "0"),
                        ("time", time.as_str()),
                    ])
                    .write_inner_content(|w| {
                        self.write_properties(w)?;
                        for p in &self.probes {
                            write_testcase(w, &classname, p)?;
                        }
                        Ok(())
                    })?;
                Ok(())
            })?;
        Ok(())
    }

    fn write_properties(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        let mut props: Vec<(String, String)> = vec![
            ("seed".into(), self.seed.to_string()),
            ("file".into(), self.file.clone()),
            ("declared".into(), self.selection.declared.to_string()),
        ];
        props.extend(
            self.selection
                .probe
                .iter()
                .map(|p| ("selection.probe".into(), p.clone())),
        );
        props.extend(
            self.selection
                .tag
                .iter()
                .map(|t| ("selection.tag".into(), t.clone())),
        );
        props.extend(
            self.tags
                .iter()
                .map(|t| (format!("tag.{}", t.tag), t.counts())),
        );
        w.create_element("properties").write_inner_content(|w| {
            for (name, value) in &props {
                let value = xml_attr(value);
                w.create_element("property")
                    .with_attributes([("name", name.as_str()), ("value", value.as_str())])
                    .write_empty()?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

fn write_testcase(
    w: &mut Writer<Vec<u8>>,
    classname: &str,
    p: &ProbeReport,
) -> std::io::Result<()> {
    let name = xml_attr(&p.name);
    let time = seconds(p.virtual_time_us);
    w.create_element("testcase")
        .with_attributes([
            ("name", name.as_str()),
            ("classname", classname),
            ("time", time.as_str()),
        ])
        .write_inner_content(|w| {
            if !p.passed {
                let message = xml_attr(&failure_message(p));
                let mut text = format!("{}\n", failure_message(p));
                if let Some(walk) = &p.explain {
                    let _ = write!(text, "\nvpcd explain says:\n{walk}");
                }
                w.create_element("failure")
                    .with_attributes([("message", message.as_str()), ("type", p.outcome.as_str())])
                    .write_text_content(text_node(&text))?;
            }
            w.create_element("system-out")
                .write_text_content(text_node(&system_out(p)))?;
            Ok(())
        })?;
    Ok(())
}

/// `expected allow, observed deny: dropped: sg_ingress_denied x2 (...)`.
fn failure_message(p: &ProbeReport) -> String {
    let mut m = format!(
        "expected {}, observed {}",
        p.expect.as_str(),
        p.observed.as_str()
    );
    if !p.detail.is_empty() {
        let _ = write!(m, ": {}", p.detail);
    }
    m
}

/// What a test case's output shows: the probe, its verdicts and how it ended.
fn system_out(p: &ProbeReport) -> String {
    let mut s = format!(
        "from: {}\nto: {}\nexpected: {}\nobserved: {} ({})\n",
        p.from,
        p.to,
        p.expect.as_str(),
        p.observed.as_str(),
        p.outcome
    );
    if let Some(a) = &p.answered_by {
        let _ = writeln!(s, "answered by: {a}");
    }
    for d in &p.drops {
        let _ = writeln!(s, "dropped: {} x{} ({})", d.reason, d.count, d.description);
    }
    if !p.tags.is_empty() {
        let _ = writeln!(s, "tags: {}", p.tags.join(", "));
    }
    s
}

/// JUnit's classname from the topology file: its path without `.toml`, directories joined with
/// dots (`topologies/web-tier.toml` -> `topologies.web-tier`), as dashboards group classes into
/// packages.
pub fn classname(file: &str) -> String {
    let path = file.strip_suffix(".toml").unwrap_or(file);
    let parts: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let name = parts.join(".");
    xml_attr(if name.is_empty() { "topology" } else { &name })
}

/// Microseconds as seconds with three decimals (`0.003`), the precision JUnit schemas accept.
fn seconds(us: u64) -> String {
    let ms = us.saturating_add(500) / 1000;
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Text XML 1.0 can hold: characters it forbids (most control characters) become U+FFFD.
fn xml_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Element text: [`xml_text`], with only `<`, `>` and `&` escaped (quotes need none there).
fn text_node(s: &str) -> BytesText<'static> {
    BytesText::from_escaped(quick_xml::escape::partial_escape(xml_text(s)).into_owned())
}

/// An attribute value: [`xml_text`] on one line (a parser would turn line breaks into spaces).
fn xml_attr(s: &str) -> String {
    xml_text(s).replace(['\n', '\r', '\t'], " ")
}

fn probe_report(ran: &Ran<'_>) -> ProbeReport {
    let r = ran.result;
    ProbeReport {
        name: r.name.clone(),
        from: r.from.clone(),
        to: r.to.clone(),
        tags: ran.tags.to_vec(),
        expect: r.expect.into(),
        observed: r.observed.into(),
        passed: r.passed(),
        outcome: r.outcome.label().to_string(),
        detail: detail(r),
        answered_by: r.answered_by.clone(),
        drops: r
            .drops
            .iter()
            .map(|(reason, n)| DropCount {
                reason: reason.label().to_string(),
                count: *n,
                description: reason.describe().to_string(),
            })
            .collect(),
        virtual_time_us: u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX),
        explain: ran.explain.clone(),
    }
}

/// Why a probe ended as it did: every drop reason for a failure, a short note otherwise.
fn detail(r: &ProbeResult) -> String {
    let drops = |with_text: bool| {
        r.drops
            .iter()
            .map(|(reason, n)| {
                if with_text {
                    format!("{} x{n} ({})", reason.label(), reason.describe())
                } else {
                    format!("{} x{n}", reason.label())
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let answered = || {
        r.answered_by
            .as_deref()
            .map(|a| format!("answered by {a}"))
            .unwrap_or_default()
    };
    match (r.observed, r.passed()) {
        (Observed::Allow, true) => answered(),
        (Observed::Allow, false) => format!("reachable: {}", answered()),
        (Observed::Deny, passed) => {
            if !r.drops.is_empty() {
                format!("dropped: {}", drops(!passed))
            } else {
                format!("no drop recorded ({})", why_denied(r))
            }
        }
    }
}

/// The end of an exchange that no drop explains, with who answered the prober if anyone did.
fn why_denied(r: &ProbeResult) -> String {
    let who = r.answered_by.as_deref();
    match (r.outcome, who) {
        (Outcome::TimedOut, _) => "timeout".to_string(),
        (Outcome::Reset, Some(who)) => format!("connection reset by {who}"),
        (Outcome::Unreachable, Some(who)) => format!("destination unreachable from {who}"),
        (Outcome::WrongResponder, Some(who)) => format!("answered by {who}, not the named target"),
        (other, _) => other.describe().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::DropReason;
    use std::time::Duration;

    fn result(expect: Expect, observed: Observed, drops: Vec<(DropReason, u64)>) -> ProbeResult {
        ProbeResult {
            name: "tenant-a/fn-a1 -> 10.0.9.9:80/tcp".into(),
            from: "tenant-a/fn-a1".into(),
            to: "10.0.9.9:80/tcp".into(),
            expect,
            observed,
            outcome: if observed == Observed::Allow {
                Outcome::Completed
            } else {
                Outcome::TimedOut
            },
            answered_by: None,
            drops,
            elapsed: Duration::from_micros(2_999_600),
        }
    }

    fn report(results: &[ProbeResult], tags: &[&[&str]]) -> Report {
        let tags: Vec<Vec<String>> = tags
            .iter()
            .map(|t| t.iter().map(|s| s.to_string()).collect())
            .collect();
        let ran: Vec<Ran<'_>> = results
            .iter()
            .zip(&tags)
            .map(|(r, t)| Ran {
                tags: t,
                result: r,
                explain: (!r.passed()).then(|| "explain ...\n1. hop\nverdict: blocked\n".into()),
            })
            .collect();
        Report::new("topologies/t.toml", 7, Selection::default(), &ran)
    }

    #[test]
    fn failing_rows_name_the_drop_reason_and_describe_it() {
        let r = report(
            &[
                result(
                    Expect::Allow,
                    Observed::Deny,
                    vec![(DropReason::NoSuchHost, 2)],
                ),
                result(Expect::Deny, Observed::Deny, vec![]),
                result(Expect::Allow, Observed::Deny, vec![]),
            ],
            &[&["egress"], &["egress", "web"], &[]],
        );
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("probe"));
        assert!(lines[1].contains("FAIL"));
        assert!(lines[1].contains("no_such_host x2 (no instance or host has the destination"));
        assert!(lines[2].contains(" ok "));
        assert!(lines[3].contains("no drop recorded (timeout)"));
        assert_eq!(lines[4], "seed: 7 (replay with --seed 7)");
        assert_eq!(lines[5], "tag egress: 2 probes, 1 passed, 1 failed");
        assert_eq!(lines[6], "tag web: 1 probe, 1 passed, 0 failed");
        assert_eq!(lines[7], "1 passed, 2 failed");
        assert_eq!(
            lines[9],
            "FAIL tenant-a/fn-a1 -> 10.0.9.9:80/tcp: vpcd explain says"
        );
        assert_eq!(t.matches("verdict: blocked").count(), 2);
    }

    #[test]
    fn junit_holds_every_probe_with_its_failure_and_the_properties() {
        let r = report(
            &[
                result(
                    Expect::Allow,
                    Observed::Deny,
                    vec![(DropReason::NoSuchHost, 2)],
                ),
                result(Expect::Deny, Observed::Deny, vec![]),
            ],
            &[&["egress"], &[]],
        );
        let xml = r.junit();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites"));
        assert!(
            xml.contains(r#"tests="2" failures="1" errors="0" time="5.999""#),
            "{xml}"
        );
        assert_eq!(xml.matches("<testcase ").count(), 2);
        assert_eq!(xml.matches("<failure ").count(), 1);
        assert!(xml.contains(r#"classname="topologies.t""#));
        assert!(
            xml.contains(r#"name="tenant-a/fn-a1 -&gt; 10.0.9.9:80/tcp""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"message="expected allow, observed deny: dropped: no_such_host x2"#)
        );
        assert!(xml.contains(r#"type="timed_out""#));
        assert!(xml.contains("vpcd explain says:\nexplain ...\n1. hop\nverdict: blocked"));
        assert!(xml.contains(r#"<property name="seed" value="7"/>"#));
        assert!(
            xml.contains(r#"<property name="tag.egress" value="1 probe, 0 passed, 1 failed"/>"#)
        );
    }

    #[test]
    fn xml_gets_no_character_it_forbids() {
        let mut r = result(Expect::Deny, Observed::Deny, vec![]);
        r.name = "a\u{1}b\nc & <d>".into();
        let rep = report(&[r], &[&[]]);
        let xml = rep.junit();
        assert!(!xml.contains('\u{1}'));
        assert!(
            xml.contains("name=\"a\u{FFFD}b c &amp; &lt;d&gt;\""),
            "{xml}"
        );
    }

    #[test]
    fn classnames_come_from_the_path_and_times_have_three_decimals() {
        assert_eq!(classname("topologies/web-tier.toml"), "topologies.web-tier");
        assert_eq!(classname("./x.toml"), "x");
        assert_eq!(classname("/tmp/a/b.toml"), "tmp.a.b");
        assert_eq!(classname(".toml"), "topology");
        assert_eq!(seconds(0), "0.000");
        assert_eq!(seconds(499), "0.000");
        assert_eq!(seconds(500), "0.001");
        assert_eq!(seconds(3_000_000), "3.000");
        assert_eq!(seconds(61_234_567), "61.235");
    }

    #[test]
    fn json_reads_back_into_the_same_report() {
        let r = report(
            &[result(
                Expect::Allow,
                Observed::Deny,
                vec![(DropReason::NoSuchHost, 2)],
            )],
            &[&["egress"]],
        );
        let back: Report = serde_json::from_str(&r.json()).expect("the JSON parses");
        assert_eq!(back, r);
    }
}
