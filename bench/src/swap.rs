//! `tandem-bench swap` (make bench-swap): a model update on a serving engine.
//!
//! - Swap under load: `clients` tasks call the engine back to back; `phase_ms` of load, then a
//!   signed bundle of the next version is installed (verified, staged beside the serving one,
//!   self-tested on this machine's provider, swapped in), then `phase_ms` more. Requests/s,
//!   p50/p99 and failures before, during and after the swap.
//! - Download: the hub's registry serves a bundle over QUIC with mutual TLS on loopback; the
//!   agent's downloader fetches it (`request_bytes` per request), `download_runs` times into
//!   fresh folders; MB/s.
//!
//! Last line: `swap-failed-requests: N`.

use crate::stats::{Stats, summarise};
use anyhow::{Context, bail};
use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tandem_agent::config::Config;
use tandem_agent::models::{DownloadOptions, Manager, Order, fetch};
use tandem_engine::Input;
use tandem_hub::pki::Pki;
use tandem_hub::registry::{PackOptions, Registry, load_signer, pack};
use tandem_shared::bundle::TrustedKey;
use tandem_shared::manifest::{Manifest, Preprocess, Task};
use tandem_shared::wire::ALPN;

/// `tandem-bench swap` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model swapped under load (its edge variant).
    #[arg(long, default_value = "vision-fashion")]
    model: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Load before and after the swap, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    phase_ms: u64,
    /// The model whose bundle is downloaded for the throughput figure.
    #[arg(long, default_value = "text-sentiment")]
    download_model: String,
    /// Downloads measured.
    #[arg(long, default_value_t = 3)]
    download_runs: usize,
    /// Bytes per chunk request.
    #[arg(long, default_value_t = DownloadOptions::default().request_bytes)]
    request_bytes: u64,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Removes the scratch folder on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the files of `model`'s edge variant from the models folder `from` into
/// `models/<model>/`.
pub(crate) fn ship(from: &Path, model: &str, models: &Path) -> anyhow::Result<Manifest> {
    let src = from.join(model);
    let text = std::fs::read_to_string(src.join("manifest.json"))
        .with_context(|| format!("{}/manifest.json", src.display()))?;
    let m = Manifest::from_json(&text)?;
    let edge = m
        .variants
        .get(&tandem_shared::manifest::VariantRole::Edge)
        .context("no edge variant")?;
    let mut files = vec![
        "manifest.json".to_string(),
        edge.file.clone(),
        m.labels.clone(),
    ];
    if let Preprocess::Text(t) = &edge.preprocess {
        files.push(t.tokenizer.clone());
    }
    for f in files {
        let to = models.join(model).join(&f);
        std::fs::create_dir_all(to.parent().context("parent")?)?;
        std::fs::copy(src.join(&f), &to).with_context(|| format!("copy {f}"))?;
    }
    Ok(m)
}

fn sample_input(model: &str, m: &Manifest) -> anyhow::Result<Input> {
    Ok(match m.task {
        Task::TextClassification => Input::Texts(vec![
            "A thoughtful, well acted film that never quite finds its rhythm.".into(),
        ]),
        Task::ImageClassification | Task::Detection => {
            let dir = repo().join("models").join(model).join("samples");
            let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
                .collect();
            names.sort();
            let first = names.first().context("no sample image")?;
            Input::Images(vec![Bytes::from(std::fs::read(first)?)])
        }
    })
}

/// Packs `model` as `version`, the self-tests' answers recorded with the engine on `settings`.
fn packed(
    model: &str,
    version: &str,
    scratch: &Path,
    settings: &tandem_engine::settings::EngineSettings,
) -> anyhow::Result<PathBuf> {
    let out = scratch.join(format!("pack-{model}-{version}"));
    let opts = PackOptions {
        version: Some(version.into()),
        record: Some(settings.clone()),
        ..PackOptions::default()
    };
    pack(&repo().join("models").join(model), &out, &opts)?;
    Ok(out)
}

/// Runs the benchmark.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("tandem-bench-swap-{}", std::process::id())));
    let root = scratch.0.clone();
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let pki = root.join("pki");
    Pki::init(&pki)?;
    Pki::open(&pki)?.add_device("bench-device", 30)?;
    let signer = load_signer(&pki)?;
    let registry = Registry::open(&root.join("registry"))?;

    let shipped = ship(&repo().join("models"), &a.model, &root.join("models"))?;
    let next = format!("{}.1", shipped.version);
    let mut cfg = Config {
        base_dir: root.clone(),
        ..Config::default()
    };
    cfg.models.dir = PathBuf::from("models");
    cfg.models.enabled = vec![a.model.clone()];
    cfg.models.trusted_key = "pki/signing.pub".into();
    let settings = cfg.engine_settings();
    registry.push(&packed(&a.model, &next, &root, &settings)?, &signer)?;
    let (_, engine) = tandem_engine::engine::start(&settings, Arc::default())?;
    let engine = Arc::new(engine);
    let manager = Arc::new(Manager::new(engine.clone(), &settings));
    let input = sample_input(&a.model, &shipped)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    println!(
        "# tandem-bench swap: {} {} -> {next} under {} clients (CPU)",
        a.model, shipped.version, a.clients
    );
    let bundle_dir = registry.bundle_dir(&a.model, &next);
    let (phases, installed) =
        rt.block_on(load_during_swap(a, &engine, &manager, &bundle_dir, &input))?;
    println!(
        "{:<8} {:>9} {:>10} {:>10} {:>8} {:>8}",
        "phase", "requests", "req/s", "p99 ms", "failed", "versions"
    );
    let mut failed = 0;
    for (name, s, versions) in &phases {
        failed += s.errors;
        println!(
            "{name:<8} {:>9} {:>10.1} {:>10.2} {:>8} {:>8}",
            s.n,
            s.rps,
            s.p99_us / 1000.0,
            s.errors,
            versions
        );
    }
    println!("{installed}");

    let dl = rt.block_on(download(a, &pki, &registry, &signer, &root))?;
    println!("download {}: {dl}", a.download_model);
    println!("swap-failed-requests: {failed}");
    engine.shutdown();
    Ok(())
}

type Phase = (&'static str, Stats, String);

async fn load_during_swap(
    a: &Args,
    engine: &Arc<tandem_engine::Engine>,
    manager: &Arc<Manager>,
    bundle: &Path,
    input: &Input,
) -> anyhow::Result<(Vec<Phase>, String)> {
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..a.clients {
        let (engine, phase, stop, input) =
            (engine.clone(), phase.clone(), stop.clone(), input.clone());
        let model = a.model.clone();
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<(u8, Duration, Result<String, String>)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let p = phase.load(Ordering::Relaxed);
                let t = Instant::now();
                let r = engine.infer(&model, input.clone()).await;
                seen.push((
                    p,
                    t.elapsed(),
                    r.map(|i| i.version).map_err(|e| e.to_string()),
                ));
            }
            seen
        }));
    }
    let before = Duration::from_millis(a.phase_ms);
    tokio::time::sleep(before).await;
    phase.store(1, Ordering::Relaxed);
    let started = Instant::now();
    let (m, dir) = (manager.clone(), bundle.to_path_buf());
    let installed = tokio::task::spawn_blocking(move || m.install(&dir, Order::default())).await?;
    let during = started.elapsed();
    phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(before).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await?);
    }
    let installed = match installed {
        Ok(i) => format!(
            "installed {} -> {} on {} in {:.0} ms: {} self-tests, p99 {:.1} ms; old version drained in {} ms",
            i.from,
            i.to,
            i.ep,
            during.as_secs_f64() * 1000.0,
            i.selftests.cases,
            i.selftests.p99_ms,
            i.drained_ms
        ),
        Err(e) => bail!("the install failed: {e}"),
    };
    let mut out = Vec::new();
    for (p, name, window) in [
        (0u8, "before", before),
        (1, "during", during),
        (2, "after", before),
    ] {
        let mine: Vec<_> = all.iter().filter(|s| s.0 == p).collect();
        let errors = mine.iter().filter(|s| s.2.is_err()).count();
        if let Some((_, _, Err(e))) = mine.iter().find(|s| s.2.is_err()) {
            eprintln!("a failed request ({name}): {e}");
        }
        let lat = mine.iter().filter(|s| s.2.is_ok()).map(|s| s.1).collect();
        let mut versions: Vec<String> = mine.iter().filter_map(|s| s.2.clone().ok()).collect();
        versions.sort();
        versions.dedup();
        out.push((name, summarise(lat, window, errors), versions.join(",")));
    }
    Ok((out, installed))
}

async fn download(
    a: &Args,
    pki: &Path,
    registry: &Registry,
    signer: &tandem_shared::bundle::BundleSigner,
    root: &Path,
) -> anyhow::Result<String> {
    let version = "1.0.1";
    let to_pack = PackOptions {
        version: Some(version.into()),
        ..PackOptions::default()
    };
    let out = root.join("pack-download");
    pack(
        &repo().join("models").join(&a.download_model),
        &out,
        &to_pack,
    )?;
    registry.push(&out, signer)?;
    let addr = serve_downloads(pki, registry.clone())?;
    let endpoint = client(pki)?;
    let conn = endpoint.connect(addr, "localhost")?.await?;
    let key = TrustedKey::from_pem(&std::fs::read_to_string(pki.join("signing.pub"))?)?;
    let opts = DownloadOptions {
        request_bytes: a.request_bytes,
    };
    let mut rates = Vec::new();
    let mut total = 0;
    for run in 0..a.download_runs.max(1) {
        let into = root.join(format!("downloads-{run}"));
        let t = Instant::now();
        let got = fetch(
            &conn,
            &a.download_model,
            version,
            &into,
            &key,
            opts,
            &|_, _| {},
        )
        .await?;
        let secs = t.elapsed().as_secs_f64();
        total = got.total;
        rates.push(got.transferred as f64 / secs / 1e6);
        std::fs::remove_dir_all(&into)?;
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    Ok(format!(
        "{:.1} MB bundle over QUIC (mTLS, loopback), {} B per request: median {median:.1} MB/s, best {:.1} MB/s over {} runs",
        total as f64 / 1e6,
        a.request_bytes,
        rates.last().copied().unwrap_or(median),
        rates.len()
    ))
}

/// The hub's QUIC ingress on loopback with `registry` and no models: it serves downloads only.
fn serve_downloads(pki: &Path, registry: Registry) -> anyhow::Result<std::net::SocketAddr> {
    let ingress = tandem_hub::ingress::quic::QuicIngress::bind("127.0.0.1:0".parse()?, pki)?
        .with_registry(Arc::new(registry));
    let addr = ingress.local_addr()?;
    tokio::spawn(ingress.run(std::future::pending()));
    Ok(addr)
}

fn client(pki: &Path) -> anyhow::Result<quinn::Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(pki.join("ca.pem"))?)?;
    let (cert, key) = Pki::open(pki)?.device_files("bench-device");
    let mut tls = rustls::ClientConfig::builder_with_provider(tandem_hub::ingress::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(cert)?],
            PrivateKeyDer::from_pem_file(key)?,
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    Ok(endpoint)
}
