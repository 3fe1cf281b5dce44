// Unit tests of the page's verification code (web/verify.js) against the
// shared vectors from independent implementations. Run: node --test
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as v from '../../web/verify.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const vectors = process.env.STELE_VECTORS || join(repo, '..', 'shared', 'vectors');

// Vectors are mandatory in CI; elsewhere a missing directory is a visible skip.
function haveVectors(t, dir) {
  if (existsSync(dir)) return true;
  if (process.env.CI) assert.fail(`test vectors not found at ${dir} (set STELE_VECTORS)`);
  t.skip(`test vectors not found at ${dir} (set STELE_VECTORS)`);
  return false;
}

function b64OrNull(s) {
  return s == null ? null : Uint8Array.from(Buffer.from(s, 'base64'));
}

test('inclusion proofs: transparency-dev/merkle vectors', (t) => {
  const dir = join(vectors, 'transparency-dev-merkle', 'inclusion');
  if (!haveVectors(t, dir)) return;
  let n = 0;
  const files = readdirSync(dir, { recursive: true }).filter((f) => f.endsWith('.json'));
  for (const f of files) {
    const c = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    const run = () =>
      v.verifyInclusion(
        b64OrNull(c.leafHash) ?? new Uint8Array(0),
        BigInt(c.leafIdx),
        BigInt(c.treeSize),
        (c.proof || []).map(b64OrNull),
        b64OrNull(c.root) ?? new Uint8Array(0),
      );
    if (c.wantErr) assert.throws(run, `${f} must fail`);
    else assert.doesNotThrow(run, `${f} must pass`);
    n++;
  }
  assert.ok(n > 50, `only ${n} vectors`);
});

test('signed notes: C2SP and Go examples', (t) => {
  const dir = join(vectors, 'signed-note');
  if (!haveVectors(t, dir)) return;
  for (const name of ['c2sp-example', 'go-peterneumann']) {
    const key = v.parseVkey(readFileSync(join(dir, `${name}.vkey`), 'utf8'));
    const note = readFileSync(join(dir, `${name}.note`), 'utf8');
    const { text, sigs } = v.parseNote(note);
    assert.equal(sigs[0].keyId, key.keyId);
    assert.ok(text.endsWith('\n'));
    // Not checkpoints, so openCheckpoint's signature check must pass and
    // then fail on the body: that separates the two.
    assert.throws(() => v.openCheckpoint(note, key), /checkpoint|tree size|lines|base64/);
    const tampered = note.replace(text, text.replace('a', 'b'));
    assert.throws(() => v.openCheckpoint(tampered, key), /does not verify/);
  }
  const other = v.parseVkey(readFileSync(join(dir, 'go-enochroot.vkey'), 'utf8'));
  assert.throws(() => v.openCheckpoint(readFileSync(join(dir, 'c2sp-example.note'), 'utf8'), other), /no signature by the trusted key/);
});

test('vkeys: key ID is checked, base64 may contain +', () => {
  // Key material whose base64 holds '+' and '/'.
  const pub = Uint8Array.from({ length: 32 }, (_, i) => (i % 2 ? 0xfb : 0xef));
  const b64 = v.toBase64(v.concat(Uint8Array.of(1), pub));
  assert.ok(b64.includes('+'));
  const key = v.parseVkey(`example.com/log+${v.keyId('example.com/log', pub)}+${b64}`);
  assert.equal(key.name, 'example.com/log');
  assert.deepEqual(key.pub, pub);
  assert.throws(() => v.parseVkey('PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'), /does not match/);
  assert.throws(() => v.parseVkey('nonsense'), /form/);
});

test('checkpoint bodies', () => {
  const cp = v.parseCheckpoint('go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n');
  assert.equal(cp.size, 123456789012n);
  assert.equal(cp.origin, 'go.sum database tree');
  assert.throws(() => v.parseCheckpoint('o\n0123\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n'), /size/);
  assert.throws(() => v.parseCheckpoint('o\n1\nTszz\n'), /root|base64/);
});

test('RFC 6962 hashes', () => {
  assert.equal(v.toHex(v.leafHash(new Uint8Array(0))), '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d');
  const l = v.leafHash(new Uint8Array(0));
  assert.equal(v.nodeHash(l, l).length, 32);
});
