import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConflictError, NotFoundError } from '../src/index.js';
import { collect, withBox } from './support.mjs';

test('processes: start, output by offsets, stream, wait, remove', async () => {
  await withBox(async (box) => {
    const proc = await box.processes.start('for i in 1 2 3; do echo line$i; sleep 0.2; done; echo oops >&2; exit 5');
    assert.equal(proc.status, 'running');
    assert.match(proc.process_id, /^proc-/);
    const events = await collect(box.processes.stream(proc));
    const stdout = events.filter((e) => e.type === 'stdout').map((e) => e.data).join('');
    assert.equal(stdout, 'line1\nline2\nline3\n');
    const exit = events.at(-1);
    assert.equal(exit.type, 'exit');
    assert.equal(exit.exit_code, 5);
    assert.equal(exit.process_id, proc.process_id);
    const ended = await box.processes.wait(proc, { timeoutMs: 10_000 });
    assert.equal(ended.status, 'exited');
    assert.equal(ended.exit_code, 5);
    const all = await box.processes.output(proc);
    assert.equal(all.stdout, 'line1\nline2\nline3\n');
    assert.equal(all.stderr, 'oops\n');
    const tail = await box.processes.output(proc, { stdout_offset: 6 });
    assert.equal(tail.stdout, 'line2\nline3\n');
    assert.equal(tail.stdout_offset, 6);
    assert.equal(tail.stdout_end, 18);
    // a replay from an offset
    const replay = await collect(box.processes.stream(proc, { stdout_offset: 12 }));
    assert.equal(replay.filter((e) => e.type === 'stdout').map((e) => e.data).join(''), 'line3\n');
    assert.ok((await box.processes.list()).some((p) => p.process_id === proc.process_id));
    await box.processes.remove(proc);
    await assert.rejects(box.processes.get(proc), (err) => err instanceof NotFoundError && err.code === 'process_not_found');
  });
});

test('processes: stdin (text and bytes), eof, signals', async () => {
  await withBox(async (box) => {
    const cat = await box.processes.start('cat', { stdin_open: true });
    await box.processes.stdin(cat, 'hello ');
    await box.processes.stdin(cat, new TextEncoder().encode('bytes\n'), { eof: true });
    const done = await box.processes.wait(cat, { timeoutMs: 10_000 });
    assert.equal(done.exit_code, 0);
    assert.equal((await box.processes.output(cat)).stdout, 'hello bytes\n');
    await assert.rejects(box.processes.stdin(cat, 'late'), ConflictError);

    const sleeper = await box.processes.start('sleep 60');
    // leaving a process stream does not stop the process
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    await assert.rejects(collect(box.processes.stream(sleeper, { signal: controller.signal })), (e) => e.name === 'AbortError');
    assert.equal((await box.processes.get(sleeper)).status, 'running');
    await box.processes.kill(sleeper, 'SIGTERM');
    const killed = await box.processes.wait(sleeper, { timeoutMs: 10_000 });
    assert.equal(killed.status, 'killed');
    assert.equal(killed.exit_code, 143);
    await box.processes.remove(sleeper);
    await box.processes.remove(cat);
  });
});

test('sessions: state carries from one command to the next', async () => {
  await withBox(async (box) => {
    const session = await box.sessions.create({ working_directory: '/workspace' });
    assert.match(session.session_id, /^sess-/);
    assert.equal(session.working_directory, '/workspace');
    await session.exec('cd src && export MODE=test && greet() { echo hi $1; }');
    const r = await session.exec('pwd; echo $MODE; greet you');
    assert.equal(r.stdout, '/workspace/src\ntest\nhi you\n');
    const exited = await session.exec('exit 3');
    assert.equal(exited.exit_code, 3);
    assert.equal((await session.exec('pwd')).stdout, '/workspace/src\n');
    const listed = await box.sessions.list();
    assert.equal(listed.length, 1);
    assert.equal(listed[0].working_directory, '/workspace/src');
    await session.delete();
    assert.deepEqual(await box.sessions.list(), []);
    await assert.rejects(session.exec('true'), (err) => err instanceof NotFoundError && err.code === 'session_not_found');
  });
});
