// The store: search the catalogue, order with an Idempotency-Key, watch the notifications arrive live.
import { $, api, el, problemText, token, uuid } from './common.js';

const SIZE = 12;
const state = { q: '', page: 0, total: 0 };
// The attempt of the last click: a retry of the same order (same SKU and quantity) after a network
// error or a 5xx reuses its key, so the shop places it once however often it is clicked.
let pending = null;
const mine = new Set();

async function search() {
  const params = new URLSearchParams({ page: state.page, size: SIZE });
  if (state.q) params.set('q', state.q);
  $('results-status').textContent = 'Searching…';
  let r;
  try { r = await api(`/api/product?${params}`); } catch (e) {
    $('results-status').textContent = `The catalogue cannot be reached: ${e.message}`;
    return;
  }
  if (!r.res.ok) { $('results-status').textContent = problemText(r.res, r.body); return; }
  state.total = Number(r.res.headers.get('X-Total-Count') ?? r.body.length);
  const list = $('products');
  list.replaceChildren(...r.body.map(card));
  const pages = Math.max(1, Math.ceil(state.total / SIZE));
  $('results-status').textContent = state.total === 0
    ? `No product matches ${state.q ? `“${state.q}”` : 'yet'}.`
    : `${state.total} product${state.total === 1 ? '' : 's'}${state.q ? ` match “${state.q}”` : ''}; page ${state.page + 1} of ${pages}.`;
  $('prev').disabled = state.page === 0;
  $('next').disabled = state.page + 1 >= pages;
}

function card(p) {
  const qid = `qty-${p.id}`;
  const form = el('form', { 'data-sku': p.skuCode },
    el('div', {}, el('label', { for: qid }, 'Quantity'),
      el('input', { id: qid, name: 'quantity', type: 'number', min: 1, max: 10000, value: 1, required: '' })),
    el('button', { type: 'submit', 'aria-label': `Order ${p.name}` }, 'Order'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); order(p, form); });
  return el('li', { 'data-sku': p.skuCode },
    el('h3', {}, p.name),
    el('p', {}, p.description),
    el('p', {}, el('span', { class: 'price' }, `$${p.price}`), ' · ', el('span', { class: 'sku' }, p.skuCode)),
    form);
}

function say(text, cls) {
  const s = $('order-status');
  s.className = cls || '';
  s.textContent = text;
}

async function order(p, form) {
  if (!token.get()) { say('Sign in first: paste an access token below, then Order again.', 'bad'); $('token').focus(); return; }
  const quantity = Number(form.quantity.value);
  if (!Number.isInteger(quantity) || quantity < 1 || quantity > 10000) { say('Quantity must be a whole number from 1 to 10000.', 'bad'); form.quantity.focus(); return; }
  const sig = `${p.skuCode}|${quantity}`;
  if (!pending || pending.sig !== sig) pending = { sig, key: uuid() };
  const button = form.querySelector('button');
  button.disabled = true;
  say(`Placing your order for ${quantity} × ${p.name}…`);
  try {
    const r = await api('/api/order', {
      method: 'POST', auth: true, headers: { 'Idempotency-Key': pending.key },
      body: { orderLineItemsDtoList: [{ skuCode: p.skuCode, price: p.price, quantity }] },
    });
    if (r.res.ok) {
      pending = null;
      mine.add(r.body.orderNumber);
      document.querySelector(`#notifications li[data-order="${CSS.escape(r.body.orderNumber)}"]`)?.classList.add('mine');
      say(`Order ${r.body.orderNumber} placed: ${quantity} × ${p.name}, total $${r.body.total}.`, 'ok');
    } else if (r.res.status >= 500 || r.res.status === 429 || String(r.body?.type).endsWith('idempotency-key-in-flight')) {
      say(`Not placed yet: ${problemText(r.res, r.body)}. Order again to retry; it is sent with the same Idempotency-Key, so it cannot be placed twice.`, 'bad');
    } else {
      pending = null;
      const hint = r.res.status === 401 || r.res.status === 403 ? ' Check the access token.' : '';
      say(`Not placed: ${problemText(r.res, r.body)}.${hint}`, 'bad');
    }
  } catch (e) {
    say(`The shop did not answer (${e.message}). Order again to retry with the same Idempotency-Key.`, 'bad');
  } finally {
    button.disabled = false;
  }
}

function listen() {
  const badge = $('stream-state');
  const src = new EventSource('/api/notifications/stream');
  src.addEventListener('open', () => { badge.textContent = 'live'; });
  src.addEventListener('error', () => { badge.textContent = 'reconnecting'; });
  src.addEventListener('notification', (ev) => {
    let n;
    try { n = JSON.parse(ev.data); } catch { return; }
    const when = new Date(n.createdAt || Date.now()).toLocaleTimeString();
    const item = el('li', { 'data-order': n.orderNumber, class: mine.has(n.orderNumber) ? 'mine' : undefined },
      el('time', { datetime: n.createdAt }, when), ' ', n.message || `Order ${n.orderNumber} placed`);
    const list = $('notifications');
    list.prepend(item);
    while (list.children.length > 20) list.lastElementChild.remove();
  });
}

function tokenForm() {
  const show = () => { $('token-status').textContent = token.get() ? 'A token is set for this tab.' : 'No token: you can browse, but ordering needs one.'; };
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('token').value.trim();
    if (v.split('.').length !== 3) { $('token-status').textContent = 'That is not a JWT (three dot-separated parts).'; return; }
    token.set(v);
    $('token').value = '';
    show();
  });
  $('token-clear').addEventListener('click', () => { token.clear(); show(); });
  show();
}

$('search').addEventListener('submit', (ev) => { ev.preventDefault(); state.q = $('q').value.trim(); state.page = 0; search(); });
$('prev').addEventListener('click', () => { state.page = Math.max(0, state.page - 1); search(); });
$('next').addEventListener('click', () => { state.page += 1; search(); });
tokenForm();
listen();
search();
