// Snapshots: the list, starting a sandbox from one (a fork of the snapshot), delete.

import { api, get, enc } from './api.js';
import { h, setText, notice, detail, busy, when, bytes, shortSha, syncRows, every } from './dom.js';
import { confirmButton } from './sandboxes.js';

export function mount(view) {
  const tbody = h('tbody');
  const createRow = (snapshot) => {
    const start = h('button.secondary.small', {
      type: 'button',
      'aria-label': `Start a sandbox from ${snapshot.snapshot_id}`,
      onclick: () => busy(start, async () => {
        const made = await api('POST', '/containers', { snapshot_id: snapshot.snapshot_id });
        notice(`Started ${made.container_id} from ${snapshot.snapshot_id}`, 'ok');
        location.hash = `#/sandboxes/${enc(made.container_id)}`;
      }, 'Starting…'),
    }, 'Start sandbox');
    const remove = confirmButton('Delete', 'Confirm delete', async () => {
      await api('DELETE', `/snapshots/${enc(snapshot.snapshot_id)}`);
      notice(`Deleted ${snapshot.snapshot_id}`, 'ok');
      await refresh();
    }, { 'aria-label': `Delete ${snapshot.snapshot_id}`, class: 'danger small' });
    return h('tr', {}, h('td.mono'), h('td'), h('td.mono'), h('td.repo'), h('td.mono'), h('td.num'), h('td'), h('td.actions', {}, start, remove));
  };
  const updateRow = (row, s) => {
    const cells = row.children;
    setText(cells[0], s.snapshot_id);
    setText(cells[1], s.name || '');
    cells[2].replaceChildren(h('a', { href: `#/sandboxes/${enc(s.source_container_id)}`, text: s.source_container_id }));
    setText(cells[3], s.repo_url);
    cells[3].title = s.repo_url;
    setText(cells[4], shortSha(s.resolved_commit));
    setText(cells[5], bytes(s.size_bytes));
    setText(cells[6], when(s.created_at));
  };
  async function refresh() {
    try {
      const { snapshots } = await get('/snapshots');
      syncRows(tbody, snapshots, (s) => s.snapshot_id, createRow, updateRow, 'No snapshots. Take one from a sandbox page.');
    } catch (error) {
      if (error.status !== 401) notice(detail(error));
    }
  }
  view.append(
    h('h1', { text: 'Snapshots' }),
    h('section.card', { 'aria-label': 'Snapshot list' }, h('div.scroll', {}, h('table.list.snapshots', {},
      h('colgroup', {}, h('col.c-snap'), h('col.c-name'), h('col.c-source'), h('col.c-repo'), h('col.c-commit'), h('col.c-size'), h('col.c-created'), h('col.c-sactions')),
      h('thead', {}, h('tr', {}, ...['Snapshot', 'Name', 'Source', 'Repository', 'Commit', 'Size', 'Created', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
      tbody))),
  );
  return every(5000, refresh);
}
