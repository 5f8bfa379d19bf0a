//! The table of `tandem-bench fleet`, the hub's caps, the target; `fleet-reconnect-s: N` last.

use super::device::{AFTER, COLD, OUTAGE, Outcome, STEADY};
use super::hub::{HubSpec, Sample};
use super::stats::{cpu_percent, increments, peak_window, time_to_fraction};
use super::{Args, Measured};

/// Target: every device answered again within this many seconds of the hub being ready.
const TARGET_S: f64 = 10.0;

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_string(), |s| format!("{s:.2} s"))
}

/// Prints the report; `raised`: the hub's default connection cap was below the fleet.
pub fn print(a: &Args, spec: &HubSpec, raised: bool, m: &Measured) {
    let n = m.back_s.len();
    let l = &spec.limits;
    println!();
    println!(
        "fleet: {n} devices (own certificate and QUIC connection each, the agent's uplink and \
         backoff), {} every {} ms each; hub killed (SIGKILL) and restarted after {} ms",
        super::hub::MODEL,
        a.interval_ms,
        a.down_ms
    );
    println!(
        "hub caps [quic.limits]: max_handshakes={} handshake_timeout_ms={} max_connections={} \
         max_connections_per_device={} max_streams_per_connection={} ({})",
        l.max_handshakes,
        l.handshake_timeout_ms,
        l.max_connections,
        l.max_connections_per_device,
        l.max_streams_per_connection,
        if raised {
            "max_connections raised from the default to admit the fleet; the rest the hub's defaults"
        } else if a.max_connections.is_some() {
            "max_connections from --max-connections; the rest the hub's defaults"
        } else {
            "the hub's defaults"
        }
    );
    let back99 = time_to_fraction(&m.back_s, n, 0.99);
    let back100 = time_to_fraction(&m.back_s, n, 1.0);
    let never = m.back_s.iter().filter(|b| b.is_none()).count();
    let (opened, full) = &m.client_bins;
    // The restarted hub's samples, from readiness to the end of the measurement.
    let after: Vec<&Sample> = m
        .samples
        .iter()
        .filter(|s| s.t >= m.ready_t - 0.1 && s.t <= m.end_t)
        .collect();
    let before = m.samples.iter().rfind(|s| s.t < m.kill_t);
    let metrics = after.iter().any(|s| s.metrics);
    let accepted = increments(
        &after
            .iter()
            .filter(|s| s.metrics)
            .map(|s| s.accepted)
            .collect::<Vec<_>>(),
    );
    let last = after.iter().rfind(|s| s.metrics);
    let cpu: Vec<(f64, f64)> = after.iter().map(|s| (s.t, s.cpu_s)).collect();
    let (cpu_peak, cpu_mean) = cpu_percent(&cpu, 0.5);
    let rss_peak = after.iter().map(|s| s.rss_mib).fold(f64::NAN, f64::max);
    let c = |phase: usize, o: Outcome| m.shared.count(phase, o);
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| cold start: every device answered, after the hub was ready | {} |",
        secs(m.cold_s)
    );
    println!(
        "| restart: SIGKILL to the hub ready again | {:.2} s |",
        m.restart_s
    );
    println!(
        "| devices answered again, 99% / 100%, after ready | {} / {} |",
        secs(back99),
        secs(back100)
    );
    println!(
        "| devices not back within {:.0} s (lost) | {never} |",
        a.window_s
    );
    println!(
        "| client: connections opened, peak per 100 ms (x10 = /s) / busiest second | {} ({}/s) / {} |",
        peak_window(opened, 1),
        peak_window(opened, 1) * 10,
        peak_window(opened, 10)
    );
    println!(
        "| client: full handshakes, peak per 100 ms (x10 = /s) / busiest second | {} ({}/s) / {} |",
        peak_window(full, 1),
        peak_window(full, 1) * 10,
        peak_window(full, 10)
    );
    if metrics {
        println!(
            "| hub /metrics: handshakes accepted, peak per 100 ms (x10 = /s) / busiest second | {} ({}/s) / {} |",
            peak_window(&accepted, 1),
            peak_window(&accepted, 1) * 10,
            peak_window(&accepted, 10)
        );
        println!(
            "| hub /metrics: handshakes in progress, peak (cap {}) | {} |",
            l.max_handshakes,
            after.iter().map(|s| s.handshakes_now).max().unwrap_or(0)
        );
        println!(
            "| hub /metrics: refused over max_handshakes / over max_connections | {} / {} |",
            last.map_or(0, |s| s.refused_handshakes),
            last.map_or(0, |s| s.refused_connections)
        );
    } else {
        println!("| hub /metrics | not readable (no loopback access) |");
    }
    println!(
        "| hub CPU during the reconnect, peak (0.5 s) / mean, % of one core | {cpu_peak:.0} / {cpu_mean:.0} |"
    );
    println!(
        "| hub RSS before the kill / peak during the reconnect | {:.0} MiB / {rss_peak:.0} MiB |",
        before.map_or(f64::NAN, |s| s.rss_mib)
    );
    for (phase, name) in [
        (COLD, "cold start, until every device answered"),
        (STEADY, "steady, before the kill"),
        (OUTAGE, "outage: kill until all back + 1 s"),
        (AFTER, "after, 2 s"),
    ] {
        println!(
            "| requests {name}: answered / degraded (local) / failed | {} / {} / {} |",
            c(phase, Outcome::Answered),
            c(phase, Outcome::Degraded),
            c(phase, Outcome::Failed)
        );
    }
    let failed: u64 = [COLD, STEADY, OUTAGE, AFTER]
        .iter()
        .map(|&p| c(p, Outcome::Failed))
        .sum();
    let met = back100.is_some_and(|s| s <= TARGET_S) && failed == 0;
    println!();
    println!(
        "target: every device answered again within {TARGET_S:.0} s of the hub being ready, no \
         request failed, none lost: {}",
        if met { "met" } else { "missed" }
    );
    println!(
        "fleet-reconnect-s: {}",
        back100.map_or_else(|| "inf".to_string(), |s| format!("{s:.2}"))
    );
}
