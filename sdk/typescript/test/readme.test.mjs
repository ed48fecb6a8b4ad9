// The README's example is examples/quickstart.mjs, verbatim; it runs against the server.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { URL_, client, repoUrl } from './support.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const example = path.join(root, 'examples/quickstart.mjs');

test('both READMEs show examples/quickstart.mjs as it is', async () => {
  const code = (await readFile(example, 'utf8')).trimEnd();
  for (const readme of ['README.md', '../../README.md']) {
    const text = await readFile(path.join(root, readme), 'utf8');
    const blocks = [...text.matchAll(/```(?:js|javascript|ts|typescript)\n([^]*?)```/g)].map((m) => m[1].trimEnd());
    assert.ok(blocks.includes(code), `${readme} lacks examples/quickstart.mjs verbatim`);
  }
});

test('examples/quickstart.mjs runs', async () => {
  const repo = repoUrl();
  const { stdout } = await promisify(execFile)(process.execPath, [example], {
    cwd: root,
    env: { ...process.env, REPOBOX_URL: URL_, REPO_URL: repo },
    timeout: 60_000,
  });
  assert.match(stdout, /^commits: 2 exit 0$/m);
  assert.match(stdout, /^stdout: 1\nstdout: 2\nstdout: 3\nexit 0$/m);
  assert.match(stdout, /^hello$/m);
  assert.match(stdout, /path: 'notes\.txt', status: 'untracked'/);
  assert.match(stdout, /^0 succeeded 2$/m);
  assert.match(stdout, /^1 errored $/m);
  assert.match(stdout, /^done: /m);
  assert.match(stdout, /^404 container_not_found /m);
  assert.deepEqual((await client.list()).filter((b) => b.repo_url === repo), [], 'the example destroyed its sandbox');
});
