//! Operator bearer tokens of the HTTP API.
//!
//! Tokens come from files, one a line: the hub's own operator token file
//! ([`OPERATOR_TOKEN_FILE`] in the PKI folder, created 0600 by `tandem-hub init` or the first
//! `run`) and `http.bearer_token_file`. They are kept only as SHA-256 digests. A presented
//! token is hashed and compared with every digest in constant time, so neither its content nor
//! which token it nearly matched shows in the timing. Every token is an operator's
//! ([`super::gate`] decides what a request may do).

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Shortest token accepted, in characters.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The hub's operator token file, in its PKI folder.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// Why the token file cannot be used (the messages never quote a token).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// A line is not a usable token.
    #[error(
        "{path} line {line}: a token must be at least {MIN_TOKEN_CHARS} visible ASCII characters without spaces"
    )]
    BadToken {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// No token in the file.
    #[error("{0} holds no token (one a line; blank lines and `#` comments are ignored)")]
    Empty(PathBuf),
    /// The operator token file cannot be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// No random source for a new token.
    #[error("no random source for a new operator token: {0}")]
    Random(String),
}

/// The accepted tokens, as SHA-256 digests.
#[derive(Clone)]
pub struct Tokens(Vec<[u8; 32]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    /// Tokens from the text of a token file.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AuthError> {
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() < MIN_TOKEN_CHARS || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(AuthError::BadToken {
                    path: path.to_path_buf(),
                    line: i + 1,
                });
            }
            digests.push(digest(t.as_bytes()));
        }
        if digests.is_empty() {
            return Err(AuthError::Empty(path.to_path_buf()));
        }
        Ok(Self(digests))
    }

    /// Tokens from a token file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// These tokens and `other`'s.
    pub fn join(mut self, other: Self) -> Self {
        self.0.extend(other.0);
        self
    }

    /// The first token of a token file, for a client to present.
    pub fn first_in(path: &Path) -> Result<String, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)?;
        Ok(text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default()
            .to_string())
    }

    /// Whether `presented` is one of the tokens; constant time in the presented token and
    /// over every configured one.
    pub fn accepts(&self, presented: &str) -> bool {
        let d = digest(presented.as_bytes());
        let hit = self
            .0
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&d));
        bool::from(hit)
    }
}

/// Creates an operator token file with a new random token (256 bits, hex), mode 0600 from the
/// start; `Ok(false)` when the file exists already (it is left as it is).
pub fn create_token_file(path: &Path) -> Result<bool, AuthError> {
    let create = |source| AuthError::Create {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        return Ok(false);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| AuthError::Random(e.to_string()))?;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut file = open.open(path).map_err(create)?;
    let text = format!(
        "# tandem-hub operator token: `Authorization: Bearer TOKEN` on the hub's API\n{}\n",
        hex::encode(secret)
    );
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(create)?;
    file.sync_all().map_err(create)?;
    Ok(true)
}

/// The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_and_accepts_only_them() {
        let p = Path::new("tokens");
        let t = Tokens::parse(
            "# ops\n\n  0123456789abcdef  \nsecond-token-0123456789\n",
            p,
        )
        .expect("parses");
        assert!(t.accepts("0123456789abcdef"));
        assert!(t.accepts("second-token-0123456789"));
        assert!(!t.accepts("0123456789abcdeF"));
        assert!(!t.accepts("0123456789abcde"));
        assert!(!t.accepts(""));
        assert!(matches!(
            Tokens::parse("short\n", p),
            Err(AuthError::BadToken { line: 1, .. })
        ));
        assert!(matches!(
            Tokens::parse("# nothing\n", p),
            Err(AuthError::Empty(_))
        ));
        let err = Tokens::parse("0123456789abcdef\nhas space 0123456789\n", p).expect_err("space");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(
            !err.to_string().contains("0123"),
            "the message quotes no token: {err}"
        );
        assert_eq!(format!("{t:?}"), "Tokens(2 configured)");
    }

    #[test]
    fn a_new_operator_token_file_is_private_and_never_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(OPERATOR_TOKEN_FILE);
        assert!(create_token_file(&path).expect("create"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let token = Tokens::first_in(&path).expect("token");
        assert_eq!(token.len(), 64);
        assert!(Tokens::load(&path).expect("load").accepts(&token));
        assert!(!create_token_file(&path).expect("exists"));
        assert_eq!(Tokens::first_in(&path).expect("same"), token);
    }

    #[test]
    fn reads_the_bearer_scheme_case_insensitively() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer abc".parse().expect("value"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().expect("value"));
        assert_eq!(bearer(&h), None);
    }
}
