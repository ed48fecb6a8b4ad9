// What the tests share: the servers run-tests.sh started, a fixture URL per test, and
// a sandbox that is always destroyed.
import { randomUUID } from 'node:crypto';
import { Client } from '../src/index.js';

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with sdk/typescript/run-tests.sh`);
  return value;
}

export const URL_ = need('REPOBOX_TEST_URL');
export const STRICT_URL = need('REPOBOX_TEST_STRICT_URL');
export const KEY = need('REPOBOX_TEST_KEY');
export const GIT = need('FIXTURE_GIT');
export const FIRST = need('FIXTURE_FIRST');
export const TRUNK = need('FIXTURE_TRUNK');
export const FEATURE = need('FIXTURE_FEATURE');
/** The bytes of binary.bin in the fixture. */
export const BINARY = new Uint8Array([0, 0o237, 0o222, 0o226, 0o377, 0, 1, 13, 10]);

export const client = new Client({ url: URL_ });
export const strict = new Client({ url: STRICT_URL, apiKey: KEY });

/** The fixture repository under a URL of the test's own (the git server ignores the prefix). */
export function repoUrl() {
  return `${GIT}/t-${randomUUID().slice(0, 8)}/simple.git`;
}

/** Runs `fn` with a fresh sandbox of the fixture, destroyed afterwards. */
export function withBox(fn, options = {}, on = client) {
  return on.withSandbox(repoUrl(), { max_runtime_secs: 600, ...options }, fn);
}

/** Collects an async iterator into an array. */
export async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** Polls `check` until it returns a truthy value (or throws after `ms`). */
export async function eventually(check, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not true within ${ms} ms: ${check}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
