//! Operator tokens, for organisations that prefer bearer tokens to operator certificates: a file of
//! `NAME TOKEN` lines (`#` starts a comment), read again when it changes. Only SHA-256 digests of the tokens
//! are kept in memory, and a presented token is looked up by its digest, so the lookup's timing says nothing
//! about the tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use tracefleet_common::wire::sha256;

/// A token file that cannot be used, naming the file and line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct TokenFileError {
    path: PathBuf,
    why: String,
}

/// The operator tokens of `coord serve --operator-tokens`.
#[derive(Debug)]
pub struct OperatorTokens {
    path: PathBuf,
    /// The file's contents when last read, to notice a change.
    seen: RwLock<Vec<u8>>,
    by_digest: RwLock<HashMap<[u8; 32], String>>,
}

/// Parses a token file: each line `NAME TOKEN`; blank lines and `#` comments skipped.
fn parse(path: &Path, text: &str) -> Result<HashMap<[u8; 32], String>, TokenFileError> {
    let err = |why: String| TokenFileError { path: path.to_path_buf(), why };
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err(format!("line {}: expected `NAME TOKEN`", i + 1)));
        };
        if token.len() < 16 {
            return Err(err(format!("line {}: the token of {name:?} is shorter than 16 characters", i + 1)));
        }
        if out.insert(sha256(token.as_bytes()), name.to_string()).is_some() {
            return Err(err(format!("line {}: a token given twice", i + 1)));
        }
    }
    if out.is_empty() {
        return Err(err("no tokens in the file".into()));
    }
    Ok(out)
}

impl OperatorTokens {
    /// Reads the file.
    ///
    /// # Errors
    /// The file is unreadable, empty, or has a line that is not `NAME TOKEN` (or a token under 16
    /// characters, or one given twice).
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let bytes = std::fs::read(path).map_err(|e| TokenFileError { path: path.to_path_buf(), why: e.to_string() })?;
        let map = parse(path, &String::from_utf8_lossy(&bytes))?;
        Ok(Self { path: path.to_path_buf(), seen: RwLock::new(bytes), by_digest: RwLock::new(map) })
    }

    /// The operator a token names, if any.
    pub fn name_of(&self, token: &str) -> Option<String> {
        self.by_digest.read().unwrap_or_else(|e| e.into_inner()).get(&sha256(token.as_bytes())).cloned()
    }

    /// Reads the file again if it changed; a file that does not parse leaves the tokens as they were.
    ///
    /// # Errors
    /// The changed file does not parse.
    pub fn reload_if_changed(&self) -> Result<bool, TokenFileError> {
        let Ok(bytes) = std::fs::read(&self.path) else { return Ok(false) };
        if *self.seen.read().unwrap_or_else(|e| e.into_inner()) == bytes {
            return Ok(false);
        }
        let map = parse(&self.path, &String::from_utf8_lossy(&bytes))?;
        *self.by_digest.write().unwrap_or_else(|e| e.into_inner()) = map;
        *self.seen.write().unwrap_or_else(|e| e.into_inner()) = bytes;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_names_its_operators_and_refuses_bad_lines() {
        let p = Path::new("tokens");
        let m = parse(p, "# operators\nalice 0123456789abcdef0123\n\nbob  fedcba9876543210fedc # ci\n").expect("parse");
        assert_eq!(m.get(&sha256(b"0123456789abcdef0123")).map(String::as_str), Some("alice"));
        assert_eq!(m.get(&sha256(b"fedcba9876543210fedc")).map(String::as_str), Some("bob"));
        assert!(parse(p, "alice short\n").is_err_and(|e| e.to_string().contains("shorter than 16")));
        assert!(parse(p, "alice\n").is_err_and(|e| e.to_string().contains("line 1")));
        assert!(parse(p, "# nothing\n").is_err());
    }
}
