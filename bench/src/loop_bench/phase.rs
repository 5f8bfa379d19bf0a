//! One phase of the stream sent through the devices' API (`POST /v1/classify/{model}`), the
//! items dealt round-robin to the devices, each device sending its share back to back; what
//! each answer was (route, the edge's class, the returned class, the versions), and the
//! figures of a phase against the truth and the cloud model's answers.

use super::rig::Rig;
use super::stream::Item;
use anyhow::{Context as _, bail};
use serde_json::Value;
use std::collections::BTreeSet;

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Offloaded to the hub (`route = cloud`).
    pub offloaded: bool,
    /// The edge model's class.
    pub edge: String,
    /// The class returned (the hub's when offloaded).
    pub returned: String,
    /// The edge version that answered.
    pub edge_version: String,
}

/// Sends `items` through the devices; answers in `items` order.
pub async fn send(rig: &Rig, items: &[Item]) -> anyhow::Result<Vec<Answer>> {
    let n = rig.agents.len();
    let mut tasks = Vec::new();
    for (d, agent) in rig.agents.iter().enumerate() {
        let url = format!("http://{}/v1/classify/{}", agent.addr, rig.model);
        let mine: Vec<(usize, Item)> = items
            .iter()
            .enumerate()
            .skip(d)
            .step_by(n)
            .map(|(i, it)| (i, it.clone()))
            .collect();
        let http = rig.http.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(mine.len());
            for (i, it) in mine {
                let r = http.post(&url).body(it.body).send().await?;
                let status = r.status();
                let text = r.text().await?;
                if !status.is_success() {
                    bail!("{url}: {status}: {text}");
                }
                let v: Value = serde_json::from_str(&text).with_context(|| text.clone())?;
                out.push((i, parse(&v).with_context(|| text.clone())?));
            }
            anyhow::Ok(out)
        }));
    }
    let mut all: Vec<Option<Answer>> = vec![None; items.len()];
    for t in tasks {
        for (i, a) in t.await?? {
            all[i] = Some(a);
        }
    }
    all.into_iter()
        .map(|a| a.context("an item without an answer"))
        .collect()
}

fn parse(v: &Value) -> anyhow::Result<Answer> {
    if v["degraded"] == true {
        bail!("a degraded answer (the hub failed during the benchmark)");
    }
    let s = |x: &Value| x.as_str().map(str::to_string).context("a string");
    let offloaded = v["route"] == "cloud";
    Ok(if offloaded {
        Answer {
            offloaded,
            edge: s(&v["local"]["label"])?,
            returned: s(&v["label"])?,
            edge_version: s(&v["local"]["version"]).unwrap_or_default(),
        }
    } else {
        Answer {
            offloaded,
            edge: s(&v["label"])?,
            returned: s(&v["label"])?,
            edge_version: s(&v["version"])?,
        }
    })
}

/// A phase's figures.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Edge accuracy.
    pub edge: f64,
    /// Share offloaded.
    pub offload: f64,
    /// Cascade accuracy (the answers returned).
    pub cascade: f64,
    /// Cloud-only accuracy (the cloud model on every input).
    pub cloud: f64,
    /// Bytes sent to the hub for inference (whole wire frames of the offloaded requests).
    pub uplink_bytes: usize,
    /// The same if every input went to the hub.
    pub cloud_only_bytes: usize,
    /// The edge versions that answered.
    pub versions: BTreeSet<String>,
}

impl Figures {
    /// Cascade accuracy / cloud-only accuracy.
    pub fn ratio(&self) -> f64 {
        self.cascade / self.cloud
    }
}

/// The figures of `answers` to `items` of `model`, with the cloud model's classes `cloud` and
/// class `labels`.
pub fn figures(
    model: &str,
    items: &[Item],
    answers: &[Answer],
    cloud: &[usize],
    labels: &[String],
) -> Figures {
    let n = items.len();
    let share = |k: usize| k as f64 / n.max(1) as f64;
    let right = |f: &dyn Fn(usize) -> bool| share((0..n).filter(|&i| f(i)).count());
    let truth = |i: usize| labels.get(items[i].truth).map_or("", String::as_str);
    let frames: Vec<usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| super::text::frame_bytes(model, i as u64 + 1, &it.body))
        .collect();
    Figures {
        edge: right(&|i| answers[i].edge == truth(i)),
        offload: share(answers.iter().filter(|a| a.offloaded).count()),
        cascade: right(&|i| answers[i].returned == truth(i)),
        cloud: right(&|i| cloud[i] == items[i].truth),
        uplink_bytes: (0..n)
            .filter(|&i| answers[i].offloaded)
            .map(|i| frames[i])
            .sum(),
        cloud_only_bytes: frames.iter().sum(),
        versions: answers
            .iter()
            .filter(|a| !a.edge_version.is_empty())
            .map(|a| a.edge_version.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loop_bench::stream::MODEL;

    fn answer(offloaded: bool, edge: &str, returned: &str) -> Answer {
        Answer {
            offloaded,
            edge: edge.into(),
            returned: returned.into(),
            edge_version: if offloaded { "" } else { "1.0.1" }.into(),
        }
    }

    #[test]
    fn figures_count_against_the_truth_and_the_cloud() {
        let labels: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let items: Vec<Item> = [0, 1, 1, 0]
            .iter()
            .map(|&truth| Item {
                body: bytes::Bytes::from(vec![7u8; 100 + truth * 50]),
                truth,
            })
            .collect();
        let answers = [
            answer(false, "a", "a"), // edge right, kept
            answer(true, "a", "b"),  // edge wrong, the hub right
            answer(true, "a", "a"),  // both wrong
            answer(false, "b", "b"), // edge wrong, kept
        ];
        let cloud = [0, 1, 0, 0];
        let f = figures(MODEL, &items, &answers, &cloud, &labels);
        assert_eq!(f.edge, 0.25);
        assert_eq!(f.offload, 0.5);
        assert_eq!(f.cascade, 0.5);
        assert_eq!(f.cloud, 0.75);
        assert!((f.ratio() - 2.0 / 3.0).abs() < 1e-12);
        let frame = |i: usize| crate::cascade::frame_bytes(MODEL, i as u64 + 1, &items[i].body);
        assert_eq!(f.uplink_bytes, frame(1) + frame(2));
        assert_eq!(f.cloud_only_bytes, (0..4).map(frame).sum::<usize>());
        assert!(f.uplink_bytes > 2 * 150 && f.uplink_bytes < f.cloud_only_bytes);
        assert_eq!(f.versions.into_iter().collect::<Vec<_>>(), vec!["1.0.1"]);
    }
}
