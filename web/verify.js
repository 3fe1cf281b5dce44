// Receipt verification in the browser: RFC 6962 hashing and inclusion
// proofs, C2SP signed-note (Ed25519) and tlog-checkpoint, tlog-proof@v1.
// Pure functions with no DOM and no network, so they also run under Node.
//
// SHA-256/SHA-512 come from @noble/hashes and Ed25519 from @noble/ed25519
// (vendored; pure JS, so this works in any browser and on plain http, where
// WebCrypto is not available).

import { sha256, sha512 } from './vendor/noble-hashes/sha2.js';
import * as ed from './vendor/noble-ed25519/index.js';

ed.hashes.sha512 = sha512;

const enc = new TextEncoder();

export const STEP_PARSE = 'parse';
export const STEP_LEAF_HASH = 'leaf hash';
export const STEP_SIGNATURE = 'checkpoint signature';
export const STEP_INCLUSION = 'inclusion proof';
export const STEP_TLOG_PROOF = 'tlog-proof';
export const RECEIPT_STEPS = [STEP_PARSE, STEP_LEAF_HASH, STEP_SIGNATURE, STEP_INCLUSION, STEP_TLOG_PROOF];

const MAX_TREE_SIZE = 1n << 63n;

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
}

export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export function toHex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export function fromHex(s) {
  if (typeof s !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(s)) throw new Error(`not hex: ${String(s).slice(0, 80)}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toBase64(b) {
  let s = '';
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

/** Standard padded base64, strictly (no whitespace, canonical padding). */
export function fromBase64(s) {
  if (typeof s !== 'string' || s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) {
    throw new Error(`not base64: ${String(s).slice(0, 80)}`);
  }
  const bin = atob(s);
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  if (toBase64(out) !== s) throw new Error('non-canonical base64');
  return out;
}

export function fromBase64Url(s) {
  let t = s.replace(/-/g, '+').replace(/_/g, '/');
  while (t.length % 4) t += '=';
  return fromBase64(t);
}

export function toBase64Url(b) {
  return toBase64(b).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function hash32(b, what) {
  if (b.length !== 32) throw new Error(`${what} is ${b.length} bytes, not 32`);
  return b;
}

export function hashFromHex(s, what = 'hash') {
  return hash32(fromHex(s), what);
}

/** SHA-256(0x00 || leaf). */
export function leafHash(leaf) {
  return sha256(concat(Uint8Array.of(0), leaf));
}

/** SHA-256(0x01 || left || right). */
export function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

/** The root an inclusion proof implies (RFC 9162 §2.1.3.2). Throws when the proof cannot fit. */
export function rootFromInclusionProof(leaf, index, size, proof) {
  index = BigInt(index);
  size = BigInt(size);
  if (size >= MAX_TREE_SIZE || index < 0n) throw new Error('index or size out of range');
  if (index >= size) throw new Error(`index ${index} is not below the tree size ${size}`);
  hash32(leaf, 'leaf hash');
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof) {
    hash32(p, 'proof hash');
    if (sn === 0n) throw new Error(`proof has too many hashes (${proof.length})`);
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error(`proof has too few hashes (${proof.length})`);
  return r;
}

export function verifyInclusion(leaf, index, size, proof, root) {
  const got = rootFromInclusionProof(leaf, index, size, proof);
  if (!bytesEqual(got, hash32(root, 'root'))) {
    throw new Error(`the proof leads to root ${toBase64(got)}, not the checkpoint's ${toBase64(root)}`);
  }
}

/** Parses a note verifier key: `<name>+<8 hex key id>+<base64(0x01 || pubkey)>`. */
export function parseVkey(vkey) {
  const s = vkey.trim();
  // name+keyid+base64, where the base64 itself may contain '+'.
  const i = s.indexOf('+');
  const j = i < 0 ? -1 : s.indexOf('+', i + 1);
  if (j < 0) throw new Error('a verifier key has the form name+keyid+base64');
  const [name, idHex, b64] = [s.slice(0, i), s.slice(i + 1, j), s.slice(j + 1)];
  if (!name || /[\s+]/.test(name)) throw new Error('bad key name');
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw new Error('key id must be 8 lowercase hex digits');
  const raw = fromBase64(b64);
  if (raw.length !== 33 || raw[0] !== 1) throw new Error('not an Ed25519 key (expected 0x01 followed by 32 bytes)');
  const pub = raw.slice(1);
  const id = keyId(name, pub);
  if (id !== idHex) throw new Error(`key id ${idHex} does not match the key (it is ${id})`);
  return { name, keyId: id, pub, vkey: s };
}

/** C2SP signed-note key ID: first 4 bytes of SHA-256(name || 0x0A || 0x01 || pubkey), as hex. */
export function keyId(name, pub) {
  return toHex(sha256(concat(enc.encode(name), Uint8Array.of(0x0a, 0x01), pub)).slice(0, 4));
}

/** Splits a signed note into its text and signature lines. */
export function parseNote(note) {
  if (typeof note !== 'string' || !note.endsWith('\n')) throw new Error('a note ends with a newline');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new Error('a note has a blank line before its signatures');
  const text = note.slice(0, split + 1);
  const sigs = [];
  for (const line of note.slice(split + 2, -1).split('\n')) {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(line);
    if (!m) throw new Error(`malformed signature line: ${line.slice(0, 80)}`);
    const raw = fromBase64(m[2]);
    if (raw.length < 5) throw new Error('signature too short');
    sigs.push({ name: m[1], keyId: toHex(raw.slice(0, 4)), sig: raw.slice(4) });
  }
  if (sigs.length === 0) throw new Error('the note has no signatures');
  return { text, sigs };
}

/** Parses a tlog-checkpoint body. */
export function parseCheckpoint(text) {
  const lines = text.split('\n');
  if (lines.length < 4 || lines[lines.length - 1] !== '') throw new Error('a checkpoint has at least three lines');
  const [origin, sizeStr, rootStr] = lines;
  if (!origin) throw new Error('empty origin');
  if (!/^(0|[1-9][0-9]*)$/.test(sizeStr)) throw new Error(`bad tree size ${sizeStr}`);
  const size = BigInt(sizeStr);
  if (size >= MAX_TREE_SIZE) throw new Error('tree size too large');
  const root = hash32(fromBase64(rootStr), 'root');
  return { origin, size, root, extensions: lines.slice(3, -1) };
}

/**
 * Opens a checkpoint note with a trusted key: a signature by that key
 * (name and key ID) must be present and valid, and the origin must be the
 * key's name. Returns the checkpoint.
 */
export function openCheckpoint(note, key) {
  const { text, sigs } = parseNote(note);
  const mine = sigs.filter((s) => s.name === key.name && s.keyId === key.keyId);
  if (mine.length === 0) {
    const others = sigs.map((s) => `${s.name}+${s.keyId}`).join(', ');
    throw new Error(`no signature by the trusted key ${key.name}+${key.keyId} (signed by ${others})`);
  }
  const msg = enc.encode(text);
  for (const s of mine) {
    let ok = false;
    try {
      ok = s.sig.length === 64 && ed.verify(s.sig, msg, key.pub, { zip215: false });
    } catch {
      ok = false;
    }
    if (!ok) throw new Error(`the signature by ${key.name}+${key.keyId} does not verify`);
  }
  const cp = parseCheckpoint(text);
  if (cp.origin !== key.name) throw new Error(`checkpoint origin ${cp.origin} is not the key's name ${key.name}`);
  return cp;
}

/** Parses C2SP tlog-proof@v1 text. */
export function parseTlogProof(text) {
  const split = text.indexOf('\n\n');
  if (split < 0) throw new Error('no blank line before the checkpoint');
  const lines = text.slice(0, split).split('\n');
  if (lines[0] !== 'c2sp.org/tlog-proof@v1') throw new Error('not a c2sp.org/tlog-proof@v1');
  let i = 1;
  let extra = null;
  if (lines[i] && lines[i].startsWith('extra ')) {
    extra = fromBase64(lines[i].slice(6));
    i++;
  }
  const m = /^index (0|[1-9][0-9]*)$/.exec(lines[i] || '');
  if (!m) throw new Error('missing index line');
  i++;
  const proof = lines.slice(i).map((l) => hash32(fromBase64(l), 'proof hash'));
  return { extra, index: BigInt(m[1]), proof, checkpoint: text.slice(split + 2) };
}

/**
 * Verifies a receipt object step by step. Returns
 * `{ ok, steps: [{ step, ok, detail }], failed, checkpoint }`; checking
 * stops at the first failed step, the rest are reported as not checked.
 */
export function verifyReceipt(receipt, key) {
  const steps = [];
  const result = { ok: false, steps, failed: null, checkpoint: null };
  const pass = (step, detail) => steps.push({ step, ok: true, detail });
  const fail = (step, detail) => {
    steps.push({ step, ok: false, detail });
    result.failed = { step, detail };
    for (const s of RECEIPT_STEPS.slice(RECEIPT_STEPS.indexOf(step) + 1)) steps.push({ step: s, ok: null, detail: 'not checked' });
    return result;
  };

  let leaf, claimed, proof, index;
  try {
    if (typeof receipt !== 'object' || receipt === null) throw new Error('not a JSON object');
    for (const f of ['log', 'leaf', 'leaf_hash', 'checkpoint', 'tlog_proof']) {
      if (typeof receipt[f] !== 'string') throw new Error(`field ${f} is missing or not a string`);
    }
    if (!Number.isSafeInteger(receipt.index) || receipt.index < 0) throw new Error('field index is not a non-negative integer');
    if (!Array.isArray(receipt.inclusion_proof)) throw new Error('field inclusion_proof is not an array');
    index = BigInt(receipt.index);
    leaf = enc.encode(receipt.leaf);
    claimed = hashFromHex(receipt.leaf_hash, 'leaf_hash');
    proof = receipt.inclusion_proof.map((h, i) => hashFromHex(h, `inclusion_proof[${i}]`));
  } catch (e) {
    return fail(STEP_PARSE, e.message);
  }
  pass(STEP_PARSE, `receipt for entry ${index} of ${receipt.log}, ${proof.length} proof hashes`);

  const lh = leafHash(leaf);
  if (!bytesEqual(lh, claimed)) {
    return fail(STEP_LEAF_HASH, `SHA-256(0x00 || leaf) is ${toHex(lh)}, but the receipt says ${toHex(claimed)}`);
  }
  pass(STEP_LEAF_HASH, `SHA-256(0x00 || leaf) = ${toHex(lh)}`);

  let cp;
  try {
    cp = openCheckpoint(receipt.checkpoint, key);
    if (cp.origin !== receipt.log) throw new Error(`checkpoint origin ${cp.origin} but the receipt names log ${receipt.log}`);
  } catch (e) {
    return fail(STEP_SIGNATURE, e.message);
  }
  result.checkpoint = cp;
  pass(STEP_SIGNATURE, `signed by ${key.name} (key ID ${key.keyId}); tree size ${cp.size}, root ${toBase64(cp.root)}`);

  try {
    verifyInclusion(lh, index, cp.size, proof, cp.root);
  } catch (e) {
    return fail(STEP_INCLUSION, `entry ${index} in a tree of ${cp.size}: ${e.message}`);
  }
  pass(STEP_INCLUSION, `${proof.length} hashes lead from entry ${index} to the root of the tree of ${cp.size}`);

  try {
    const t = parseTlogProof(receipt.tlog_proof);
    if (t.index !== index) throw new Error(`it says index ${t.index}, the receipt says ${index}`);
    if (t.proof.length !== proof.length || !t.proof.every((h, i) => bytesEqual(h, proof[i]))) {
      throw new Error('its proof hashes differ from inclusion_proof');
    }
    if (t.checkpoint !== receipt.checkpoint) throw new Error("its checkpoint differs from the receipt's");
  } catch (e) {
    return fail(STEP_TLOG_PROOF, e.message);
  }
  pass(STEP_TLOG_PROOF, 'says the same as the JSON fields');
  result.ok = true;
  return result;
}
