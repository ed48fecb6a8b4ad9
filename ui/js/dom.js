// Small DOM helpers shared by the pages: element building, formatting, notices.

/** h('tag.class', {attr: v, onclick: f}, ...children): an element. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const element = document.createElement(tag || 'div');
  if (classes.length) element.className = classes.join(' ');
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'text') element.textContent = value;
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Sets an element's text only when it changed (no needless layout work on refresh). */
export function setText(element, text) {
  const value = text === null || text === undefined ? '' : String(text);
  if (element.textContent !== value) element.textContent = value;
}

let noticeTimer;
/** Shows a message in the page's alert region (errors: the server's detail). */
export function notice(message, kind = 'error') {
  const region = document.getElementById('notice');
  region.hidden = false;
  region.className = `notice ${kind}`;
  region.textContent = message;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    region.hidden = true;
  }, kind === 'error' ? 12_000 : 5_000);
}

/** The message of an error: the server's `detail` for an ApiError. */
export const detail = (error) => (error && (error.detail || error.message)) || String(error);

/** Runs `action` with `button` disabled meanwhile; errors become a notice. */
export async function busy(button, action, label) {
  const before = button.textContent;
  button.disabled = true;
  if (label) button.textContent = label;
  try {
    return await action();
  } catch (error) {
    if (error.status !== 401) notice(detail(error));
    return undefined;
  } finally {
    button.disabled = false;
    if (label) button.textContent = before;
  }
}

export function shortSha(sha) {
  return sha ? sha.slice(0, 12) : '';
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function duration(secs) {
  if (secs < 0) secs = 0;
  const s = Math.floor(secs % 60);
  const m = Math.floor(secs / 60) % 60;
  const hours = Math.floor(secs / 3600);
  const pad = (v) => String(v).padStart(2, '0');
  return hours ? `${hours}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

/** "in 4:59", "expired", or "never" for a sandbox's expires_at. */
export function countdown(expiresAt, now = Date.now()) {
  if (!expiresAt) return 'never';
  const left = (Date.parse(expiresAt) - now) / 1000;
  return left <= 0 ? 'expiring…' : `in ${duration(left)}`;
}

export function when(timestamp) {
  if (!timestamp) return '';
  // Local time as 2024-05-01 13:45:07: short, sortable, the same width on every row.
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return '';
  const pad = (v) => String(v).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A status badge, its class named after the status. */
export function badge(status) {
  return h(`span.badge.s-${status || 'unknown'}`, { text: status || 'unknown' });
}

export function updateBadge(element, status) {
  const cls = `badge s-${status || 'unknown'}`;
  if (element.className !== cls) element.className = cls;
  setText(element, status || 'unknown');
}

/**
 * Keeps `tbody` showing `items` in order, one row per key, updating rows in place:
 * `create(item)` makes a row, `update(row, item)` refreshes it. Rows of vanished
 * items are removed; `empty` is shown when there is nothing.
 */
export function syncRows(tbody, items, key, create, update, empty) {
  const existing = new Map();
  for (const row of [...tbody.children]) {
    if (row.dataset.key) existing.set(row.dataset.key, row);
    else row.remove();
  }
  let previous = null;
  for (const item of items) {
    const k = key(item);
    let row = existing.get(k);
    if (row) existing.delete(k);
    else {
      row = create(item);
      row.dataset.key = k;
    }
    update(row, item);
    const expected = previous ? previous.nextSibling : tbody.firstChild;
    if (expected !== row) tbody.insertBefore(row, expected);
    previous = row;
  }
  existing.forEach((row) => row.remove());
  if (!items.length && empty) {
    const columns = tbody.closest('table')?.querySelectorAll('thead th').length || 1;
    tbody.append(h('tr.empty', {}, h('td', { colspan: columns, text: empty })));
  }
}

/** Calls `tick` now and every `ms` until the returned stop function is called. */
export function every(ms, tick) {
  let stopped = false;
  let timer;
  const run = async () => {
    if (stopped) return;
    try {
      await tick();
    } catch {
      // A failed refresh shows its own notice; keep trying.
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h('div.field', {}, h('label', { for: id, text: label }), input, hint ? h('small', { text: hint }) : null);
}
