//! The shifted stream: Fashion-MNIST t10k (the shipped test set, `models/vision-fashion/data`)
//! through one of the hub's declared shifts (`tandem_hub::eval::shift`, a camera-like change
//! such as `brightness:0.15`), in a seeded order, without the images the promotion gate judges
//! the original accuracy on, cut into consecutive phases: each input is
//! sent once, in one phase only. Also the cloud model's answers (cloud-only accuracy),
//! computed in process with the same engine and pre-processing the hub runs.

use anyhow::Context as _;
use bytes::Bytes;
use std::path::Path;
use tandem_hub::eval::dataset::{Payload, shipped};
use tandem_hub::eval::shift::Shift;

/// The model the loop runs on.
pub const MODEL: &str = "vision-fashion";

/// One input of the stream: the request body and its true class.
#[derive(Debug, Clone)]
pub struct Item {
    /// The body posted to the classify endpoint: PNG bytes of the shifted image (what a
    /// camera would send), or a sentence in UTF-8 ([`super::text`]).
    pub body: Bytes,
    /// The true class index.
    pub truth: usize,
}

/// The stream and the model's class labels.
#[derive(Debug)]
pub struct Stream {
    /// Class labels, in index order.
    pub labels: Vec<String>,
    /// The inputs, in stream order.
    pub items: Vec<Item>,
}

/// xorshift64*: the seeded order of the stream.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Shuffles `v` with `seed` (Fisher-Yates).
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut state = seed.max(1);
    for i in (1..v.len()).rev() {
        v.swap(i, (next(&mut state) % (i as u64 + 1)) as usize);
    }
}

/// Loads the t10k set without its first `train.original_items` images (the gate's original
/// set: the stream never holds a shifted copy of an image the gate judges on), shuffles the
/// rest with `seed` (Fisher-Yates), shifts every image.
pub fn load(repo: &Path, shift: &str, seed: u64) -> anyhow::Result<Stream> {
    let shift: Shift = shift.parse()?;
    let set = shipped(&repo.join("models").join(MODEL), 0)?;
    let first = tandem_hub::train::TrainConfig::default().original_items;
    let mut order: Vec<usize> = (first.min(set.items.len())..set.items.len()).collect();
    shuffle(&mut order, seed);
    let items = order
        .iter()
        .map(|&i| {
            let it = &set.items[i];
            match shift.apply(&it.input, i as u64)? {
                Payload::Image(png) => Ok(Item {
                    body: png,
                    truth: it.truth,
                }),
                Payload::Text(_) => anyhow::bail!("{MODEL} is an image model"),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Stream {
        labels: set.labels,
        items,
    })
}

/// The cloud model's class for each item of `model`'s stream (in process, the hub's engine
/// and pre-processing, with `model` alone loaded): 64 images or 16 sentences ([`super::text`])
/// a call.
pub fn cloud_answers(repo: &Path, model: &str, items: &[Item]) -> anyhow::Result<Vec<usize>> {
    use tandem_agent::inference::Input;
    let mut settings = crate::cascade::settings(repo, "cloud");
    settings.models.enabled = vec![model.into()];
    let text = model == super::text::MODEL;
    let (_, engine) = tandem_engine::engine::start(&settings, Default::default())?;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(if text { 16 } else { 64 }) {
        let input = if text {
            let utf8 = |i: &Item| String::from_utf8_lossy(&i.body).into_owned();
            Input::Texts(chunk.iter().map(utf8).collect())
        } else {
            Input::Images(chunk.iter().map(|i| i.body.clone()).collect())
        };
        let inf = engine
            .infer_blocking(model, input)
            .context("the cloud variant")?;
        anyhow::ensure!(inf.predictions.len() == chunk.len(), "one answer per input");
        out.extend(inf.predictions.iter().map(|p| p.index));
    }
    engine.shutdown();
    Ok(out)
}
