// Models: the registry's versions (digest, signing key, size) and the evaluation reports.
import { api, el, main, run, fmtTime, pct, bytes } from './common.js';

const num = (x) => (typeof x === 'number' ? x.toFixed(3) : '—');

run('models', async () => {
  const [ms, rs] = await Promise.all([api('/v1/models'), api('/v1/eval/reports').catch((e) => (e.status === 404 ? { reports: [] } : Promise.reject(e)))]);
  const reports = rs.reports || [];
  const root = main();
  root.append(el('h1', { text: 'Models' }));
  const models = ms.models || [];
  if (!models.length) root.append(el('p', { class: 'muted', text: 'The registry is empty: `tandem-hub models push DIR`.' }));
  for (const m of models) {
    const rows = m.versions.slice().reverse().map((v) => {
      const evals = reports.filter((r) => r.model === m.name && r.version === v.version);
      return el('tr', { 'data-testid': 'model-row', 'data-model': m.name, 'data-version': v.version },
        el('td', {}, v.version, v.version === m.latest ? el('span', { class: 'tag', text: 'latest' }) : null),
        el('td', { text: v.task }),
        el('td', {}, el('div', { class: 'mono', 'data-testid': 'model-digest', text: `sha256:${v.digest}` })),
        el('td', {}, el('span', { class: 'pill ok', text: 'signed' }), ' ', el('span', { class: 'mono', 'data-testid': 'model-key', text: v.key_id })),
        el('td', { text: `${bytes(v.bytes)}, ${v.files} files` }),
        el('td', { text: v.pushed_at }),
        el('td', {}, ...(evals.length ? evals.map((r) => el('div', { 'data-testid': 'model-eval', text: `${r.set} (${r.variant}, n=${r.n}): accuracy ${pct(r.accuracy)}, macro-F1 ${num(r.macro_f1)}, ECE ${num(r.ece)} — ${fmtTime(r.created_ms)}` })) : ['—'])));
    });
    root.append(el('h2', { text: m.name }),
      el('table', { class: 'grid' }, el('thead', {}, el('tr', {}, ...['Version', 'Task', 'Digest (bundle.json)', 'Signature (key id)', 'Size', 'Pushed', 'Evaluation'].map((h) => el('th', { text: h })))),
        el('tbody', {}, ...rows)));
  }
  const orphan = reports.filter((r) => !models.some((m) => m.name === r.model && m.versions.some((v) => v.version === r.version)));
  if (orphan.length) {
    root.append(el('h2', { text: 'Evaluation reports of versions not in the registry' }),
      el('table', { class: 'grid', 'data-testid': 'eval-reports' }, el('thead', {}, el('tr', {}, ...['Model', 'Version', 'Set', 'n', 'Accuracy', 'Macro-F1', 'ECE', 'When'].map((h) => el('th', { text: h })))),
        el('tbody', {}, ...orphan.map((r) => el('tr', { 'data-testid': 'eval-row' }, ...[r.model, `${r.version} (${r.variant})`, r.set, r.n, pct(r.accuracy), num(r.macro_f1), num(r.ece), fmtTime(r.created_ms)].map((c) => el('td', { text: c })))))));
  }
});
