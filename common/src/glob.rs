//! Glob patterns for op, module and step names in rule files, and for GPU names in sweep selectors,
//! compiled once with rust-lang's `glob` crate.
//!
//! The syntax is `glob::Pattern`'s: `*` any run (names are not paths, so `*` crosses `/` too), `?` one
//! character, `[abc]`/`[!a-z]` classes, `[?]` for a literal `?`. Matching is case-sensitive and covers the
//! whole name. (`globset` was the first choice; its `?` matches one byte, so `?` would not match a
//! non-ASCII character of a name.)

use glob::{MatchOptions, Pattern};

/// Names are not paths: `*` and `?` match `/` and a leading `.` like any other character.
const OPTIONS: MatchOptions =
    MatchOptions { case_sensitive: true, require_literal_separator: false, require_literal_leading_dot: false };

/// A pattern that does not compile (an unclosed `[` or `{`, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("glob pattern {pattern:?}: {reason}")]
pub struct GlobError {
    pattern: String,
    reason: String,
}

/// A list of patterns, matched as one: a name matches when any pattern does.
#[derive(Debug, Clone)]
pub struct Patterns {
    sources: Vec<String>,
    compiled: Vec<Pattern>,
}

impl Patterns {
    /// Compiles `patterns`.
    ///
    /// # Errors
    /// The first pattern that does not compile, with globset's reason.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, GlobError> {
        let compiled = patterns.iter().map(|p| compile(p.as_ref())).collect::<Result<_, _>>()?;
        Ok(Self { sources: patterns.iter().map(|p| p.as_ref().to_string()).collect(), compiled })
    }

    /// Whether any pattern matches the whole of `name`.
    pub fn is_match(&self, name: &str) -> bool {
        self.compiled.iter().any(|p| p.matches_with(name, OPTIONS))
    }

    /// The patterns as written.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

impl Default for Patterns {
    /// No pattern: matches nothing.
    fn default() -> Self {
        Self { sources: Vec::new(), compiled: Vec::new() }
    }
}

impl TryFrom<Vec<String>> for Patterns {
    type Error = GlobError;

    fn try_from(v: Vec<String>) -> Result<Self, GlobError> {
        Self::new(&v)
    }
}

impl<'de> serde::Deserialize<'de> for Patterns {
    /// A list of pattern strings; a pattern that does not compile is an error at its place in the file.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        Self::new(&v).map_err(serde::de::Error::custom)
    }
}

fn compile(pattern: &str) -> Result<Pattern, GlobError> {
    Pattern::new(pattern).map_err(|e| GlobError { pattern: pattern.to_string(), reason: e.msg.to_string() })
}

/// Whether `name` matches the one `pattern` (a sweep's GPU selector).
///
/// # Errors
/// The pattern does not compile.
pub fn matches(pattern: &str, name: &str) -> Result<bool, GlobError> {
    Ok(compile(pattern)?.matches_with(name, OPTIONS))
}

/// Whether a sweep's GPU selector picks the GPU named `name`: an empty selector picks every GPU. The
/// coordinator (which agents a sweep goes to) and the agent (which of its GPUs a job takes) ask alike.
///
/// # Errors
/// The selector does not compile.
pub fn selects_gpu(selector: &str, name: &str) -> Result<bool, GlobError> {
    if selector.is_empty() { Ok(true) } else { matches(selector, name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        matches(pattern, name).expect("compiles")
    }

    #[test]
    fn globs() {
        assert!(m("aten::linear", "aten::linear"));
        assert!(!m("aten::linear", "aten::linear_"));
        assert!(m("*rotary*", "_C::rotary_embedding"));
        assert!(m("ProfilerStep#*", "ProfilerStep#12"));
        assert!(m("*DecoderLayer", "LlamaDecoderLayer"));
        assert!(!m("*DecoderLayer", "LlamaDecoderLayerX"));
        assert!(m("a?c", "abc"));
        assert!(m("*", ""));
        assert!(!m("?", ""));
        assert!(m("?x", "éx"));
        assert!(m("*é*", "aéb"));
        assert!(!m("a*b", "ab_"));
        assert!(m("NVIDIA H200*", "NVIDIA H200 NVL"));
        assert!(m("*/*", "a/b"));
        assert!(m("aten::[bm]mm", "aten::bmm"));
    }

    #[test]
    fn a_list_matches_when_any_pattern_does_and_bad_patterns_say_which() {
        let p = Patterns::new(&["aten::mm", "*flash*"]).expect("compiles");
        assert!(p.is_match("aten::mm") && p.is_match("_vllm_fa3_C::flash_fwd") && !p.is_match("aten::bmm"));
        assert!(!Patterns::default().is_match(""));
        let e = Patterns::new(&["ok", "aten::[mm"]).expect_err("unclosed class");
        assert!(e.to_string().starts_with("glob pattern \"aten::[mm\": "), "{e}");
    }
}
