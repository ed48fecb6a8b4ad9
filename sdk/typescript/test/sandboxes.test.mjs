import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  NotFoundError,
  RepoboxError,
  UnprocessableError,
  ValidationError,
} from '../src/index.js';
import { FEATURE, FIRST, TRUNK, client, repoUrl, withBox } from './support.mjs';

test('create: the default branch, its head; get, list, extend, destroy', async () => {
  const url = repoUrl();
  const box = await client.create(url, { max_runtime_secs: 600 });
  try {
    assert.equal(box.status, 'running');
    assert.equal(box.repo_url, url);
    assert.equal(box.branch, 'trunk');
    assert.equal(box.resolved_commit, TRUNK);
    assert.equal(box.working_directory, '/workspace');
    assert.ok(box.expires_at);
    const again = await client.get(box.container_id);
    assert.equal(again.container_id, box.container_id);
    assert.ok((await client.list()).some((b) => b.container_id === box.container_id));
    await box.extend(null);
    assert.equal(box.expires_at ?? null, null);
    await box.extend(1200);
    assert.ok(Date.parse(box.expires_at) > Date.now() + 1000 * 1000);
    await box.refresh();
    assert.equal(box.status, 'running');
  } finally {
    await box.destroy();
  }
  assert.equal(box.status, 'destroyed');
  await assert.rejects(client.get(box.container_id), (err) => {
    assert.ok(err instanceof NotFoundError);
    assert.ok(err instanceof RepoboxError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'container_not_found');
    assert.match(err.detail, new RegExp(box.container_id));
    return true;
  });
  await assert.rejects(box.destroy(), NotFoundError);
});

test('create: a branch, a commit, and an initial command', async () => {
  await withBox(async (box) => {
    assert.equal(box.branch, 'feature');
    assert.equal(box.resolved_commit, FEATURE);
    assert.equal(box.initial_command_result.exit_code, 0);
    assert.equal(box.initial_command_result.stdout, 'feature\n');
  }, { branch: 'feature', initial_command: 'cat FEATURE' });
  await withBox(async (box) => {
    assert.equal(box.resolved_commit, FIRST);
    assert.equal(box.commit, FIRST.slice(0, 7));
  }, { commit: FIRST.slice(0, 7) });
});

test('create: errors are typed, with the server code and detail', async () => {
  await assert.rejects(client.create(repoUrl(), { branch: 'no-such-branch' }), (err) => {
    assert.ok(err instanceof UnprocessableError);
    assert.equal(err.status, 422);
    assert.equal(err.code, 'checkout_failed');
    assert.match(err.detail, /no-such-branch/);
    assert.equal(err.error, 'Checkout failed');
    assert.ok(err.timestamp);
    return true;
  });
  await assert.rejects(client.create('file:///etc'), (err) => {
    assert.ok(err instanceof ValidationError);
    assert.equal(err.code, 'invalid_request');
    return true;
  });
  await assert.rejects(client.create(repoUrl(), { max_runtime_secs: 0 }), ValidationError);
});

test('withSandbox destroys the sandbox also when the body throws', async () => {
  let id;
  await assert.rejects(
    withBox(async (box) => {
      id = box.container_id;
      throw new Error('boom');
    }),
    /boom/,
  );
  await assert.rejects(client.get(id), NotFoundError);
});
