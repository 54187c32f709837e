// Small DOM helpers shared by the views, and the links between the
// console's pages (the mesh tabs, breadcrumbs, a resource's address).
// Every view imports this module: the bundle puts it in the chunk they
// all share, with api.js.

import { KINDS } from './api.js';

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'value') e.value = v;
    else if (k === 'checked') e.checked = !!v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// errorBox shows an API error exactly as the API returned it.
export function errorBox(err) {
  const text = err && err.type ? `${err.type}: ${err.message}` : String(err && err.message ? err.message : err);
  return h('div', { class: 'api-error', role: 'alert', 'data-error-type': err && err.type ? err.type : '' }, text);
}

export function okBox(text) {
  return h('div', { class: 'api-ok', role: 'status' }, text);
}

export function enc(s) { return encodeURIComponent(s); }

// when shows a time in UTC to the second, the same in every browser and
// in the first view the server draws (console/first.go's whenText).
export function when(t) {
  if (!t) return '';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? String(t) : d.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
}

// tagsFromText reads "k=v, k2=v2" into App Mesh tags.
export function tagsFromText(s) {
  return s.split(',').map((x) => x.trim()).filter(Boolean).map((x) => {
    const i = x.indexOf('=');
    return i < 0 ? { key: x, value: '' } : { key: x.slice(0, i).trim(), value: x.slice(i + 1).trim() };
  });
}

const CHILD_KINDS = ['virtualGateway', 'virtualService', 'virtualRouter', 'virtualNode'];

export function meshTabs(m, current) {
  const tab = (href, label, key) => h('a', { href, 'aria-current': current === key ? 'page' : null }, label);
  return h('nav', { class: 'tabs', 'aria-label': 'Mesh' },
    tab(`#/mesh/${enc(m)}`, 'Topology', 'topology'),
    CHILD_KINDS.map((k) => tab(`#/mesh/${enc(m)}/list/${k}`, KINDS[k].label, k)),
    tab(`#/mesh/${enc(m)}/detail`, 'Mesh details', 'mesh'));
}

export function crumbs(...parts) {
  return h('div', { class: 'crumbs' }, parts.map((p, i) => [i ? ' / ' : '', p]));
}

export function hrefOf(kind, m, parent, name) {
  if (kind === 'mesh') return `#/mesh/${enc(name)}`;
  if (kind === 'route' || kind === 'gatewayRoute') return `#/mesh/${enc(m)}/${kind}/${enc(parent)}/${enc(name)}`;
  return `#/mesh/${enc(m)}/${kind}/${enc(name)}`;
}
