// The page: logs and their checkpoints, entry look-up with its inclusion
// proof, and the receipt verifier. All checking is done here, in the
// browser, by verify.js; the server is only asked for data.

import * as v from './verify.js';

const $ = (id) => document.getElementById(id);
const PIN_STORE = 'stele.pinned-vkeys';

let logs = [];

// ---------- small DOM helpers (text only: nothing from the network is parsed as HTML)

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, val] of Object.entries(attrs)) {
    if (k === 'class') e.className = val;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'id' || k === 'for') e.setAttribute(k, val);
    else e[k] = val;
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

function setResult(node, ok, text) {
  node.className = 'result ' + (ok === true ? 'ok' : ok === false ? 'bad' : '');
  node.textContent = text;
}

function renderSteps(list, steps) {
  list.replaceChildren(
    ...steps.map((s) => {
      const mark = s.ok === true ? '✓' : s.ok === false ? '✗' : '·';
      const state = s.ok === true ? 'ok' : s.ok === false ? 'bad' : 'unchecked';
      const status = s.ok === true ? 'passed' : s.ok === false ? 'FAILED' : 'not checked';
      return el(
        'li',
        { class: state, 'data-step': s.step, 'data-ok': String(s.ok) },
        el('span', { class: 'mark', 'aria-hidden': 'true' }, mark),
        el('span', { class: 'name' }, `${s.step}: `),
        el('span', { class: 'status' }, status),
        s.ok === null ? null : el('span', { class: 'detail' }, s.detail),
      );
    }),
  );
}

async function fetchJson(url) {
  const r = await fetch(url, { headers: { accept: 'application/json' } });
  const text = await r.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (!r.ok) {
    const msg = body && (body.title || body.detail) ? [body.title, body.detail].filter(Boolean).join(': ') : text.slice(0, 200);
    throw new Error(`${r.status} ${msg}`);
  }
  if (body === null) throw new Error(`${url}: not JSON`);
  return body;
}

async function fetchText(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.text();
}

// ---------- pinned keys

function pinned() {
  try {
    return JSON.parse(localStorage.getItem(PIN_STORE) || '{}') || {};
  } catch {
    return {};
  }
}

function savePinned(p) {
  localStorage.setItem(PIN_STORE, JSON.stringify(p));
}

function currentKey() {
  const text = $('vkey').value.trim();
  if (!text) return null;
  return v.parseVkey(text);
}

function updateKeyInfo() {
  const info = $('vkey-info');
  let key;
  try {
    key = currentKey();
  } catch (e) {
    info.textContent = `Not a usable key: ${e.message}`;
    return;
  }
  if (!key) {
    info.textContent = 'No key yet: paste the log’s verifier key, or use a pinned one.';
    return;
  }
  const pin = pinned()[key.name];
  const pinNote = pin === key.vkey ? 'pinned in this browser' : pin ? 'DIFFERS from the key pinned for this log' : 'not pinned';
  info.textContent = `Key for ${key.name}, key ID ${key.keyId} (${pinNote}).`;
}

function useKeyFor(origin) {
  const pin = pinned()[origin];
  if (pin) {
    $('vkey').value = pin;
    updateKeyInfo();
    return true;
  }
  return false;
}

// ---------- receipt verification

function receiptText() {
  return $('receipt').value.trim();
}

function verifyNow() {
  const result = $('verify-result');
  const list = $('verify-steps');
  const text = receiptText();
  if (!text) {
    setResult(result, null, 'Paste or drop a receipt first.');
    list.replaceChildren();
    return;
  }
  let receipt;
  try {
    receipt = JSON.parse(text);
  } catch (e) {
    receipt = undefined;
    const r = { steps: [{ step: v.STEP_PARSE, ok: false, detail: `not JSON: ${e.message}` }] };
    for (const s of v.RECEIPT_STEPS.slice(1)) r.steps.push({ step: s, ok: null, detail: 'not checked' });
    renderSteps(list, r.steps);
    setResult(result, false, `✗ Verification failed at step “${v.STEP_PARSE}”: the receipt is not JSON.`);
    return;
  }
  if (!$('vkey').value.trim() && receipt && typeof receipt.log === 'string') useKeyFor(receipt.log);
  let key;
  try {
    key = currentKey();
  } catch (e) {
    setResult(result, false, `✗ The verifier key is not usable: ${e.message}`);
    list.replaceChildren();
    return;
  }
  if (!key) {
    setResult(result, false, '✗ No verifier key: paste the log’s key (or pin it) to check the signature.');
    list.replaceChildren();
    return;
  }
  const r = v.verifyReceipt(receipt, key);
  renderSteps(list, r.steps);
  if (r.ok) {
    setResult(
      result,
      true,
      `✓ Receipt verified: entry ${receipt.index} is in log ${receipt.log} (tree size ${r.checkpoint.size}), signed by key ${key.keyId}.`,
    );
  } else {
    setResult(result, false, `✗ Verification failed at step “${r.failed.step}”: ${r.failed.detail}`);
  }
}

function loadReceiptFromHash() {
  const m = /(?:^#|&)receipt=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (!m) return false;
  try {
    $('receipt').value = new TextDecoder().decode(v.fromBase64Url(m[1]));
  } catch (e) {
    setResult($('verify-result'), false, `✗ The link’s receipt could not be read: ${e.message}`);
    return false;
  }
  verifyNow();
  return true;
}

async function loadFile(file) {
  $('receipt').value = await file.text();
  verifyNow();
}

function shareLink() {
  const text = receiptText();
  if (!text) return;
  let compact = text;
  try {
    compact = JSON.stringify(JSON.parse(text));
  } catch {
    // share as typed
  }
  const url = `${location.origin}${location.pathname}#receipt=${v.toBase64Url(new TextEncoder().encode(compact))}`;
  history.replaceState(null, '', url);
  if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
  setResult($('verify-result'), null, 'The address bar now holds a link to this receipt (copied if the browser allowed it).');
}

// ---------- logs

function logKey(log) {
  try {
    return v.parseVkey(log.vkey);
  } catch {
    return null;
  }
}

async function loadLogs() {
  const box = $('logs-list');
  try {
    logs = (await fetchJson('/logs')).logs || [];
  } catch (e) {
    box.textContent = `Could not load the logs: ${e.message}`;
    return;
  }
  const select = $('lookup-log');
  select.replaceChildren(...logs.map((l) => el('option', { value: l.name }, `${l.name} (${l.origin})`)));
  box.replaceChildren(...logs.map(renderLog));
}

function renderLog(log) {
  const key = logKey(log);
  const cpPre = el('pre', { 'aria-label': `Latest checkpoint of ${log.name}` }, 'Loading…');
  const sig = el('dd', {}, '…');
  const pinBtn = el('button', { type: 'button' }, 'Pin this log’s key');
  pinBtn.addEventListener('click', () => {
    const p = pinned();
    p[log.origin] = log.vkey;
    savePinned(p);
    $('vkey').value = log.vkey;
    updateKeyInfo();
    pinBtn.textContent = 'Pinned';
  });
  const pin = pinned()[log.origin];
  const pinState = pin === log.vkey ? 'pinned in this browser' : pin ? 'DIFFERENT from the key pinned in this browser!' : 'not pinned';
  const box = el(
    'article',
    { class: 'log', 'data-log': log.name },
    el('h3', {}, log.name),
    el(
      'dl',
      {},
      el('dt', {}, 'Origin'),
      el('dd', {}, log.origin),
      el('dt', {}, 'Tree size'),
      el('dd', {}, String(log.tree_size)),
      el('dt', {}, 'Verifier key'),
      el('dd', {}, el('code', {}, log.vkey)),
      el('dt', {}, 'Key ID'),
      el('dd', {}, key ? `${key.keyId} (${pinState})` : 'unreadable key'),
      el('dt', {}, 'Signature'),
      sig,
    ),
    cpPre,
    el('div', { class: 'buttons' }, pinBtn),
  );
  fetchText(`/logs/${encodeURIComponent(log.name)}/checkpoint`)
    .then((note) => {
      cpPre.textContent = note;
      if (!key) return;
      try {
        const cp = v.openCheckpoint(note, key);
        sig.textContent = `✓ valid, by the published key; tree size ${cp.size}`;
      } catch (e) {
        sig.textContent = `✗ ${e.message}`;
      }
    })
    .catch((e) => {
      cpPre.textContent = `Could not load: ${e.message}`;
    });
  return box;
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
    setResult(result, false, 'Choose a log.');
    return;
  }
  const base = `/logs/${encodeURIComponent(name)}`;
  let entryUrl;
  if (/^(0|[1-9][0-9]*)$/.test(q)) entryUrl = `${base}/entries/${q}`;
  else if (/^[0-9a-fA-F]{64}$/.test(q)) entryUrl = `${base}/entries?leaf_hash=${q.toLowerCase()}`;
  else {
    setResult(result, false, 'Enter an entry index (a number) or a leaf hash (64 hex digits).');
    return;
  }
  setResult(result, null, 'Looking up…');
  let entry, proof;
  try {
    entry = await fetchJson(entryUrl);
    proof = await fetchJson(`${base}/proofs/inclusion?index=${entry.index}`);
  } catch (e) {
    setResult(result, false, `✗ ${e.message}`);
    return;
  }

  // Check what the server sent, here.
  let key = null;
  let keySource = '';
  try {
    const k = currentKey();
    if (k && k.name === log.origin) {
      key = k;
      keySource = 'the key above';
    }
  } catch {
    key = null;
  }
  if (!key) {
    key = logKey(log);
    keySource = 'the key this server publishes (pin a key to check against your own)';
  }
  const steps = [];
  let failed = null;
  const add = (step, ok, d) => {
    steps.push({ step, ok, detail: d });
    if (ok === false && !failed) failed = { step, detail: d };
  };
  const lh = v.leafHash(new TextEncoder().encode(entry.leaf));
  if (v.toHex(lh) === String(entry.leaf_hash).toLowerCase()) add(v.STEP_LEAF_HASH, true, `SHA-256(0x00 || leaf) = ${v.toHex(lh)}`);
  else add(v.STEP_LEAF_HASH, false, `SHA-256(0x00 || leaf) is ${v.toHex(lh)}, the server says ${entry.leaf_hash}`);
  let cp = null;
  if (!proof.checkpoint) add(v.STEP_SIGNATURE, false, 'the server sent no checkpoint for this proof');
  else {
    try {
      cp = v.openCheckpoint(proof.checkpoint, key);
      add(v.STEP_SIGNATURE, true, `signed by ${key.name} (key ID ${key.keyId}), checked with ${keySource}; tree size ${cp.size}`);
    } catch (e) {
      add(v.STEP_SIGNATURE, false, e.message);
    }
  }
  if (cp) {
    try {
      const hashes = proof.inclusion_proof.map((h) => v.hashFromHex(h));
      v.verifyInclusion(lh, BigInt(entry.index), cp.size, hashes, cp.root);
      add(v.STEP_INCLUSION, true, `${hashes.length} hashes lead from entry ${entry.index} to the root of the tree of ${cp.size}`);
    } catch (e) {
      add(v.STEP_INCLUSION, false, e.message);
    }
  } else add(v.STEP_INCLUSION, null, 'not checked');

  let pretty = entry.leaf;
  try {
    pretty = JSON.stringify(JSON.parse(entry.leaf), null, 2);
  } catch {
    // not JSON: show as is
  }
  const stepsList = el('ol', { class: 'steps', 'aria-label': 'Checks of this entry' });
  renderSteps(stepsList, steps);
  detail.replaceChildren(
    el(
      'dl',
      { id: 'entry-detail' },
      el('dt', {}, 'Index'),
      el('dd', {}, String(entry.index)),
      el('dt', {}, 'Leaf hash'),
      el('dd', {}, el('code', {}, entry.leaf_hash)),
      el('dt', {}, 'Tree size'),
      el('dd', {}, String(proof.tree_size)),
    ),
    el('h3', {}, 'Entry'),
    el('pre', { 'aria-label': 'Entry leaf' }, pretty),
    el('h3', {}, `Inclusion proof (${proof.inclusion_proof.length} hashes)`),
    el('ol', { id: 'proof-hashes', class: 'hashes' }, ...proof.inclusion_proof.map((h) => el('li', {}, el('code', {}, h)))),
    el('h3', {}, 'Checkpoint'),
    el('pre', { 'aria-label': 'Checkpoint' }, proof.checkpoint || '(none)'),
    el('h3', {}, 'Checks done in this browser'),
    stepsList,
  );
  if (failed) setResult(result, false, `✗ Entry ${entry.index}: check failed at step “${failed.step}”: ${failed.detail}`);
  else setResult(result, true, `✓ Entry ${entry.index} found; its inclusion proof verifies against the signed checkpoint of size ${cp.size}.`);
}

// ---------- wiring

function init() {
  $('vkey').addEventListener('input', updateKeyInfo);
  $('pin-key').addEventListener('click', () => {
    let key;
    try {
      key = currentKey();
    } catch (e) {
      setResult($('verify-result'), false, `✗ Cannot pin: ${e.message}`);
      return;
    }
    if (!key) return;
    const p = pinned();
    p[key.name] = key.vkey;
    savePinned(p);
    updateKeyInfo();
  });
  $('unpin-key').addEventListener('click', () => {
    let key = null;
    try {
      key = currentKey();
    } catch {
      key = null;
    }
    if (!key) return;
    const p = pinned();
    delete p[key.name];
    savePinned(p);
    updateKeyInfo();
  });
  $('server-key').addEventListener('click', async () => {
    if (!logs.length) await loadLogs();
    let origin = null;
    try {
      origin = JSON.parse(receiptText()).log;
    } catch {
      origin = null;
    }
    const log = logs.find((l) => l.origin === origin) || logs[0];
    if (log) {
      $('vkey').value = log.vkey;
      updateKeyInfo();
    }
  });
  $('verify-btn').addEventListener('click', verifyNow);
  $('share-btn').addEventListener('click', shareLink);
  $('receipt-file').addEventListener('change', (e) => {
    const f = e.target.files && e.target.files[0];
    if (f) loadFile(f);
  });
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
  updateKeyInfo();
  loadLogs();
  loadReceiptFromHash();
}

init();
