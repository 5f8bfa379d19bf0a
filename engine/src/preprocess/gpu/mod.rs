//! The wgpu (Vulkan) compute path: resize, letterbox, normalise and lay out on a GPU, from
//! decoded pixels to the model's f32 tensor, with the CPU path's filter and rounding
//! (`resize.wgsl`). Decoding stays on the CPU. `select` measures both at start-up.

mod select;

pub use select::{Choice, measure, shared_gpu};

use super::geometry::Plan;
use super::image::Pixels;
use std::sync::mpsc;
use tandem_shared::manifest::{ImagePreprocess, Layout};
use wgpu::util::DeviceExt;

/// Why the GPU path is unavailable or failed; the CPU path is used instead.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No Vulkan adapter (no driver, no `libvulkan.so.1`).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused a device.
    #[error("GPU device: {0}")]
    Device(String),
    /// A dispatch or the read-back failed.
    #[error("GPU run: {0}")]
    Run(String),
    /// The image needs more invocations or memory than one dispatch allows.
    #[error("{0} is over what one dispatch of this adapter takes")]
    TooLarge(String),
}

/// A GPU device with the two compute pipelines compiled.
#[derive(Debug)]
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    bind_layout: wgpu::BindGroupLayout,
    horizontal: wgpu::ComputePipeline,
    vertical: wgpu::ComputePipeline,
    /// Adapter name and backend, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)`.
    pub name: String,
    /// Whether the adapter is a software rasteriser (lavapipe) or otherwise a CPU.
    pub software: bool,
}

const WORKGROUP: u32 = 256;
const MAX_GROUPS: u32 = 65535;

impl Gpu {
    /// Opens the first Vulkan adapter (high-performance preference) and compiles the shader.
    pub fn open() -> Result<Self, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tandem-preprocess"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("resize.wgsl"),
            source: wgpu::ShaderSource::Wgsl(include_str!("resize.wgsl").into()),
        });
        let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let rw = |read_only| wgpu::BufferBindingType::Storage { read_only };
        let bind_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("preprocess"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, rw(true)),
                entry(2, rw(false)),
                entry(3, rw(false)),
            ],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("preprocess"),
            bind_group_layouts: &[Some(&bind_layout)],
            immediate_size: 0,
        });
        let pipeline = |entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let (horizontal, vertical) = (pipeline("horizontal"), pipeline("vertical"));
        // wgpu's default handler panics on a validation error; log it instead (the call
        // that caused it fails its read-back and the image goes through the CPU path).
        device.on_uncaptured_error(std::sync::Arc::new(|e: wgpu::Error| {
            tracing::error!(error = %e, "wgpu error");
        }));
        Ok(Self {
            bind_layout,
            horizontal,
            vertical,
            name: format!("{} ({:?})", info.name, info.backend),
            software: info.device_type == wgpu::DeviceType::Cpu,
            device,
            queue,
        })
    }

    /// Decoded pixels into `out` (C*H*W floats) per `plan` and `p`.
    pub fn prepare(
        &self,
        px: &Pixels,
        plan: &Plan,
        p: &ImagePreprocess,
        out: &mut [f32],
    ) -> Result<(), GpuError> {
        let c = px.channels as u32;
        let rows = u64::from(px.height) * u64::from(plan.out_w) * u64::from(c);
        let cells = u64::from(plan.width) * u64::from(plan.height) * u64::from(c);
        let limit = self.device.limits().max_storage_buffer_binding_size;
        if rows * 4 > limit || cells * 4 > limit || px.data.len() as u64 > limit {
            return Err(GpuError::TooLarge(format!(
                "{}x{} to {}x{}",
                px.width, px.height, plan.width, plan.height
            )));
        }
        let params = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &params_bytes(px, plan, p),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut words = px.data.clone();
        words.resize(px.data.len().div_ceil(4) * 4, 0);
        let src = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("pixels"),
                contents: &words,
                usage: wgpu::BufferUsages::STORAGE,
            });
        let buffer = |label, size: u64, usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4),
                usage,
                mapped_at_creation: false,
            })
        };
        let storage = wgpu::BufferUsages::STORAGE;
        let tmp = buffer("rows", rows * 4, storage);
        let dst = buffer("tensor", cells * 4, storage | wgpu::BufferUsages::COPY_SRC);
        let read = buffer(
            "read-back",
            cells * 4,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.bind_layout,
            entries: &[&params, &src, &tmp, &dst]
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: b.as_entire_binding(),
                })
                .collect::<Vec<_>>(),
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        for (pipeline, n) in [(&self.horizontal, rows), (&self.vertical, cells)] {
            let groups = n.div_ceil(u64::from(WORKGROUP));
            let (x, y) = (
                groups.min(u64::from(MAX_GROUPS)) as u32,
                groups.div_ceil(u64::from(MAX_GROUPS)) as u32,
            );
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        enc.copy_buffer_to_buffer(&dst, 0, &read, 0, cells * 4);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Run(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Run(e.to_string()))?
            .map_err(|e| GpuError::Run(e.to_string()))?;
        {
            let view = read
                .slice(..)
                .get_mapped_range()
                .map_err(|e| GpuError::Run(e.to_string()))?;
            for (o, b) in out.iter_mut().zip(view.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        read.unmap();
        Ok(())
    }
}

/// The shader's `Params` (WGSL uniform layout: 20 scalars, then two vec4s at offset 80).
fn params_bytes(px: &Pixels, plan: &Plan, p: &ImagePreprocess) -> Vec<u8> {
    let mean = |ch: usize| p.mean.get(ch).or(p.mean.first()).copied().unwrap_or(0.0);
    let std = |ch: usize| p.std.get(ch).or(p.std.first()).copied().unwrap_or(1.0);
    let u = [
        px.width,
        px.height,
        px.channels as u32,
        plan.out_w,
        plan.out_h,
        plan.off_x,
        plan.off_y,
        plan.width,
        plan.height,
        u32::from(p.layout == Layout::NCHW),
        u32::from(p.pad_value),
        0,
    ];
    let f = [
        plan.src_x as f32,
        plan.src_y as f32,
        plan.src_w as f32,
        plan.src_h as f32,
        p.scale,
        0.0,
        0.0,
        0.0,
        mean(0),
        mean(1),
        mean(2),
        0.0,
        std(0),
        std(1),
        std(2),
        1.0,
    ];
    u.iter()
        .flat_map(|v| v.to_le_bytes())
        .chain(f.iter().flat_map(|v| v.to_le_bytes()))
        .collect()
}
