// Forms for the common fields of each App Mesh kind. Each field change
// rewrites the JSON spec editor; the JSON editor is what is sent, so any
// field the form lacks can be written there.

import { h } from './dom.js';

const protocols = ['http', 'http2', 'grpc', 'tcp'];

function listener(f) {
  return [{ portMapping: { port: Number(f.port) || 0, protocol: f.protocol || 'http' } }];
}

function routeTargets(text) {
  // "blue:4, green:1" -> weighted targets
  return text.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const [node, w] = s.split(':').map((x) => x.trim());
    return { virtualNode: node, weight: w === undefined ? 1 : Number(w) };
  });
}

export const FORMS = {
  mesh: {
    fields: [{ name: 'egress', label: 'Egress filter', options: ['DROP_ALL', 'ALLOW_ALL'] }],
    spec: (f) => ({ egressFilter: { type: f.egress || 'DROP_ALL' } }),
  },
  virtualNode: {
    fields: [
      { name: 'discovery', label: 'Service discovery', options: ['dns', 'awsCloudMap', 'none'] },
      { name: 'hostname', label: 'DNS hostname', hint: 'DNS discovery, e.g. blue.colors.local' },
      { name: 'cmNamespace', label: 'Cloud Map namespace', hint: 'Cloud Map discovery, e.g. colors.local' },
      { name: 'cmService', label: 'Cloud Map service', hint: 'Cloud Map discovery, e.g. blue' },
      { name: 'port', label: 'Listener port', value: '8080', type: 'number' },
      { name: 'protocol', label: 'Listener protocol', options: protocols },
      { name: 'backends', label: 'Backends', hint: 'virtual service names, comma separated' },
    ],
    spec: (f) => {
      const s = { listeners: listener(f) };
      const d = f.discovery || 'dns';
      if (d === 'dns' && f.hostname) s.serviceDiscovery = { dns: { hostname: f.hostname } };
      if (d === 'awsCloudMap') s.serviceDiscovery = { awsCloudMap: { namespaceName: f.cmNamespace || '', serviceName: f.cmService || '' } };
      const b = (f.backends || '').split(',').map((x) => x.trim()).filter(Boolean);
      if (b.length) s.backends = b.map((n) => ({ virtualService: { virtualServiceName: n } }));
      return s;
    },
  },
  virtualService: {
    fields: [
      { name: 'providerKind', label: 'Provider', options: ['virtualRouter', 'virtualNode', 'none'] },
      { name: 'provider', label: 'Provider name', hint: 'the virtual router or virtual node' },
    ],
    spec: (f) => {
      if (f.providerKind === 'none' || !f.provider) return {};
      const k = f.providerKind || 'virtualRouter';
      return { provider: { [k]: { [k + 'Name']: f.provider } } };
    },
  },
  virtualRouter: {
    fields: [
      { name: 'port', label: 'Listener port', value: '8080', type: 'number' },
      { name: 'protocol', label: 'Listener protocol', options: protocols },
    ],
    spec: (f) => ({ listeners: listener(f) }),
  },
  route: {
    fields: [
      { name: 'protocol', label: 'Route type', options: ['http', 'http2', 'grpc', 'tcp'] },
      { name: 'prefix', label: 'Match prefix', value: '/', hint: 'HTTP and HTTP/2' },
      { name: 'targets', label: 'Weighted targets', hint: 'node:weight, comma separated, e.g. blue:4, green:1' },
    ],
    spec: (f) => {
      const action = { weightedTargets: routeTargets(f.targets || '') };
      const p = f.protocol || 'http';
      if (p === 'tcp') return { tcpRoute: { action } };
      if (p === 'grpc') return { grpcRoute: { match: { serviceName: '*' }, action } };
      return { [p + 'Route']: { match: { prefix: f.prefix || '/' }, action } };
    },
  },
  virtualGateway: {
    fields: [
      { name: 'port', label: 'Listener port', value: '8080', type: 'number' },
      { name: 'protocol', label: 'Listener protocol', options: ['http', 'http2', 'grpc'] },
    ],
    spec: (f) => ({ listeners: listener(f) }),
  },
  gatewayRoute: {
    fields: [
      { name: 'protocol', label: 'Route type', options: ['http', 'http2', 'grpc'] },
      { name: 'prefix', label: 'Match prefix', value: '/' },
      { name: 'service', label: 'Target virtual service' },
    ],
    spec: (f) => {
      const p = f.protocol || 'http';
      const action = { target: { virtualService: { virtualServiceName: f.service || '' } } };
      if (p === 'grpc') return { grpcRoute: { match: { serviceName: '*' }, action } };
      return { [p + 'Route']: { match: { prefix: f.prefix || '/' }, action } };
    },
  },
};

// specForm builds the fields of kind and a JSON editor they write into.
// It returns {node, spec()} where spec() parses the editor (throwing a
// readable error when the JSON is not valid).
export function specForm(kind, initialSpec) {
  const def = FORMS[kind];
  const values = {};
  const editor = h('textarea', { id: 'spec-json', name: 'spec', spellcheck: 'false', 'aria-describedby': 'spec-hint' });
  let touched = !!initialSpec;
  const regen = () => { if (!touched) editor.value = JSON.stringify(def.spec(values), null, 2); };
  editor.addEventListener('input', () => { touched = true; });
  const fields = initialSpec ? [] : def.fields.map((f) => {
    const id = `f-${f.name}`;
    values[f.name] = f.value || (f.options ? f.options[0] : '');
    const input = f.options
      ? h('select', { id, name: f.name }, f.options.map((o) => h('option', { value: o }, o)))
      : h('input', { id, name: f.name, type: f.type || 'text', value: f.value || '', autocomplete: 'off' });
    input.addEventListener('input', () => { values[f.name] = input.value; touched = false; regen(); });
    return h('div', {}, h('label', { for: id }, f.label, f.hint ? h('span', { class: 'hint' }, ` (${f.hint})`) : null), input);
  });
  if (initialSpec) editor.value = JSON.stringify(initialSpec, null, 2);
  else regen();
  const node = h('div', {}, fields,
    h('label', { for: 'spec-json' }, 'Spec (JSON)', h('span', { id: 'spec-hint', class: 'hint' }, ' — sent as written; the form fields above fill it in')),
    editor);
  return {
    node,
    spec() {
      try {
        return JSON.parse(editor.value || '{}');
      } catch (e) {
        const err = new Error(`The spec is not valid JSON: ${e.message}`);
        err.type = 'InvalidJSON';
        throw err;
      }
    },
  };
}
