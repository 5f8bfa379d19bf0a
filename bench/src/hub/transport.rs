//! (a) Transport only, no inference: a request frame (1 KiB `InferRequest`) and a small reply
//! (`InferResponse`, ten logits) over QUIC (quinn + rustls, mutual TLS with the hub's own
//! server config, ALPN `tandem/1`) and over TCP + TLS 1.3 (tokio-rustls, the same certificates
//! and verifier), with the same `tandem_shared::wire` framing and the same server code.
//!
//! Server and client each run on their own thread with a tokio current-thread runtime (on two
//! contended cores a multi-thread runtime distorts QUIC badly: ../shared/notes/peers.md). One
//! client connection per mode, one call at a time; modes interleaved in rounds.
//!
//! Modes: QUIC with a new stream per request (the agent's uplink, the hub's ingress), QUIC with
//! one long-lived stream, TLS over one persistent TCP connection, and plain TCP (reference).
//!
//! Each set is measured twice: with the machine as it is, and with every core kept awake by a
//! `nice -n 19` busy loop. On an idle VM a vCPU halts between messages, and waking it (client
//! and server threads ping-pong across vCPUs) adds tens of microseconds per round trip to every
//! mode alike. With the cores awake, as on a loaded hub, what remains is the protocols' own
//! cost, so QUIC's overhead relative to TLS shows more there.

use super::certs::BenchPki;
use super::framing::{self, Framed, QuicDuplex};
use crate::stats::{Stats, summarise};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_shared::wire::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The modes, in table order.
pub const MODES: [&str; 4] = [
    "quic stream/request",
    "quic one stream",
    "tls1.3 persistent",
    "tcp plain (ref)",
];
/// Index of the baseline (TLS) in [`MODES`].
pub const TLS: usize = 2;

/// QUIC knobs, applied to both ends.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// UDP socket send and receive buffers (`SO_SNDBUF`/`SO_RCVBUF`); `None`: the OS default.
    pub udp_buffer_bytes: Option<usize>,
    /// UDP generic segmentation offload.
    pub gso: bool,
    /// Path MTU discovery (probe packets).
    pub mtu_discovery: bool,
    /// Ack-frequency extension: ack-eliciting packets a peer may receive before it must ACK
    /// (`None`: RFC 9000 behaviour, an ACK every second packet).
    pub ack_eliciting_threshold: Option<u32>,
}

impl Tuning {
    /// The hub's transport settings (stream limit, idle timeout) plus these knobs.
    pub fn transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(256u32.into());
        t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            30_000,
        ))));
        t.enable_segmentation_offload(self.gso);
        if !self.mtu_discovery {
            t.mtu_discovery_config(None);
        }
        if let Some(n) = self.ack_eliciting_threshold {
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(n.into());
            t.ack_frequency_config(Some(ack));
        }
        t
    }

    /// A UDP endpoint on loopback with these socket settings.
    pub fn endpoint(&self, server: Option<quinn::ServerConfig>) -> anyhow::Result<quinn::Endpoint> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        if let Some(b) = self.udp_buffer_bytes {
            sock.set_recv_buffer_size(b)?;
            sock.set_send_buffer_size(b)?;
        }
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        Ok(quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            server,
            sock.into(),
            Arc::new(quinn::TokioRuntime),
        )?)
    }
}

/// The machine state a set of rows was measured in.
#[derive(Debug)]
pub struct Condition {
    /// `as is` or `kept awake`.
    pub name: &'static str,
    /// The modes, or why they could not be measured.
    pub rows: anyhow::Result<Vec<Row>>,
}

/// Busy loops at the lowest priority, one per core, while alive: they keep the vCPUs from
/// halting and yield to any real work.
struct KeepAwake(Vec<std::process::Child>);

impl KeepAwake {
    fn start() -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let children = (0..cores)
            .map(|_| {
                std::process::Command::new("nice")
                    .args(["-n", "19", "sh", "-c", "while :; do :; done"])
                    .spawn()
                    .context("spawn `nice -n 19 sh`")
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self(children))
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Both conditions: the machine as it is, then with its cores kept awake.
pub fn measure_all(
    seconds: f64,
    rounds: u32,
    request_bytes: usize,
    tuning: Tuning,
) -> Vec<Condition> {
    let as_is = measure(seconds, rounds, request_bytes, tuning);
    let awake =
        KeepAwake::start().and_then(|_guard| measure(seconds, rounds, request_bytes, tuning));
    vec![
        Condition {
            name: "as is",
            rows: as_is,
        },
        Condition {
            name: "kept awake",
            rows: awake,
        },
    ]
}

/// One measured mode.
#[derive(Debug, Clone)]
pub struct Row {
    /// From [`MODES`].
    pub mode: &'static str,
    /// Latency and calls.
    pub stats: Stats,
    /// UDP datagrams (sent + received by the client) per call, QUIC modes only.
    pub datagrams_per_call: Option<f64>,
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

struct Servers {
    quic: SocketAddr,
    tls: SocketAddr,
    tcp: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_quic(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(framing::serve(QuicDuplex { send, recv }));
            }
        });
    }
}

async fn accept_tcp(listener: TcpListener, tls: Option<TlsAcceptor>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let tls = tls.clone();
        tokio::spawn(async move {
            tcp.set_nodelay(true)?;
            match tls {
                Some(t) => framing::serve(t.accept(tcp).await?).await,
                None => framing::serve(tcp).await,
            }
        });
    }
}

fn start_servers(pki: &BenchPki, tuning: Tuning) -> anyhow::Result<Servers> {
    let quic_tls = pki.server_config()?;
    let mut tcp_tls = quic_tls.clone();
    tcp_tls.max_early_data_size = 0;
    let mut quic_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(quic_tls)?,
    ));
    quic_cfg.transport_config(Arc::new(tuning.transport()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bench-servers".into())
        .spawn(move || {
            let run = async move {
                let endpoint = tuning.endpoint(Some(quic_cfg))?;
                let tls = TcpListener::bind("127.0.0.1:0").await?;
                let tcp = TcpListener::bind("127.0.0.1:0").await?;
                let _ =
                    addr_tx.send((endpoint.local_addr()?, tls.local_addr()?, tcp.local_addr()?));
                tokio::spawn(accept_quic(endpoint.clone()));
                tokio::spawn(accept_tcp(tls, Some(TlsAcceptor::from(Arc::new(tcp_tls)))));
                tokio::spawn(accept_tcp(tcp, None));
                let _ = stop_rx.await;
                endpoint.close(0u32.into(), b"done");
                anyhow::Ok(())
            };
            match current_thread() {
                Ok(rt) => {
                    if let Err(e) = rt.block_on(run) {
                        eprintln!("  transport servers: {e:#}");
                    }
                }
                Err(e) => eprintln!("  transport servers: runtime: {e}"),
            }
        })?;
    let (quic, tls, tcp) = addr_rx
        .recv()
        .context("the transport servers did not start")?;
    Ok(Servers {
        quic,
        tls,
        tcp,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// The client side: one connection (or stream) per mode.
struct Clients {
    per_request: quinn::Connection,
    one_stream_conn: quinn::Connection,
    one_stream: Framed<QuicDuplex>,
    tls: Framed<TlsStream<TcpStream>>,
    tcp: Framed<TcpStream>,
    _endpoint: quinn::Endpoint,
}

impl Clients {
    async fn connect(pki: &BenchPki, servers: &Servers, tuning: Tuning) -> anyhow::Result<Self> {
        let device = &pki.devices()[0];
        let endpoint = tuning.endpoint(None)?;
        let client = pki.quic_client(device, Arc::new(tuning.transport()))?;
        let connect =
            |ep: &quinn::Endpoint| ep.connect_with(client.clone(), servers.quic, "localhost");
        let per_request = connect(&endpoint)?.await?;
        let one_stream_conn = connect(&endpoint)?.await?;
        let (send, recv) = one_stream_conn.open_bi().await?;
        let tcp = TcpStream::connect(servers.tls).await?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(Arc::new(pki.client_config(device)?))
            .connect("localhost".try_into()?, tcp)
            .await?;
        let plain = TcpStream::connect(servers.tcp).await?;
        plain.set_nodelay(true)?;
        Ok(Self {
            per_request,
            one_stream_conn,
            one_stream: Framed::new(QuicDuplex { send, recv }),
            tls: Framed::new(tls),
            tcp: Framed::new(plain),
            _endpoint: endpoint,
        })
    }

    async fn call(&mut self, mode: usize, frame: &[u8]) -> anyhow::Result<Message> {
        match mode {
            0 => framing::quic_stream_call(&self.per_request, frame).await,
            1 => self.one_stream.call(frame).await,
            2 => self.tls.call(frame).await,
            _ => self.tcp.call(frame).await,
        }
    }

    fn datagrams(&self, mode: usize) -> Option<u64> {
        let conn = match mode {
            0 => &self.per_request,
            1 => &self.one_stream_conn,
            _ => return None,
        };
        let s = conn.stats();
        Some(s.udp_tx.datagrams + s.udp_rx.datagrams)
    }
}

#[derive(Default)]
struct Acc {
    lat: Vec<Duration>,
    errors: usize,
    datagrams: u64,
}

/// One call at a time on `mode` for `window`.
async fn window(c: &mut Clients, mode: usize, frame: &[u8], window: Duration, acc: &mut Acc) {
    let before = c.datagrams(mode);
    let end = Instant::now() + window;
    while Instant::now() < end {
        let t = Instant::now();
        match c.call(mode, frame).await {
            Ok(Message::InferResponse { .. }) => acc.lat.push(t.elapsed()),
            _ => acc.errors += 1,
        }
    }
    if let (Some(b), Some(a)) = (before, c.datagrams(mode)) {
        acc.datagrams += a - b;
    }
}

/// Measures every mode: a warm-up each, then `rounds` x (each mode for seconds / rounds).
pub fn measure(
    seconds: f64,
    rounds: u32,
    request_bytes: usize,
    tuning: Tuning,
) -> anyhow::Result<Vec<Row>> {
    let pki = BenchPki::new("transport", 1)?;
    let servers = start_servers(&pki, tuning)?;
    let frame = framing::request_frame(request_bytes)?;
    let total = Duration::from_secs_f64(seconds);
    let client = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<Vec<Acc>> {
            current_thread()?.block_on(async {
                let mut c = Clients::connect(&pki, &servers, tuning).await?;
                let mut scratch = Acc::default();
                for mode in 0..MODES.len() {
                    window(
                        &mut c,
                        mode,
                        &frame,
                        Duration::from_millis(300),
                        &mut scratch,
                    )
                    .await;
                }
                let mut acc: Vec<Acc> = MODES.iter().map(|_| Acc::default()).collect();
                for _ in 0..rounds {
                    for (mode, a) in acc.iter_mut().enumerate() {
                        window(&mut c, mode, &frame, total / rounds, a).await;
                    }
                }
                Ok(acc)
            })
        })
        .join()
    });
    let acc = client.map_err(|_| anyhow::anyhow!("the transport client panicked"))??;
    Ok(acc
        .into_iter()
        .enumerate()
        .map(|(mode, a)| {
            let n = a.lat.len();
            Row {
                mode: MODES[mode],
                datagrams_per_call: (mode < TLS && n > 0).then(|| a.datagrams as f64 / n as f64),
                stats: summarise(a.lat, total, a.errors),
            }
        })
        .collect())
}
