// Pre-processing on the GPU: PIL-style antialiased bilinear resize of a source rectangle
// (two passes, each rounded to 8 bits like the CPU path), then normalise and lay out into
// the tensor, the letterbox border filled with the normalised pad value.

struct Params {
    src_w: u32, src_h: u32, channels: u32, out_w: u32,
    out_h: u32, off_x: u32, off_y: u32, width: u32,
    height: u32, nchw: u32, pad: u32, _r0: u32,
    crop_x: f32, crop_y: f32, crop_w: f32, crop_h: f32,
    scale: f32, _r1: f32, _r2: f32, _r3: f32,
    mean: vec4<f32>,
    stdv: vec4<f32>,
};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> tmp: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn byte_at(i: u32) -> f32 {
    return f32((src[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu);
}

fn round8(v: f32) -> f32 {
    return clamp(floor(v + 0.5), 0.0, 255.0);
}

// The filter window [lo, hi) and its centre for output index `o` along one axis.
struct Window { lo: i32, hi: i32, center: f32, fscale: f32 };

fn window(o: u32, start: f32, len: f32, outs: u32, size: u32) -> Window {
    let scale = len / f32(outs);
    let fscale = max(scale, 1.0);
    let center = start + (f32(o) + 0.5) * scale;
    let lo = max(i32(floor(center - fscale + 0.5)), 0);
    let hi = min(i32(floor(center + fscale + 0.5)), i32(size));
    return Window(lo, hi, center, fscale);
}

fn tri(x: f32) -> f32 {
    return max(1.0 - abs(x), 0.0);
}

@compute @workgroup_size(256)
fn horizontal(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = p.channels;
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= p.src_h * p.out_w * c) { return; }
    let ch = i % c;
    let x = (i / c) % p.out_w;
    let y = i / (c * p.out_w);
    let w = window(x, p.crop_x, p.crop_w, p.out_w, p.src_w);
    var acc = 0.0;
    var total = 0.0;
    for (var s = w.lo; s < w.hi; s = s + 1) {
        let k = tri((f32(s) - w.center + 0.5) / w.fscale);
        acc = acc + k * byte_at((y * p.src_w + u32(s)) * c + ch);
        total = total + k;
    }
    tmp[i] = round8(acc / max(total, 1e-6));
}

@compute @workgroup_size(256)
fn vertical(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = p.channels;
    let i = gid.x + gid.y * 65535u * 256u;
    if (i >= p.width * p.height * c) { return; }
    let ch = i % c;
    let tx = (i / c) % p.width;
    let ty = i / (c * p.width);
    var v = f32(p.pad);
    if (tx >= p.off_x && tx < p.off_x + p.out_w && ty >= p.off_y && ty < p.off_y + p.out_h) {
        let x = tx - p.off_x;
        let w = window(ty - p.off_y, p.crop_y, p.crop_h, p.out_h, p.src_h);
        var acc = 0.0;
        var total = 0.0;
        for (var s = w.lo; s < w.hi; s = s + 1) {
            let k = tri((f32(s) - w.center + 0.5) / w.fscale);
            acc = acc + k * tmp[(u32(s) * p.out_w + x) * c + ch];
            total = total + k;
        }
        v = round8(acc / max(total, 1e-6));
    }
    let norm = (v * p.scale - p.mean[ch]) / p.stdv[ch];
    var at = (ty * p.width + tx) * c + ch;
    if (p.nchw == 1u) {
        at = ch * p.width * p.height + ty * p.width + tx;
    }
    dst[at] = norm;
}
