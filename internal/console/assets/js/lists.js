// App Mesh lists: the meshes (the first page) and a mesh's resources of
// one kind, searchable and paginated. The first page runs this module and
// nothing else of the views: create, edit and the other pages load when
// opened.

import * as api from './api.js';
import { h, errorBox, enc, when, meshTabs, crumbs, hrefOf } from './dom.js';

// pagedList draws a searchable, paginated list of one kind. drawn, when
// set, is the same list the server drew (its wrapper element): it is
// taken over as it is, its rows drawn again only if a search was typed
// before this code ran.
async function pagedList(kind, m, parent, columns, drawn) {
  const k = api.KINDS[kind];
  const q = (sel) => drawn && drawn.querySelector(sel);
  const body = q(`#list-${kind} tbody`) || h('tbody');
  const more = q(`#more-${kind}`) || h('button', { type: 'button', id: `more-${kind}` }, 'Load more');
  const search = q('input[type="search"]') || h('input', { type: 'search', placeholder: `Search ${k.label.toLowerCase()}`, 'aria-label': `Search ${k.label.toLowerCase()}` });
  const status = q('.status-line') || h('div', { class: 'status-line', role: 'status' });
  let token = '', items = [];
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = items.filter((it) => !q || it[k.nameKey].toLowerCase().includes(q));
    body.replaceChildren(...shown.map((it) => h('tr', {},
      h('td', {}, h('a', { href: hrefOf(kind, m, it.virtualRouterName || it.virtualGatewayName || parent, it[k.nameKey]) }, it[k.nameKey])),
      columns.map((c) => h('td', {}, c(it))))));
    status.textContent = `${shown.length} shown of ${items.length} loaded${token ? ' (more on the server)' : ''}`;
    more.hidden = !token;
  };
  const load = async (redraw = true) => {
    const p = await api.listPage(kind, m, parent, token);
    items = items.concat(p.items);
    token = p.nextToken;
    if (redraw) draw();
  };
  more.addEventListener('click', () => load().catch((e) => status.replaceChildren(errorBox(e))));
  search.addEventListener('input', draw);
  await load(!drawn || !!search.value);
  if (drawn) return drawn;
  return h('div', {},
    h('div', { class: 'toolbar' }, search, status),
    h('div', { class: 'scroll' }, h('table', { id: `list-${kind}` },
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), columns.map((c) => h('th', {}, c.title)))), body)),
    more);
}

const col = (title, f) => Object.assign(f, { title });
const version = col('Version', (it) => it.version);
const updated = col('Last updated', (it) => when(it.lastUpdatedAt));
const arnCol = col('ARN', (it) => h('span', { class: 'muted' }, it.arn));

// meshesView draws the meshes list; when ctx.drawn, the view holds the
// same list, drawn by the server from the same answer: it is taken over.
export async function meshesView(ctx) {
  const drawn = ctx.drawn && ctx.view.querySelector('#list-mesh') ? ctx.view.lastElementChild : null;
  const list = await pagedList('mesh', '', '', [version, updated, arnCol], drawn);
  if (drawn) return;
  ctx.view.replaceChildren(
    h('h1', {}, 'Meshes'),
    h('div', { class: 'toolbar' }, h('a', { class: 'button primary', href: '#/new/mesh', id: 'create-mesh' }, 'Create mesh')),
    list);
}

export async function listView(ctx, kind, m, parent) {
  const k = api.KINDS[kind];
  if (!k) throw new Error(`no kind ${kind}`);
  const out = [crumbs(h('a', { href: '#/meshes' }, 'Meshes'), h('a', { href: `#/mesh/${enc(m)}` }, m)), h('h1', {}, k.label), meshTabs(m, kind)];
  if (kind === 'virtualRouter' || kind === 'virtualGateway') {
    // Each router's routes (each gateway's gateway routes) are one click away.
    const child = kind === 'virtualRouter' ? 'route' : 'gatewayRoute';
    out.push(h('div', { class: 'toolbar' }, h('a', { class: 'button primary', href: `#/mesh/${enc(m)}/new/${kind}`, id: `create-${kind}` }, `Create ${k.one}`)));
    out.push(await pagedList(kind, m, '', [col(api.KINDS[child].label, (it) => h('a', { href: `#/mesh/${enc(m)}/list/${child}/${enc(it[k.nameKey])}` }, 'show')), version, updated]));
  } else if (kind === 'route' || kind === 'gatewayRoute') {
    out.push(h('p', {}, `${api.KINDS[api.KINDS[kind].parent].one}: `, h('a', { href: hrefOf(api.KINDS[kind].parent, m, '', parent) }, parent)));
    out.push(h('div', { class: 'toolbar' }, h('a', { class: 'button primary', href: `#/mesh/${enc(m)}/new/${kind}/${enc(parent)}`, id: `create-${kind}` }, `Create ${k.one}`)));
    out.push(await pagedList(kind, m, parent, [version, updated]));
  } else {
    out.push(h('div', { class: 'toolbar' }, h('a', { class: 'button primary', href: `#/mesh/${enc(m)}/new/${kind}`, id: `create-${kind}` }, `Create ${k.one}`)));
    out.push(await pagedList(kind, m, '', [version, updated]));
  }
  ctx.view.replaceChildren(...out);
}
