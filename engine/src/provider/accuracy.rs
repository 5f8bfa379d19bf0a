//! The accuracy gate: a session may serve only if it reproduces the model's reference outputs
//! (`testdata/reference.json`: the raw input tensors and the outputs ONNX Runtime's CPU EP
//! gave when the model was built) within the variant's tolerance (its manifest's `ep_max_abs_diff`,
//! else `runtime.accuracy_max_abs_diff`; `RuntimeConfig::accuracy_tolerance`). The same runs time
//! the session, for the measured `auto` choice.

use crate::model::ModelFiles;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Instant;

/// The reference file inside a model folder.
pub const REFERENCE_FILE: &str = "testdata/reference.json";

#[derive(Debug, Deserialize)]
struct RefFile {
    cases: Vec<RefCase>,
}

#[derive(Debug, Deserialize)]
struct RefCase {
    variant: String,
    #[serde(default)]
    optional: bool,
    inputs: Vec<RefInput>,
    outputs: Vec<RefOutput>,
}

#[derive(Debug, Deserialize)]
struct RefInput {
    name: String,
    dtype: String,
    shape: Vec<i64>,
    file: String,
}

#[derive(Debug, Deserialize)]
struct RefOutput {
    name: String,
    data: Vec<f64>,
}

/// One input tensor of a case.
#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// One reference case: inputs and the expected outputs.
#[derive(Debug, Clone)]
pub struct Case {
    inputs: Vec<(String, Vec<i64>, Data)>,
    outputs: Vec<(String, Vec<f64>)>,
}

/// The result of running the cases on a session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Check {
    /// Largest |output - reference| over every case and output.
    pub max_abs_diff: f64,
    /// Median time of one case's run, in microseconds (over every timed run).
    pub median_us: f64,
    /// Runs timed.
    pub runs: usize,
}

/// The model variant's reference cases; empty when the folder has none (an installed bundle:
/// its self-tests are the check then). `Err` when the file is there but unreadable.
pub fn load(files: &ModelFiles) -> Result<Vec<Case>, String> {
    let path = files.dir.join(REFERENCE_FILE);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let bad = |m: String| format!("{}: {m}", path.display());
    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    let doc: RefFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for c in doc
        .cases
        .into_iter()
        .filter(|c| c.variant == files.role.as_str())
    {
        let mut inputs = Vec::new();
        for i in c.inputs {
            let p = files.dir.join(&i.file);
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(_) if c.optional => continue,
                Err(e) => return Err(bad(format!("{}: {e}", p.display()))),
            };
            let data = match i.dtype.as_str() {
                "float32" => Data::F32(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                "int64" => Data::I64(
                    bytes
                        .chunks_exact(8)
                        .map(|b| {
                            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                        })
                        .collect(),
                ),
                other => return Err(bad(format!("input dtype `{other}` is not float32/int64"))),
            };
            inputs.push((i.name, i.shape, data));
        }
        let outputs = c.outputs.into_iter().map(|o| (o.name, o.data)).collect();
        out.push(Case { inputs, outputs });
    }
    Ok(out)
}

/// Runs every case once (the accuracy check), then again while the time budget lasts (at
/// least `min_runs` runs in all, timed).
pub fn check(
    session: &mut Session,
    cases: &[Case],
    min_runs: usize,
    budget_ms: u64,
) -> Result<Check, String> {
    let mut max_abs_diff = 0.0f64;
    let mut times = Vec::new();
    let started = Instant::now();
    let mut round = 0;
    while round == 0
        || (times.len() < min_runs && started.elapsed().as_millis() < u128::from(budget_ms))
    {
        for c in cases {
            let t = Instant::now();
            let diff = run_case(session, c)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
            if round == 0 {
                max_abs_diff = max_abs_diff.max(diff);
            }
        }
        round += 1;
        if cases.is_empty() {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(Check {
        max_abs_diff,
        median_us: times.get(times.len() / 2).copied().unwrap_or(0.0),
        runs: times.len(),
    })
}

fn run_case(session: &mut Session, c: &Case) -> Result<f64, String> {
    let rt = |e: ort::Error| e.to_string();
    let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
    for (name, shape, data) in &c.inputs {
        let v: SessionInputValue<'_> = match data {
            Data::F32(d) => Tensor::from_array((shape.clone(), d.clone()))
                .map_err(rt)?
                .into(),
            Data::I64(d) => Tensor::from_array((shape.clone(), d.clone()))
                .map_err(rt)?
                .into(),
        };
        values.push((Cow::Owned(name.clone()), v));
    }
    let outputs = session.run(values).map_err(rt)?;
    let mut worst = 0.0f64;
    for (name, want) in &c.outputs {
        let v = outputs
            .get(name)
            .ok_or_else(|| format!("the model gave no output `{name}`"))?;
        let (_, got) = v.try_extract_tensor::<f32>().map_err(rt)?;
        if got.len() != want.len() {
            return Err(format!(
                "output `{name}` has {} values, the reference {}",
                got.len(),
                want.len()
            ));
        }
        for (g, w) in got.iter().zip(want) {
            let d = (f64::from(*g) - w).abs();
            worst = if d.is_nan() {
                f64::INFINITY
            } else {
                worst.max(d)
            };
        }
    }
    Ok(worst)
}
