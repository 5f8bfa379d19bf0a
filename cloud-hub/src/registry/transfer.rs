//! Model download over QUIC (docs/wire.md, kinds 0x20–0x23): a `BundleRequest` stream gets the
//! bundle's `BundleOffer` (digest, files and sizes); a `ChunkRequest` stream gets the asked
//! range of one file as `Chunk` frames of at most `MAX_CHUNK_BYTES`, in order, then the hub
//! finishes the stream. Only files of a stored bundle are served, by their listed names; model,
//! version and path are checked by [`Registry::check_names`] and [`Registry::check_file_path`]
//! (the checks [`Registry::get`] does) before anything touches the disk, and a request that
//! fails them is answered `Error { code: BadRequest }` naming the field.

use super::store::{Registry, RegistryError};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use tandem_shared::wire::{
    BundleFile, DEFAULT_MAX_FRAME_BYTES, ErrorCode, MAX_CHUNK_BYTES, Message, encode_to_vec,
};

/// Whether a first frame opens a download stream (for the ingress's dispatch).
pub fn is_download(msg: &Message) -> bool {
    matches!(
        msg,
        Message::BundleRequest { .. } | Message::ChunkRequest { .. }
    )
}

fn error(code: ErrorCode, message: String) -> Message {
    Message::Error {
        request_id: 0,
        code,
        message,
    }
}

async fn send_msg(send: &mut quinn::SendStream, msg: &Message) -> Result<(), String> {
    let bytes = encode_to_vec(msg, DEFAULT_MAX_FRAME_BYTES).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}

/// The files of a stored bundle with their sizes, `bundle.json` and `bundle.sig` first.
pub fn offer_files(
    registry: &Registry,
    model: &str,
    version: &str,
) -> std::io::Result<Vec<BundleFile>> {
    let root = registry.bundle_dir(model, version);
    let mut files = Vec::new();
    list(&root, &root, &mut files)?;
    files.sort_by_key(|f: &BundleFile| {
        (
            !matches!(f.path.as_str(), "bundle.json" | "bundle.sig"),
            f.path.clone(),
        )
    });
    Ok(files)
}

fn list(root: &Path, dir: &Path, out: &mut Vec<BundleFile>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let kind = e.file_type()?;
        if kind.is_dir() {
            list(root, &e.path(), out)?;
        } else if kind.is_file() {
            let rel = e.path();
            let rel = rel.strip_prefix(root).map_err(std::io::Error::other)?;
            let parts: Option<Vec<&str>> =
                rel.components().map(|c| c.as_os_str().to_str()).collect();
            if let Some(parts) = parts {
                out.push(BundleFile {
                    path: parts.join("/"),
                    size: e.metadata()?.len(),
                });
            }
        }
    }
    Ok(())
}

/// Answers a download stream that opened with `first`, then finishes it.
pub async fn serve(registry: &Registry, first: Message, send: &mut quinn::SendStream) {
    let outcome = match first {
        Message::BundleRequest { model, version } => offer(registry, model, version, send).await,
        Message::ChunkRequest {
            model,
            version,
            path,
            offset,
            len,
        } => chunks(registry, &model, &version, &path, offset, len, send).await,
        other => {
            let m = error(
                ErrorCode::UnsupportedKind,
                format!("{:?} does not open a download", other.kind()),
            );
            send_msg(send, &m).await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(error = %e, "download stream ended early");
    }
    let _ = send.finish();
}

async fn offer(
    registry: &Registry,
    model: String,
    version: String,
    send: &mut quinn::SendStream,
) -> Result<(), String> {
    if let Err(e) = Registry::check_names(&model, &version) {
        return send_msg(send, &error(ErrorCode::BadRequest, e.to_string())).await;
    }
    let r = registry.clone();
    let (m, v) = (model.clone(), version.clone());
    let found = tokio::task::spawn_blocking(move || {
        let entry = r.get(&m, &v).map_err(|e| e.to_string())?;
        match entry {
            Some(e) => offer_files(&r, &m, &v)
                .map(|files| Some((e.digest, files)))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let msg = match found {
        Ok(Some((digest, files))) => Message::BundleOffer {
            model,
            version,
            digest,
            files,
        },
        Ok(None) => error(
            ErrorCode::UnknownModelVersion,
            format!("the registry has no {model} {version}"),
        ),
        Err(e) => error(ErrorCode::Internal, e),
    };
    send_msg(send, &msg).await
}

async fn chunks(
    registry: &Registry,
    model: &str,
    version: &str,
    path: &str,
    offset: u64,
    len: u64,
    send: &mut quinn::SendStream,
) -> Result<(), String> {
    if let Err(e) =
        Registry::check_names(model, version).and_then(|()| Registry::check_file_path(path))
    {
        return send_msg(send, &error(ErrorCode::BadRequest, e.to_string())).await;
    }
    let files = {
        let (r, m, v) = (registry.clone(), model.to_string(), version.to_string());
        tokio::task::spawn_blocking(move || -> Result<Vec<BundleFile>, RegistryError> {
            // Only a stored version (its entry.json written last, at push) is served.
            if r.get(&m, &v)?.is_none() {
                return Ok(Vec::new());
            }
            Ok(offer_files(&r, &m, &v).unwrap_or_default())
        })
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default()
    };
    // Only a listed file, by its listed name: no path from the request touches the disk.
    let Some(file) = files.into_iter().find(|f| f.path == path) else {
        let m = error(
            ErrorCode::BadRequest,
            format!("{model} {version} has no file `{path}`"),
        );
        return send_msg(send, &m).await;
    };
    let end = if len == 0 {
        file.size
    } else {
        offset.saturating_add(len).min(file.size)
    };
    if offset > file.size {
        let m = error(
            ErrorCode::BadRequest,
            format!(
                "offset {offset} is past the end of `{path}` ({} bytes)",
                file.size
            ),
        );
        return send_msg(send, &m).await;
    }
    let full = registry.bundle_dir(model, version).join(&file.path);
    let mut at = offset;
    while at < end {
        let want = usize::try_from(end - at)
            .unwrap_or(MAX_CHUNK_BYTES)
            .min(MAX_CHUNK_BYTES);
        let p = full.clone();
        let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(&p)?;
            f.seek(SeekFrom::Start(at))?;
            let mut buf = vec![0u8; want];
            f.read_exact(&mut buf)?;
            Ok(buf)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let n = data.len() as u64;
        send_msg(send, &Message::Chunk { offset: at, data }).await?;
        at += n;
    }
    Ok(())
}
