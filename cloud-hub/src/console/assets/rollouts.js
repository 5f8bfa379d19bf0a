// Rollouts: create one (model, version, canary, stages, group), watch each stage and device,
// pause, resume, abort, and roll back (an ordered rollback to the version before).
import { api, el, replace, main, run, every, fmtTime, clearError, showError } from './common.js';

let list, registry = [], drawn = '';

const phaseText = (p) => (p.state === 'running' || p.state === 'paused') ? `${p.state} (stage ${p.stage + 1})` : p.state === 'halted' ? `halted: ${p.reason}` : p.state;
const finished = (p) => !(p.state === 'running' || p.state === 'paused');

/** The registry's version of `model` just before `version`, if any. */
function previous(model, version) {
  const m = registry.find((x) => x.name === model);
  if (!m) return null;
  const vs = m.versions.map((v) => v.version);
  const i = vs.indexOf(version);
  return i > 0 ? vs[i - 1] : null;
}

function parseStages(text) {
  const t = text.trim();
  if (!t) return undefined;
  return t.split(/[\s,]+/).map((x) => {
    const n = Number(x.replace('%', ''));
    if (!Number.isInteger(n)) throw new Error(`stages: "${x}" is not a whole percentage`);
    return n;
  });
}

function parseGroup(text) {
  const labels = {};
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [k, v] = part.includes('=') ? part.split('=', 2) : ['group', part];
    labels[k.trim()] = v.trim();
  }
  return labels;
}

async function act(r, action, status) {
  try {
    status.textContent = `${action}…`;
    if (action === 'rollback') {
      const to = previous(r.spec.model, r.spec.version);
      if (!to) throw new Error(`no version of ${r.spec.model} before ${r.spec.version} in the registry`);
      if (!finished(r.phase)) await api(`/v1/rollouts/${encodeURIComponent(r.id)}/abort`, { method: 'POST' });
      await api('/v1/rollouts', { method: 'POST', body: { model: r.spec.model, version: to, canary_pct: 100, labels: r.spec.labels, rollback: true } });
    } else {
      await api(`/v1/rollouts/${encodeURIComponent(r.id)}/${action}`, { method: 'POST' });
    }
    clearError();
    await load();
  } catch (e) {
    status.textContent = '';
    showError(e);
  }
}

function row(r) {
  const targets = Object.entries(r.targets || {});
  const stages = [r.spec.canary_pct, ...(r.spec.stages_pct || []).filter((s) => s > r.spec.canary_pct)];
  // A finished rollout's counts follow its devices (the hub keeps recording them): a pending
  // device there is one that does not run the version now, and nothing will command it.
  const waiting = finished(r.phase) ? 'without it' : 'pending';
  const byStage = stages.map((pct, i) => {
    const ts = targets.filter(([, t]) => t.stage === i);
    const n = (s) => ts.filter(([, t]) => t.outcome.state === s).length;
    return el('div', { 'data-testid': 'rollout-stage', 'data-stage': i, text: `stage ${i + 1} (${pct} %): ${ts.length} devices, ${n('active')} active, ${n('pending')} ${waiting}, ${n('failed')} failed` });
  });
  const devices = targets.map(([d, t]) => el('div', { 'data-testid': 'rollout-device', 'data-device': d, 'data-outcome': t.outcome.state },
    el('a', { href: `/console/device/${encodeURIComponent(d)}`, text: d }),
    ` — stage ${t.stage + 1}, ${t.outcome.state}${t.outcome.reason ? `: ${t.outcome.reason}` : ''}${t.commanded_ms ? `, commanded ${fmtTime(t.commanded_ms)}` : ''}`));
  const status = el('span', { class: 'muted' });
  const p = r.phase.state;
  const button = (action, label, enabled, cls) => el('button', {
    type: 'button', 'data-testid': `rollout-${action}`, class: cls, disabled: !enabled, text: label,
    on: { click: () => act(r, action, status) },
  });
  const labels = Object.entries(r.spec.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ') || 'whole fleet';
  return el('tr', { 'data-testid': 'rollout-row', 'data-rollout': r.id, 'data-state': p },
    el('td', {}, el('div', { class: 'mono', text: r.id }), el('div', { class: 'muted', text: fmtTime(r.created_ms) })),
    el('td', { text: `${r.spec.model} ${r.spec.version}${r.spec.rollback ? ' (rollback)' : ''}` }),
    el('td', { text: labels }),
    el('td', {}, el('span', { 'data-testid': 'rollout-state', class: `pill ${p === 'succeeded' ? 'ok' : p === 'running' ? 'warn' : p === 'paused' ? 'off' : 'bad'}`, text: phaseText(r.phase) })),
    el('td', {}, ...byStage, el('details', {}, el('summary', { text: `${targets.length} devices` }), ...devices)),
    el('td', {}, el('div', { class: 'actions' },
      button('pause', 'Pause', p === 'running', 'secondary'),
      button('resume', 'Resume', p === 'paused', 'secondary'),
      button('abort', 'Abort', !finished(r.phase), 'danger'),
      button('rollback', 'Roll back', !!previous(r.spec.model, r.spec.version), 'danger')), status));
}

async function load() {
  const [rs, ms] = await Promise.all([api('/v1/rollouts'), api('/v1/models')]);
  registry = ms.models || [];
  const rollouts = (rs.rollouts || []).sort((a, b) => b.created_ms - a.created_ms);
  // Rows are drawn again only when something changed: a button stays where it was.
  const now = JSON.stringify([rollouts, registry]);
  if (now === drawn) return;
  drawn = now;
  replace(list, ...rollouts.map(row));
  if (!rollouts.length) list.append(el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'No rollout yet.' })));
  const models = document.getElementById('models-list');
  replace(models, ...registry.map((m) => el('option', { value: m.name })));
  const versions = document.getElementById('versions-list');
  replace(versions, ...registry.flatMap((m) => m.versions.map((v) => el('option', { value: v.version, label: m.name }))));
}

function form() {
  const input = (name, label, attrs = {}) => el('label', {}, label, el('input', { name, 'data-testid': `rollout-${name}`, ...attrs }));
  const status = el('span', { class: 'muted', 'data-testid': 'rollout-create-status' });
  const f = el('form', { class: 'inline card', 'data-testid': 'rollout-form' },
    input('model', 'Model', { required: true, list: 'models-list', placeholder: 'vision-fashion' }),
    input('version', 'Version', { required: true, list: 'versions-list', placeholder: '1.0.1' }),
    input('canary', 'Canary %', { type: 'number', min: 1, max: 100, value: 10, required: true }),
    input('stages', 'Later stages %', { placeholder: '50, 100', value: '100' }),
    input('group', 'Group (or k=v, ...)', { placeholder: 'all devices' }),
    el('button', { type: 'submit', 'data-testid': 'rollout-create', text: 'Start rollout' }),
    status,
    el('datalist', { id: 'models-list' }), el('datalist', { id: 'versions-list' }));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = (n) => f.elements.namedItem(n).value.trim();
    try {
      const body = { model: v('model'), version: v('version'), canary_pct: Number(v('canary')), labels: parseGroup(v('group')) };
      const stages = parseStages(v('stages'));
      if (stages) body.stages_pct = stages;
      status.textContent = 'starting…';
      const r = await api('/v1/rollouts', { method: 'POST', body });
      status.textContent = `started ${r.id}`;
      clearError();
      await load();
    } catch (e) {
      status.textContent = '';
      showError(e);
    }
  });
  return f;
}

run('rollouts', async () => {
  list = el('tbody', { 'data-testid': 'rollout-rows' });
  main().append(el('h1', { text: 'Rollouts' }), form(), el('h2', { text: 'Rollouts' }),
    el('table', { class: 'grid' }, el('thead', {}, el('tr', {}, ...['Rollout', 'Model', 'Devices', 'State', 'Progress', 'Steer'].map((h) => el('th', { text: h })))), list));
  await load();
  every(3000, load);
});
