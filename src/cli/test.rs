//! `vpcd test FILE`: run the topology in process and check its probes.
//!
//! Prints one row per probe (probe | expected | observed | result | detail) and a summary line,
//! then, for every failed probe, the `vpcd explain` walk of it (hops and verdict).
//! Exit 0 when every probe holds (or there are none), 1 when one fails, 2 when the file cannot be
//! read or is invalid (the diagnostics go to stderr).

use std::fmt::Write as _;
use std::path::Path;

use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::sim::{Observed, Outcome, ProbeResult, SimError, Simulation};

pub fn run(file: &Path) -> u8 {
    let mut sim = match Simulation::load(file) {
        Ok(sim) => sim,
        Err(e) => {
            eprint!("{}", render_error(&e));
            return EXIT_BAD_INPUT;
        }
    };
    if sim.plan().probes.is_empty() {
        println!(
            "{}: no probes declared; add [[probe]] entries to check reachability",
            file.display()
        );
        return EXIT_OK;
    }
    let results = sim.run_probes();
    print!("{}", render_table(&results));
    print!("{}", explain_failures(&sim, &results));
    if results.iter().all(ProbeResult::passed) {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// For every failed probe, what `vpcd explain` says about it (the static walk of the tables),
/// so the reader sees the component that blocked it, or that the tables let it through.
pub fn explain_failures(sim: &Simulation, results: &[ProbeResult]) -> String {
    let plan = sim.plan();
    let tables = sim.fabric().tables();
    let mut out = String::new();
    for (probe, r) in plan.probes.iter().zip(results) {
        if r.passed() {
            continue;
        }
        let e = crate::explain::explain_probe(plan, tables, probe);
        let _ = writeln!(out, "\nFAIL {}: vpcd explain says", r.name);
        out.push_str(&e.render());
    }
    out
}

/// A load error as the user reads it: the topology's own rendering (every diagnostic with its
/// location, snippet and hint, then a summary), ending with a newline.
pub fn render_error(e: &SimError) -> String {
    let mut out = match e {
        SimError::Topology(t) => t.to_string(),
        other => format!("error: {other}"),
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The result table and the summary line.
pub fn render_table(results: &[ProbeResult]) -> String {
    let header = ["probe", "expected", "observed", "result", "detail"];
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.expect.to_string(),
                r.observed.to_string(),
                if r.passed() { "ok" } else { "FAIL" }.to_string(),
                detail(r),
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
    let line = |out: &mut String, cells: [&str; 5]| {
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
    };
    line(&mut out, header);
    for row in &rows {
        line(&mut out, [&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    let _ = writeln!(out, "{} passed, {} failed", results.len() - failed, failed);
    out
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
    use crate::topology::TopologyError;
    use crate::topology::model::Expect;

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
        }
    }

    #[test]
    fn failing_rows_name_the_drop_reason_and_describe_it() {
        let t = render_table(&[
            result(
                Expect::Allow,
                Observed::Deny,
                vec![(DropReason::NoSuchHost, 2)],
            ),
            result(Expect::Deny, Observed::Deny, vec![]),
            result(Expect::Allow, Observed::Deny, vec![]),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("probe"));
        assert!(lines[1].contains("FAIL"));
        assert!(lines[1].contains("no_such_host x2 (no instance or host has the destination"));
        assert!(lines[2].contains(" ok "));
        assert!(lines[3].contains("no drop recorded (timeout)"));
        assert_eq!(lines[4], "1 passed, 2 failed");
    }

    #[test]
    fn invalid_topologies_list_every_problem() {
        let text = "[[vpc]]\ncidr = 5\n";
        let d = crate::topology::Diagnostic::new(
            "t.toml",
            text,
            Some(15..16),
            "vpc[0].cidr",
            "bad",
            Some("fix it".into()),
        );
        let e = SimError::Topology(TopologyError::Invalid(vec![d]));
        let out = render_error(&e);
        assert!(out.contains("t.toml:2:8"), "{out}");
        assert!(out.contains("hint: fix it"), "{out}");
        assert!(out.ends_with('\n'));
        let e = SimError::UnknownEndpoint("x/y".into());
        assert!(render_error(&e).starts_with("error: no endpoint named `x/y`"));
    }
}
