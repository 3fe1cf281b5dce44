// The web page in headless Chromium against a running `stele serve`
// (embedded SQLite): a real receipt verifies in the browser, tampered ones
// fail naming the failed step, a link carries a receipt, an entry look-up
// shows its proof, and the page fits a phone-width screen. Screenshots go to
// tests/artifacts/.
//
// Needs: the stele binary (STELE_BIN, else target/debug/stele) and Chromium
// (CHROMIUM, else /usr/bin/chromium).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import * as ed from '../../web/vendor/noble-ed25519/index.js';
import { sha512 } from '../../web/vendor/noble-hashes/sha2.js';
import { keyId } from '../../web/verify.js';
import { artifacts, chromiumPath, spawnListening, stele } from './helpers.mjs';

ed.hashes.sha512 = sha512;


let work, server, base, logUrl, vkey, origin, receipt, context, page;

async function startServer() {
  const data = join(work, 'data');
  const addrFile = join(work, 'addr');
  // Logs at info: the first start's banner (the demo token) is read below.
  const started = await spawnListening(['serve', '--listen', '127.0.0.1:0', '--addr-file', addrFile, '--data-dir', data], addrFile, join(work, 'serve.log'), { STELE_LOG: 'info' });
  server = started.proc;
  return { addr: started.addr, data };
}

before(async () => {
  assert.ok(existsSync(stele), `stele binary not found at ${stele} (build it, or set STELE_BIN)`);
  assert.ok(existsSync(chromiumPath), `Chromium not found at ${chromiumPath} (apt-get install chromium, or set CHROMIUM)`);
  mkdirSync(artifacts, { recursive: true });
  work = mkdtempSync(join(tmpdir(), 'stele-web-'));
  const { addr } = await startServer();
  base = `http://${addr}`;
  // The first start's agency `demo` writes the example types.
  const banner = readFileSync(join(work, 'serve.log'), 'utf8');
  const token = (banner.match(/\bdemo\.[A-Za-z0-9_-]{20,}/) || [])[0];
  assert.ok(token, `no demo token in: ${banner}`);
  const logs = await (await fetch(`${base}/logs`)).json();
  ({ vkey, origin } = logs.logs[0]);
  logUrl = `${base}/logs/${logs.logs[0].name}`;
  for (const [i, subject] of ['XH-17', 'XH-18', 'XH-19'].entries()) {
    const rec = join(work, `rec${i}.json`);
    writeFileSync(rec, JSON.stringify({ type: 'land.transfer', subject, attributes: { deed: `2026/${17 + i}`, area_m2: 120, use: 'residential' } }));
    execFileSync(stele, ['submit', '--log', logUrl, '--token', token, rec], { encoding: 'utf8' });
  }
  receipt = JSON.parse(readFileSync(join(work, 'rec1.receipt.json'), 'utf8'));

  context = await chromium.launchPersistentContext(join(work, 'chromium-profile'), {
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1100, height: 1400 },
  });
  page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.problems = problems;
});

after(async () => {
  if (context) await context.close();
  if (server) server.kill();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function verifyInPage(r, key) {
  await page.goto(`${base}/`);
  await page.fill('#vkey', key);
  await page.fill('#receipt', typeof r === 'string' ? r : JSON.stringify(r, null, 2));
  await page.click('#verify-btn');
  await page.waitForSelector('#verify-result.ok, #verify-result.bad');
  return {
    ok: await page.locator('#verify-result').evaluate((e) => e.classList.contains('ok')),
    text: await page.locator('#verify-result').innerText(),
  };
}

test('a real receipt verifies in the browser', async () => {
  const r = await verifyInPage(receipt, vkey);
  assert.ok(r.ok, r.text);
  assert.match(r.text, /Receipt verified/);
  const passed = await page.locator('#verify-steps li[data-ok="true"]').count();
  assert.equal(passed, 5, 'all five steps pass');
  assert.match(await page.locator('#vkey-info').innerText(), new RegExp(`key ID ${vkey.split('+')[1]}`));
  await page.screenshot({ path: join(artifacts, 'web-receipt-verified.png'), fullPage: true });
  assert.deepEqual(page.problems, []);
});

test('tampered receipts fail and name the failed step', async () => {
  const cases = [
    ['leaf', { ...receipt, leaf: receipt.leaf.replace('XH-18', 'XH-81') }, 'leaf hash'],
    ['proof hash', { ...receipt, inclusion_proof: [receipt.inclusion_proof[0].replace(/^./, (c) => (c === '0' ? '1' : '0'))] }, 'inclusion proof'],
    ['index', { ...receipt, index: receipt.index + 1 }, 'inclusion proof'],
    ['checkpoint size', { ...receipt, checkpoint: receipt.checkpoint.replace(/\n(\d+)\n/, (m, n) => `\n${Number(n) + 1}\n`) }, 'checkpoint signature'],
  ];
  for (const [what, tampered, step] of cases) {
    const r = await verifyInPage(tampered, vkey);
    assert.ok(!r.ok, `${what}: verified anyway`);
    assert.ok(r.text.includes(`failed at step “${step}”`), `${what}: ${r.text}`);
    const failed = page.locator(`#verify-steps li[data-step="${step}"][data-ok="false"]`);
    assert.equal(await failed.count(), 1, `${what}: step ${step} not shown as failed`);
    assert.ok(await failed.isVisible());
    if (what === 'leaf') await page.screenshot({ path: join(artifacts, 'web-receipt-tampered.png'), fullPage: true });
  }
  // A wrong key (a real key, under the log's name) fails at the signature.
  const secret = ed.utils.randomSecretKey();
  const pub = ed.getPublicKey(secret);
  const other = `${origin}+${keyId(origin, pub)}+${Buffer.concat([Buffer.from([1]), Buffer.from(pub)]).toString('base64')}`;
  const r = await verifyInPage(receipt, other);
  assert.ok(!r.ok, r.text);
  assert.ok(r.text.includes('failed at step “checkpoint signature”'), r.text);
  await page.screenshot({ path: join(artifacts, 'web-receipt-wrong-key.png'), fullPage: true });
});

test('a pinned key and a link carrying the receipt', async () => {
  await page.goto(`${base}/`);
  await page.fill('#vkey', vkey);
  await page.click('#pin-key');
  assert.match(await page.locator('#vkey-info').innerText(), /pinned in this browser/);
  const b64 = Buffer.from(JSON.stringify(receipt)).toString('base64url');
  await page.goto(`${base}/#receipt=${b64}`);
  await page.reload();
  await page.waitForSelector('#verify-result.ok, #verify-result.bad');
  const text = await page.locator('#verify-result').innerText();
  assert.match(text, /Receipt verified/, 'the pinned key is used for the linked receipt');
  assert.equal(await page.inputValue('#vkey'), vkey);
});

test('an entry look-up shows its inclusion proof, checked in the browser', async () => {
  await page.goto(`${base}/`);
  await page.waitForSelector('#lookup-log option', { state: 'attached' });
  await page.fill('#lookup-q', String(receipt.index));
  await page.click('#lookup-form button[type="submit"]');
  await page.waitForSelector('#lookup-result.ok, #lookup-result.bad');
  const text = await page.locator('#lookup-result').innerText();
  assert.match(text, new RegExp(`Entry ${receipt.index} found`), text);
  const served = await (await fetch(`${logUrl}/proofs/inclusion?index=${receipt.index}`)).json();
  assert.equal(await page.locator('#proof-hashes li').count(), served.inclusion_proof.length);
  assert.ok(served.inclusion_proof.length > 0);
  assert.equal(await page.locator('#lookup-detail li[data-ok="false"]').count(), 0);
  await page.screenshot({ path: join(artifacts, 'web-entry-lookup.png'), fullPage: true });
  // By leaf hash too.
  await page.fill('#lookup-q', receipt.leaf_hash);
  await page.click('#lookup-form button[type="submit"]');
  await page.waitForFunction((i) => document.querySelector('#lookup-result').innerText.includes(`Entry ${i} found`), receipt.index);
  // The logs list shows the checkpoint with a verified signature.
  const sig = await page.locator(`.log dd:has-text("valid, by the published key")`).count();
  assert.equal(sig, 1);
  assert.ok((await page.locator('.log pre').first().innerText()).startsWith(origin));
});

test('the page fits a phone-width screen', async () => {
  await page.setViewportSize({ width: 360, height: 800 });
  await verifyInPage(receipt, vkey);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `page is ${overflow}px wider than the screen`);
  await page.screenshot({ path: join(artifacts, 'web-phone.png'), fullPage: true });
  // Landmarks and labels for screen readers.
  assert.equal(await page.locator('main').count(), 1);
  assert.equal(await page.locator('[role="status"][aria-live="polite"]').count() >= 2, true);
  for (const id of ['vkey', 'receipt', 'lookup-q', 'lookup-log']) {
    assert.equal(await page.locator(`label[for="${id}"]`).count(), 1, `no label for #${id}`);
  }
  await page.setViewportSize({ width: 1100, height: 1400 });
});

test('the logs list shows the registry: every record type with its rules', async () => {
  await page.goto(`${base}/`);
  await page.waitForSelector('.log details.type[data-type="land.transfer"]');
  const names = await page.locator('.log details.type').evaluateAll((ds) => ds.map((d) => d.dataset.type));
  assert.deepEqual(names, ['disease.covid-test', 'health.case', 'health.vaccination', 'land.transfer', 'parking.status']);
  const land = page.locator('.log details.type[data-type="land.transfer"]');
  await land.locator('summary').click();
  const summary = await land.locator('summary').innerText();
  assert.match(summary, /version 1, defined by entry 0; writers: land-registry, demo/);
  const rules = JSON.parse(await land.locator('pre').innerText());
  assert.equal(rules.subject.pattern, '[A-Z]{2}-[0-9]{1,8}');
  assert.equal(rules.schema.properties.area_m2.exclusiveMinimum, 0);
  await page.screenshot({ path: join(artifacts, 'web-types.png'), fullPage: true });
});
