// A layered (Sugiyama-style) layout of a mesh's topology and its SVG.
// Layers follow the direction traffic takes: gateways, virtual services,
// routers, routes, virtual nodes. Long edges get dummy points so that the
// ordering step sees them; the order within a layer comes from barycenter
// sweeps down and up; x is the order packed left to right, then each
// layer is centred.

const LAYER = { virtualGateway: 0, virtualService: 1, virtualRouter: 2, route: 3, virtualNode: 4 };
const W = { virtualGateway: 170, virtualService: 190, virtualRouter: 170, route: 120, virtualNode: 170 };
const H = 46, GAPX = 16, GAPY = 110, ROWGAP = 24;

// layout assigns x, y to nodes ({id, kind}) given edges ({from, to,
// backend}); backend edges (node → the service it calls) do not shape the
// layers. It returns the drawing's width and height and the edges' polylines.
export function layout(nodes, edges, sweeps = 4) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const layers = [[], [], [], [], []];
  for (const n of nodes) { n.layer = LAYER[n.kind]; layers[n.layer].push(n); }
  // Dummies split structural edges that skip layers.
  const links = []; // [{up, down}] between adjacent layers, for ordering
  const chains = new Map(); // edge -> its points (node, dummies..., node)
  for (const e of edges) {
    const a = byId.get(e.from), b = byId.get(e.to);
    if (!a || !b) continue;
    if (e.backend || a.layer >= b.layer) { chains.set(e, [a, b]); continue; }
    const pts = [a];
    let prev = a;
    for (let l = a.layer + 1; l < b.layer; l++) {
      const d = { id: `${e.from}>${e.to}#${l}`, dummy: true, layer: l };
      layers[l].push(d);
      links.push({ up: prev, down: d });
      pts.push(d);
      prev = d;
    }
    links.push({ up: prev, down: b });
    pts.push(b);
    chains.set(e, pts);
  }
  const ups = new Map(), downs = new Map();
  for (const { up, down } of links) {
    (downs.get(up) || downs.set(up, []).get(up)).push(down);
    (ups.get(down) || ups.set(down, []).get(down)).push(up);
  }
  // Initial order: by name, so the same mesh lays out the same way.
  for (const L of layers) {
    L.sort((p, q) => (p.id < q.id ? -1 : p.id > q.id ? 1 : 0));
    L.forEach((n, i) => { n.order = i; });
  }
  const bary = (n, nb) => {
    const xs = nb.get(n);
    if (!xs || !xs.length) return n.order;
    let s = 0;
    for (const x of xs) s += x.order;
    return s / xs.length;
  };
  for (let s = 0; s < sweeps; s++) {
    const down = s % 2 === 0;
    const seq = down ? [1, 2, 3, 4] : [3, 2, 1, 0];
    for (const l of seq) {
      const L = layers[l];
      const key = new Map(L.map((n) => [n, bary(n, down ? ups : downs)]));
      L.sort((p, q) => key.get(p) - key.get(q) || p.order - q.order);
      L.forEach((n, i) => { n.order = i; });
    }
  }
  // Coordinates: pack each layer left to right in its order; a layer
  // wider than the row width wraps onto further rows (a mesh of a thousand
  // routes keeps a shape a screen can show); then centre each row.
  for (const L of layers) for (const n of L) { n.w = n.dummy ? 10 : W[n.kind]; n.h = n.dummy ? 0 : H; }
  const total = layers.reduce((a, L) => a + L.reduce((w, n) => w + n.w + GAPX, 0), 0);
  const rowW = Math.max(1400, Math.min(8000, Math.sqrt(total * (H + ROWGAP)) * 1.6));
  let y = 30, maxW = 200;
  const rows = [];
  for (const L of layers) {
    let row = [], x = 0;
    const flush = () => { if (row.length) rows.push({ nodes: row, width: x - GAPX, y }); y += H + ROWGAP; row = []; x = 0; };
    for (const n of L) {
      if (x > 0 && x + n.w > rowW) flush();
      n.x = x + n.w / 2;
      x += n.w + GAPX;
      row.push(n);
    }
    if (row.length) { rows.push({ nodes: row, width: x - GAPX, y }); y += H; }
    y += GAPY;
  }
  for (const r of rows) maxW = Math.max(maxW, r.width);
  for (const r of rows) {
    const off = (maxW - r.width) / 2;
    for (const n of r.nodes) { n.x += off; n.y = r.y + H / 2; }
  }
  return { width: maxW, height: y, chains };
}

const SVG = 'http://www.w3.org/2000/svg';
function el(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function pathOf(pts) {
  // Leave the lower edge of the upper box, reach the upper edge of the
  // lower box; curves through dummies.
  const first = pts[0], last = pts[pts.length - 1];
  const down = last.y >= first.y;
  const p = pts.map((n, i) => ({ x: n.x, y: n.y + (i === 0 ? (down ? 1 : -1) * (n.h / 2) : i === pts.length - 1 ? (down ? -1 : 1) * (n.h / 2) : 0) }));
  if (p.length === 2 && !down) {
    // An edge going up (a node calling a service): bow out sideways.
    const dx = 60 + Math.abs(p[0].y - p[1].y) / 6;
    return `M${p[0].x},${p[0].y} C${p[0].x + dx},${p[0].y + 40} ${p[1].x + dx},${p[1].y - 40} ${p[1].x},${p[1].y}`;
  }
  let d = `M${p[0].x},${p[0].y}`;
  for (let i = 1; i < p.length; i++) {
    const a = p[i - 1], b = p[i], my = (a.y + b.y) / 2;
    d += ` C${a.x},${my} ${b.x},${my} ${b.x},${b.y}`;
  }
  return d;
}

function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + '…' : s; }

// edgeKeys gives each edge a key that names it in another build of the
// same mesh: from>to, and a count for repeats.
export function edgeKeys(edges) {
  const seen = new Map();
  return edges.map((e) => {
    const k = `${e.from}>${e.to}`;
    const n = seen.get(k) || 0;
    seen.set(k, n + 1);
    return `${k}#${n}`;
  });
}

function nodeLabel(g, n) {
  g.setAttribute('class', `n ${n.kind}${n.nack ? ' nack' : ''}`);
  g.setAttribute('aria-label', `${n.kind} ${n.name}${n.sub ? ', ' + n.sub : ''}`);
  let title = g.querySelector('title');
  if (n.title) {
    if (!title) { title = el('title'); g.prepend(title); }
    title.textContent = n.title;
  } else if (title) title.remove();
  g.querySelector('text.sub').textContent = clip(n.sub || n.kind, Math.floor(n.w / 6));
}

// drawLabels writes the edges' labels above their targets. The labels of
// edges leaving one node (a route's targets) are stacked one line apart,
// each starting with its target's name, so that neighbours do not overlap.
function drawLabels(lg, edges, chains) {
  lg.replaceChildren();
  const fan = new Map(); // source -> its labelled edges
  for (const e of edges) {
    if (!e.label || !chains.get(e)) continue;
    const l = fan.get(e.from) || [];
    l.push(e);
    fan.set(e.from, l);
  }
  for (const l of fan.values()) {
    l.forEach((e, i) => {
      const pts = chains.get(e);
      const a = pts[pts.length - 2], b = pts[pts.length - 1];
      const text = l.length > 1 ? `${b.name}: ${e.label}` : e.label;
      const x = l.length > 1 ? Math.min(...l.map((o) => { const p = chains.get(o); return p[p.length - 1].x - p[p.length - 1].w / 2; })) : (a.x + b.x) / 2 + 4;
      const y = b.y - b.h / 2 - 18 - 14 * (l.length - 1 - i);
      lg.append(el('text', { class: 'el', x: String(x), y: String(y), 'data-edge': `${e.from}>${e.to}` }, text));
    });
  }
}

// render draws the laid-out graph into svg (replacing what it held) and
// returns what patch needs to change it in place. onOpen(node) is called
// when a node is clicked or activated with Enter.
export function render(svg, nodes, edges, lay, onOpen) {
  svg.replaceChildren();
  const defs = el('defs');
  const marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' });
  marker.append(el('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#6e7781' }));
  defs.append(marker);
  svg.append(defs);
  const root = el('g', { class: 'root' });
  svg.append(root);
  const eg = el('g', { class: 'edges' }), lg = el('g', { class: 'labels' }), ng = el('g', { class: 'nodes' });
  root.append(eg, ng, lg);
  const paths = new Map();
  const keys = edgeKeys(edges);
  edges.forEach((e, i) => {
    const pts = lay.chains.get(e);
    if (!pts) return;
    const cls = 'e' + (e.backend ? ' backend' : '') + (e.label ? ' hot' : '');
    const path = el('path', { class: cls, d: pathOf(pts), 'marker-end': 'url(#arrow)', 'data-from': e.from, 'data-to': e.to });
    eg.append(path);
    paths.set(keys[i], path);
  });
  drawLabels(lg, edges, lay.chains);
  const gs = new Map();
  for (const n of nodes) {
    const g = el('g', { class: '', transform: `translate(${n.x - n.w / 2},${n.y - n.h / 2})`, tabindex: '0', role: 'link', 'data-id': n.id });
    g.append(el('rect', { width: String(n.w), height: String(n.h), rx: '6' }));
    g.append(el('text', { x: '8', y: '18' }, clip(n.name, Math.floor(n.w / 7))));
    g.append(el('text', { x: '8', y: '35', class: 'sub' }));
    nodeLabel(g, n);
    g.addEventListener('click', () => onOpen(n.id));
    g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') onOpen(n.id); });
    ng.append(g);
    gs.set(n.id, g);
  }
  return { root, nodes: gs, paths, labels: lg };
}

// patch changes a drawing in place for a new build of the same shape
// (the same nodes and edges: weights, proxies or traffic changed): the
// nodes' second lines and the edges' labels, nothing laid out again.
// lay is the new build's layout (sameShape copies the old positions).
export function patch(r, nodes, edges, lay) {
  for (const n of nodes) {
    const g = r.nodes.get(n.id);
    if (g) nodeLabel(g, n);
  }
  const keys = edgeKeys(edges);
  edges.forEach((e, i) => {
    const p = r.paths.get(keys[i]);
    if (p) p.setAttribute('class', 'e' + (e.backend ? ' backend' : '') + (e.label ? ' hot' : ''));
  });
  drawLabels(r.labels, edges, lay.chains);
}

// sameShape reports whether graph b has the nodes and edges of a (the
// layout a has); if so it gives b's nodes a's positions and returns b's
// layout, else null.
export function sameShape(a, b, layA) {
  if (!a || !layA || a.nodes.length !== b.nodes.length || a.edges.length !== b.edges.length) return null;
  const old = new Map(a.nodes.map((n) => [n.id, n]));
  for (const n of b.nodes) if (!old.has(n.id)) return null;
  const ka = edgeKeys(a.edges), kb = edgeKeys(b.edges);
  const chainOf = new Map(a.edges.map((e, i) => [ka[i], layA.chains.get(e)]));
  const chains = new Map();
  for (let i = 0; i < b.edges.length; i++) {
    if (!chainOf.has(kb[i])) return null;
    chains.set(b.edges[i], chainOf.get(kb[i]));
  }
  for (const n of b.nodes) {
    const o = old.get(n.id);
    Object.assign(n, { x: o.x, y: o.y, w: o.w, h: o.h, layer: o.layer, order: o.order });
  }
  // The chains' end points are a's node objects, which keep the positions.
  return { width: layA.width, height: layA.height, chains };
}

// panZoom lets the user drag and wheel-zoom the drawing; fit() shows it
// whole. With prev (the previous drawing's panZoom), the view stays where
// the user left it.
export function panZoom(svg, root, width, height, prev) {
  let s = 1, tx = 0, ty = 0;
  const apply = () => root.setAttribute('transform', `translate(${tx},${ty}) scale(${s})`);
  const fit = () => {
    const r = svg.getBoundingClientRect();
    s = Math.min(1.2, r.width / (width + 20), r.height / (height + 20));
    tx = (r.width - width * s) / 2;
    ty = 10;
    apply();
  };
  svg.onwheel = (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    const px = ev.clientX - r.left, py = ev.clientY - r.top;
    const f = ev.deltaY < 0 ? 1.15 : 1 / 1.15;
    tx = px - (px - tx) * f;
    ty = py - (py - ty) * f;
    s *= f;
    apply();
  };
  let drag = null;
  svg.onpointerdown = (ev) => { if (ev.target === svg) { drag = { x: ev.clientX - tx, y: ev.clientY - ty }; svg.setPointerCapture(ev.pointerId); } };
  svg.onpointermove = (ev) => { if (drag) { tx = ev.clientX - drag.x; ty = ev.clientY - drag.y; apply(); } };
  svg.onpointerup = () => { drag = null; };
  if (prev) { ({ s, tx, ty } = prev.state()); apply(); } else fit();
  return { fit, state: () => ({ s, tx, ty }) };
}
