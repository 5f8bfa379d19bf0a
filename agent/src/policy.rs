//! The routing policy: a pure function from what is known about a request (local confidence,
//! deadline, the hub's state) to where its answer comes from. No IO, no clock.

use serde::{Deserialize, Serialize};
use tandem_shared::answer::ClassSignals;
use tandem_shared::detect::DetectionSignals;
use tandem_shared::detect::cascade::CascadeSpec;
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
    /// The model has no variant on this device: only the hub can answer.
    NoLocalVariant,
    /// The local queue was full: the hub is asked instead.
    LocalBusy,
    /// The faces in the image could not be blurred (`[privacy]`): it was not offloaded.
    BlurFailed,
}

/// A model's routing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPolicy {
    /// Mode.
    pub mode: Mode,
    /// Which signal the threshold applies to.
    pub signal: Signal,
    /// Threshold: max_prob / margin at or above it, or entropy at or below it, is confident.
    pub threshold: f32,
    /// A detection model's frame policy (uncertain band, box count); `None`: every frame of a
    /// detection model is confident.
    pub boxes: Option<CascadeSpec>,
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

/// What the device itself made of the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Local {
    /// The local variant answered with these confidence signals.
    Answered(ClassSignals),
    /// The local detection variant answered with these per-frame signals.
    Boxes(DetectionSignals),
    /// The model has no local variant.
    NoVariant,
    /// The local queue was full.
    QueueFull,
}

/// The facts about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Context {
    /// The local outcome.
    pub local: Local,
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
    /// There is no local answer and the hub cannot be asked: the request fails.
    Fail(Reason),
}

/// Whether the local answer is confident under a policy.
pub fn confident(p: &ModelPolicy, s: &ClassSignals) -> bool {
    match p.signal {
        Signal::MaxProb => s.max_prob >= p.threshold,
        Signal::Margin => s.margin >= p.threshold,
        Signal::Entropy => s.entropy <= p.threshold,
    }
}

/// The routing decision.
///
/// Without a local answer (no local variant, or the local queue full) the hub is the only
/// way to answer: the mode does not matter, except that `local` never offloads, and when the
/// hub cannot help the decision is [`Decision::Fail`].
pub fn decide(p: &ModelPolicy, ctx: &Context) -> Decision {
    let want = match (ctx.local, p.mode) {
        (Local::NoVariant, _) => Reason::NoLocalVariant,
        (Local::QueueFull, Mode::Local) => return Decision::Fail(Reason::LocalBusy),
        (Local::QueueFull, _) => Reason::LocalBusy,
        (Local::Answered(_), Mode::Local) => return Decision::Local(Reason::PolicyLocal),
        (Local::Answered(_), Mode::Cloud) => Reason::PolicyCloud,
        (Local::Answered(s), Mode::Cascade) if confident(p, &s) => {
            return Decision::Local(Reason::Confident);
        }
        (Local::Answered(_), Mode::Cascade) => Reason::LowConfidence,
        (Local::Boxes(_), Mode::Local) => return Decision::Local(Reason::PolicyLocal),
        (Local::Boxes(_), Mode::Cloud) => Reason::PolicyCloud,
        (Local::Boxes(s), Mode::Cascade) if p.boxes.as_ref().is_none_or(|b| b.confident(&s)) => {
            return Decision::Local(Reason::Confident);
        }
        (Local::Boxes(_), Mode::Cascade) => Reason::LowConfidence,
    };
    let fallback = |r| match ctx.local {
        Local::Answered(_) | Local::Boxes(_) => Decision::Degraded(r),
        _ => Decision::Fail(r),
    };
    if !ctx.offloadable {
        return fallback(Reason::NotOffloadable);
    }
    if !ctx.hub.available {
        return fallback(Reason::HubUnreachable);
    }
    if let (Some(left), Some(rtt)) = (ctx.remaining_ms, ctx.hub.rtt_ms)
        && rtt + ctx.hub.service_ms.unwrap_or(0.0) > left
    {
        return fallback(Reason::Deadline);
    }
    Decision::Offload(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(max_prob: f32) -> Context {
        Context {
            local: Local::Answered(ClassSignals {
                max_prob,
                margin: max_prob - (1.0 - max_prob),
                entropy: 0.5,
            }),
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
        boxes: None,
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

    #[test]
    fn a_detection_frame_goes_by_its_uncertain_boxes() {
        let boxes = ModelPolicy {
            boxes: Some(CascadeSpec::band(0.3, 0.5)),
            ..CASCADE
        };
        let frame = |uncertain| {
            let mut c = ctx(0.0);
            c.local = Local::Boxes(DetectionSignals {
                count: 3,
                min_score: 0.4,
                max_score: 0.9,
                uncertain,
                rare: 0,
            });
            c
        };
        assert_eq!(
            decide(&boxes, &frame(0)),
            Decision::Local(Reason::Confident)
        );
        assert_eq!(
            decide(&boxes, &frame(1)),
            Decision::Offload(Reason::LowConfidence)
        );
        // No frame policy: detection frames stay local, whatever the classification threshold.
        assert_eq!(
            decide(&CASCADE, &frame(5)),
            Decision::Local(Reason::Confident)
        );
        let mut late = frame(2);
        late.remaining_ms = Some(1.0);
        assert_eq!(decide(&boxes, &late), Decision::Degraded(Reason::Deadline));
    }

    #[test]
    fn without_a_local_answer_the_hub_is_the_only_way() {
        let mut c = ctx(0.0);
        c.local = Local::NoVariant;
        for mode in [Mode::Local, Mode::Cloud, Mode::Cascade] {
            let p = ModelPolicy { mode, ..CASCADE };
            assert_eq!(decide(&p, &c), Decision::Offload(Reason::NoLocalVariant));
        }
        c.local = Local::QueueFull;
        assert_eq!(decide(&CASCADE, &c), Decision::Offload(Reason::LocalBusy));
        let local = ModelPolicy {
            mode: Mode::Local,
            ..CASCADE
        };
        assert_eq!(decide(&local, &c), Decision::Fail(Reason::LocalBusy));
        c.hub.available = false;
        assert_eq!(decide(&CASCADE, &c), Decision::Fail(Reason::HubUnreachable));
        c.hub.available = true;
        c.remaining_ms = Some(1.0);
        assert_eq!(decide(&CASCADE, &c), Decision::Fail(Reason::Deadline));
        c.remaining_ms = None;
        c.offloadable = false;
        assert_eq!(decide(&CASCADE, &c), Decision::Fail(Reason::NotOffloadable));
    }
}
