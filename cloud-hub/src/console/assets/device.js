// One device: its state, plots over time from /v1/fleet/{d}/series (route mix, offload share,
// latency p50/p99, queue depth and bytes, degraded answers) with version changes marked, its
// update history and its last events; a snapshot of each camera it reports, on request
// (/v1/fleet/{d}/cameras/{c}/snapshot.jpg, asked over MQTT).
import { api, el, replace, main, run, every, ago, fmtTime, pct, bytes } from './common.js';
import { plot } from './plot.js';

const id = decodeURIComponent(location.pathname.slice('/console/device/'.length));
const enc = encodeURIComponent(id);

const count = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1));

const COLORS = { local: '#2563eb', cloud: '#f59e0b', failed: '#b91c1c', degraded: '#7c3aed', p50: '#2563eb', p99: '#b91c1c', depth: '#0f766e', model: '#f59e0b', bytes: '#0f766e' };

function facts(d) {
  const st = d.status || {}, tm = d.telemetry || {};
  const labels = Object.entries(d.labels || {}).map(([k, v]) => el('span', { class: 'tag', text: `${k}=${v}` }));
  const models = (st.models || []).map((m) => el('div', { class: 'model', text: `${m.name} ${m.version} (${m.variant}, ${m.ep})` }));
  const acc = (st.accelerators || []).map((a) => el('div', { text: `${a.type || ''} ${a.vendor || ''} ${a.ep || ''}`.trim() }));
  const thresholds = Object.entries(tm.thresholds || {}).map(([m, t]) => el('div', { text: `${m}: ${typeof t.threshold === 'number' ? t.threshold.toFixed(3) : '?'} on ${t.signal || '?'} (${t.source || '?'})` }));
  const rows = [
    ['State', el('span', { class: `pill ${d.online ? 'ok' : 'off'}`, 'data-testid': 'device-state', text: d.online ? 'online' : `offline${st.reason ? ` (${st.reason})` : ''}` })],
    ['Last seen', `${ago(d.last_seen_ms)} (${fmtTime(d.last_seen_ms)})`],
    ['Agent', st.agent_version || tm.agent_version || '—'],
    ['Labels', labels.length ? labels : '—'],
    ['Models', models.length ? models : '—'],
    ['Accelerators', acc.length ? acc : '—'],
    ['Thresholds', thresholds.length ? thresholds : '—'],
    ['Uptime', tm.uptime_s !== undefined ? `${tm.uptime_s} s (telemetry #${tm.seq})` : '—'],
    ['Unreadable messages', `${d.unreadable || 0}${d.last_error ? ` — last: ${d.last_error}` : ''}`],
  ];
  return el('dl', { class: 'kv card', 'data-testid': 'device-facts' }, ...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]));
}

function plots(s) {
  const pts = s.points || [];
  const markers = s.markers || [];
  const times = [...pts.map((p) => p.at_ms), ...markers.map((m) => m.at_ms)];
  if (!times.length) return [el('p', { class: 'muted', 'data-testid': 'no-series', text: 'No telemetry heard from this device since the hub started.' })];
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 - t0 < 1000) { t0 -= 30000; t1 += 30000; }
  const col = (f) => pts.map((p) => [p.at_ms, f(p)]);
  const share = (p) => { const n = p.local + p.cloud + p.failed; return n ? p.degraded / n : null; };
  const common = { t0, t1, markers };
  return [
    plot({ ...common, testid: 'plot-routes', title: 'Answers by route (per interval)', yFmt: count,
      bars: [
        { label: 'local', color: COLORS.local, data: col((p) => p.local) },
        { label: 'cloud (offloaded)', color: COLORS.cloud, data: col((p) => p.cloud) },
        { label: 'failed', color: COLORS.failed, data: col((p) => p.failed) },
      ] }),
    plot({ ...common, testid: 'plot-offload', title: 'Offload and degraded share', yMax: 1, yFmt: (v) => `${Math.round(v * 100)} %`,
      lines: [
        { label: 'offload share', color: COLORS.cloud, data: col((p) => p.offload_share) },
        { label: 'degraded share', color: COLORS.degraded, data: col(share) },
      ] }),
    plot({ ...common, testid: 'plot-latency', title: 'Latency p50 / p99 (ms)', yFmt: (v) => v.toFixed(v < 10 ? 1 : 0),
      lines: [
        { label: 'p50', color: COLORS.p50, data: col((p) => (typeof p.latency_p50_s === 'number' ? p.latency_p50_s * 1000 : null)) },
        { label: 'p99', color: COLORS.p99, data: col((p) => (typeof p.latency_p99_s === 'number' ? p.latency_p99_s * 1000 : null)) },
      ] }),
    plot({ ...common, testid: 'plot-queue', title: 'Queues (records waiting)', yFmt: count,
      lines: [
        { label: 'store-and-forward queue', color: COLORS.depth, data: col((p) => p.queue_depth ?? null) },
        { label: 'model queues', color: COLORS.model, data: col((p) => p.model_queue_depth) },
      ] }),
    plot({ ...common, testid: 'plot-queue-bytes', title: 'Store-and-forward queue bytes', yFmt: (v) => bytes(Math.round(v)),
      lines: [{ label: 'bytes', color: COLORS.bytes, data: col((p) => p.queue_bytes ?? null) }] }),
    plot({ ...common, testid: 'plot-degraded', title: 'Degraded answers (per interval)', yFmt: count,
      bars: [{ label: 'degraded', color: COLORS.degraded, data: col((p) => p.degraded) }] }),
  ];
}

function table(testid, head, rows, empty) {
  if (!rows.length) return el('p', { class: 'muted', 'data-testid': testid, text: empty });
  return el('table', { class: 'grid', 'data-testid': testid },
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', { text: h })))),
    el('tbody', {}, ...rows.map((r) => el('tr', {}, ...r.map((c) => el('td', {}, c ?? '—'))))));
}

function history(d, s) {
  const updates = ((d.telemetry || {}).updates || []).map((u) => [u.model, u.version,
    el('span', { class: `pill ${u.state === 'active' ? 'ok' : (u.state === 'rejected' || u.state === 'rolled_back') ? 'bad' : 'warn'}`, text: u.state }),
    u.reason || (u.total ? `${bytes(u.done || 0)} of ${bytes(u.total)}` : '')]);
  const changes = (s.markers || []).slice().reverse().map((m) => [fmtTime(m.at_ms), m.model, m.from || '(first heard)', m.to]);
  return el('section', { 'data-testid': 'update-history' },
    el('h2', { text: 'Update history' }),
    table('update-states', ['Model', 'Version', 'State', 'Detail'], updates, 'No model update reported by the agent since it started.'),
    el('h3', { text: 'Version changes heard' }),
    table('version-changes', ['When', 'Model', 'From', 'To'], changes, 'No version heard yet.'));
}

function events(d, s) {
  const rows = [];
  for (const e of s.events || []) {
    rows.push([e.at_ms, 'inference', `${e.event.model} ${e.event.version}: ${e.event.label} (${e.event.score.toFixed(2)}) via ${e.event.route}, ${e.event.reason}${e.event.degraded ? ', degraded' : ''}, ${e.event.latency_ms.toFixed(1)} ms`]);
  }
  for (const m of s.markers || []) rows.push([m.at_ms, 'version', `${m.model}: ${m.from ? `${m.from} → ` : ''}${m.to}`]);
  for (const p of s.points || []) if (p.reset) rows.push([p.at_ms, 'agent (re)started', `telemetry #${p.seq}`]);
  const st = d.status || {};
  if (st.ts_ms) rows.push([st.ts_ms, 'status', `${st.state}${st.reason ? ` (${st.reason})` : ''}`]);
  rows.sort((a, b) => b[0] - a[0]);
  return el('section', { 'data-testid': 'last-events' },
    el('h2', { text: 'Last events' }),
    table('event-rows', ['When', 'Kind', 'What'], rows.slice(0, 30).map(([t, k, w]) => [fmtTime(t), k, w]), 'No events yet.'));
}

// Camera snapshots: a button per camera the agent's telemetry lists (`cameras` of
// /v1/fleet/{d}); a click asks the hub, which asks the device over MQTT, and shows the JPEG
// or the error. Built once and kept across redraws (the same node is placed again); `show`
// redraws its buttons when the list changes.
function snapshotBox() {
  const buttons = el('div', { class: 'cameras', 'data-testid': 'snapshot-cameras' });
  const img = el('img', { 'data-testid': 'snapshot-image', alt: 'snapshot', hidden: '' });
  const caption = el('p', { class: 'muted', 'data-testid': 'snapshot-caption', hidden: '' });
  const msg = el('p', { 'data-testid': 'snapshot-error', class: 'error', hidden: '' });
  let shown = null, listed = null;
  const ask = async (camera) => {
    msg.hidden = true;
    const url = `/v1/fleet/${enc}/cameras/${encodeURIComponent(camera)}/snapshot.jpg`;
    try {
      const r = await fetch(url, { credentials: 'same-origin' });
      if (!r.ok) {
        const data = await r.json().catch(() => null);
        throw new Error(data && typeof data.error === 'string' ? data.error : `${r.status} ${r.statusText}`);
      }
      if (shown) URL.revokeObjectURL(shown);
      shown = URL.createObjectURL(await r.blob());
      img.src = shown;
      img.hidden = false;
      caption.textContent = `${camera}, track ${r.headers.get('x-tandem-track') || '?'}`;
      caption.hidden = false;
    } catch (e) {
      img.hidden = true;
      caption.hidden = true;
      msg.textContent = `${camera}: ${e.message}`;
      msg.hidden = false;
    }
  };
  const box = el('section', { 'data-testid': 'snapshot' },
    el('h2', { text: 'Camera snapshots' }), buttons, msg, caption, img);
  box.show = (cameras) => {
    const now = JSON.stringify(cameras);
    if (now === listed) return;
    listed = now;
    replace(buttons, ...(cameras.length
      ? cameras.map((c) => el('button', { type: 'button', 'data-testid': 'camera-snapshot', 'data-camera': c.id,
        title: `${c.model}: ${c.processed} of ${c.received} frames answered, ${c.dropped} dropped; ${c.snapshots} snapshots kept`,
        text: c.id, on: { click: () => ask(c.id) } }))
      : [el('p', { class: 'muted', 'data-testid': 'no-cameras', text: 'No camera reported: a camera shows once frames are posted to the agent (POST /v1/cameras/{camera}/frames/{model}).' })]));
  };
  return box;
}

let root, drawn = '', snap;

async function load() {
  const [d, s] = await Promise.all([api(`/v1/fleet/${enc}`), api(`/v1/fleet/${enc}/series`)]);
  const now = JSON.stringify([d, s]);
  if (now === drawn) return;
  drawn = now;
  snap.show((d.telemetry || {}).cameras || []);
  replace(root,
    el('h1', {}, el('a', { href: '/console', text: 'Fleet' }), ' / ', el('span', { 'data-testid': 'device-id', text: id })),
    facts(d),
    el('h2', { text: 'Over time' }),
    el('div', { class: 'plots' }, ...plots(s)),
    snap,
    history(d, s),
    events(d, s));
}

run('fleet', async () => {
  document.title = `${id} · Tandem console`;
  root = main();
  snap = snapshotBox();
  await load();
  every(10000, load);
});
