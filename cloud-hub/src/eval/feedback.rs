//! A labelled set from the fleet's feedback: the examples of one model in one split
//! (collapsed by input), each labelled by its correction, else by the cloud model's answer
//! (marked `teacher`); unlabelled ones and labels that are not the model's classes are left
//! out (counted in the log).

use super::dataset::{Item, LabelSource, LabelledSet, Payload};
use crate::feedback::{ExampleFilter, FeedbackError, Labelled, Split, Store};
use bytes::Bytes;

/// The examples of `model` in `split`, at most `limit` (0: all), labelled against `labels`.
pub fn from_feedback(
    store: &Store,
    model: &str,
    labels: &[String],
    split: Split,
    limit: usize,
) -> Result<LabelledSet, FeedbackError> {
    let limit = if limit == 0 { usize::MAX } else { limit };
    let filter = ExampleFilter {
        model: Some(model.to_string()),
        split: Some(split),
        labelled: true,
    };
    let (mut items, mut skipped) = (Vec::new(), 0u64);
    'pages: for page in store.example_pages(&filter, 500) {
        for e in page? {
            if items.len() >= limit {
                break 'pages;
            }
            let truth = e
                .label
                .as_ref()
                .and_then(|l| labels.iter().position(|x| x == l));
            let (Some(truth), Some(source)) = (truth, e.label_source) else {
                skipped += 1;
                continue;
            };
            let path = store.dir().join(&e.input);
            let bytes = std::fs::read(&path).map_err(|source| FeedbackError::Io {
                path: path.clone(),
                source,
            })?;
            let input = if e.input_kind == "text" {
                Payload::Text(String::from_utf8_lossy(&bytes).into_owned())
            } else {
                Payload::Image(Bytes::from(bytes))
            };
            items.push(Item {
                input,
                truth,
                source: match source {
                    Labelled::Correction => LabelSource::Correction,
                    Labelled::Teacher => LabelSource::Teacher,
                },
                device: e.devices.iter().next().cloned(),
                time_ms: Some(e.time_ms),
            });
        }
    }
    if skipped > 0 {
        tracing::info!(
            model,
            skipped,
            "feedback examples whose label is not one of the model's classes left out"
        );
    }
    Ok(LabelledSet {
        name: format!("feedback:{}", split.as_str()),
        labels: labels.to_vec(),
        items,
    })
}
