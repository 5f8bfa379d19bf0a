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

/// One input of the stream: the shifted image as PNG and its true class.
#[derive(Debug, Clone)]
pub struct Item {
    /// PNG bytes (what a camera would send).
    pub png: Bytes,
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

/// Loads the t10k set without its first `train.original_items` images (the gate's original
/// set: the stream never holds a shifted copy of an image the gate judges on), shuffles the
/// rest with `seed` (Fisher-Yates), shifts every image.
pub fn load(repo: &Path, shift: &str, seed: u64) -> anyhow::Result<Stream> {
    let shift: Shift = shift.parse()?;
    let set = shipped(&repo.join("models").join(MODEL), 0)?;
    let first = tandem_hub::train::TrainConfig::default().original_items;
    let mut order: Vec<usize> = (first.min(set.items.len())..set.items.len()).collect();
    let mut state = seed.max(1);
    for i in (1..order.len()).rev() {
        order.swap(i, (next(&mut state) % (i as u64 + 1)) as usize);
    }
    let items = order
        .iter()
        .map(|&i| {
            let it = &set.items[i];
            match shift.apply(&it.input, i as u64)? {
                Payload::Image(png) => Ok(Item {
                    png,
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

/// The cloud model's class for each item (in process, `max_rows_per_request` images a call).
pub fn cloud_answers(repo: &Path, items: &[Item]) -> anyhow::Result<Vec<usize>> {
    let (_, engine) =
        tandem_engine::engine::start(&crate::cascade::settings(repo, "cloud"), Default::default())?;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(64) {
        let input =
            tandem_agent::inference::Input::Images(chunk.iter().map(|i| i.png.clone()).collect());
        let inf = engine
            .infer_blocking(MODEL, input)
            .context("the cloud variant")?;
        anyhow::ensure!(inf.predictions.len() == chunk.len(), "one answer per image");
        out.extend(inf.predictions.iter().map(|p| p.index));
    }
    engine.shutdown();
    Ok(out)
}
