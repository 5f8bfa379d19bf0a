//! Measures which input form makes the smaller `InferRequest` frame for each committed model,
//! from the sample files in `models/` (docs/wire.md, "Input forms"). Run with
//! `cargo test -p tandem-shared --test wire_input_sizes -- --nocapture` to see the table.

use std::path::{Path, PathBuf};
use tandem_shared::wire::{DEFAULT_MAX_FRAME_BYTES, DType, Input, Message, Tensor, encode_to_vec};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn frame_len(model: &str, input: Input) -> usize {
    let msg = Message::InferRequest {
        request_id: 1,
        model: model.into(),
        model_version: None,
        deadline_ms: 500,
        input,
    };
    encode_to_vec(&msg, DEFAULT_MAX_FRAME_BYTES)
        .expect("encodes")
        .len()
}

fn tensor(name: &str, dtype: DType, shape: &[i64]) -> Tensor {
    let n = shape.iter().product::<i64>() as usize * dtype.size() as usize;
    Tensor {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        data: vec![0; n],
    }
}

fn files(dir: &Path, ext: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("samples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("sample"))
        .collect()
}

/// (min, mean, max) of frame sizes.
fn stats(sizes: &[usize]) -> (usize, usize, usize) {
    let min = sizes.iter().copied().min().unwrap_or(0);
    let max = sizes.iter().copied().max().unwrap_or(0);
    let mean = sizes.iter().sum::<usize>() / sizes.len().max(1);
    (min, mean, max)
}

fn row(model: &str, form: &str, sizes: &[usize]) -> usize {
    let (min, mean, max) = stats(sizes);
    println!(
        "| {model} | {form} | {} | {min} | {mean} | {max} |",
        sizes.len()
    );
    mean
}

#[test]
fn compact_forms_are_smaller_than_tensors() {
    println!("| model | input form | samples | min frame bytes | mean | max |");
    println!("|---|---|---|---|---|---|");

    let m = "vision-imagenet";
    let jpegs: Vec<usize> = files(&models().join(m).join("samples"), "jpg")
        .into_iter()
        .map(|b| frame_len(m, Input::ImageBytes(b)))
        .collect();
    let jpeg = row(m, "ImageBytes (JPEG 512x512 as committed)", &jpegs);
    let f32_t = frame_len(
        m,
        Input::Tensors(vec![tensor("input", DType::F32, &[1, 3, 224, 224])]),
    );
    let u8_t = frame_len(
        m,
        Input::Tensors(vec![tensor("input", DType::U8, &[1, 3, 224, 224])]),
    );
    row(m, "Tensors F32 [1,3,224,224]", &[f32_t]);
    row(m, "Tensors U8 [1,3,224,224] (before normalise)", &[u8_t]);
    assert!(jpeg < u8_t && jpeg < f32_t);

    let m = "vision-fashion";
    let pngs: Vec<usize> = files(&models().join(m).join("samples"), "png")
        .into_iter()
        .map(|b| frame_len(m, Input::ImageBytes(b)))
        .collect();
    let png = row(m, "ImageBytes (PNG 28x28 grey)", &pngs);
    let f32_t = frame_len(
        m,
        Input::Tensors(vec![tensor("input", DType::F32, &[1, 1, 28, 28])]),
    );
    let u8_t = frame_len(
        m,
        Input::Tensors(vec![tensor("input", DType::U8, &[1, 1, 28, 28])]),
    );
    row(m, "Tensors F32 [1,1,28,28]", &[f32_t]);
    row(m, "Tensors U8 [1,1,28,28]", &[u8_t]);
    assert!(png < u8_t && u8_t < f32_t);

    let m = "text-sentiment";
    let dir = models().join(m);
    let jsonl = std::fs::read_to_string(dir.join("samples/sentences.jsonl")).expect("samples");
    let texts: Vec<String> = jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("jsonl");
            v["text"].as_str().expect("text").to_owned()
        })
        .collect();
    let all_text: Vec<usize> = texts
        .iter()
        .map(|t| frame_len(m, Input::Text(t.clone())))
        .collect();
    row(m, "Text (UTF-8), all samples", &all_text);
    // Token ids for the reference cases, as the edge tokenizer produced them.
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("testdata/reference.json")).expect("reference"),
    )
    .expect("json");
    let cases = reference["cases"].as_array().expect("cases");
    let (mut text_ref, mut tok_ref) = (Vec::new(), Vec::new());
    for case in cases {
        text_ref.push(frame_len(
            m,
            Input::Text(case["text"].as_str().expect("text").to_owned()),
        ));
        let inputs = case["inputs"].as_array().expect("inputs");
        let tensors = inputs
            .iter()
            .map(|i| {
                let data = std::fs::read(dir.join(i["file"].as_str().expect("file"))).expect("bin");
                let shape: Vec<i64> = i["shape"]
                    .as_array()
                    .expect("shape")
                    .iter()
                    .map(|d| d.as_i64().expect("dim"))
                    .collect();
                Tensor {
                    name: i["name"].as_str().expect("name").to_owned(),
                    dtype: DType::I64,
                    shape,
                    data,
                }
            })
            .collect();
        tok_ref.push(frame_len(m, Input::Tensors(tensors)));
    }
    let text = row(m, "Text (UTF-8), reference cases", &text_ref);
    let tok = row(
        m,
        "Tensors I64 input_ids + attention_mask, reference cases",
        &tok_ref,
    );
    assert!(text < tok);
}
