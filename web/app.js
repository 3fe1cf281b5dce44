// The main page: verify a receipt (pasted, dropped, chosen as a file, opened
// from a link, or scanned from a QR code with the camera or from a picture),
// look an entry up with its inclusion proof, and the logs with their
// checkpoints. All checking is done here, in the browser, by verify.js; the
// server is only asked for data.

import * as v from './verify.js';
import { parseFragment, parseScanned, jsonLink } from './links.js';
import { setAttrMsg, setMsg } from './i18n.js';
import {
  $,
  data,
  el,
  fetchFailedSteps,
  fetchJson,
  fetchText,
  initPage,
  keyFor,
  loadLogs,
  msgEl,
  pin,
  pinned,
  pinnedPolicies,
  pinPolicy,
  unpinPolicy,
  renderSteps,
  resolveReceipt,
  setResult,
  STEP_NAMES,
  unpin,
  verifyResolved,
} from './common.js';
import { Camera, cameraAvailable, decodeFile } from './scan.js';
import { parsePolicy } from './policy.js';

let logs = [];
let camera = null;

// ---------- the verifier key

/**
 * A field holding something pinned per log origin (the verifier key, the
 * witness policy): parsing its box, saying what it holds and whether that
 * is pinned, filling it from the pin for a log, and its pin/forget buttons.
 */
function pinnableField({ box, info, parse, originOf, valueOf, pins, msgs, describe }) {
  const current = () => {
    const text = $(box).value;
    return text.trim() ? parse(text) : null;
  };
  const update = () => {
    let item;
    try {
      item = current();
    } catch (e) {
      setMsg($(info), msgs.unusable, { reason: v.messageOf(e) });
      return;
    }
    if (!item) {
      setMsg($(info), msgs.none);
      return;
    }
    const p = pins.all()[originOf(item)];
    const state = p === valueOf(item) ? msgs.pinned : p ? msgs.differs : msgs.notPinned;
    setMsg($(info), msgs.info, { ...describe(item), state: { key: state } });
  };
  const useFor = (origin) => {
    const p = pins.all()[origin];
    if (!p) return false;
    $(box).value = p;
    update();
    return true;
  };
  const wire = (pinBtn, unpinBtn) => {
    $(box).addEventListener('input', update);
    $(pinBtn).addEventListener('click', () => {
      let item;
      try {
        item = current();
      } catch (e) {
        setResult($('verify-result'), false, msgs.cannotPin, { reason: v.messageOf(e) });
        return;
      }
      if (!item) return;
      pins.set(originOf(item), valueOf(item));
      update();
    });
    $(unpinBtn).addEventListener('click', () => {
      let item = null;
      try {
        item = current();
      } catch {
        item = null;
      }
      if (!item) return;
      pins.unset(originOf(item));
      update();
    });
  };
  return { current, update, useFor, wire };
}

const keyField = pinnableField({
  box: 'vkey',
  info: 'vkey-info',
  parse: (text) => v.parseVkey(text.trim()),
  originOf: (key) => key.name,
  valueOf: (key) => key.vkey,
  pins: { all: pinned, set: pin, unset: unpin },
  msgs: { unusable: 'key.unusable', none: 'key.none', info: 'key.info', pinned: 'key.statePinned', differs: 'key.stateDiffers', notPinned: 'key.stateNotPinned', cannotPin: 'key.cannotPin' },
  describe: (key) => ({ name: key.name, keyId: key.keyId }),
});

function quorumName(policy) {
  if (policy.quorum === null) return 'none';
  return 'witness' in policy.quorum ? policy.witnesses[policy.quorum.witness].name : policy.groups[policy.quorum.group].name;
}

const policyOrigin = (policy) => (policy.logs.length ? policy.logs[0].name : '');

const policyField = pinnableField({
  box: 'policy',
  info: 'policy-info',
  parse: (text) => parsePolicy(text.endsWith('\n') ? text : `${text}\n`),
  originOf: policyOrigin,
  valueOf: (policy) => policy.text,
  pins: { all: pinnedPolicies, set: pinPolicy, unset: unpinPolicy },
  msgs: { unusable: 'policy.unusable', none: 'policy.none', info: 'policy.info', pinned: 'policy.statePinned', differs: 'policy.stateDiffers', notPinned: 'policy.stateNotPinned', cannotPin: 'policy.unusable' },
  describe: (policy) => ({ origin: policyOrigin(policy), witnesses: policy.witnesses.length, quorum: quorumName(policy) }),
});

const currentKey = keyField.current;
const updateKeyInfo = keyField.update;
const useKeyFor = keyField.useFor;
const currentPolicy = policyField.current;
const updatePolicyInfo = policyField.update;

// ---------- receipt verification

function receiptText() {
  return $('receipt').value.trim();
}

function failParse(m) {
  const steps = [{ step: v.STEP_PARSE, ok: false, msg: m }];
  for (const s of v.RECEIPT_STEPS.slice(1)) steps.push({ step: s, ok: null, msg: v.msg('v.notChecked') });
  renderSteps($('verify-steps'), steps);
  setResult($('verify-result'), false, 'verify.failed', { step: { key: 'step.parse' }, detail: m });
}

async function verifyNow() {
  const result = $('verify-result');
  const list = $('verify-steps');
  const text = receiptText();
  if (!text) {
    setResult(result, null, 'verify.empty');
    list.replaceChildren();
    return;
  }
  let found;
  try {
    found = parseScanned(text);
  } catch (e) {
    failParse(v.messageOf(e));
    return;
  }
  let resolved;
  if (found.form === 'short') {
    setResult(result, null, 'verify.fetching');
    try {
      if (!logs.length) await refreshLogs();
      resolved = await resolveReceipt(found, logs);
    } catch (e) {
      renderSteps(list, fetchFailedSteps(e));
      setResult(result, false, 'verify.failed', { step: { key: 'step.fetch' }, detail: v.messageOf(e) });
      return;
    }
  } else {
    resolved = { receipt: found.receipt, form: found.form, fetched: null };
  }
  const receipt = resolved.receipt;
  if (!$('vkey').value.trim() && receipt && typeof receipt.log === 'string') useKeyFor(receipt.log);
  if (!$('policy').value.trim() && receipt && typeof receipt.log === 'string') policyField.useFor(receipt.log);
  let key;
  try {
    key = currentKey();
  } catch (e) {
    setResult(result, false, 'verify.keyUnusable', { reason: v.messageOf(e) });
    list.replaceChildren();
    return;
  }
  if (!key) {
    setResult(result, false, 'verify.noKey');
    list.replaceChildren();
    return;
  }
  let policy;
  try {
    policy = currentPolicy();
  } catch (e) {
    setResult(result, false, 'policy.unusable', { reason: v.messageOf(e) });
    list.replaceChildren();
    return;
  }
  const r = verifyResolved(resolved, key, policy);
  renderSteps(list, r.steps);
  if (r.ok) {
    setResult(result, true, 'verify.ok', { index: receipt.index, log: receipt.log, size: r.checkpoint.size, keyId: key.keyId });
  } else {
    setResult(result, false, 'verify.failed', { step: { key: stepKey(r.failed.step) }, detail: r.failed.msg });
  }
  showPrintLink(r.ok ? resolved : null);
}

function stepKey(step) {
  return STEP_NAMES[step] || step;
}

/** After a receipt verifies: a link to its printable page. */
function showPrintLink(resolved) {
  const a = $('print-link');
  if (!resolved) {
    a.hidden = true;
    return;
  }
  a.href = jsonLink(`${location.origin}/receipt`, resolved.receipt);
  a.hidden = false;
}

function loadReceiptFromHash() {
  let found;
  try {
    found = parseFragment(location.hash);
  } catch (e) {
    setResult($('verify-result'), false, 'verify.linkUnreadable', { reason: v.messageOf(e) });
    return false;
  }
  if (!found) return false;
  $('receipt').value = found.form === 'json' ? JSON.stringify(found.receipt, null, 2) : location.href;
  verifyNow();
  return true;
}

/** A dropped or chosen file: a receipt (JSON) or a picture of a QR code. */
async function loadFile(file) {
  if (file.type.startsWith('image/')) {
    await scanFile(file);
    return;
  }
  $('receipt').value = await file.text();
  verifyNow();
}

async function scanFile(file) {
  setMsg($('scan-status'), 'scan.reading');
  let text = null;
  try {
    text = await decodeFile(file);
  } catch {
    text = null;
  }
  if (!text) {
    setMsg($('scan-status'), 'scan.noCode');
    return;
  }
  scanned(text);
}

function scanned(text) {
  setMsg($('scan-status'), 'scan.found');
  $('receipt').value = text;
  verifyNow();
}

async function startCamera() {
  if (!cameraAvailable()) {
    setMsg($('scan-status'), 'scan.noCamera');
    return;
  }
  camera = camera || new Camera($('camera'));
  $('camera-box').hidden = false;
  $('camera-stop').hidden = false;
  setMsg($('scan-status'), 'scan.looking');
  try {
    await camera.start((text) => {
      $('camera-box').hidden = true;
      $('camera-stop').hidden = true;
      scanned(text);
    });
  } catch (e) {
    $('camera-box').hidden = true;
    $('camera-stop').hidden = true;
    setMsg($('scan-status'), 'scan.cameraError', { reason: String(e && e.name ? e.name : e) });
  }
}

function stopCamera() {
  if (camera) camera.stop();
  $('camera-box').hidden = true;
  $('camera-stop').hidden = true;
  setMsg($('scan-status'), 'scan.stopped');
}

function shareLink() {
  const text = receiptText();
  if (!text) return;
  let receipt;
  try {
    receipt = JSON.parse(text);
  } catch {
    setResult($('verify-result'), false, 'share.notJson');
    return;
  }
  const url = jsonLink(`${location.origin}${location.pathname}`, receipt);
  history.replaceState(null, '', url);
  if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
  setResult($('verify-result'), null, 'share.done');
}

// ---------- logs

function logKey(log) {
  try {
    return v.parseVkey(log.vkey);
  } catch {
    return null;
  }
}

async function refreshLogs() {
  logs = await loadLogs();
  return logs;
}

async function showLogs() {
  const box = $('logs-list');
  try {
    await refreshLogs();
  } catch (e) {
    setMsg(box, 'logs.error', { reason: v.messageOf(e) });
    return;
  }
  const select = $('lookup-log');
  select.replaceChildren(...logs.map((l) => el('option', { value: l.name, translate: 'no' }, `${l.name} (${l.origin})`)));
  box.replaceChildren(...logs.map(renderLog));
}

function renderLog(log) {
  const key = logKey(log);
  const headingId = `log-h-${log.name}`;
  const cpPre = el('pre', { 'aria-labelledby': `${headingId} ${headingId}-cp`, translate: 'no' });
  setMsg(cpPre, 'common.loading');
  const sig = el('dd', {}, '…');
  const pinBtn = msgEl('button', 'logs.pin', {}, { type: 'button' });
  pinBtn.addEventListener('click', () => {
    pin(log.origin, log.vkey);
    $('vkey').value = log.vkey;
    updateKeyInfo();
    setMsg(pinBtn, 'logs.pinned');
  });
  const p = pinned()[log.origin];
  const pinState = p === log.vkey ? 'key.statePinned' : p ? 'logs.stateDiffers' : 'key.stateNotPinned';
  const box = el(
    'article',
    { class: 'log', 'data-log': log.name, 'aria-labelledby': headingId },
    data('h3', log.name, { id: headingId }),
    el(
      'dl',
      {},
      msgEl('dt', 'logs.origin'),
      data('dd', log.origin),
      msgEl('dt', 'logs.treeSize'),
      data('dd', String(log.tree_size)),
      msgEl('dt', 'logs.vkey'),
      el('dd', {}, data('code', log.vkey)),
      msgEl('dt', 'logs.keyId'),
      key ? msgEl('dd', 'logs.keyIdState', { keyId: key.keyId, state: { key: pinState } }) : msgEl('dd', 'logs.keyUnreadable'),
      msgEl('dt', 'logs.signature'),
      sig,
    ),
    msgEl('p', 'logs.checkpoint', {}, { class: 'hint', id: `${headingId}-cp` }),
    cpPre,
    el('div', { class: 'buttons' }, pinBtn),
    renderTypes(log, headingId),
  );
  fetchText(`/logs/${encodeURIComponent(log.name)}/checkpoint`)
    .then((note) => {
      cpPre.removeAttribute('data-i18n-dyn');
      cpPre._msg = null;
      cpPre.textContent = note;
      if (!key) return;
      try {
        const cp = v.openCheckpoint(note, key);
        setMsg(sig, 'logs.sigValid', { size: cp.size });
      } catch (e) {
        setMsg(sig, 'logs.sigInvalid', { reason: v.messageOf(e) });
      }
    })
    .catch((e) => setMsg(cpPre, 'logs.error', { reason: v.messageOf(e) }));
  return box;
}

/** The log's record types from its registry, each with its schema. */
function renderTypes(log, headingId) {
  const list = el('div', { class: 'types', 'aria-live': 'polite' });
  setMsg(list, 'common.loading');
  fetchJson(`/logs/${encodeURIComponent(log.name)}/types`)
    .then((answer) => {
      if (!answer.types.length) {
        setMsg(list, 'logs.typesNone');
        return;
      }
      list.replaceChildren(
        ...answer.types.map((t) => {
          const d = t.definition;
          return el(
            'details',
            { class: 'type', 'data-type': t.name },
            el(
              'summary',
              {},
              data('strong', t.name),
              ' ',
              msgEl('span', 'logs.typeVersion', { version: t.version, index: t.index, writers: (d.writers || []).join(', ') }),
              d.description ? el('span', { class: 'hint' }, ' — ', data('span', d.description)) : '',
            ),
            msgEl('p', 'logs.typeSchema', {}, { class: 'hint' }),
            data('pre', JSON.stringify({ subject: d.subject, schema: d.schema }, null, 2)),
          );
        }),
      );
    })
    .catch((e) => setMsg(list, 'logs.error', { reason: v.messageOf(e) }));
  return el('section', { 'aria-labelledby': `${headingId}-types` }, msgEl('h4', 'logs.types', {}, { id: `${headingId}-types` }), list);
}

// ---------- look-up

async function lookup(ev) {
  ev.preventDefault();
  const result = $('lookup-result');
  const detail = $('lookup-detail');
  const name = $('lookup-log').value;
  const q = $('lookup-q').value.trim();
  const log = logs.find((l) => l.name === name);
  detail.replaceChildren();
  if (!log) {
    setResult(result, false, 'lookup.chooseLog');
    return;
  }
  const base = `/logs/${encodeURIComponent(name)}`;
  let entryUrl;
  if (/^(0|[1-9][0-9]*)$/.test(q)) entryUrl = `${base}/entries/${q}`;
  else if (/^[0-9a-fA-F]{64}$/.test(q)) entryUrl = `${base}/entries?leaf_hash=${q.toLowerCase()}`;
  else {
    setResult(result, false, 'lookup.badQuery');
    return;
  }
  setResult(result, null, 'lookup.busy');
  let entry, proof;
  try {
    entry = await fetchJson(entryUrl);
    proof = await fetchJson(`${base}/proofs/inclusion?index=${entry.index}`);
  } catch (e) {
    setResult(result, false, 'lookup.error', { reason: v.messageOf(e) });
    return;
  }

  // Check what the server sent, here.
  let key = null;
  let keySource = 'lookup.keyAbove';
  try {
    const k = currentKey();
    if (k && k.name === log.origin) key = k;
  } catch {
    key = null;
  }
  if (!key) {
    const k = keyFor(log.origin, logs);
    key = k.key;
    keySource = k.source === 'pinned' ? 'lookup.keyPinned' : 'lookup.keyServer';
  }
  const steps = [];
  let failed = null;
  const add = (step, ok, m) => {
    steps.push({ step, ok, msg: m });
    if (ok === false && !failed) failed = { step, msg: m };
  };
  const lh = v.leafHash(new TextEncoder().encode(entry.leaf));
  if (v.toHex(lh) === String(entry.leaf_hash).toLowerCase()) add(v.STEP_LEAF_HASH, true, v.msg('v.leafOk', { hash: v.toHex(lh) }));
  else add(v.STEP_LEAF_HASH, false, v.msg('lookup.leafMismatch', { got: v.toHex(lh), claimed: entry.leaf_hash }));
  let cp = null;
  if (!proof.checkpoint) add(v.STEP_SIGNATURE, false, v.msg('lookup.noCheckpoint'));
  else if (!key) add(v.STEP_SIGNATURE, false, v.msg('verify.noKeyShort'));
  else {
    try {
      cp = v.openCheckpoint(proof.checkpoint, key);
      add(v.STEP_SIGNATURE, true, v.msg('lookup.sigOk', { name: key.name, keyId: key.keyId, source: { key: keySource }, size: cp.size }));
    } catch (e) {
      add(v.STEP_SIGNATURE, false, v.messageOf(e));
    }
  }
  if (cp) {
    try {
      const hashes = proof.inclusion_proof.map((h) => v.hashFromHex(h));
      v.verifyInclusion(lh, BigInt(entry.index), cp.size, hashes, cp.root);
      add(v.STEP_INCLUSION, true, v.msg('v.inclusionOk', { n: hashes.length, index: entry.index, size: cp.size }));
    } catch (e) {
      add(v.STEP_INCLUSION, false, v.messageOf(e));
    }
  } else add(v.STEP_INCLUSION, null, v.msg('v.notChecked'));

  let pretty = entry.leaf;
  try {
    pretty = JSON.stringify(JSON.parse(entry.leaf), null, 2);
  } catch {
    // not JSON: show as is
  }
  const stepsList = el('ol', { class: 'steps', 'aria-labelledby': 'lookup-checks-h' });
  renderSteps(stepsList, steps);
  const printable = el('a', { class: 'button-link', href: `/receipt#log=${encodeURIComponent(name)}&index=${entry.index}&leaf_hash=${entry.leaf_hash}` });
  setMsg(printable, 'lookup.printable');
  detail.replaceChildren(
    el(
      'dl',
      { id: 'entry-detail' },
      msgEl('dt', 'lookup.index'),
      data('dd', String(entry.index)),
      msgEl('dt', 'lookup.leafHash'),
      el('dd', {}, data('code', entry.leaf_hash)),
      msgEl('dt', 'lookup.treeSize'),
      data('dd', String(proof.tree_size)),
    ),
    msgEl('h3', 'lookup.entry', {}, { id: 'lookup-entry-h' }),
    data('pre', pretty, { 'aria-labelledby': 'lookup-entry-h' }),
    msgEl('h3', 'lookup.proof', { n: proof.inclusion_proof.length }, { id: 'lookup-proof-h' }),
    el('ol', { id: 'proof-hashes', class: 'hashes', 'aria-labelledby': 'lookup-proof-h' }, ...proof.inclusion_proof.map((h) => el('li', {}, data('code', h)))),
    msgEl('h3', 'lookup.checkpoint', {}, { id: 'lookup-cp-h' }),
    data('pre', proof.checkpoint || '—', { 'aria-labelledby': 'lookup-cp-h' }),
    msgEl('h3', 'lookup.checks', {}, { id: 'lookup-checks-h' }),
    stepsList,
    el('p', {}, printable),
  );
  if (failed) setResult(result, false, 'lookup.failed', { index: entry.index, step: { key: stepKey(failed.step) }, detail: failed.msg });
  else setResult(result, true, 'lookup.ok', { index: entry.index, size: cp.size });
}

// ---------- wiring

/** The log of the receipt in the box (by its origin), else this server's first log. */
async function receiptLog() {
  if (!logs.length) await refreshLogs().catch(() => []);
  let origin = null;
  try {
    origin = JSON.parse(receiptText()).log;
  } catch {
    origin = null;
  }
  return logs.find((l) => l.origin === origin) || logs[0];
}

function init() {
  initPage();
  keyField.wire('pin-key', 'unpin-key');
  $('server-key').addEventListener('click', async () => {
    const log = await receiptLog();
    if (log) {
      $('vkey').value = log.vkey;
      updateKeyInfo();
    }
  });
  policyField.wire('pin-policy', 'unpin-policy');
  $('server-policy').addEventListener('click', async () => {
    const log = await receiptLog();
    if (!log) return;
    try {
      $('policy').value = await fetchText(`/logs/${encodeURIComponent(log.name)}/witness-policy`);
    } catch {
      setResult($('verify-result'), false, 'policy.noServerPolicy');
      return;
    }
    updatePolicyInfo();
  });
  $('verify-btn').addEventListener('click', verifyNow);
  $('share-btn').addEventListener('click', shareLink);
  $('receipt-file').addEventListener('change', (e) => {
    const f = e.target.files && e.target.files[0];
    if (f) loadFile(f);
  });
  $('scan-file').addEventListener('change', (e) => {
    const f = e.target.files && e.target.files[0];
    if (f) scanFile(f);
  });
  $('camera-btn').addEventListener('click', startCamera);
  $('camera-stop').addEventListener('click', stopCamera);
  const zone = $('verify');
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    $('drop').classList.add('over');
  });
  zone.addEventListener('dragleave', () => $('drop').classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    $('drop').classList.remove('over');
    const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) loadFile(f);
  });
  $('lookup-form').addEventListener('submit', lookup);
  window.addEventListener('hashchange', loadReceiptFromHash);
  setAttrMsg($('receipt'), 'placeholder', 'verify.receiptPlaceholder');
  updateKeyInfo();
  updatePolicyInfo();
  showLogs();
  loadReceiptFromHash();
}

init();
