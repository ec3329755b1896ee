//! Reads the crate's own sources for the tests that enforce its architecture (`tests/sans_io.rs`,
//! `tests/architecture.rs`; see ARCHITECTURE.md).
//!
//! A deliberately small lexer, not a Rust parser: comments, string and character literals are
//! blanked, items behind `#[cfg(test)]` (unit tests may use anything) are dropped, and what is left
//! is read for paths — every `use` tree expanded to full paths, and every `a::b::c` written in code.
//! Paths starting with `crate`, `self` or `super` are resolved to absolute module paths.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// One path a source file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPath {
    /// As written, segments joined (`super::icmp::Foo`, `tokio::spawn`).
    pub written: Vec<String>,
    /// Resolved against the file's module when it starts with `crate`, `self`, `super` or a child
    /// module (`crate`, then module and item names); otherwise as written (another crate).
    pub absolute: Vec<String>,
    /// Written in a `use` declaration.
    pub in_use: bool,
    /// A macro invocation (`println!`, `log::info!`).
    pub is_macro: bool,
    pub line: usize,
}

/// One source file of the library.
#[derive(Debug)]
pub struct SourceFile {
    /// Relative to the crate root, like `src/dataplane/nat/alloc.rs`.
    pub rel: PathBuf,
    /// The module the file is (`["dataplane", "nat", "alloc"]`; `[]` for `lib.rs`).
    pub module: Vec<String>,
    pub paths: Vec<NamedPath>,
    /// Names the file's `use` declarations bring into its module (for following re-exports):
    /// name -> absolute path.
    pub imports: BTreeMap<String, Vec<String>>,
}

impl SourceFile {
    pub fn display_module(&self) -> String {
        if self.module.is_empty() {
            "crate".to_string()
        } else {
            self.module.join("::")
        }
    }
}

pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir` (relative to the crate root), recursively, sorted.
pub fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("readable dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).expect("under the root").to_path_buf();
            if p.is_dir() {
                walk(root, &rel, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(&crate_root(), Path::new(dir), &mut out);
    out
}

/// The module a library file is: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
pub fn module_of(rel: &Path) -> Vec<String> {
    let inner = rel.strip_prefix("src").expect("a file under src/");
    let mut segs: Vec<String> = inner
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = segs.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        segs.push(stem.to_string());
    }
    segs
}

/// Reads and scans every library file under `src/` (not the binary's `main.rs`), leaving out the
/// files that are unit-test modules (`#[cfg(test)] mod tests;`).
pub fn library() -> Vec<SourceFile> {
    let files = rust_files("src");
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .filter(|f| f.as_path() != Path::new("src/main.rs"))
        .map(|f| module_of(f))
        .collect();
    let mut test_modules = BTreeSet::new();
    let mut out = Vec::new();
    for rel in files {
        if rel.as_path() == Path::new("src/main.rs") {
            continue;
        }
        let module = module_of(&rel);
        let text = fs::read_to_string(crate_root().join(&rel))
            .unwrap_or_else(|e| panic!("reading {}: {e}", rel.display()));
        let scanned = scan(&text, &module, &modules);
        for t in &scanned.test_modules {
            let mut m = module.clone();
            m.push(t.clone());
            test_modules.insert(m);
        }
        out.push(SourceFile {
            rel,
            module,
            paths: scanned.paths,
            imports: scanned.imports,
        });
    }
    out.retain(|f| !test_modules.iter().any(|t| f.module.starts_with(t)));
    out
}

struct Scanned {
    paths: Vec<NamedPath>,
    imports: BTreeMap<String, Vec<String>>,
    /// Child modules declared behind `#[cfg(test)]` (`mod tests;`).
    test_modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Blanks comments and the contents of string and character literals, keeping line breaks.
fn blank_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if (ch == 'r' || ch == 'b') && (i == 0 || !ident(c[i - 1])) && {
            // A raw or byte string: r"..", r#".."#, b"..", br#".."#.
            let mut j = i + 1;
            if ch == 'b' && c.get(j) == Some(&'r') {
                j += 1;
            }
            let raw = ch == 'r' || c.get(i + 1) == Some(&'r');
            while raw && c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"') && (raw || j == i + 1)
        } {
            let mut j = i + 1;
            if ch == 'b' && c[j] == 'r' {
                j += 1;
            }
            let raw = ch == 'r' || c[i + 1] == 'r';
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            i = skip_string(&c, j + 1, raw, hashes, &mut out);
        } else if ch == '"' {
            i = skip_string(&c, i + 1, false, 0, &mut out);
        } else if ch == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            let mut j = i + 2;
            j += 1;
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            out.push_str("' '");
            i = j + 1;
        } else if ch == '\'' && c.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else {
            out.push(ch);
            i += 1;
        }
    }
    out
}

/// Skips a string literal's body from `j` (after the opening quote) through its closing quote (and
/// `hashes` `#` for raw strings), writing `""` and the body's line breaks; returns where it ends.
fn skip_string(c: &[char], mut j: usize, raw: bool, hashes: usize, out: &mut String) -> usize {
    loop {
        match c.get(j) {
            None => break,
            Some('\\') if !raw => j += 2,
            Some('"') if (1..=hashes).all(|h| c.get(j + h) == Some(&'#')) => {
                j += 1 + hashes;
                break;
            }
            Some('\n') => {
                out.push('\n');
                j += 1;
            }
            Some(_) => j += 1,
        }
    }
    out.push_str("\"\"");
    j
}

fn tokenize(code: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            toks.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push((Tok::PathSep, line));
            i += 2;
        } else {
            toks.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    toks
}

fn is_ident(t: Option<&(Tok, usize)>, s: &str) -> bool {
    matches!(t, Some((Tok::Ident(x), _)) if x == s)
}

fn is_punct(t: Option<&(Tok, usize)>, p: char) -> bool {
    matches!(t, Some((Tok::Punct(x), _)) if *x == p)
}

/// Drops every item behind `#[cfg(test)]`; returns the kept tokens and the names of test-only
/// child modules declared as files (`#[cfg(test)] mod tests;`).
fn drop_test_items(toks: Vec<(Tok, usize)>) -> (Vec<(Tok, usize)>, Vec<String>) {
    let mut out = Vec::with_capacity(toks.len());
    let mut test_modules = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let cfg_test = is_punct(toks.get(i), '#')
            && is_punct(toks.get(i + 1), '[')
            && is_ident(toks.get(i + 2), "cfg")
            && is_punct(toks.get(i + 3), '(')
            && is_ident(toks.get(i + 4), "test")
            && is_punct(toks.get(i + 5), ')')
            && is_punct(toks.get(i + 6), ']');
        if !cfg_test {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        // The item: up to a `;` outside brackets, or through its balanced `{ .. }`.
        let (mut round, mut square) = (0i32, 0i32);
        let start = i;
        while i < toks.len() {
            match &toks[i].0 {
                Tok::Punct('(') => round += 1,
                Tok::Punct(')') => round -= 1,
                Tok::Punct('[') => square += 1,
                Tok::Punct(']') => square -= 1,
                Tok::Punct(';') if round == 0 && square == 0 => {
                    if let [.., (Tok::Ident(m), _), (Tok::Ident(name), _)] = &toks[start..i]
                        && m == "mod"
                    {
                        test_modules.push(name.clone());
                    }
                    i += 1;
                    break;
                }
                Tok::Punct('{') if round == 0 && square == 0 => {
                    let mut depth = 0;
                    while i < toks.len() {
                        match toks[i].0 {
                            Tok::Punct('{') => depth += 1,
                            Tok::Punct('}') => depth -= 1,
                            _ => {}
                        }
                        i += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    (out, test_modules)
}

/// Expands a `use` tree starting at `toks[*i]` (after the `use` keyword) into paths, each with the
/// name it binds (`None` for globs and `self` of the crate root).
fn use_tree(
    toks: &[(Tok, usize)],
    i: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::PathSep) => *i += 1,
            Some(Tok::Ident(s)) if s == "as" => {
                *i += 1;
                let alias = match toks.get(*i).map(|t| &t.0) {
                    Some(Tok::Ident(a)) => a.clone(),
                    _ => String::from("_"),
                };
                *i += 1;
                let path = strip_self(path);
                out.push((path, Some(alias)));
                return;
            }
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                *i += 1;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push((path, None));
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        None => return,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        _ => use_tree(toks, i, &path, out),
                    }
                }
            }
            _ => {
                let path = strip_self(path);
                let name = path.last().cloned();
                if !path.is_empty() {
                    out.push((path, name));
                }
                return;
            }
        }
    }
}

/// `a::b::{self}` is `a::b`.
fn strip_self(mut path: Vec<String>) -> Vec<String> {
    if path.len() > 1 && path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    path
}

/// Resolves a path written in `module` against the crate's modules: `crate::`, `self::`,
/// `super::` and child modules become absolute (`crate::…`); anything else is another crate's.
fn absolute(written: &[String], module: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    let mut segs = written.iter().peekable();
    let mut base: Vec<String> = match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("self") => {
            segs.next();
            module.to_vec()
        }
        Some("super") => {
            let mut b = module.to_vec();
            while segs.peek().is_some_and(|s| *s == "super") {
                segs.next();
                b.pop();
            }
            b
        }
        Some(first) => {
            let mut child = module.to_vec();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return written.to_vec();
            }
            module.to_vec()
        }
        None => return Vec::new(),
    };
    base.extend(segs.cloned());
    let mut out = vec!["crate".to_string()];
    out.extend(base);
    out
}

fn scan(text: &str, module: &[String], modules: &BTreeSet<Vec<String>>) -> Scanned {
    let toks = tokenize(&blank_literals(text));
    let (toks, test_modules) = drop_test_items(toks);
    let mut paths = Vec::new();
    let mut imports = BTreeMap::new();
    let mut i = 0;
    while i < toks.len() {
        let line = toks[i].1;
        if is_ident(toks.get(i), "use") && !is_punct(toks.get(i + 1), '<') {
            i += 1;
            let mut tree = Vec::new();
            use_tree(&toks, &mut i, &[], &mut tree);
            for (written, name) in tree {
                let abs = absolute(&written, module, modules);
                if let Some(n) = name
                    && n != "_"
                {
                    imports.insert(n, abs.clone());
                }
                paths.push(NamedPath {
                    written,
                    absolute: abs,
                    in_use: true,
                    is_macro: false,
                    line,
                });
            }
            continue;
        }
        if let Some((Tok::Ident(first), _)) = toks.get(i) {
            // A path: ident (:: ident)*, perhaps a macro (`!` after it).
            // Inside a longer path (`a::b`, `<T as X>::b`), unless the `::` starts a global path
            // (`::tokio::spawn`).
            let after_sep = i > 0
                && toks[i - 1].0 == Tok::PathSep
                && (i > 1 && matches!(toks[i - 2].0, Tok::Ident(_) | Tok::Punct('>')));
            let mut written = vec![first.clone()];
            let mut j = i + 1;
            while toks.get(j).map(|t| &t.0) == Some(&Tok::PathSep) {
                match toks.get(j + 1) {
                    Some((Tok::Ident(s), _)) => {
                        written.push(s.clone());
                        j += 2;
                    }
                    _ => break,
                }
            }
            let is_macro = is_punct(toks.get(j), '!') && !is_punct(toks.get(j + 1), '=');
            if !after_sep && (written.len() > 1 || is_macro) {
                let relative = matches!(first.as_str(), "crate" | "self" | "super");
                let abs = if relative {
                    absolute(&written, module, modules)
                } else {
                    written.clone()
                };
                paths.push(NamedPath {
                    written,
                    absolute: abs,
                    in_use: false,
                    is_macro,
                    line,
                });
            }
            i = j;
            continue;
        }
        i += 1;
    }
    Scanned {
        paths,
        imports,
        test_modules,
    }
}

/// Follows an absolute path (`crate::…`) to the module that defines its item: through child
/// modules, and through names a module imports (`pub use`, or a private `use` its children reach
/// with `super::`). Returns the module path (without `crate`).
pub fn defining_module(
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
    imports: &BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
) -> Option<Vec<String>> {
    if path.first().is_none_or(|s| s != "crate") {
        return None;
    }
    let mut path: Vec<String> = path[1..].to_vec();
    for _ in 0..16 {
        let mut m: Vec<String> = Vec::new();
        let mut rest = 0;
        for (k, seg) in path.iter().enumerate() {
            let mut child = m.clone();
            child.push(seg.clone());
            if modules.contains(&child) {
                m = child;
                rest = k + 1;
            } else {
                break;
            }
        }
        let Some(name) = path.get(rest) else {
            return Some(m);
        };
        match imports.get(&m).and_then(|i| i.get(name)) {
            Some(target) if target.first().is_some_and(|s| s == "crate") => {
                let mut next: Vec<String> = target[1..].to_vec();
                next.extend(path[rest + 1..].iter().cloned());
                if next == path {
                    return Some(m);
                }
                path = next;
            }
            // Another crate's item, or one defined here.
            Some(_) => return None,
            None => return Some(m),
        }
    }
    None
}

/// Scans `text` as if it were the file `rel` of module `module` (for testing the rules).
pub fn scan_text(
    text: &str,
    module: &[String],
    modules: &BTreeSet<Vec<String>>,
    rel: &str,
) -> SourceFile {
    let scanned = scan(text, module, modules);
    SourceFile {
        rel: PathBuf::from(rel),
        module: module.to_vec(),
        paths: scanned.paths,
        imports: scanned.imports,
    }
}
