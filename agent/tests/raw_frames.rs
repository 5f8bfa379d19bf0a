//! Raw camera frames over the local API (`/v1/classify/{model}?format=...`): an RGB24, NV12
//! and YUYV frame of the same ImageNet photo classify like its JPEG (same top-1), padded
//! strides are honoured, and bad dimensions, strides and lengths get a precise 400 while the
//! daemon keeps serving.

mod common;

use common::{config, models_dir, serve_api};
use tandem_agent::app;
use tandem_agent::inference::preprocess::image::{self, Limits};
use tandem_shared::manifest::Color;

async fn serve() -> String {
    let cfg = config(&["vision-imagenet"], "edge", &["cpu"]);
    let engine = app::start_engine(&cfg).expect("engine");
    let router = app::start_router(&cfg, engine).expect("router");
    serve_api(&cfg, router).await
}

/// BT.601 limited-range RGB to Y, U, V (the inverse the engine's conversion undoes).
fn yuv(p: &[u8]) -> (u8, u8, u8) {
    let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    let q = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    (q(y), q(u), q(v))
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = client.post(url).body(body).send().await.expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn raw_frames_classify_like_the_jpeg_and_bad_ones_get_a_precise_400() {
    let base = serve().await;
    let client = reqwest::Client::new();
    let jpg = std::fs::read(models_dir().join("vision-imagenet/samples/imagenet_01_559.jpg"))
        .expect("sample");
    let url = format!("{base}/v1/classify/vision-imagenet");
    let (status, want) = post(&client, &url, jpg.clone()).await;
    assert_eq!(status, 200, "{want}");
    let limits = Limits {
        max_width: 8192,
        max_height: 8192,
        max_alloc_bytes: 256 << 20,
    };
    let px = image::decode(&jpg, Color::Rgb, &limits).expect("decodes");
    let (w, h) = (px.width as usize, px.height as usize);
    // RGB24 with 16 bytes of padding per row.
    let stride = w * 3 + 16;
    let mut rgb = vec![0u8; stride * h];
    for y in 0..h {
        rgb[y * stride..y * stride + w * 3].copy_from_slice(&px.data[y * w * 3..(y + 1) * w * 3]);
    }
    // NV12 and YUYV, chroma from the top-left pixel of each block.
    let mut nv12 = vec![0u8; w * h + w * h / 2];
    let mut yuyv = vec![0u8; w * h * 2];
    for y in 0..h {
        for x in 0..w {
            let at = (y * w + x) * 3;
            let (yy, u, v) = yuv(&px.data[at..at + 3]);
            nv12[y * w + x] = yy;
            yuyv[y * w * 2 + x * 2] = yy;
            if x % 2 == 0 {
                yuyv[y * w * 2 + x * 2 + 1] = u;
                yuyv[y * w * 2 + x * 2 + 3] = v;
                if y % 2 == 0 {
                    nv12[w * h + (y / 2) * w + x] = u;
                    nv12[w * h + (y / 2) * w + x + 1] = v;
                }
            }
        }
    }
    for (q, body) in [
        (
            format!("format=rgb24&width={w}&height={h}&stride={stride}"),
            rgb,
        ),
        (format!("format=nv12&width={w}&height={h}"), nv12.clone()),
        (format!("format=yuyv&width={w}&height={h}"), yuyv),
    ] {
        let (status, got) = post(&client, &format!("{url}?{q}"), body).await;
        assert_eq!(status, 200, "{q}: {got}");
        assert_eq!(got["label"], want["label"], "{q}: {got} vs {want}");
    }
    for (q, body, needle) in [
        (
            "format=nv12&width=5&height=4",
            vec![0; 30],
            "nv12 needs an even width, got 5",
        ),
        (
            "format=rgb24&width=4&height=2&stride=8",
            vec![0; 16],
            "stride 8 is under the 12 bytes a 4-pixel rgb24 row takes",
        ),
        (
            "format=yuyv&width=4&height=2",
            vec![0; 15],
            "yuyv 4x2 with stride 8 needs 16 bytes of pixels, got 15",
        ),
        (
            "format=bgr&width=4&height=2",
            vec![0; 24],
            "unknown pixel format `bgr`",
        ),
        (
            "format=rgb24&width=4",
            vec![0; 24],
            "needs `width` and `height`",
        ),
        ("width=4&height=2", vec![0; 24], "give `format` too"),
        (
            "format=rgb24&width=0&height=2",
            vec![],
            "both sides must be at least 1",
        ),
    ] {
        let (status, got) = post(&client, &format!("{url}?{q}"), body).await;
        assert_eq!(status, 400, "{q}: {got}");
        assert!(got.to_string().contains(needle), "{q}: {got}");
    }
    let (status, _) = post(&client, &url, jpg).await;
    assert_eq!(status, 200, "still serving");
}
