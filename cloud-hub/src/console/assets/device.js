// The device page (still to come in this build).
import { run, main, el } from './common.js';

run('device', async () => {
  main().append(el('h1', { text: 'device' }), el('p', { class: 'muted', text: 'This page is still to come.' }));
});
