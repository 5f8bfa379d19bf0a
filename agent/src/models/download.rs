//! Downloading a bundle from the hub over QUIC (docs/wire.md, kinds 0x20–0x23), resumable.
//!
//! 1. `BundleRequest` → the offer: digest and files with sizes.
//! 2. `bundle.json` and `bundle.sig` first; the signature must verify against the trusted key
//!    before any other byte is fetched, and only files the signed manifest lists are fetched.
//! 3. Each file in ranges of `request_bytes` (one stream each, answered by `Chunk` frames);
//!    what arrived is appended and synced even when the connection drops, so the next attempt
//!    resumes from the bytes on disk. A finished file must match its sha256 or is deleted.
//!
//! Partial downloads live in `<downloads>/<model>-<version>-<digest prefix>/`, so bytes of two
//! different contents never mix. The folder is a bundle when `fetch` returns; the model manager
//! then verifies and installs it. A download that is refused (by the hub, the signature, a
//! sha256, a bad offer) removes its folder; only one cut short by the link keeps it to resume.
//! An offer whose `bundle.json` or `bundle.sig` is over its size limit is refused before a byte
//! of it is fetched.

use std::path::{Path, PathBuf};
use tandem_engine::model::sha256_file;
use tandem_shared::bundle::{
    self, BUNDLE_FILE, BundleError, MAX_BUNDLE_JSON_BYTES, MAX_SIGNATURE_BYTES, SIGNATURE_FILE,
    TrustedKey,
};
use tandem_shared::wire::{
    BundleFile, DEFAULT_MAX_FRAME_BYTES, FrameDecoder, Message, encode_to_vec,
};

/// Why a download stopped. A `Link` failure leaves what arrived on disk for the next attempt.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The connection or a stream failed.
    #[error("link to the hub: {0}")]
    Link(String),
    /// The hub refused (no such version, bad range).
    #[error("the hub refused: {0}")]
    Refused(String),
    /// The hub answered something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The bundle is not trustworthy (signature, unlisted file, sha256).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A local file cannot be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
}

/// How to download.
#[derive(Debug, Clone, Copy)]
pub struct DownloadOptions {
    /// Bytes asked for per request (one stream); the hub answers in pieces of at most 1 MiB.
    pub request_bytes: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            request_bytes: 4 << 20,
        }
    }
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The bundle folder.
    pub dir: PathBuf,
    /// Bytes of the whole bundle.
    pub total: u64,
    /// Bytes received by this call.
    pub transferred: u64,
    /// Bytes already on disk from an earlier attempt.
    pub resumed: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One request on a new stream; every answer frame until the hub finishes, handed to `each`.
async fn exchange(
    conn: &quinn::Connection,
    request: &Message,
    mut each: impl FnMut(Message) -> Result<(), DownloadError>,
) -> Result<(), DownloadError> {
    let link = |e: &dyn std::fmt::Display| DownloadError::Link(e.to_string());
    let frame = encode_to_vec(request, DEFAULT_MAX_FRAME_BYTES)
        .map_err(|e| DownloadError::Protocol(e.to_string()))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| link(&e))?;
    send.write_all(&frame).await.map_err(|e| link(&e))?;
    send.finish().map_err(|e| link(&e))?;
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(m) = decoder
            .next_message()
            .map_err(|e| DownloadError::Protocol(e.to_string()))?
        {
            match m {
                Message::Error { message, .. } => return Err(DownloadError::Refused(message)),
                other => each(other)?,
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.feed(&buf[..n]),
            Ok(None) => {
                return decoder
                    .finish()
                    .map_err(|e| DownloadError::Link(format!("answer cut short: {e}")));
            }
            Err(e) => return Err(link(&e)),
        }
    }
}

/// A relative path that stays inside the download folder.
fn safe(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Downloads `model` `version` from the hub into a folder under `downloads`, resuming what an
/// earlier attempt left there; `progress(done, total)` after every piece.
pub async fn fetch(
    conn: &quinn::Connection,
    model: &str,
    version: &str,
    downloads: &Path,
    key: &TrustedKey,
    opts: DownloadOptions,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Fetched, DownloadError> {
    let mut offer = None;
    let ask = Message::BundleRequest {
        model: model.into(),
        version: version.into(),
    };
    exchange(conn, &ask, |m| match m {
        Message::BundleOffer {
            model: m,
            version: v,
            digest,
            files,
        } if m == model && v == version => {
            offer = Some((digest, files));
            Ok(())
        }
        other => Err(DownloadError::Protocol(format!(
            "unexpected {:?} for a bundle request",
            other.kind()
        ))),
    })
    .await?;
    let (digest, files) = offer.ok_or_else(|| DownloadError::Protocol("no offer".into()))?;
    if let Some(f) = files.iter().find(|f| !safe(&f.path)) {
        return Err(DownloadError::Protocol(format!(
            "unsafe path `{}` in the offer",
            f.path
        )));
    }
    for (name, max) in [
        (BUNDLE_FILE, MAX_BUNDLE_JSON_BYTES),
        (SIGNATURE_FILE, MAX_SIGNATURE_BYTES),
    ] {
        if let Some(f) = files.iter().find(|f| f.path == name && f.size > max as u64) {
            return Err(BundleError::Malformed(format!(
                "the offer's {name} is {} bytes, more than {max}: not downloaded",
                f.size
            ))
            .into());
        }
    }
    let prefix: String = digest
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    let dir = downloads.join(format!("{model}-{version}-{prefix}"));
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let result = fetch_into(conn, model, version, &dir, &files, key, opts, progress).await;
    if let Err(e) = &result
        && !matches!(e, DownloadError::Link(_) | DownloadError::Io { .. })
    {
        // Refused: not worth keeping, the next attempt starts afresh.
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The files of an accepted offer into `dir`: the description and its signature first, then
/// the files the signed manifest lists.
#[allow(clippy::too_many_arguments)]
async fn fetch_into(
    conn: &quinn::Connection,
    model: &str,
    version: &str,
    dir: &Path,
    files: &[BundleFile],
    key: &TrustedKey,
    opts: DownloadOptions,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Fetched, DownloadError> {
    let dir = dir.to_path_buf();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let mut state = Progress {
        total,
        done: 0,
        transferred: 0,
        resumed: 0,
    };
    // The description and its signature first: nothing else is fetched for a bad one.
    let find = |name: &str| files.iter().find(|f| f.path == name);
    let json_file = find(BUNDLE_FILE)
        .ok_or_else(|| DownloadError::Protocol("the offer has no bundle.json".into()))?;
    fetch_file(
        conn, model, version, json_file, &dir, opts, &mut state, progress,
    )
    .await?;
    if let Some(sig) = find(SIGNATURE_FILE) {
        fetch_file(conn, model, version, sig, &dir, opts, &mut state, progress).await?;
    }
    let json = std::fs::read(dir.join(BUNDLE_FILE)).map_err(io(&dir))?;
    let sig = std::fs::read(dir.join(SIGNATURE_FILE)).ok();
    bundle::verify_signature(&json, sig.as_deref(), key)?;
    let doc = bundle::parse(&json)?;
    for f in files
        .iter()
        .filter(|f| f.path != BUNDLE_FILE && f.path != SIGNATURE_FILE)
    {
        let Some(expected) = doc.manifest.files.get(&f.path) else {
            return Err(BundleError::UnlistedFile {
                path: f.path.clone(),
            }
            .into());
        };
        fetch_file(conn, model, version, f, &dir, opts, &mut state, progress).await?;
        let path = dir.join(&f.path);
        let p = path.clone();
        let actual = tokio::task::spawn_blocking(move || sha256_file(&p))
            .await
            .map_err(|e| DownloadError::Protocol(e.to_string()))?
            .map_err(|e| DownloadError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(BundleError::HashMismatch {
                path: f.path.clone(),
                expected: expected.clone(),
                actual,
            }
            .into());
        }
    }
    Ok(Fetched {
        dir,
        total,
        transferred: state.transferred,
        resumed: state.resumed,
    })
}

struct Progress {
    total: u64,
    done: u64,
    transferred: u64,
    resumed: u64,
}

/// Fetches one file into `dir`, from the bytes already there to its size.
#[allow(clippy::too_many_arguments)]
async fn fetch_file(
    conn: &quinn::Connection,
    model: &str,
    version: &str,
    file: &BundleFile,
    dir: &Path,
    opts: DownloadOptions,
    state: &mut Progress,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<(), DownloadError> {
    let path = dir.join(&file.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut have = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if have > file.size {
        std::fs::remove_file(&path).map_err(io(&path))?;
        have = 0;
    }
    state.resumed += have;
    state.done += have;
    progress(state.done, state.total);
    while have < file.size {
        let len = opts.request_bytes.max(1).min(file.size - have);
        let ask = Message::ChunkRequest {
            model: model.into(),
            version: version.into(),
            path: file.path.clone(),
            offset: have,
            len,
        };
        let mut got: Vec<u8> = Vec::new();
        let start = have;
        let outcome = exchange(conn, &ask, |m| match m {
            Message::Chunk { offset, data } if offset == start + got.len() as u64 => {
                if got.len() as u64 + data.len() as u64 > len {
                    return Err(DownloadError::Protocol("more bytes than asked for".into()));
                }
                got.extend_from_slice(&data);
                Ok(())
            }
            other => Err(DownloadError::Protocol(format!(
                "unexpected {:?} in a chunk answer",
                other.kind()
            ))),
        })
        .await;
        // Keep what arrived, even from a stream cut short: the next attempt resumes after it.
        let n = got.len() as u64;
        if n > 0 {
            let p = path.clone();
            tokio::task::spawn_blocking(move || append(&p, &got))
                .await
                .map_err(|e| DownloadError::Protocol(e.to_string()))??;
            have += n;
            state.done += n;
            state.transferred += n;
            progress(state.done, state.total);
        }
        outcome?;
        if n < len {
            return Err(DownloadError::Link(format!(
                "`{}`: {n} of {len} bytes arrived",
                file.path
            )));
        }
    }
    Ok(())
}

fn append(path: &Path, bytes: &[u8]) -> Result<(), DownloadError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_data().map_err(io(path))
}
