//! The routing policy: a pure function from what is known about a request (local confidence,
//! deadline, the hub's state) to where its answer comes from. No IO, no clock.

use serde::{Deserialize, Serialize};
use tandem_engine::postprocess::Signals;
use tandem_shared::manifest::Signal;

/// How a model is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Always answer on the device.
    Local,
    /// Always ask the hub (the local answer is the fallback).
    Cloud,
    /// Ask the hub when the local answer is not confident enough.
    Cascade,
}

/// Why an answer took its route (reported to callers as `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The local answer was confident.
    Confident,
    /// Policy `local`.
    PolicyLocal,
    /// Policy `cloud`.
    PolicyCloud,
    /// The local signal was under the threshold.
    LowConfidence,
    /// The hub could not be reached (or is backing off after a failure).
    HubUnreachable,
    /// The hub said it is busy.
    HubBusy,
    /// The hub answered with an error.
    HubError,
    /// The hub could not answer within the request's deadline.
    Deadline,
    /// The hub did not answer within `hub.timeout_ms` (no deadline was set).
    HubTimeout,
    /// The input cannot be offloaded (prepared tensors are variant-specific).
    NotOffloadable,
}

/// A model's routing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPolicy {
    /// Mode.
    pub mode: Mode,
    /// Which signal the threshold applies to.
    pub signal: Signal,
    /// Threshold: max_prob / margin at or above it, or entropy at or below it, is confident.
    pub threshold: f32,
}

/// What the agent knows about the hub right now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HubView {
    /// A connection is up, or may be tried now (not backing off).
    pub available: bool,
    /// Smoothed round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Smoothed hub service time, milliseconds.
    pub service_ms: Option<f64>,
}

/// The facts about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Context {
    /// Confidence signals of the local answer.
    pub signals: Signals,
    /// Milliseconds left before the caller's deadline, if it set one.
    pub remaining_ms: Option<f64>,
    /// Whether the input has a form the hub can take.
    pub offloadable: bool,
    /// The hub.
    pub hub: HubView,
}

/// Where the answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer locally; the policy did not want the hub.
    Local(Reason),
    /// Ask the hub.
    Offload(Reason),
    /// The policy wanted the hub but the local answer is returned (`degraded: true`).
    Degraded(Reason),
}

/// Whether the local answer is confident under a policy.
pub fn confident(p: &ModelPolicy, s: &Signals) -> bool {
    match p.signal {
        Signal::MaxProb => s.max_prob >= p.threshold,
        Signal::Margin => s.margin >= p.threshold,
        Signal::Entropy => s.entropy <= p.threshold,
    }
}

/// The routing decision.
pub fn decide(p: &ModelPolicy, ctx: &Context) -> Decision {
    let want = match p.mode {
        Mode::Local => return Decision::Local(Reason::PolicyLocal),
        Mode::Cloud => Reason::PolicyCloud,
        Mode::Cascade if confident(p, &ctx.signals) => return Decision::Local(Reason::Confident),
        Mode::Cascade => Reason::LowConfidence,
    };
    if !ctx.offloadable {
        return Decision::Degraded(Reason::NotOffloadable);
    }
    if !ctx.hub.available {
        return Decision::Degraded(Reason::HubUnreachable);
    }
    if let (Some(left), Some(rtt)) = (ctx.remaining_ms, ctx.hub.rtt_ms)
        && rtt + ctx.hub.service_ms.unwrap_or(0.0) > left
    {
        return Decision::Degraded(Reason::Deadline);
    }
    Decision::Offload(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(max_prob: f32) -> Context {
        Context {
            signals: Signals {
                max_prob,
                margin: max_prob - (1.0 - max_prob),
                entropy: 0.5,
            },
            remaining_ms: None,
            offloadable: true,
            hub: HubView {
                available: true,
                rtt_ms: Some(2.0),
                service_ms: Some(3.0),
            },
        }
    }

    const CASCADE: ModelPolicy = ModelPolicy {
        mode: Mode::Cascade,
        signal: Signal::MaxProb,
        threshold: 0.7,
    };

    #[test]
    fn cascade_offloads_exactly_the_unsure() {
        assert_eq!(
            decide(&CASCADE, &ctx(0.9)),
            Decision::Local(Reason::Confident)
        );
        assert_eq!(
            decide(&CASCADE, &ctx(0.7)),
            Decision::Local(Reason::Confident)
        );
        assert_eq!(
            decide(&CASCADE, &ctx(0.69)),
            Decision::Offload(Reason::LowConfidence)
        );
    }

    #[test]
    fn modes_and_signals() {
        let local = ModelPolicy {
            mode: Mode::Local,
            ..CASCADE
        };
        assert_eq!(
            decide(&local, &ctx(0.1)),
            Decision::Local(Reason::PolicyLocal)
        );
        let cloud = ModelPolicy {
            mode: Mode::Cloud,
            ..CASCADE
        };
        assert_eq!(
            decide(&cloud, &ctx(0.99)),
            Decision::Offload(Reason::PolicyCloud)
        );
        let entropy = ModelPolicy {
            signal: Signal::Entropy,
            threshold: 0.4,
            ..CASCADE
        };
        assert_eq!(
            decide(&entropy, &ctx(0.99)),
            Decision::Offload(Reason::LowConfidence)
        );
        let margin = ModelPolicy {
            signal: Signal::Margin,
            threshold: 0.5,
            ..CASCADE
        };
        assert_eq!(
            decide(&margin, &ctx(0.8)),
            Decision::Local(Reason::Confident)
        );
    }

    #[test]
    fn degraded_when_the_hub_cannot_help() {
        let mut c = ctx(0.3);
        c.hub.available = false;
        assert_eq!(
            decide(&CASCADE, &c),
            Decision::Degraded(Reason::HubUnreachable)
        );
        let mut c = ctx(0.3);
        c.remaining_ms = Some(4.0);
        assert_eq!(decide(&CASCADE, &c), Decision::Degraded(Reason::Deadline));
        c.remaining_ms = Some(6.0);
        assert_eq!(
            decide(&CASCADE, &c),
            Decision::Offload(Reason::LowConfidence)
        );
        let mut c = ctx(0.3);
        c.offloadable = false;
        assert_eq!(
            decide(&CASCADE, &c),
            Decision::Degraded(Reason::NotOffloadable)
        );
    }
}
