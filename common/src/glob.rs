//! Glob patterns (`*` any run, `?` one character) for op, module and step names in rule files.

/// Length in bytes of the UTF-8 character that starts with `b`.
fn char_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Whether `name` matches `pattern`. Matching is case-sensitive, covers the whole name, and allocates
/// nothing (it runs for every op of every step).
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut si) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'?' {
            pi += 1;
            si += char_len(s[si]);
        } else if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += char_len(s[mark]);
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len() && si == s.len()
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
        assert!(matches("?x", "éx"));
        assert!(matches("*é*", "aéb"));
        assert!(!matches("a*b", "ab_"));
    }
}
