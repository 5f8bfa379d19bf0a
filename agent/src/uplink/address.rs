//! `hub.address`: `HOST:PORT`, the host a DNS name or an IP address (`[v6]:PORT` for IPv6).
//! A name is resolved at each connect, and every address it resolves to is tried in turn; the
//! TLS server name defaults to the host.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A parsed `hub.address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    /// DNS name or IP address (IPv6 without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl HubAddress {
    /// Parses `HOST:PORT` or `[IPV6]:PORT`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{s}` is not HOST:PORT ({why})");
        let (host, port) = if let Some(v6) = s.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or_else(|| bad("[IPV6]:PORT"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address in brackets"))?;
            (host, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            if host.contains(':') {
                return Err(bad("an IPv6 address goes in brackets"));
            }
            let name_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && !host.starts_with(['-', '.']);
            if !name_ok {
                return Err(bad("the host is not a DNS name or an IP address"));
            }
            (host, port)
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port is not 1-65535"))?;
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The name the hub's certificate is checked against: `configured`, or the host when that
    /// is empty.
    pub fn server_name(&self, configured: &str) -> String {
        if configured.is_empty() {
            self.host.clone()
        } else {
            configured.to_string()
        }
    }

    /// Every address the host stands for now (an IP: itself; a name: a fresh lookup).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Some(ip) = self.ip() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{} resolves to no address", self.host));
        }
        Ok(addrs)
    }
}

impl fmt::Display for HubAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses() {
        for (s, host, port) in [
            ("127.0.0.1:4433", "127.0.0.1", 4433),
            ("hub.tandem.test:4433", "hub.tandem.test", 4433),
            ("[::1]:1", "::1", 1),
            ("hub:65535", "hub", 65535),
        ] {
            let a = HubAddress::parse(s).expect(s);
            assert_eq!((a.host.as_str(), a.port), (host, port));
            assert_eq!(a.to_string(), s);
        }
        for bad in [
            "hub",
            "hub:0",
            "hub:x",
            ":4433",
            "::1:4433",
            "[::1]4433",
            "[hub]:1",
            "hub_1:4433",
            "-hub:1",
        ] {
            assert!(HubAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_name_defaults_to_the_host() {
        let a = HubAddress::parse("hub.example:4433").expect("addr");
        assert_eq!(a.server_name(""), "hub.example");
        assert_eq!(a.server_name("other"), "other");
    }

    #[tokio::test]
    async fn resolves_at_each_call() {
        let a = HubAddress::parse("localhost:4433").expect("addr");
        let addrs = a.resolve().await.expect("localhost resolves");
        assert!(
            addrs
                .iter()
                .all(|s| s.ip().is_loopback() && s.port() == 4433)
        );
        let ip = HubAddress::parse("10.1.2.3:9").expect("addr");
        assert_eq!(
            ip.resolve().await.expect("an IP"),
            vec!["10.1.2.3:9".parse::<SocketAddr>().expect("addr")]
        );
    }
}
