// The strict server: API_KEYS, COMMAND_ALLOWLIST=echo,cat,sleep,git,true,
// MAX_STDIN_BYTES=1024, MAX_PROCESSES=2.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AuthError,
  Client,
  ForbiddenError,
  RateLimitError,
  TooLargeError,
} from '../src/index.js';
import { STRICT_URL, collect, repoUrl, strict, withBox } from './support.mjs';

test('auth: no key or a wrong key is an AuthError; the key is sent as a bearer token', async () => {
  for (const apiKey of [undefined, 'wrong']) {
    const anonymous = new Client({ url: STRICT_URL, apiKey });
    await assert.rejects(anonymous.info(), (err) => {
      assert.ok(err instanceof AuthError);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'unauthorized');
      return true;
    });
  }
  const info = await strict.info();
  assert.equal(info.auth_required, true);
  assert.equal(info.command_policy.enforced, true);
  assert.equal(info.limits.max_processes, 2);
});

test('policy and limits: ForbiddenError, TooLargeError, RateLimitError', async () => {
  await withBox(async (box) => {
    await assert.rejects(box.exec('ls /'), (err) => {
      assert.ok(err instanceof ForbiddenError);
      assert.equal(err.code, 'command_not_allowed');
      assert.match(err.detail, /ls/);
      return true;
    });
    await assert.rejects(collect(box.stream('rm -rf /workspace')), ForbiddenError);
    assert.equal((await box.exec('echo allowed')).stdout, 'allowed\n');
    await assert.rejects(box.exec('cat', { stdin: 'x'.repeat(2000) }), (err) => {
      assert.ok(err instanceof TooLargeError);
      assert.equal(err.status, 413);
      return true;
    });
    await box.processes.start('sleep 60');
    await box.processes.start('sleep 60');
    await assert.rejects(box.processes.start('sleep 60'), (err) => {
      assert.ok(err instanceof RateLimitError);
      assert.equal(err.status, 429);
      assert.equal(err.code, 'limit_reached');
      return true;
    });
  }, {}, strict);
});
