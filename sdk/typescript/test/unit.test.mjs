// No server needed: the SSE decoder, error mapping, request shape (a fake fetch).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  APIError,
  AuthError,
  Client,
  ConflictError,
  NotFoundError,
  RepoboxError,
  SSEDecoder,
  ServerError,
  ServiceUnavailableError,
  TimeoutError,
  TransportError,
  ValidationError,
  errorFromBody,
} from '../src/index.js';

test('SSE: events split anywhere, CRLF and CR, comments, multi-line data, unterminated end', () => {
  const text = ': keep-alive\r\nevent: stdout\r\ndata: {"data":"a"}\r\n\r\nevent: exit\ndata: 1\ndata: 2\n\n'
    + 'data: plain\r\rid: 7\nevent: x\ndata';
  for (let step = 1; step <= text.length; step++) {
    const decoder = new SSEDecoder();
    const events = [];
    for (let i = 0; i < text.length; i += step) events.push(...decoder.feed(text.slice(i, i + step)));
    events.push(...decoder.end());
    assert.deepEqual(events, [
      { event: 'stdout', data: '{"data":"a"}' },
      { event: 'exit', data: '1\n2' },
      { event: 'message', data: 'plain' },
      { event: 'x', data: '' },
    ], `chunks of ${step}`);
  }
});

test('errors: class by status, fields from the body', () => {
  const body = { error: 'Container not found', detail: 'no container with id x', timestamp: 't', code: 'container_not_found' };
  const err = errorFromBody(404, body);
  assert.ok(err instanceof NotFoundError && err instanceof APIError && err instanceof RepoboxError && err instanceof Error);
  assert.equal(err.name, 'NotFoundError');
  assert.equal(err.status, 404);
  assert.equal(err.code, 'container_not_found');
  assert.equal(err.detail, 'no container with id x');
  assert.equal(err.message, 'HTTP 404: Container not found: no container with id x');
  assert.ok(errorFromBody(400, {}) instanceof ValidationError);
  assert.ok(errorFromBody(401, {}) instanceof AuthError);
  assert.ok(errorFromBody(503, {}) instanceof ServiceUnavailableError);
  assert.ok(errorFromBody(500, {}) instanceof ServerError);
  assert.ok(errorFromBody(418, {}).constructor === APIError);
  // an error inside an answer: the class follows its code
  const inner = errorFromBody(undefined, { error: 'Conflict', detail: 'd', code: 'container_not_running' });
  assert.ok(inner instanceof ConflictError);
  assert.equal(inner.status, 409);
  // not JSON: the text is the detail
  assert.equal(errorFromBody(502, undefined, 'bad gateway').detail, 'bad gateway');
});

function fakeFetch(answer) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url: String(url), ...init });
    return answer(url, init);
  };
  return { fetch, calls };
}

test('requests: base URL, bearer key, JSON bodies, query strings, path escaping', async () => {
  const { fetch, calls } = fakeFetch(() => Response.json({ container_id: 'a b', status: 'running' }));
  const client = new Client({ url: 'http://h:1/api/v1/', apiKey: 'k', fetch });
  assert.equal(client.url, 'http://h:1');
  const box = await client.get('a b');
  assert.equal(calls[0].url, 'http://h:1/api/v1/containers/a%20b');
  assert.equal(calls[0].headers.authorization, 'Bearer k');
  assert.equal(calls[0].method, 'GET');
  await box.exec('ls', { timeout_secs: 5, working_directory: undefined });
  assert.equal(calls[1].url, 'http://h:1/api/v1/containers/a%20b/execute');
  assert.equal(calls[1].headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(calls[1].body), { timeout_secs: 5, command: 'ls' });
  await box.listDir('/work space').catch(() => {});
  assert.equal(calls[2].url, 'http://h:1/api/v1/containers/a%20b/browse?path=%2Fwork+space');
  const noKey = new Client({ url: 'http://h:1', fetch });
  await noKey.health();
  assert.equal(calls[3].headers.authorization, undefined);
});

test('errors: an error answer, a transport failure, a client-side timeout', async () => {
  const { fetch } = fakeFetch(() => Response.json(
    { error: 'Container not running', detail: 'it stopped', timestamp: 't', code: 'container_not_running' },
    { status: 409 },
  ));
  await assert.rejects(new Client({ url: 'http://h:1', fetch }).destroy('x'), (err) => {
    assert.ok(err instanceof ConflictError);
    assert.equal(err.code, 'container_not_running');
    assert.equal(err.detail, 'it stopped');
    return true;
  });
  await assert.rejects(new Client({ url: 'http://127.0.0.1:9' }).health(), (err) => {
    assert.ok(err instanceof TransportError);
    assert.equal(err.status, undefined);
    return true;
  });
  const hang = (url, init) => new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(init.signal.reason)));
  const keepAlive = setTimeout(() => {}, 5000); // AbortSignal.timeout's timer does not hold the loop
  await assert.rejects(new Client({ url: 'http://h:1', fetch: hang, timeoutMs: 50 }).health(), TimeoutError);
  clearTimeout(keepAlive);
  const controller = new AbortController();
  const pending = new Client({ url: 'http://h:1', fetch: hang }).health({ signal: controller.signal });
  controller.abort();
  await assert.rejects(pending, (err) => err.name === 'AbortError');
});
