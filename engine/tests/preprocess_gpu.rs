//! The wgpu compute path against the CPU path, on the Vulkan adapter the machine has (lavapipe
//! in CI: `scripts/setup.sh` installs `mesa-vulkan-drivers`). Tolerance: at most 1 level
//! (8-bit, before normalisation) anywhere, mean under 0.25: both paths use PIL's filter and
//! round to 8 bits after each pass; the CPU works in fixed point, the GPU in f32, so values
//! near a half level round apart (seen: max 1, mean 0.10-0.15).
#![cfg(feature = "gpu")]

use std::path::{Path, PathBuf};
use tandem_engine::preprocess::geometry::Plan;
use tandem_engine::preprocess::gpu::Gpu;
use tandem_engine::preprocess::image::{self, Limits, Pixels};
use tandem_shared::manifest::{Color, ImagePreprocess, Layout, Resize};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn spec(color: Color, layout: Layout, resize: Resize, w: u32, h: u32) -> ImagePreprocess {
    ImagePreprocess {
        layout,
        color,
        width: w,
        height: h,
        resize,
        shorter_side: Some(256),
        scale: 1.0 / 255.0,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        pad_value: 114,
    }
}

/// (max, mean) difference in 8-bit levels.
fn diff(a: &[f32], b: &[f32], p: &ImagePreprocess) -> (f32, f32) {
    let c = p.color.channels();
    let per = (p.width * p.height) as usize;
    let mut max = 0.0f32;
    let mut sum = 0.0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let ch = match p.layout {
            Layout::NCHW => i / per,
            Layout::NHWC => i % c,
        };
        let d = (x - y).abs() * p.std[ch] / p.scale;
        max = max.max(d);
        sum += d;
    }
    (max, sum / a.len() as f32)
}

fn both(gpu: &Gpu, px: &Pixels, p: &ImagePreprocess) -> (Vec<f32>, Vec<f32>) {
    let plan = Plan::new(px.width, px.height, p);
    let n = p.color.channels() * (p.width * p.height) as usize;
    let (mut cpu, mut gpu_out) = (vec![0.0; n], vec![f32::NAN; n]);
    image::finish_cpu(px, &plan, p, &mut cpu).expect("cpu");
    gpu.prepare(px, &plan, p, &mut gpu_out).expect("gpu");
    (cpu, gpu_out)
}

#[test]
fn gpu_path_equals_cpu_path() {
    let gpu = Gpu::open().expect("a Vulkan adapter (lavapipe: apt mesa-vulkan-drivers)");
    eprintln!("adapter: {} (software: {})", gpu.name, gpu.software);
    let limits = Limits {
        max_width: 8192,
        max_height: 8192,
        max_alloc_bytes: 256 << 20,
    };
    let sample = std::fs::read(models().join("vision-imagenet/samples/imagenet_01_559.jpg"))
        .expect("sample");
    let mut checked = 0;
    for color in [Color::Rgb, Color::Gray] {
        let photo = image::decode(&sample, color, &limits).expect("decodes");
        // A 1080p frame: the photo tiled (sharp seams test the filter windows).
        let frame = {
            let (w, h, c) = (1920usize, 1080usize, color.channels());
            let (pw, ph) = (photo.width as usize, photo.height as usize);
            let mut data = Vec::with_capacity(w * h * c);
            for y in 0..h {
                for x in 0..w {
                    let at = ((y % ph) * pw + x % pw) * c;
                    data.extend_from_slice(&photo.data[at..at + c]);
                }
            }
            Pixels::new(w as u32, h as u32, c, data).expect("frame")
        };
        for px in [&photo, &frame] {
            for resize in [
                Resize::Stretch,
                Resize::ShorterSideCenterCrop,
                Resize::Letterbox,
            ] {
                for layout in [Layout::NCHW, Layout::NHWC] {
                    for (w, h) in [(224, 224), (416, 320)] {
                        let p = spec(color, layout, resize, w, h);
                        let (cpu, gpu_out) = both(&gpu, px, &p);
                        let (max, mean) = diff(&cpu, &gpu_out, &p);
                        let what = format!(
                            "{}x{} {color:?} {resize:?} {layout:?} {w}x{h}",
                            px.width, px.height
                        );
                        assert!(max <= 1.01 && mean < 0.25, "{what}: max {max} mean {mean}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 48);
}
