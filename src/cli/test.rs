//! `vpcd test FILE`: run the topology in process and check its probes.
//!
//! The report ([`super::report`]) goes to stdout as a table (the default), JSON or JUnit XML
//! (`--format`), or to `--output FILE`, in which case stdout still shows the table. `--probe
//! PATTERN` (a glob on names) and `--tag TAG` select probes; `--seed N` seeds everything random in
//! the simulation and is printed in every report, so a run can be replayed byte for byte.
//!
//! Exit 0 when every selected probe holds (or there are none), 1 when one fails, 2 when the file
//! cannot be read or is invalid, a selection matches nothing, or the report cannot be written
//! (the diagnostics go to stderr). A closed stdout (`| head`) keeps the status.

use std::path::PathBuf;

use globset::{Glob, GlobMatcher};

use super::output::{self, errln, errprint};
use super::report::{Ran, Report, Selection};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use crate::sim::{DEFAULT_SEED, SimError, Simulation};
use crate::topology;
use crate::topology::plan::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns and summary lines, for people.
    Table,
    /// One JSON document, for scripts.
    Json,
    /// JUnit XML, for CI test dashboards.
    Junit,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The topology file (TOML).
    pub file: PathBuf,
    /// The report's format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the report to FILE (created or replaced); stdout then shows the table.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Run only the probes whose name matches PATTERN, a glob (`*` any text, `?` one character,
    /// `[abc]`, `{a,b}`). Repeatable: a probe matching any pattern runs.
    #[arg(long = "probe", value_name = "PATTERN")]
    pub probes: Vec<String>,
    /// Run only the probes tagged TAG (`tags = [...]` in the file). Repeatable: a probe with any
    /// of them runs. With --probe, a probe must match both.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The simulation's seed (TCP sequence numbers, IP identification, NAT port choices),
    /// decimal or 0x-hex; every report prints it, and the same seed replays a run exactly.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SEED, value_parser = parse_seed)]
    pub seed: u64,
}

/// A seed: a decimal or `0x` hexadecimal 64-bit number.
fn parse_seed(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    };
    parsed.map_err(|_| {
        format!("`{s}` is not a seed: write a number from 0 to 18446744073709551615, or 0x and hex digits")
    })
}

pub fn run(args: &TestArgs) -> u8 {
    let file = args.file.display().to_string();
    let plan = match topology::load(&args.file) {
        Ok(plan) => plan,
        Err(e) => {
            errprint!("{}", render_error(&SimError::Topology(e)));
            return EXIT_BAD_INPUT;
        }
    };
    let chosen = match select(&plan, &file, &args.probes, &args.tags) {
        Ok(c) => c,
        Err(msg) => {
            errln!("vpcd test: {msg}");
            return EXIT_BAD_INPUT;
        }
    };
    if plan.probes.is_empty() && args.format == Format::Table && args.output.is_none() {
        let text =
            format!("{file}: no probes declared; add [[probe]] entries to check reachability\n");
        return output::finish(EXIT_OK, output::stdout(text));
    }
    let report = run_report(plan, &file, args, &chosen);
    let code = if report.passed() {
        EXIT_OK
    } else {
        EXIT_FAILED
    };
    let rendered = match args.format {
        Format::Table => report.table(),
        Format::Json => report.json(),
        Format::Junit => report.junit(),
    };
    let written = match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &rendered) {
                errln!("vpcd test: --output {}: {e}", path.display());
                return EXIT_BAD_INPUT;
            }
            output::stdout(report.table())
        }
        None => output::stdout(rendered),
    };
    output::finish(code, written)
}

/// Runs the chosen probes (indices into the plan's) with the seed and builds the report.
fn run_report(plan: Plan, file: &str, args: &TestArgs, chosen: &[usize]) -> Report {
    let declared = plan.probes.len();
    let mut sim = Simulation::with_seed(plan, args.seed);
    let probes: Vec<_> = chosen
        .iter()
        .filter_map(|i| sim.plan().probes.get(*i).cloned())
        .collect();
    let results: Vec<_> = probes.iter().map(|p| sim.run_probe(p)).collect();
    let (plan, tables) = (sim.plan(), sim.fabric().tables());
    let ran: Vec<Ran<'_>> = probes
        .iter()
        .zip(&results)
        .map(|(probe, result)| Ran {
            tags: &probe.tags,
            result,
            explain: (!result.passed())
                .then(|| crate::explain::explain_probe(plan, tables, probe).render()),
        })
        .collect();
    let selection = Selection {
        probe: args.probes.clone(),
        tag: args.tags.clone(),
        declared,
    };
    Report::new(file, args.seed, selection, &ran)
}

/// The probes (indices, in file order) that `--probe` patterns and `--tag` tags select: with
/// patterns, those whose name matches one; with tags, those with one of them; with both, both.
/// A pattern or tag that selects nothing in the file is refused (a typo would otherwise run
/// nothing and pass).
pub fn select(
    plan: &Plan,
    file: &str,
    patterns: &[String],
    tags: &[String],
) -> Result<Vec<usize>, String> {
    let matchers: Vec<GlobMatcher> = patterns
        .iter()
        .map(|p| {
            Glob::new(p).map(|g| g.compile_matcher()).map_err(|e| {
                format!(
                    "--probe `{p}` is not a glob: {}; write `*` for any text, `?` for one \
                     character, `[abc]` or `{{a,b}}`",
                    e.kind()
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let names = || {
        let all: Vec<&str> = plan.probes.iter().map(|p| p.name.as_str()).collect();
        listing(&all)
    };
    for (p, m) in patterns.iter().zip(&matchers) {
        if !plan.probes.iter().any(|probe| m.is_match(&probe.name)) {
            return Err(if plan.probes.is_empty() {
                format!("--probe `{p}`: {file} declares no probes")
            } else {
                format!(
                    "--probe `{p}` matches no probe of {file}; its probes: {}",
                    names()
                )
            });
        }
    }
    let mut known: Vec<&str> = Vec::new();
    for t in plan.probes.iter().flat_map(|p| &p.tags) {
        if !known.contains(&t.as_str()) {
            known.push(t);
        }
    }
    for t in tags {
        if !known.contains(&t.as_str()) {
            return Err(if known.is_empty() {
                format!(
                    "--tag `{t}`: no probe of {file} has tags; add `tags = [\"{t}\"]` to a [[probe]]"
                )
            } else {
                format!(
                    "--tag `{t}`: no probe of {file} has this tag; its tags: {}",
                    listing(&known)
                )
            });
        }
    }
    let chosen: Vec<usize> = plan
        .probes
        .iter()
        .enumerate()
        .filter(|(_, p)| matchers.is_empty() || matchers.iter().any(|m| m.is_match(&p.name)))
        .filter(|(_, p)| tags.is_empty() || p.tags.iter().any(|t| tags.contains(t)))
        .map(|(i, _)| i)
        .collect();
    if chosen.is_empty() && (!patterns.is_empty() || !tags.is_empty()) {
        return Err(format!(
            "no probe of {file} matches a --probe pattern and has a --tag tag at once"
        ));
    }
    Ok(chosen)
}

/// Up to ten items, quoted, then how many more.
fn listing(items: &[&str]) -> String {
    let mut s = items
        .iter()
        .take(10)
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 10 {
        s.push_str(&format!(" and {} more", items.len() - 10));
    }
    s
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TopologyError;

    const TOPOLOGY: &str = r#"
        [[vpc]]
        name = "a"
        cidr = "10.0.0.0/16"
        subnet = [{ name = "s", cidr = "10.0.1.0/24" }]
        instance = [
            { name = "f1", subnet = "s", attach = "sim" },
            { name = "f2", subnet = "s", attach = "sim" },
        ]

        [[probe]]
        name = "f1 to f2 web"
        from = "a/f1"
        to = "a/f2:80/tcp"
        expect = "allow"
        tags = ["east-west", "web"]

        [[probe]]
        name = "f1 to f2 ping"
        from = "a/f1"
        to = "a/f2/icmp"
        expect = "allow"
        tags = ["east-west"]

        [[probe]]
        from = "a/f2"
        to = "10.0.1.1/icmp"
        expect = "allow"
    "#;

    fn plan() -> Plan {
        topology::parse("t.toml", TOPOLOGY).expect("valid")
    }

    fn sel(patterns: &[&str], tags: &[&str]) -> Result<Vec<usize>, String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        select(&plan(), "t.toml", &s(patterns), &s(tags))
    }

    #[test]
    fn patterns_and_tags_select_and_combine() {
        assert_eq!(sel(&[], &[]), Ok(vec![0, 1, 2]));
        assert_eq!(sel(&["f1 to *"], &[]), Ok(vec![0, 1]));
        assert_eq!(sel(&["*ping", "a/f2 -> *"], &[]), Ok(vec![1, 2]));
        assert_eq!(sel(&["f1 to f2 {web,ping}"], &[]), Ok(vec![0, 1]));
        assert_eq!(sel(&[], &["web"]), Ok(vec![0]));
        assert_eq!(sel(&[], &["web", "east-west"]), Ok(vec![0, 1]));
        assert_eq!(sel(&["*ping"], &["east-west"]), Ok(vec![1]));
    }

    #[test]
    fn selections_that_run_nothing_are_refused() {
        let e = sel(&["nope*"], &[]).unwrap_err();
        assert!(
            e.contains("matches no probe of t.toml; its probes: `f1 to f2 web`"),
            "{e}"
        );
        let e = sel(&[], &["egress"]).unwrap_err();
        assert!(e.contains("its tags: `east-west`, `web`"), "{e}");
        let e = sel(&["*ping"], &["web"]).unwrap_err();
        assert!(e.contains("at once"), "{e}");
        let e = sel(&["[a"], &[]).unwrap_err();
        assert!(e.starts_with("--probe `[a` is not a glob: "), "{e}");
    }

    #[test]
    fn seeds_are_decimal_or_hex() {
        assert_eq!(parse_seed("42"), Ok(42));
        assert_eq!(parse_seed("0x7670"), Ok(0x7670));
        assert_eq!(parse_seed("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_seed("-1").is_err());
        assert!(parse_seed("0xzz").is_err());
        assert!(parse_seed("").is_err());
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
