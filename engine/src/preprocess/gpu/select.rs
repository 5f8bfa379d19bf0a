//! Choosing CPU or GPU pre-processing per device by measurement at start-up: both paths run
//! on a synthetic 1080p frame for the model's input (median of a few runs after a warm-up),
//! and the faster one serves. On a real GPU
//! the answer depends on the card, the bus and the model's input size. A software adapter
//! (lavapipe) is not measured: it runs on the same cores as the CPU path, with more work.
//! With `auto`, Vulkan is not even opened when the kernel exposes no GPU device node.

use super::Gpu;
use crate::preprocess::geometry::Plan;
use crate::preprocess::image::{Backend, Pixels, finish_cpu};
pub use crate::settings::PreprocessDevice as Device;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tandem_shared::manifest::ImagePreprocess;

/// What the start-up measurement found and chose.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The path chosen.
    pub backend: Backend,
    /// Median CPU time on the probe frame, microseconds.
    pub cpu_us: Option<f64>,
    /// Median GPU time on the probe frame, microseconds.
    pub gpu_us: Option<f64>,
    /// The adapter, when one opened.
    pub adapter: Option<String>,
    /// Why this path (one line, logged at start-up).
    pub reason: String,
}

/// The adapter, opened once per process (`None` with the reason when there is none).
pub fn shared_gpu() -> Result<Arc<Gpu>, String> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    GPU.get_or_init(|| Gpu::open().map(Arc::new).map_err(|e| e.to_string()))
        .clone()
}

const PROBE: (u32, u32) = (1920, 1080);
const RUNS: usize = 5;

fn probe_frame() -> Pixels {
    let (w, h) = PROBE;
    let data = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| [(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        })
        .collect();
    Pixels {
        width: w,
        height: h,
        channels: 3,
        data,
    }
}

fn median_us(mut f: impl FnMut() -> bool) -> Option<f64> {
    if !f() {
        return None;
    }
    let mut t: Vec<f64> = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        if !f() {
            return None;
        }
        t.push(start.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    Some(t[RUNS / 2])
}

/// Whether the kernel exposes a GPU to this process: a DRM render node or an NVIDIA device.
fn kernel_has_gpu() -> bool {
    let has = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    };
    has("/dev/dri", "renderD") || has("/dev", "nvidia")
}

/// Measures (or, for `Cpu`/`Gpu`, just opens) and chooses the path for models taking `p`.
/// Results are kept per input size for the process, so model reloads do not measure again.
pub fn measure(p: &ImagePreprocess, device: Device) -> Choice {
    let cpu_only = |reason: String, adapter| Choice {
        backend: Backend::Cpu,
        cpu_us: None,
        gpu_us: None,
        adapter,
        reason,
    };
    if device == Device::Cpu {
        return cpu_only("preprocess_device = cpu".into(), None);
    }
    if device == Device::Auto && !kernel_has_gpu() {
        // Opening Vulkan on a machine with no GPU finds at most a software rasteriser, which
        // `auto` never picks, and costs start-up time and stderr noise (Mesa's device-select
        // layer writes "XDG_RUNTIME_DIR is invalid" under a service manager).
        return cpu_only(
            "no GPU device node (/dev/dri/renderD*, /dev/nvidia*): not probed".into(),
            None,
        );
    }
    let gpu = match shared_gpu() {
        Ok(g) => g,
        Err(e) => return cpu_only(format!("no GPU: {e}"), None),
    };
    let adapter = Some(gpu.name.clone());
    if device == Device::Gpu {
        return Choice {
            backend: Backend::Gpu(gpu),
            cpu_us: None,
            gpu_us: None,
            adapter,
            reason: "preprocess_device = gpu".into(),
        };
    }
    if gpu.software {
        return Choice {
            reason: format!(
                "{} is a CPU rasteriser sharing the CPU path's cores (not measured)",
                gpu.name
            ),
            ..cpu_only(String::new(), adapter)
        };
    }
    type Key = (u32, u32, bool, bool, String);
    static CACHE: OnceLock<Mutex<Vec<(Key, Choice)>>> = OnceLock::new();
    let key: Key = (
        p.width,
        p.height,
        p.color.channels() == 3,
        p.layout == tandem_shared::manifest::Layout::NCHW,
        format!("{:?}", p.resize),
    );
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    if let Ok(c) = cache.lock()
        && let Some((_, hit)) = c.iter().find(|(k, _)| *k == key)
    {
        return hit.clone();
    }
    let mut px = probe_frame();
    if p.color.channels() == 1 {
        px.data = px.data.chunks_exact(3).map(|c| c[1]).collect();
        px.channels = 1;
    }
    let plan = Plan::new(px.width, px.height, p);
    let mut out = vec![0.0f32; p.color.channels() * (p.width * p.height) as usize];
    let cpu_us = median_us(|| finish_cpu(&px, &plan, p, &mut out).is_ok());
    let gpu_us = median_us(|| gpu.prepare(&px, &plan, p, &mut out).is_ok());
    let choice = match (cpu_us, gpu_us) {
        (Some(c), Some(g)) if g < c => Choice {
            backend: Backend::Gpu(gpu),
            cpu_us,
            gpu_us,
            adapter,
            reason: format!("GPU {g:.0} us < CPU {c:.0} us on a 1080p frame"),
        },
        (Some(c), Some(g)) => Choice {
            backend: Backend::Cpu,
            cpu_us,
            gpu_us,
            adapter,
            reason: format!("CPU {c:.0} us <= GPU {g:.0} us on a 1080p frame"),
        },
        _ => Choice {
            backend: Backend::Cpu,
            cpu_us,
            gpu_us,
            adapter,
            reason: "the GPU path failed on the probe frame".into(),
        },
    };
    if let Ok(mut c) = cache.lock() {
        c.push((key, choice.clone()));
    }
    choice
}
