// Shared by the store and admin pages: the token (kept in sessionStorage, so it ends with the tab),
// JSON requests to the shop's APIs through this same gateway, problem+json messages, DOM building
// through textContent only (nothing from the APIs is ever parsed as HTML).
const TOKEN_KEY = 'shop.token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (v) => sessionStorage.setItem(TOKEN_KEY, v.trim()),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export function $(id) { return document.getElementById(id); }

// el('li', {class: 'x', 'data-sku': s}, 'text', childNode, ...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ''));
  return node;
}

// A request to the shop; resolves to {res, body} (body: parsed JSON, text, or null), never throws on HTTP errors.
export async function api(path, { method = 'GET', body, headers = {}, auth = false } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const t = token.get();
  if (auth && t) h.Authorization = `Bearer ${t}`;
  const res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
  return { res, body: parsed };
}

// A one-line message for a failed answer: a problem document's title, detail and field.
export function problemText(res, body) {
  if (body && typeof body === 'object' && body.title) {
    const field = body.field ? ` (field ${body.field})` : '';
    return `${body.title}${body.detail ? `: ${body.detail}` : ''}${field}`;
  }
  return `HTTP ${res.status}`;
}

// A random (v4) UUID; crypto.randomUUID needs a secure context, getRandomValues does not.
export function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
