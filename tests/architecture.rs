//! No import circles between modules (ARCHITECTURE.md, "Layers"): reads every `use crate::…`,
//! `super::…` and `self::…` path of `src/` (unit tests left out), follows re-exports to the module
//! that defines the item, and fails on any circle, naming it with one import per step.
//!
//! Granularity:
//! - across the crate, the top-level modules and their direct submodules (`dataplane::firewall`,
//!   `dataplane::nat`, `runtime::event_loop`, `tables`, `explain` …), a module's deeper files
//!   counting as the module;
//! - inside every such submodule that has submodules of its own (`topology::validate`,
//!   `dataplane::nat` …), its direct submodules among themselves (`topology::validate::nat`).
//!
//! A module and the modules inside it may use each other (a `mod.rs` re-exports its children, the
//! children use the types it defines); only modules side by side, or in different subtrees, may not
//! form a circle.

mod source_scan;

use std::collections::{BTreeMap, BTreeSet};

use source_scan::SourceFile;

/// One edge of the import graph with the import that makes it.
type Edges = BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>;

struct Graph {
    files: Vec<SourceFile>,
    modules: BTreeSet<Vec<String>>,
    imports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
}

impl Graph {
    fn read() -> Graph {
        let files = source_scan::library();
        let modules = files.iter().map(|f| f.module.clone()).collect();
        let imports = files
            .iter()
            .map(|f| (f.module.clone(), f.imports.clone()))
            .collect();
        Graph {
            files,
            modules,
            imports,
        }
    }

    /// Every use of a crate path, as (from module, defining module, `file:line path`).
    fn uses(&self) -> Vec<(Vec<String>, Vec<String>, String)> {
        let mut out = Vec::new();
        for f in &self.files {
            for p in &f.paths {
                let Some(to) =
                    source_scan::defining_module(&p.absolute, &self.modules, &self.imports)
                else {
                    continue;
                };
                out.push((
                    f.module.clone(),
                    to,
                    format!("{}:{} `{}`", f.rel.display(), p.line, p.written.join("::")),
                ));
            }
        }
        out
    }
}

fn prefix(m: &[String], depth: usize) -> Vec<String> {
    m[..m.len().min(depth)].to_vec()
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn add(edges: &mut Edges, from: Vec<String>, to: Vec<String>, why: &str) {
    edges
        .entry(from)
        .or_default()
        .entry(to)
        .or_insert_with(|| why.to_string());
}

/// The edges at the crate level: between top-level modules and their direct submodules.
fn crate_level(uses: &[(Vec<String>, Vec<String>, String)]) -> Edges {
    let mut edges = Edges::new();
    for (from, to, why) in uses {
        let (a, b) = (prefix(from, 2), prefix(to, 2));
        // Containment (a module and its own submodules) is not layering.
        if a.is_empty() || b.is_empty() || a.starts_with(&b) || b.starts_with(&a) {
            continue;
        }
        add(&mut edges, a, b, why);
    }
    edges
}

/// The edges among the direct submodules of `parent`.
fn inside(parent: &[String], uses: &[(Vec<String>, Vec<String>, String)]) -> Edges {
    let depth = parent.len() + 1;
    let mut edges = Edges::new();
    for (from, to, why) in uses {
        if !from.starts_with(parent) || !to.starts_with(parent) {
            continue;
        }
        let (a, b) = (prefix(from, depth), prefix(to, depth));
        if a.len() < depth || b.len() < depth || a == b {
            continue;
        }
        add(&mut edges, a, b, why);
    }
    edges
}

/// Every circle of the graph (one per strongly connected component), each written as its steps
/// with the import behind each step.
fn circles(edges: &Edges) -> Vec<String> {
    let nodes: BTreeSet<&Vec<String>> = edges
        .iter()
        .flat_map(|(a, to)| std::iter::once(a).chain(to.keys()))
        .collect();
    let reach = |from: &Vec<String>| -> BTreeMap<Vec<String>, Vec<String>> {
        // Breadth-first, remembering each node's predecessor.
        let mut pred: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from.clone()]);
        while let Some(n) = queue.pop_front() {
            for m in edges.get(&n).into_iter().flat_map(|t| t.keys()) {
                if !pred.contains_key(m) {
                    pred.insert(m.clone(), n.clone());
                    queue.push_back(m.clone());
                }
            }
        }
        pred
    };
    let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes {
        if seen.contains(n) {
            continue;
        }
        let pred = reach(n);
        let Some(_) = pred.get(n) else { continue };
        // The shortest way back to `n`.
        let mut path = vec![n.clone()];
        let mut at = pred[n].clone();
        while at != *n {
            path.push(at.clone());
            at = pred[&at].clone();
        }
        path.push(n.clone());
        path.reverse();
        for m in &path {
            seen.insert(m.clone());
        }
        let steps: Vec<String> = path
            .windows(2)
            .map(|w| {
                format!(
                    "  {} -> {}  ({})",
                    show(&w[0]),
                    show(&w[1]),
                    edges[&w[0]][&w[1]]
                )
            })
            .collect();
        let names: Vec<String> = path.iter().map(|m| show(m)).collect();
        out.push(format!("{}\n{}", names.join(" -> "), steps.join("\n")));
    }
    out
}

#[test]
fn no_import_circles_between_modules() {
    let graph = Graph::read();
    let uses = graph.uses();
    assert!(
        uses.len() > 200,
        "the scan found only {} crate paths; is it reading src/?",
        uses.len()
    );
    let mut found = Vec::new();
    for c in circles(&crate_level(&uses)) {
        found.push(format!("circle between modules: {c}"));
    }
    let parents: BTreeSet<Vec<String>> = graph
        .modules
        .iter()
        .filter(|m| m.len() >= 3)
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    for parent in &parents {
        for c in circles(&inside(parent, &uses)) {
            found.push(format!("circle inside {}: {c}", show(parent)));
        }
    }
    assert!(
        found.is_empty(),
        "import circles ({}):\n{}",
        found.len(),
        found.join("\n")
    );
}

/// The graph really sees the imports it must judge: a known edge through a re-export, one
/// through `super::`, and a circle written here is reported.
#[test]
fn the_graph_follows_reexports_and_reports_a_circle() {
    let graph = Graph::read();
    let uses = graph.uses();
    let edges = crate_level(&uses);
    let has = |a: &str, b: &str| {
        let a: Vec<String> = a.split("::").map(String::from).collect();
        let b: Vec<String> = b.split("::").map(String::from).collect();
        edges.get(&a).is_some_and(|t| t.contains_key(&b))
    };
    // `dataplane::fabric` uses `super::{Counters, …}`, re-exported by `dataplane` from `counters`
    // — inside `dataplane`, so not an edge here — and `crate::tables::…` directly.
    assert!(has("dataplane::fabric", "tables"), "{edges:?}");
    // `runtime` reaches the core.
    assert!(
        edges
            .keys()
            .any(|k| k[0] == "runtime" && edges[k].keys().any(|t| t[0] == "dataplane")),
        "no edge from runtime to dataplane"
    );
    let v = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let mut fake = Edges::new();
    add(&mut fake, v("a::x"), v("b"), "one");
    add(&mut fake, v("b"), v("c::y"), "two");
    add(&mut fake, v("c::y"), v("a::x"), "three");
    add(&mut fake, v("c::y"), v("d"), "four");
    let found = circles(&fake);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("a::x -> b -> c::y -> a::x"),
        "{}",
        found[0]
    );
    assert!(found[0].contains("(three)"), "{}", found[0]);
}
