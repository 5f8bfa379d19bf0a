//! Broker addresses as configs spell them: `mqtts://HOST[:PORT]` (TLS is mandatory: identity
//! is the client certificate). The port defaults to 8883.

use std::fmt;

/// The MQTT-over-TLS port.
pub const DEFAULT_PORT: u16 = 8883;

/// A broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (without brackets); also the name the broker's certificate is
    /// checked against.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why a broker URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// `mqtt://` or another scheme.
    #[error("`{0}`: only mqtts:// (MQTT over TLS with client certificates) is supported")]
    Scheme(String),
    /// No host, a path, or a port that is not a number.
    #[error("`{0}` is not mqtts://HOST[:PORT]")]
    Malformed(String),
}

impl BrokerUrl {
    /// Parses `mqtts://HOST[:PORT]`; IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let Some(rest) = url.strip_prefix("mqtts://") else {
            return Err(UrlError::Scheme(url.to_string()));
        };
        let bad = || UrlError::Malformed(url.to_string());
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || (!rest.starts_with('[') && host.contains(':')) {
            return Err(bad());
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtts://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtts://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (url, host, port) in [
            ("mqtts://127.0.0.1:8884", "127.0.0.1", 8884),
            ("mqtts://broker.example", "broker.example", 8883),
            ("mqtts://localhost:1/", "localhost", 1),
            ("mqtts://[::1]:9000", "::1", 9000),
            ("mqtts://[::1]", "::1", 8883),
        ] {
            let u = BrokerUrl::parse(url).expect(url);
            assert_eq!((u.host.as_str(), u.port), (host, port));
            assert_eq!(BrokerUrl::parse(&u.to_string()), Ok(u));
        }
    }

    #[test]
    fn refuses_plain_and_malformed() {
        assert!(matches!(
            BrokerUrl::parse("mqtt://127.0.0.1:1883"),
            Err(UrlError::Scheme(_))
        ));
        for bad in [
            "mqtts://",
            "mqtts://:8883",
            "mqtts://h:0",
            "mqtts://h:x",
            "mqtts://h:8883/path",
            "mqtts://user@h",
            "mqtts://::1:8883",
            "mqtts://[::1]x",
        ] {
            assert!(
                matches!(BrokerUrl::parse(bad), Err(UrlError::Malformed(_))),
                "{bad}"
            );
        }
    }
}
