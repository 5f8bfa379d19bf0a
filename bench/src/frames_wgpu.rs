//! The wgpu rows of `tandem-bench frames`, measured in a child process of their own: opening
//! the Vulkan device (lavapipe on a machine without a GPU: its worker threads and memory) in
//! the process that measures the CPU rows slowed those rows, the raw inference floor included
//! (5.3 ms without it, 7.7-8.2 ms with it on this VM). The child measures `pre-wgpu`,
//! `e2e-wgpu` and its own `floor-wgpu-proc` (the same session in the Vulkan process, to show
//! what the device costs the CPU) for each input set and prints them as JSON lines; the
//! parent runs it after its own rows, so the two never compete for the cores.

use crate::frames::{Args, Cycle, MODEL, Row, Setup, decode_only, run_session, sets};
use crate::local::{System, interleaved, threads_window};
use crate::stats::Stats;
use anyhow::Context;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tandem_engine::preprocess::image::{self as img, Backend};
use tandem_engine::settings::PreprocessDevice;

/// In the parent: runs `tandem-bench frames --wgpu-rows` and reads its rows, or why there are
/// none (no adapter, the child failed).
pub(crate) fn rows_in_child(a: &Args) -> Result<Vec<Row>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    eprintln!("== wgpu rows, in their own process");
    let mut child = Command::new(exe)
        .args(["frames", "--wgpu-rows", "--seconds"])
        .arg(a.seconds.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn the wgpu process: {e}"))?;
    let out = child
        .stdout
        .take()
        .ok_or("the wgpu process has no stdout")?;
    let mut rows = Vec::new();
    let mut missing = None;
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(why) = v["missing"].as_str() {
            missing = Some(why.to_string());
            continue;
        }
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let stats = Stats {
            n: f("n") as usize,
            p50_us: f("p50_us"),
            p99_us: f("p99_us"),
            mean_us: f("mean_us"),
            rps: f("rps"),
            errors: f("errors") as usize,
        };
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        rows.push((text("set"), text("system"), stats));
    }
    let status = child.wait().map_err(|e| format!("the wgpu process: {e}"))?;
    match missing {
        Some(why) => Err(why),
        None if !status.success() => Err(format!("the wgpu process failed ({status})")),
        None => Ok(rows),
    }
}

/// In the child: measures the wgpu rows and prints them, one JSON object a line.
pub(crate) fn child(a: &Args) -> anyhow::Result<()> {
    let setup = Setup::open()?;
    let gpu = match tandem_engine::preprocess::gpu::shared_gpu() {
        Ok(g) => g,
        Err(e) => {
            println!("{}", serde_json::json!({ "missing": e.to_string() }));
            return Ok(());
        }
    };
    eprintln!("wgpu adapter: {} (software: {})", gpu.name, gpu.software);
    let auto = tandem_engine::preprocess::choose(&setup.p, PreprocessDevice::Auto);
    eprintln!("preprocess_device = auto would serve with: {}", auto.1);
    let backend = Backend::Gpu(gpu);
    let cpu = Backend::Cpu;
    let (p, limits, session, input) = (&setup.p, &setup.limits, &setup.session, &setup.input);
    let (per, shape) = (setup.per(), img::batch_shape(p, 1));
    let window = Duration::from_secs_f64(a.seconds);
    for set in sets(&setup.dir, false).context(MODEL)? {
        eprintln!("== {} (wgpu process)", set.name);
        let cyc = Cycle::new(&set.files);
        let tensor = setup.tensor(&set)?;
        let (cyc, b, shape, tensor) = (&cyc, &backend, &shape, &tensor);
        let pre = move |b: &Backend| {
            let mut out = vec![0.0f32; per];
            img::prepare_into(cyc.next(), p, limits, b, &mut out).is_ok()
        };
        let e2e = move |b: &Backend| {
            let mut out = vec![0.0f32; per];
            img::prepare_into(cyc.next(), p, limits, b, &mut out).is_ok()
                && run_session(session, input, shape, &out)
        };
        let c = &cpu;
        let systems: Vec<System<'_>> = vec![
            (
                "floor-wgpu-proc",
                Box::new(move |w| {
                    threads_window(1, w, &|_| run_session(session, input, shape, tensor))
                }),
            ),
            (
                "decode-proc",
                Box::new(move |w| threads_window(1, w, &|_| decode_only(cyc.next(), p, limits))),
            ),
            (
                "pre-cpu-proc",
                Box::new(move |w| threads_window(1, w, &|_| pre(c))),
            ),
            (
                "e2e-cpu-proc",
                Box::new(move |w| threads_window(1, w, &|_| e2e(c))),
            ),
            (
                "pre-wgpu",
                Box::new(move |w| threads_window(1, w, &|_| pre(b))),
            ),
            (
                "e2e-wgpu",
                Box::new(move |w| threads_window(1, w, &|_| e2e(b))),
            ),
        ];
        for ((name, _), st) in systems.iter().zip(interleaved(&systems, window, 5)) {
            eprintln!(
                "  {name:15} p50 {:.0} us, p99 {:.0} us, errors {}",
                st.p50_us, st.p99_us, st.errors
            );
            let row = serde_json::json!({
                "set": set.name, "system": name, "n": st.n, "p50_us": st.p50_us,
                "p99_us": st.p99_us, "mean_us": st.mean_us, "rps": st.rps, "errors": st.errors,
            });
            println!("{row}");
        }
    }
    Ok(())
}
