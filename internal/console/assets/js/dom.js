// Small DOM helpers shared by the views.

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

export function when(t) {
  if (!t) return '';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

// tagsFromText reads "k=v, k2=v2" into App Mesh tags.
export function tagsFromText(s) {
  return s.split(',').map((x) => x.trim()).filter(Boolean).map((x) => {
    const i = x.indexOf('=');
    return i < 0 ? { key: x, value: '' } : { key: x.slice(0, i).trim(), value: x.slice(i + 1).trim() };
  });
}
