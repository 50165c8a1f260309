// The signed-in session: tokens from /v1/auth/login, kept in session storage (one tab,
// gone when the tab closes), and their rotation through /v1/auth/refresh.

const KEY = 'kalamdb.session';
const ACT_AS_KEY = 'kalamdb.actAs';

/** Roles that may act for a user with X-KalamDB-User-Id. */
export const CAN_ACT_AS = new Set(['service', 'dba', 'system']);

export function load() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) ?? 'null');
    return s && typeof s.accessToken === 'string' ? s : null;
  } catch {
    return null;
  }
}

export function clear() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(ACT_AS_KEY);
}

export function loadActAs() {
  return sessionStorage.getItem(ACT_AS_KEY) ?? '';
}

export function storeActAs(user) {
  if (user) sessionStorage.setItem(ACT_AS_KEY, user);
  else sessionStorage.removeItem(ACT_AS_KEY);
}

/** The claims of our own access token (a JWT: header.payload.signature). */
function claims(token) {
  const payload = token.split('.')[1] ?? '';
  const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function fromPair(pair) {
  const c = claims(pair.access_token);
  const lifetimeMs = pair.expires_in * 1000;
  const s = {
    user: c.sub,
    role: c.role,
    accessToken: pair.access_token,
    refreshToken: pair.refresh_token,
    // measured from this clock, so that a skewed client clock does not matter
    issuedAt: Date.now(),
    expiresAt: Date.now() + lifetimeMs,
  };
  sessionStorage.setItem(KEY, JSON.stringify(s));
  return s;
}

async function post(path, body) {
  let res;
  try {
    res = await fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    throw new Error('The server cannot be reached.');
  }
  const json = await res.json().catch(() => null);
  if (!res.ok) throw new Error(json?.error?.message ?? `${res.status} ${res.statusText}`);
  return json;
}

export async function login(username, password) {
  return fromPair(await post('/v1/auth/login', { username, password }));
}

/** The end of an OAuth sign-in: the one-time code the server sent the browser back with. */
export async function exchange(code) {
  return fromPair(await post('/v1/auth/exchange', { code }));
}

/** The configured OAuth / OIDC providers, for sign-in buttons. */
export async function providers() {
  try {
    const res = await fetch('/v1/auth/providers');
    return res.ok ? (await res.json()).providers : [];
  } catch {
    return [];
  }
}

/** Ends the session on the server too: its tokens stop working, its sockets close. */
export async function logout(session) {
  try {
    await fetch('/v1/auth/logout', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${session.accessToken}` },
      body: JSON.stringify({ refresh_token: session.refreshToken }),
    });
  } catch {
    // signed out here whatever the server said; the tokens expire on their own
  }
}

export async function refresh(session) {
  return fromPair(await post('/v1/auth/refresh', { refresh_token: session.refreshToken }));
}

/** Milliseconds until the access token should be refreshed: at three quarters of its life. */
export function refreshDelay(session) {
  const lifetime = session.expiresAt - session.issuedAt;
  const at = session.issuedAt + lifetime * 0.75;
  return Math.max(0, at - Date.now());
}
