// The console's shell: sign-in, navigation and the hash router.

import * as api from './api.js';
import { h, errorBox } from './dom.js';
import { meshesView, listView } from './lists.js';

performance.mark('weft-app'); // its imports have run (the browser test reads it)

// The first page (the meshes list) runs only this module, lists.js and
// what every view shares (api.js, dom.js). The other views are loaded
// when first opened (a deep link loads its own at once), and fetched in
// the background once the first page is drawn.
const load = {
  mesh: () => import('./mesh.js'), // details, create and edit forms, the route weights editor
  topology: () => import('./topology.js'),
  cloudmap: () => import('./cloudmap.js'),
  proxies: () => import('./proxies.js'),
};
const lazy = (mod, fn) => async (...a) => (await load[mod]())[fn](...a);
const mesh = { meshesView, listView, createView: lazy('mesh', 'createView'), detailView: lazy('mesh', 'detailView') };
const topologyView = lazy('topology', 'topologyView');
const cloudmap = {
  namespacesView: lazy('cloudmap', 'namespacesView'),
  servicesView: lazy('cloudmap', 'servicesView'),
  instancesView: lazy('cloudmap', 'instancesView'),
};
const proxiesView = lazy('proxies', 'proxiesView');

const view = document.getElementById('view');
let cleanup = null; // ends the current view's streams and timers

// The server drew the first view into the page (the meshes list, or the
// sign-in form) from the API's answer, which it hands over here with the
// session: the first route() takes that view over (its elements stay,
// with their handlers added) from the same answer, without asking again.
const first = (() => {
  const el = document.getElementById('weft-first');
  if (!el) return null;
  try { return JSON.parse(el.textContent); } catch { return null; }
})();
if (first && first.list) {
  const l = first.list;
  const headers = l.errorType ? { 'x-amzn-ErrorType': l.errorType } : {};
  window.weftFirstRead = { url: l.url, res: Promise.resolve([new Response(l.body, { status: l.status, headers }), l.body]) };
}
let drawn = !!first; // #view holds the server's drawing of the first view

// ctx is what a view gets: where to draw, and a way to register cleanups;
// drawn says the view holds the server's drawing of it (the first view).
function newCtx(drawn) {
  const stops = [];
  cleanup = () => { for (const s of stops) s(); };
  return { view, drawn, onLeave: (f) => stops.push(f) };
}

const routes = [
  [/^#\/meshes$/, (c) => mesh.meshesView(c)],
  [/^#\/new\/mesh$/, (c) => mesh.createView(c, 'mesh', '', '')],
  [/^#\/mesh\/([^/]+)$/, (c, m) => topologyView(c, m)],
  [/^#\/mesh\/([^/]+)\/list\/(\w+)$/, (c, m, k) => mesh.listView(c, k, m, '')],
  [/^#\/mesh\/([^/]+)\/list\/(\w+)\/([^/]+)$/, (c, m, k, p) => mesh.listView(c, k, m, p)],
  [/^#\/mesh\/([^/]+)\/new\/(\w+)$/, (c, m, k) => mesh.createView(c, k, m, '')],
  [/^#\/mesh\/([^/]+)\/new\/(\w+)\/([^/]+)$/, (c, m, k, p) => mesh.createView(c, k, m, p)],
  [/^#\/mesh\/([^/]+)\/(virtualNode|virtualService|virtualRouter|virtualGateway)\/([^/]+)$/, (c, m, k, n) => mesh.detailView(c, k, m, '', n)],
  [/^#\/mesh\/([^/]+)\/(route|gatewayRoute)\/([^/]+)\/([^/]+)$/, (c, m, k, p, n) => mesh.detailView(c, k, m, p, n)],
  [/^#\/mesh\/([^/]+)\/detail$/, (c, m) => mesh.detailView(c, 'mesh', m, '', m)],
  [/^#\/cloudmap$/, (c) => cloudmap.namespacesView(c)],
  [/^#\/cloudmap\/ns\/([^/]+)$/, (c, id) => cloudmap.servicesView(c, id)],
  [/^#\/cloudmap\/svc\/([^/]+)$/, (c, id) => cloudmap.instancesView(c, id)],
  [/^#\/proxies$/, (c) => proxiesView(c)],
];

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  document.documentElement.classList.remove('weft-deep'); // see console.go's deepLink
  const hash = location.hash || '#/meshes';
  // The server's drawing stays until the view is drawn again, the same;
  // on another page, its answer is not used later.
  const keep = drawn && hash === '#/meshes';
  if (!keep) window.weftFirstRead = null;
  const drawn0 = drawn;
  drawn = false;
  const section = hash.startsWith('#/cloudmap') ? 'cloudmap' : hash.startsWith('#/proxies') ? 'proxies' : 'meshes';
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (api.session.auth && !api.session.signedIn) { signInView(drawn0 && !!view.querySelector('form.signin')); return; }
  for (const [re, fn] of routes) {
    const m = hash.match(re);
    if (m) {
      const ctx = newCtx(keep);
      if (!keep) view.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
      try {
        await fn(ctx, ...m.slice(1).map(decodeURIComponent));
        performance.mark('weft-view'); // the view is drawn (the browser test reads it)
      } catch (e) {
        view.replaceChildren(h('h1', {}, 'Error'), errorBox(e));
      }
      return;
    }
  }
  location.hash = '#/meshes';
}

function whoBar() {
  const who = document.getElementById('who');
  if (!api.session.auth) { who.replaceChildren(h('span', { title: 'This server has no credentials file: its API takes every request unsigned.' }, 'no sign-in')); return; }
  if (!api.session.signedIn) { who.replaceChildren(); return; }
  who.replaceChildren(
    h('span', { title: api.session.arn || '' }, api.session.accessKeyId),
    h('button', { type: 'button', id: 'sign-out', onclick: async () => {
      try { await api.signOut(); } finally { whoBar(); route(); }
    } }, 'Sign out'));
}

// signInView shows the sign-in form. The one the server drew (adopt) is
// taken over as it is: what was typed in it stays, and its button,
// disabled until now (a form sent before this module runs would go
// nowhere useful), is enabled.
function signInView(adopt) {
  const drawnForm = adopt ? view.querySelector('form.signin') : null;
  const out = drawnForm ? drawnForm.querySelector('#signin-result') : h('div', { id: 'signin-result' });
  const id = drawnForm ? drawnForm.querySelector('#akid') : h('input', { id: 'akid', name: 'accessKeyId', autocomplete: 'username', required: true, autofocus: true });
  const secret = drawnForm ? drawnForm.querySelector('#secret') : h('input', { id: 'secret', name: 'secretAccessKey', type: 'password', autocomplete: 'current-password', required: true });
  const submit = async (ev) => {
    ev.preventDefault();
    out.replaceChildren();
    try {
      await api.signIn(id.value.trim(), secret.value);
      secret.value = '';
      whoBar();
      route();
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  if (drawnForm) {
    drawnForm.addEventListener('submit', submit);
    drawnForm.querySelector('#sign-in').disabled = false;
    performance.mark('weft-view');
    return;
  }
  // method and action: never a secret in a URL, whatever sends the form.
  const form = h('form', { class: 'card signin', method: 'post', action: '/console/api/session', onsubmit: submit },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'This server checks every API call against its credentials file. Sign in with an access key of that file: the console acts with exactly its permissions.'),
    h('label', { for: 'akid' }, 'Access key ID'), id,
    h('label', { for: 'secret' }, 'Secret access key'), secret,
    h('p', {}, h('button', { class: 'primary', type: 'submit', id: 'sign-in' }, 'Sign in')), out);
  view.replaceChildren(form);
  id.focus();
  performance.mark('weft-view');
}

window.addEventListener('weft-signed-out', () => { api.session.signedIn = false; api.session.csrf = ''; whoBar(); route(); });
window.addEventListener('hashchange', route);

(async () => {
  try {
    // Without a credentials file the server says so in the page itself
    // (data-auth="off"): no sign-in, no session to ask for.
    if (first && first.session) Object.assign(api.session, { auth: false, signedIn: false, csrf: '' }, first.session);
    else if (document.documentElement.dataset.auth !== 'off') await api.loadSession();
  } catch (e) {
    view.replaceChildren(errorBox(e));
    return;
  }
  whoBar();
  await route();
  // Then, once the first page is painted and the page is idle, the other
  // views' modules, while the user reads it.
  const prefetch = () => { for (const f of Object.values(load)) f().catch(() => {}); };
  requestAnimationFrame(() => (window.requestIdleCallback ? requestIdleCallback(prefetch, { timeout: 1000 }) : setTimeout(prefetch, 0)));
})();
