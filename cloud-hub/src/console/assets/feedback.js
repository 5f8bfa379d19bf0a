// Feedback: a gallery of the hard examples devices delivered (images from the stored input
// bytes, texts as text) with the edge's and the cloud's answers; a person confirms or corrects
// the label, stored as a correction (POST /v1/feedback/corrections) like a device's own.
import { api, el, replace, main, run, fmtTime, showError, clearError } from './common.js';

const SHOWN = 120;       // newest examples drawn
const PAGE = 1000;       // records per request, newest first
const PAGES = 20;        // requests at most while the page is open

let gallery, records = [], byId = new Map();
// The listing's cursor (older records come from `before`), whether older ones are left, and
// how many pages were read.
let before = 0, more = true, pages = 0;
const filter = { model: '', corrected: 'all' };

/** The loaded examples the filters select, newest first. */
function selected() {
  return records.filter((r) => r.example && r.input && r.example.kind !== 'correction')
    .filter((r) => !filter.model || r.example.model === filter.model)
    .filter((r) => filter.corrected === 'all' || (filter.corrected === 'no') === !(r.corrected_by || []).length)
    .sort((a, b) => (b.arrival || 0) - (a.arrival || 0));
}

/** Reads older records, newest first, until SHOWN examples are selected or none is left. A
 * correction arrives after the answer it corrects, so it is loaded before that answer is. */
async function loadMore() {
  while (more && pages < PAGES && selected().length < SHOWN) {
    const page = await api(`/v1/feedback/records?order=newest&before=${before}&limit=${PAGE}`);
    for (const r of page.items || []) {
      records.push(r);
      byId.set(r.id, r);
    }
    before = page.cursor;
    more = page.more;
    pages += 1;
  }
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
  const examples = selected();
  replace(gallery, ...examples.slice(0, SHOWN).map(card));
  const older = more ? ' (the newest; older ones not read)' : '';
  document.getElementById('example-count').textContent = `${Math.min(SHOWN, examples.length)} of ${examples.length} examples${older}`;
  if (!examples.length) gallery.append(el('p', { class: 'muted', text: 'No hard example stored yet.' }));
}

function modelOptions(models) {
  const have = [...new Set(records.filter((r) => r.example).map((r) => r.example.model))].sort();
  replace(models, el('option', { value: '', text: 'any model' }), ...have.map((m) => el('option', { value: m, text: m })));
  models.value = filter.model;
}

run('feedback', async () => {
  const models = el('select', { 'data-testid': 'feedback-filter-model', 'aria-label': 'model' });
  const corrected = el('select', { 'data-testid': 'feedback-filter-corrected', 'aria-label': 'corrected' },
    el('option', { value: 'all', text: 'all examples' }), el('option', { value: 'no', text: 'not corrected yet' }), el('option', { value: 'yes', text: 'corrected' }));
  const refilter = async () => {
    try {
      await loadMore();
      clearError();
    } catch (e) {
      showError(e);
    }
    modelOptions(models);
    draw();
  };
  models.addEventListener('change', () => { filter.model = models.value; refilter(); });
  corrected.addEventListener('change', () => { filter.corrected = corrected.value; refilter(); });
  gallery = el('div', { class: 'gallery', 'data-testid': 'gallery' });
  main().append(el('h1', { text: 'Feedback' }), el('div', { class: 'filters' }, models, corrected, el('span', { class: 'muted', id: 'example-count' })), gallery);
  await loadMore();
  modelOptions(models);
  draw();
});
