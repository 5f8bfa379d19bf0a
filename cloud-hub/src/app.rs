//! `tandem-hub run`: serve the health and metrics endpoints until SIGTERM/SIGINT.

use crate::config::Config;
use axum::Router;
use axum::routing::get;
use std::net::SocketAddr;

/// Serves until a signal.
pub async fn run(cfg: Config) -> std::io::Result<()> {
    let addr: SocketAddr = cfg
        .http
        .listen
        .parse()
        .map_err(|e| std::io::Error::other(format!("http.listen: {e}")))?;
    let app = Router::new()
        .route("/v2/health/live", get(|| async { "{\"live\":true}" }))
        .route(
            "/metrics",
            get(|| async { "# tandem-hub: no metrics yet\n" }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(listen = %listener.local_addr()?, "tandem-hub serving (skeleton)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        })
        .await
}
