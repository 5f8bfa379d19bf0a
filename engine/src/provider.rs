//! Execution providers: build a session on the first provider in the configured list that
//! accepts the model, and say which one that was and why the others were passed over.

use ort::environment::Environment;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::Session;
use std::path::Path;
use tandem_shared::provider::ExecutionProvider;

/// A session and the provider it runs on.
#[derive(Debug)]
pub struct Built {
    /// The session.
    pub session: Session,
    /// Provider in use.
    pub ep: ExecutionProvider,
    /// Providers tried first and why each was not used.
    pub skipped: Vec<(ExecutionProvider, String)>,
}

/// No provider in the list could run the model.
#[derive(Debug, thiserror::Error)]
#[error("no execution provider could load {path}: {}", .reasons.iter().map(|(e, r)| format!("{e}: {r}")).collect::<Vec<_>>().join("; "))]
pub struct NoProvider {
    /// The model file.
    pub path: String,
    /// Each provider tried and its error.
    pub reasons: Vec<(ExecutionProvider, String)>,
}

fn dispatch(e: ExecutionProvider) -> Option<ExecutionProviderDispatch> {
    Some(match e {
        ExecutionProvider::Tensorrt => ep::TensorRT::default().build(),
        ExecutionProvider::Cuda => ep::CUDA::default().build(),
        ExecutionProvider::Openvino => ep::OpenVINO::default().build(),
        ExecutionProvider::Coreml => ep::CoreML::default().build(),
        ExecutionProvider::Qnn => ep::QNN::default().build(),
        ExecutionProvider::Directml => ep::DirectML::default().build(),
        ExecutionProvider::Rocm => ep::ROCm::default().build(),
        ExecutionProvider::Xnnpack => ep::XNNPACK::default().build(),
        ExecutionProvider::Cpu => return None,
    })
}

fn try_build(
    env: &Environment,
    path: &Path,
    e: ExecutionProvider,
    intra_threads: usize,
    spinning: bool,
) -> Result<Session, String> {
    let mut b = Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(intra_threads)
        .map_err(|e| e.to_string())?
        .with_intra_op_spinning(spinning)
        .map_err(|e| e.to_string())?;
    if let Some(d) = dispatch(e) {
        b = b
            .with_execution_providers([d.error_on_failure()])
            .map_err(|e| e.to_string())?;
    }
    b.commit_from_file(path).map_err(|e| e.to_string())
}

/// Builds a session on the first provider of `order` that works.
pub fn build_session(
    env: &Environment,
    path: &Path,
    order: &[ExecutionProvider],
    intra_threads: usize,
    spinning: bool,
) -> Result<Built, NoProvider> {
    let mut skipped = Vec::new();
    for &e in order {
        match try_build(env, path, e, intra_threads, spinning) {
            Ok(session) => {
                return Ok(Built {
                    session,
                    ep: e,
                    skipped,
                });
            }
            Err(reason) => {
                tracing::warn!(ep = %e, model = %path.display(), reason = %reason, "execution provider unavailable, trying the next");
                skipped.push((e, reason));
            }
        }
    }
    Err(NoProvider {
        path: path.display().to_string(),
        reasons: skipped,
    })
}
