//! Identity rotation on the hub link: after a renewal the link switches to the new certificate
//! without failing a request. New connections use the new identity at once; a connection made
//! with it replaces the current one; requests in flight on the old connection finish there
//! (quinn closes it when its last handle, theirs, is dropped).

use super::config::{HubConfig, client_config};
use super::quic::{Uplink, UplinkError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

impl Uplink {
    /// Reads the TLS identity from `cfg`'s files again (a renewed certificate and key) and
    /// moves the link onto it. On error the link keeps its current identity.
    pub async fn reload_identity(
        &self,
        cfg: &HubConfig,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<(), UplinkError> {
        let client = client_config(cfg, resolve)?;
        *self
            .client
            .lock()
            .map_err(|_| UplinkError::Setup("client configuration lock".into()))? = client;
        let mut why = Vec::new();
        let mut made = None;
        for addr in self.hub.resolve().await.map_err(UplinkError::Unreachable)? {
            match tokio::time::timeout(self.timeout(), self.connect_to(addr)?).await {
                Ok(Ok(c)) => {
                    made = Some(c);
                    break;
                }
                Ok(Err(e)) => why.push(format!("{addr}: {e}")),
                Err(_) => why.push(format!("{addr}: connect timed out")),
            }
        }
        let conn = made.ok_or_else(|| UplinkError::Unreachable(why.join("; ")))?;
        let old = {
            let mut s = self
                .state
                .lock()
                .map_err(|_| UplinkError::Unreachable("state".into()))?;
            s.established = Arc::new(AtomicBool::new(true));
            s.suspect = None;
            s.retry_at = None;
            s.conn.replace(conn)
        };
        self.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(hub = %self.hub, "hub link moved to the renewed certificate");
        // Dropped here: the old connection lives on while requests in flight hold it.
        drop(old);
        Ok(())
    }
}
