//! The cloud model as teacher: examples delivered without a cloud answer — shadow samples
//! (confident local answers the agent sampled) and degraded examples — are judged by the hub's
//! engine in the background, in arrival order from a cursor kept in the store (so each is
//! judged once, also across restarts), and the answer is kept per (input digest, model). The
//! examples' listing and the evaluation sets use it as the teacher label when no correction
//! exists. Models the hub does not serve are passed over.

use super::store::{FeedbackError, Store};
use std::sync::Arc;
use std::time::Duration;
use tandem_engine::{Engine, Input};
use tandem_shared::record::{ExampleKind, Outcome};

/// How often the running hub looks for new examples to judge.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Records read per round.
const PAGE: usize = 64;
const CURSOR_KEY: &[u8] = b"teacher_cursor";

fn teacher_key(digest: &[u8; 32], model: &str) -> Vec<u8> {
    let mut k = digest.to_vec();
    k.extend_from_slice(model.as_bytes());
    k
}

impl Store {
    /// The cloud model's answer to the input with this digest, when the teacher gave one.
    pub fn teacher_of(&self, digest: &[u8; 32], model: &str) -> Option<Outcome> {
        let v = self.index.teacher.get(teacher_key(digest, model)).ok()??;
        serde_json::from_slice(&v).ok()
    }

    fn teacher_cursor(&self) -> u64 {
        self.index
            .state
            .get(CURSOR_KEY)
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
    }
}

/// Judges up to one page of examples past the teacher's cursor with `engine` (blocking);
/// returns how many got a teacher answer. The cursor moves past every record read.
pub fn judge_pending(store: &Store, engine: &Engine) -> Result<usize, FeedbackError> {
    let served: Vec<String> = engine.models().map(|m| m.name().to_string()).collect();
    let page = store.records_after(store.teacher_cursor(), PAGE)?;
    let mut judged = 0;
    for listed in &page.items {
        let r = &listed.record;
        let (Some(ex), Some(input), Some(digest)) = (&r.example, &r.input, &r.digest) else {
            continue;
        };
        let wanted = matches!(ex.kind, ExampleKind::Shadow | ExampleKind::Degraded);
        let Ok(Ok(digest)) = hex::decode(digest).map(<[u8; 32]>::try_from) else {
            continue;
        };
        if !wanted
            || ex.cloud.is_some()
            || !served.contains(&ex.model)
            || store.teacher_of(&digest, &ex.model).is_some()
        {
            continue;
        }
        let path = store.dir().join(input);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "teacher: input unreadable (evicted?)");
                continue;
            }
        };
        let request = if ex.input_kind == "text" {
            Input::Texts(vec![String::from_utf8_lossy(&bytes).into_owned()])
        } else {
            Input::Images(vec![bytes.into()])
        };
        let inf = match engine.infer_blocking(&ex.model, request) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(model = %ex.model, record = %listed.id, error = %e, "teacher: the cloud model refused the input");
                continue;
            }
        };
        let Some(p) = inf.predictions.first() else {
            continue;
        };
        let outcome = Outcome {
            version: inf.version.clone(),
            label: p.label.clone(),
            index: p.index,
            score: p.score,
            top_k: p.top_k.iter().map(|s| (s.label.clone(), s.score)).collect(),
        };
        let value = serde_json::to_vec(&outcome).map_err(|e| store.db_err(e))?;
        store
            .index
            .teacher
            .insert(teacher_key(&digest, &ex.model), value)
            .map_err(|e| store.db_err(e))?;
        judged += 1;
    }
    store
        .index
        .state
        .insert(CURSOR_KEY, &page.cursor.to_be_bytes())
        .map_err(|e| store.db_err(e))?;
    store.flush_index()?;
    Ok(judged)
}

/// Judges new examples every [`CHECK_EVERY`] (a full page: at once again) until `stop`.
pub async fn run(
    store: Arc<Store>,
    engine: Arc<Engine>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let (s, e) = (store.clone(), engine.clone());
        let more = match tokio::task::spawn_blocking(move || {
            let before = s.teacher_cursor();
            judge_pending(&s, &e).map(|n| (n, s.teacher_cursor() != before))
        })
        .await
        {
            Ok(Ok((n, moved))) => {
                if n > 0 {
                    tracing::debug!(judged = n, "teacher answers stored");
                }
                moved
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "teacher failed");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "teacher task failed");
                false
            }
        };
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(if more { Duration::ZERO } else { CHECK_EVERY }) => {}
        }
    }
}
