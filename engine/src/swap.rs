//! Hot swap of a model version, with no failed request.
//!
//! 1. [`Engine::stage`] loads the new version beside the one serving: its sessions on the
//!    configured providers, its workers started. It receives no request and is not counted in
//!    the metrics; the caller runs its self-tests on it ([`Staged::infer_blocking`]), on the
//!    very sessions that will serve.
//! 2. [`Engine::activate`] appends it to the model's generations: from that instant every new
//!    request goes to it. The old handle is then retired: requests already queued on it finish
//!    there, a request that looked it up just before the switch is handed to the new one, and
//!    its workers are joined once their queues are empty.
//!
//! A staged version that is dropped instead stops its workers: nothing changed.

use crate::engine::EngineError;
use crate::engine::{Enqueue, Job, Reply};
use crate::model::ModelFiles;
use crate::{Engine, Inference, InferenceError, Input, ModelHandle};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_shared::provider::ExecutionProvider;

/// Why a swap did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The model is not served by this engine (a new model needs a restart for now).
    #[error("model `{0}` is not loaded: only a served model can be swapped")]
    NotLoaded(String),
    /// The new version could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Too many generations of the model in this process.
    #[error(transparent)]
    Full(#[from] crate::generations::Full),
}

/// A new version loaded beside the serving one, not yet receiving requests.
#[derive(Debug)]
pub struct Staged {
    handle: Option<Arc<ModelHandle>>,
}

impl Staged {
    /// Its handle (files, provider).
    pub fn handle(&self) -> Option<&Arc<ModelHandle>> {
        self.handle.as_ref()
    }

    /// The execution provider its sessions run on.
    pub fn ep(&self) -> Option<ExecutionProvider> {
        self.handle.as_ref().map(|h| h.ep)
    }

    /// Queues a request on the staged version.
    pub fn submit(&self, input: Input) -> Result<Reply, InferenceError> {
        let h = self.handle.as_ref().ok_or(InferenceError::ShuttingDown)?;
        let (job, rx) = Job::new(input);
        match h.enqueue(job) {
            Ok(()) => Ok(rx),
            Err(Enqueue::Full) => Err(InferenceError::QueueFull {
                model: h.name().to_string(),
                capacity: h.queue_capacity(),
            }),
            Err(Enqueue::Retired(_) | Enqueue::Closed) => Err(InferenceError::ShuttingDown),
        }
    }

    /// Runs a request on the staged version and waits (threads outside the async runtime).
    pub fn infer_blocking(&self, input: Input) -> Result<Inference, InferenceError> {
        self.submit(input)?
            .blocking_recv()
            .map_err(|_| InferenceError::ShuttingDown)?
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop(false);
        }
    }
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swapped {
    /// Model name.
    pub model: String,
    /// The version replaced.
    pub from: String,
    /// The version now serving.
    pub to: String,
    /// Its execution provider.
    pub ep: ExecutionProvider,
    /// How long the old version took to finish its queued requests.
    pub drained: Duration,
}

impl Engine {
    /// Loads `files` as a new version of a served model, beside the serving one (see the
    /// module doc). Blocking: sessions are built here.
    pub fn stage(&self, files: ModelFiles) -> Result<Staged, SwapError> {
        let name = files.manifest.name.clone();
        if self.generations(&name).is_none() {
            return Err(SwapError::NotLoaded(name));
        }
        let h = Self::load_model(
            &self.settings,
            &self.env,
            &self.plugins,
            files,
            self.metrics().clone(),
            false,
        )?;
        tracing::info!(model = %name, version = %h.version(), ep = %h.ep, "new version staged");
        Ok(Staged {
            handle: Some(Arc::new(h)),
        })
    }

    /// Makes a staged version the one serving, then retires the old one once its queued
    /// requests are answered (blocking until then).
    pub fn activate(&self, mut staged: Staged) -> Result<Swapped, SwapError> {
        let Some(new) = staged.handle.take() else {
            return Err(SwapError::NotLoaded(String::new()));
        };
        let model = new.name().to_string();
        let Some(generations) = self.generations(&model) else {
            new.stop(false);
            return Err(SwapError::NotLoaded(model));
        };
        let _one = self.swapping.lock().unwrap_or_else(|p| p.into_inner());
        let old = generations.current().cloned();
        new.go_live();
        if let Err(e) = generations.push(new.clone()) {
            new.stop(false);
            return Err(e.into());
        }
        let started = Instant::now();
        if let Some(old) = &old {
            old.stop(true);
        }
        let swapped = Swapped {
            model,
            from: old.map(|o| o.version().to_string()).unwrap_or_default(),
            to: new.version().to_string(),
            ep: new.ep,
            drained: started.elapsed(),
        };
        tracing::info!(model = %swapped.model, from = %swapped.from, to = %swapped.to, ep = %swapped.ep, drained_ms = swapped.drained.as_millis() as u64, "model swapped");
        Ok(swapped)
    }
}
