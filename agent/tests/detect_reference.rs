//! Detection, Rust vs Python: the same input tensors through the engine give the boxes that
//! Python onnxruntime plus `models/detection_ref.py` (decode, NMS) produced (same count, class
//! and order; corners within 0.5 px, scores within 1e-3), and end to end from the committed
//! photos every confident Python box (0.2 over the answer threshold, its object's best class)
//! has a Rust box of its class at IoU >= 0.8 (the JPEG decoders and resize filters differ
//! slightly) — boxes on real photos.

mod common;

use bytes::Bytes;
use common::{
    detector_names, engine, infer_reference_case, models_dir, read_json, variant_cases,
    variant_present,
};
use serde_json::Value;
use tandem_agent::inference::Input;
use tandem_shared::detect::nms::iou;
use tandem_shared::detect::{DETECTIONS_OUTPUT, Detection, Detections};
use tandem_shared::oip::TensorData;

fn boxes(case: &Value) -> Vec<Detection> {
    serde_json::from_value(case["detections"].clone()).expect("detections parse")
}

#[test]
fn engine_boxes_match_python_onnxruntime_on_the_same_tensors() {
    let mut checked = 0;
    for model in detector_names() {
        let refs = read_json(&models_dir().join(&model).join("testdata/reference.json"));
        for variant in ["edge", "cloud"] {
            if !variant_present(&model, variant) {
                continue;
            }
            let e = engine(&[&model], variant);
            for case in variant_cases(&refs, variant) {
                let inf = infer_reference_case(&e, &model, case);
                let got = &inf.detections[0].boxes;
                let want = boxes(case);
                let what = format!("{model} {variant} {}", case["source"]);
                assert_eq!(got.len(), want.len(), "{what}: box count");
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!((g.class, &g.label), (w.class, &w.label), "{what}");
                    assert!((g.score - w.score).abs() < 1e-3, "{what}: {g:?} vs {w:?}");
                    for (a, b) in g.bbox.iter().zip(w.bbox) {
                        assert!((a - b).abs() < 0.5, "{what}: {g:?} vs {w:?}");
                    }
                }
                // The OIP/wire tensor carries the same boxes.
                let t = inf
                    .outputs
                    .iter()
                    .find(|o| o.name == DETECTIONS_OUTPUT)
                    .expect("detections tensor");
                let TensorData::F32(d) = &t.data else {
                    panic!("float tensor")
                };
                let labels: Vec<String> = got.iter().map(|_| String::new()).collect();
                let back = Detections::from_row(d, &labels, 0, 0);
                assert_eq!(back.boxes.len(), got.len(), "{what}: tensor rows");
                eprintln!("{what}: {} boxes agree", got.len());
                checked += got.len();
            }
        }
    }
    assert!(checked >= 10, "only {checked} reference boxes checked");
}

#[test]
fn boxes_on_real_photos_match_the_python_pipeline() {
    let mut checked = 0;
    for model in detector_names() {
        let manifest = read_json(&models_dir().join(&model).join("manifest.json"));
        let expected = read_json(&models_dir().join(&model).join("testdata/expected.json"));
        for variant in ["edge", "cloud"] {
            if !variant_present(&model, variant) {
                continue;
            }
            let thr = manifest["variants"][variant]["detection"]["score_threshold"]
                .as_f64()
                .expect("score_threshold") as f32;
            let e = engine(&[&model], variant);
            for case in variant_cases(&expected, variant) {
                let file = case["input"].as_str().expect("input");
                let bytes = std::fs::read(models_dir().join(&model).join(file)).expect("photo");
                let inf = e
                    .infer_blocking(&model, Input::Images(vec![Bytes::from(bytes)]))
                    .expect("inference runs");
                let got = &inf.detections[0];
                let want = boxes(case);
                let what = format!("{model} {variant} {file}");
                assert!(
                    !want.is_empty(),
                    "{what}: the Python pipeline found nothing"
                );
                // Confident: 0.2 over the answer threshold, and the object's best class (per
                // class NMS keeps runner-up classes of one object: couch 0.35 under chair 0.41
                // on the same box; which of those clears the bar flips with the resize). At
                // 0.1 over it, the INT8 two-scale edge's boxes of partly hidden objects (a
                // person at 0.39 behind two others, couches at 0.30-0.34 in a sofa scene)
                // move by IoU 0.72-0.77 with the pixel differences, among near-equal
                // candidates NMS chooses between.
                let runner_up = |w: &Detection| {
                    want.iter().any(|o| {
                        o.class != w.class && o.score > w.score && iou(&o.bbox, &w.bbox) >= 0.8
                    })
                };
                for w in want
                    .iter()
                    .filter(|w| w.score >= thr + 0.2 && !runner_up(w))
                {
                    let best = got
                        .boxes
                        .iter()
                        .filter(|g| g.class == w.class)
                        .map(|g| iou(&g.bbox, &w.bbox))
                        .fold(0.0f32, f32::max);
                    assert!(best >= 0.8, "{what}: {w:?} best IoU {best}; Rust: {got:?}");
                    checked += 1;
                }
                let (gn, wn) = (got.boxes.len() as i64, want.len() as i64);
                assert!(
                    (gn - wn).abs() <= 1 + wn / 4,
                    "{what}: Rust {gn} boxes, Python {wn}"
                );
            }
        }
    }
    assert!(checked >= 10, "only {checked} photo boxes checked");
}
