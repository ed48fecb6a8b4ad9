// One sandbox: its details, a terminal (xterm.js over the terminal WebSocket), a file
// browser with a viewer, downloads and uploads, a command box streaming its output,
// the sandbox's background processes with their output, and the ports its servers
// listen on, each a link to its page.

import { Terminal } from '../vendor/xterm.mjs';
import { FitAddon } from '../vendor/addon-fit.mjs';
import { api, get, request, stream, download, terminalUrl, portUrl, enc } from './api.js';
import { h, setText, notice, detail, busy, shortSha, countdown, when, bytes, updateBadge, syncRows, every, field } from './dom.js';
import { extend, confirmButton } from './sandboxes.js';

const WORKSPACE = '/workspace';

function details(id, cleanup) {
  const status = h('span.badge');
  const values = {
    repo: h('dd.repo'),
    branch: h('dd'),
    commit: h('dd.mono'),
    created: h('dd'),
    expires: h('dd'),
  };
  let current = null;
  const extendButton = h('button.secondary', {
    type: 'button',
    onclick: () => busy(extendButton, async () => {
      show(await extend(current));
      notice(`Now expires ${countdown(current.expires_at)}`, 'ok');
    }),
  }, 'Extend 1 h');
  const snapshot = h('button.secondary', {
    type: 'button',
    onclick: () => busy(snapshot, async () => {
      const made = await api('POST', `/containers/${enc(id)}/snapshots`, {});
      notice(`Snapshot ${made.snapshot_id} taken`, 'ok');
    }, 'Taking snapshot…'),
  }, 'Snapshot');
  const forkCount = h('input', { type: 'number', min: '1', value: '1', class: 'narrow', 'aria-label': 'Number of forks' });
  const fork = h('button.secondary', {
    type: 'button',
    onclick: () => busy(fork, async () => {
      const made = await api('POST', `/containers/${enc(id)}/fork`, { count: Number(forkCount.value) || 1 });
      const ok = made.forks.filter((f) => f.container).length;
      const failed = made.forks.filter((f) => f.error);
      notice(`${ok} fork(s) started${failed.length ? `; failed: ${failed[0].error.detail}` : ''}`, failed.length ? 'error' : 'ok');
    }, 'Forking…'),
  }, 'Fork');
  const destroy = confirmButton('Destroy', 'Confirm destroy', async () => {
    await api('DELETE', `/containers/${enc(id)}`);
    notice(`Destroyed ${id}`, 'ok');
    location.hash = '#/sandboxes';
  });
  const section = h('section.card.details', { 'aria-label': 'Sandbox details' },
    h('div.title', {}, h('h1.mono', { text: id }), status),
    h('dl', {},
      h('dt', { text: 'Repository' }), values.repo,
      h('dt', { text: 'Branch' }), values.branch,
      h('dt', { text: 'Commit' }), values.commit,
      h('dt', { text: 'Created' }), values.created,
      h('dt', { text: 'Expires' }), values.expires,
    ),
    h('div.actions', {}, extendButton, snapshot, forkCount, fork, destroy),
  );
  function show(sandbox) {
    current = sandbox;
    updateBadge(status, sandbox.status);
    setText(values.repo, sandbox.repo_url);
    setText(values.branch, sandbox.branch || '(detached)');
    setText(values.commit, shortSha(sandbox.resolved_commit));
    values.commit.title = sandbox.resolved_commit || '';
    setText(values.created, when(sandbox.created_at));
    setText(values.expires, countdown(sandbox.expires_at));
    const running = sandbox.status === 'running';
    for (const button of [extendButton, snapshot, fork]) button.disabled = !running;
  }
  cleanup.push(every(3000, async () => {
    try {
      show(await get(`/containers/${enc(id)}`));
    } catch (error) {
      if (error.status === 404) {
        notice(detail(error));
        updateBadge(status, 'destroyed');
      }
      throw error;
    }
  }));
  const ticker = setInterval(() => current && setText(values.expires, countdown(current.expires_at)), 1000);
  cleanup.push(() => clearInterval(ticker));
  return section;
}

function terminal(id, cleanup) {
  const screen = h('div.term-screen', { role: 'region', 'aria-label': 'Terminal' });
  const state = h('span.state', { 'aria-live': 'polite' }, 'connecting…');
  const reconnect = h('button.secondary', { type: 'button', hidden: true, onclick: () => connect() }, 'Reconnect');
  const term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 5000, fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, monospace' });
  const fit = new FitAddon();
  term.loadAddon(fit);
  const encoder = new TextEncoder();
  let socket = null;
  let closed = false;

  function sendResize() {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    }
  }

  function connect() {
    reconnect.hidden = true;
    setText(state, 'connecting…');
    const ws = new WebSocket(terminalUrl(id, term.cols, term.rows));
    ws.binaryType = 'arraybuffer';
    socket = ws;
    ws.onopen = () => {
      setText(state, 'connected');
      sendResize();
      term.focus();
    };
    ws.onmessage = (event) => {
      if (typeof event.data === 'string') {
        try {
          const message = JSON.parse(event.data);
          if (message.type === 'exit') term.write(`\r\n[shell exited with ${message.exit_code}]\r\n`);
        } catch {
          // Unknown text frames are ignored.
        }
      } else {
        term.write(new Uint8Array(event.data));
      }
    };
    ws.onclose = (event) => {
      if (socket !== ws || closed) return;
      setText(state, event.code === 1000 ? 'closed' : `disconnected (${event.code})`);
      reconnect.hidden = false;
      // A refused upgrade gives the page no status or body: ask the API why.
      if (event.code !== 1000) {
        get(`/containers/${enc(id)}`).then((sandbox) => {
          if (sandbox.status !== 'running') setText(state, `disconnected: the sandbox is ${sandbox.status}`);
        }, (error) => setText(state, `disconnected: ${detail(error)}`));
      }
    };
  }

  term.onData((data) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  term.onResize(sendResize);

  // The terminal opens once its element is in the page (it measures itself).
  requestAnimationFrame(() => {
    if (closed) return;
    term.open(screen);
    try {
      fit.fit();
    } catch {
      // Hidden or zero-sized: keep 80x24.
    }
    connect();
  });
  const observer = new ResizeObserver(() => {
    try {
      fit.fit();
    } catch {
      // Not measurable right now.
    }
  });
  observer.observe(screen);
  cleanup.push(() => {
    closed = true;
    observer.disconnect();
    if (socket) socket.close();
    term.dispose();
  });
  return h('section.card.term', { 'aria-labelledby': 'term-title' },
    h('div.title', {}, h('h2', { id: 'term-title', text: 'Terminal' }), state, reconnect),
    screen,
  );
}

function parentOf(path) {
  const trimmed = path.replace(/\/+$/, '');
  const cut = trimmed.lastIndexOf('/');
  return cut <= 0 ? '/' : trimmed.slice(0, cut);
}

const join = (dir, name) => (dir.endsWith('/') ? dir + name : `${dir}/${name}`);

function files(id) {
  const base = `/containers/${enc(id)}`;
  let cwd = WORKSPACE;
  const crumbs = h('nav.crumbs', { 'aria-label': 'Current directory' });
  const tbody = h('tbody');
  const viewerTitle = h('h3.mono', { text: 'No file open' });
  const viewerInfo = h('p.muted');
  const viewerBody = h('pre.viewer', { tabindex: '0', 'aria-label': 'File content' });
  const viewerDownload = h('button.secondary', { type: 'button', hidden: true }, 'Download');
  const upload = h('input', { type: 'file', multiple: true });
  const uploadButton = h('button.secondary', { type: 'submit' }, 'Upload');

  const rawPath = (path) => `${base}/files/raw?file_path=${enc(path)}`;
  const downloadFile = (button, path) => busy(button, () => download(rawPath(path), path.split('/').pop()));

  async function browse(path) {
    try {
      const listing = await get(`${base}/browse?path=${enc(path)}`);
      cwd = listing.path || path;
      showCrumbs();
      const items = [...listing.items].sort((a, b) => (a.type === 'directory') === (b.type === 'directory') ? 0 : a.type === 'directory' ? -1 : 1);
      if (cwd !== '/') items.unshift({ name: '..', type: 'directory', size: null, parent: true });
      syncRows(tbody, items, (item) => `${cwd}\u0000${item.name}`, createRow, () => {}, 'Empty directory');
    } catch (error) {
      if (error.status !== 401) notice(detail(error));
    }
  }

  function showCrumbs() {
    const parts = cwd.split('/').filter(Boolean);
    const links = [h('button.link', { type: 'button', onclick: () => browse('/') }, '/')];
    parts.forEach((part, index) => {
      const target = `/${parts.slice(0, index + 1).join('/')}`;
      const last = index === parts.length - 1;
      links.push(last ? h('span', { 'aria-current': 'location', text: part }) : h('button.link', { type: 'button', onclick: () => browse(target) }, part));
      if (!last) links.push(h('span.sep', { 'aria-hidden': 'true', text: '/' }));
    });
    crumbs.replaceChildren(...links);
  }

  function createRow(item) {
    const path = item.parent ? parentOf(cwd) : join(cwd, item.name);
    const isDir = item.type === 'directory';
    const name = h('button.link.mono', {
      type: 'button',
      'aria-label': isDir ? `Open directory ${item.name}` : `View file ${item.name}`,
      onclick: () => (isDir ? browse(path) : view(path, item)),
    }, isDir && !item.parent ? `${item.name}/` : item.name);
    const actions = h('td.actions');
    if (!isDir) {
      const button = h('button.secondary.small', { type: 'button', 'aria-label': `Download ${item.name}` }, 'Download');
      button.addEventListener('click', () => downloadFile(button, path));
      actions.append(button);
    }
    return h('tr', {}, h('td', {}, name), h('td.num', { text: isDir ? '' : bytes(item.size) }), h('td.time', { text: item.type === 'symlink' ? `→ ${item.symlink_target || ''}` : when(item.modified_at) }), actions);
  }

  async function view(path) {
    setText(viewerTitle, path);
    setText(viewerInfo, 'loading…');
    viewerBody.textContent = '';
    viewerDownload.hidden = false;
    viewerDownload.onclick = () => downloadFile(viewerDownload, path);
    try {
      const file = await get(`${base}/files?file_path=${enc(path)}`);
      if (file.is_binary) {
        setText(viewerInfo, `Binary file, ${bytes(file.size)}: use Download.`);
      } else {
        setText(viewerInfo, bytes(file.size));
        viewerBody.textContent = file.content;
      }
    } catch (error) {
      setText(viewerInfo, error.status === 413 ? `${detail(error)} Use Download.` : detail(error));
    }
  }

  const uploadForm = h('form.inline', { 'aria-label': 'Upload files' }, field('Upload to this directory', upload), uploadButton);
  uploadForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!upload.files.length) {
      notice('Choose a file to upload first.');
      return;
    }
    busy(uploadButton, async () => {
      for (const file of upload.files) {
        await request('PUT', rawPath(join(cwd, file.name)), { body: file, contentType: 'application/octet-stream' });
      }
      notice(`Uploaded ${upload.files.length} file(s) to ${cwd}`, 'ok');
      upload.value = '';
      await browse(cwd);
    }, 'Uploading…');
  });

  browse(cwd);
  return h('section.card.files', { 'aria-labelledby': 'files-title' },
    h('div.title', {}, h('h2', { id: 'files-title', text: 'Files' }), h('button.secondary.small', { type: 'button', onclick: () => browse(cwd) }, 'Refresh')),
    crumbs,
    h('div.scroll.filelist', {}, h('table.list.files', {},
      h('colgroup', {}, h('col.c-name'), h('col.c-size'), h('col.c-modified'), h('col.c-dl')),
      h('thead', {}, h('tr', {}, ...['Name', 'Size', 'Modified', ''].map((t) => h('th', { scope: 'col', text: t })))),
      tbody)),
    uploadForm,
    h('div.viewer-box', { 'aria-live': 'polite' }, h('div.title', {}, viewerTitle, viewerDownload), viewerInfo, viewerBody),
  );
}

function appendOutput(pre, text, stderr) {
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
  if (stderr) pre.append(h('span.stderr', { text }));
  else pre.append(document.createTextNode(text));
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

function commandBox(id, cleanup) {
  const input = h('input.mono', { type: 'text', name: 'command', required: true, placeholder: 'e.g. ls -la && git log --oneline -5', autocomplete: 'off', spellcheck: 'false' });
  const run = h('button', { type: 'submit' }, 'Run');
  const stopButton = h('button.secondary', { type: 'button', disabled: true }, 'Stop');
  const output = h('pre.output', { tabindex: '0', 'aria-label': 'Command output' });
  const status = h('p.muted.exit', { 'aria-live': 'polite' }, '\u00a0');
  let controller = null;
  stopButton.addEventListener('click', () => controller && controller.abort());
  cleanup.push(() => controller && controller.abort());
  const form = h('form.command', { 'aria-labelledby': 'cmd-title' },
    h('div.title', {}, h('h2', { id: 'cmd-title', text: 'Run a command' })),
    h('div.inline', {}, field('Command (in /workspace)', input), run, stopButton),
    output,
    status,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (controller) return;
    output.textContent = '';
    setText(status, 'running…');
    controller = new AbortController();
    run.disabled = true;
    stopButton.disabled = false;
    try {
      await stream('POST', `/containers/${enc(id)}/execute/stream`, { command: input.value, timeout_secs: 300 }, (name, data) => {
        if (name === 'stdout' || name === 'stderr') appendOutput(output, data.data, name === 'stderr');
        else if (name === 'exit') {
          setText(status, `exit ${data.exit_code}${data.timed_out ? ' (timed out)' : ''} in ${Number(data.execution_time_secs).toFixed(2)} s`);
        } else if (name === 'error') setText(status, (data && data.detail) || String(data));
      }, controller.signal);
    } catch (error) {
      setText(status, error.name === 'AbortError' ? 'stopped' : detail(error));
    } finally {
      controller = null;
      run.disabled = false;
      stopButton.disabled = true;
    }
  });
  return h('section.card.cmd', {}, form);
}

function processes(id, cleanup) {
  const base = `/containers/${enc(id)}/processes`;
  const tbody = h('tbody');
  const command = h('input.mono', { type: 'text', required: true, placeholder: 'e.g. python3 -m http.server 8080', autocomplete: 'off', spellcheck: 'false' });
  const start = h('button.secondary', { type: 'submit' }, 'Start');
  const outTitle = h('h3.mono', { text: 'Select a process to see its output' });
  const out = h('pre.output', { tabindex: '0', 'aria-label': 'Process output' });
  let selected = null;
  let offsets = { stdout: 0, stderr: 0 };

  const form = h('form.inline', { 'aria-label': 'Start a background process' }, field('Background process', command), start);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(start, async () => {
      const made = await api('POST', base, { command: command.value });
      command.value = '';
      select(made);
      await refresh();
    });
  });

  function select(process) {
    selected = process.process_id;
    offsets = { stdout: 0, stderr: 0 };
    out.textContent = '';
    setText(outTitle, `${process.process_id}: ${process.command}`);
    poll();
  }

  async function poll() {
    if (!selected) return;
    const id = selected;
    try {
      const chunk = await get(`${base}/${enc(id)}/output?stdout_offset=${offsets.stdout}&stderr_offset=${offsets.stderr}`);
      if (id !== selected) return;
      if (chunk.stdout) appendOutput(out, chunk.stdout, false);
      if (chunk.stderr) appendOutput(out, chunk.stderr, true);
      offsets = { stdout: chunk.stdout_end, stderr: chunk.stderr_end };
    } catch (error) {
      if (error.status === 404) selected = null;
    }
  }

  const createRow = (process) => {
    const pick = h('button.link.mono', { type: 'button', onclick: () => select(row.process) }, process.process_id);
    const kill = h('button.secondary.small', {
      type: 'button',
      onclick: () => busy(kill, async () => {
        await api('POST', `${base}/${enc(row.process.process_id)}/signal`, { signal: 'SIGTERM' });
        await refresh();
      }),
    }, 'Stop');
    const remove = h('button.secondary.small', {
      type: 'button',
      onclick: () => busy(remove, async () => {
        await api('DELETE', `${base}/${enc(row.process.process_id)}`);
        if (selected === row.process.process_id) selected = null;
        await refresh();
      }),
    }, 'Remove');
    const row = h('tr', {}, h('td', {}, pick), h('td.mono.cmdcell'), h('td', {}, h('span.badge')), h('td.num'), h('td.actions', {}, kill, remove));
    return row;
  };
  const updateRow = (row, process) => {
    row.process = process;
    const cells = row.children;
    setText(cells[1], process.command);
    cells[1].title = process.command;
    updateBadge(cells[2].firstChild, process.status);
    setText(cells[3], process.exit_code ?? '');
    cells[4].firstChild.disabled = process.status !== 'running';
  };

  async function refresh() {
    try {
      const list = await get(base);
      syncRows(tbody, list.processes, (p) => p.process_id, createRow, updateRow, 'No background processes.');
    } catch (error) {
      if (error.status !== 401 && error.status !== 409) notice(detail(error));
    }
  }
  cleanup.push(every(3000, refresh));
  cleanup.push(every(1000, poll));

  return h('section.card.procs', { 'aria-labelledby': 'procs-title' },
    h('div.title', {}, h('h2', { id: 'procs-title', text: 'Processes' })),
    form,
    h('div.scroll', {}, h('table.list.processes', {},
      h('colgroup', {}, h('col.c-pid'), h('col.c-cmd'), h('col.c-pstatus'), h('col.c-exit'), h('col.c-pactions')),
      h('thead', {}, h('tr', {}, ...['Id', 'Command', 'Status', 'Exit', ''].map((t) => h('th', { scope: 'col', text: t })))),
      tbody)),
    outTitle,
    out,
  );
}

function ports(id, cleanup) {
  const tbody = h('tbody');
  const createRow = (listed) => {
    // The page is the sandbox's, served on this origin: opened without an opener and
    // a referrer, it gets neither this window nor a copy of its sessionStorage (the key).
    const link = h('a.mono', {
      href: portUrl(id, listed.port),
      target: '_blank',
      rel: 'noopener noreferrer',
      'aria-label': `Open port ${listed.port}`,
    }, String(listed.port));
    return h('tr', {}, h('td', {}, link), h('td.mono'), h('td.mono.cmdcell'));
  };
  const updateRow = (row, listed) => {
    const cells = row.children;
    setText(cells[1], (listed.addresses || []).join(', '));
    setText(cells[2], listed.process ?? '');
    cells[2].title = listed.process ?? '';
  };
  async function refresh() {
    try {
      const listed = await get(`/containers/${enc(id)}/ports`);
      syncRows(tbody, listed, (p) => String(p.port), createRow, updateRow, 'Nothing listens yet.');
    } catch (error) {
      if (error.status !== 401 && error.status !== 409) notice(detail(error));
    }
  }
  cleanup.push(every(3000, refresh));
  return h('section.card.ports', { 'aria-labelledby': 'ports-title' },
    h('div.title', {}, h('h2', { id: 'ports-title', text: 'Ports' })),
    h('div.scroll', {}, h('table.list.ports', {},
      h('colgroup', {}, h('col.c-port'), h('col.c-addr'), h('col.c-cmd')),
      h('thead', {}, h('tr', {}, ...['Port', 'Listening on', 'Process'].map((t) => h('th', { scope: 'col', text: t })))),
      tbody)),
  );
}

export function mount(view, [id]) {
  const cleanup = [];
  view.append(
    h('p.back', {}, h('a', { href: '#/sandboxes' }, '← All sandboxes')),
    details(id, cleanup),
    terminal(id, cleanup),
    h('div.columns', {}, files(id), h('div.stack', {}, commandBox(id, cleanup), processes(id, cleanup), ports(id, cleanup))),
  );
  return () => cleanup.forEach((stop) => stop());
}
