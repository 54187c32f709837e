// App Mesh views: details, create, edit, delete, tags, the route weights
// editor and a node's backends.

import * as api from './api.js';
import { h, errorBox, okBox, enc, when, tagsFromText, meshTabs, crumbs, hrefOf } from './dom.js';
import { specForm } from './forms.js';
import { ackWatcher } from './acks.js';
import { proxyRows, PROXY_COLUMNS } from './proxies.js';

export async function createView(ctx, kind, m, parent) {
  const k = api.KINDS[kind];
  const name = h('input', { id: 'name', name: 'name', required: true, autocomplete: 'off' });
  const tags = h('input', { id: 'tags', name: 'tags', autocomplete: 'off' });
  const parentIn = k.parent && !parent ? h('input', { id: 'parent', name: 'parent', required: true }) : null;
  const form = specForm(kind);
  const out = h('div', { id: 'form-result' });
  const submit = h('button', { class: 'primary', type: 'submit', id: 'submit' }, `Create ${k.one}`);
  const el = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    submit.disabled = true;
    try {
      const p = parent || (parentIn && parentIn.value.trim());
      const r = await api.create(kind, m, p, name.value.trim(), form.spec(), tagsFromText(tags.value));
      location.hash = hrefOf(kind, kind === 'mesh' ? r.meshName : m, p, name.value.trim());
    } catch (e) {
      out.replaceChildren(errorBox(e));
    } finally { submit.disabled = false; }
  } },
  h('label', { for: 'name' }, 'Name'), name,
  parentIn ? [h('label', { for: 'parent' }, api.KINDS[k.parent].one), parentIn] : null,
  form.node,
  h('label', { for: 'tags' }, 'Tags', h('span', { class: 'hint' }, ' (key=value, comma separated)')), tags,
  out,
  h('p', {}, submit, ' ', h('a', { class: 'button', href: m ? `#/mesh/${enc(m)}` : '#/meshes' }, 'Cancel')));
  ctx.view.replaceChildren(
    m ? crumbs(h('a', { href: '#/meshes' }, 'Meshes'), h('a', { href: `#/mesh/${enc(m)}` }, m)) : crumbs(h('a', { href: '#/meshes' }, 'Meshes')),
    h('h1', {}, `Create ${k.one}${parent ? ` in ${parent}` : ''}`), el);
  name.focus();
}

function weightedTargetsOf(spec) {
  for (const r of ['httpRoute', 'http2Route', 'grpcRoute', 'tcpRoute']) {
    if (spec[r] && spec[r].action && spec[r].action.weightedTargets) return spec[r].action.weightedTargets;
  }
  return null;
}

// weightsEditor shows a route's weighted targets as sliders and numbers;
// saving writes the route and shows its new version and, as they come,
// the proxies' ACKs of the configuration that carries it.
function weightsEditor(ctx, m, router, name, res, onSaved) {
  const spec = structuredClone(res.spec);
  const targets = weightedTargetsOf(spec);
  if (!targets) return null;
  const total = () => targets.reduce((s, t) => s + (Number(t.weight) || 0), 0);
  const list = h('div', { id: 'targets' });
  let pcts = [];
  const redraw = () => {
    const T = total();
    targets.forEach((t, i) => { pcts[i].textContent = T ? `${Math.round((100 * t.weight) / T)}%` : '—'; });
  };
  // drawRows draws a row per target: slider, number, share, and a button
  // to remove it (the tutorial replaces one node by another).
  const drawRows = () => {
    pcts = [];
    list.replaceChildren(...targets.map((t, i) => {
      const pct = h('span', { class: 'pct' });
      pcts.push(pct);
      const label = `Weight of ${t.virtualNode}`;
      const range = h('input', { type: 'range', min: '0', max: '100', step: '1', value: String(t.weight), 'aria-label': label, id: `w-range-${t.virtualNode}`, 'data-target': t.virtualNode });
      const num = h('input', { type: 'number', min: '0', max: '100', value: String(t.weight), 'aria-label': label, id: `w-num-${t.virtualNode}`, class: 'wnum' });
      const set = (v) => { t.weight = Number(v); range.value = String(v); num.value = String(v); redraw(); };
      range.addEventListener('input', () => set(range.value));
      num.addEventListener('input', () => set(num.value));
      const rm = h('button', { type: 'button', id: `w-remove-${t.virtualNode}`, 'aria-label': `Remove target ${t.virtualNode}`, onclick: () => { targets.splice(i, 1); drawRows(); } }, '×');
      return h('div', { class: 'target' }, h('strong', {}, t.virtualNode), range, num, pct, rm);
    }));
    redraw();
  };
  drawRows();
  const addNode = h('input', { id: 'w-add-node', 'aria-label': 'Virtual node to add as a target', placeholder: 'virtual node' });
  const addWeight = h('input', { id: 'w-add-weight', type: 'number', min: '0', max: '100', value: '1', class: 'wnum', 'aria-label': 'Its weight' });
  const add = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    const n = addNode.value.trim();
    if (!n || targets.some((t) => t.virtualNode === n)) return;
    targets.push({ virtualNode: n, weight: Number(addWeight.value) || 0 });
    addNode.value = '';
    drawRows();
  } }, addNode, addWeight, h('button', { type: 'submit', id: 'w-add' }, 'Add target'));
  const out = h('div', { id: 'weights-result', 'aria-live': 'polite' });
  const acks = h('div', { id: 'acks' });
  const save = h('button', { class: 'primary', type: 'button', id: 'save-weights' }, 'Save weights');
  save.addEventListener('click', async () => {
    out.replaceChildren();
    acks.replaceChildren();
    save.disabled = true;
    const started = performance.now();
    const watcher = ackWatcher(m, acks, started, ctx.onLeave); // listens before the write, so its event is not missed
    try {
      await watcher.ready;
      const r = await api.update('route', m, router, name, spec);
      out.replaceChildren(okBox(`Saved: route ${name} is now version ${r.metadata.version}.`));
      out.firstChild.id = 'saved-version';
      out.firstChild.dataset.version = String(r.metadata.version);
      watcher.wrote('route', router, name);
      onSaved(r);
    } catch (e) {
      watcher.stop();
      out.replaceChildren(errorBox(e));
    } finally { save.disabled = false; }
  });
  return h('section', { class: 'card weights', 'aria-labelledby': 'weights-h' },
    h('h2', { id: 'weights-h' }, 'Traffic weights'), list, add, h('p', { class: 'muted' }, 'Targets added or removed are written when you save.'), h('p', {}, save), out, acks);
}

// backendsEditor lists a virtual node's backends (the virtual services it
// calls) with a button to remove each, and adds one by name: each change
// writes the node's spec with that one change.
function backendsEditor(m, name, res, onSaved) {
  let spec = structuredClone(res.spec);
  const list = h('ul', { id: 'backends' });
  const out = h('div', { id: 'backends-result', 'aria-live': 'polite' });
  const write = async (next) => {
    out.replaceChildren();
    try {
      const r = await api.update('virtualNode', m, '', name, next);
      spec = structuredClone(r.spec);
      out.replaceChildren(okBox(`Saved: virtual node ${name} is now version ${r.metadata.version}.`));
      draw();
      onSaved(r);
      return true;
    } catch (e) { out.replaceChildren(errorBox(e)); return false; }
  };
  const draw = () => {
    const bs = spec.backends || [];
    list.replaceChildren(...bs.map((b, i) => {
      const svc = b.virtualService ? b.virtualService.virtualServiceName : JSON.stringify(b);
      return h('li', { 'data-backend': svc }, h('a', { href: hrefOf('virtualService', m, '', svc) }, svc), ' ',
        h('button', { type: 'button', 'aria-label': `Remove backend ${svc}`, onclick: () => write({ ...spec, backends: bs.filter((_, j) => j !== i) }) }, 'Remove'));
    }));
    if (!bs.length) list.replaceChildren(h('li', { class: 'muted' }, 'No backend: this node calls no virtual service.'));
  };
  draw();
  const input = h('input', { id: 'backend-name', 'aria-label': 'Virtual service name', placeholder: 'blue.colors.local', required: true });
  const form = h('form', { class: 'row', onsubmit: (ev) => {
    ev.preventDefault();
    const svc = input.value.trim();
    if (svc) write({ ...spec, backends: [...(spec.backends || []), { virtualService: { virtualServiceName: svc } }] }).then((ok) => { if (ok) input.value = ''; });
  } }, input, h('button', { type: 'submit', id: 'add-backend' }, 'Add backend'));
  return h('section', { class: 'card', 'aria-labelledby': 'backends-h' }, h('h2', { id: 'backends-h' }, 'Service backends'), list, form, out);
}

export async function detailView(ctx, kind, m, parent, name) {
  const k = api.KINDS[kind];
  const res = await api.describe(kind, m, parent, name);
  const md = res.metadata || {};
  const out = h('div', { id: 'action-result' });
  const metaBox = h('dl', { class: 'meta', id: 'metadata' },
    h('dt', {}, 'ARN'), h('dd', { id: 'arn' }, md.arn),
    h('dt', {}, 'Version'), h('dd', { id: 'version' }, String(md.version)),
    h('dt', {}, 'UID'), h('dd', {}, md.uid),
    h('dt', {}, 'Created'), h('dd', {}, when(md.createdAt)),
    h('dt', {}, 'Last updated'), h('dd', {}, when(md.lastUpdatedAt)),
    h('dt', {}, 'Owner'), h('dd', {}, md.meshOwner),
    h('dt', {}, 'Status'), h('dd', {}, res.status ? res.status.status : ''));
  const specView = h('pre', { id: 'spec' }, JSON.stringify(res.spec, null, 2));
  // Edit: the whole spec as JSON.
  const editor = specForm(kind, res.spec);
  const saveSpec = h('button', { class: 'primary', type: 'submit', id: 'save-spec' }, 'Save spec');
  const editForm = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    try {
      const r = await api.update(kind, m, parent, name, editor.spec());
      out.replaceChildren(okBox(`Saved: version ${r.metadata.version}.`));
      specView.textContent = JSON.stringify(r.spec, null, 2);
      metaBox.querySelector('#version').textContent = String(r.metadata.version);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  } }, h('h2', {}, 'Edit'), editor.node, h('p', {}, saveSpec));
  const del = h('button', { class: 'danger', type: 'button', id: 'delete' }, `Delete ${k.one}`);
  del.addEventListener('click', async () => {
    if (!window.confirm(`Delete ${k.one} ${name}?`)) return;
    out.replaceChildren();
    try {
      await api.remove(kind, m, parent, name);
      location.hash = kind === 'mesh' ? '#/meshes' : `#/mesh/${enc(m)}/list/${k.parent ? `${kind}/${enc(parent)}` : kind}`;
    } catch (e) { out.replaceChildren(errorBox(e)); }
  });
  const weights = kind === 'route' ? weightsEditor(ctx, m, parent, name, res, (r) => {
    specView.textContent = JSON.stringify(r.spec, null, 2);
    metaBox.querySelector('#version').textContent = String(r.metadata.version);
  }) : null;
  const backends = kind === 'virtualNode' ? backendsEditor(m, name, res, (r) => {
    specView.textContent = JSON.stringify(r.spec, null, 2);
    metaBox.querySelector('#version').textContent = String(r.metadata.version);
  }) : null;
  let proxiesBox = null;
  if (kind === 'virtualNode' || kind === 'virtualGateway') {
    // The proxies serving this node or gateway, as /v1/proxies has them.
    proxiesBox = h('section', { class: 'card', id: 'node-proxies' }, h('h2', {}, 'Proxies'));
    api.proxies().then((st) => {
      const mine = (st.proxies || []).filter((p) => p.mesh === m && p.kind === kind && p.name === name);
      proxiesBox.append(mine.length
        ? h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, h('tr', {}, PROXY_COLUMNS.map((x) => h('th', {}, x)))), h('tbody', {}, proxyRows(mine))))
        : h('p', { class: 'muted' }, 'No proxy is connected for it.'));
    }).catch((e) => proxiesBox.append(e.status === 404 ? h('p', { class: 'muted' }, 'This server runs no xDS server.') : errorBox(e)));
  }
  const tagsBox = h('section', { class: 'card' }, h('h2', {}, 'Tags'));
  drawTags(tagsBox, md.arn);
  const children = [];
  if (kind === 'virtualRouter') children.push(h('p', {}, h('a', { href: `#/mesh/${enc(m)}/list/route/${enc(name)}`, id: 'routes-link' }, 'Routes of this router')));
  if (kind === 'virtualGateway') children.push(h('p', {}, h('a', { href: `#/mesh/${enc(m)}/list/gatewayRoute/${enc(name)}` }, 'Gateway routes of this gateway')));
  // (replaceChildren would write a missing part as the text "null")
  ctx.view.replaceChildren(...[
    crumbs(h('a', { href: '#/meshes' }, 'Meshes'), h('a', { href: `#/mesh/${enc(m)}` }, m), k.parent ? h('a', { href: hrefOf(k.parent, m, '', parent) }, parent) : null),
    h('h1', {}, `${k.one[0].toUpperCase()}${k.one.slice(1)} ${name}`),
    m && kind !== 'mesh' ? meshTabs(m, kind) : meshTabs(m, 'mesh'),
    h('div', { class: 'toolbar' }, del), out,
    weights, backends,
    h('section', { class: 'card' }, h('h2', {}, 'Metadata'), metaBox),
    children, proxiesBox,
    h('section', { class: 'card' }, h('h2', {}, 'Spec'), specView),
    editForm, tagsBox].flat().filter(Boolean));
}

async function drawTags(box, arn) {
  const table = h('tbody');
  const out = h('div');
  const redraw = async () => {
    try {
      const tags = await api.listTags(arn);
      table.replaceChildren(...tags.map((t) => h('tr', {}, h('td', {}, t.key), h('td', {}, t.value),
        h('td', {}, h('button', { type: 'button', onclick: async () => {
          try { await api.untagResource(arn, [t.key]); redraw(); } catch (e) { out.replaceChildren(errorBox(e)); }
        } }, 'Remove')))));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  const input = h('input', { id: 'new-tags', 'aria-label': 'Tags to add (key=value, comma separated)', placeholder: 'key=value, key2=value2' });
  box.append(h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Key'), h('th', {}, 'Value'), h('th', {}))), table),
    h('form', { class: 'row', onsubmit: async (ev) => {
      ev.preventDefault();
      out.replaceChildren();
      try { await api.tagResource(arn, tagsFromText(input.value)); input.value = ''; redraw(); } catch (e) { out.replaceChildren(errorBox(e)); }
    } }, input, h('button', { type: 'submit' }, 'Add tags')), out);
  redraw();
}
