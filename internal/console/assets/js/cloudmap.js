// Cloud Map views: namespaces, services, instances with health status;
// create, register, deregister, set health.

import * as api from './api.js';
import { h, errorBox, okBox, enc, when } from './dom.js';

function searchable(table, rows, nameOf) {
  const search = h('input', { type: 'search', placeholder: 'Search', 'aria-label': 'Search' });
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    table.replaceChildren(...rows.filter((r) => !q || nameOf(r).toLowerCase().includes(q)).map((r) => r.tr));
  };
  search.addEventListener('input', draw);
  draw();
  return search;
}

export async function namespacesView(ctx) {
  const nss = await api.cloudMapAll('ListNamespaces', {}, 'Namespaces');
  const body = h('tbody');
  const rows = nss.map((n) => ({ n, tr: h('tr', {},
    h('td', {}, h('a', { href: `#/cloudmap/ns/${enc(n.Id)}` }, n.Name)), h('td', {}, n.Type), h('td', {}, n.Id),
    h('td', {}, String(n.ServiceCount ?? '')), h('td', {}, when(n.CreateDate))) }));
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
  const search = searchable(body, rows, (r) => r.n.Name);
  ctx.view.replaceChildren(h('h1', {}, 'Cloud Map namespaces'), h('div', { class: 'toolbar' }, search),
    h('div', { class: 'scroll' }, h('table', { id: 'namespaces' }, h('thead', {}, h('tr', {}, ['Name', 'Type', 'ID', 'Services', 'Created'].map((x) => h('th', {}, x)))), body)), form);
}

export async function servicesView(ctx, nsId) {
  const ns = (await api.cloudMap('GetNamespace', { Id: nsId })).Namespace;
  const svcs = await api.cloudMapAll('ListServices', { Filters: [{ Name: 'NAMESPACE_ID', Values: [nsId], Condition: 'EQ' }] }, 'Services');
  const body = h('tbody');
  const out = h('div');
  const rows = svcs.map((s) => ({ s, tr: h('tr', {},
    h('td', {}, h('a', { href: `#/cloudmap/svc/${enc(s.Id)}` }, s.Name)), h('td', {}, s.Id), h('td', {}, String(s.InstanceCount ?? '')),
    h('td', {}, s.HealthCheckCustomConfig ? 'custom' : s.HealthCheckConfig ? s.HealthCheckConfig.Type : 'none'),
    h('td', {}, h('button', { type: 'button', class: 'danger', onclick: async () => {
      if (!window.confirm(`Delete service ${s.Name}?`)) return;
      try { await api.cloudMap('DeleteService', { Id: s.Id }); servicesView(ctx, nsId); } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, 'Delete'))) }));
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
    h('div', { class: 'toolbar' }, searchable(body, rows, (r) => r.s.Name), del), out,
    h('div', { class: 'scroll' }, h('table', { id: 'services' }, h('thead', {}, h('tr', {}, ['Name', 'ID', 'Instances', 'Health check', ''].map((x) => h('th', {}, x)))), body)), form);
}

export async function instancesView(ctx, svcId) {
  const svc = (await api.cloudMap('GetService', { Id: svcId })).Service;
  const insts = await api.cloudMapAll('ListInstances', { ServiceId: svcId }, 'Instances');
  let health = {};
  if (insts.length) {
    try { health = (await api.cloudMap('GetInstancesHealthStatus', { ServiceId: svcId })).Status || {}; } catch { health = {}; }
  }
  const out = h('div');
  const body = h('tbody');
  const rows = insts.map((i) => ({ i, tr: h('tr', { 'data-instance': i.Id },
    h('td', {}, i.Id),
    h('td', {}, h('code', {}, Object.entries(i.Attributes || {}).map(([k, v]) => `${k}=${v}`).join(' '))),
    h('td', {}, h('span', { class: `badge health ${health[i.Id] === 'HEALTHY' ? 'ok' : health[i.Id] ? 'bad' : 'warn'}` }, health[i.Id] || 'unknown')),
    h('td', {}, svc.HealthCheckCustomConfig ? ['HEALTHY', 'UNHEALTHY'].map((st) => h('button', { type: 'button', 'data-health': st, onclick: async () => {
      try { await api.cloudMap('UpdateInstanceCustomHealthStatus', { ServiceId: svcId, InstanceId: i.Id, Status: st }); instancesView(ctx, svcId); } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, `Set ${st.toLowerCase()}`)) : null,
    ' ', h('button', { type: 'button', class: 'danger', 'data-deregister': i.Id, onclick: async () => {
      try { await api.cloudMap('DeregisterInstance', { ServiceId: svcId, InstanceId: i.Id }); setTimeout(() => instancesView(ctx, svcId), 200); } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, 'Deregister'))) }));
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
    h('div', { class: 'toolbar' }, searchable(body, rows, (r) => r.i.Id)), out,
    h('div', { class: 'scroll' }, h('table', { id: 'instances' }, h('thead', {}, h('tr', {}, ['Instance', 'Attributes', 'Health', ''].map((x) => h('th', {}, x)))), body)), form);
}
