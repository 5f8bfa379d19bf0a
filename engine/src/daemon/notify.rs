//! The systemd notification protocol (sd_notify(3)): one datagram per state change to the
//! Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract one). Without the
//! variable (not started by systemd with `Type=notify`) every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` names no usable address.
    #[error("NOTIFY_SOCKET `{addr}`: {source}")]
    Address {
        /// The value.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Sending the datagram failed.
    #[error("notify socket `{addr}`: {source}")]
    Send {
        /// The value of `$NOTIFY_SOCKET`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Sends state changes to the service manager.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `$NOTIFY_SOCKET` when set and not empty.
    addr: Option<String>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (nothing is sent without it).
    pub fn from_env() -> Self {
        Self {
            addr: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|a| !a.is_empty()),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) as one datagram.
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        let Some(addr) = &self.addr else {
            return Ok(());
        };
        let target = socket_addr(addr).map_err(|source| NotifyError::Address {
            addr: addr.clone(),
            source,
        })?;
        let send = || -> std::io::Result<()> {
            let sock = UnixDatagram::unbound()?;
            sock.send_to_addr(state.as_bytes(), &target)?;
            Ok(())
        };
        send().map_err(|source| NotifyError::Send {
            addr: addr.clone(),
            source,
        })
    }

    /// Sends `state`; a failure is logged (the daemon keeps running: systemd then times the
    /// start or the watchdog out, which is the right outcome).
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(error = %e, state, "service manager notification failed");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping");
    }
}

fn socket_addr(addr: &str) -> std::io::Result<SocketAddr> {
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::Builder::new()
            .prefix("tandem-notify-")
            .tempdir()
            .expect("tmp");
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier {
            addr: Some(path.display().to_string()),
        };
        n.ready("serving");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn abstract_names_and_errors() {
        let name = format!("tandem-notify-test-{}", std::process::id());
        let addr = {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract")
        };
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        let n = Notifier {
            addr: Some(format!("@{name}")),
        };
        n.send("WATCHDOG=1").expect("sent");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        let gone = Notifier {
            addr: Some("/nonexistent/notify.sock".into()),
        };
        assert!(matches!(
            gone.send("READY=1"),
            Err(NotifyError::Send { .. })
        ));
        assert!(Notifier::default().send("READY=1").is_ok());
    }
}
