import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConflictError, NotFoundError, ValidationError } from '../src/index.js';
import { FEATURE, TRUNK, client, collect, repoUrl } from './support.mjs';

test('jobs: run, progress as an async iterator, results, delete', async () => {
  const repos = [repoUrl(), { repo_url: repoUrl(), branch: 'feature' }, { repo_url: repoUrl(), branch: 'no-such-branch' }];
  const job = await client.jobs.create('git rev-parse HEAD; test -e FEATURE', repos, { concurrency: 2, timeout_secs: 60 });
  try {
    assert.match(job.job_id, /^job-/);
    assert.equal(job.total, 3);
    const events = await collect(client.jobs.events(job));
    const results = events.filter((e) => e.type === 'result').map((e) => e.result);
    assert.equal(results.length, 3);
    const done = events.at(-1);
    assert.equal(done.type, 'done');
    assert.equal(done.job.status, 'completed');
    assert.deepEqual(done.job.counts, { pending: 0, running: 0, succeeded: 1, failed: 1, errored: 1, cancelled: 0 });
    const ordered = await client.jobs.results(job);
    assert.deepEqual(ordered.map((r) => r.index), [0, 1, 2]);
    assert.deepEqual(ordered.map((r) => r.status), ['failed', 'succeeded', 'errored']);
    assert.equal(ordered[0].stdout, `${TRUNK}\n`);
    assert.equal(ordered[1].resolved_commit, FEATURE);
    assert.equal(ordered[2].error.code, 'checkout_failed');
    assert.equal((await client.jobs.get(job)).status, 'completed');
    assert.ok((await client.jobs.list()).some((j) => j.job_id === job.job_id));
    // the events of a finished job replay at once
    assert.equal((await collect(client.jobs.events(job))).length, 4);
  } finally {
    await client.jobs.delete(job);
  }
  await assert.rejects(client.jobs.get(job), (err) => err instanceof NotFoundError && err.code === 'job_not_found');
});

test('jobs: run waits; cancel; validation before anything starts', async () => {
  const finished = await client.jobs.run('echo hi', [repoUrl()], { waitTimeoutMs: 60_000 });
  try {
    assert.equal(finished.status, 'completed');
    assert.equal(finished.counts.succeeded, 1);
    assert.equal((await client.jobs.results(finished))[0].stdout, 'hi\n');
  } finally {
    await client.jobs.delete(finished);
  }

  const slow = await client.jobs.run('sleep 60', [repoUrl(), repoUrl()], { wait: false, concurrency: 1 });
  try {
    await assert.rejects(client.jobs.delete(slow), ConflictError);
    const cancelled = await client.jobs.cancel(slow);
    assert.equal(cancelled.status, 'cancelled');
    const waited = await client.jobs.wait(slow, { timeoutMs: 30_000 });
    assert.equal(waited.status, 'cancelled');
  } finally {
    await client.jobs.wait(slow, { timeoutMs: 30_000 }).catch(() => {});
    await client.jobs.delete(slow);
  }

  await assert.rejects(client.jobs.create('true', [repoUrl(), 'file:///etc']), (err) => {
    assert.ok(err instanceof ValidationError);
    assert.match(err.detail, /repos\[1\]/);
    return true;
  });
});
