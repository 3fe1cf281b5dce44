// The data subject's page (/disclosure#d=...): with the disclosure the
// writing agency handed over (docs/private.md: the record's index, salt,
// commitment and a capability), list every access and erasure entry about
// the record, each checked here against the log's signed checkpoint (the
// key pinned in this browser, else the server's), and check content the
// subject was shown against the record's commitment. The disclosure travels
// in the URL fragment, which never reaches the server; only the capability
// is sent, in the Stele-Disclosure header.

import * as v from './verify.js';
import { sha256 } from './vendor/noble-hashes/sha2.js';
import { setMsg, setTime } from './i18n.js';
import { $, data, el, fetchJson, initPage, keyFor, loadLogs, msgEl, setResult } from './common.js';

const enc = new TextEncoder();

/** RFC 8785 canonical JSON (defined on ECMAScript's own number and string forms). */
export function canonical(x) {
  if (x === null || typeof x !== 'object') return JSON.stringify(x);
  if (Array.isArray(x)) return `[${x.map(canonical).join(',')}]`;
  const keys = Object.keys(x).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(x[k])}`).join(',')}}`;
}

/** `sha256:` hex of SHA-256("stele/commitment/v1" 0x00 salt content). */
export function commitment(salt, content) {
  return 'sha256:' + v.toHex(sha256(v.concat(enc.encode('stele/commitment/v1'), Uint8Array.of(0), salt, enc.encode(canonical(content)))));
}

/** A disclosure from pasted JSON or a `#d=<base64url(JSON)>` link. */
export function parseDisclosure(text) {
  text = text.trim();
  const m = text.match(/#d=([A-Za-z0-9_-]+)/);
  if (m) text = new TextDecoder().decode(v.fromBase64Url(m[1]));
  let d;
  try {
    d = JSON.parse(text);
  } catch {
    v.fail('disclosure.notDisclosure');
  }
  const ok = d && typeof d.log === 'string' && Number.isSafeInteger(d.index) && typeof d.salt === 'string' && typeof d.commitment === 'string' && typeof d.capability === 'string';
  if (!ok) v.fail('disclosure.notDisclosure');
  return d;
}

/** Checks an accesses answer for disclosure `d` with `key`; the entries' leaves. */
export function verifyAccesses(answer, d, key) {
  const cp = v.openCheckpoint(answer.checkpoint, key);
  if (BigInt(answer.tree_size) !== BigInt(cp.size)) v.fail('disclosure.sizeMismatch');
  const all = [answer.record, ...answer.entries];
  const leaves = [];
  for (const e of all) {
    v.verifyInclusion(v.leafHash(enc.encode(e.leaf)), e.index, cp.size, e.inclusion_proof.map((h) => v.fromHex(h)), cp.root);
    leaves.push(JSON.parse(e.leaf));
  }
  const record = leaves.shift();
  if (answer.record.index !== d.index || record.commitment !== d.commitment) v.fail('disclosure.otherRecord', { index: d.index });
  answer.entries.forEach((e, i) => {
    const l = leaves[i];
    const about = l.attributes && l.attributes.record === d.index && e.index > d.index;
    if (!about || (l.type !== 'stele.access' && l.type !== 'stele.erasure')) v.fail('disclosure.notAbout', { entry: e.index, index: d.index });
  });
  return { cp, record, leaves };
}

let current = null;

function fact(dl, key, value) {
  dl.append(msgEl('dt', key), value instanceof Node ? el('dd', {}, value) : data('dd', String(value)));
}

async function show() {
  const status = $('disclosure-status');
  for (const id of ['record-section', 'entries-section', 'content-section']) $(id).hidden = true;
  current = null;
  let d;
  try {
    d = parseDisclosure($('disclosure-input').value);
  } catch (e) {
    setResult(status, false, 'disclosure.failed', { detail: v.messageOf(e) });
    return;
  }
  setResult(status, null, 'common.loading');
  try {
    const logs = await loadLogs();
    const log = logs.find((l) => l.origin === d.log);
    if (!log) v.fail('err.unknownLog', { name: d.log });
    const { key, source } = keyFor(d.log, logs);
    if (!key) v.fail('disclosure.noKey');
    const answer = await fetchJson(`/logs/${encodeURIComponent(log.name)}/records/${d.index}/accesses`, { 'stele-disclosure': d.capability });
    const { cp, record, leaves } = verifyAccesses(answer, d, key);
    setMsg($('disclosure-key'), source === 'pinned' ? 'disclosure.keyPinned' : 'disclosure.keyServer', { keyId: key.keyId, name: key.name });
    const dl = $('record-facts');
    dl.replaceChildren();
    fact(dl, 'receipt.log', data('span', d.log));
    fact(dl, 'receipt.index', data('span', String(d.index), { 'data-field': 'index' }));
    fact(dl, 'receipt.type', data('span', record.type, { 'data-field': 'type' }));
    fact(dl, 'receipt.agency', data('span', record.agency, { 'data-field': 'agency' }));
    fact(dl, 'receipt.time', setTime(el('time'), record.ts));
    const rows = answer.entries.map((e, i) => {
      const l = leaves[i];
      const what = l.type === 'stele.erasure'
        ? msgEl('span', 'disclosure.erased', { agency: l.agency, reason: l.attributes.reason })
        : msgEl('span', 'disclosure.read', { agency: l.agency, purpose: l.attributes.purpose });
      return el('tr', { 'data-entry': String(e.index), 'data-kind': l.type === 'stele.erasure' ? 'erasure' : 'access' },
        el('td', {}, setTime(el('time'), l.ts)), data('td', String(e.index)), el('td', {}, what));
    });
    $('entries').tBodies[0].replaceChildren(...rows);
    $('record-section').hidden = false;
    $('entries-section').hidden = false;
    $('content-section').hidden = false;
    current = d;
    setResult(status, source === 'pinned' ? true : 'warn', source === 'pinned' ? 'disclosure.ok' : 'disclosure.okServer', { n: answer.entries.length, index: d.index, size: cp.size, keyId: key.keyId });
  } catch (e) {
    setResult(status, false, 'disclosure.failed', { detail: v.messageOf(e) });
  }
}

function checkContent() {
  const status = $('content-status');
  if (!current) return;
  let content;
  try {
    content = JSON.parse($('content-input').value);
  } catch {
    setResult(status, false, 'disclosure.contentNotJson');
    return;
  }
  // A content answer (`GET .../content`) carries the content in `content`.
  if (content && typeof content === 'object' && content.content && typeof content.content === 'object' && 'salt' in content) content = content.content;
  const got = commitment(v.fromBase64(current.salt), content);
  if (got === current.commitment) setResult(status, true, 'disclosure.contentOk', { index: current.index });
  else setResult(status, false, 'disclosure.contentBad', { index: current.index });
}

function init() {
  initPage();
  $('disclosure-btn').addEventListener('click', show);
  $('content-btn').addEventListener('click', checkContent);
  const fromLink = () => {
    if (location.hash.startsWith('#d=')) {
      $('disclosure-input').value = location.href;
      show();
    }
  };
  window.addEventListener('hashchange', fromLink);
  fromLink();
}

if (typeof document !== 'undefined') init();
