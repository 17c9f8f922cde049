//! Glob patterns (`*` any run, `?` one character) for op, module and step names in rule files.

/// Whether `name` matches `pattern`. Matching is case-sensitive and covers the whole name.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let (mut pi, mut si) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether any pattern of the list matches.
pub fn any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("aten::linear", "aten::linear"));
        assert!(!matches("aten::linear", "aten::linear_"));
        assert!(matches("*rotary*", "_C::rotary_embedding"));
        assert!(matches("ProfilerStep#*", "ProfilerStep#12"));
        assert!(matches("*DecoderLayer", "LlamaDecoderLayer"));
        assert!(!matches("*DecoderLayer", "LlamaDecoderLayerX"));
        assert!(matches("a?c", "abc"));
        assert!(matches("*", ""));
        assert!(!matches("?", ""));
    }
}
