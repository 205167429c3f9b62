/**
 * The bearer token lives only in this tab's sessionStorage: never in a URL (shared views would leak
 * it) or a cookie (the endpoint would then have to defend against cross-site requests).
 */
const TOKEN_KEY = 'taskhistory.token';
const NOTICE_KEY = 'taskhistory.sign-in-notice';

export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function keepToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.removeItem(NOTICE_KEY);
}

/** Forgets the token; `notice` is shown on the sign-in form (why the user was signed out). */
export function signOut(notice?: string): void {
  sessionStorage.removeItem(TOKEN_KEY);
  if (notice) sessionStorage.setItem(NOTICE_KEY, notice);
  else sessionStorage.removeItem(NOTICE_KEY);
}

export function signInNotice(): string | null {
  return sessionStorage.getItem(NOTICE_KEY);
}
