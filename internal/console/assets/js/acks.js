// Following one write to the proxies: the write's store revision comes on
// the mesh's event stream; /v1/proxies then says, for each proxy, whether
// it has ACKed a configuration computed at or after that revision.

import * as api from './api.js';
import { h, errorBox } from './dom.js';

const TIMEOUT_MS = 30000;

// proxyAcked reports whether every subscribed type of p is ACKed at the
// version served, by every replica.
export function proxyAcked(p) {
  const types = Object.values(p.types || {});
  return types.length > 0 && types.every((t) => t.version && t.acked === t.version && t.ackedReplicas === p.replicas);
}

export function ackWatcher(mesh, box, started, onLeave) {
  const seen = [];
  let want = null; // {kind, parent, name}
  let rev = 0;
  let done = false;
  let resolveReady;
  const ready = new Promise((r) => { resolveReady = r; });
  const status = h('p', { id: 'ack-status', class: 'status-line', role: 'status' }, 'Waiting for the write…');
  const table = h('tbody');
  box.replaceChildren(status, h('div', { class: 'scroll' }, h('table', { id: 'ack-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Proxy'), h('th', {}, 'Replicas'), h('th', {}, 'RDS version'), h('th', {}, 'State'))), table)));
  const ms = () => `${Math.round(performance.now() - started)} ms`;
  const check = async () => {
    if (!rev || done) return;
    let st;
    try {
      st = await api.proxies();
    } catch (e) {
      if (e.status === 404) status.textContent = `Store revision ${rev}: this server runs no xDS server, so no proxy to follow.`;
      else box.append(errorBox(e));
      finish();
      return;
    }
    if (st.revision < rev) return; // the xDS server has not computed it yet
    const mine = (st.proxies || []).filter((p) => p.mesh === mesh);
    table.replaceChildren(...mine.map((p) => {
      const ok = proxyAcked(p);
      const nack = p.lastNack && !ok;
      const rds = (p.types && (p.types.rds || p.types.lds)) || {};
      return h('tr', { 'data-node': p.nodeId, 'data-acked': String(ok) },
        h('td', {}, `${p.kind}/${p.name}`), h('td', {}, String(p.replicas)), h('td', {}, rds.version || ''),
        h('td', {}, ok ? h('span', { class: 'badge ok' }, 'ACK') : nack ? h('span', { class: 'badge bad', title: p.lastNack.message || '' }, `NACK: ${p.lastNack.message || ''}`) : p.error ? h('span', { class: 'badge bad' }, p.error) : h('span', { class: 'badge warn' }, 'pending')));
    }));
    const acked = mine.filter(proxyAcked).length;
    if (!mine.length) {
      status.textContent = `Store revision ${rev}: no proxy of mesh ${mesh} is connected.`;
      finish();
    } else if (acked === mine.length) {
      status.textContent = `Store revision ${rev}: all ${mine.length} proxies ACKed, ${ms()} after saving.`;
      status.dataset.allAcked = 'true';
      finish();
    } else {
      status.textContent = `Store revision ${rev}: ${acked} of ${mine.length} proxies ACKed (${ms()}).`;
    }
  };
  const match = (ev) => want && ev.kind === want.kind && ev.name === want.name && (ev.parent || '') === (want.parent || '');
  const stopEvents = api.events(mesh, (type, data) => {
    if (type === 'hello') resolveReady();
    if (type === 'error' || type === 'closed') resolveReady(); // the write goes on; ACKs then show by polling below
    if (type === 'change') {
      seen.push(data);
      if (!rev && match(data)) { rev = data.revision; check(); }
    }
    if (type === 'proxies') check();
  });
  const timer = setTimeout(() => { if (!done) { status.textContent += ' (stopped following after 30 s)'; finish(); } }, TIMEOUT_MS);
  const poll = setInterval(check, 1000); // a backstop should a proxies event be missed
  function finish() { done = true; stopEvents(); clearTimeout(timer); clearInterval(poll); }
  onLeave(finish);
  return {
    ready,
    wrote(kind, parent, name) {
      want = { kind, parent, name };
      const ev = seen.find(match);
      if (ev) { rev = ev.revision; check(); }
    },
    stop: finish,
  };
}
