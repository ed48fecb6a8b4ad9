import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ValidationError } from '../src/index.js';
import { collect, eventually, withBox } from './support.mjs';

test('exec: exit code, stdout and stderr apart, stdin, environment, working directory', async () => {
  await withBox(async (box) => {
    const r = await box.exec('echo out; echo err >&2; exit 3');
    assert.equal(r.exit_code, 3);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal(r.timed_out, false);
    assert.equal((await box.exec('cat', { stdin: 'fed\n' })).stdout, 'fed\n');
    assert.equal((await box.exec('echo $GREETING', { environment: { GREETING: 'hi' } })).stdout, 'hi\n');
    assert.equal((await box.exec('pwd', { working_directory: '/workspace/src' })).stdout, '/workspace/src\n');
    assert.equal((await box.exec('git rev-parse --abbrev-ref HEAD')).stdout, 'trunk\n');
  });
});

test('exec: a timeout kills the command (124, timed_out)', async () => {
  await withBox(async (box) => {
    const r = await box.exec('echo before; sleep 30', { timeout_secs: 1 });
    assert.equal(r.timed_out, true);
    assert.equal(r.exit_code, 124);
    assert.equal(r.stdout, 'before\n');
    await assert.rejects(box.exec('true', { working_directory: 'relative' }), ValidationError);
  });
});

test('stream: output as it comes, then the exit event', async () => {
  await withBox(async (box) => {
    const events = await collect(box.stream('for i in 1 2 3; do echo $i; sleep 0.2; done; echo e >&2; exit 4'));
    const stdout = events.filter((e) => e.type === 'stdout').map((e) => e.data).join('');
    const stderr = events.filter((e) => e.type === 'stderr').map((e) => e.data).join('');
    assert.equal(stdout, '1\n2\n3\n');
    assert.equal(stderr, 'e\n');
    const exit = events.at(-1);
    assert.equal(exit.type, 'exit');
    assert.equal(exit.exit_code, 4);
    assert.equal(exit.timed_out, false);
    assert.equal(typeof exit.execution_time_secs, 'number');
    assert.equal(events.filter((e) => e.type === 'exit').length, 1);
    // the first event comes before the command ends
    const started = Date.now();
    for await (const event of box.stream('echo now; sleep 2; echo later')) {
      assert.deepEqual(event.type, 'stdout');
      assert.equal(event.data, 'now\n');
      assert.ok(Date.now() - started < 1500, 'first output arrives before the end');
      break;
    }
  });
});

test('stream: leaving the loop early kills the command', async () => {
  await withBox(async (box) => {
    for await (const event of box.stream('echo started; sleep 3; touch /tmp/should-not-exist')) {
      if (event.type === 'stdout') break;
    }
    await eventually(async () => (await box.exec('pgrep -x sleep || true')).stdout === '');
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal((await box.exec('test -e /tmp/should-not-exist; echo $?')).stdout, '1\n');
  });
});

test('stream: an error answer is thrown from the iterator, typed', async () => {
  await withBox(async (box) => {
    await assert.rejects(collect(box.stream('true', { timeout_secs: 0 })), (err) => {
      assert.ok(err instanceof ValidationError);
      assert.equal(err.code, 'invalid_request');
      return true;
    });
  });
});

test('stream: an AbortSignal ends it', async () => {
  await withBox(async (box) => {
    const controller = new AbortController();
    const seen = [];
    await assert.rejects(async () => {
      for await (const event of box.stream('echo a; sleep 20', { signal: controller.signal })) {
        seen.push(event);
        controller.abort();
      }
    }, (err) => err.name === 'AbortError');
    assert.equal(seen.length, 1);
  });
});
