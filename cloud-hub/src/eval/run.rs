//! Running an evaluation: the real engine (ONNX Runtime) on the chosen model and variant,
//! every item of a set and of each declared shifted variant, then the metrics overall and by
//! slice, as one [`Report`].

use super::EvalError;
use super::dataset::{Item, LabelledSet, Payload};
use super::metrics::{Judged, compute};
use super::report::{Report, SetInfo, ShiftMetrics, SliceMetrics};
use super::shift::Shift;
use std::collections::BTreeMap;
use tandem_engine::Engine;
use tandem_engine::settings::EngineSettings;

/// What to judge and how to slice.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The model.
    pub model: String,
    /// The variant (`edge`, `cloud`).
    pub variant: String,
    /// Declared shifted variants to judge too.
    pub shifts: Vec<Shift>,
    /// Length of a time-window slice in milliseconds (0: no window slices).
    pub window_ms: u64,
    /// Each device's labels (`group = "north"`), for the device-label slices.
    pub device_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// An engine serving only `model` on `variant`, from `settings`' models folder: the
/// evaluation's own, beside whatever the hub serves.
pub fn start_engine(
    settings: &EngineSettings,
    model: &str,
    variant: &str,
) -> Result<Engine, EvalError> {
    let mut s = settings.clone();
    s.models.enabled = vec![model.to_string()];
    s.models.variant = variant.to_string();
    s.engine.workers = 1;
    let (_, engine) = tandem_engine::engine::start(&s, Default::default())
        .map_err(|e| EvalError::Engine(e.to_string()))?;
    Ok(engine)
}

/// The engine's answers to `inputs`: (class index, probability) each, and the version that
/// answered.
pub fn predict(
    engine: &Engine,
    model: &str,
    inputs: &[Payload],
    rows: usize,
) -> Result<(Vec<(usize, f32)>, String), EvalError> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut version = String::new();
    let mut start = 0;
    while start < inputs.len() {
        // A run of one kind, at most `rows` long.
        let text = matches!(inputs[start], Payload::Text(_));
        let end = (start..inputs.len())
            .take(rows.max(1))
            .take_while(|i| matches!(inputs[*i], Payload::Text(_)) == text)
            .last()
            .map_or(start + 1, |i| i + 1);
        let chunk = &inputs[start..end];
        let input = super::dataset::engine_input(chunk);
        let inf = engine
            .infer_blocking(model, input)
            .map_err(|e| EvalError::Inference(e.to_string()))?;
        version = inf.version;
        out.extend(inf.predictions.into_iter().map(|p| (p.index, p.score)));
        start = end;
    }
    Ok((out, version))
}

fn judged(items: &[Item], preds: &[(usize, f32)]) -> Vec<Judged> {
    items
        .iter()
        .zip(preds)
        .map(|(i, &(predicted, confidence))| Judged {
            truth: i.truth,
            predicted,
            confidence,
        })
        .collect()
}

/// The window's start as RFC 3339.
fn window_name(start_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(start_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| start_ms.to_string())
}

/// The slices each item falls in: (kind, value); a shipped item (no device) in none.
fn slice_keys(plan: &Plan, item: &Item) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    if let Some(d) = &item.device {
        keys.push(("label_source".into(), item.source.as_str().into()));
        keys.push(("device".into(), d.clone()));
        for (k, v) in plan.device_labels.get(d).into_iter().flatten() {
            keys.push(("device_label".into(), format!("{k}={v}")));
        }
    }
    if let (Some(t), w) = (item.time_ms, plan.window_ms)
        && w > 0
    {
        keys.push(("window".into(), window_name(t / w * w)));
    }
    keys
}

/// Judges `set` (and its shifted variants) with `engine`, which serves `plan.model` on
/// `plan.variant`; at most `rows` inputs per engine request.
pub fn evaluate(
    engine: &Engine,
    plan: &Plan,
    set: &LabelledSet,
    rows: usize,
) -> Result<Report, EvalError> {
    if set.items.is_empty() {
        return Err(EvalError::EmptySet(set.name.clone()));
    }
    let inputs: Vec<Payload> = set.items.iter().map(|i| i.input.clone()).collect();
    let (preds, version) = predict(engine, &plan.model, &inputs, rows)?;
    let all = judged(&set.items, &preds);
    let overall = compute(&set.labels, &all);

    let mut groups: BTreeMap<(String, String), Vec<Judged>> = BTreeMap::new();
    for (item, j) in set.items.iter().zip(&all) {
        for key in slice_keys(plan, item) {
            groups.entry(key).or_default().push(*j);
        }
    }
    let slices = groups
        .into_iter()
        .map(|((kind, value), js)| SliceMetrics {
            kind,
            value,
            metrics: compute(&set.labels, &js),
        })
        .collect();

    let mut shifts = Vec::new();
    for shift in &plan.shifts {
        let shifted = inputs
            .iter()
            .enumerate()
            .map(|(i, p)| shift.apply(p, i as u64))
            .collect::<Result<Vec<_>, _>>()?;
        let (preds, _) = predict(engine, &plan.model, &shifted, rows)?;
        shifts.push(ShiftMetrics {
            shift: shift.to_string(),
            metrics: compute(&set.labels, &judged(&set.items, &preds)),
        });
    }

    let mut label_sources = BTreeMap::new();
    for i in &set.items {
        *label_sources
            .entry(i.source.as_str().to_string())
            .or_insert(0) += 1;
    }
    let created_ms = crate::fleet::link::now_ms();
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).map_err(|e| EvalError::Engine(format!("random source: {e}")))?;
    Ok(Report {
        id: format!("{created_ms:013}-{}", hex::encode(tag)),
        model: plan.model.clone(),
        version,
        variant: plan.variant.clone(),
        created_ms,
        set: SetInfo {
            name: set.name.clone(),
            items: set.items.len() as u64,
            label_sources,
        },
        overall,
        slices,
        shifts,
    })
}
