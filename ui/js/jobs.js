// Jobs: the list with progress (from `counts` and `total`), a form to submit one, and
// a job's results with a status filter and a JSON Lines download.

import { api, get, download, enc } from './api.js';
import { h, setText, notice, detail, busy, when, shortSha, updateBadge, syncRows, every, field } from './dom.js';
import { confirmButton } from './sandboxes.js';

const STATUSES = ['pending', 'running', 'succeeded', 'failed', 'errored', 'cancelled'];

/** "3/5 done: 2 succeeded, 1 failed" from a job's counts. */
export function progressText(job) {
  const c = job.counts || {};
  const done = (c.succeeded || 0) + (c.failed || 0) + (c.errored || 0) + (c.cancelled || 0);
  const parts = ['succeeded', 'failed', 'errored', 'cancelled', 'running'].filter((s) => c[s]).map((s) => `${c[s]} ${s}`);
  return { done, text: `${done}/${job.total} done${parts.length ? `: ${parts.join(', ')}` : ''}` };
}

function progressCell() {
  const bar = h('progress', { max: '1', value: '0' });
  const label = h('span.progress-text');
  return h('div.progress', {}, bar, label);
}

function updateProgress(cell, job) {
  const [bar, label] = cell.children;
  const { done, text } = progressText(job);
  bar.max = Math.max(job.total, 1);
  bar.value = done;
  bar.setAttribute('aria-label', `Progress of ${job.job_id}: ${text}`);
  setText(label, text);
}

function submitForm(onSubmitted) {
  const command = h('input.mono', { type: 'text', required: true, placeholder: 'e.g. git log --oneline | wc -l', autocomplete: 'off', spellcheck: 'false' });
  const repos = h('textarea.mono', { rows: '3', required: true, placeholder: 'one repository URL per line (optionally: URL branch)' });
  const concurrency = h('input', { type: 'number', min: '1', placeholder: '4', inputmode: 'numeric' });
  const submit = h('button', { type: 'submit' }, 'Submit job');
  const error = h('p.error', { role: 'alert' });
  const form = h('form.create', { 'aria-labelledby': 'job-form-title' },
    h('h2', { id: 'job-form-title', text: 'New job' }),
    h('div.fields', {}, field('Command', command), field('Repositories', repos), field('Concurrency', concurrency)),
    h('div.actions', {}, submit),
    error,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const body = {
      command: command.value,
      repos: repos.value.split('\n').map((line) => line.trim()).filter(Boolean).map((line) => {
        const [repo_url, branch] = line.split(/\s+/);
        return branch ? { repo_url, branch } : { repo_url };
      }),
    };
    if (concurrency.value) body.concurrency = Number(concurrency.value);
    await busy(submit, async () => {
      try {
        const job = await api('POST', '/jobs', body);
        notice(`Submitted ${job.job_id}`, 'ok');
        onSubmitted(job);
      } catch (failure) {
        error.textContent = detail(failure);
      }
    }, 'Submitting…');
  });
  return form;
}

function list(view) {
  const tbody = h('tbody');
  const createRow = (job) => h('tr', {},
    h('td', {}, h('a.mono', { href: `#/jobs/${enc(job.job_id)}`, text: job.job_id })),
    h('td', {}, h('span.badge')),
    h('td.mono.cmdcell'),
    h('td', {}, progressCell()),
    h('td'),
  );
  const updateRow = (row, job) => {
    const cells = row.children;
    updateBadge(cells[1].firstChild, job.status);
    setText(cells[2], job.command);
    cells[2].title = job.command;
    updateProgress(cells[3].firstChild, job);
    setText(cells[4], when(job.created_at));
  };
  async function refresh() {
    try {
      const { jobs } = await get('/jobs');
      jobs.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
      syncRows(tbody, jobs, (j) => j.job_id, createRow, updateRow, 'No jobs yet.');
    } catch (error) {
      if (error.status !== 401) notice(detail(error));
    }
  }
  view.append(
    h('h1', { text: 'Jobs' }),
    submitForm(() => refresh()),
    h('section.card', { 'aria-label': 'Job list' }, h('div.scroll', {}, h('table.list.jobs', {},
      h('colgroup', {}, h('col.c-job'), h('col.c-status'), h('col.c-cmd'), h('col.c-progress'), h('col.c-created')),
      h('thead', {}, h('tr', {}, ...['Job', 'Status', 'Command', 'Progress', 'Created'].map((t) => h('th', { scope: 'col', text: t })))),
      tbody))),
  );
  return every(2000, refresh);
}

function oneJob(view, id) {
  const base = `/jobs/${enc(id)}`;
  const status = h('span.badge');
  const progress = progressCell();
  const command = h('code.mono');
  const filter = h('select', { id: 'result-filter' }, h('option', { value: '', text: 'All' }), ...STATUSES.map((s) => h('option', { value: s, text: s })));
  const tbody = h('tbody');
  const output = h('pre.output', { tabindex: '0', 'aria-label': 'Result output' });
  const outputTitle = h('h3', { text: 'Select a result to see its output' });
  let results = [];
  let job = null;

  const cancel = h('button.secondary', { type: 'button', onclick: () => busy(cancel, async () => { show(await api('POST', `${base}/cancel`)); }) }, 'Cancel');
  const remove = confirmButton('Delete', 'Confirm delete', async () => {
    await api('DELETE', base);
    notice(`Deleted ${id}`, 'ok');
    location.hash = '#/jobs';
  });
  const jsonl = h('button.secondary', { type: 'button', onclick: () => busy(jsonl, () => download(`${base}/results?format=jsonl`, `${id}.jsonl`)) }, 'Download JSON Lines');

  function show(value) {
    job = value;
    updateBadge(status, job.status);
    setText(command, job.command);
    updateProgress(progress, job);
    const finished = job.status === 'completed' || job.status === 'cancelled';
    cancel.disabled = finished;
    remove.disabled = !finished;
  }

  const createRow = (result) => {
    const pick = h('button.link', { type: 'button', onclick: () => {
      const r = row.result;
      setText(outputTitle, `#${r.index} ${r.repo_url}`);
      output.replaceChildren(r.error ? h('span.stderr', { text: r.error.detail }) : '', r.stdout || '', r.stderr ? h('span.stderr', { text: r.stderr }) : '');
    } }, String(result.index));
    const row = h('tr', {}, h('td', {}, pick), h('td.repo'), h('td'), h('td', {}, h('span.badge')), h('td.num'), h('td.num'), h('td.mono.cmdcell'));
    return row;
  };
  const updateRow = (row, result) => {
    row.result = result;
    const cells = row.children;
    setText(cells[1], result.repo_url);
    cells[1].title = result.repo_url;
    setText(cells[2], [result.branch, shortSha(result.resolved_commit)].filter(Boolean).join(' @ '));
    updateBadge(cells[3].firstChild, result.status);
    setText(cells[4], result.exit_code ?? '');
    setText(cells[5], result.execution_time_secs == null ? '' : `${Number(result.execution_time_secs).toFixed(2)} s`);
    const first = result.error ? result.error.detail : (result.stdout || result.stderr || '').split('\n')[0];
    setText(cells[6], first);
  };
  const render = () => {
    const shown = filter.value ? results.filter((r) => r.status === filter.value) : results;
    syncRows(tbody, shown, (r) => String(r.index), createRow, updateRow, filter.value ? `No ${filter.value} results.` : 'No results yet.');
  };
  filter.addEventListener('change', render);

  async function refresh() {
    try {
      show(await get(base));
      results = (await get(`${base}/results`)).results;
      render();
    } catch (error) {
      if (error.status !== 401) notice(detail(error));
    }
  }

  view.append(
    h('p.back', {}, h('a', { href: '#/jobs' }, '← All jobs')),
    h('section.card.details', { 'aria-label': 'Job' },
      h('div.title', {}, h('h1.mono', { text: id }), status),
      h('p', {}, command),
      progress,
      h('div.actions', {}, jsonl, cancel, remove),
    ),
    h('section.card', { 'aria-labelledby': 'results-title' },
      h('div.title', {}, h('h2', { id: 'results-title', text: 'Results' }), h('label', { for: 'result-filter', text: 'Status' }), filter),
      h('div.scroll', {}, h('table.list.results', {},
        h('colgroup', {}, h('col.c-index'), h('col.c-repo'), h('col.c-branch'), h('col.c-status'), h('col.c-exit'), h('col.c-time'), h('col.c-out')),
        h('thead', {}, h('tr', {}, ...['#', 'Repository', 'Branch @ commit', 'Status', 'Exit', 'Time', 'Output'].map((t) => h('th', { scope: 'col', text: t })))),
        tbody)),
      outputTitle,
      output,
    ),
  );
  // A finished job changes no more: stop polling it.
  let stopped = false;
  let timer;
  const loop = async () => {
    await refresh();
    if (!stopped && !(job && (job.status === 'completed' || job.status === 'cancelled'))) timer = setTimeout(loop, 2000);
  };
  loop();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export function mount(view, [id]) {
  return id ? oneJob(view, id) : list(view);
}
