import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Client, Sandbox } from '../src/index.js';
import { eventually, withBox } from './support.mjs';

test('ports: the listening ports, and a URL that reaches one', async () => {
  await withBox(async (box) => {
    await box.writeFile('/tmp/site/index.html', '<h1>from the sandbox</h1>');
    await box.processes.start('cd /tmp/site && exec python3 -m http.server 3000 --bind 127.0.0.1');
    const listed = await eventually(async () => (await box.ports()).find((p) => p.port === 3000), 30_000);
    assert.match(listed.process, /http\.server 3000/);
    assert.equal(typeof listed.pid, 'number');
    assert.deepEqual(listed.addresses, ['127.0.0.1']);
    const url = box.portUrl(3000);
    assert.ok(url.endsWith(`/api/v1/containers/${box.container_id}/ports/3000/`), url);
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /from the sandbox/);
  });
});

test('ports: the URL carries the key for a browser, unless told not to', () => {
  const client = new Client({ url: 'http://127.0.0.1:9/', apiKey: 'k/1' });
  const box = Object.assign(Object.create(Sandbox.prototype), { container_id: 'box-1' });
  Object.defineProperty(box, '_client', { value: client });
  assert.equal(box.portUrl(8080, 'a?b=1'), 'http://127.0.0.1:9/api/v1/containers/box-1/ports/8080/a?b=1&access_token=k%2F1');
  assert.equal(box.portUrl(8080, '/', { withToken: false }), 'http://127.0.0.1:9/api/v1/containers/box-1/ports/8080/');
  assert.throws(() => box.portUrl(0), RangeError);
});
