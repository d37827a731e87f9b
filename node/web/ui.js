// ui.js: small DOM helpers. Data is only ever inserted as text nodes.

export const $ = (sel, root = document) => root.querySelector(sel);

/**
 * Creates an element. `attrs` become attributes (`class` sets className,
 * `false`/`null` skip, `true` sets an empty attribute); children are nodes or
 * strings, and strings always become text nodes (never parsed as HTML).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c !== null && c !== undefined && c !== false) node.append(c);
  }
  return node;
}

/** Sets textContent only when it changes (keeps selections and avoids reflows). */
export function setText(node, text) {
  const t = text ?? '';
  if (node && node.textContent !== t) node.textContent = t;
}

/** Shows a transient message in the corner. */
export function toast(text, kind = 'error', ms = 6000) {
  const box = $('#toasts');
  if (!box) return;
  const t = el('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status', title: 'Click to dismiss' }, text);
  t.addEventListener('click', () => t.remove());
  box.append(t);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(() => t.remove(), ms);
}

export function clearToasts() {
  $('#toasts')?.replaceChildren();
}

/** "14:05" for a message time. */
export function timeOfDay(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function fullDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString();
}

/** "just now", "5 min ago", "3 h ago", "2 d ago" or a date. */
export function relTime(iso) {
  const d = new Date(iso);
  const s = (Date.now() - d.getTime()) / 1000;
  if (Number.isNaN(s)) return 'a while ago';
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 7 * 86_400) return `${Math.floor(s / 86_400)} d ago`;
  return `on ${d.toLocaleDateString()}`;
}

/** A random UUID; crypto.randomUUID only exists on secure origins, so fall back. */
export function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
