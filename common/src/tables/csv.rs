//! RFC 4180 quoting: kernel names are full of commas (`elementwise_kernel<4, ...>`).

use std::borrow::Cow;

/// Quotes a CSV field when it holds a comma, quote or line break.
pub fn field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn quoting() {
        assert_eq!(field("nvjet_sm90"), "nvjet_sm90");
        assert_eq!(field("k<4, x>"), "\"k<4, x>\"");
        assert_eq!(field("a\"b"), "\"a\"\"b\"");
    }
}
