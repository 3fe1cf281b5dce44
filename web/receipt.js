// The printable receipt page (/receipt#...): the record in plain words, its
// verification in this browser, and a QR code of a link back to this page
// that carries the receipt (or, if it is too large for one code, a short
// link from which the page fetches the proof). Styles for A4 paper and for
// phones are in style.css.

import * as v from './verify.js';
import { QR_MAX_BYTES, parseFragment, qrLink, shortLink } from './links.js';
import { setMsg, setTime } from './i18n.js';
import { $, data, el, fetchFailedSteps, initPage, keyFor, loadLogs, msgEl, pinnedPolicies, qrSvg, renderSteps, resolveReceipt, setResult, STEP_NAMES, verifyResolved } from './common.js';
import { parsePolicy } from './policy.js';
import { parseRecord } from './records.js';

let logs = [];

/**
 * The display name of a record type. REGISTRY: the log's record-type
 * registry (not yet served by the API) will give each type a name in both
 * languages and its schema; until then the type is shown as written.
 */
function typeName(type) {
  return type;
}

function fact(dl, labelKey, value) {
  if (value === undefined || value === null || value === '') return;
  dl.append(msgEl('dt', labelKey), value instanceof Node ? el('dd', {}, value) : data('dd', String(value)));
}

function showRecord(receipt) {
  const dl = $('record-facts');
  dl.replaceChildren();
  const rec = parseRecord(receipt.leaf);
  if (!rec) {
    fact(dl, 'receipt.notRecord', el('pre', { translate: 'no' }, receipt.leaf));
  } else {
    fact(dl, 'receipt.type', data('span', typeName(rec.type), { 'data-field': 'type' }));
    fact(dl, 'receipt.agency', data('span', rec.agency, { 'data-field': 'agency' }));
    fact(dl, 'receipt.subject', rec.subject === undefined ? null : data('span', rec.subject, { 'data-field': 'subject' }));
    fact(dl, 'receipt.time', setTime(el('time', { 'data-field': 'time' }), rec.ts));
    fact(dl, 'receipt.contentHash', rec.content_hash === undefined ? null : data('code', rec.content_hash));
    if (rec.attributes && typeof rec.attributes === 'object') {
      const list = el('ul', { class: 'attributes', translate: 'no' }, ...Object.entries(rec.attributes).map(([k, val]) => el('li', {}, `${k}: ${typeof val === 'string' ? val : JSON.stringify(val)}`)));
      fact(dl, 'receipt.attributes', list);
    }
  }
  fact(dl, 'receipt.index', data('span', String(receipt.index), { 'data-field': 'index' }));
  fact(dl, 'receipt.log', data('span', receipt.log, { 'data-field': 'log' }));
  fact(dl, 'receipt.leafHash', data('code', receipt.leaf_hash, { class: 'hash' }));
}

function showQr(receipt) {
  const log = logs.find((l) => l.origin === receipt.log);
  const page = `${location.origin}/receipt`;
  const box = $('qr-code');
  const name = log ? log.name : null;
  const q = qrLink(page, name || '', receipt);
  if (q.form === 'short' && !name) {
    box.replaceChildren();
    setMsg($('qr-form'), 'receipt.qrNone');
    return;
  }
  box.replaceChildren(qrSvg(q.link, 'receipt.qrAlt'));
  const svg = box.firstChild;
  svg.setAttribute('data-form', q.form);
  svg.setAttribute('data-link', q.link);
  setMsg($('qr-caption'), 'receipt.qrCaption');
  if (q.form === 'compact') setMsg($('qr-form'), 'receipt.qrCompact', { bytes: q.compactLength, max: QR_MAX_BYTES });
  else setMsg($('qr-form'), 'receipt.qrShort', { bytes: q.compactLength ?? '?', max: QR_MAX_BYTES });
  const short = name ? shortLink(page, name, receipt) : q.link;
  const a = $('short-link');
  a.href = short;
  a.textContent = short;
  $('short-link-line').hidden = false;
}

async function show() {
  const status = $('receipt-status');
  const steps = $('receipt-steps');
  let found;
  try {
    found = parseFragment(location.hash);
  } catch (e) {
    setResult(status, false, 'receipt.unreadable', { reason: v.messageOf(e) });
    return;
  }
  if (!found) {
    setResult(status, null, 'receipt.none');
    return;
  }
  setResult(status, null, 'receipt.checking');
  // The verify page, with this receipt, to check it against another key.
  $('verify-link').href = `/${location.hash}`;
  try {
    logs = await loadLogs();
  } catch {
    logs = [];
  }
  let resolved;
  try {
    resolved = await resolveReceipt(found, logs);
  } catch (e) {
    renderSteps(steps, fetchFailedSteps(e));
    setResult(status, false, 'verify.failed', { step: { key: 'step.fetch' }, detail: v.messageOf(e) });
    return;
  }
  const receipt = resolved.receipt;
  if (receipt && typeof receipt === 'object' && typeof receipt.leaf === 'string') {
    showRecord(receipt);
  }
  const { key, source } = keyFor(receipt && receipt.log, logs);
  if (!key) {
    setResult(status, false, 'receipt.noKey');
    return;
  }
  setMsg($('receipt-key'), source === 'pinned' ? 'receipt.keyPinned' : 'receipt.keyServer', { keyId: key.keyId, name: key.name });
  // A witness policy pinned for this log (on the verify page) is required too.
  let policy = null;
  const pinnedPolicy = receipt && typeof receipt.log === 'string' ? pinnedPolicies()[receipt.log] : null;
  if (pinnedPolicy) {
    try {
      policy = parsePolicy(pinnedPolicy);
    } catch {
      policy = null;
    }
  }
  const r = verifyResolved(resolved, key, policy);
  renderSteps(steps, r.steps);
  // Only a receipt that verifies gets a code to print.
  if (r.ok) showQr(receipt);
  else {
    $('qr-code').replaceChildren();
    $('short-link-line').hidden = true;
    setMsg($('qr-form'), 'receipt.qrFailed');
  }
  if (!r.ok) {
    setResult(status, false, 'verify.failed', { step: { key: STEP_NAMES[r.failed.step] }, detail: r.failed.msg });
  } else if (source === 'pinned') {
    setResult(status, true, 'receipt.okPinned', { index: receipt.index, log: receipt.log, size: r.checkpoint.size, keyId: key.keyId });
  } else {
    setResult(status, 'warn', 'receipt.okServer', { index: receipt.index, log: receipt.log, size: r.checkpoint.size, keyId: key.keyId });
  }
}

function init() {
  initPage();
  $('print-btn').addEventListener('click', () => window.print());
  window.addEventListener('hashchange', show);
  show();
}

init();
