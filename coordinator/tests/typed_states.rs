//! Sweep states, job states, event kinds, placements and modes are enums; their words appear as string
//! literals only where an enum converts to text (the SQL columns in `store/states.rs`, the manifest's
//! point states in `parse/outcome.rs`; the proto and common crates hold the others). A literal anywhere
//! else is a state compared as a string again, and fails here with its file and line. JSON keys
//! (`"trace": ...`) and comments are not states.

use std::path::Path;

mod common;
use common::sources;

/// The words of every state and kind enum, as earlier versions spelled them.
const WORDS: [&str; 21] = [
    "running",
    "completed",
    "failed",
    "cancelled", // sweep states
    "assigned",
    "done",
    "reassigned", // job states (and failed, cancelled)
    "status",
    "progress",
    "trace",
    "job_done",
    "job_failed",
    "parse_failed",
    "point_failed",
    "point_retry",
    "spread",
    "each", // placements
    "decode",
    "prefill",
    "unknown", // modes
    "unspecified",
];

/// Where the words may appear: the conversions to and from text.
const CONVERSIONS: [&str; 2] = ["store/states.rs", "parse/outcome.rs"];

/// The state words used as string literals in `line` (not as JSON keys, not in a comment).
fn literals(line: &str) -> Vec<&'static str> {
    let code = line.split("//").next().unwrap_or("");
    WORDS
        .iter()
        .filter(|w| {
            let lit = format!("\"{w}\"");
            code.match_indices(&lit).any(|(i, _)| !code[i + lit.len()..].trim_start().starts_with(':'))
        })
        .copied()
        .collect()
}

#[test]
fn states_and_kinds_are_not_strings() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap_or(&f).to_string_lossy().replace('\\', "/");
        if CONVERSIONS.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (n, line) in text.lines().enumerate() {
            for w in literals(line) {
                found.push(format!("{rel}:{}: \"{w}\": {}", n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "state or kind words as strings outside the enum conversions:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_literal_and_lets_keys_and_comments_be() {
    assert_eq!(literals(r#"if s.state == "running" {"#), ["running"]);
    assert!(literals(r#"json!({"trace": name})"#).is_empty());
    assert!(literals(r#"// the answer says "cancelled""#).is_empty());
}
