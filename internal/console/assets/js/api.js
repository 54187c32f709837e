// The console's API client: the same App Mesh REST and Cloud Map JSON
// requests the AWS CLI sends, from the browser. With a credentials file the
// server knows the browser by its session cookie; every request carries the
// session's CSRF token.

export const session = { auth: false, signedIn: false, csrf: '' };

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
  toString() { return `${this.type}: ${this.message}`; }
}

// firstRead returns the answer of the call the index started before the
// modules loaded (the first page's list, on a server without sign-in), as
// [response, body text] (the body read meanwhile too), once, when this
// request is that call; else null.
async function firstRead(method, path, headers) {
  const pre = window.weftFirstRead;
  if (!pre || method !== 'GET' || pre.url !== path || Object.keys(headers).length) return null;
  window.weftFirstRead = null;
  try { return await pre.res; } catch { return null; } // ask again
}

export async function request(method, path, body, headers = {}) {
  const h = { ...headers };
  if (session.csrf) h['X-Weft-Csrf'] = session.csrf;
  let payload;
  if (body !== undefined) {
    payload = JSON.stringify(body);
    if (!h['Content-Type']) h['Content-Type'] = 'application/json';
  }
  const pre = await firstRead(method, path, h);
  const res = pre ? pre[0] : await fetch(path, { method, headers: h, body: payload, credentials: 'same-origin', cache: 'no-store' });
  const text = pre ? pre[1] : await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text }; }
  }
  if (!res.ok) {
    const type = res.headers.get('x-amzn-ErrorType') || (data && data.__type) || `HTTP ${res.status}`;
    const msg = (data && (data.message || data.Message)) || res.statusText;
    const err = new ApiError(res.status, type.split(':')[0], msg);
    if (res.status === 403 && ['ExpiredTokenException', 'UnrecognizedClientException'].includes(err.type) && session.auth) {
      window.dispatchEvent(new CustomEvent('weft-signed-out'));
    }
    throw err;
  }
  return data;
}

export async function loadSession() {
  Object.assign(session, { auth: false, signedIn: false, csrf: '' }, await request('GET', '/console/api/session'));
  return session;
}

export async function signIn(accessKeyId, secretAccessKey) {
  Object.assign(session, await request('POST', '/console/api/session', { accessKeyId, secretAccessKey }));
  return session;
}

export async function signOut() {
  await request('DELETE', '/console/api/session');
  Object.assign(session, { signedIn: false, csrf: '' });
}

const enc = encodeURIComponent;
const M = '/v20190125/meshes';

// App Mesh kinds: where each lives and how its JSON names it.
export const KINDS = {
  mesh: { label: 'Meshes', one: 'mesh', listKey: 'meshes', nameKey: 'meshName', col: () => M },
  virtualGateway: { label: 'Virtual gateways', one: 'virtual gateway', listKey: 'virtualGateways', nameKey: 'virtualGatewayName', col: (m) => `${M}/${enc(m)}/virtualGateways` },
  gatewayRoute: { label: 'Gateway routes', one: 'gateway route', listKey: 'gatewayRoutes', nameKey: 'gatewayRouteName', parent: 'virtualGateway', col: (m, p) => `${M}/${enc(m)}/virtualGateway/${enc(p)}/gatewayRoutes` },
  virtualService: { label: 'Virtual services', one: 'virtual service', listKey: 'virtualServices', nameKey: 'virtualServiceName', col: (m) => `${M}/${enc(m)}/virtualServices` },
  virtualRouter: { label: 'Virtual routers', one: 'virtual router', listKey: 'virtualRouters', nameKey: 'virtualRouterName', col: (m) => `${M}/${enc(m)}/virtualRouters` },
  route: { label: 'Routes', one: 'route', listKey: 'routes', nameKey: 'routeName', parent: 'virtualRouter', col: (m, p) => `${M}/${enc(m)}/virtualRouter/${enc(p)}/routes` },
  virtualNode: { label: 'Virtual nodes', one: 'virtual node', listKey: 'virtualNodes', nameKey: 'virtualNodeName', col: (m) => `${M}/${enc(m)}/virtualNodes` },
};

function itemPath(kind, mesh, parent, name) {
  const k = KINDS[kind];
  return kind === 'mesh' ? `${M}/${enc(name)}` : `${k.col(mesh, parent)}/${enc(name)}`;
}

// listPage returns one page of a kind's list: {items, nextToken}.
export async function listPage(kind, mesh, parent, nextToken, limit = 50) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (nextToken) q.set('nextToken', nextToken);
  const data = await request('GET', `${KINDS[kind].col(mesh, parent)}?${q}`);
  return { items: data[KINDS[kind].listKey] || [], nextToken: data.nextToken || '' };
}

// listAll follows nextToken to the end (topology, pickers).
export async function listAll(kind, mesh, parent) {
  let out = [], token = '';
  do {
    const p = await listPage(kind, mesh, parent, token, 100);
    out = out.concat(p.items);
    token = p.nextToken;
  } while (token);
  return out;
}

export async function describe(kind, mesh, parent, name) {
  const data = await request('GET', itemPath(kind, mesh, parent, name));
  return data; // the body is the resource (the payload member)
}

export async function create(kind, mesh, parent, name, spec, tags) {
  const body = { [KINDS[kind].nameKey]: name, spec };
  if (tags && tags.length) body.tags = tags;
  const path = KINDS[kind].col(mesh, parent);
  const data = await request('PUT', path, body);
  return data; // the body is the resource (the payload member)
}

export async function update(kind, mesh, parent, name, spec) {
  const data = await request('PUT', itemPath(kind, mesh, parent, name), { spec });
  return data; // the body is the resource (the payload member)
}

export async function remove(kind, mesh, parent, name) {
  return request('DELETE', itemPath(kind, mesh, parent, name));
}

export async function listTags(arn) {
  const data = await request('GET', `/v20190125/tags?resourceArn=${enc(arn)}`);
  return data.tags || [];
}
export const tagResource = (arn, tags) => request('PUT', `/v20190125/tag?resourceArn=${enc(arn)}`, { tags });
export const untagResource = (arn, tagKeys) => request('PUT', `/v20190125/untag?resourceArn=${enc(arn)}`, { tagKeys });

// cloudMap calls one Cloud Map (servicediscovery) operation.
export function cloudMap(op, body = {}) {
  return request('POST', '/', body, {
    'Content-Type': 'application/x-amz-json-1.1',
    'X-Amz-Target': `Route53AutoNaming_v20170314.${op}`,
  });
}

export const proxies = () => request('GET', '/v1/proxies');

// traffic returns the mesh's traffic edges, or null when the server does
// not serve /v1/traffic.
export async function traffic(mesh) {
  try {
    return await request('GET', `/v1/traffic?mesh=${enc(mesh)}`);
  } catch (e) {
    if (e.status === 404 || e.status === 405) return null;
    throw e;
  }
}

// events follows GET /v1/events?mesh=M (server-sent events, read with
// fetch so the CSRF header can be sent), calling on(type, data) for each
// event, reconnecting after a second when the stream ends, until stop().
// after(), when given, names the revision a reconnect resumes after (0:
// none, the stream starts now). snapshot(), when given and true on a
// connection that resumes nothing, asks the server for the mesh's
// resources first ("snapshot" events, then "snapshot-end").
export function events(mesh, on, after, snapshot) {
  const ctl = new AbortController();
  let stopped = false;
  const run = async () => {
    while (!stopped) {
      try {
        const h = {};
        if (session.csrf) h['X-Weft-Csrf'] = session.csrf;
        const from = after ? after() : 0;
        const q = from > 0 ? `&after=${from}` : snapshot && snapshot() ? '&snapshot=true' : '';
        const res = await fetch(`/v1/events?mesh=${enc(mesh)}${q}`, { headers: h, signal: ctl.signal, credentials: 'same-origin', cache: 'no-store' });
        if (!res.ok) { on('error', { status: res.status }); throw new Error(String(res.status)); }
        on('open', {});
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let type = 'message', data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) type = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (data) on(type, JSON.parse(data));
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      on('closed', {});
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  run();
  return () => { stopped = true; ctl.abort(); };
}
