// The feedback page (still to come in this build).
import { run, main, el } from './common.js';

run('feedback', async () => {
  main().append(el('h1', { text: 'feedback' }), el('p', { class: 'muted', text: 'This page is still to come.' }));
});
