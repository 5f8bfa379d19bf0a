//! Pre-processing details the issue pins down: tokenisation truncates at the model's limit and
//! pads per batch only (the shipped tokenizer.json pads to a fixed 128); image layouts and
//! resize modes produce the declared shapes.

mod common;

use common::{models_dir, read_json};
use tandem_agent::inference::preprocess::image::{self, Limits};
use tandem_agent::inference::preprocess::text::TextEncoder;
use tandem_shared::manifest::{Color, ImagePreprocess, Layout, Resize, TextPreprocess};

fn encoder() -> TextEncoder {
    let m = read_json(&models_dir().join("text-sentiment/manifest.json"));
    let spec: TextPreprocess = serde_json::from_value({
        let mut p = m["variants"]["edge"]["preprocess"].clone();
        p.as_object_mut().expect("object").remove("type");
        p
    })
    .expect("text preprocess");
    TextEncoder::load(
        &models_dir().join("text-sentiment").join(&spec.tokenizer),
        &spec,
    )
    .expect("tokenizer loads")
}

#[test]
fn no_fixed_padding_and_per_batch_padding() {
    let enc = encoder();
    let one = enc.encode_batch(&["good"]).expect("encodes");
    let len = one[0].1[1];
    assert!(
        len < 10,
        "a one-word text must not be padded to 128: {len} tokens"
    );
    let two = enc
        .encode_batch(&[
            "good",
            "this one is a noticeably longer sentence than the other",
        ])
        .expect("encodes");
    let (ids, mask) = (&two[0], &two[1]);
    assert_eq!(ids.1[0], 2);
    let width = ids.1[1] as usize;
    assert!(width > len as usize && width < 128);
    // The short row is padded with mask 0 up to the long row's length.
    let short_mask = &mask.2[..width];
    assert_eq!(short_mask.iter().filter(|m| **m == 1).count(), len as usize);
    assert!(
        mask.2[width..].iter().all(|m| *m == 1),
        "the longest row is all real tokens"
    );
}

#[test]
fn long_texts_are_truncated_at_the_model_limit() {
    let enc = encoder();
    let long = "wonderful ".repeat(400);
    let t = enc.encode_batch(&[long.as_str()]).expect("encodes");
    assert_eq!(t[0].1, vec![1, 128]);
}

#[test]
fn empty_text_is_refused() {
    assert!(encoder().encode_batch(&[""]).is_err());
    assert!(encoder().encode_batch(&["ok", " \n "]).is_err());
}

fn spec(layout: Layout, resize: Resize) -> ImagePreprocess {
    ImagePreprocess {
        layout,
        color: Color::Rgb,
        width: 4,
        height: 2,
        resize,
        shorter_side: Some(4),
        scale: 1.0,
        mean: vec![0.0],
        std: vec![1.0],
        pad_value: 0,
    }
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = ::image::RgbImage::from_fn(w, h, |x, y| ::image::Rgb([x as u8, y as u8, 200]));
    let mut out = std::io::Cursor::new(Vec::new());
    ::image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, ::image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

#[test]
fn layouts_and_resize_modes_give_the_declared_shapes() {
    let limits = Limits {
        max_width: 100,
        max_height: 100,
        max_alloc_bytes: 1 << 20,
    };
    let src = png(4, 2);
    let (s1, nchw) =
        image::prepare_batch(&[&src], &spec(Layout::NCHW, Resize::Stretch), &limits).expect("nchw");
    let (s2, nhwc) =
        image::prepare_batch(&[&src], &spec(Layout::NHWC, Resize::Stretch), &limits).expect("nhwc");
    assert_eq!(s1, vec![1, 3, 2, 4]);
    assert_eq!(s2, vec![1, 2, 4, 3]);
    // Same image, same size: pixel (x=3, y=1) channel 0 is x = 3 in both layouts.
    assert_eq!(nchw[4 + 3], 3.0);
    assert_eq!(nhwc[(4 + 3) * 3], 3.0);
    assert_eq!(nchw[2 * 8 + 5], 200.0);
    let wide = png(40, 10);
    let (s3, crop) = image::prepare_batch(
        &[&wide],
        &spec(Layout::NCHW, Resize::ShorterSideCenterCrop),
        &limits,
    )
    .expect("crop");
    assert_eq!(s3, vec![1, 3, 2, 4]);
    assert_eq!(crop.len(), 24);
    let err = image::prepare_batch(
        &[&png(101, 1)],
        &spec(Layout::NCHW, Resize::Stretch),
        &limits,
    )
    .expect_err("too wide");
    assert!(err.to_string().contains("101x1"), "{err}");
}
