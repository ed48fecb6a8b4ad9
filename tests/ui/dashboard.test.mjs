// The dashboard in a real headless browser against real repobox servers, started by
// scripts/ui-test.sh (which passes their URLs in the environment). Run that script,
// not this file: `bash scripts/ui-test.sh`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run bash scripts/ui-test.sh`);
  return value;
};
const URL_ = env('UI_URL');
const KEYED_URL = env('UI_KEYED_URL');
const KEY = env('UI_KEY');
const REPO = env('UI_REPO_URL');
const SHOTS = env('UI_SCREENSHOTS');
const { chromium } = createRequire(join(env('UI_MODULES'), 'x.js'))('playwright-core');

mkdirSync(SHOTS, { recursive: true });

let browser;
let context;
let page;
const problems = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: env('UI_CHROMIUM'),
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(30_000);
  page = await context.newPage();
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // The browser logs every 4xx answer; those the tests provoke are not script errors.
    if (message.type() === 'error' && !/Failed to load resource: .* status of 4\d\d/.test(message.text())) problems.push(`console: ${message.text()}`);
  });
});

after(async () => {
  await browser?.close();
});

/** Runs a step; on failure, a screenshot of the page as it was. */
function step(name, body) {
  test(name, async () => {
    try {
      await body();
    } catch (error) {
      const file = join(SHOTS, `${name.replace(/[^a-z0-9]+/gi, '-')}-failure.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      error.message += `\n(screenshot: ${file})`;
      throw error;
    }
  });
}

async function call(method, path, body, base = URL_) {
  const response = await fetch(base + path, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

let sandboxId;

step('the root redirects to the dashboard, which lists sandboxes', async () => {
  await page.goto(`${URL_}/`);
  assert.match(page.url(), /\/ui\/(#\/sandboxes)?$/);
  await page.getByRole('heading', { name: 'Sandboxes', level: 1 }).waitFor();
  await page.getByText('No sandboxes yet').waitFor();
});

step('a create that fails shows the server\'s detail', async () => {
  const refused = await call('POST', '/api/v1/containers', { repo_url: REPO, branch: 'no-such-branch' });
  assert.equal(refused.status, 422);
  await page.getByLabel('Repository URL').fill(REPO);
  await page.getByLabel('Branch').fill('no-such-branch');
  await page.getByRole('button', { name: 'Create sandbox' }).click();
  // The detail names the branch and carries git's message, which differs per run only in paths.
  await page.locator('form.create .error', { hasText: 'no-such-branch' }).waitFor();
  const shown = await page.locator('form.create .error').textContent();
  assert.equal(shown.split(':')[0], refused.body.detail.split(':')[0]);
});

step('a sandbox created from the form is listed as running', async () => {
  await page.getByLabel('Repository URL').fill(REPO);
  await page.getByLabel('Lifetime (minutes)').fill('30');
  // Enter in a field submits the form.
  await page.getByLabel('Branch').fill('trunk');
  await page.getByLabel('Branch').press('Enter');
  const row = page.locator('table.sandboxes tbody tr', { hasText: REPO });
  await row.locator('.badge', { hasText: 'running' }).waitFor({ timeout: 60_000 });
  sandboxId = (await row.locator('a').first().textContent()).trim();
  assert.match(sandboxId, /\S+/);
  await row.getByText('trunk').waitFor();
  assert.match(await row.locator('td.expiry').textContent(), /^in (29|30):\d\d$/);
});

step('the sandbox page opens with its terminal, where echo hello prints hello', async () => {
  await page.getByRole('link', { name: sandboxId }).click();
  await page.getByRole('heading', { name: sandboxId, level: 1 }).waitFor();
  await page.getByText('connected', { exact: true }).waitFor();
  await page.locator('.term-screen').click();
  // The quotes keep the echoed command line from matching: only the output is "hello".
  await page.keyboard.type("echo hel''lo\n");
  await page.waitForFunction(() => {
    const rows = document.querySelector('.xterm-rows');
    return rows && [...rows.children].some((row) => row.textContent.trim() === 'hello');
  });
});

step('the file browser opens a directory and views a text file', async () => {
  const files = page.locator('section.files');
  await files.getByRole('button', { name: 'Open directory src' }).click();
  await files.getByRole('button', { name: 'View file main.py' }).click();
  await files.locator('pre.viewer', { hasText: "print('hello from simple')" }).waitFor();
  await files.getByRole('button', { name: 'Open directory ..' }).click();
  await files.getByRole('button', { name: 'View file binary.bin' }).click();
  await files.getByText('Binary file').waitFor();
  await files.getByRole('button', { name: 'View file README.md' }).click();
  await files.locator('pre.viewer', { hasText: 'A fixture repository.' }).waitFor();
});

step('a file can be uploaded and downloaded', async () => {
  const files = page.locator('section.files');
  await files.getByLabel('Upload to this directory').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('uploaded from the browser\n') });
  await files.getByRole('button', { name: 'Upload', exact: true }).click();
  await files.getByRole('button', { name: 'View file notes.txt' }).click();
  await files.locator('pre.viewer', { hasText: 'uploaded from the browser' }).waitFor();
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    files.getByRole('button', { name: 'Download notes.txt' }).click(),
  ]);
  assert.equal(download.suggestedFilename(), 'notes.txt');
});

step('the command box streams a command\'s output and its exit', async () => {
  const box = page.locator('section.cmd');
  await box.getByLabel('Command (in /workspace)').fill('echo out-$((6*7)); echo err-line >&2; git branch --show-current; exit 3');
  await box.getByLabel('Command (in /workspace)').press('Enter');
  await box.getByText('exit 3 in').waitFor();
  const output = await box.locator('pre.output').textContent();
  assert.match(output, /out-42/);
  assert.match(output, /trunk/);
  assert.equal(await box.locator('pre.output .stderr').first().textContent(), 'err-line\n');
});

step('a background process is listed with its output', async () => {
  const procs = page.locator('section.procs');
  await procs.getByLabel('Background process', { exact: true }).fill('for i in 1 2 3; do echo tick-$i; sleep 0.2; done');
  await procs.getByRole('button', { name: 'Start' }).click();
  await procs.locator('pre.output', { hasText: 'tick-3' }).waitFor();
  await procs.locator('tbody tr .badge', { hasText: 'exited' }).waitFor();
  await page.evaluate(() => {
    document.getElementById('notice').hidden = true;
    window.scrollTo(0, 0);
  });
  await page.screenshot({ path: join(SHOTS, 'sandbox.png'), fullPage: true });
});

step('a port a server listens on is listed, and its link opens the page in a tab of its own', async () => {
  const procs = page.locator('section.procs');
  await procs.getByLabel('Background process', { exact: true }).fill(
    "mkdir -p /tmp/site && echo '<h1>served from port 3000</h1>' > /tmp/site/index.html && cd /tmp/site && exec python3 -m http.server 3000",
  );
  await procs.getByRole('button', { name: 'Start' }).click();
  const ports = page.locator('section.ports');
  const link = ports.getByRole('link', { name: 'Open port 3000' });
  await link.waitFor();
  await ports.locator('tbody tr', { hasText: 'http.server 3000' }).waitFor();
  assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
  assert.equal(await link.getAttribute('target'), '_blank');
  const [opened] = await Promise.all([context.waitForEvent('page'), link.click()]);
  await opened.getByRole('heading', { name: 'served from port 3000' }).waitFor();
  assert.match(opened.url(), new RegExp(`/api/v1/containers/${sandboxId}/ports/3000/$`));
  // No way back to the dashboard's window, and (the server has no keys) an origin of
  // its own: none of the dashboard's storage, and the API is cross-origin to it.
  assert.equal(await opened.evaluate(() => window.opener), null);
  assert.equal(await opened.evaluate(() => window.origin), 'null');
  assert.equal(
    await opened.evaluate(() => {
      try {
        return `read ${sessionStorage.length}`;
      } catch (e) {
        return e.name;
      }
    }),
    'SecurityError',
  );
  const apiCall = await opened.evaluate(async (id) => {
    try {
      const r = await fetch(`/api/v1/containers/${id}/execute`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ command: 'touch /tmp/pwned' }),
      });
      return `status ${r.status}`;
    } catch (e) {
      return 'blocked';
    }
  }, sandboxId);
  assert.equal(apiCall, 'blocked');
  await opened.close();
});

let snapshotId;

step('a snapshot is taken from the sandbox page', async () => {
  await page.getByRole('button', { name: 'Snapshot', exact: true }).click();
  const taken = page.locator('#notice', { hasText: /Snapshot \S+ taken/ });
  await taken.waitFor({ timeout: 60_000 });
  snapshotId = (await taken.textContent()).match(/Snapshot (\S+) taken/)[1];
});

step('the sandbox is destroyed from its page', async () => {
  await page.getByRole('button', { name: 'Destroy' }).click();
  await page.getByRole('button', { name: 'Confirm destroy' }).click();
  await page.getByRole('heading', { name: 'Sandboxes', level: 1 }).waitFor();
  await page.getByText('No sandboxes yet').waitFor();
  await page.screenshot({ path: join(SHOTS, 'sandboxes.png') });
  assert.equal((await call('GET', `/api/v1/containers/${sandboxId}`)).status, 404);
});

step('the snapshots page starts a sandbox from a snapshot and deletes it', async () => {
  await page.getByRole('link', { name: 'Snapshots' }).click();
  const row = page.locator('table.snapshots tbody tr', { hasText: snapshotId });
  await row.waitFor();
  await row.getByRole('button', { name: `Start a sandbox from ${snapshotId}` }).click();
  await page.getByText('← All sandboxes').waitFor({ timeout: 60_000 });
  const forked = decodeURIComponent(new URL(page.url()).hash.split('/').pop());
  await page.locator('section.files').getByRole('button', { name: 'View file notes.txt' }).click();
  await page.locator('pre.viewer', { hasText: 'uploaded from the browser' }).waitFor();
  await page.getByRole('button', { name: 'Destroy' }).click();
  await page.getByRole('button', { name: 'Confirm destroy' }).click();
  await page.getByText('No sandboxes yet').waitFor();
  assert.equal((await call('GET', `/api/v1/containers/${forked}`)).status, 404);
  await page.getByRole('link', { name: 'Snapshots' }).click();
  await row.getByRole('button', { name: `Delete ${snapshotId}` }).click();
  await row.getByRole('button', { name: 'Confirm delete' }).click();
  await page.locator('#notice', { hasText: snapshotId }).waitFor();
  assert.equal(await page.locator('#notice').textContent(), `Deleted ${snapshotId}`);
  await page.getByText('No snapshots').waitFor();
});

step('the navigation works from the keyboard', async () => {
  await page.getByRole('link', { name: 'Sandboxes' }).focus();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Jobs');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Jobs', level: 1 }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'Jobs' }).getAttribute('aria-current'), 'page');
});

step('a job\'s progress and results show on the jobs page', async () => {
  const submitted = await call('POST', '/api/v1/jobs', {
    command: 'head -1 README.md',
    repos: [{ repo_url: REPO }, { repo_url: REPO, branch: 'feature' }, { repo_url: REPO, branch: 'no-such-branch' }],
  });
  assert.equal(submitted.status, 202, JSON.stringify(submitted.body));
  const id = submitted.body.job_id;
  await page.getByRole('link', { name: 'Jobs' }).click();
  const row = page.locator('table.jobs tbody tr', { hasText: id });
  await row.locator('.badge', { hasText: 'completed' }).waitFor({ timeout: 90_000 });
  await row.getByText('3/3 done: 2 succeeded, 1 errored').waitFor();
  assert.equal(await row.locator('progress').evaluate((bar) => `${bar.value}/${bar.max}`), '3/3');
  await row.getByRole('link', { name: id }).click();
  const results = page.locator('table.results tbody tr');
  await results.nth(2).waitFor();
  assert.equal(await results.count(), 3);
  await page.getByLabel('Status').selectOption('errored');
  assert.equal(await results.count(), 1);
  assert.match(await results.first().textContent(), /no-such-branch/);
  await page.getByLabel('Status').selectOption('succeeded');
  assert.equal(await results.count(), 2);
  await results.first().getByRole('button').click();
  await page.locator('pre.output', { hasText: '# simple' }).waitFor();
  await page.screenshot({ path: join(SHOTS, 'job.png'), fullPage: true });
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download JSON Lines' }).click()]);
  const lines = (await (await import('node:fs/promises')).readFile(await download.path(), 'utf8')).trim().split('\n');
  assert.equal(lines.length, 3);
  assert.equal(JSON.parse(lines[0]).status, 'succeeded');
});

step('the snapshots and health pages show', async () => {
  await page.getByRole('link', { name: 'Snapshots' }).click();
  await page.getByText('No snapshots').waitFor();
  await page.getByRole('link', { name: 'Health' }).click();
  await page.locator('h1 .badge', { hasText: 'healthy' }).waitFor();
  // Figures from /metrics: the sandbox and the job above were counted.
  await page.waitForFunction(() => {
    const figure = [...document.querySelectorAll('dl.figures div')].find((div) => div.textContent.includes('Sandboxes created'));
    return figure && Number(figure.querySelector('dd').textContent) >= 3;
  });
  await page.locator('dl.pairs dt', { hasText: 'max_containers' }).waitFor();
  await page.screenshot({ path: join(SHOTS, 'health.png'), fullPage: true });
});

step('a narrow window keeps the page usable (nothing wider than the window)', async () => {
  await page.setViewportSize({ width: 480, height: 800 });
  await page.getByRole('link', { name: 'Sandboxes' }).click();
  await page.getByLabel('Repository URL').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the window`);
  await page.setViewportSize({ width: 1280, height: 800 });
});

step('with API keys: a wrong key shows the server\'s error, the right one signs in', async () => {
  const expected = (await call('GET', '/api/v1/info', undefined, KEYED_URL)).body.detail;
  assert.ok(expected);
  await page.goto(`${KEYED_URL}/ui/`);
  await page.getByRole('heading', { name: 'API key' }).waitFor();
  await page.getByLabel('Key', { exact: true }).fill('wrong-key');
  await page.getByLabel('Key', { exact: true }).press('Enter');
  await page.locator('#login-error', { hasText: expected }).waitFor();
  await page.screenshot({ path: join(SHOTS, 'login.png') });
  await page.getByLabel('Key', { exact: true }).fill(KEY);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('No sandboxes yet').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('repobox.api-key')), KEY);
  await page.getByRole('link', { name: 'Health' }).click();
  await page.locator('h1 .badge', { hasText: 'healthy' }).waitFor();
});

step('with API keys: a port\'s link trades the key for the port\'s cookie, which loads the page\'s own files', async () => {
  const keyed = (method, path, body) => fetch(KEYED_URL + path, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  }).then(async (response) => ({ status: response.status, body: await response.json().catch(() => null) }));
  const created = await keyed('POST', '/api/v1/containers', { repo_url: REPO });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.container_id;
  try {
    const started = await keyed('POST', `/api/v1/containers/${id}/processes`, {
      command: "mkdir -p /tmp/app && cd /tmp/app && echo '<h1>keyed page</h1><script src=\"app.js\"></script>' > index.html && echo 'document.body.append(Object.assign(document.createElement(\"p\"), {textContent: \"script ran\"}))' > app.js && exec python3 -m http.server 3000",
    });
    assert.equal(started.status, 201, JSON.stringify(started.body));
    await page.goto(`${KEYED_URL}/ui/#/sandboxes/${id}`);
    const link = page.locator('section.ports').getByRole('link', { name: 'Open port 3000' });
    await link.waitFor();
    assert.match(await link.getAttribute('href'), /\?access_token=/);
    const [opened] = await Promise.all([context.waitForEvent('page'), link.click()]);
    await opened.getByRole('heading', { name: 'keyed page' }).waitFor();
    // The script came with the cookie alone; the key is not in the address.
    await opened.getByText('script ran').waitFor();
    assert.doesNotMatch(opened.url(), /access_token/);
    assert.equal(await opened.evaluate(() => document.cookie), '');
    await opened.close();
  } finally {
    await keyed('DELETE', `/api/v1/containers/${id}`);
  }
});

step('the pages raised no script errors', async () => {
  assert.deepEqual(problems, []);
});
