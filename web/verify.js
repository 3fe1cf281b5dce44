// Receipt verification in the browser: RFC 6962 hashing and inclusion
// proofs, C2SP signed-note (Ed25519) and tlog-checkpoint, tlog-proof@v1.
// Pure functions with no DOM and no network, so they also run under Node.
//
// SHA-256/SHA-512 come from @noble/hashes and Ed25519 from @noble/ed25519
// (vendored; pure JS, so this works in any browser and on plain http, where
// WebCrypto is not available).

//
// Every failure is a VerifyError carrying a catalogue key and its
// parameters, so the page can say it in the reader's language; its message
// (and each step's `detail`) is the English text, for Node and for logs.

import { sha256, sha512 } from './vendor/noble-hashes/sha2.js';
import * as ed from './vendor/noble-ed25519/index.js';
import en from './i18n/en.js';

ed.hashes.sha512 = sha512;

/**
 * Fills `{name}` placeholders of `template` from `params`. A parameter may
 * itself be a message `{ key, params }`, rendered with `lookup`.
 */
export function format(template, params = {}, lookup = (k) => en[k]) {
  return template.replace(/\{(\w+)\}/g, (m, name) => {
    if (!(name in params)) return m;
    const p = params[name];
    if (p && typeof p === 'object' && typeof p.key === 'string') return format(lookup(p.key) ?? p.key, p.params, lookup);
    return String(p);
  });
}

/** A message: a catalogue key and its parameters. */
export function msg(key, params = {}) {
  return { key, params };
}

/** A failed check, with the message that says why. */
export class VerifyError extends Error {
  constructor(key, params = {}) {
    super(format(en[key] ?? key, params));
    this.name = 'VerifyError';
    this.msg = msg(key, params);
  }
}

/** The message of any error: a VerifyError's own, else its text as is. */
export function messageOf(e) {
  return e instanceof VerifyError ? e.msg : msg('v.other', { reason: String((e && e.message) || e) });
}

export function fail(key, params) {
  throw new VerifyError(key, params);
}

const enc = new TextEncoder();

export const STEP_PARSE = 'parse';
export const STEP_LEAF_HASH = 'leaf hash';
export const STEP_SIGNATURE = 'checkpoint signature';
export const STEP_INCLUSION = 'inclusion proof';
export const STEP_TLOG_PROOF = 'tlog-proof';
/** Checked only when a witness policy is given (policy.js). */
export const STEP_QUORUM = 'witness quorum';
export const RECEIPT_STEPS = [STEP_PARSE, STEP_LEAF_HASH, STEP_SIGNATURE, STEP_INCLUSION, STEP_TLOG_PROOF];

const MAX_TREE_SIZE = 1n << 63n;

/** The first line of every C2SP tlog-proof@v1. */
export const TLOG_PROOF_HEADER = 'c2sp.org/tlog-proof@v1';

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
  if (typeof s !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(s)) fail('v.notHex', { value: String(s).slice(0, 80) });
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
    fail('v.notBase64', { value: String(s).slice(0, 80) });
  }
  const bin = atob(s);
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  if (toBase64(out) !== s) fail('v.nonCanonicalBase64');
  return out;
}

export function fromBase64Url(s) {
  if (typeof s !== 'string' || !/^[A-Za-z0-9_-]*$/.test(s)) fail('v.notBase64', { value: String(s).slice(0, 80) });
  let t = s.replace(/-/g, '+').replace(/_/g, '/');
  while (t.length % 4) t += '=';
  return fromBase64(t);
}

export function toBase64Url(b) {
  return toBase64(b).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function hash32(b, what) {
  if (b.length !== 32) fail('v.hashLength', { what, n: b.length });
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
  if (size >= MAX_TREE_SIZE || index < 0n) fail('v.outOfRange');
  if (index >= size) fail('v.indexNotBelowSize', { index, size });
  hash32(leaf, 'leaf_hash');
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof) {
    hash32(p, 'inclusion_proof');
    if (sn === 0n) fail('v.proofTooLong', { n: proof.length });
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
  if (sn !== 0n) fail('v.proofTooShort', { n: proof.length });
  return r;
}

export function verifyInclusion(leaf, index, size, proof, root) {
  const got = rootFromInclusionProof(leaf, index, size, proof);
  if (!bytesEqual(got, hash32(root, 'root'))) {
    fail('v.rootMismatch', { got: toBase64(got), want: toBase64(root) });
  }
}

/** Parses a note verifier key: `<name>+<8 hex key id>+<base64(0x01 || pubkey)>`. */
export function parseVkey(vkey) {
  return parseTypedVkey(vkey, 0x01, () => fail('v.vkeyNotEd25519'));
}

/**
 * Parses `<name>+<8 hex key id>+<base64(type || 32-byte Ed25519 key)>` for
 * the signature type `type` (0x01 for notes, 0x04 for cosignatures);
 * `wrongType(raw)` throws for any other.
 */
export function parseTypedVkey(vkey, type, wrongType) {
  const s = vkey.trim();
  // name+keyid+base64, where the base64 itself may contain '+'.
  const i = s.indexOf('+');
  const j = i < 0 ? -1 : s.indexOf('+', i + 1);
  if (j < 0) fail('v.vkeyForm');
  const [name, idHex, b64] = [s.slice(0, i), s.slice(i + 1, j), s.slice(j + 1)];
  if (!name || /[\s+]/.test(name)) fail('v.vkeyName');
  if (!/^[0-9a-f]{8}$/.test(idHex)) fail('v.vkeyId');
  const raw = fromBase64(b64);
  if (raw.length !== 33 || raw[0] !== type) wrongType(raw);
  const pub = raw.slice(1);
  const id = keyId(name, pub, type);
  if (id !== idHex) fail('v.vkeyIdMismatch', { claimed: idHex, actual: id });
  return { name, keyId: id, pub, vkey: s };
}

/** C2SP signed-note key ID: first 4 bytes of SHA-256(name || 0x0A || type || pubkey), as hex (type 0x01: Ed25519 notes). */
export function keyId(name, pub, type = 0x01) {
  return toHex(sha256(concat(enc.encode(name), Uint8Array.of(0x0a, type), pub)).slice(0, 4));
}

/** Splits a signed note into its text and signature lines. */
export function parseNote(note) {
  if (typeof note !== 'string' || !note.endsWith('\n')) fail('v.noteNewline');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) fail('v.noteBlank');
  const text = note.slice(0, split + 1);
  const sigs = [];
  for (const line of note.slice(split + 2, -1).split('\n')) {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(line);
    if (!m) fail('v.noteSigLine', { line: line.slice(0, 80) });
    const raw = fromBase64(m[2]);
    if (raw.length < 5) fail('v.noteSigShort');
    sigs.push({ name: m[1], keyId: toHex(raw.slice(0, 4)), sig: raw.slice(4), raw });
  }
  if (sigs.length === 0) fail('v.noteNoSigs');
  return { text, sigs };
}

/** Parses a tlog-checkpoint body. */
export function parseCheckpoint(text) {
  const lines = text.split('\n');
  if (lines.length < 4 || lines[lines.length - 1] !== '') fail('v.cpLines');
  const [origin, sizeStr, rootStr] = lines;
  if (!origin) fail('v.cpOrigin');
  if (!/^(0|[1-9][0-9]*)$/.test(sizeStr)) fail('v.cpSize', { size: sizeStr.slice(0, 40) });
  const size = BigInt(sizeStr);
  if (size >= MAX_TREE_SIZE) fail('v.cpSizeLarge');
  const root = hash32(fromBase64(rootStr), 'root');
  const extensions = lines.slice(3, -1);
  if (extensions.includes('')) fail('v.cpExtension');
  return { origin, size, root, extensions };
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
    fail('v.noTrustedSig', { key: `${key.name}+${key.keyId}`, others });
  }
  const msg = enc.encode(text);
  for (const s of mine) {
    let ok = false;
    try {
      ok = s.sig.length === 64 && ed.verify(s.sig, msg, key.pub, { zip215: false });
    } catch {
      ok = false;
    }
    if (!ok) fail('v.badSig', { key: `${key.name}+${key.keyId}` });
  }
  const cp = parseCheckpoint(text);
  if (cp.origin !== key.name) fail('v.cpOriginKey', { origin: cp.origin, name: key.name });
  return cp;
}

/** Parses C2SP tlog-proof@v1 text. */
export function parseTlogProof(text) {
  const split = text.indexOf('\n\n');
  if (split < 0) fail('v.tpBlank');
  const lines = text.slice(0, split).split('\n');
  if (lines[0] !== TLOG_PROOF_HEADER) fail('v.tpHeader');
  let i = 1;
  let extra = null;
  if (lines[i] && lines[i].startsWith('extra ')) {
    extra = fromBase64(lines[i].slice(6));
    i++;
  }
  const m = /^index (0|[1-9][0-9]*)$/.exec(lines[i] || '');
  if (!m) fail('v.tpIndex');
  i++;
  const proof = lines.slice(i).map((l) => hash32(fromBase64(l), 'inclusion_proof'));
  return { extra, index: BigInt(m[1]), proof, checkpoint: text.slice(split + 2) };
}

/** Builds C2SP tlog-proof@v1 text (no `extra` line): the one writer of the format in this page. */
export function tlogProofText(index, proof, checkpoint) {
  return [TLOG_PROOF_HEADER, `index ${index}`, ...proof.map(toBase64), '', ''].join('\n') + checkpoint;
}

/**
 * Verifies a receipt object step by step. Returns
 * `{ ok, steps: [{ step, ok, detail, msg }], failed, checkpoint }`; checking
 * stops at the first failed step, the rest are reported as not checked.
 * `detail` is English; `msg` is the same as a catalogue key and parameters.
 *
 * A receipt rebuilt from a QR code or a short link (links.js) lists in its
 * non-enumerable `derived` property the fields it did not carry but were
 * computed from the others (`leaf_hash`, `tlog_proof`); their steps then
 * say so instead of claiming an agreement that cannot fail.
 */
export function verifyReceipt(receipt, key) {
  const steps = [];
  const result = { ok: false, steps, failed: null, checkpoint: null };
  const derived = (receipt && Array.isArray(receipt.derived) && receipt.derived) || [];
  const add = (step, ok, m) => {
    const s = { step, ok, detail: format(en[m.key] ?? m.key, m.params), msg: m };
    steps.push(s);
    return s;
  };
  const pass = (step, m) => add(step, true, m);
  const failStep = (step, m) => {
    result.failed = add(step, false, m);
    for (const s of RECEIPT_STEPS.slice(RECEIPT_STEPS.indexOf(step) + 1)) add(s, null, msg('v.notChecked'));
    return result;
  };

  let leaf, claimed, proof, index;
  try {
    if (typeof receipt !== 'object' || receipt === null || Array.isArray(receipt)) fail('v.notObject');
    for (const f of ['log', 'leaf', 'leaf_hash', 'checkpoint', 'tlog_proof']) {
      if (typeof receipt[f] !== 'string') fail('v.fieldString', { field: f });
    }
    if (!Number.isSafeInteger(receipt.index) || receipt.index < 0) fail('v.fieldIndex');
    if (!Array.isArray(receipt.inclusion_proof)) fail('v.fieldProof');
    index = BigInt(receipt.index);
    leaf = enc.encode(receipt.leaf);
    claimed = hashFromHex(receipt.leaf_hash, 'leaf_hash');
    proof = receipt.inclusion_proof.map((h, i) => hashFromHex(h, `inclusion_proof[${i}]`));
  } catch (e) {
    return failStep(STEP_PARSE, messageOf(e));
  }
  pass(STEP_PARSE, msg('v.parsed', { index, log: receipt.log, n: proof.length }));

  const lh = leafHash(leaf);
  if (!bytesEqual(lh, claimed)) {
    return failStep(STEP_LEAF_HASH, msg('v.leafMismatch', { got: toHex(lh), claimed: toHex(claimed) }));
  }
  pass(STEP_LEAF_HASH, msg(derived.includes('leaf_hash') ? 'v.leafDerived' : 'v.leafOk', { hash: toHex(lh) }));

  let cp;
  try {
    cp = openCheckpoint(receipt.checkpoint, key);
    if (cp.origin !== receipt.log) fail('v.receiptOrigin', { origin: cp.origin, log: receipt.log });
  } catch (e) {
    return failStep(STEP_SIGNATURE, messageOf(e));
  }
  result.checkpoint = cp;
  pass(STEP_SIGNATURE, msg('v.sigOk', { name: key.name, keyId: key.keyId, size: cp.size, root: toBase64(cp.root) }));

  try {
    verifyInclusion(lh, index, cp.size, proof, cp.root);
  } catch (e) {
    return failStep(STEP_INCLUSION, msg('v.inclusionFailed', { index, size: cp.size, reason: messageOf(e) }));
  }
  pass(STEP_INCLUSION, msg('v.inclusionOk', { n: proof.length, index, size: cp.size }));

  try {
    const t = parseTlogProof(receipt.tlog_proof);
    if (t.index !== index) fail('v.tpIndexDiffers', { a: t.index, b: index });
    if (t.proof.length !== proof.length || !t.proof.every((h, i) => bytesEqual(h, proof[i]))) fail('v.tpProofDiffers');
    if (t.checkpoint !== receipt.checkpoint) fail('v.tpCheckpointDiffers');
  } catch (e) {
    return failStep(STEP_TLOG_PROOF, messageOf(e));
  }
  pass(STEP_TLOG_PROOF, msg(derived.includes('tlog_proof') ? 'v.tpDerived' : 'v.tpOk'));
  result.ok = true;
  return result;
}
