//! The tables of `tandem-bench hub` and the targets, measured in the same run; the headline
//! last.

use super::{batching, rest, transport};

/// (a): p50/p99/mean per mode and the ratio to TLS's p50, per machine condition.
pub fn transport(conditions: &[transport::Condition]) {
    println!();
    println!(
        "(a) transport only: 1 KiB request, small reply, one call at a time, current-thread runtimes"
    );
    println!(
        "| cores | mode | calls | p50 us | p99 us | mean us | p50 / TLS p50 | datagrams/call | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in conditions {
        let rows = match &c.rows {
            Ok(r) => r,
            Err(e) => {
                println!("| {} | skipped: {e:#} | | | | | | | |", c.name);
                continue;
            }
        };
        let tls = rows
            .get(transport::TLS)
            .map_or(f64::NAN, |r| r.stats.p50_us);
        for r in rows {
            println!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {} | {} |",
                c.name,
                r.mode,
                r.stats.n,
                r.stats.p50_us,
                r.stats.p99_us,
                r.stats.mean_us,
                r.stats.p50_us / tls,
                r.datagrams_per_call
                    .map_or_else(|| "-".to_string(), |d| format!("{d:.2}")),
                r.stats.errors
            );
        }
    }
}

/// (b): throughput, latency and mean batch per configuration.
pub fn batching(b: &batching::Outcome) {
    println!();
    println!("(b) hub throughput, simulated devices in a closed loop over QUIC + mTLS");
    println!(
        "| model | system | answers | req/s | vs unbatched | p50 ms | p99 ms | mean ms | mean batch | hub CPU us/req | busy | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for pair in b.rows.chunks(2) {
        let base = pair.last().map_or(f64::NAN, |u| u.stats.rps);
        for r in pair {
            println!(
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} |",
                r.model,
                r.system,
                r.stats.n,
                r.stats.rps,
                r.stats.rps / base,
                r.stats.p50_us / 1e3,
                r.stats.p99_us / 1e3,
                r.stats.mean_us / 1e3,
                r.mean_batch,
                r.hub_cpu_us_per_req,
                r.busy,
                r.stats.errors
            );
        }
    }
    for n in &b.notes {
        println!("{n}");
    }
}

/// (c): the hub's REST endpoint and Triton, or why either was skipped.
pub fn rest(r: &rest::Outcome, concurrency: usize) {
    println!();
    println!("(c) OIP v2 REST, vision-fashion cloud, concurrency {concurrency}");
    println!(
        "| system | calls | req/s | p50 ms | p99 ms | mean ms | mean batch | server CPU us/req | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &r.rows {
        match &row.result {
            Ok(s) => println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
                row.system,
                s.n,
                s.rps,
                s.p50_us / 1e3,
                s.p99_us / 1e3,
                s.mean_us / 1e3,
                row.mean_batch
                    .map_or_else(|| "-".to_string(), |b| format!("{b:.2}")),
                row.cpu_us_per_req
                    .map_or_else(|| "-".to_string(), |c| format!("{c:.0}")),
                s.errors
            ),
            Err(e) => println!("| {} | skipped: {e} | | | | | | | |", row.system),
        }
    }
    for n in &r.notes {
        println!("{n}");
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// The targets from the issue, then the headline.
pub fn targets(
    t: Option<&Vec<transport::Condition>>,
    b: Option<&batching::Outcome>,
    r: Option<&rest::Outcome>,
) {
    println!();
    println!("targets (measured in this run):");
    for c in t.into_iter().flatten() {
        let Ok(rows) = &c.rows else { continue };
        let p50 = |i: usize| rows.get(i).map_or(f64::NAN, |r| r.stats.p50_us);
        for (i, target) in [(0usize, 1.7), (1, 1.5)] {
            let x = p50(i) / p50(transport::TLS);
            println!(
                "  (a) {}, cores {}: p50 / TLS p50 = {x:.3} (target <= {target}): {}",
                transport::MODES[i],
                c.name,
                verdict(x <= target)
            );
        }
    }
    if let Some(b) = b {
        println!(
            "  (b) vision-fashion throughput batched / unbatched = {:.3} (target >= 1.3): {}",
            b.speedup,
            verdict(b.speedup >= 1.3)
        );
        println!(
            "  (b) vision-fashion p99 batched / unbatched = {:.3} (target <= 1.0): {}",
            b.p99_ratio,
            verdict(b.p99_ratio <= 1.0)
        );
        if let (Some(x), Some(u)) = (b.rows.first(), b.rows.get(1)) {
            println!(
                "      (hub CPU per answer unbatched / batched = {:.2}: the throughput ratio on cores \
                 the hub has to itself)",
                u.hub_cpu_us_per_req / x.hub_cpu_us_per_req
            );
        }
    }
    if let Some(r) = r {
        match r.ratio() {
            Some(x) => {
                println!(
                    "  (c) hub / Triton req/s = {x:.3} (target >= 1.5): {}",
                    verdict(x >= 1.5)
                );
                if let (Some(Some(h)), Some(Some(t))) = (
                    r.rows.first().map(|r| r.cpu_us_per_req),
                    r.rows.get(1).map(|r| r.cpu_us_per_req),
                ) {
                    println!("      (server CPU per request Triton / hub = {:.2})", t / h);
                }
            }
            None => println!("  (c) hub / Triton req/s: skipped (see the table)"),
        }
    }
    println!(
        "hub-batching-speedup: {:.2}",
        b.map_or(f64::NAN, |b| b.speedup)
    );
}
