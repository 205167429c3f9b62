import { FleetApi, Unauthorized } from '../api.js';
import { el } from '../dom.js';
import { keepToken, signInNotice } from '../session.js';

/** The token form. The token is checked against the endpoint before it is kept. */
export function signInView(onSignedIn: () => void): HTMLElement {
  const notice = signInNotice();
  const message = el('p', { class: notice ? 'message error' : 'message', role: 'alert', id: 'sign-in-message' }, notice ?? '');
  const input = el('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false', 'aria-describedby': 'sign-in-help sign-in-message' });
  const button = el('button', { type: 'submit' }, 'Sign in');
  const form = el(
    'form',
    { class: 'sign-in', 'aria-labelledby': 'sign-in-heading' },
    el('h1', { id: 'sign-in-heading' }, 'Sign in to the fleet console'),
    el('label', { for: 'token' }, 'Token'),
    input,
    el(
      'p',
      { id: 'sign-in-help', class: 'help' },
      'Paste an admin or viewer token (a machine token shows only its machine). It is kept in this tab only, until you sign out or close it.',
    ),
    button,
    message,
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    button.disabled = true;
    message.className = 'message';
    message.textContent = 'Checking the token…';
    new FleetApi(token).machines().then(
      () => {
        keepToken(token);
        onSignedIn();
      },
      (error: unknown) => {
        button.disabled = false;
        message.className = 'message error';
        message.textContent = error instanceof Unauthorized ? 'This token was refused: it is wrong or has been revoked.' : (error as Error).message;
        input.focus();
      },
    );
  });
  queueMicrotask(() => input.focus());
  return form;
}
