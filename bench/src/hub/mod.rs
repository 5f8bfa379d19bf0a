//! `tandem-bench hub` (make bench-hub): the hub in one run.
//!
//! - (a) [`transport`]: QUIC vs TCP + TLS 1.3, transport only, same framing and runtime flavour.
//! - (b) [`batching`]: hub throughput with 64 simulated devices, dynamic batching on vs off.
//! - (c) [`rest`]: the hub's OIP v2 REST endpoint vs the Triton peer at concurrency 8.
//!
//! Systems are interleaved in rounds within each part; a part whose peer is missing prints a
//! `skipped: reason` row. The last line is `hub-batching-speedup: X`, from (b).
//!
//! # Layout
//! - [`certs`]: a temporary hub PKI and the client/server TLS configurations.
//! - [`framing`]: the wire framing over any byte stream (transport benchmark).
//! - [`http1`]: a minimal HTTP/1.1 keep-alive load client (REST benchmark).
//! - [`transport`], [`batching`], [`rest`]: the three parts.
//! - [`report`]: the tables and the targets.

mod batching;
pub(crate) mod certs;
mod framing;
mod http1;
mod report;
mod rest;
mod transport;

pub(crate) use batching::fashion_inputs;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Parts to run (transport, batching, rest).
    #[arg(long, value_delimiter = ',', default_value = "transport,batching,rest")]
    parts: Vec<String>,
    /// Interleaved rounds per part.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// (a) Measured seconds per transport mode (split over the rounds).
    #[arg(long, default_value_t = 5.0)]
    transport_seconds: f64,
    /// (a) Request frame size, bytes.
    #[arg(long, default_value_t = 1024)]
    request_bytes: usize,
    /// (a) UDP socket buffers for QUIC (SO_SNDBUF/SO_RCVBUF), bytes; 0: the OS default.
    #[arg(long, default_value_t = 0)]
    udp_buffer_bytes: usize,
    /// (a) Ack-frequency extension threshold for QUIC (ack-eliciting packets before an ACK is
    /// due); omitted: RFC 9000 behaviour.
    #[arg(long)]
    ack_threshold: Option<u32>,
    /// (a) UDP generic segmentation offload for QUIC (quinn's default, as the hub runs it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    gso: bool,
    /// (a) Path MTU discovery for QUIC (quinn's default, as the hub runs it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    mtu_discovery: bool,
    /// (b) Measured seconds per configuration for vision-fashion (split over the rounds).
    #[arg(long, default_value_t = 10.0)]
    batch_seconds: f64,
    /// (b) Measured seconds per configuration for the text model; 0 skips it.
    #[arg(long, default_value_t = 24.0)]
    text_seconds: f64,
    /// (b) Interleaved rounds for the text model (longer rounds: its answers take seconds
    /// under 64 devices).
    #[arg(long, default_value_t = 4)]
    text_rounds: u32,
    /// (b) Simulated devices (one QUIC connection and certificate each).
    #[arg(long, default_value_t = 64)]
    devices: usize,
    /// (b) Thread layouts, WxT = engine workers (sessions) x ONNX Runtime intra-op threads
    /// each. The first (the hub's defaults) gives the headline and is the one the text model
    /// uses; vision-fashion is measured in every layout.
    #[arg(long, value_delimiter = ',', default_value = "1x2,2x1")]
    layouts: Vec<Layout>,
    /// (b, c) Largest batch when batching is on.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// (b) The hubs' tokio runtime: `multi` (multi-thread, one worker per core, as
    /// `tandem-hub run` builds it) or `current` (current-thread).
    #[arg(long, default_value = "multi", value_parser = ["multi", "current"])]
    hub_runtime: String,
    /// (b) Longest wait to fill a batch, microseconds.
    #[arg(long, default_value_t = 2000)]
    batch_delay_us: u64,
    /// (b, c) Microseconds an engine worker polls for its next request before sleeping
    /// (`engine.spin_us`; the hub default is 100).
    #[arg(long, default_value_t = 100)]
    spin_us: u64,
    /// (c) Measured seconds per server (split over the rounds).
    #[arg(long, default_value_t = 10.0)]
    rest_seconds: f64,
    /// (c) Concurrent HTTP clients.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// (c) Longest wait to fill a batch, microseconds, for both the hub and Triton. With 8
    /// clients and a largest batch of 16 a batch never fills, so any delay is only waited
    /// out; 0 batches what queued while the previous batch ran (both servers do best there).
    #[arg(long, default_value_t = 0)]
    rest_batch_delay_us: u64,
    /// (c) Thread layout for both the hub (workers x intra-op threads) and Triton (instances x
    /// intra-op threads); 2x1 is the faster layout for both at concurrency 8.
    #[arg(long, default_value = "2x1")]
    rest_layout: Layout,
}

/// Engine workers (sessions) x intra-op threads per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `engine.workers`.
    pub workers: usize,
    /// `runtime.intra_op_threads`.
    pub threads: usize,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: expected WORKERSxTHREADS, e.g. 1x2");
        let (w, t) = s.split_once('x').ok_or_else(bad)?;
        let (workers, threads) = (w.parse().map_err(|_| bad())?, t.parse().map_err(|_| bad())?);
        if workers == 0 || threads == 0 {
            return Err(bad());
        }
        Ok(Self { workers, threads })
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}w x {}t", self.workers, self.threads)
    }
}

impl Args {
    fn tuning(&self) -> transport::Tuning {
        transport::Tuning {
            udp_buffer_bytes: (self.udp_buffer_bytes > 0).then_some(self.udp_buffer_bytes),
            gso: self.gso,
            mtu_discovery: self.mtu_discovery,
            ack_eliciting_threshold: self.ack_threshold,
        }
    }

    fn part(&self, name: &str) -> bool {
        self.parts.iter().any(|p| p == name)
    }
}

/// Runs the parts and prints the tables; the last line is `hub-batching-speedup: X`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let repo = crate::procs::repo()?;
    let transport = a.part("transport").then(|| {
        eprintln!("== (a) transport, QUIC knobs: {:?}", a.tuning());
        transport::measure_all(a.transport_seconds, a.rounds, a.request_bytes, a.tuning())
    });
    if let Some(t) = &transport {
        report::transport(t);
    }
    let batching = if a.part("batching") {
        Some(batching::measure(&repo, a)?)
    } else {
        None
    };
    if let Some(b) = &batching {
        report::batching(b);
    }
    let rest = a.part("rest").then(|| rest::measure(&repo, a));
    if let Some(r) = &rest {
        report::rest(r, a.concurrency);
    }
    report::targets(transport.as_ref(), batching.as_ref(), rest.as_ref());
    Ok(())
}
