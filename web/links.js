// Links that carry a receipt, all in the URL fragment (the part after `#`,
// which browsers never send to the server):
//
//   #receipt=<base64url(JSON)>   the receipt exactly as the log returned it
//   #r=<base64url(compact)>      the same receipt packed small enough for a QR code
//   #log=<name>&index=<n>&leaf_hash=<64 hex>
//                                a short link, for receipts too large for one QR
//                                code: the page fetches that entry and its proof
//                                from the log and checks the entry against the
//                                printed leaf hash
//
// The compact form (version 1) is binary, then base64url without padding:
//
//   u8      1                       format version
//   uvarint index
//   uvarint tree size
//   32      root hash
//   lp      origin                  (lp: uvarint length, then the bytes)
//   uvarint count, lp each          checkpoint extension lines
//   uvarint count, each: lp name (empty: the origin), lp signature (key ID || signature)
//   uvarint count, 32 bytes each    inclusion proof hashes
//   rest    leaf (UTF-8)
//
// The checkpoint note is rebuilt from these parts byte for byte (it is only
// packed when rebuilding gives back the same note), so its signature still
// verifies; leaf_hash and tlog_proof are computed, not carried. `stele submit
// --print` writes the same bytes (src/cli/receipt_print.rs).
//
// Pure functions with no DOM and no network, so they also run under Node.

import * as v from './verify.js';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** QR codes carry at most a version 25 symbol (117 × 117 modules) at error-correction level M. */
export const QR_ECC = 'medium';
export const QR_MAX_VERSION = 25;
/** Bytes of a byte-mode version 25-M symbol: the longest link one QR code on a receipt carries. */
export const QR_MAX_BYTES = 997;

export const COMPACT_VERSION = 1;

function pushUvarint(out, n) {
  n = BigInt(n);
  if (n < 0n) throw new RangeError('negative');
  do {
    let b = Number(n & 0x7fn);
    n >>= 7n;
    if (n > 0n) b |= 0x80;
    out.push(b);
  } while (n > 0n);
}

function pushBytes(out, b) {
  pushUvarint(out, b.length);
  for (const x of b) out.push(x);
}

/** Splits a signed note into body, extension-free parts and signatures, or null if it would not rebuild exactly. */
function packableNote(note) {
  const { text, sigs } = v.parseNote(note);
  const cp = v.parseCheckpoint(text);
  const rebuilt = rebuildNote(cp.origin, cp.size, cp.root, cp.extensions, sigs.map((s) => ({ name: s.name, sig: s.raw })));
  return rebuilt === note ? { cp, sigs } : null;
}

function rebuildNote(origin, size, root, extensions, sigs) {
  let note = `${origin}\n${size}\n${v.toBase64(root)}\n`;
  for (const e of extensions) note += `${e}\n`;
  note += '\n';
  for (const s of sigs) note += `\u2014 ${s.name} ${v.toBase64(s.sig)}\n`;
  return note;
}

/**
 * Packs a receipt into the compact form; throws a VerifyError if it cannot
 * be packed without loss (a malformed field, or a note that would not
 * rebuild byte for byte).
 */
export function encodeCompact(receipt) {
  const packed = packableNote(receipt.checkpoint);
  if (!packed) throw new v.VerifyError('v.notPackable');
  const { cp, sigs } = packed;
  const out = [COMPACT_VERSION];
  pushUvarint(out, receipt.index);
  pushUvarint(out, cp.size);
  for (const x of cp.root) out.push(x);
  pushBytes(out, enc.encode(cp.origin));
  pushUvarint(out, cp.extensions.length);
  for (const e of cp.extensions) pushBytes(out, enc.encode(e));
  pushUvarint(out, sigs.length);
  for (const s of sigs) {
    pushBytes(out, s.name === cp.origin ? new Uint8Array(0) : enc.encode(s.name));
    pushBytes(out, s.raw);
  }
  pushUvarint(out, receipt.inclusion_proof.length);
  for (const h of receipt.inclusion_proof) for (const x of v.hashFromHex(h, 'inclusion_proof')) out.push(x);
  for (const x of enc.encode(receipt.leaf)) out.push(x);
  return Uint8Array.from(out);
}

class Reader {
  constructor(b) {
    this.b = b;
    this.i = 0;
  }
  byte() {
    if (this.i >= this.b.length) throw new v.VerifyError('v.compactShort');
    return this.b[this.i++];
  }
  uvarint() {
    let n = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (shift > 63n) throw new v.VerifyError('v.compactBad');
      const b = this.byte();
      n |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) {
        // One encoding per number: no trailing zero groups.
        if (b === 0 && shift > 0n) throw new v.VerifyError('v.compactBad');
        return n;
      }
    }
  }
  count(max) {
    const n = this.uvarint();
    if (n > BigInt(max)) throw new v.VerifyError('v.compactBad');
    return Number(n);
  }
  bytes(n) {
    if (this.i + n > this.b.length) throw new v.VerifyError('v.compactShort');
    const out = this.b.slice(this.i, this.i + n);
    this.i += n;
    return out;
  }
  lp() {
    return this.bytes(this.count(this.b.length));
  }
  text() {
    try {
      return dec.decode(this.lp());
    } catch {
      throw new v.VerifyError('v.compactBad');
    }
  }
}

function derive(receipt, fields) {
  Object.defineProperty(receipt, 'derived', { value: fields, enumerable: false });
  return receipt;
}

/** Unpacks the compact form into a receipt object (leaf_hash and tlog_proof computed). */
export function decodeCompact(bytes) {
  const r = new Reader(bytes);
  const version = r.byte();
  if (version !== COMPACT_VERSION) throw new v.VerifyError('v.compactVersion', { version });
  const index = r.uvarint();
  const size = r.uvarint();
  if (index > BigInt(Number.MAX_SAFE_INTEGER)) throw new v.VerifyError('v.compactBad');
  const root = r.bytes(32);
  const origin = r.text();
  const extensions = Array.from({ length: r.count(64) }, () => r.text());
  const sigs = Array.from({ length: r.count(64) }, () => {
    const name = r.text();
    return { name: name || origin, sig: r.lp() };
  });
  const proof = Array.from({ length: r.count(63) }, () => r.bytes(32));
  let leaf;
  try {
    leaf = dec.decode(r.bytes(bytes.length - r.i));
  } catch {
    throw new v.VerifyError('v.compactBad');
  }
  const checkpoint = rebuildNote(origin, size, root, extensions, sigs);
  return derive(
    {
      log: origin,
      index: Number(index),
      leaf,
      leaf_hash: v.toHex(v.leafHash(enc.encode(leaf))),
      inclusion_proof: proof.map(v.toHex),
      checkpoint,
      tlog_proof: v.tlogProofText(index, proof, checkpoint),
    },
    ['leaf_hash', 'tlog_proof'],
  );
}

/**
 * A receipt rebuilt from a short link: the printed leaf hash, the entry the
 * log serves at that index and the proof it serves (`/proofs/inclusion`).
 */
export function fromShortLink(origin, entry, proofBody, printedLeafHash) {
  const proof = proofBody.inclusion_proof.map((h) => v.hashFromHex(h, 'inclusion_proof'));
  const checkpoint = proofBody.checkpoint || '';
  return derive(
    {
      log: origin,
      index: entry.index,
      leaf: entry.leaf,
      leaf_hash: printedLeafHash,
      inclusion_proof: proofBody.inclusion_proof,
      checkpoint,
      tlog_proof: v.tlogProofText(entry.index, proof, checkpoint),
    },
    ['tlog_proof'],
  );
}

/**
 * What a URL fragment carries, or null: `{ form: 'json', receipt }`,
 * `{ form: 'compact', receipt }` or `{ form: 'short', log, index, leafHash }`.
 * Throws a VerifyError when the fragment names a form but does not hold one.
 */
export function parseFragment(fragment) {
  const h = String(fragment || '').replace(/^#/, '');
  if (!h) return null;
  const params = new URLSearchParams(h);
  const one = (name) => {
    const all = params.getAll(name);
    return all.length === 1 ? all[0] : null;
  };
  if (params.has('receipt')) {
    let receipt;
    try {
      receipt = JSON.parse(dec.decode(v.fromBase64Url(one('receipt') ?? '')));
    } catch (e) {
      throw e instanceof v.VerifyError ? e : new v.VerifyError('v.linkBad');
    }
    return { form: 'json', receipt };
  }
  if (params.has('r')) return { form: 'compact', receipt: decodeCompact(v.fromBase64Url(one('r') ?? '')) };
  if (params.has('leaf_hash') || params.has('index')) {
    const log = one('log');
    const index = one('index');
    const leafHash = (one('leaf_hash') || '').toLowerCase();
    if (!log || !/^[a-z0-9-]+$/.test(log) || !/^(0|[1-9][0-9]{0,15})$/.test(index || '') || !/^[0-9a-f]{64}$/.test(leafHash)) {
      throw new v.VerifyError('v.linkBad');
    }
    return { form: 'short', log, index: Number(index), leafHash };
  }
  return null;
}

/** Parses a scanned or pasted text: a link with a receipt fragment, or a receipt's JSON. */
export function parseScanned(text) {
  const s = String(text).trim();
  if (s.startsWith('{')) {
    try {
      return { form: 'json', receipt: JSON.parse(s) };
    } catch {
      throw new v.VerifyError('v.notJson');
    }
  }
  const hash = s.indexOf('#');
  const found = hash >= 0 ? parseFragment(s.slice(hash)) : null;
  if (!found) throw new v.VerifyError('v.notReceiptLink');
  return found;
}

/** `#receipt=` link of a receipt (its compact JSON). */
export function jsonLink(pageUrl, receipt) {
  return `${pageUrl}#receipt=${v.toBase64Url(enc.encode(JSON.stringify(receipt)))}`;
}

/** `#r=` link of a receipt, or null if it cannot be packed. */
export function compactLink(pageUrl, receipt) {
  try {
    return `${pageUrl}#r=${v.toBase64Url(encodeCompact(receipt))}`;
  } catch {
    return null;
  }
}

/** Short link: log name, index, leaf hash. */
export function shortLink(pageUrl, logName, receipt) {
  return `${pageUrl}#log=${logName}&index=${receipt.index}&leaf_hash=${String(receipt.leaf_hash).toLowerCase()}`;
}

/**
 * The link a receipt's QR code carries: the compact form when it fits in
 * QR_MAX_BYTES, else the short link. Returns `{ link, form: 'compact' | 'short',
 * compactLength }`, the last being the length of the compact link (null if
 * the receipt cannot be packed).
 */
export function qrLink(pageUrl, logName, receipt) {
  const full = compactLink(pageUrl, receipt);
  const compactLength = full ? enc.encode(full).length : null;
  if (full && compactLength <= QR_MAX_BYTES) return { link: full, form: 'compact', compactLength };
  return { link: shortLink(pageUrl, logName, receipt), form: 'short', compactLength };
}
