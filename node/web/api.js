// api.js: the HTTP client for /api/v1, plus the session (tokens) it runs on.
//
// The session lives in localStorage so that it survives reloads and is shared
// by the tabs of one browser. The access token is refreshed shortly before it
// expires; a 401 triggers one refresh and one retry, and when the refresh token
// itself is refused the "auth lost" handler sends the user back to the login.

const KEY = 'parley.session';
const BASE = '/api/v1';

/** An error answered by the server ({"error":{"code","message"}}). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

let session = readStored(); // {access_token, refresh_token, expires_at, lifetime, user}
let refreshTimer = null;
let inflight = null; // the refresh in progress, shared by concurrent callers
let onAuthLost = () => {};
let onTokens = () => {};

function readStored() {
  try {
    const s = JSON.parse(localStorage.getItem(KEY));
    return s && s.access_token && s.refresh_token && s.user ? s : null;
  } catch {
    return null;
  }
}

/** Called when the session can no longer be renewed. */
export function setAuthLostHandler(fn) {
  onAuthLost = fn;
}

/** Called with the new access token whenever it changes (here or in another tab). */
export function setTokenHandler(fn) {
  onTokens = fn;
}

export const currentSession = () => session;

/** Stores a login/refresh answer and plans the next refresh. */
function saveTokens(t) {
  const lifetime = Math.max(1, Number(t.expires_in) || 60) * 1000;
  session = {
    access_token: t.access_token,
    refresh_token: t.refresh_token,
    expires_at: Date.now() + lifetime,
    lifetime,
    user: t.user,
  };
  localStorage.setItem(KEY, JSON.stringify(session));
  scheduleRefresh();
  onTokens(session.access_token);
}

export function clearSession() {
  session = null;
  localStorage.removeItem(KEY);
  clearTimeout(refreshTimer);
}

function lost(why) {
  console.warn(`Parley: session ended (${why})`);
  clearSession();
  onAuthLost();
}

/** Plans a refresh a little before the access token expires. */
export function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  const margin = Math.min(30_000, (session.lifetime || 60_000) / 4);
  // Jitter so that tabs sharing the session rarely refresh at the same moment.
  const delay = Math.max(1000, session.expires_at - Date.now() - margin * (1 + Math.random() / 2));
  refreshTimer = setTimeout(() => {
    refresh().catch(() => {
      // Server unreachable: try again soon (the token may still be valid).
      refreshTimer = setTimeout(scheduleRefresh, 10_000);
    });
  }, delay);
}

/**
 * Rotates the tokens. Resolves true when a fresh access token is available,
 * false when the session is gone (the auth-lost handler has run); rejects on
 * network or server trouble, leaving the session as it was.
 */
export function refresh() {
  if (!inflight) {
    const used = session?.refresh_token;
    const run = () => doRefresh(used);
    // Web Locks serialise refreshes across tabs so two tabs never spend the
    // same (single-use) refresh token.
    const p = navigator.locks?.request ? navigator.locks.request('parley-refresh', run) : run();
    inflight = p.finally(() => {
      inflight = null;
    });
  }
  return inflight;
}

/** Adopts tokens another tab stored after rotating `used`; true if there were any. */
function adoptRotated(used) {
  const stored = readStored();
  if (!stored || stored.refresh_token === used || stored.expires_at - Date.now() < 5000) return false;
  session = stored;
  scheduleRefresh();
  onTokens(session.access_token);
  return true;
}

async function doRefresh(used) {
  if (adoptRotated(used)) return true;
  const stored = readStored();
  const token = stored?.refresh_token ?? session?.refresh_token;
  if (!token) {
    lost('no refresh token');
    return false;
  }
  const res = await fetch(`${BASE}/auth/refresh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: token }),
  });
  if (res.ok) {
    saveTokens(await res.json());
    return true;
  }
  if (res.status === 400 || res.status === 401 || res.status === 403) {
    // localStorage reaches other tabs with a delay: the token may have been
    // rotated by another tab a moment ago. Look again before giving up.
    await new Promise((r) => setTimeout(r, 700));
    if (adoptRotated(token)) return true;
    lost(`refresh answered ${res.status}`);
    return false;
  }
  throw await toError(res);
}

/** An access token valid for at least a few more seconds, or null if logged out. */
export async function freshToken(force = false) {
  if (!session) return null;
  if (force || session.expires_at - Date.now() < 5000) {
    if (!(await refresh())) return null;
  }
  return session?.access_token ?? null;
}

async function toError(res) {
  let data = null;
  try {
    data = await res.json();
  } catch {
    /* not JSON */
  }
  const e = data?.error ?? {};
  const retry = res.headers.get('Retry-After');
  return new ApiError(
    res.status,
    e.code || `http_${res.status}`,
    e.message || res.statusText || 'request failed',
    retry ? Number(retry) : null,
  );
}

/** One API call; retries once after refreshing on a 401. */
async function call(method, path, body, auth = true) {
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth) {
      const token = await freshToken();
      if (!token) throw new ApiError(401, 'unauthorized', 'Please log in again.');
      headers.Authorization = `Bearer ${token}`;
    }
    const res = await fetch(BASE + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401 && auth) {
      if (attempt === 0 && (await refresh())) continue;
      if (session) lost(`${method} ${path} answered 401 after a refresh`);
      throw await toError(res);
    }
    if (!res.ok) throw await toError(res);
    return res.status === 204 ? null : res.json();
  }
}

const enc = encodeURIComponent;

export const Api = {
  register: (username, password) => call('POST', '/auth/register', { username, password }, false),
  async login(username, password) {
    const t = await call('POST', '/auth/login', { username, password }, false);
    saveTokens(t);
    return t.user;
  },
  /** Revokes the refresh token (best effort) and forgets the session. */
  async logout() {
    const s = session;
    clearSession();
    if (!s) return;
    await fetch(`${BASE}/auth/logout`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${s.access_token}` },
      body: JSON.stringify({ refresh_token: s.refresh_token }),
    }).catch(() => {});
  },
  me: () => call('GET', '/users/me'),
  user: (id) => call('GET', `/users/${enc(id)}`),
  rooms: () => call('GET', '/rooms'),
  room: (id) => call('GET', `/rooms/${enc(id)}`),
  createGroup: (name, members) => call('POST', '/rooms', { name, members }),
  direct: (username) => call('POST', '/rooms/direct', { username }),
  addMember: (id, username) => call('POST', `/rooms/${enc(id)}/members`, { username }),
  removeMember: (id, userId) => call('DELETE', `/rooms/${enc(id)}/members/${enc(userId)}`),
  rename: (id, name) => call('PATCH', `/rooms/${enc(id)}`, { name }),
  setRole: (id, userId, role) => call('PUT', `/rooms/${enc(id)}/members/${enc(userId)}/role`, { role }),
  messages: (id, params) => call('GET', `/rooms/${enc(id)}/messages?${new URLSearchParams(params)}`),
};

// Keep tabs in step: a logout or a login as someone else elsewhere applies here too.
window.addEventListener('storage', (e) => {
  if (e.key !== KEY) return;
  const next = readStored();
  if (!next) {
    if (session) lost('logged out in another tab');
  } else if (!session || next.user.user_id !== session.user.user_id) {
    location.reload();
  } else {
    session = next;
    scheduleRefresh();
    onTokens(session.access_token);
  }
});
