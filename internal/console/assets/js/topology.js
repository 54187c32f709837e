// A mesh's live topology: gateways → virtual services → routers → routes →
// virtual nodes (and each node's backends, dashed), laid out in layers,
// redrawn when the mesh's event stream reports a change; traffic from
// /v1/traffic on the edges and proxies from /v1/proxies on the nodes.

import * as api from './api.js';
import { h, enc, errorBox, meshTabs, hrefOf } from './dom.js';
import { layout, render, patch, sameShape, panZoom } from './graph.js';
import { proxyAcked } from './acks.js';

// limiter returns run(fn, first): fn is called when fewer than n calls
// are in flight; calls marked first (lists, which the rest waits on) go
// before the others still waiting.
function limiter(n) {
  let active = 0;
  const first = [], rest = [];
  return async (fn, urgent = false) => {
    if (active < n) active++;
    else await new Promise((r) => (urgent ? first : rest).push(r));
    try {
      return await fn();
    } finally {
      const next = first.shift() || rest.shift();
      if (next) next(); else active--; // the slot passes straight to the next call
    }
  };
}

// PARALLEL reads are kept in flight. A browser opens 6 connections to one
// host over HTTP/1.1; more requests than that waiting in its queue keep
// them busy while the page is still handling the answers before (16 read
// a mesh about twice as fast as 6, measured in test/console).
const PARALLEL = 16;

// load reads every resource of the mesh: the lists, then one Describe per
// resource that has references (the API returns specs one at a time).
// There is no step for everything to wait on: each resource's Describe
// starts as soon as the list naming it has arrived.
// progress(done, known) is called as reads end (known grows as lists
// arrive).
export async function load(m, progress = () => {}) {
  const run = limiter(PARALLEL);
  let done = 0, known = 0;
  const counted = (fn) => { known++; return run(fn).finally(() => progress(++done, known)); };
  const list = (kind, parent) => { known++; return run(() => api.listAll(kind, m, parent), true).finally(() => progress(++done, known)); };
  const describeAll = (items, kind, parentKey, nameKey) =>
    Promise.all(items.map((it) => counted(() => api.describe(kind, m, parentKey ? it[parentKey] : '', it[nameKey]))));
  // children lists each parent's children, then describes them.
  const children = (parents, parentKey, kind, nameKey) =>
    Promise.all(parents.map((p) => list(kind, p[parentKey]).then((l) => describeAll(l, kind, parentKey, nameKey)))).then((x) => x.flat());
  const gatewaysP = list('virtualGateway');
  const routersP = list('virtualRouter');
  const [gateways, routers, svcD, nodeD, routeD, gwrD] = await Promise.all([
    gatewaysP, routersP,
    list('virtualService').then((l) => describeAll(l, 'virtualService', '', 'virtualServiceName')),
    list('virtualNode').then((l) => describeAll(l, 'virtualNode', '', 'virtualNodeName')),
    routersP.then((rs) => children(rs, 'virtualRouterName', 'route', 'routeName')),
    gatewaysP.then((gs) => children(gs, 'virtualGatewayName', 'gatewayRoute', 'gatewayRouteName')),
  ]);
  return { gateways, routers, svcD, routeD, nodeD, gwrD };
}

// ARRAYS names where each kind's resources are kept in a mesh's data.
const ARRAYS = { virtualGateway: 'gateways', virtualRouter: 'routers', virtualService: 'svcD', route: 'routeD', virtualNode: 'nodeD', gatewayRoute: 'gwrD' };

// fromSnapshot turns the event stream's snapshot (each resource as its
// Describe returns it) into the data load returns.
export function fromSnapshot(resources) {
  const d = { gateways: [], routers: [], svcD: [], routeD: [], nodeD: [], gwrD: [] };
  for (const r of resources) {
    const a = ARRAYS[r.kind];
    if (a) d[a].push(r.data);
  }
  return d;
}

function targetsOf(spec) {
  for (const r of ['httpRoute', 'http2Route', 'grpcRoute', 'tcpRoute']) {
    if (spec[r] && spec[r].action) return spec[r].action.weightedTargets || [];
  }
  return [];
}
function gwTarget(spec) {
  for (const r of ['httpRoute', 'http2Route', 'grpcRoute']) {
    const t = spec[r] && spec[r].action && spec[r].action.target;
    if (t && t.virtualService) return t.virtualService.virtualServiceName;
  }
  return '';
}

// build turns the mesh's resources into graph nodes and edges.
export function build(m, data) {
  const nodes = [], edges = [];
  const id = (kind, name, parent) => `${kind}:${parent ? parent + '/' : ''}${name}`;
  const add = (kind, name, parent, extra = {}) => nodes.push({ id: id(kind, name, parent), kind, name, parent, href: hrefOf(kind, m, parent, name), ...extra });
  for (const g of data.gateways) add('virtualGateway', g.virtualGatewayName, '');
  for (const s of data.svcD) add('virtualService', s.virtualServiceName, '');
  for (const r of data.routers) add('virtualRouter', r.virtualRouterName, '');
  for (const n of data.nodeD) add('virtualNode', n.virtualNodeName, '');
  const providedBy = new Map(); // router name -> services it provides
  for (const s of data.svcD) {
    const p = s.spec.provider || {};
    if (p.virtualRouter) {
      edges.push({ from: id('virtualService', s.virtualServiceName), to: id('virtualRouter', p.virtualRouter.virtualRouterName) });
      const l = providedBy.get(p.virtualRouter.virtualRouterName) || [];
      l.push(s.virtualServiceName);
      providedBy.set(p.virtualRouter.virtualRouterName, l);
    } else if (p.virtualNode) {
      edges.push({ from: id('virtualService', s.virtualServiceName), to: id('virtualNode', p.virtualNode.virtualNodeName), service: s.virtualServiceName });
    }
  }
  for (const g of data.gwrD) {
    const t = gwTarget(g.spec);
    if (t) edges.push({ from: id('virtualGateway', g.virtualGatewayName), to: id('virtualService', t), via: g.gatewayRouteName });
  }
  for (const r of data.routeD) {
    const rid = id('route', r.routeName, r.virtualRouterName);
    const ts = targetsOf(r.spec);
    const total = ts.reduce((s, t) => s + t.weight, 0);
    add('route', r.routeName, r.virtualRouterName, { sub: ts.map((t) => `${t.virtualNode}:${t.weight}`).join(' ') });
    edges.push({ from: id('virtualRouter', r.virtualRouterName), to: rid });
    for (const t of ts) {
      edges.push({ from: rid, to: id('virtualNode', t.virtualNode), weight: t.weight, share: total ? t.weight / total : 0, services: providedBy.get(r.virtualRouterName) || [] });
    }
  }
  for (const n of data.nodeD) {
    for (const b of n.spec.backends || []) {
      if (b.virtualService) edges.push({ from: id('virtualNode', n.virtualNodeName), to: id('virtualService', b.virtualService.virtualServiceName), backend: true });
    }
  }
  const known = new Set(nodes.map((n) => n.id));
  return { nodes, edges: edges.filter((e) => known.has(e.from) && known.has(e.to)) };
}

// decorate puts proxies' state on nodes and traffic on edges.
export function decorate(g, proxies, traffic) {
  const byNode = new Map();
  for (const p of proxies) {
    const key = `${p.kind}:${p.name}`;
    const l = byNode.get(key) || [];
    l.push(p);
    byNode.set(key, l);
  }
  for (const n of g.nodes) {
    if (n.kind !== 'virtualNode' && n.kind !== 'virtualGateway') continue;
    const ps = byNode.get(`${n.kind}:${n.name}`) || [];
    const replicas = ps.reduce((s, p) => s + p.replicas, 0);
    const nack = ps.find((p) => p.lastNack && !proxyAcked(p));
    const err = ps.find((p) => p.error);
    n.nack = !!(nack || err);
    n.sub = replicas ? `${replicas} prox${replicas === 1 ? 'y' : 'ies'} · ${nack ? 'NACK' : err ? 'error' : ps.every(proxyAcked) ? 'ACK' : 'pending'}` : 'no proxy';
    n.proxies = ps;
    // Its title (the node's tooltip): each proxy's configuration version
    // ACKed per type, its last NACK with the proxy's message, any
    // translation error.
    n.title = ps.map((p) => `${p.nodeId}: ${p.replicas} replica(s); ACKed ${ackedVersions(p)}${p.lastNack ? `; last NACK: ${p.lastNack.message || ''}` : ''}${p.error ? `; error: ${p.error}` : ''}`).join('\n');
  }
  // Weights are written on the edges of a graph small enough to read
  // them; on a large one they are on each route's box.
  const weights = g.edges.length <= 400;
  for (const e of g.edges) {
    e.rps = 0; e.err = 0; e.p99 = null;
    e.label = weights && e.weight !== undefined ? `weight ${e.weight} (${Math.round(100 * e.share)}%)` : '';
  }
  if (!traffic) return;
  // Traffic edges go source → target node through a virtual service; draw
  // each on the edge that reaches its target from that service.
  for (const t of traffic.edges || []) {
    const to = `virtualNode:${t.target.name}`;
    for (const e of g.edges) {
      if (e.to !== to || e.backend) continue;
      const viaService = e.service === t.virtualService || (e.services && e.services.includes(t.virtualService)) || !t.virtualService;
      if (!viaService) continue;
      e.rps += t.requestsPerSecond;
      e.err = Math.max(e.err, t.errorRatio || 0);
      if (t.p99Ms != null) e.p99 = Math.max(e.p99 || 0, t.p99Ms);
    }
  }
  for (const e of g.edges) {
    if (!e.rps) continue;
    const t = `${e.rps.toFixed(1)} rps · ${(100 * e.err).toFixed(1)}% err${e.p99 != null ? ` · p99 ${e.p99.toFixed(1)} ms` : ''}`;
    e.label = e.label ? `${e.label} · ${t}` : t;
  }
}

export async function topologyView(ctx, m) {
  const status = h('span', { class: 'status-line', id: 'live', role: 'status' }, 'connecting…');
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('id', 'topology');
  svg.setAttribute('role', 'group');
  svg.setAttribute('aria-label', `Topology of mesh ${m}`);
  const fitBtn = h('button', { type: 'button' }, 'Fit');
  const side = h('div', { id: 'node-info' });
  const trafficNote = h('span', { class: 'status-line', id: 'traffic-note' });
  ctx.view.replaceChildren(
    h('div', { class: 'crumbs' }, h('a', { href: '#/meshes' }, 'Meshes'), ' / ', m),
    h('h1', {}, `Mesh ${m}`), meshTabs(m, 'topology'),
    h('div', { class: 'toolbar' }, fitBtn, status, trafficNote),
    h('div', { class: 'graph-wrap' }, svg),
    h('p', { class: 'graph-legend' }, 'Gateways (orange) → virtual services (blue) → routers (violet) → routes (grey, with weights) → virtual nodes (green, with their proxies). Dashed: a node\'s backends. Drag to pan, wheel to zoom, Tab and Enter to open.'),
    side);
  const stats = (window.__weftTopology = { renders: 0, lastLoadMs: 0, lastRenderMs: 0, nodes: 0, edges: 0, revision: 0 });
  let data = null, graph = null, pz = null, lay = null, drawn = null;
  let proxies = [], traffic = null;
  const hrefs = new Map();
  // setGraph takes a new build of the mesh: when its shape is the one
  // drawn (a route's weights changed, say), the drawing is patched in
  // place; else it is laid out and drawn again.
  const setGraph = (g) => {
    const same = drawn && sameShape(graph, g, lay);
    graph = g;
    if (same) lay = same; else { lay = null; drawn = null; }
  };
  const draw = (refit) => {
    const t0 = performance.now();
    decorate(graph, proxies, traffic);
    for (const n of graph.nodes) hrefs.set(n.id, n.href);
    if (drawn) {
      patch(drawn, graph.nodes, graph.edges, lay);
    } else {
      if (!lay) lay = layout(graph.nodes, graph.edges);
      drawn = render(svg, graph.nodes, graph.edges, lay, (id) => { location.hash = hrefs.get(id); });
      pz = panZoom(svg, drawn.root, lay.width, lay.height, refit ? null : pz);
    }
    stats.renders++;
    stats.lastRenderMs = performance.now() - t0;
    stats.nodes = graph.nodes.length;
    stats.edges = graph.edges.length;
    svg.dataset.renders = String(stats.renders);
  };
  fitBtn.addEventListener('click', () => pz && pz.fit());
  const refreshProxies = async () => {
    try { proxies = ((await api.proxies()).proxies || []).filter((p) => p.mesh === m); } catch { proxies = []; }
  };
  const refreshTraffic = async () => {
    try {
      traffic = await api.traffic(m);
      trafficNote.textContent = traffic ? `traffic: last ${traffic.windowSeconds} s` : '';
    } catch (e) { traffic = null; }
  };
  // reload reads the mesh (or takes the snapshot given) and draws it anew;
  // sides, when given, is the proxies' and traffic's reading, started
  // already.
  const reload = async (snapshot, t0 = performance.now(), sides = null) => {
    // The page stays usable while the mesh is read; the status line says
    // how far it got (written at most once a frame).
    let shown = false, last = [0, 0];
    const progress = (done, known) => {
      last = [done, known];
      if (shown) return;
      shown = true;
      requestAnimationFrame(() => { shown = false; if (!graph) status.textContent = `reading the mesh: ${last[0]} of ${last[1]} resources`; });
    };
    data = snapshot || await load(m, progress);
    stats.lastLoadMs = performance.now() - t0;
    stats.snapshot = !!snapshot;
    graph = build(m, data);
    lay = null;
    drawn = null;
    await (sides || Promise.all([refreshProxies(), refreshTraffic()]));
    draw(!pz);
  };
  // Live: the event stream is opened first and asked for the mesh's
  // resources (one snapshot instead of a read per resource; the server
  // sends only what this caller may Describe); a server without
  // snapshots, or a partial one, and the mesh is read through the API.
  // Then a change reads only the resource it names and redraws (a full
  // reload after a resync); changes are applied one at a time, in order,
  // once the first drawing is done; a proxies event redraws the badges;
  // traffic is read every 5 s when the server serves it.
  const t0 = performance.now();
  const queue = [];
  let running = false, ready = false;
  let snap = null, gotFirst;
  const first = new Promise((resolve) => { gotFirst = resolve; });
  const apply = async (ev) => {
    if (ev === 'reload' || ev.kind === 'mesh') { await reload(); return; }
    const arr = ARRAYS[ev.kind];
    if (!arr) return;
    const nameKey = api.KINDS[ev.kind].nameKey;
    const parentKey = ev.kind === 'route' ? 'virtualRouterName' : ev.kind === 'gatewayRoute' ? 'virtualGatewayName' : null;
    const same = (r) => r[nameKey] === ev.name && (!parentKey || r[parentKey] === ev.parent);
    let next = data[arr].filter((r) => !same(r));
    if (ev.op === 'put') {
      try {
        next = next.concat([await api.describe(ev.kind, m, ev.parent || '', ev.name)]);
      } catch (e) {
        if (e.status !== 404) throw e; // deleted since: the delete event follows
      }
    }
    data = { ...data, [arr]: next };
    setGraph(build(m, data));
    draw(false);
  };
  const kick = async () => {
    if (running || !ready) return;
    running = true;
    try {
      while (queue.length) await apply(queue.shift());
    } catch (e) { side.replaceChildren(errorBox(e)); } finally { running = false; }
  };
  // A reconnect resumes after the last revision seen, less one: a stream
  // cut inside a revision's changes has them all again (applying one
  // twice is harmless).
  let asked = 0;
  const resume = () => (asked = stats.revision > 1 ? stats.revision - 1 : 0);
  const stop = api.events(m, (type, ev) => {
    if (type === 'snapshot') { if (snap) snap.push(...ev.resources); return; }
    if (type === 'snapshot-end') { gotFirst(snap && ev.complete ? fromSnapshot(snap) : null); snap = null; return; }
    if (type === 'hello') {
      if (ev.snapshot) snap = []; else gotFirst(null);
      status.textContent = `live · revision ${ev.revision}`;
      // A reconnect the server could not resume there (its history is
      // gone): what changed meanwhile is unknown, read it all.
      if (stats.revision && ev.revision !== (asked || stats.revision)) { queue.push('reload'); kick(); }
      stats.revision = ev.revision;
    }
    if (type === 'change') { status.textContent = `live · revision ${ev.revision} (${ev.op} ${ev.kind} ${ev.name})`; stats.revision = ev.revision; queue.push(ev); kick(); }
    if (type === 'proxies' && ready) refreshProxies().then(() => draw(false));
    if (type === 'resync') { queue.push('reload'); kick(); }
    if (type === 'closed') status.textContent = 'reconnecting…';
    if (type === 'error') { status.textContent = `event stream refused (HTTP ${ev.status})`; gotFirst(null); }
    if (type === 'closed') gotFirst(null);
  }, resume, () => !data);
  ctx.onLeave(stop);
  const sides = Promise.all([refreshProxies(), refreshTraffic()]); // while the snapshot comes
  await reload(await first, t0, sides);
  ready = true;
  kick();
  const tick = setInterval(async () => { if (traffic) { await refreshTraffic(); draw(false); } }, 5000);
  ctx.onLeave(() => clearInterval(tick));
}

// ackedVersions is what a proxy ACKed, per type: "lds 3f2a…, rds 9c1e…".
function ackedVersions(p) {
  return ['lds', 'rds', 'cds', 'eds', 'sds'].filter((t) => p.types && p.types[t]).map((t) => `${t} ${p.types[t].acked || '—'}`).join(', ');
}
