// The models page (still to come in this build).
import { run, main, el } from './common.js';

run('models', async () => {
  main().append(el('h1', { text: 'models' }), el('p', { class: 'muted', text: 'This page is still to come.' }));
});
