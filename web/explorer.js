// The explorer: a log's records newest first, paged, filtered by agency,
// type and time, each with its inclusion proof checked here against the
// log's signed checkpoint. Records come from records.js (the public tiles);
// the filters and the page are kept in the address, so a link shows the
// same page.

import * as v from './verify.js';
import { setMsg, setTime, setAttrMsg } from './i18n.js';
import { $, data, el, fetchBytes, fetchJson, fetchText, initPage, keyFor, loadLogs, msgEl, setResult } from './common.js';
import { TileSource } from './records.js';

const enc = new TextEncoder();
/** Proof requests in flight at once. */
const PROOF_CONCURRENCY = 6;

const state = {
  logs: [],
  log: null,
  checkpoint: null, // verified: { size, root }
  source: null,
  filter: {},
  size: 20,
  before: null, // null: the newest page
  stack: [], // `before` of the pages newer than this one
  seen: { agencies: new Set(), types: new Set() },
  run: 0,
};

// ---------- the address

function readHash() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ''));
  return {
    log: p.get('log') || '',
    agency: p.get('agency') || '',
    type: p.get('type') || '',
    since: p.get('since') || '',
    until: p.get('until') || '',
    size: Number(p.get('size')) || 20,
    before: /^[0-9]+$/.test(p.get('before') || '') ? Number(p.get('before')) : null,
  };
}

function writeHash() {
  const p = new URLSearchParams();
  p.set('log', state.log.name);
  for (const k of ['agency', 'type', 'since', 'until']) if ($(`f-${k}`).value) p.set(k, $(`f-${k}`).value);
  p.set('size', String(state.size));
  if (state.before !== null) p.set('before', String(state.before));
  history.replaceState(null, '', `#${p}`);
}

function filterFromForm() {
  const time = (id) => {
    const s = $(id).value;
    if (!s) return null;
    const d = new Date(s); // a datetime-local value: the reader's local time
    return Number.isNaN(d.getTime()) ? null : d;
  };
  return { agency: $('f-agency').value.trim(), type: $('f-type').value.trim(), since: time('f-since'), until: time('f-until') };
}

// ---------- checkpoint

async function openLog() {
  const status = $('checkpoint-status');
  state.checkpoint = null;
  state.source = null;
  const log = state.log;
  const { key, source } = keyFor(log.origin, state.logs);
  if (!key) {
    setResult(status, false, 'explorer.noKey');
    return false;
  }
  let note;
  try {
    note = await fetchText(`/logs/${encodeURIComponent(log.name)}/checkpoint`);
  } catch (e) {
    setResult(status, false, 'explorer.cpError', { reason: v.messageOf(e) });
    return false;
  }
  let cp;
  try {
    cp = v.openCheckpoint(note, key);
  } catch (e) {
    setResult(status, false, 'explorer.cpBad', { reason: v.messageOf(e) });
    return false;
  }
  state.checkpoint = cp;
  state.source = new TileSource(`/logs/${encodeURIComponent(log.name)}`, Number(cp.size), fetchBytes);
  setResult(status, source === 'pinned' ? true : 'warn', source === 'pinned' ? 'explorer.cpPinned' : 'explorer.cpServer', {
    size: cp.size,
    keyId: key.keyId,
  });
  return true;
}

// ---------- records

function cell(labelKey, ...children) {
  const td = el('td', {}, ...children);
  setAttrMsg(td, 'data-label', labelKey);
  return td;
}

function row(e) {
  const rec = e.record;
  const proof = el('td', { class: 'proof', 'data-state': 'pending' });
  setAttrMsg(proof, 'data-label', 'explorer.colProof');
  setMsg(proof, 'explorer.proofPending');
  const tr = el(
    'tr',
    { 'data-index': String(e.index) },
    cell('explorer.colIndex', data('span', String(e.index))),
    cell('explorer.colTime', rec ? setTime(el('time'), rec.ts) : '—'),
    cell('explorer.colAgency', rec ? data('span', rec.agency, { class: 'agency' }) : '—'),
    cell('explorer.colType', rec ? data('span', rec.type, { class: 'type' }) : msgEl('span', 'explorer.notRecord')),
    cell('explorer.colSubject', rec && rec.subject !== undefined ? data('span', rec.subject) : '—'),
    proof,
    cell('explorer.colReceipt', receiptLink(e)),
  );
  return { tr, proof };
}

function receiptLink(e) {
  const lh = v.toHex(v.leafHash(e.bytes));
  const a = el('a', { href: `/receipt#log=${encodeURIComponent(state.log.name)}&index=${e.index}&leaf_hash=${lh}` });
  setMsg(a, 'explorer.receiptLink', { index: e.index });
  return a;
}

/** Fetches and checks the inclusion proof of one shown record against the verified checkpoint. */
async function checkProof(e, td) {
  const cp = state.checkpoint;
  try {
    const body = await fetchJson(`/logs/${encodeURIComponent(state.log.name)}/proofs/inclusion?index=${e.index}&tree_size=${cp.size}`);
    if (BigInt(body.tree_size) !== cp.size) throw new v.VerifyError('explorer.proofSize', { got: body.tree_size, want: cp.size });
    const hashes = body.inclusion_proof.map((h, i) => v.hashFromHex(h, `inclusion_proof[${i}]`));
    v.verifyInclusion(v.leafHash(e.bytes), BigInt(e.index), cp.size, hashes, cp.root);
    td.dataset.state = 'ok';
    td.className = 'proof ok';
    setMsg(td, 'explorer.proofOk', { n: hashes.length });
    return true;
  } catch (err) {
    td.dataset.state = 'bad';
    td.className = 'proof bad';
    setMsg(td, 'explorer.proofBad', { reason: v.messageOf(err) });
    return false;
  }
}

async function checkAll(items, run) {
  let next = 0;
  let ok = 0;
  const worker = async () => {
    while (next < items.length && run === state.run) {
      const it = items[next++];
      if (await checkProof(it.e, it.proof)) ok++;
    }
  };
  await Promise.all(Array.from({ length: PROOF_CONCURRENCY }, worker));
  return ok;
}

function remember(records) {
  for (const e of records) {
    if (!e.record) continue;
    state.seen.agencies.add(e.record.agency);
    state.seen.types.add(e.record.type);
  }
  const opts = (set) => [...set].sort().map((x) => el('option', { value: x }));
  $('agencies-seen').replaceChildren(...opts(state.seen.agencies));
  $('types-seen').replaceChildren(...opts(state.seen.types));
}

async function showPage() {
  const run = ++state.run;
  const body = $('records-body');
  const status = $('explorer-status');
  body.replaceChildren();
  delete status.dataset.state;
  $('newer').disabled = true;
  $('older').disabled = true;
  if (!state.source) return;
  writeHash();
  setMsg(status, 'explorer.loading');
  let page;
  try {
    page = await state.source.query(state.filter, { before: state.before ?? undefined, limit: state.size });
  } catch (e) {
    setMsg(status, 'explorer.readError', { reason: v.messageOf(e) });
    status.dataset.state = 'bad';
    return;
  }
  if (run !== state.run) return;
  remember(page.records);
  const items = page.records.map((e) => ({ e, ...row(e) }));
  body.replaceChildren(...items.map((it) => it.tr));
  const pageNo = state.stack.length + 1;
  setMsg($('page-no'), 'explorer.pageNo', { n: pageNo });
  $('newer').disabled = state.before === null;
  $('older').disabled = page.next === null;
  state.next = page.next;
  if (!items.length) {
    setMsg(status, 'explorer.none', { size: state.checkpoint.size });
    status.dataset.state = 'none';
    return;
  }
  const first = items[0].e.index;
  const last = items[items.length - 1].e.index;
  setMsg(status, 'explorer.checking', { n: items.length, first, last });
  const ok = await checkAll(items, run);
  if (run !== state.run) return;
  const params = { n: items.length, first, last, ok, size: state.checkpoint.size };
  setMsg(status, ok === items.length ? 'explorer.allOk' : 'explorer.someBad', params);
  status.dataset.state = ok === items.length ? 'ok' : 'bad';
  status.dataset.shown = String(items.length);
}

// ---------- wiring

function selectLog(name) {
  state.log = state.logs.find((l) => l.name === name) || state.logs[0] || null;
  if (state.log) {
    $('f-log').value = state.log.name;
    offerRegisteredTypes(state.log);
  }
}

/** The type filter offers every type of the log's registry (and the types of the records seen). */
async function offerRegisteredTypes(log) {
  try {
    const answer = await fetchJson(`/logs/${encodeURIComponent(log.name)}/types`);
    for (const t of answer.types) state.seen.types.add(t.name);
    remember([]);
  } catch {
    // The filter still learns the types of the records it shows.
  }
}

async function restart() {
  state.filter = filterFromForm();
  state.size = Number($('f-size').value) || 20;
  state.before = null;
  state.stack = [];
  await showPage();
}

async function init() {
  initPage();
  try {
    state.logs = await loadLogs();
  } catch (e) {
    setResult($('checkpoint-status'), false, 'explorer.cpError', { reason: v.messageOf(e) });
    return;
  }
  $('f-log').replaceChildren(...state.logs.map((l) => el('option', { value: l.name }, `${l.name} (${l.origin})`)));
  if (!fromHash()) {
    setResult($('checkpoint-status'), false, 'explorer.noLogs');
    return;
  }
  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    restart();
  });
  $('f-log').addEventListener('change', async () => {
    selectLog($('f-log').value);
    if (await openLog()) restart();
  });
  $('f-clear').addEventListener('click', () => {
    for (const k of ['agency', 'type', 'since', 'until']) $(`f-${k}`).value = '';
    restart();
  });
  $('f-refresh').addEventListener('click', async () => {
    if (await openLog()) restart();
  });
  $('older').addEventListener('click', () => {
    if (state.next === null || state.next === undefined) return;
    state.stack.push(state.before);
    state.before = state.next;
    showPage();
  });
  $('newer').addEventListener('click', () => {
    state.before = state.stack.length ? state.stack.pop() : null;
    showPage();
  });
  // A link opened on this page (only the fragment changes): show what it says.
  window.addEventListener('hashchange', async () => {
    state.run++; // what was being shown is stale now
    $('records-body').replaceChildren();
    delete $('explorer-status').dataset.state;
    if (fromHash() && (await openLog())) await showPage();
  });
  if (await openLog()) await showPage();
}

/** Sets the log, the filters and the page from the address; false if there is no log. */
function fromHash() {
  const h = readHash();
  selectLog(h.log);
  if (!state.log) return false;
  $('f-agency').value = h.agency;
  $('f-type').value = h.type;
  $('f-since').value = h.since;
  $('f-until').value = h.until;
  $('f-size').value = String([20, 50, 100].includes(h.size) ? h.size : 20);
  state.filter = filterFromForm();
  state.size = Number($('f-size').value);
  state.before = h.before;
  state.stack = [];
  return true;
}

init();
