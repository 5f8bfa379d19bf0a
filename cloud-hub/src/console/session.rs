//! The console's sessions: server-side, in memory. A successful login (`POST /console/login`
//! with an operator's credentials) makes a random 256-bit session id, handed to the browser
//! once in the [`COOKIE`] cookie (`HttpOnly; SameSite=Strict; Path=/`, `Secure` when the API
//! is HTTPS) and kept here only as its SHA-256 digest with the operator's name and its expiry.
//!
//! Invariants: a session lives [`SESSION_TTL`] from its login (absolute, not sliding), or until
//! logout or the hub stops (nothing is persisted: a restart logs everybody out); at most
//! [`MAX_SESSIONS`] are held, and a login beyond that drops the expired ones, then the oldest.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "tandem_console";

/// How long a session lasts from its login.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Most sessions held at once (oldest dropped first beyond it).
pub const MAX_SESSIONS: usize = 1024;

/// Why a session cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No random source for the session id.
    #[error("no random source for a console session id: {0}")]
    Random(String),
}

#[derive(Debug, Clone)]
struct Session {
    operator: String,
    created: Instant,
}

/// The sessions held.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    held: Mutex<HashMap<[u8; 32], Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_ttl(SESSION_TTL)
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Sessions that last `ttl` (tests shorten it).
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A new session for `operator`: its id (64 hex characters), for the cookie.
    pub fn create(&self, operator: &str) -> Result<String, SessionError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| SessionError::Random(e.to_string()))?;
        let id = hex::encode(secret);
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= MAX_SESSIONS {
            held.retain(|_, s| now.duration_since(s.created) < self.ttl);
        }
        while held.len() >= MAX_SESSIONS {
            let oldest = held.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k);
            match oldest {
                Some(k) => held.remove(&k),
                None => break,
            };
        }
        held.insert(
            digest(&id),
            Session {
                operator: operator.to_string(),
                created: now,
            },
        );
        Ok(id)
    }

    /// The operator of a live session id (an expired one is dropped).
    pub fn operator(&self, id: &str) -> Option<String> {
        let key = digest(id);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let s = held.get(&key)?;
        if s.created.elapsed() < self.ttl {
            return Some(s.operator.clone());
        }
        held.remove(&key);
        None
    }

    /// Ends a session (logout); whether it was held.
    pub fn remove(&self, id: &str) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&digest(id)).is_some()
    }

    /// Sessions held (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seconds a session lasts, for the cookie's `Max-Age`.
    pub fn ttl_s(&self) -> u64 {
        self.ttl.as_secs()
    }
}

/// The session id in a request's `Cookie` headers, if any.
pub fn cookie_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that hands `id` to the browser (`None`: clears it).
pub fn set_cookie(id: Option<&str>, ttl_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => {
            format!("{COOKIE}={id}; Path=/; Max-Age={ttl_s}; HttpOnly; SameSite=Strict{secure}")
        }
        None => format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, header};

    #[test]
    fn sessions_expire_end_and_stay_bounded() {
        let s = Sessions::default();
        let id = s.create("token").expect("id");
        assert_eq!(id.len(), 64);
        assert_eq!(s.operator(&id).as_deref(), Some("token"));
        assert_eq!(s.operator(&id[1..]), None);
        assert!(s.remove(&id));
        assert_eq!(s.operator(&id), None);

        let short = Sessions::with_ttl(Duration::ZERO);
        let id = short.create("alice").expect("id");
        assert_eq!(short.operator(&id), None, "expired");
        assert!(short.is_empty(), "dropped when found expired");

        let first = s.create("first").expect("id");
        for _ in 0..MAX_SESSIONS {
            s.create("more").expect("id");
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.operator(&first), None, "the oldest went first");
    }

    #[test]
    fn reads_and_writes_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie_of(&h), None);
        h.append(
            header::COOKIE,
            "a=1; tandem_console=abc; b=2".parse().expect("v"),
        );
        assert_eq!(cookie_of(&h), Some("abc"));
        let c = set_cookie(Some("abc"), 60, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie(Some("abc"), 60, false).contains("Secure"));
        assert!(set_cookie(None, 60, false).contains("Max-Age=0"));
    }
}
