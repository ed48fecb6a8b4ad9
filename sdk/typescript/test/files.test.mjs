import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NotFoundError, ValidationError } from '../src/index.js';
import { BINARY, withBox } from './support.mjs';

/** A ustar archive of `entries` ({name, data} files, {name, dir: true} directories). */
function tar(entries) {
  const blocks = [];
  for (const entry of entries) {
    const data = entry.dir ? new Uint8Array() : new TextEncoder().encode(entry.data);
    const header = new Uint8Array(512);
    const put = (offset, text) => header.set(new TextEncoder().encode(text), offset);
    put(0, entry.name);
    put(100, entry.dir ? '0000755\0' : '0000644\0');
    put(108, '0000000\0');
    put(116, '0000000\0');
    put(124, data.length.toString(8).padStart(11, '0') + '\0');
    put(136, Math.floor(Date.now() / 1000).toString(8).padStart(11, '0') + '\0');
    put(148, '        ');
    header[156] = (entry.dir ? '5' : '0').charCodeAt(0);
    put(257, 'ustar\0');
    put(263, '00');
    const sum = header.reduce((a, b) => a + b, 0);
    put(148, sum.toString(8).padStart(6, '0') + '\0 ');
    blocks.push(header, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  blocks.push(new Uint8Array(1024));
  return Buffer.concat(blocks);
}

/** The names in a tar archive. */
function names(archive) {
  const out = [];
  for (let offset = 0; offset + 512 <= archive.length;) {
    const header = archive.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const name = new TextDecoder().decode(header.subarray(0, 100)).replace(/\0.*$/s, '');
    const size = parseInt(new TextDecoder().decode(header.subarray(124, 136)).replace(/\0.*$/s, '').trim() || '0', 8);
    if (String.fromCharCode(header[156]) !== 'x' && String.fromCharCode(header[156]) !== 'g') out.push(name);
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

test('files: text and bytes, written and read back exactly', async () => {
  await withBox(async (box) => {
    assert.equal(await box.readText('/workspace/README.md'), '# simple\n\nA fixture repository.\n');
    assert.deepEqual(await box.readBytes('/workspace/binary.bin'), BINARY);
    const item = await box.writeFile('/workspace/new/dir/hello.txt', 'héllo\n');
    assert.equal(item.name, 'hello.txt');
    assert.equal(item.type, 'file');
    assert.equal(item.size, 7);
    assert.equal((await box.exec('cat new/dir/hello.txt')).stdout, 'héllo\n');
    const bytes = new Uint8Array(70_000).map((_, i) => (i * 7) % 256);
    await box.writeFile('/workspace/blob.bin', bytes);
    assert.deepEqual(await box.readBytes('/workspace/blob.bin'), bytes);
    await box.writeFile('/workspace/blob2.bin', new Blob([bytes]));
    assert.equal((await box.exec('cmp blob.bin blob2.bin && echo same')).stdout, 'same\n');
  });
});

test('files: the JSON reader says whether it is binary; listDir', async () => {
  await withBox(async (box) => {
    const text = await box.readFile('/workspace/README.md');
    assert.equal(text.encoding, 'utf-8');
    assert.equal(text.is_binary, false);
    assert.equal(text.content, '# simple\n\nA fixture repository.\n');
    const binary = await box.readFile('/workspace/binary.bin');
    assert.equal(binary.is_binary, true);
    assert.equal(binary.encoding, 'base64');
    assert.deepEqual(new Uint8Array(Buffer.from(binary.content, 'base64')), BINARY);
    const items = await box.listDir('/workspace');
    const byName = Object.fromEntries(items.map((i) => [i.name, i]));
    assert.equal(byName.src.type, 'directory');
    assert.equal(byName['README.md'].type, 'file');
    assert.equal(byName['binary.bin'].size, BINARY.length);
    assert.deepEqual(items.map((i) => i.name), [...items.map((i) => i.name)].sort());
    await assert.rejects(box.readText('/workspace/missing'), NotFoundError);
    await assert.rejects(box.listDir('/workspace/README.md'), ValidationError);
    await assert.rejects(box.readFile('/workspace/missing'), (err) => err instanceof NotFoundError && err.code === 'path_not_found');
  });
});

test('files: tar archives both ways', async () => {
  await withBox(async (box) => {
    const archive = await box.downloadArchive('/workspace/src');
    assert.ok(names(archive).some((n) => n.replace(/^\.?\//, '') === 'src/main.py'), names(archive).join(','));
    await box.uploadArchive('/workspace', tar([
      { name: 'up/', dir: true },
      { name: 'up/a/', dir: true },
      { name: 'up/a/one.txt', data: 'one\n' },
      { name: 'up/two.txt', data: 'two\n' },
    ]));
    assert.equal((await box.exec('cat up/a/one.txt up/two.txt')).stdout, 'one\ntwo\n');
    // the downloaded tar, unpacked elsewhere, gives the same file
    await box.uploadArchive('/tmp', archive);
    assert.equal((await box.exec('cmp /tmp/src/main.py src/main.py && echo same')).stdout, 'same\n');
  });
});
