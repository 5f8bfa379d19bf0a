// The login page: the operator's bearer token, sent once as `Authorization: Bearer` to
// POST /console/login; the hub answers with the session cookie (HttpOnly: this script never
// sees it), then the page the person came for.
import { el, main, showError, CSRF_HEADER } from './common.js';

/** Only console pages are followed after login (no open redirect). */
function nextPage() {
  const next = new URLSearchParams(location.search).get('next') || '';
  return /^\/console(\/[A-Za-z0-9._~%\/-]*)?$/.test(next) && !next.startsWith('//') ? next : '/console';
}

function render() {
  const token = el('input', { type: 'password', name: 'token', id: 'token', 'data-testid': 'login-token', autocomplete: 'current-password', required: true, placeholder: 'operator token' });
  const form = el('form', { class: 'card login', 'data-testid': 'login-form' },
    el('h1', { text: 'Tandem console' }),
    el('label', { for: 'token', text: 'Operator token (pki/operator.token or http.bearer_token_file)' }),
    token,
    el('button', { type: 'submit', 'data-testid': 'login-submit', text: 'Log in' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const r = await fetch('/console/login', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { Authorization: `Bearer ${token.value.trim()}`, [CSRF_HEADER]: '1' },
      });
      if (!r.ok) {
        let msg = `${r.status}`;
        try { msg = (await r.json()).error || msg; } catch { /* keep the status */ }
        throw new Error(`login refused: ${msg}`);
      }
      location.assign(nextPage());
    } catch (e) {
      showError(e);
    }
  });
  main().append(form);
  token.focus();
  document.body.dataset.ready = 'true';
}

render();
