//! Accuracy on the committed labelled data equals what the manifest records (within 0.2
//! points): the whole 10,000-image Fashion-MNIST test set for both variants, and the held-out
//! sentences for the text model.

mod common;

use common::{engine, models_dir, read_json, variant_present};
use flate2::read::GzDecoder;
use std::io::Read;
use tandem_agent::inference::Input;
use tandem_shared::oip::{InputTensor, TensorData};

fn gunzip(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

#[test]
fn fashion_accuracy_matches_recorded_figures() {
    let dir = models_dir().join("vision-fashion");
    let images = gunzip(&dir.join("data/t10k-images-idx3-ubyte.gz"));
    let labels = gunzip(&dir.join("data/t10k-labels-idx1-ubyte.gz"));
    assert_eq!(be32(&images, 0), 2051, "idx image magic");
    assert_eq!(be32(&labels, 0), 2049, "idx label magic");
    let (n, rows, cols) = (be32(&images, 4), be32(&images, 8), be32(&images, 12));
    assert_eq!(n, 10_000);
    assert_eq!(be32(&labels, 4), n);
    let (pixels, labels) = (&images[16..], &labels[8..]);
    let manifest = read_json(&dir.join("manifest.json"));
    for variant in ["edge", "cloud"] {
        assert!(variant_present("vision-fashion", variant));
        let v = &manifest["variants"][variant];
        let pre = &v["preprocess"];
        let (scale, mean, std) = (
            pre["scale"].as_f64().expect("scale") as f32,
            pre["mean"][0].as_f64().expect("mean") as f32,
            pre["std"][0].as_f64().expect("std") as f32,
        );
        let input = v["inputs"][0]["name"]
            .as_str()
            .expect("input name")
            .to_string();
        let e = engine(&["vision-fashion"], variant);
        let per = rows * cols;
        let mut correct = 0usize;
        // At most engine.max_rows_per_request (64 by default) rows per request.
        for (chunk, lab) in pixels.chunks(per * 64).zip(labels.chunks(64)) {
            let data: Vec<f32> = chunk
                .iter()
                .map(|p| (f32::from(*p) * scale - mean) / std)
                .collect();
            let t = InputTensor {
                name: input.clone(),
                shape: vec![lab.len() as i64, 1, rows as i64, cols as i64],
                data: TensorData::F32(data),
            };
            let inf = e
                .infer_blocking("vision-fashion", Input::tensors(vec![t]))
                .expect("batch runs");
            correct += inf
                .predictions
                .iter()
                .zip(lab)
                .filter(|(p, l)| p.index == usize::from(**l))
                .count();
        }
        let acc = correct as f64 / n as f64;
        let recorded = v["accuracy"]["top1"].as_f64().expect("recorded top1");
        eprintln!(
            "vision-fashion {variant}: measured {:.2}%, recorded {:.2}%",
            acc * 100.0,
            recorded * 100.0
        );
        assert!(
            (acc - recorded).abs() <= 0.002,
            "{variant}: measured {acc}, recorded {recorded}"
        );
    }
}

#[test]
fn text_accuracy_matches_recorded_figures() {
    let dir = models_dir().join("text-sentiment");
    let manifest = read_json(&dir.join("manifest.json"));
    let labels: Vec<String> =
        std::fs::read_to_string(dir.join(manifest["labels"].as_str().expect("labels")))
            .expect("labels file")
            .lines()
            .map(str::to_string)
            .collect();
    for variant in ["edge", "cloud"] {
        if !variant_present("text-sentiment", variant) {
            continue;
        }
        let v = &manifest["variants"][variant];
        let dataset = v["accuracy"]["dataset"].as_str().expect("accuracy dataset");
        let text =
            std::fs::read_to_string(dir.join(dataset)).unwrap_or_else(|e| panic!("{dataset}: {e}"));
        let rows: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("jsonl"))
            .collect();
        let e = engine(&["text-sentiment"], variant);
        let mut correct = 0usize;
        for batch in rows.chunks(32) {
            let texts: Vec<String> = batch
                .iter()
                .map(|r| r["text"].as_str().expect("text").to_string())
                .collect();
            let inf = e
                .infer_blocking("text-sentiment", Input::Texts(texts))
                .expect("batch runs");
            for (p, r) in inf.predictions.iter().zip(batch) {
                let want = match &r["label"] {
                    serde_json::Value::String(s) => {
                        labels.iter().position(|l| l == s).expect("known label")
                    }
                    other => other.as_u64().expect("label index") as usize,
                };
                correct += usize::from(p.index == want);
            }
        }
        let acc = correct as f64 / rows.len() as f64;
        let recorded = v["accuracy"]["top1"].as_f64().expect("recorded top1");
        eprintln!(
            "text-sentiment {variant}: measured {:.2}% on {}, recorded {:.2}%",
            acc * 100.0,
            rows.len(),
            recorded * 100.0
        );
        assert_eq!(
            v["accuracy"]["samples"].as_u64(),
            Some(rows.len() as u64),
            "sample count"
        );
        assert!(
            (acc - recorded).abs() <= 0.002,
            "{variant}: measured {acc}, recorded {recorded}"
        );
    }
}
