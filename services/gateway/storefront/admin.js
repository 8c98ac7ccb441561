// The admin page: the Shop's status (when the gateway has it), stock per SKU, registered instances.
import { $, api, el, problemText } from './common.js';

function cells(row, values, numeric = []) {
  return el('tr', row, ...values.map((v, i) => el('td', numeric.includes(i) ? { class: 'num' } : {}, v)));
}

async function shopStatus() {
  const box = $('shop-status');
  const r = await api('/admin/status.json');
  if (r.res.status === 404) {
    box.replaceChildren(el('p', {}, 'No Shop status here: this gateway was started without SHOP_STATUS_FILE.'));
    return;
  }
  if (!r.res.ok) { box.replaceChildren(el('p', { class: 'bad' }, problemText(r.res, r.body))); return; }
  const s = (r.body && r.body.status) || r.body || {};
  const dl = el('dl', {},
    el('dt', {}, 'Phase'), el('dd', { id: 'shop-phase', class: s.phase === 'Ready' ? 'ok' : 'bad' }, s.phase ?? 'unknown'),
    el('dt', {}, 'Ready components'), el('dd', {}, s.readyComponents ?? '–'));
  const parts = [dl];
  if (Array.isArray(s.components) && s.components.length) {
    parts.push(el('table', {}, el('caption', {}, 'Components (ready / desired replicas)'),
      el('tbody', {}, ...s.components.map((c) => cells({}, [c.name, `${c.ready} / ${c.desired}`], [1])))));
  }
  if (Array.isArray(s.conditions) && s.conditions.length) {
    parts.push(el('ul', {}, ...s.conditions.map((c) =>
      el('li', {}, `${c.type}: ${c.status}${c.reason ? ` (${c.reason})` : ''}${c.message ? ` ${c.message}` : ''}`))));
  }
  box.replaceChildren(...parts);
}

async function stock() {
  const body = $('stock');
  const products = await api('/api/product?size=200');
  if (!products.res.ok) { body.replaceChildren(cells({}, [problemText(products.res, products.body), '', '', ''])); return; }
  const names = new Map(products.body.map((p) => [p.skuCode, p.name]));
  if (names.size === 0) { body.replaceChildren(cells({}, ['No products yet.', '', '', ''])); return; }
  const skus = [...names.keys()].map(encodeURIComponent).join(',');
  const levels = await api(`/api/inventory?skuCode=${skus}`);
  if (!levels.res.ok) { body.replaceChildren(cells({}, [problemText(levels.res, levels.body), '', '', ''])); return; }
  body.replaceChildren(...levels.body.map((l) => cells({ 'data-sku': l.skuCode },
    [l.skuCode, names.get(l.skuCode) ?? '', l.availableQuantity, l.inStock ? 'yes' : 'no'], [2])));
}

const asList = (v) => (Array.isArray(v) ? v : v ? [v] : []);

async function instances() {
  const body = $('instances');
  const r = await api('/eureka/apps');
  if (!r.res.ok) { body.replaceChildren(cells({}, [problemText(r.res, r.body), '', '', ''])); return; }
  const rows = [];
  for (const app of asList(r.body?.applications?.application)) {
    for (const i of asList(app.instance)) {
      const port = i.port?.$ ?? i.port;
      rows.push(cells({}, [app.name, i.instanceId ?? i.hostName, `${i.ipAddr ?? i.hostName}:${port}`, i.status]));
    }
  }
  body.replaceChildren(...(rows.length ? rows : [cells({}, ['No instance registered.', '', '', ''])]));
}

async function refresh() {
  const results = await Promise.allSettled([shopStatus(), stock(), instances()]);
  const failed = results.filter((x) => x.status === 'rejected').length;
  $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}${failed ? `; ${failed} part(s) could not be reached` : ''}.`;
}

$('refresh').addEventListener('click', refresh);
setInterval(() => { if (!document.hidden) refresh(); }, 5000);
refresh();
