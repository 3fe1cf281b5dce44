// Unit tests of the receipt links (web/links.js) and the explorer's tile
// reading (web/records.js), in Node, on receipts signed here over a real
// RFC 6962 tree.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as v from '../../web/verify.js';
import * as L from '../../web/links.js';
import * as R from '../../web/records.js';
import * as ed from '../../web/vendor/noble-ed25519/index.js';
import { encodeQR } from '../../web/vendor/qr/index.js';

const enc = new TextEncoder();
const ORIGIN = 'records.example.gov/land';

// ---------- a small RFC 6962 tree and a log key, independent of the page's verifier

function mth(hashes) {
  if (hashes.length === 1) return hashes[0];
  let k = 1;
  while (k * 2 < hashes.length) k *= 2;
  return v.nodeHash(mth(hashes.slice(0, k)), mth(hashes.slice(k)));
}

function path(m, hashes) {
  if (hashes.length === 1) return [];
  let k = 1;
  while (k * 2 < hashes.length) k *= 2;
  return m < k ? [...path(m, hashes.slice(0, k)), mth(hashes.slice(k))] : [...path(m - k, hashes.slice(k)), mth(hashes.slice(0, k))];
}

const secret = ed.utils.randomSecretKey();
const pub = ed.getPublicKey(secret);
const KEY = v.parseVkey(`${ORIGIN}+${v.keyId(ORIGIN, pub)}+${v.toBase64(v.concat(Uint8Array.of(1), pub))}`);

function sigLine(name, secretKey, text) {
  const p = ed.getPublicKey(secretKey);
  const id = v.fromHex(v.keyId(name, p));
  return `\u2014 ${name} ${v.toBase64(v.concat(id, ed.sign(enc.encode(text), secretKey)))}\n`;
}

function leafText(i, extra = '') {
  return JSON.stringify({ agency: 'land-registry', subject: `地块 ${i}${extra}`, ts: '2025-03-01T08:00:00.000Z', type: 'land.transfer', v: 1 });
}

/** A receipt for entry `index` of a tree of `size` records, as the log writes it. */
function makeReceipt(index, size, { extensions = [], cosigner = null, leafExtra = '' } = {}) {
  const leaves = Array.from({ length: size }, (_, i) => leafText(i, i === index ? leafExtra : ''));
  const hashes = leaves.map((l) => v.leafHash(enc.encode(l)));
  const root = mth(hashes);
  const proof = path(index, hashes);
  const text = `${ORIGIN}\n${size}\n${v.toBase64(root)}\n${extensions.map((e) => `${e}\n`).join('')}`;
  let note = `${text}\n${sigLine(ORIGIN, secret, text)}`;
  if (cosigner) note += sigLine('witness.example.org', cosigner, text);
  return {
    log: ORIGIN,
    index,
    leaf: leaves[index],
    leaf_hash: v.toHex(hashes[index]),
    inclusion_proof: proof.map(v.toHex),
    checkpoint: note,
    tlog_proof: v.tlogProofText(index, proof, note),
  };
}

test('the compact form gives back the receipt exactly, and it verifies', () => {
  for (const [index, size] of [[0, 1], [5, 13], [12, 13], [700, 1000]]) {
    const r = makeReceipt(index, size);
    assert.ok(v.verifyReceipt(r, KEY).ok, 'the made receipt verifies');
    const back = L.decodeCompact(L.encodeCompact(r));
    assert.deepEqual({ ...back }, r, `entry ${index} of ${size}`);
    const result = v.verifyReceipt(back, KEY);
    assert.ok(result.ok, JSON.stringify(result.failed));
    // The fields the form does not carry are said to be computed, not checked.
    assert.deepEqual(back.derived, ['leaf_hash', 'tlog_proof']);
    assert.equal(result.steps.find((s) => s.step === v.STEP_LEAF_HASH).msg.key, 'v.leafDerived');
    assert.equal(result.steps.find((s) => s.step === v.STEP_TLOG_PROOF).msg.key, 'v.tpDerived');
  }
});

test('extension lines and a second signature survive the compact form', () => {
  const r = makeReceipt(3, 9, { extensions: ['— extension line', 'x'], cosigner: ed.utils.randomSecretKey() });
  const back = L.decodeCompact(L.encodeCompact(r));
  assert.equal(back.checkpoint, r.checkpoint);
  assert.ok(v.verifyReceipt(back, KEY).ok);
});

test('a tampered compact receipt fails at the step that was tampered with', () => {
  const r = makeReceipt(5, 13);
  const bytes = L.encodeCompact(r);
  // The leaf is at the end: change one of its characters.
  const leafTampered = bytes.slice();
  leafTampered[bytes.length - 20] ^= 0x01;
  let res = v.verifyReceipt(L.decodeCompact(leafTampered), KEY);
  assert.equal(res.failed.step, v.STEP_INCLUSION);
  // The root follows the two varints after the version byte.
  const rootTampered = bytes.slice();
  rootTampered[4] ^= 0x80;
  res = v.verifyReceipt(L.decodeCompact(rootTampered), KEY);
  assert.equal(res.failed.step, v.STEP_SIGNATURE);
  assert.match(res.failed.detail, /does not verify/);
  // Cut short, or from a future version: not a receipt at all.
  assert.throws(() => L.decodeCompact(bytes.slice(0, 30)), (e) => e.msg.key === 'v.compactShort');
  const future = bytes.slice();
  future[0] = 2;
  assert.throws(() => L.decodeCompact(future), (e) => e.msg.key === 'v.compactVersion');
  // Trailing zero groups of a varint would give one number two encodings.
  const padded = Uint8Array.from([1, 0x85, 0x00, ...bytes.slice(2)]);
  assert.throws(() => L.decodeCompact(padded), (e) => e.msg.key === 'v.compactBad');
});

test('a note that would not rebuild byte for byte is never packed', () => {
  const r = makeReceipt(1, 2);
  const odd = { ...r, checkpoint: r.checkpoint.replace(/\n\u2014/, '\n\n\u2014') };
  assert.throws(() => L.encodeCompact(odd), (e) => e.msg.key === 'v.cpExtension');
  assert.equal(L.compactLink('https://x.gov/receipt', odd), null);
  const q = L.qrLink('https://x.gov/receipt', 'land', odd);
  assert.equal(q.form, 'short');
  assert.equal(q.compactLength, null);
});

test('the QR link is the whole receipt up to 997 bytes, a short link beyond', () => {
  const page = 'https://records.example.gov/receipt';
  const base = makeReceipt(7, 100);
  const baseLen = L.compactLink(page, base).length;
  // Pad the leaf so the compact link is exactly at the limit, then one step over.
  const pad = (n) => 'x'.repeat(n);
  let atLimit = null;
  // Each character of the leaf adds 4/3 of a character to the link.
  for (let n = Math.floor(((L.QR_MAX_BYTES - baseLen) * 3) / 4) - 4; n < 2000 && !atLimit; n++) {
    const r = makeReceipt(7, 100, { leafExtra: pad(n) });
    const len = L.compactLink(page, r).length;
    if (len === L.QR_MAX_BYTES || len === L.QR_MAX_BYTES - 1) atLimit = { r, n };
  }
  assert.ok(atLimit, `no padding reaches the limit from ${baseLen}`);
  const q = L.qrLink(page, 'land', atLimit.r);
  assert.equal(q.form, 'compact');
  assert.ok(q.link.length <= L.QR_MAX_BYTES);
  // The largest link still fits a version 25 symbol at level M: 117 modules + 2 × 4 quiet.
  const m = encodeQR(q.link, 'raw', { ecc: L.QR_ECC, border: 4 });
  assert.ok(m.length <= 17 + 4 * L.QR_MAX_VERSION + 8, `${m.length} modules`);
  assert.throws(() => encodeQR('a'.repeat(L.QR_MAX_BYTES + 1), 'raw', { ecc: L.QR_ECC, version: L.QR_MAX_VERSION }));

  const over = makeReceipt(7, 100, { leafExtra: pad(atLimit.n + 3) });
  const q2 = L.qrLink(page, 'land', over);
  assert.equal(q2.form, 'short');
  assert.ok(q2.compactLength > L.QR_MAX_BYTES);
  assert.equal(q2.link, `${page}#log=land&index=7&leaf_hash=${over.leaf_hash}`);
});

test('fragments: the three forms, and what is not a receipt', () => {
  const r = makeReceipt(2, 5);
  const json = L.parseFragment(new URL(L.jsonLink('https://x.gov/receipt', r)).hash);
  assert.equal(json.form, 'json');
  assert.deepEqual(json.receipt, r);
  const compact = L.parseFragment(new URL(L.compactLink('https://x.gov/receipt', r)).hash);
  assert.equal(compact.form, 'compact');
  assert.equal(compact.receipt.checkpoint, r.checkpoint);
  const short = L.parseFragment(`#log=land&index=2&leaf_hash=${r.leaf_hash.toUpperCase()}`);
  assert.deepEqual(short, { form: 'short', log: 'land', index: 2, leafHash: r.leaf_hash });
  assert.equal(L.parseFragment('#verify'), null);
  assert.equal(L.parseFragment(''), null);
  for (const bad of ['#log=land&index=2&leaf_hash=abc', '#log=Land&index=2&leaf_hash=' + r.leaf_hash, '#log=land&index=02&leaf_hash=' + r.leaf_hash, '#receipt=not*base64', '#receipt=' + v.toBase64Url(enc.encode('{"a":'))]) {
    assert.throws(() => L.parseFragment(bad), v.VerifyError, bad);
  }
  assert.equal(L.parseScanned(JSON.stringify(r)).form, 'json');
  assert.equal(L.parseScanned(`  ${L.compactLink('https://x.gov/receipt', r)}\n`).form, 'compact');
  assert.throws(() => L.parseScanned('hello'), (e) => e.msg.key === 'v.notReceiptLink');
  assert.throws(() => L.parseScanned('{oops'), (e) => e.msg.key === 'v.notJson');
});

test('a short link and the entry the log serves make a receipt checked against the printed hash', () => {
  const r = makeReceipt(4, 6);
  const proofBody = { inclusion_proof: r.inclusion_proof, checkpoint: r.checkpoint, tree_size: 6 };
  const ok = L.fromShortLink(ORIGIN, { index: 4, leaf: r.leaf }, proofBody, r.leaf_hash);
  assert.ok(v.verifyReceipt(ok, KEY).ok);
  // The server serves another leaf at that index: the printed hash catches it.
  const other = L.fromShortLink(ORIGIN, { index: 4, leaf: leafText(99) }, proofBody, r.leaf_hash);
  assert.equal(v.verifyReceipt(other, KEY).failed.step, v.STEP_LEAF_HASH);
});

test('messages: English from the catalogue, parameters kept apart', () => {
  const e = new v.VerifyError('v.indexNotBelowSize', { index: 5n, size: 3 });
  assert.equal(e.message, 'index 5 is not below the tree size 3');
  assert.deepEqual(e.msg, { key: 'v.indexNotBelowSize', params: { index: 5n, size: 3 } });
  const nested = v.format('{a} / {b}', { a: v.msg('v.proofTooLong', { n: 4 }), b: 'x' });
  assert.equal(nested, 'proof has too many hashes (4) / x');
  assert.equal(v.messageOf(new Error('boom')).params.reason, 'boom');
});

test('tiles: paths, bundles and filters', () => {
  assert.equal(R.tileIndexPath(0), '000');
  assert.equal(R.tileIndexPath(67), '067');
  assert.equal(R.tileIndexPath(1234067), 'x001/x234/067');
  assert.equal(R.bundlePath(0, 1000), 'tile/entries/000');
  assert.equal(R.bundlePath(3, 1000), 'tile/entries/003.p/232');
  assert.equal(R.bundlePath(1, 512), 'tile/entries/001');
  const bundle = Uint8Array.from([0, 2, 0x61, 0x62, 0, 0, 0, 1, 0x63]);
  assert.deepEqual(R.parseBundle(bundle, 3).map((b) => new TextDecoder().decode(b)), ['ab', '', 'c']);
  assert.throws(() => R.parseBundle(bundle, 4), /3 entries, not 4/);
  assert.throws(() => R.parseBundle(bundle.slice(0, 3)), /truncated/);
  const rec = R.parseRecord(leafText(1));
  assert.equal(rec.type, 'land.transfer');
  assert.equal(R.parseRecord('{"v":2}'), null);
  assert.ok(R.matches(rec, { type: 'land.*' }));
  assert.ok(!R.matches(rec, { type: 'land' }));
  assert.ok(!R.matches(rec, { agency: 'hospital' }));
  assert.ok(R.matches(rec, { since: new Date('2025-03-01T08:00:00Z'), until: new Date('2025-03-01T08:00:00Z') }));
  assert.ok(!R.matches(rec, { until: new Date('2025-03-01T07:59:59Z') }));
  assert.ok(!R.matches(null, { agency: 'x' }));
});

test('the explorer source pages newest first and finds the time bound by bisection', async () => {
  // 600 records, 3 bundles; ts one second apart; agencies alternate.
  const t0 = Date.parse('2025-03-01T00:00:00Z');
  const leaves = Array.from({ length: 600 }, (_, i) =>
    JSON.stringify({ agency: i % 2 ? 'b' : 'a', ts: new Date(t0 + i * 1000).toISOString(), type: i % 3 ? 'land.transfer' : 'health.visit', v: 1 }),
  );
  const bundles = [];
  for (let k = 0; k * 256 < leaves.length; k++) {
    const parts = leaves.slice(k * 256, k * 256 + 256).flatMap((l) => {
      const b = enc.encode(l);
      return [b.length >> 8, b.length & 255, ...b];
    });
    bundles.push(Uint8Array.from(parts));
  }
  const asked = [];
  const fetchBytes = async (url) => {
    asked.push(url);
    const m = /tile\/entries\/(\d+)(\.p\/(\d+))?$/.exec(url);
    return bundles[Number(m[1])];
  };
  const src = new R.TileSource('/logs/x', 600, fetchBytes);
  const page1 = await src.query({ agency: 'a', type: 'health.visit' }, { limit: 10 });
  assert.deepEqual(page1.records.map((e) => e.index), [594, 588, 582, 576, 570, 564, 558, 552, 546, 540]);
  const page2 = await src.query({ agency: 'a', type: 'health.visit' }, { before: page1.next, limit: 10 });
  assert.equal(page2.records[0].index, 534);
  assert.ok(asked.includes('/logs/x/tile/entries/002.p/88'));
  // Everything, paged to the end.
  let before;
  const all = [];
  for (;;) {
    const p = await src.query({}, { before, limit: 250 });
    all.push(...p.records.map((e) => e.index));
    if (p.next === null) break;
    before = p.next;
  }
  assert.deepEqual(all, Array.from({ length: 600 }, (_, i) => 599 - i));
  // Until entry 300's time, from entry 290's: bisection, then a short scan.
  const fresh = new R.TileSource('/logs/x', 600, fetchBytes);
  const win = await fresh.query({ since: new Date(t0 + 290_000), until: new Date(t0 + 300_000) }, { limit: 50 });
  assert.deepEqual(win.records.map((e) => e.index), Array.from({ length: 11 }, (_, i) => 300 - i));
  assert.equal(win.next, null);
  assert.ok(fresh.fetched <= 3, `${fresh.fetched} bundles fetched`);
});
