//! CPU time and resident memory of this process for MQTT telemetry: the same reading as the
//! `process_*` families of `/metrics` (zeros where `/proc` cannot tell).

use tandem_shared::mqtt::ProcessStats;

/// CPU seconds (user + system) and resident bytes now.
pub fn stats() -> ProcessStats {
    let s = tandem_engine::daemon::process::sample();
    ProcessStats {
        cpu_s: s.cpu_seconds.unwrap_or(0.0),
        rss_bytes: s.resident_bytes.unwrap_or(0),
    }
}
