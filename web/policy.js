// Witness policies in the browser: C2SP tlog-policy files (log, witness,
// group and quorum lines) and C2SP tlog-cosignature `cosignature/v1`
// signatures on a checkpoint note. Pure functions with no DOM and no
// network, like verify.js, so they also run under Node.
//
// A checkpoint meets a policy when it is signed by one of the policy's
// logs and the policy witnesses whose cosignatures verify make the quorum.
// A cosignature line of a policy witness (its name and key ID) that does
// not verify rejects the note, as signed-note says; lines of other keys
// are ignored.

import * as ed from './vendor/noble-ed25519/index.js';
import { bytesEqual, fail, keyId, openCheckpoint, parseNote, parseTypedVkey, parseVkey } from './verify.js';

const enc = new TextEncoder();

/** The signature type byte of a `cosignature/v1` key. */
const COSIGNATURE_TYPE = 0x04;

/** C2SP key ID of a cosignature key: SHA-256(name || 0x0A || 0x04 || pubkey)[:4], as hex. */
export function cosignatureKeyId(name, pub) {
  return keyId(name, pub, COSIGNATURE_TYPE);
}

/** Parses a witness vkey: `<name>+<8 hex key id>+<base64(0x04 || pubkey)>`. */
export function parseWitnessVkey(vkey) {
  return parseTypedVkey(vkey, COSIGNATURE_TYPE, () => fail('p.notWitnessKey', { vkey: vkey.trim().slice(0, 80) }));
}

/**
 * Parses a tlog-policy file. Returns `{ logs: [key], witnesses: [{ name,
 * key, url }], groups: [{ name, threshold, members }], quorum, text }`
 * where a member is `{ witness: i }` or `{ group: i }` and `quorum` is a
 * member or null for `quorum none`. Throws a VerifyError naming the line.
 */
export function parsePolicy(text) {
  if (typeof text !== 'string') fail('p.notText');
  const logs = [];
  const witnesses = [];
  const groups = [];
  const names = new Map();
  let quorum;
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, n) => {
    const at = n + 1;
    const bad = (key, params = {}) => fail('p.line', { line: at, reason: { key, params } });
    if (line.includes('\r')) bad('p.carriageReturn');
    const f = line.split(/[ \t]+/).filter((x) => x !== '');
    if (f.length === 0 || f[0].startsWith('#')) return;
    const define = (name, member) => {
      if (name === 'none') bad('p.noneReserved', { name: 'none' });
      if (names.has(name)) bad('p.defined', { name });
      names.set(name, member);
    };
    const member = (name) => {
      if (!names.has(name)) bad('p.undefined', { name });
      return names.get(name);
    };
    const key = (parse, s) => {
      try {
        return parse(s);
      } catch (e) {
        bad('p.badKey', { reason: e.msg || String(e) });
      }
    };
    switch (f[0]) {
      case 'log':
        if (f.length < 2 || f.length > 3) bad('p.logForm', { form: 'log <vkey> [<url>]' });
        logs.push(key(parseVkey, f[1]));
        break;
      case 'witness':
        if (f.length < 3 || f.length > 4) bad('p.witnessForm', { form: 'witness <name> <vkey> [<url>]' });
        define(f[1], { witness: witnesses.length });
        witnesses.push({ name: f[1], key: key(parseWitnessVkey, f[2]), url: f[3] || null });
        break;
      case 'group': {
        if (f.length < 4) bad('p.groupForm', { form: 'group <name> all|any|<k> <member>…' });
        const members = f.slice(3).map(member);
        const k = f[2] === 'all' ? members.length : f[2] === 'any' ? 1 : /^[0-9]+$/.test(f[2]) ? Number(f[2]) : NaN;
        if (!(k >= 1 && k <= members.length)) bad('p.threshold', { value: f[2], words: 'all, any', n: members.length });
        define(f[1], { group: groups.length });
        groups.push({ name: f[1], threshold: k, members });
        break;
      }
      case 'quorum':
        if (f.length !== 2) bad('p.quorumForm', { form: 'quorum <name>' });
        if (quorum !== undefined) bad('p.quorumTwice', { keyword: 'quorum' });
        quorum = f[1] === 'none' ? null : member(f[1]);
        break;
      default:
        bad('p.keyword', { word: f[0].slice(0, 40) });
    }
  });
  if (quorum === undefined) fail('p.noQuorum', { keyword: 'quorum' });
  return { logs, witnesses, groups, quorum, text };
}

function memberName(policy, m) {
  return 'witness' in m ? policy.witnesses[m.witness].name : policy.groups[m.group].name;
}

function met(policy, m, cosigned) {
  if ('witness' in m) return cosigned.has(m.witness);
  const g = policy.groups[m.group];
  return g.members.filter((x) => met(policy, x, cosigned)).length >= g.threshold;
}

/**
 * Checks a checkpoint note under a policy: signed by one of its logs (the
 * one named like the checkpoint's origin), every cosignature line of a
 * policy witness verifies, and those witnesses make the quorum. Returns
 * `{ checkpoint, cosigned: [{ name, keyName, time }], quorum }` (`time`
 * in seconds since the epoch, as the witness signed it); throws a
 * VerifyError.
 */
export function checkQuorum(note, policy) {
  const { text, sigs } = parseNote(note);
  const origin = text.slice(0, text.indexOf('\n'));
  const log = policy.logs.find((k) => k.name === origin);
  if (!log) fail('p.noLog', { origin });
  const checkpoint = openCheckpoint(note, log);
  const msgFor = (time) => enc.encode(`cosignature/v1\ntime ${time}\n${text}`);
  const cosigned = new Set();
  const out = [];
  policy.witnesses.forEach((w, i) => {
    for (const s of sigs.filter((x) => x.name === w.key.name && x.keyId === w.key.keyId)) {
      if (s.sig.length !== 72) fail('p.badCosignature', { name: w.name });
      let time = 0n;
      for (const b of s.sig.slice(0, 8)) time = (time << 8n) | BigInt(b);
      let ok = false;
      try {
        ok = time < 1n << 63n && ed.verify(s.sig.slice(8), msgFor(time), w.key.pub, { zip215: false });
      } catch {
        ok = false;
      }
      if (!ok) fail('p.badCosignature', { name: w.name });
      if (!cosigned.has(i)) out.push({ name: w.name, keyName: w.key.name, time: Number(time) });
      cosigned.add(i);
    }
  });
  const quorum = policy.quorum === null ? 'none' : memberName(policy, policy.quorum);
  if (policy.quorum !== null && !met(policy, policy.quorum, cosigned)) {
    fail(out.length ? 'p.quorumNotMet' : 'p.noCosignatures', {
      quorum,
      have: out.map((c) => c.name).join(', '),
    });
  }
  return { checkpoint, cosigned: out, quorum };
}

/** Whether two policies are the same file, byte for byte. */
export function samePolicy(a, b) {
  return bytesEqual(enc.encode(a), enc.encode(b));
}
