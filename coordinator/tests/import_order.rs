//! Data and imports flow one way through the coordinator: store → state → parse → schedule → server →
//! cli. Every `crate::` path in a module may name only modules below it (or itself); an upward edge is a
//! circle in the making and fails here, naming the file and line.

use std::path::Path;

mod common;
use common::sources;

/// The top-level modules, lowest first.
const ORDER: [&str; 6] = ["store", "state", "parse", "schedule", "server", "cli"];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|m| *m == module)
}

/// The modules named by `crate::NAME` in a line.
fn crate_refs(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .filter(|(i, _)| !line[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            let rest = &line[i + m.len()..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn imports_only_go_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut edges = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap_or(f);
        let top = rel.components().next().map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string());
        let top = top.unwrap_or_default();
        if top == "lib" || top == "main" {
            continue; // above every module
        }
        let Some(from) = rank(&top) else {
            panic!("{}: module `{top}` has no place in {ORDER:?}: add it where its imports put it", rel.display());
        };
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for m in crate_refs(code) {
                let Some(to) = rank(m) else { continue };
                edges += 1;
                if to > from {
                    upward.push(format!("{}:{}: {} uses crate::{m}", rel.display(), n + 1, ORDER[from]));
                }
            }
        }
    }
    assert!(edges > 20, "the check read the sources ({edges} edges)");
    assert!(upward.is_empty(), "imports against the order {ORDER:?}:\n  {}", upward.join("\n  "));
}

#[test]
fn the_check_sees_an_upward_edge() {
    assert_eq!(crate_refs("use crate::server::{self, Config};"), ["server"]);
    assert_eq!(crate_refs("let x = tracefleet_crate::a; crate::parse::start(&c)"), ["parse"]);
    assert!(rank("server") > rank("schedule") && rank("state") < rank("parse"));
}
