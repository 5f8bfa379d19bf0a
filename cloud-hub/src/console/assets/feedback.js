// Feedback: a gallery of the hard examples devices delivered (images from the stored input
// bytes, texts as text) with the edge's and the cloud's answers; a person confirms or corrects
// the label, stored as a correction (POST /v1/feedback/corrections) like a device's own.
import { api, el, replace, main, run, fmtTime, showError, clearError } from './common.js';

const SHOWN = 120;       // newest examples drawn
const PAGES = 20;        // pages of 1000 records read at most

let gallery, records = [], byId = new Map();
const filter = { model: '', corrected: 'all' };

async function loadAll() {
  let after = 0, all = [];
  for (let i = 0; i < PAGES; i += 1) {
    const page = await api(`/v1/feedback/records?after=${after}&limit=1000`);
    all = all.concat(page.items || []);
    after = page.cursor;
    if (!page.more) break;
  }
  records = all;
  byId = new Map(all.map((r) => [r.id, r]));
}

const answer = (o) => (o ? `${o.label} (${Number(o.score).toFixed(2)}, v${o.version})` : '—');

function input(r) {
  const ex = r.example;
  const src = `/v1/feedback/inputs/${encodeURIComponent(r.digest || '')}`;
  if (ex.input_kind === 'image') return el('img', { src, alt: `input of ${r.id}`, loading: 'lazy', 'data-testid': 'example-image' });
  const pre = el('pre', { 'data-testid': 'example-text', text: '…' });
  fetch(src, { credentials: 'same-origin' }).then((x) => (x.ok ? x.text() : Promise.reject(new Error(`${x.status}`))))
    .then((t) => { pre.textContent = t; })
    .catch((e) => { pre.textContent = `(input not readable: ${e.message})`; });
  return pre;
}

function latestCorrection(r) {
  const cs = (r.corrected_by || []).map((id) => byId.get(id)).filter(Boolean);
  cs.sort((a, b) => (a.arrival || 0) - (b.arrival || 0));
  return cs.length ? cs[cs.length - 1] : null;
}

function card(r) {
  const ex = r.example;
  const corr = latestCorrection(r);
  const candidates = [...new Set([ex.cloud, ex.local].filter(Boolean).flatMap((o) => [o.label, ...(o.top_k || []).map((t) => t[0])]))];
  const listId = `labels-${r.arrival}`;
  const label = el('input', { name: 'label', 'data-testid': 'correct-label', list: listId, required: true, value: (corr && corr.example.label) || (ex.cloud && ex.cloud.label) || (ex.local && ex.local.label) || '' });
  const status = el('span', { 'data-testid': 'example-status', class: corr ? 'status-saved' : 'muted', text: corr ? `corrected: ${corr.example.label}` : '' });
  const form = el('form', {}, label, el('datalist', { id: listId }, ...candidates.map((c) => el('option', { value: c }))),
    el('button', { type: 'submit', 'data-testid': 'correct-submit', text: 'Confirm / correct' }), status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.className = 'muted';
    status.textContent = 'saving…';
    try {
      const saved = await api('/v1/feedback/corrections', { method: 'POST', body: { record: r.id, label: label.value.trim() } });
      status.className = 'status-saved';
      status.textContent = 'saved';
      status.dataset.correction = saved.id;
      clearError();
    } catch (e) {
      status.className = 'muted';
      status.textContent = 'not saved';
      showError(e);
    }
  });
  return el('article', { class: 'card example', 'data-testid': 'example', 'data-record': r.id, 'data-model': ex.model },
    input(r),
    el('div', { class: 'answers' },
      el('span', { class: 'muted', text: 'edge' }), el('span', { 'data-testid': 'edge-answer', text: answer(ex.local) }),
      el('span', { class: 'muted', text: 'cloud' }), el('span', { 'data-testid': 'cloud-answer', text: answer(ex.cloud) }),
      el('span', { class: 'muted', text: 'why' }), el('span', { text: `${ex.kind}, ${ex.reason}` }),
      el('span', { class: 'muted', text: 'from' }), el('span', {}, el('a', { href: `/console/device/${encodeURIComponent(r.device)}`, text: r.device }), ` · ${ex.model} · ${fmtTime(ex.time_ms)}`)),
    form);
}

function draw() {
  const examples = records.filter((r) => r.example && r.input && r.example.kind !== 'correction')
    .filter((r) => !filter.model || r.example.model === filter.model)
    .filter((r) => filter.corrected === 'all' || (filter.corrected === 'no') === !(r.corrected_by || []).length)
    .sort((a, b) => (b.arrival || 0) - (a.arrival || 0));
  replace(gallery, ...examples.slice(0, SHOWN).map(card));
  document.getElementById('example-count').textContent = `${Math.min(SHOWN, examples.length)} of ${examples.length} examples`;
  if (!examples.length) gallery.append(el('p', { class: 'muted', text: 'No hard example stored yet.' }));
}

run('feedback', async () => {
  const models = el('select', { 'data-testid': 'feedback-filter-model', 'aria-label': 'model' });
  const corrected = el('select', { 'data-testid': 'feedback-filter-corrected', 'aria-label': 'corrected' },
    el('option', { value: 'all', text: 'all examples' }), el('option', { value: 'no', text: 'not corrected yet' }), el('option', { value: 'yes', text: 'corrected' }));
  models.addEventListener('change', () => { filter.model = models.value; draw(); });
  corrected.addEventListener('change', () => { filter.corrected = corrected.value; draw(); });
  gallery = el('div', { class: 'gallery', 'data-testid': 'gallery' });
  main().append(el('h1', { text: 'Feedback' }), el('div', { class: 'filters' }, models, corrected, el('span', { class: 'muted', id: 'example-count' })), gallery);
  await loadAll();
  replace(models, el('option', { value: '', text: 'any model' }),
    ...[...new Set(records.filter((r) => r.example).map((r) => r.example.model))].sort().map((m) => el('option', { value: m, text: m })));
  draw();
});
