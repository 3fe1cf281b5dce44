// Printable receipts: `stele submit --print png,pdf` and the receipt page
// (/receipt). Their QR codes are read back with decoders the page does not
// use (jsQR on pictures, pdf.js to render PDFs), the link must be the one the
// page's own code computes (two implementations of the compact form), and
// the decoded link must verify in the page. Screenshots and the PDFs go to
// tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';

import { artifacts, decodePng, launch, pinKey, readPdf, startServer, stele } from './helpers.mjs';
import { qrLink, jsonLink, QR_MAX_BYTES } from '../../web/links.js';

let server, context, page;
const files = {};

function submit(name, record, print) {
  const file = join(server.work, `${name}.json`);
  writeFileSync(file, JSON.stringify(record));
  execFileSync(stele, ['submit', '--log', server.logUrl, '--token', server.token, '--print', print, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return {
    receipt: JSON.parse(readFileSync(join(server.work, `${name}.receipt.json`), 'utf8')),
    png: join(server.work, `${name}.receipt.png`),
    pdf: join(server.work, `${name}.receipt.pdf`),
  };
}

before(async () => {
  server = await startServer();
  server.token = server.addAgency('land-registry');
  // Some history first, so proofs have a few hashes.
  await server.bulk(server.demoToken, Array.from({ length: 40 }, (_, i) => ({ type: 'parking.status', subject: `bay-${i}` })));
  files.deed = submit(
    'deed',
    {
      type: 'land.transfer',
      subject: '地块 12-345',
      content_hash: 'sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
      attributes: { district: '北区', area_m2: 120 },
    },
    'png,pdf',
  );
  // Large attributes: too large for one code, so the QR code is a short link.
  files.big = submit('big', { type: 'land.survey', subject: 'parcel 99-001', attributes: { notes: 'x'.repeat(1500) } }, 'png');
  ({ context, page } = await launch(server.work));
  await pinKey(page, server.base, server.log.origin, server.log.vkey);
});

after(async () => {
  if (context) await context.close();
  if (server) server.stop();
});

const receiptPage = () => `${server.base}/receipt`;

async function statusOf(p) {
  await p.waitForSelector('#receipt-status[data-state="ok"], #receipt-status[data-state="bad"], #receipt-status[data-state="warn"]');
  return { state: await p.getAttribute('#receipt-status', 'data-state'), text: await p.innerText('#receipt-status') };
}

test('stele submit --print: the PNG and the PDF carry the link the page computes, and it verifies', async () => {
  const { receipt } = files.deed;
  const expected = qrLink(receiptPage(), server.log.name, receipt);
  assert.equal(expected.form, 'compact', 'a small receipt travels whole');
  const fromPng = decodePng(readFileSync(files.deed.png));
  assert.equal(fromPng, expected.link, 'the Rust encoder and the page agree byte for byte');
  const pdf = await readPdf(readFileSync(files.deed.pdf));
  assert.equal(pdf.qr, expected.link);
  assert.equal(pdf.pages, 1);
  assert.equal(Math.round(pdf.width), 595, 'A4 wide');
  assert.equal(Math.round(pdf.height), 842, 'A4 high');
  assert.ok(pdf.text.includes('Record receipt'), pdf.text.slice(0, 200));
  assert.ok(pdf.text.includes('地块 12-345'), `the Chinese subject is text in the PDF: ${pdf.text.slice(0, 300)}`);
  copyFileSync(files.deed.pdf, join(artifacts, 'submit-print.pdf'));
  copyFileSync(files.deed.png, join(artifacts, 'submit-print-qr.png'));

  await page.goto(fromPng);
  const s = await statusOf(page);
  assert.equal(s.state, 'ok', s.text);
  assert.match(s.text, new RegExp(`Verified: entry ${receipt.index} is in log`));
  assert.equal(await page.innerText('[data-field="subject"]'), '地块 12-345');
  assert.equal(await page.innerText('[data-field="type"]'), 'land.transfer');
  assert.equal(await page.innerText('[data-field="index"]'), String(receipt.index));
  assert.equal(await page.locator('#receipt-steps li[data-ok="true"]').count(), 5);
  assert.deepEqual(page.problems, []);
});

test('the receipt page prints on one A4 page; its QR code, read by other decoders, verifies', async () => {
  const { receipt } = files.deed;
  await page.goto(jsonLink(receiptPage(), receipt));
  assert.equal((await statusOf(page)).state, 'ok');
  // The time in the reader's locale and zone (the browser runs in Asia/Shanghai).
  const shown = await page.innerText('[data-field="time"]');
  const ts = JSON.parse(receipt.leaf).ts;
  const want = new Intl.DateTimeFormat('en', { dateStyle: 'long', timeStyle: 'long', timeZone: 'Asia/Shanghai' }).format(new Date(ts));
  assert.equal(shown, want);
  const link = await page.getAttribute('svg.qr', 'data-link');
  assert.equal(link, qrLink(receiptPage(), server.log.name, receipt).link);

  const shot = await page.screenshot({ path: join(artifacts, 'receipt-page.png'), fullPage: true });
  assert.equal(decodePng(shot), link, 'the screenshot');
  const pdfBytes = await page.pdf({ format: 'A4', printBackground: true, path: join(artifacts, 'receipt-page.pdf') });
  const pdf = await readPdf(pdfBytes);
  assert.equal(pdf.pages, 1, 'fits one A4 page');
  assert.equal(pdf.qr, link, 'the printed PDF');
  assert.ok(pdf.text.includes('地块 12-345'));
  assert.ok(!pdf.text.includes('Print'), 'no buttons on paper');

  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await statusOf(page);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `receipt page is ${overflow}px wider than a phone`);
  const phone = await page.screenshot({ path: join(artifacts, 'receipt-phone.png'), fullPage: true });
  assert.equal(decodePng(phone), link, 'the code is readable at phone width');
  await page.setViewportSize({ width: 1100, height: 1400 });

  // The decoded link, opened afresh, verifies.
  const fresh = await context.newPage();
  await fresh.goto(pdf.qr);
  const s = await statusOf(fresh);
  assert.equal(s.state, 'ok', s.text);
  await fresh.close();
});

test('a receipt too large for one code gets a short link, which verifies against the log', async () => {
  const { receipt } = files.big;
  const expected = qrLink(receiptPage(), server.log.name, receipt);
  assert.equal(expected.form, 'short');
  assert.ok(expected.compactLength > QR_MAX_BYTES);
  const link = decodePng(readFileSync(files.big.png));
  assert.equal(link, expected.link);
  assert.equal(link, `${receiptPage()}#log=${server.log.name}&index=${receipt.index}&leaf_hash=${receipt.leaf_hash}`);
  await page.goto(link);
  const s = await statusOf(page);
  assert.equal(s.state, 'ok', s.text);
  const steps = await page.locator('#receipt-steps li').evaluateAll((l) => l.map((e) => [e.dataset.step, e.dataset.ok]));
  assert.deepEqual(steps[0], ['fetch', 'true'], 'the page says it fetched the proof');
  assert.equal(steps.filter(([, ok]) => ok === 'true').length, 6);
  assert.equal(await page.getAttribute('svg.qr', 'data-form'), 'short');
  assert.match(await page.innerText('#qr-form'), /too large for one code/);
  await page.screenshot({ path: join(artifacts, 'receipt-short-link.png'), fullPage: true });

  // A short link whose printed leaf hash is not the log's entry fails there.
  const wrong = link.replace(/leaf_hash=(.)/, (m, c) => `leaf_hash=${c === '0' ? '1' : '0'}`);
  await page.goto('about:blank');
  await page.goto(wrong);
  const w = await statusOf(page);
  assert.equal(w.state, 'bad');
  assert.ok(w.text.includes('failed at step “leaf hash”'), w.text);
});

test('a tampered receipt page names the failed step and offers no code to print', async () => {
  const { receipt } = files.deed;
  const tampered = { ...receipt, leaf: receipt.leaf.replace('12-345', '12-346') };
  await page.goto(jsonLink(receiptPage(), tampered));
  const s = await statusOf(page);
  assert.equal(s.state, 'bad');
  assert.ok(s.text.includes('failed at step “leaf hash”'), s.text);
  assert.equal(await page.locator('#receipt-steps li[data-step="leaf hash"][data-ok="false"]').count(), 1);
  assert.equal(await page.locator('svg.qr').count(), 0);
  await page.screenshot({ path: join(artifacts, 'receipt-tampered.png'), fullPage: true });
  // With no key pinned, the page says it used the server's key, not "verified".
  await page.evaluate(() => localStorage.removeItem('stele.pinned-vkeys'));
  await page.goto('about:blank');
  await page.goto(jsonLink(receiptPage(), receipt));
  const u = await statusOf(page);
  assert.equal(u.state, 'warn', u.text);
  assert.match(u.text, /key this server publishes/);
  await pinKey(page, server.base, server.log.origin, server.log.vkey);
});
