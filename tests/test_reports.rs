//! `vpcd test` where users run it (issue 22): the three report formats, probe selection by name
//! and tag, seeds that replay a run byte for byte, and every command in a pipe.
//!
//! The JUnit report is validated with `xmllint --schema` (Debian's libxml2-utils) against
//! `tests/schemas/junit.xsd`, the project's own schema of JUnit XML as CI dashboards read it
//! (broken reports are shown to be rejected), and read back by `junitparser` (PyPI).
//! `.ci/run` installs both. Without them these tests print why and pass, except under
//! `CI=true`, where they fail.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use vpcd::cli::report::Report;

const VPCD: &str = env!("CARGO_BIN_EXE_vpcd");

fn topology(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name)
}

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/junit.xsd")
}

fn vpcd(args: &[&str]) -> Output {
    Command::new(VPCD)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the vpcd binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory for one test's files, removed when the guard drops.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("vpcd-test-reports-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, body: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, body).expect("write file");
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `cmd args` runs; required under CI.
fn tool(what: &str, cmd: &str, args: &[&str]) -> bool {
    let found = Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is required under CI (.ci/run installs it)"
        );
        eprintln!("skipped: {what} is not installed");
    }
    found
}

/// web-tier with every `deny` expectation turned into `allow`: seven probes fail, each with its
/// drop reason and explain walk.
fn failing_web_tier(dir: &Scratch) -> PathBuf {
    let body = std::fs::read_to_string(topology("web-tier.toml")).expect("web-tier");
    dir.file(
        "web-tier-wrong.toml",
        &body.replace("expect = \"deny\"", "expect = \"allow\""),
    )
}

/// A topology with `n` instances in one VPC (sim hosts) and two probes per instance: one that
/// holds and one that fails (its explain walk makes the output long).
fn many_probes(dir: &Scratch, n: usize) -> PathBuf {
    let mut t = String::from(
        "[[vpc]]\nname = \"big\"\ncidr = \"10.0.0.0/16\"\n\
         subnet = [{ name = \"a\", cidr = \"10.0.0.0/22\" }]\n\n\
         [[vpc.network_acl]]\nname = \"closed\"\n",
    );
    for i in 0..n {
        let _ = write!(
            t,
            "[[vpc.instance]]\nname = \"f{i}\"\nsubnet = \"a\"\nattach = \"sim\"\n\n"
        );
    }
    for i in 0..n {
        let next = (i + 1) % n;
        let _ = write!(
            t,
            "[[probe]]\nname = \"f{i} reaches f{next}\"\nfrom = \"big/f{i}\"\nto = \"big/f{next}:80/tcp\"\n\
             expect = \"allow\"\ntags = [\"east-west\"]\n\n\
             [[probe]]\nname = \"f{i} reaches 10.0.9.9\"\nfrom = \"big/f{i}\"\nto = \"10.0.9.9:80/tcp\"\n\
             expect = \"allow\"\ntags = [\"broken\"]\n\n"
        );
    }
    dir.file("many.toml", &t)
}

fn xmllint(file: &Path) -> Output {
    Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema())
        .arg(file)
        .output()
        .expect("xmllint runs")
}

fn xmllint_validates(file: &Path) {
    let out = xmllint(file);
    assert!(
        out.status.success(),
        "xmllint --schema junit.xsd {}: {}",
        file.display(),
        text(&out.stderr)
    );
}

/// `xml` with the first `attr` of the first `<element ...>` set to `value` (removed if `None`).
fn with_attr(xml: &str, element: &str, attr: &str, value: Option<&str>) -> String {
    let start = xml
        .find(&format!("<{element} "))
        .unwrap_or_else(|| panic!("<{element}> in {xml}"));
    let key = format!(" {attr}=\"");
    let at = start
        + xml[start..]
            .find(&key)
            .unwrap_or_else(|| panic!("{attr} on <{element}>"));
    let end = at + key.len() + xml[at + key.len()..].find('"').expect("closing quote") + 1;
    let replacement = value.map_or(String::new(), |v| format!("{key}{v}\""));
    format!("{}{replacement}{}", &xml[..at], &xml[end..])
}

/// `xml` with its first `<failure>` moved out of its test case, in front of the first one.
fn with_failure_outside_a_testcase(xml: &str) -> String {
    let start = xml.find("<failure ").expect("a failure");
    let end = xml.find("</failure>").expect("a closed failure") + "</failure>".len();
    let failure = &xml[start..end];
    let rest = format!("{}{}", &xml[..start], &xml[end..]);
    let first = rest.find("<testcase ").expect("a testcase");
    format!("{}{failure}\n{}", &rest[..first], &rest[first..])
}

#[test]
fn junit_reports_are_valid_against_the_junit_schema() {
    if !tool("xmllint (libxml2-utils)", "xmllint", &["--version"]) {
        return;
    }
    let dir = Scratch::new("xsd");
    let wrong = failing_web_tier(&dir);
    let many = many_probes(&dir, 20);
    let cases: Vec<(PathBuf, Vec<&str>, i32)> = vec![
        (topology("web-tier.toml"), vec![], 0),
        (wrong.clone(), vec![], 1),
        (wrong, vec!["--tag", "isolation", "--probe", "*api*"], 1),
        (many, vec!["--seed", "0x2a"], 1),
        (topology("quickstart.toml"), vec![], 0),
    ];
    for (i, (file, extra, code)) in cases.iter().enumerate() {
        let xml = dir.path(&format!("report-{i}.xml"));
        let mut args = vec![
            "test",
            file.to_str().expect("utf-8 path"),
            "--format",
            "junit",
        ];
        args.extend(["--output", xml.to_str().expect("utf-8 path")]);
        args.extend(extra);
        let out = vpcd(&args);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).starts_with("probe"),
            "stdout shows the table"
        );
        xmllint_validates(&xml);
    }
    // An empty suite too (a file without probes).
    let empty = dir.file("empty.toml", "");
    let out = vpcd(&["test", empty.to_str().expect("utf-8"), "--format", "junit"]);
    assert_eq!(out.status.code(), Some(0));
    let xml = dir.file("empty.xml", &text(&out.stdout));
    xmllint_validates(&xml);
    assert!(text(&out.stdout).contains(r#"tests="0" failures="0""#));

    // What other producers write is accepted too: a single suite as the document, skipped
    // tests and errors, stderr, timestamps, file and line, a property's value as its text.
    let other = dir.file(
        "other.xml",
        r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="pkg.suite" tests="4" failures="1" errors="1" skipped="1" time="1.5"
           timestamp="2026-01-02T03:04:05" hostname="ci">
  <properties><property name="python" value="3.13"/><property name="os">linux</property></properties>
  <testcase name="passes" classname="pkg.A" time=".25" file="a.py" line="3"/>
  <testcase name="fails" classname="pkg.A" time="0.5">
    <failure message="1 != 2" type="AssertionError">trace</failure>
    <system-out>out</system-out><system-err>err</system-err>
  </testcase>
  <testcase name="breaks"><error message="boom"/></testcase>
  <testcase name="waits" time="0"><skipped message="later"/></testcase>
  <system-out>suite output</system-out>
</testsuite>
"#,
    );
    xmllint_validates(&other);

    // The schema can fail: broken variants of a real report (with failures) are rejected,
    // each for its own reason.
    let good = std::fs::read_to_string(dir.path("report-1.xml")).expect("report-1.xml");
    let broken = [
        (
            "a testcase without a name",
            with_attr(&good, "testcase", "name", None),
            "Element 'testcase': The attribute 'name' is required but missing",
        ),
        (
            "a non-numeric time",
            with_attr(&good, "testcase", "time", Some("fast")),
            "attribute 'time': 'fast' is not a valid value",
        ),
        (
            "a negative test count",
            with_attr(&good, "testsuite", "tests", Some("-1")),
            "attribute 'tests': '-1' is not a valid value",
        ),
        (
            "a misspelt count",
            with_attr(&good, "testsuite", "failures", None).replacen(
                "<testsuite ",
                "<testsuite failure=\"7\" ",
                1,
            ),
            "attribute 'failure': The attribute 'failure' is not allowed",
        ),
        (
            "a failure outside a testcase",
            with_failure_outside_a_testcase(&good),
            "Element 'failure': This element is not expected",
        ),
        (
            "system-out before the failure",
            good.replacen(
                "<failure ",
                "<system-out>early</system-out>\n      <failure ",
                1,
            ),
            "Element 'failure': This element is not expected",
        ),
    ];
    for (i, (what, xml, why)) in broken.iter().enumerate() {
        assert_ne!(xml, &good, "{what}: the variant differs from the report");
        let file = dir.file(&format!("broken-{i}.xml"), xml);
        let out = xmllint(&file);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{what}: xmllint rejects it as invalid (not unreadable): {err}"
        );
        assert!(err.contains(why), "{what}: expected {why:?} in {err}");
    }
}

/// What junitparser reads from a report, as JSON (suites, their properties, cases and results).
const READ_BACK: &str = r#"
import json, sys
from junitparser import JUnitXml
xml = JUnitXml.fromfile(sys.argv[1])
suites = []
for suite in xml:
    cases = []
    for case in suite:
        cases.append({
            "name": case.name,
            "classname": case.classname,
            "time": case.time,
            "results": [{"kind": type(r).__name__, "type": r.type, "message": r.message,
                         "text": r.text} for r in case.result],
            "system_out": case.system_out,
        })
    suites.append({
        "name": suite.name, "tests": suite.tests, "failures": suite.failures,
        "errors": suite.errors, "time": suite.time,
        "properties": [[p.name, p.value] for p in suite.properties()],
        "cases": cases,
    })
print(json.dumps(suites))
"#;

#[test]
fn junitparser_reads_back_every_probe_with_its_verdict_and_explain_walk() {
    if !tool(
        "python3 with junitparser (PyPI)",
        "python3",
        &["-c", "import junitparser"],
    ) {
        return;
    }
    let dir = Scratch::new("junitparser");
    let wrong = failing_web_tier(&dir);
    let wrong_s = wrong.to_str().expect("utf-8");
    let xml = dir.path("r.xml");
    let out = vpcd(&[
        "test",
        wrong_s,
        "--format",
        "junit",
        "-o",
        xml.to_str().expect("utf-8"),
        "--seed",
        "99",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let json = vpcd(&["test", wrong_s, "--format", "json", "--seed", "99"]);
    let report: Report = serde_json::from_slice(&json.stdout).expect("the JSON report parses");
    let script = dir.file("read_back.py", READ_BACK);
    let read = Command::new("python3")
        .arg(&script)
        .arg(&xml)
        .output()
        .expect("python3 runs");
    assert!(read.status.success(), "junitparser: {}", text(&read.stderr));
    let suites: Value = serde_json::from_slice(&read.stdout).expect("the script prints JSON");
    let suites = suites.as_array().expect("a list of suites");
    assert_eq!(suites.len(), 1);
    let suite = &suites[0];
    assert_eq!(suite["name"], wrong_s);
    assert_eq!(suite["tests"], 12);
    assert_eq!(suite["failures"], 7);
    assert_eq!(suite["errors"], 0);
    let props = suite["properties"].as_array().expect("properties");
    assert!(
        props.contains(&serde_json::json!(["seed", "99"])),
        "{props:?}"
    );
    assert!(
        props.contains(&serde_json::json!([
            "tag.isolation",
            "7 probes, 0 passed, 7 failed"
        ])),
        "{props:?}"
    );
    let cases = suite["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), report.probes.len());
    for (case, probe) in cases.iter().zip(&report.probes) {
        assert_eq!(case["name"], probe.name.as_str());
        assert_eq!(case["classname"], vpcd::cli::report::classname(wrong_s));
        let out = case["system_out"].as_str().expect("system-out");
        assert!(
            out.contains(&format!("observed: {}", probe.observed.as_str())),
            "{out}"
        );
        let results = case["results"].as_array().expect("results");
        if probe.passed {
            assert!(results.is_empty(), "{}: {results:?}", probe.name);
            continue;
        }
        assert_eq!(results.len(), 1, "{}", probe.name);
        let r = &results[0];
        assert_eq!(r["kind"], "Failure");
        assert_eq!(r["type"], probe.outcome.as_str());
        let message = r["message"].as_str().expect("a message");
        assert!(
            message.starts_with("expected allow, observed deny: dropped: "),
            "{message}"
        );
        assert!(message.contains(&probe.drops[0].reason), "{message}");
        let walk = probe
            .explain
            .as_deref()
            .expect("a failed probe has its walk");
        let body = r["text"].as_str().expect("a failure text");
        assert!(body.contains(walk.trim_end()), "{body}");
        assert!(body.contains("verdict: blocked by "), "{body}");
        assert_eq!(case["time"], 3.0, "a timeout takes the virtual deadline");
    }
}

#[test]
fn json_reports_round_trip_and_carry_what_the_table_shows() {
    let dir = Scratch::new("json");
    let wrong = failing_web_tier(&dir);
    let wrong_s = wrong.to_str().expect("utf-8");
    let out = vpcd(&["test", wrong_s, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let json = text(&out.stdout);
    let report: Report = serde_json::from_str(&json).expect("the report parses");
    assert_eq!(
        report.json(),
        json,
        "parsed and written again, byte for byte"
    );
    assert_eq!(report.file, wrong_s);
    assert_eq!(report.seed, vpcd::sim::DEFAULT_SEED);
    assert_eq!(
        (
            report.summary.probes,
            report.summary.passed,
            report.summary.failed
        ),
        (12, 5, 7)
    );
    let table = text(&vpcd(&["test", wrong_s]).stdout);
    for p in &report.probes {
        let row = table
            .lines()
            .find(|l| l.starts_with(&p.name))
            .unwrap_or_else(|| panic!("a row for {}", p.name));
        assert!(row.contains(p.detail.as_str()), "{row} / {}", p.detail);
        assert!(row.contains(if p.passed { " ok " } else { " FAIL " }));
        assert_eq!(p.passed, p.explain.is_none());
        if let Some(walk) = &p.explain {
            assert!(
                table.contains(walk.as_str()),
                "the table shows the same walk"
            );
        }
    }
    for t in &report.tags {
        assert!(
            table.contains(&format!("tag {}: {}", t.tag, t.counts())),
            "{table}"
        );
    }
    assert!(table.contains(&format!("seed: {}", report.seed)));
}

#[test]
fn probes_are_selected_by_name_glob_and_by_tag() {
    let web = topology("web-tier.toml");
    let web = web.to_str().expect("utf-8");
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["test", web, "--format", "json"];
        all.extend(args);
        let out = vpcd(&all);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let r: Report = serde_json::from_slice(&out.stdout).expect("json");
        r.probes.into_iter().map(|p| p.name).collect()
    };
    assert_eq!(names(&[]).len(), 12);
    assert_eq!(
        names(&["--probe", "*DNAT*"]),
        [
            "the internet reaches the frontend through DNAT",
            "no DNAT entry for port 22"
        ]
    );
    assert_eq!(
        names(&["--probe", "ops *", "--probe", "batch*"]),
        [
            "ops pings the frontend (web-sg admits echo from the VPC)",
            "batch is not in web-sg (same subnet: no ACL, the security group denies)",
            "ops is not in web-sg (across the subnet edge)",
        ]
    );
    assert_eq!(names(&["--tag", "isolation"]).len(), 7);
    assert_eq!(names(&["--tag", "egress", "--tag", "ingress"]).len(), 5);
    assert_eq!(
        names(&["--tag", "nat", "--probe", "*SNAT*"]),
        ["the api calls out on http through SNAT"]
    );
    // The table says what was selected and sums up per tag.
    let out = vpcd(&["test", web, "--tag", "egress"]);
    let t = text(&out.stdout);
    assert!(t.contains("selected 2 of 12 probes (--tag egress)"), "{t}");
    assert!(
        t.contains("tag egress: 2 probes, 2 passed, 0 failed"),
        "{t}"
    );
    assert!(t.contains("tag nat: 1 probe, 1 passed, 0 failed"), "{t}");
    assert!(t.ends_with("2 passed, 0 failed\n"), "{t}");
    // A selection that runs nothing is an error, not a green run.
    for (args, says) in [
        (
            vec!["--probe", "nothing*"],
            "--probe `nothing*` matches no probe of",
        ),
        (vec!["--tag", "egres"], "--tag `egres`: no probe of"),
        (vec!["--probe", "[oops"], "--probe `[oops` is not a glob"),
        (
            vec!["--tag", "egress", "--probe", "*DNAT*"],
            "matches a --probe pattern and has a --tag tag at once",
        ),
    ] {
        let mut all = vec!["test", web];
        all.extend(&args);
        let out = vpcd(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn equal_seeds_give_byte_identical_reports_in_every_format() {
    let dir = Scratch::new("seeds");
    let wrong = failing_web_tier(&dir);
    for file in [
        topology("web-tier.toml"),
        topology("two-tenants.toml"),
        wrong,
    ] {
        let f = file.to_str().expect("utf-8");
        for format in ["table", "json", "junit"] {
            let run = |seed: &str| vpcd(&["test", f, "--format", format, "--seed", seed]).stdout;
            let first = run("12345");
            assert!(!first.is_empty());
            assert_eq!(
                first,
                run("12345"),
                "{f} {format}: the same seed, the same bytes"
            );
            assert!(text(&first).contains("12345"), "{format} prints the seed");
            let other = run("0x3039"); // 12345 in hex: the same seed
            assert_eq!(
                first, other,
                "{f} {format}: hex and decimal seeds are the same"
            );
            let third = run("777");
            assert_ne!(first, third, "the seed is part of the report");
            assert_eq!(
                text(&first).replace("12345", "777"),
                text(&third),
                "{f} {format}: another seed changes no verdict"
            );
        }
    }
    let out = vpcd(&["test", "x.toml", "--seed=-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a seed"));
}

/// Runs `args` with stdout a pipe whose reading end is already closed: every write fails with
/// EPIPE, deterministically.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Command::new(VPCD)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("vpcd runs")
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_its_usual_status() {
    let dir = Scratch::new("pipe");
    let many = many_probes(&dir, 150);
    let many = many.to_str().expect("utf-8");
    let web = topology("web-tier.toml");
    let web = web.to_str().expect("utf-8");
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["test", many], 1),
        (vec!["test", many, "--format", "json"], 1),
        (vec!["test", many, "--format", "junit"], 1),
        (vec!["test", web], 0),
        (vec!["check", many], 0),
        (vec!["check", web], 0),
        (
            vec!["explain", web, "shop/frontend", "shop/api:9001/tcp"],
            1,
        ),
        (
            vec!["explain", web, "shop/frontend", "shop/api:9000/tcp"],
            0,
        ),
        (vec!["completions", "bash"], 0),
        (vec!["--help"], 0),
        (vec!["test", "--help"], 0),
    ];
    for (args, code) in &cases {
        let out = into_closed_pipe(args);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?} is quiet: {}",
            text(&out.stderr)
        );
    }
    // `ctl` writes its answer the same way; with no API to ask it fails before writing.
    let out = into_closed_pipe(&["ctl", "--socket", "/nonexistent/vpcd.sock", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn head_on_hundreds_of_probes_exits_without_a_panic() {
    if !tool("bash", "bash", &["-c", "true"]) {
        return;
    }
    let dir = Scratch::new("head");
    let many = many_probes(&dir, 400); // 800 probes over 400 hosts
    for (cmd, code, first) in [("test", 1, "probe "), ("check", 0, "")] {
        let script = format!(
            "RUST_BACKTRACE=1 '{VPCD}' {cmd} '{}' | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
            many.display()
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("bash runs");
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        assert!(lines[0].starts_with(first), "{stdout}");
        assert_eq!(
            lines[1],
            format!("status={code}"),
            "vpcd {cmd}: {}",
            text(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "vpcd {cmd}: {}", text(&out.stderr));
    }
    // The same output in full is long enough that `head` closes the pipe mid-write.
    let full = vpcd(&["test", many.to_str().expect("utf-8")]);
    assert!(
        full.stdout.len() > 128 * 1024,
        "{} bytes",
        full.stdout.len()
    );
    let full = vpcd(&["check", many.to_str().expect("utf-8")]);
    assert!(full.stdout.len() > 64 * 1024, "{} bytes", full.stdout.len());
}

#[test]
fn expected_errors_print_no_backtrace_even_with_rust_backtrace_set() {
    let dir = Scratch::new("errors");
    let bad = dir.file(
        "bad.toml",
        "[[vpc]]\nname = \"a\"\ncidr = \"10.0.0.0/33\"\n",
    );
    let bad = bad.to_str().expect("utf-8");
    let web = topology("web-tier.toml");
    let web = web.to_str().expect("utf-8");
    let nowhere = dir.path("no/such/dir/r.xml");
    for args in [
        vec!["test", "/nonexistent/x.toml"],
        vec!["check", "/nonexistent/x.toml"],
        vec!["test", bad],
        vec!["check", bad],
        vec!["explain", bad, "a/b", "c/d:80/tcp"],
        vec!["explain", web, "shop/nobody", "shop/api:80/tcp"],
        vec!["test", web, "--tag", "nope"],
        vec!["test", web, "--format", "yaml"],
        vec!["test", web, "--output", nowhere.to_str().expect("utf-8")],
        vec!["test", web, "--seed", "x"],
        vec!["nonsense"],
        vec!["ctl", "--socket", "/nonexistent/vpcd.sock", "status"],
    ] {
        let out = vpcd(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(!err.is_empty(), "{args:?} says why");
        for never in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
            assert!(!err.contains(never), "{args:?}: {err}");
        }
    }
    // A full disk is an error of its own (exit 2), not a closed pipe.
    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full opens");
        let out = Command::new(VPCD)
            .args(["check", web])
            .env("RUST_BACKTRACE", "1")
            .stdout(full)
            .output()
            .expect("vpcd runs");
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(err.contains("cannot write the output"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn reports_carry_no_colours() {
    let dir = Scratch::new("colours");
    let wrong = failing_web_tier(&dir);
    let wrong = wrong.to_str().expect("utf-8");
    for format in ["table", "json", "junit"] {
        let out = vpcd(&["test", wrong, "--format", format]);
        assert!(!out.stdout.contains(&0x1b), "{format}: an escape sequence");
    }
}

#[test]
fn the_readme_ci_step_runs_and_writes_a_junit_report() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let line = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("run: vpcd test ") && l.contains("--format junit"))
        .expect("the README shows a CI step running `vpcd test ... --format junit`");
    let args: Vec<&str> = line["run: vpcd ".len()..].split_whitespace().collect();
    let dir = Scratch::new("readme");
    // The step's topology path is relative to the repository: run it there, report into dir.
    let mut in_repo: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let o = in_repo
        .iter()
        .position(|a| a == "--output")
        .expect("the step writes --output FILE");
    let report = dir.path("report.xml");
    in_repo[o + 1] = report.display().to_string();
    let out = Command::new(VPCD)
        .args(&in_repo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("vpcd runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{in_repo:?}: {}",
        text(&out.stderr)
    );
    let xml = std::fs::read_to_string(&report).expect("the step wrote its report");
    assert!(xml.contains("<testsuites "), "{xml}");
}
