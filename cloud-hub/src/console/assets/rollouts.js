// The rollouts page (still to come in this build).
import { run, main, el } from './common.js';

run('rollouts', async () => {
  main().append(el('h1', { text: 'rollouts' }), el('p', { class: 'muted', text: 'This page is still to come.' }));
});
