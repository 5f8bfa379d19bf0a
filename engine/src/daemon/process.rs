//! This process as Prometheus's `process_*` families (the names its client libraries use, read
//! from `/proc/self` on Linux; absent elsewhere) and `tandem_build_info`, for both daemons'
//! `/metrics`. MQTT telemetry reads the same numbers through [`sample`].

use crate::exposition::write_sample;
use std::fmt::Write as _;

/// One reading of this process's resources; `None` where `/proc` could not tell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (`RLIMIT_NOFILE`).
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads `/proc/self/{stat,statm,fd}`, `/proc/stat` (boot time) and `RLIMIT_NOFILE` now.
pub fn sample() -> ProcessSample {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name (which may hold spaces and parentheses): state is field 3,
    // utime 14, stime 15, starttime 22 (clock ticks after boot).
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].split_whitespace().collect())
        })
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let ticks = |t: u64| (hz > 0.0).then(|| t as f64 / hz);
    let statm = std::fs::read_to_string("/proc/self/statm").ok();
    let pages = |n: usize| {
        statm
            .as_deref()
            .and_then(|s| s.split_whitespace().nth(n))
            .and_then(|p| p.parse::<u64>().ok())
            .map(|p| p * rustix::param::page_size() as u64)
    };
    let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    ProcessSample {
        cpu_seconds: field(14).zip(field(15)).and_then(|(u, s)| ticks(u + s)),
        resident_bytes: pages(1),
        virtual_bytes: pages(0),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds,
        start_time_seconds: field(22)
            .and_then(ticks)
            .zip(boot_time_seconds())
            .map(|(after_boot, boot)| boot as f64 + after_boot),
    }
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the Unix epoch.
fn boot_time_seconds() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Appends the `process_*` families (those `/proc` answered) and `tandem_build_info{version,
/// commit}` (value 1) to `out`.
pub fn render(out: &mut String, version: &str, commit: &str) {
    let s = sample();
    let families: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            s.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            s.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            s.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            s.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            s.max_fds.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            s.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in families {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
    out.push_str(
        "# HELP tandem_build_info The running build: version and git commit (value 1).\n\
         # TYPE tandem_build_info gauge\n",
    );
    write_sample(
        out,
        "tandem_build_info",
        &[("version", version), ("commit", commit)],
        1,
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::sample();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        assert!(s.resident_bytes.is_some_and(|b| b > 1 << 20), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(
            s.max_fds.is_some_and(|n| n >= s.open_fds.unwrap_or(0)),
            "{s:?}"
        );
        // Started before now and after boot (at most a day for a test binary).
        let start = s.start_time_seconds.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        // Burn CPU until the kernel's tick-grained counter shows some: on a loaded machine a
        // fixed short spin may be descheduled for all of its ticks.
        let spin = std::time::Instant::now();
        let mut cpu = super::sample().cpu_seconds;
        while !cpu.is_some_and(|c| c > 0.0) && spin.elapsed() < std::time::Duration::from_secs(20) {
            let busy = std::time::Instant::now();
            while busy.elapsed() < std::time::Duration::from_millis(10) {}
            cpu = super::sample().cpu_seconds;
        }
        assert!(cpu.is_some_and(|c| c > 0.0), "{cpu:?}");
        let mut out = String::new();
        super::render(&mut out, "0.1.0", "abc\"def");
        assert!(out.contains("tandem_build_info{version=\"0.1.0\",commit=\"abc\\\"def\"} 1"));
        assert!(out.contains("# TYPE process_open_fds gauge\nprocess_open_fds "));
    }
}
