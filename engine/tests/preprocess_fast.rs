//! The SIMD pre-processing path against PIL (the tensors Python made for the shipped models'
//! reference outputs) and against the earlier `image`-crate path, for every resize mode, and
//! with reduced-DCT JPEG decoding on 1080p and 4K frames.
//!
//! Tolerances, in 8-bit pixel levels before normalisation:
//! - vs PIL on the ImageNet samples: max 3, mean 0.5 (libjpeg-turbo and zune-jpeg
//!   round YCbCr differently by up to 1; the resize is PIL's own filter in fixed point);
//! - vs the earlier path at full decode: max 2, mean 0.5;
//! - with a reduced DCT scale (1080p at 1/2, 4K at 1/4 for 224): mean 1, 99.9th percentile 6,
//!   max 12 (the scaled IDCT is a box prefilter; letterbox edges move by a few levels). Seen:
//!   mean 0.18-0.51, p99.9 1-4, max 2-7.

use std::path::{Path, PathBuf};
use tandem_engine::preprocess::image::{self, Backend, Limits};
use tandem_engine::preprocess::reference;
use tandem_shared::manifest::{Color, ImagePreprocess, Layout, Resize};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn limits() -> Limits {
    Limits {
        max_width: 8192,
        max_height: 8192,
        max_alloc_bytes: 256 << 20,
    }
}

fn imagenet(resize: Resize, w: u32, h: u32) -> ImagePreprocess {
    ImagePreprocess {
        layout: Layout::NCHW,
        color: Color::Rgb,
        width: w,
        height: h,
        resize,
        shorter_side: Some(256),
        scale: 1.0,
        mean: vec![127.0; 3],
        std: vec![128.0; 3],
        pad_value: 114,
    }
}

/// (max, mean, 99.9th percentile) of |a - b| in pixel levels (tensor units times std).
fn diff(a: &[f32], b: &[f32], std: f32) -> (f32, f32, f32) {
    assert_eq!(a.len(), b.len());
    let mut d: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs() * std).collect();
    let mean = d.iter().sum::<f32>() / d.len() as f32;
    d.sort_by(f32::total_cmp);
    let p999 = d[(d.len() - 1) * 999 / 1000];
    (d[d.len() - 1], mean, p999)
}

fn fast(bytes: &[u8], p: &ImagePreprocess) -> Vec<f32> {
    let (_, data, _) =
        image::prepare_batch_with(&[bytes], p, &limits(), &Backend::Cpu).expect("fast path");
    data
}

fn slow(bytes: &[u8], p: &ImagePreprocess) -> Vec<f32> {
    let n = p.color.channels() * (p.width * p.height) as usize;
    let mut out = vec![0.0; n];
    reference::prepare_into(bytes, p, &limits(), &mut out).expect("reference path");
    out
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .expect("reference tensor")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn imagenet_tensors_match_pil() {
    let dir = models().join("vision-imagenet");
    let refs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("testdata/reference.json")).expect("reference.json"),
    )
    .expect("json");
    let mut checked = 0;
    for case in refs["cases"].as_array().expect("cases") {
        let size = if case["variant"] == "edge" { 224 } else { 260 };
        let p = imagenet(Resize::Stretch, size, size);
        let src = std::fs::read(dir.join(case["source"].as_str().expect("source"))).expect("jpg");
        let want = read_f32(&dir.join(case["inputs"][0]["file"].as_str().expect("file")));
        let (max, mean, _) = diff(&fast(&src, &p), &want, 128.0);
        eprintln!("{} {size}: vs PIL max {max} mean {mean}", case["source"]);
        assert!(
            max <= 3.0 && mean <= 0.5,
            "{}: max {max} mean {mean}",
            case["source"]
        );
        checked += 1;
    }
    assert!(checked >= 6);
}

#[test]
fn every_resize_mode_matches_the_earlier_path() {
    let dir = models().join("vision-imagenet/samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("samples")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for resize in [
        Resize::Stretch,
        Resize::ShorterSideCenterCrop,
        Resize::Letterbox,
    ] {
        for layout in [Layout::NCHW, Layout::NHWC] {
            let p = ImagePreprocess {
                layout,
                ..imagenet(resize, 224, 224)
            };
            for f in files.iter().take(5) {
                let src = std::fs::read(f).expect("jpg");
                let (max, mean, _) = diff(&fast(&src, &p), &slow(&src, &p), 128.0);
                eprintln!(
                    "{resize:?} {layout:?} {}: max {max} mean {mean}",
                    f.display()
                );
                assert!(
                    max <= 2.0 && mean <= 0.5,
                    "{resize:?} {layout:?} {}: max {max} mean {mean}",
                    f.display()
                );
            }
        }
    }
}

/// A sample scaled up to `w` x `h` and encoded as a JPEG (quality 90), like a camera frame.
fn frame_jpeg(w: u32, h: u32) -> Vec<u8> {
    let src = models().join("vision-imagenet/samples/imagenet_00_243.jpg");
    let img = ::image::open(src).expect("sample").to_rgb8();
    let big = ::image::imageops::resize(&img, w, h, ::image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&big)
        .expect("encode");
    out
}

#[test]
fn reduced_dct_decoding_stays_close_on_large_frames() {
    for (w, h) in [(1920, 1080), (3840, 2160)] {
        let jpg = frame_jpeg(w, h);
        let scaled =
            image::decode_at_least(&jpg, Color::Rgb, &limits(), (448, 448)).expect("decodes");
        assert!(
            scaled.width < w && scaled.width >= 448 && scaled.height >= 448,
            "{w}x{h} decoded at {}x{}",
            scaled.width,
            scaled.height
        );
        for resize in [Resize::Stretch, Resize::Letterbox] {
            let p = imagenet(resize, 224, 224);
            let (max, mean, p999) = diff(&fast(&jpg, &p), &slow(&jpg, &p), 128.0);
            eprintln!("{w}x{h} {resize:?}: max {max} mean {mean} p99.9 {p999}");
            assert!(
                mean <= 1.0 && p999 <= 6.0 && max <= 12.0,
                "{w}x{h} {resize:?}: max {max} mean {mean} p99.9 {p999}"
            );
        }
    }
}
