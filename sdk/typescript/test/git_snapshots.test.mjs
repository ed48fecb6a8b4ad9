import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConflictError, NotFoundError, UnprocessableError } from '../src/index.js';
import { FIRST, TRUNK, client, repoUrl, withBox } from './support.mjs';

test('git: status, diff, apply to another sandbox, reset', async () => {
  await withBox(async (box) => {
    assert.equal((await box.git.status()).clean, true);
    assert.equal(await box.git.diff(), '');
    await box.writeFile('/workspace/README.md', '# changed\n');
    await box.writeFile('/workspace/new.txt', 'new\n');
    await box.writeFile('/workspace/data.bin', new Uint8Array([0, 1, 2, 255]));
    const status = await box.git.status();
    assert.equal(status.clean, false);
    assert.equal(status.branch, 'trunk');
    assert.equal(status.base_commit, TRUNK);
    const changes = Object.fromEntries(status.changes.map((c) => [c.path, c.status]));
    assert.deepEqual(changes, { 'README.md': 'modified', 'new.txt': 'untracked', 'data.bin': 'untracked' });
    const patch = await box.git.diffBytes();
    assert.match(await box.git.diff(), /^diff --git a\/README.md/m);
    assert.doesNotMatch(await box.git.diff({ untracked: false }), /new\.txt/);
    await withBox(async (other) => {
      const applied = await other.git.apply(patch);
      assert.equal(applied.clean, false);
      assert.deepEqual(await other.readBytes('/workspace/data.bin'), new Uint8Array([0, 1, 2, 255]));
      assert.equal(await other.readText('/workspace/README.md'), '# changed\n');
      await assert.rejects(other.git.apply('not a patch\n'), UnprocessableError);
    });
    assert.match(await box.git.diff({ base: FIRST }), /CHANGELOG/);
    await assert.rejects(box.git.diff({ base: 'no-such-rev' }), UnprocessableError);
    await box.reset({ processes: true });
    assert.equal((await box.git.status()).clean, true);
    assert.equal(box.status, 'running');
  });
});

test('snapshots and forks', async () => {
  await withBox(async (box) => {
    await box.writeFile('/workspace/state.txt', 'prepared\n');
    const snap = await box.snapshot({ name: 'prepared' });
    try {
      assert.equal(snap.name, 'prepared');
      assert.equal(snap.source_container_id, box.container_id);
      assert.equal(snap.resolved_commit, TRUNK);
      assert.equal((await client.snapshots.get(snap)).snapshot_id, snap.snapshot_id);
      assert.ok((await client.snapshots.list()).some((s) => s.snapshot_id === snap.snapshot_id));
      const copy = await client.create({ snapshot: snap, max_runtime_secs: 600 });
      try {
        assert.equal(await copy.readText('/workspace/state.txt'), 'prepared\n');
        assert.equal(copy.resolved_commit, TRUNK);
        await assert.rejects(client.snapshots.delete(snap), ConflictError);
      } finally {
        await copy.destroy();
      }
    } finally {
      await client.snapshots.delete(snap);
    }
    await assert.rejects(client.snapshots.get(snap), (err) => err instanceof NotFoundError && err.code === 'snapshot_not_found');

    const fork = await box.fork({ count: 2, max_runtime_secs: 600 });
    try {
      assert.equal(fork.forks.length, 2);
      assert.equal(fork.errors.length, 0);
      assert.equal(fork.sandboxes.length, 2);
      for (const copy of fork.sandboxes) {
        assert.equal(copy.status, 'running');
        assert.equal((await copy.exec('cat state.txt')).stdout, 'prepared\n');
      }
    } finally {
      for (const copy of fork.sandboxes) await copy.destroy();
      await client.snapshots.delete(fork.snapshot_id);
    }
  });
});
