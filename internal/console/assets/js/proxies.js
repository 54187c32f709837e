// Every connected proxy: identity, replicas and their addresses, connected since, per-type
// versions, last NACK, translation error; filtered by mesh and node.

import * as api from './api.js';
import { h, errorBox, when } from './dom.js';
import { proxyAcked } from './acks.js';

const TYPES = ['lds', 'rds', 'cds', 'eds', 'sds'];

// proxyRows draws proxies as table rows: identity, mesh, replicas,
// connected since, per-type versions, state with the last NACK.
export function proxyRows(list) {
  return list.map((p) => h('tr', { 'data-node': p.nodeId },
    h('td', {}, h('div', {}, p.nodeId), h('div', { class: 'muted' }, `${p.kind} ${p.name}${p.proxyless ? ' · proxyless gRPC' : ''}`)),
    h('td', {}, p.mesh), h('td', {}, String(p.replicas), (p.addresses || []).map((a) => h('div', { class: 'muted' }, a))), h('td', {}, when(p.connectedSince)),
    h('td', {}, TYPES.filter((t) => p.types && p.types[t]).map((t) => {
      const ts = p.types[t];
      return h('div', {}, h('code', {}, `${t} ${ts.version}`), ts.acked === ts.version ? ' ✓' : ` (acked ${ts.acked || '—'}, ${ts.ackedReplicas}/${p.replicas})`);
    })),
    // A translation error leaves the proxy on the configuration it ACKed
    // before: the state says error, as the graph does, not ACK.
    h('td', {}, p.error ? h('span', { class: 'badge bad' }, 'error') : proxyAcked(p) ? h('span', { class: 'badge ok' }, 'ACK') : h('span', { class: 'badge warn' }, 'pending'),
      p.lastNack ? h('div', { class: 'api-error' }, `last NACK: ${p.lastNack.message || JSON.stringify(p.lastNack)}`) : null,
      p.error ? h('div', { class: 'api-error' }, p.error) : null,
      p.certificateError ? h('div', { class: 'muted' }, p.certificateError) : null)));
}

export const PROXY_COLUMNS = ['Node', 'Mesh', 'Replicas and addresses', 'Connected since', 'Versions', 'State'];

export async function proxiesView(ctx) {
  const mesh = h('input', { id: 'filter-mesh', type: 'search', 'aria-label': 'Filter by mesh', placeholder: 'mesh' });
  const node = h('input', { id: 'filter-node', type: 'search', 'aria-label': 'Filter by node or gateway', placeholder: 'node' });
  const body = h('tbody');
  const status = h('span', { class: 'status-line', role: 'status' });
  let all = [], revision = 0;
  const draw = () => {
    const fm = mesh.value.trim().toLowerCase(), fn = node.value.trim().toLowerCase();
    const shown = all.filter((p) => (!fm || p.mesh.toLowerCase().includes(fm)) && (!fn || p.name.toLowerCase().includes(fn)));
    body.replaceChildren(...proxyRows(shown));
    status.textContent = `${shown.length} of ${all.length} proxies · configuration at store revision ${revision}`;
  };
  const refresh = async () => {
    try {
      const st = await api.proxies();
      all = st.proxies || [];
      revision = st.revision;
      draw();
    } catch (e) {
      if (e.status === 404) status.textContent = 'This server runs no xDS server (--xds-addr "").';
      else status.replaceChildren(errorBox(e));
    }
  };
  mesh.addEventListener('input', draw);
  node.addEventListener('input', draw);
  await refresh();
  const t = setInterval(refresh, 2000);
  ctx.onLeave(() => clearInterval(t));
  ctx.view.replaceChildren(h('h1', {}, 'Proxies'), h('div', { class: 'toolbar' }, mesh, node, status),
    h('div', { class: 'scroll' }, h('table', { id: 'proxies' }, h('thead', {}, h('tr', {}, PROXY_COLUMNS.map((x) => h('th', {}, x)))), body)));
}
