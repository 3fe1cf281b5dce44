// What the three pages share: DOM helpers (text only: nothing from the
// network is ever parsed as HTML), fetching, the keys pinned in this browser,
// the step list of a verification, QR codes drawn as SVG, and the header with
// its language switch.

import * as v from './verify.js';
import { checkQuorum } from './policy.js';
import en from './i18n/en.js';
import { apply, initLangSwitch, setMsg, t } from './i18n.js';
import { encodeQR } from './vendor/qr/index.js';
import { QR_ECC, fromShortLink } from './links.js';

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, val] of Object.entries(attrs)) {
    if (val === undefined || val === null) continue;
    if (k === 'class') e.className = val;
    else if (k.startsWith('data-') || k.startsWith('aria-') || ['role', 'id', 'for', 'translate', 'lang', 'scope', 'datetime'].includes(k)) e.setAttribute(k, val);
    else e[k] = val;
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

/** Data shown as it is (hashes, names, JSON): marked so that no translator touches it. */
export function data(tag, text, attrs = {}) {
  return el(tag, { translate: 'no', ...attrs }, text);
}

/** A message element. */
export function msgEl(tag, key, params, attrs = {}) {
  return setMsg(el(tag, attrs), key, params);
}

/** Shows a result line: ok true (passed), false (failed) or null (neutral). */
export function setResult(node, ok, key, params = {}) {
  node.className = 'result ' + (ok === true ? 'ok' : ok === false ? 'bad' : ok === 'warn' ? 'warn' : '');
  node.dataset.state = ok === true ? 'ok' : ok === false ? 'bad' : ok === 'warn' ? 'warn' : 'none';
  setMsg(node, key, params);
}

/** The catalogue key of each verification step's name. */
export const STEP_NAMES = {
  [v.STEP_PARSE]: 'step.parse',
  [v.STEP_LEAF_HASH]: 'step.leafHash',
  [v.STEP_SIGNATURE]: 'step.signature',
  [v.STEP_INCLUSION]: 'step.inclusion',
  [v.STEP_TLOG_PROOF]: 'step.tlogProof',
  [v.STEP_QUORUM]: 'step.quorum',
  fetch: 'step.fetch',
};

/** Renders verification steps into an `<ol>`. */
export function renderSteps(list, steps) {
  list.replaceChildren(
    ...steps.map((s) => {
      const mark = s.ok === true ? '✓' : s.ok === false ? '✗' : '·';
      const state = s.ok === true ? 'ok' : s.ok === false ? 'bad' : 'unchecked';
      const status = s.ok === true ? 'step.passed' : s.ok === false ? 'step.failed' : 'step.notChecked';
      return el(
        'li',
        { class: state, 'data-step': s.step, 'data-ok': String(s.ok) },
        el('span', { class: 'mark', 'aria-hidden': 'true' }, mark),
        msgEl('span', 'step.label', { name: { key: STEP_NAMES[s.step] || s.step } }, { class: 'name' }),
        msgEl('span', status, {}, { class: 'status' }),
        s.ok === null ? null : msgEl('span', s.msg.key, s.msg.params, { class: 'detail' }),
      );
    }),
  );
}

/** A failure of the network or of the server, with its message. */
export class FetchError extends v.VerifyError {}

export async function fetchJson(url, headers = {}) {
  let r;
  try {
    r = await fetch(url, { headers: { accept: 'application/json', ...headers } });
  } catch {
    throw new FetchError('err.network', { url });
  }
  const text = await r.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (!r.ok) {
    const detail = body && (body.detail || body.title) ? String(body.detail || body.title) : text.slice(0, 200);
    throw new FetchError('err.http', { status: r.status, detail });
  }
  if (body === null) throw new FetchError('err.notJsonAnswer', { url });
  return body;
}

export async function fetchText(url) {
  let r;
  try {
    r = await fetch(url);
  } catch {
    throw new FetchError('err.network', { url });
  }
  if (!r.ok) throw new FetchError('err.http', { status: r.status, detail: url });
  return r.text();
}

export async function fetchBytes(url) {
  let r;
  try {
    r = await fetch(url);
  } catch {
    throw new FetchError('err.network', { url });
  }
  if (!r.ok) throw new FetchError('err.http', { status: r.status, detail: url });
  return new Uint8Array(await r.arrayBuffer());
}

// ---------- what is pinned in this browser, by log origin

/** A map kept in localStorage under `name`: `all()`, `set(origin, value)`, `unset(origin)`. */
function pinStore(name) {
  const all = () => {
    try {
      return JSON.parse(localStorage.getItem(name) || '{}') || {};
    } catch {
      return {};
    }
  };
  const save = (p) => localStorage.setItem(name, JSON.stringify(p));
  return {
    all,
    set(origin, value) {
      const p = all();
      p[origin] = value;
      save(p);
    },
    unset(origin) {
      const p = all();
      delete p[origin];
      save(p);
    },
  };
}

/** Verifier keys (origin → vkey). */
const keys = pinStore('stele.pinned-vkeys');
/** Witness policies (origin → the policy file's text). */
const policies = pinStore('stele.pinnedPolicies');

export const pinned = keys.all;
export const pin = keys.set;
export const unpin = keys.unset;
export const pinnedPolicies = policies.all;
export const pinPolicy = policies.set;
export const unpinPolicy = policies.unset;

/** The logs this server serves (`GET /logs`). */
export async function loadLogs() {
  return (await fetchJson('/logs')).logs || [];
}

/**
 * The key to check a log's checkpoints with: the one pinned in this browser
 * for its origin, else the one the server publishes.
 * `{ key, source: 'pinned' | 'server', differs }`; key is null if unusable.
 */
export function keyFor(origin, logs) {
  const p = pinned()[origin];
  if (p) {
    try {
      return { key: v.parseVkey(p), source: 'pinned' };
    } catch {
      // an unusable pinned key: fall back to the server's, said so below
    }
  }
  const log = logs.find((l) => l.origin === origin);
  if (!log) return { key: null, source: 'none' };
  try {
    return { key: v.parseVkey(log.vkey), source: 'server' };
  } catch {
    return { key: null, source: 'none' };
  }
}

// ---------- QR codes

const SVG = 'http://www.w3.org/2000/svg';
/** Largest side of a QR code on screen, in CSS pixels (on paper it is 70 mm: style.css). */
const QR_SCREEN_PX = 320;

/** An SVG drawing of the QR code of `text` (error-correction level M, quiet zone of 4). */
export function qrSvg(text, labelKey) {
  const m = encodeQR(text, 'raw', { ecc: QR_ECC, border: 4 });
  const n = m.length;
  let d = '';
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      if (!m[y][x]) continue;
      let w = 1;
      while (x + w < n && m[y][x + w]) w++;
      d += `M${x} ${y}h${w}v1h-${w}z`;
      x += w - 1;
    }
  }
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${n} ${n}`);
  // A whole number of screen pixels per module keeps every module sharp.
  const side = Math.max(2, Math.floor(QR_SCREEN_PX / n)) * n;
  svg.setAttribute('width', String(side));
  svg.setAttribute('height', String(side));
  svg.setAttribute('role', 'img');
  svg.setAttribute('shape-rendering', 'crispEdges');
  svg.setAttribute('data-modules', String(n - 8));
  svg.classList.add('qr');
  const bg = document.createElementNS(SVG, 'rect');
  bg.setAttribute('width', String(n));
  bg.setAttribute('height', String(n));
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(bg, path);
  if (labelKey) {
    svg.setAttribute('data-i18n-attr', `aria-label:${labelKey}`);
    svg.setAttribute('aria-label', t(labelKey));
  }
  return svg;
}

// ---------- page start

/** Renders the page's strings and wires the language switch. */
export function initPage() {
  const group = $('lang-switch');
  if (group) initLangSwitch(group);
  apply();
}

// ---------- receipts from links

/**
 * Turns what a link or a scan carries (links.js parseFragment/parseScanned)
 * into a receipt. A short link is resolved here: the entry and its inclusion
 * proof are fetched from this server, and `fetched` says what was asked.
 * `{ receipt, form, fetched }`.
 */
export async function resolveReceipt(found, logs) {
  if (found.form !== 'short') return { receipt: found.receipt, form: found.form, fetched: null };
  const log = logs.find((l) => l.name === found.log);
  if (!log) throw new FetchError('err.unknownLog', { name: found.log });
  const base = `/logs/${encodeURIComponent(log.name)}`;
  const entry = await fetchJson(`${base}/entries/${found.index}`);
  const proof = await fetchJson(`${base}/proofs/inclusion?index=${found.index}`);
  const receipt = fromShortLink(log.origin, entry, proof, found.leafHash);
  return { receipt, form: 'short', fetched: { index: found.index, log: log.name, size: proof.tree_size } };
}

/**
 * Verifies a resolved receipt with `key` (verify.js), with a first step
 * saying what was fetched for a short link.
 */
export function verifyResolved(resolved, key, policy = null) {
  const r = v.verifyReceipt(resolved.receipt, key);
  if (policy) quorumStep(r, resolved.receipt, policy);
  if (resolved.fetched) {
    const f = resolved.fetched;
    r.steps.unshift({ step: 'fetch', ok: true, detail: '', msg: v.msg('step.fetchOk', { index: f.index, log: f.log, size: f.size }) });
  }
  return r;
}

/**
 * Adds the witness-quorum step to a receipt's verification `r`: its
 * checkpoint must meet `policy` (policy.js). Not checked when an earlier
 * step failed.
 */
export function quorumStep(r, receipt, policy) {
  if (!r.ok) {
    r.steps.push({ step: v.STEP_QUORUM, ok: null, detail: '', msg: v.msg('v.notChecked') });
    return r;
  }
  try {
    const q = checkQuorum(receipt.checkpoint, policy);
    const who = q.cosigned.map((c) => `${c.name} ${new Date(c.time * 1000).toISOString().replace('.000Z', 'Z')}`).join(', ');
    const m = v.msg('p.quorumOk', { quorum: q.quorum, who });
    r.steps.push({ step: v.STEP_QUORUM, ok: true, detail: v.format(en[m.key], m.params), msg: m, cosigned: q.cosigned });
  } catch (e) {
    const m = v.messageOf(e);
    r.failed = { step: v.STEP_QUORUM, ok: false, detail: v.format(en[m.key] ?? m.key, m.params), msg: m };
    r.steps.push(r.failed);
    r.ok = false;
  }
  return r;
}

/** A step list for a short link whose entry could not be fetched. */
export function fetchFailedSteps(e) {
  const steps = [{ step: 'fetch', ok: false, detail: '', msg: v.messageOf(e) }];
  for (const s of v.RECEIPT_STEPS) steps.push({ step: s, ok: null, detail: '', msg: v.msg('v.notChecked') });
  return steps;
}
