// The data subject's page (/disclosure) in headless Chromium against a
// running `stele serve` (the quick start's private example type
// health.case): a disclosure opened from its link lists exactly the reads
// and the erasure of its record, each proven in the browser; the content
// the subject was shown checks against the record's commitment, and altered
// content does not; a made-up capability gets nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { checkA11y, launch, pinKey, setLanguage, startServer, stele, untranslated } from './helpers.mjs';
import { canonical, commitment, parseDisclosure } from '../../web/disclosure.js';
import * as v from '../../web/verify.js';

let srv, context, page, record, link, disclosure, content;

async function call(method, path, token, { body, headers = {} } = {}) {
  const r = await fetch(`${srv.logUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

before(async () => {
  srv = await startServer();
  const t = srv.demoToken;
  const r = await call('POST', '/records', t, { body: { type: 'health.case', subject: 'patient-77QX', attributes: { diagnosis: 'J10.1', opened: '2026-11-30', notes: 'seen at the clinic' } } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  record = r.body;
  for (const purpose of ['treatment', 'follow-up 复诊']) {
    const a = await call('GET', `/records/${record.index}/content`, t, { headers: { 'stele-purpose': encodeURIComponent(purpose) } });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    content = a.body;
  }
  // The CLI issues the disclosure and prints the page's link.
  const out = join(srv.work, 'disclosure.json');
  link = execFileSync(stele, ['disclose', '--log', srv.logUrl, '--index', String(record.index), '--out', out], { encoding: 'utf8', env: { ...process.env, STELE_TOKEN: t } }).trim();
  assert.match(link, /\/disclosure#d=[A-Za-z0-9_-]+$/);
  disclosure = parseDisclosure(link);
  assert.equal(disclosure.index, record.index);
  const e = await call('DELETE', `/records/${record.index}/content?reason=subject-request`, t);
  assert.equal(e.status, 200, JSON.stringify(e.body));
  ({ context, page } = await launch(srv.work));
});

after(async () => {
  if (context) await context.close();
  if (srv) srv.stop();
});

test('the commitment is computed as the server computes it', () => {
  assert.equal(canonical({ b: [1, 'é', null], a: { d: 2.5, c: true } }), '{"a":{"c":true,"d":2.5},"b":[1,"é",null]}');
  assert.equal(commitment(v.fromBase64(content.salt), content.content), content.commitment);
  assert.equal(JSON.parse(record.leaf).commitment, content.commitment);
  // docs/private.md's vector.
  assert.equal(commitment(new Uint8Array(32).fill(7), { subject: 'P-1', attributes: { result: 'positive' } }), 'sha256:4b27c491bc0adca6a89c04beaf4c2dcda02f12733e280aa2b2631c3ea9460cd0');
});

test('a disclosure link lists exactly the record’s reads and its erasure, proven in the browser', async () => {
  await pinKey(page, srv.base, srv.log.origin, srv.log.vkey);
  await page.goto(link);
  const status = page.locator('#disclosure-status');
  await page.waitForSelector('#disclosure-status[data-state="ok"]', { timeout: 15000 });
  assert.match(await status.innerText(), new RegExp(`Record ${record.index}: 3 reads and erasures`));
  const rows = await page.locator('#entries tbody tr').evaluateAll((trs) => trs.map((tr) => [tr.dataset.kind, tr.cells[2].innerText]));
  assert.deepEqual(rows, [
    ['access', 'read by demo: treatment'],
    ['access', 'read by demo: follow-up 复诊'],
    ['erasure', 'erased by demo (subject-request)'],
  ]);
  assert.equal(await page.locator('[data-field="type"]').innerText(), 'health.case');
  // The content the subject was shown (the content answer itself, or its content).
  await page.fill('#content-input', JSON.stringify(content));
  await page.click('#content-btn');
  await page.waitForSelector('#content-status[data-state="ok"]');
  const altered = structuredClone(content.content);
  altered.attributes.diagnosis = 'J10.0';
  await page.fill('#content-input', JSON.stringify(altered));
  await page.click('#content-btn');
  await page.waitForSelector('#content-status[data-state="bad"]');
  await checkA11y(page, 'disclosure page');
  await setLanguage(page, 'zh-CN');
  await page.reload();
  await page.waitForSelector('#disclosure-status[data-state="ok"]', { timeout: 15000 });
  assert.deepEqual(await untranslated(page, 'zh-CN'), []);
  await setLanguage(page, 'en');
  assert.deepEqual(page.problems, []);
});

test('a made-up capability, or another record, gets nothing', async () => {
  for (const d of [{ ...disclosure, capability: 'AAAA' }, { ...disclosure, index: disclosure.index - 1 }]) {
    const bad = `${srv.base}/disclosure#d=${v.toBase64Url(new TextEncoder().encode(JSON.stringify(d)))}`;
    await page.goto('about:blank');
    await page.goto(bad);
    await page.waitForSelector('#disclosure-status[data-state="bad"]', { timeout: 15000 });
    assert.match(await page.locator('#disclosure-status').innerText(), /403/);
    assert.equal(await page.locator('#entries-section').isHidden(), true);
  }
});
