// The types against the server's OpenAPI document: types/openapi.d.ts is what the
// document (the committed snapshot, and the running server's /openapi.json) gives;
// every route the client calls exists there; index.d.ts and test/usage.ts compile.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { OUTPUT, SNAPSHOT, generate, loadDocument } from '../scripts/gen-types.mjs';
import { ROUTES } from '../src/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('types/openapi.d.ts is generated from the committed OpenAPI snapshot (no drift)', async () => {
  const committed = await readFile(OUTPUT, 'utf8');
  assert.equal(committed, generate(await loadDocument(SNAPSHOT)), 'run `npm run gen-types` in sdk/typescript');
});

test('the running server serves the same models', { skip: !process.env.REPOBOX_TEST_URL }, async () => {
  const live = await loadDocument(process.env.REPOBOX_TEST_URL);
  assert.equal(generate(live), await readFile(OUTPUT, 'utf8'));
});

test('every route the client calls is in the document, with that method', async () => {
  const doc = await loadDocument(SNAPSHOT);
  for (const [name, route] of Object.entries(ROUTES)) {
    const [method, template] = route.split(' ');
    const item = doc.paths[`/api/v1${template}`];
    assert.ok(item, `${name}: ${template} is not a path of the document`);
    assert.ok(item[method.toLowerCase()], `${name}: ${route} is not an operation of the document`);
  }
});

test('every schema the client names exists, and each model field is declared', async () => {
  const doc = await loadDocument(SNAPSHOT);
  const schemas = doc.components.schemas;
  const index = await readFile(path.join(root, 'index.d.ts'), 'utf8');
  const imported = index.match(/import type \{([^}]*)\} from '\.\/types\/openapi\.js'/)[1]
    .split(',').map((s) => s.trim()).filter(Boolean);
  for (const name of imported) assert.ok(schemas[name], `index.d.ts imports ${name}, which the document lacks`);
  // field names used in the hand-written Pick<>/Omit<> types exist in their schema
  for (const [, model, fields] of index.matchAll(/(?:Pick|Omit)<(\w+), ([^>]+)>/g)) {
    if (!schemas[model]) continue;
    for (const [, field] of fields.matchAll(/'(\w+)'/g)) {
      assert.ok(schemas[model].properties[field], `${model}.${field} named in index.d.ts is not in the document`);
    }
  }
  const generated = await readFile(OUTPUT, 'utf8');
  for (const [name, schema] of Object.entries(schemas)) {
    const block = generated.match(new RegExp(`export (?:interface|type) ${name}\\b[^]*?\\n}`, 'm'))
      ?? generated.match(new RegExp(`export type ${name} = .*;`));
    assert.ok(block, `${name} missing from types/openapi.d.ts`);
    for (const field of Object.keys(schema.properties ?? {})) {
      assert.match(block[0], new RegExp(`\\n  ${field}\\??: `), `${name}.${field} missing`);
    }
  }
});

test('index.d.ts and a program using it type-check (tsc --strict)', async () => {
  const tsc = path.join(root, 'node_modules/.bin/tsc');
  try {
    await promisify(execFile)(tsc, ['-p', path.join(root, 'tsconfig.json')], { cwd: root });
  } catch (err) {
    assert.fail(`tsc failed:\n${err.stdout}${err.stderr}`);
  }
});
