// Cloud Map views: namespaces, services, instances with health status;
// create, register, deregister, set health.

import * as api from './api.js';
import { h, errorBox, okBox, enc, when } from './dom.js';

// PAGE is how many items a Cloud Map list reads at a time, as the App Mesh
// lists do.
const PAGE = 50;

// pagedTable reads a Cloud Map list one page at a time (the operation op
// with params, its items under key): "Load more" reads the next page with
// the answer's NextToken, and the search filters what was loaded. rowsOf
// turns one page's items into their rows, in order; nameOf is what the
// search matches. It returns the parts to place: search, status, table and
// the Load more button (id more-<id>).
async function pagedTable(id, op, params, key, headers, rowsOf, nameOf) {
  const body = h('tbody');
  const search = h('input', { type: 'search', placeholder: 'Search', 'aria-label': 'Search' });
  const status = h('span', { class: 'status-line', role: 'status' });
  const more = h('button', { type: 'button', id: `more-${id}` }, 'Load more');
  let token = '', rows = [];
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = rows.filter((r) => !q || r.name.toLowerCase().includes(q));
    body.replaceChildren(...shown.map((r) => r.tr));
    status.textContent = `${shown.length} shown of ${rows.length} loaded${token ? ' (more on the server)' : ''}`;
    more.hidden = !token;
  };
  const load = async () => {
    const data = await api.cloudMap(op, token ? { ...params, MaxResults: PAGE, NextToken: token } : { ...params, MaxResults: PAGE });
    const items = data[key] || [];
    const trs = await rowsOf(items);
    rows = rows.concat(items.map((it, i) => ({ name: nameOf(it), tr: trs[i] })));
    token = data.NextToken || '';
    draw();
  };
  more.addEventListener('click', () => load().catch((e) => status.replaceChildren(errorBox(e))));
  search.addEventListener('input', draw);
  await load();
  return {
    search, status, more,
    table: h('div', { class: 'scroll' }, h('table', { id }, h('thead', {}, h('tr', {}, headers.map((x) => h('th', {}, x)))), body)),
  };
}

export async function namespacesView(ctx) {
  const list = await pagedTable('namespaces', 'ListNamespaces', {}, 'Namespaces', ['Name', 'Type', 'ID', 'Services', 'Created'],
    (nss) => nss.map((n) => h('tr', {},
      h('td', {}, h('a', { href: `#/cloudmap/ns/${enc(n.Id)}` }, n.Name)), h('td', {}, n.Type), h('td', {}, n.Id),
      h('td', {}, String(n.ServiceCount ?? '')), h('td', {}, when(n.CreateDate)))),
    (n) => n.Name);
  const out = h('div');
  const name = h('input', { id: 'ns-name', required: true, placeholder: 'colors.local' });
  const type = h('select', { id: 'ns-type' }, h('option', { value: 'CreatePrivateDnsNamespace' }, 'Private DNS'), h('option', { value: 'CreateHttpNamespace' }, 'HTTP'));
  const vpc = h('input', { id: 'ns-vpc', placeholder: 'vpc-… (private DNS)' });
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    const body = { Name: name.value.trim(), CreatorRequestId: crypto.randomUUID() };
    if (type.value === 'CreatePrivateDnsNamespace') body.Vpc = vpc.value.trim();
    try {
      const r = await api.cloudMap(type.value, body);
      out.replaceChildren(okBox(`Operation ${r.OperationId} submitted.`));
      setTimeout(() => namespacesView(ctx).catch(() => {}), 300);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } }, h('h2', {}, 'Create namespace'),
  h('div', { class: 'row' }, h('label', { for: 'ns-name' }, 'Name'), name, h('label', { for: 'ns-type' }, 'Type'), type, h('label', { for: 'ns-vpc' }, 'VPC'), vpc, h('button', { type: 'submit', class: 'primary', id: 'ns-create' }, 'Create')), out);
  ctx.view.replaceChildren(h('h1', {}, 'Cloud Map namespaces'), h('div', { class: 'toolbar' }, list.search, list.status),
    list.table, list.more, form);
}

export async function servicesView(ctx, nsId) {
  const ns = (await api.cloudMap('GetNamespace', { Id: nsId })).Namespace;
  const out = h('div');
  const list = await pagedTable('services', 'ListServices', { Filters: [{ Name: 'NAMESPACE_ID', Values: [nsId], Condition: 'EQ' }] }, 'Services',
    ['Name', 'ID', 'Instances', 'Health check', ''],
    (svcs) => svcs.map((s) => h('tr', {},
      h('td', {}, h('a', { href: `#/cloudmap/svc/${enc(s.Id)}` }, s.Name)), h('td', {}, s.Id), h('td', {}, String(s.InstanceCount ?? '')),
      h('td', {}, s.HealthCheckCustomConfig ? 'custom' : s.HealthCheckConfig ? s.HealthCheckConfig.Type : 'none'),
      h('td', {}, h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!window.confirm(`Delete service ${s.Name}?`)) return;
        try { await api.cloudMap('DeleteService', { Id: s.Id }); servicesView(ctx, nsId); } catch (e) { out.replaceChildren(errorBox(e)); }
      } }, 'Delete')))),
    (s) => s.Name);
  const name = h('input', { id: 'svc-name', required: true });
  const custom = h('input', { id: 'svc-custom', type: 'checkbox', checked: true });
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    const req = { Name: name.value.trim(), NamespaceId: nsId, CreatorRequestId: crypto.randomUUID() };
    if (ns.Type === 'DNS_PRIVATE' || ns.Type === 'DNS_PUBLIC') req.DnsConfig = { DnsRecords: [{ Type: 'A', TTL: 300 }], RoutingPolicy: 'MULTIVALUE' };
    if (custom.checked) req.HealthCheckCustomConfig = { FailureThreshold: 1 };
    try { await api.cloudMap('CreateService', req); servicesView(ctx, nsId); } catch (e) { out.replaceChildren(errorBox(e)); }
  } }, h('h2', {}, 'Create service'), h('div', { class: 'row' }, h('label', { for: 'svc-name' }, 'Name'), name,
    h('label', { for: 'svc-custom' }, 'Custom health'), custom, h('button', { type: 'submit', class: 'primary', id: 'svc-create' }, 'Create')));
  const del = h('button', { type: 'button', class: 'danger', onclick: async () => {
    if (!window.confirm(`Delete namespace ${ns.Name}?`)) return;
    try { await api.cloudMap('DeleteNamespace', { Id: nsId }); location.hash = '#/cloudmap'; } catch (e) { out.replaceChildren(errorBox(e)); }
  } }, 'Delete namespace');
  ctx.view.replaceChildren(h('div', { class: 'crumbs' }, h('a', { href: '#/cloudmap' }, 'Cloud Map'), ' / ', ns.Name),
    h('h1', {}, `Namespace ${ns.Name}`),
    h('dl', { class: 'meta card' }, h('dt', {}, 'ID'), h('dd', {}, ns.Id), h('dt', {}, 'ARN'), h('dd', {}, ns.Arn), h('dt', {}, 'Type'), h('dd', {}, ns.Type)),
    h('div', { class: 'toolbar' }, list.search, list.status, del), out, list.table, list.more, form);
}

export async function instancesView(ctx, svcId) {
  const svc = (await api.cloudMap('GetService', { Id: svcId })).Service;
  const out = h('div');
  // Each page's rows with that page's instances' health (one call, naming
  // them: a service may have more instances than one answer holds).
  const rowsOf = async (insts) => {
    let health = {};
    if (insts.length) {
      try { health = (await api.cloudMap('GetInstancesHealthStatus', { ServiceId: svcId, Instances: insts.map((i) => i.Id) })).Status || {}; } catch { health = {}; }
    }
    return insts.map((i) => instanceRow(ctx, svc, svcId, out, health, i));
  };
  const list = await pagedTable('instances', 'ListInstances', { ServiceId: svcId }, 'Instances', ['Instance', 'Attributes', 'Health', ''], rowsOf, (i) => i.Id);
  const id = h('input', { id: 'inst-id', required: true });
  const attrs = h('textarea', { id: 'inst-attrs', class: 'short' }, '{\n  "AWS_INSTANCE_IPV4": "10.0.0.10",\n  "AWS_INSTANCE_PORT": "8080"\n}');
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    try {
      let a;
      try { a = JSON.parse(attrs.value); } catch (e) { throw Object.assign(new Error(`Attributes are not valid JSON: ${e.message}`), { type: 'InvalidJSON' }); }
      await api.cloudMap('RegisterInstance', { ServiceId: svcId, InstanceId: id.value.trim(), Attributes: a, CreatorRequestId: crypto.randomUUID() });
      setTimeout(() => instancesView(ctx, svcId), 200);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } }, h('h2', {}, 'Register instance'), h('label', { for: 'inst-id' }, 'Instance ID'), id,
    h('label', { for: 'inst-attrs' }, 'Attributes (JSON)'), attrs, h('p', {}, h('button', { type: 'submit', class: 'primary', id: 'inst-register' }, 'Register')));
  ctx.view.replaceChildren(
    h('div', { class: 'crumbs' }, h('a', { href: '#/cloudmap' }, 'Cloud Map'), ' / ', h('a', { href: `#/cloudmap/ns/${enc(svc.NamespaceId)}` }, svc.NamespaceId), ' / ', svc.Name),
    h('h1', {}, `Service ${svc.Name}`),
    h('dl', { class: 'meta card' }, h('dt', {}, 'ID'), h('dd', {}, svc.Id), h('dt', {}, 'ARN'), h('dd', {}, svc.Arn)),
    h('div', { class: 'toolbar' }, list.search, list.status), out, list.table, list.more, form);
}

// instanceRow is one instance's row: its attributes, its health and what
// can be done to it; errors go to out.
function instanceRow(ctx, svc, svcId, out, health, i) {
  return h('tr', { 'data-instance': i.Id },
    h('td', {}, i.Id),
    h('td', {}, h('code', {}, Object.entries(i.Attributes || {}).map(([k, v]) => `${k}=${v}`).join(' '))),
    h('td', {}, h('span', { class: `badge health ${health[i.Id] === 'HEALTHY' ? 'ok' : health[i.Id] ? 'bad' : 'warn'}` }, health[i.Id] || 'unknown')),
    h('td', {}, svc.HealthCheckCustomConfig ? ['HEALTHY', 'UNHEALTHY'].map((st) => h('button', { type: 'button', 'data-health': st, onclick: async () => {
      try { await api.cloudMap('UpdateInstanceCustomHealthStatus', { ServiceId: svcId, InstanceId: i.Id, Status: st }); instancesView(ctx, svcId); } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, `Set ${st.toLowerCase()}`)) : null,
    ' ', h('button', { type: 'button', class: 'danger', 'data-deregister': i.Id, onclick: async () => {
      try { await api.cloudMap('DeregisterInstance', { ServiceId: svcId, InstanceId: i.Id }); setTimeout(() => instancesView(ctx, svcId), 200); } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, 'Deregister')));
}
