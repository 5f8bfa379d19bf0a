//! Asking the hub: a `PredictRequest` with the request's `k`, answered by the hub's typed
//! prediction (its engine ran the same post-processing as ours; nothing is decoded again
//! here), or the reason the hub gave none. A hub older than the `PredictRequest` kind answers
//! `UnsupportedKind`: a degraded answer whose detail says to upgrade the hub (logged once per
//! QUIC connection, counted in `tandem_offload_old_hub_total`).

use super::{CloudAnswer, Missed, Router};
use crate::policy::Reason;
use crate::uplink::{Uplink, UplinkError};
use std::time::{Duration, Instant};
use tandem_shared::answer::MAX_PREDICTIONS;
use tandem_shared::wire::{self, Message};

/// What the caller asks of an answer besides the input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// Budget in milliseconds (`None`: the configured deadline).
    pub deadline_ms: Option<u32>,
    /// Classes a classification answers (`None`: `engine.top_k`).
    pub top_k: Option<usize>,
    /// Whether the hub's raw outputs are wanted too (an OIP v2 caller reads them).
    pub raw_outputs: bool,
}

/// What the agent tells a person when the hub does not know `PredictRequest`.
pub const OLD_HUB: &str = "the hub does not answer PredictRequest (wire kind 0x07, typed \
                           predictions): upgrade the hub to this agent's version";

impl Router {
    pub(super) async fn offload(
        &self,
        uplink: &Uplink,
        request_id: u64,
        model: &str,
        input: wire::Input,
        ask: Ask,
        budget: Duration,
    ) -> Result<CloudAnswer, Missed> {
        let top_k = ask.top_k.unwrap_or_else(|| self.engine.top_k());
        let msg = Message::PredictRequest {
            request_id,
            model: model.to_string(),
            model_version: None,
            deadline_ms: u32::try_from(budget.as_millis()).unwrap_or(u32::MAX),
            top_k: top_k.clamp(1, MAX_PREDICTIONS) as u16, // MAX_PREDICTIONS < u16::MAX
            raw_outputs: ask.raw_outputs,
            input,
        };
        let t = Instant::now();
        let miss = |reason, detail: Option<String>| Missed { reason, detail };
        match uplink.call(&msg, budget).await {
            Ok(Message::PredictResponse {
                model_version,
                prediction,
                outputs,
                timing,
                ..
            }) => Ok(CloudAnswer {
                prediction,
                version: model_version,
                round_trip_ms: t.elapsed().as_secs_f64() * 1000.0,
                batch_size: timing.batch_size,
                outputs: outputs.iter().map(output_tensor).collect(),
            }),
            Ok(Message::Busy { .. }) => Err(miss(Reason::HubBusy, None)),
            Ok(Message::Error {
                code: wire::ErrorCode::DeadlineExceeded,
                message,
                ..
            }) => Err(miss(Reason::Deadline, Some(message))),
            Ok(Message::Error {
                code: wire::ErrorCode::UnsupportedKind,
                message,
                ..
            }) => {
                // Once per QUIC connection (every refusal counted in /metrics).
                if self.counters.old_hub.refused(uplink.status().connects) {
                    tracing::warn!(model, %message, "{OLD_HUB}");
                } else {
                    tracing::debug!(model, %message, "{OLD_HUB}");
                }
                Err(miss(Reason::HubError, Some(OLD_HUB.into())))
            }
            Ok(Message::Error { code, message, .. }) => {
                tracing::warn!(model, ?code, %message, "hub answered with an error");
                Err(miss(Reason::HubError, Some(message)))
            }
            Ok(other) => Err(miss(
                Reason::HubError,
                Some(format!("unexpected answer {:?}", other.kind())),
            )),
            Err(UplinkError::Timeout(_)) if ask.deadline_ms.is_some() => {
                Err(miss(Reason::Deadline, None))
            }
            Err(UplinkError::Timeout(ms)) => Err(miss(
                Reason::HubTimeout,
                Some(format!("no answer within {ms} ms")),
            )),
            Err(e) => {
                tracing::debug!(model, error = %e, "offload failed");
                Err(miss(Reason::HubUnreachable, Some(e.to_string())))
            }
        }
    }
}

fn output_tensor(t: &wire::Tensor) -> tandem_engine::OutputTensor {
    tandem_engine::OutputTensor {
        name: t.name.clone(),
        shape: t.shape.clone(),
        data: tandem_shared::convert::tensor_data(t),
    }
}
