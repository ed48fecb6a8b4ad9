import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { withBox } from './support.mjs';

/** A server on the loopback (where the test server pins pinned.test and other.test). */
async function helloServer() {
  const server = createServer((req, res) => res.end('hello'));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

const fetchIn = (url) =>
  `python3 -c 'import urllib.request as u, sys
try: print(u.urlopen(sys.argv[1], timeout=20).read().decode())
except Exception as e: print("failed", getattr(e, "code", e))' ${url}`;

test('egress: an allow-list reaches its host, and box.egress() reports the decisions', async () => {
  const server = await helloServer();
  const { port } = server.address();
  const allow = [`pinned.test:${port}`];
  try {
    await withBox(
      async (box) => {
        assert.deepEqual(box.network, { allow });
        assert.equal((await box.exec(fetchIn(`http://pinned.test:${port}/`))).stdout, 'hello\n');
        assert.equal((await box.exec(fetchIn(`http://other.test:${port}/`))).stdout, 'failed 403\n');
        const egress = await box.egress();
        assert.deepEqual(egress.allow, allow);
        assert.deepEqual(
          egress.decisions.map((d) => [d.host, d.port, d.allowed]),
          [
            ['pinned.test', port, true],
            ['other.test', port, false],
          ],
        );
        assert.ok(egress.decisions[1].reason);
      },
      { network: { allow } },
    );
  } finally {
    server.close();
  }
});
