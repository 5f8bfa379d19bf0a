// The fleet page: every device with its state, labels, versions, EPs, last seen, offload and
// degraded shares; search, and filters by label, model, version and state.
import { api, el, replace, main, run, every, ago, fmtTime, pct } from './common.js';

const state = { devices: [], q: '', label: '', model: '', version: '', online: '' };

const labelsOf = (d) => Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`);
const modelsOf = (d) => (d.models || []);

function matches(d) {
  const words = state.q.toLowerCase().split(/\s+/).filter(Boolean);
  const hay = [d.device, d.agent_version || '', ...labelsOf(d),
    ...modelsOf(d).flatMap((m) => [m.name, m.version, m.ep, m.variant])].join(' ').toLowerCase();
  if (!words.every((w) => hay.includes(w))) return false;
  if (state.label && !labelsOf(d).includes(state.label)) return false;
  if (state.model && !modelsOf(d).some((m) => m.name === state.model)) return false;
  if (state.version && !modelsOf(d).some((m) => `${m.name} ${m.version}` === state.version)) return false;
  if (state.online && String(!!d.online) !== state.online) return false;
  return true;
}

function options(select, values, all) {
  const keep = select.value;
  replace(select, el('option', { value: '', text: all }),
    ...[...new Set(values)].sort().map((v) => el('option', { value: v, text: v })));
  select.value = [...select.options].some((o) => o.value === keep) ? keep : '';
}

function row(d) {
  const href = `/console/device/${encodeURIComponent(d.device)}`;
  return el('tr', { 'data-testid': 'device-row', 'data-device': d.device, class: d.online ? 'online' : 'offline' },
    el('td', {}, el('a', { href, text: d.device })),
    el('td', {}, el('span', { class: `pill ${d.online ? 'ok' : 'off'}`, 'data-testid': 'device-state', text: d.online ? 'online' : 'offline' })),
    el('td', {}, ...labelsOf(d).map((l) => el('span', { class: 'tag', text: l }))),
    el('td', { text: d.agent_version || '—' }),
    el('td', {}, ...modelsOf(d).map((m) => el('div', { class: 'model', text: `${m.name} ${m.version} (${m.variant}, ${m.ep})` }))),
    el('td', { title: fmtTime(d.last_seen_ms), text: ago(d.last_seen_ms) }),
    el('td', { class: 'num', 'data-testid': 'offload-share', text: pct(d.offload_share) }),
    el('td', { class: 'num', 'data-testid': 'degraded-share', text: pct(d.degraded_share) }),
  );
}

let body, count, selects;

function draw() {
  const shown = state.devices.filter(matches);
  replace(body, ...shown.map(row));
  count.textContent = `${shown.length} of ${state.devices.length} devices`;
}

let drawn = '';

async function load() {
  const r = await api('/v1/fleet');
  const now = JSON.stringify(r);
  if (now === drawn) return;
  drawn = now;
  state.devices = (r.devices || []).sort((a, b) => a.device.localeCompare(b.device));
  options(selects.label, state.devices.flatMap(labelsOf), 'any label');
  options(selects.model, state.devices.flatMap((d) => modelsOf(d).map((m) => m.name)), 'any model');
  options(selects.version, state.devices.flatMap((d) => modelsOf(d).map((m) => `${m.name} ${m.version}`)), 'any version');
  draw();
}

function filter(name, ...opts) {
  const s = el('select', { name, 'data-testid': `fleet-filter-${name}`, 'aria-label': name }, ...opts);
  s.addEventListener('change', () => { state[name] = s.value; draw(); });
  return s;
}

run('fleet', async () => {
  const search = el('input', { type: 'search', 'data-testid': 'fleet-search', placeholder: 'search devices, labels, models, versions', 'aria-label': 'search' });
  search.addEventListener('input', () => { state.q = search.value; draw(); });
  selects = {
    label: filter('label'),
    model: filter('model'),
    version: filter('version'),
    online: filter('online', el('option', { value: '', text: 'any state' }),
      el('option', { value: 'true', text: 'online' }), el('option', { value: 'false', text: 'offline' })),
  };
  body = el('tbody', { 'data-testid': 'fleet-rows' });
  count = el('span', { class: 'muted', 'data-testid': 'fleet-count' });
  main().append(
    el('h1', { text: 'Fleet' }),
    el('div', { class: 'filters' }, search, selects.label, selects.model, selects.version, selects.online, count),
    el('table', { class: 'grid', 'data-testid': 'fleet-table' },
      el('thead', {}, el('tr', {}, ...['Device', 'State', 'Labels', 'Agent', 'Models (variant, EP)', 'Last seen', 'Offload', 'Degraded']
        .map((h) => el('th', { text: h })))),
      body));
  await load();
  every(5000, load);
});
