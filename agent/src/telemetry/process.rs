//! CPU time and resident memory of this process, from `/proc/self` (Linux); zeros elsewhere.

use tandem_shared::mqtt::ProcessStats;

/// CPU seconds (user + system) and resident bytes now.
pub fn stats() -> ProcessStats {
    ProcessStats {
        cpu_s: cpu_seconds().unwrap_or(0.0),
        rss_bytes: rss_bytes().unwrap_or(0),
    }
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces and parentheses): state is field 3,
    // utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages = statm.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::stats();
        assert!(s.rss_bytes > 1 << 20, "{s:?}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(super::stats().cpu_s > 0.0);
    }
}
