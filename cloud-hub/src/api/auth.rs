//! Bearer-token authentication of the HTTP API.
//!
//! Tokens come from a file (`http.bearer_token_file`), one a line, and are kept only as SHA-256
//! digests. A presented token is hashed and compared with every digest in constant time, so
//! neither its content nor which token it nearly matched shows in the timing. A request
//! without a valid token gets 401 with `WWW-Authenticate: Bearer` and the JSON error body;
//! `/v2/health/live` stays open for probes.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tandem_engine::http::LIVE_PATH;

/// Shortest token accepted, in characters.
pub const MIN_TOKEN_CHARS: usize = 16;

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

/// The token of an `Authorization: Bearer TOKEN` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(message: &str, challenge: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// Middleware: lets a request with a valid bearer token (or to the liveness probe) through,
/// answers 401 otherwise.
pub async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == LIVE_PATH {
        return next.run(req).await;
    }
    match bearer(req.headers()) {
        Some(t) if tokens.accepts(t) => next.run(req).await,
        Some(_) => {
            tracing::debug!(path = %req.uri().path(), "invalid bearer token");
            unauthorized(
                "invalid bearer token",
                "Bearer realm=\"tandem-hub\", error=\"invalid_token\"",
            )
        }
        None => unauthorized(
            "this API needs a bearer token: send `Authorization: Bearer TOKEN` (http.bearer_token_file)",
            "Bearer realm=\"tandem-hub\"",
        ),
    }
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
