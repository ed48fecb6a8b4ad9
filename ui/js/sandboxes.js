// The sandboxes page: a live list (refreshed every few seconds, rows updated in
// place, expiry counting down every second) and the create form.

import { api, get, enc } from './api.js';
import { h, setText, notice, detail, busy, shortSha, countdown, updateBadge, syncRows, every, field } from './dom.js';

const REFRESH_MS = 3000;
const EXTEND_SECS = 3600;

/** New lifetime for "extend": an hour more than what is left, within the server's maximum. */
export function extendedLifetime(sandbox, maxRuntime, now = Date.now()) {
  const left = sandbox.expires_at ? Math.max(0, (Date.parse(sandbox.expires_at) - now) / 1000) : 0;
  const wanted = Math.ceil(left) + EXTEND_SECS;
  return maxRuntime ? Math.min(wanted, maxRuntime) : wanted;
}

let limitsPromise;
/** The server's limits (from /info), fetched once per page load. */
export function limits() {
  limitsPromise ||= get('/info').then((info) => info.limits || {}).catch(() => ({}));
  return limitsPromise;
}

export async function extend(sandbox) {
  const { max_runtime_secs: max } = await limits();
  return api('PATCH', `/containers/${enc(sandbox.container_id)}`, {
    max_runtime_secs: extendedLifetime(sandbox, max),
  });
}

/** A button that asks for a second press before it acts. */
export function confirmButton(label, confirmLabel, action, attrs = {}) {
  let armed = null;
  // The accessible name follows the visible one ("Delete snap-1" → "Confirm delete snap-1").
  const name = attrs['aria-label'];
  const setName = (armedNow) => {
    if (name) button.setAttribute('aria-label', armedNow ? name.replace(label, confirmLabel) : name);
  };
  const button = h('button.danger', {
    type: 'button',
    ...attrs,
    onclick: async () => {
      if (!armed) {
        button.textContent = confirmLabel;
        button.classList.add('armed');
        setName(true);
        armed = setTimeout(() => {
          armed = null;
          button.textContent = label;
          button.classList.remove('armed');
          setName(false);
        }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      button.classList.remove('armed');
      button.textContent = label;
      setName(false);
      await busy(button, action, '…');
    },
  }, label);
  return button;
}

function createForm(onCreated) {
  const repo = h('input', { name: 'repo_url', type: 'url', required: true, placeholder: 'https://github.com/owner/repo', autocomplete: 'url' });
  const branch = h('input', { name: 'branch', type: 'text', placeholder: 'default branch', autocomplete: 'off' });
  const commit = h('input', { name: 'commit', type: 'text', placeholder: 'branch head', pattern: '[0-9a-fA-F]{7,40}', autocomplete: 'off', spellcheck: 'false' });
  const lifetime = h('input', { name: 'lifetime', type: 'number', min: '1', step: '1', placeholder: 'no expiry', inputmode: 'numeric' });
  const submit = h('button', { type: 'submit' }, 'Create sandbox');
  const error = h('p.error', { role: 'alert' });
  const form = h('form.create', { 'aria-labelledby': 'create-title' },
    h('h2', { id: 'create-title', text: 'New sandbox' }),
    h('div.fields',
      {},
      field('Repository URL', repo),
      field('Branch', branch),
      field('Commit', commit),
      field('Lifetime (minutes)', lifetime),
    ),
    h('div.actions', {}, submit),
    error,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const body = { repo_url: repo.value.trim() };
    if (branch.value.trim()) body.branch = branch.value.trim();
    if (commit.value.trim()) body.commit = commit.value.trim();
    if (lifetime.value) body.max_runtime_secs = Math.round(Number(lifetime.value) * 60);
    submit.disabled = true;
    submit.textContent = 'Creating…';
    try {
      const created = await api('POST', '/containers', body);
      notice(`Created ${created.container_id}`, 'ok');
      onCreated(created);
    } catch (failure) {
      error.textContent = detail(failure);
    } finally {
      submit.disabled = false;
      submit.textContent = 'Create sandbox';
    }
  });
  return form;
}

export function mount(view) {
  const tbody = h('tbody');
  const summary = h('p.summary', { 'aria-live': 'polite' }, '\u00a0');
  let latest = [];

  const table = h('table.list.sandboxes',
    {},
    h('caption', { class: 'visually-hidden', text: 'Sandboxes' }),
    h('colgroup', {}, ...['c-id', 'c-status', 'c-repo', 'c-branch', 'c-commit', 'c-expiry', 'c-actions'].map((c) => h(`col.${c}`))),
    h('thead', {}, h('tr', {}, ...['Sandbox', 'Status', 'Repository', 'Branch', 'Commit', 'Expires', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
    tbody,
  );

  const createRow = (item) => {
    const row = h('tr');
    const link = h('a.mono', { href: `#/sandboxes/${enc(item.container_id)}`, text: item.container_id });
    const extendButton = h('button.secondary', {
      type: 'button',
      'aria-label': `Extend ${item.container_id} by an hour`,
      onclick: () => busy(extendButton, async () => {
        const updated = await extend(row.sandbox);
        notice(`${updated.container_id} now expires ${countdown(updated.expires_at)}`, 'ok');
        await refresh();
      }),
    }, 'Extend 1 h');
    const destroy = confirmButton('Destroy', 'Confirm destroy', async () => {
      await api('DELETE', `/containers/${enc(item.container_id)}`);
      notice(`Destroyed ${item.container_id}`, 'ok');
      await refresh();
    }, { 'aria-label': `Destroy ${item.container_id}` });
    row.append(
      h('td', {}, link),
      h('td', {}, h('span.badge')),
      h('td.repo'),
      h('td'),
      h('td.mono'),
      h('td.expiry'),
      h('td.actions', {}, extendButton, destroy),
    );
    return row;
  };
  const updateRow = (row, item) => {
    row.sandbox = item;
    const cells = row.children;
    updateBadge(cells[1].firstChild, item.status);
    setText(cells[2], item.repo_url);
    cells[2].title = item.repo_url;
    setText(cells[3], item.branch || '');
    setText(cells[4], shortSha(item.resolved_commit || item.commit));
    cells[4].title = item.resolved_commit || '';
    setText(cells[5], countdown(item.expires_at));
    cells[6].firstChild.disabled = item.status !== 'running';
  };

  async function refresh() {
    try {
      const list = await get('/containers');
      latest = list.containers;
      syncRows(tbody, latest, (c) => c.container_id, createRow, updateRow, 'No sandboxes yet. Create one above.');
      setText(summary, `${list.total_count} sandboxes, ${list.active_count} running`);
    } catch (error) {
      if (error.status !== 401) notice(detail(error));
    }
  }

  view.append(
    h('h1', { text: 'Sandboxes' }),
    createForm(() => refresh()),
    h('section.card', { 'aria-label': 'Sandbox list' }, summary, h('div.scroll', {}, table)),
  );
  const stopRefresh = every(REFRESH_MS, refresh);
  const ticker = setInterval(() => {
    for (const row of tbody.children) if (row.sandbox) setText(row.children[5], countdown(row.sandbox.expires_at));
  }, 1000);
  return () => {
    stopRefresh();
    clearInterval(ticker);
  };
}
