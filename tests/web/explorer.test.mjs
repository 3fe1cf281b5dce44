// The explorer (/explorer) over 1,000 records from three agencies, sent as
// bulk POSTs: paging by agency and type and through everything, the time
// filter, every shown record's inclusion proof verified in the browser, and a
// tampered entry bundle caught.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { artifacts, launch, pinKey, sleep, startServer } from './helpers.mjs';

const AGENCIES = ['land-registry', 'hospital', 'parking'];
const TYPES = ['land.transfer', 'land.mortgage', 'health.vaccination', 'parking.status'];

let server, context, page;
const records = []; // by index: { agency, type, subject, ts }
let firstHalfEnd; // index of the last record of the first half, sent a second before the rest
let total; // the tree size: the registry's entries (the types, first) and the 1,000 records

before(async () => {
  server = await startServer();
  const tokens = Object.fromEntries(AGENCIES.map((a) => [a, server.addAgency(a)]));
  // Ten rounds, each agency a bulk POST of ~33 records per round: the
  // agencies interleave along the log. A pause after round five.
  let n = 0;
  for (let round = 0; round < 10; round++) {
    for (const [k, agency] of AGENCIES.entries()) {
      const count = round === 9 && k === 2 ? 1000 - n : 33;
      const batch = Array.from({ length: count }, (_, i) => ({ type: TYPES[(n + i) % TYPES.length], subject: `${agency}-${n + i}` }));
      const receipts = await server.bulk(tokens[agency], batch);
      for (const r of receipts) {
        const leaf = JSON.parse(r.leaf);
        records[r.index] = { agency: leaf.agency, type: leaf.type, subject: leaf.subject, ts: leaf.ts };
      }
      n += count;
    }
    if (round === 4) {
      firstHalfEnd = records.length - 1;
      await sleep(1100);
    }
  }
  assert.equal(records.filter(Boolean).length, 1000);
  total = records.length;
  ({ context, page } = await launch(server.work));
  await pinKey(page, server.base, server.log.origin, server.log.vkey);
});

after(async () => {
  if (context) await context.close();
  if (server) server.stop();
});

/** Waits for the page's proofs to be checked; returns its rows. */
async function pageRows() {
  await page.waitForSelector('#explorer-status[data-state]');
  const state = await page.getAttribute('#explorer-status', 'data-state');
  const rows = await page.locator('#records-body tr').evaluateAll((trs) =>
    trs.map((tr) => ({
      index: Number(tr.dataset.index),
      agency: tr.querySelector('.agency')?.textContent,
      type: tr.querySelector('.type')?.textContent,
      proof: tr.querySelector('td.proof').dataset.state,
    })),
  );
  return { state, rows, text: await page.innerText('#explorer-status') };
}

/** Fills the filters and pages to the end; returns every row seen. */
async function browse({ agency = '', type = '', since = '', until = '', size = '20' }, onPage = () => {}) {
  await page.fill('#f-agency', agency);
  await page.fill('#f-type', type);
  await page.fill('#f-since', since);
  await page.fill('#f-until', until);
  await page.selectOption('#f-size', size);
  await page.evaluate(() => document.querySelector('#explorer-status').removeAttribute('data-state'));
  await page.click('#filters button[type="submit"]');
  const seen = [];
  for (let p = 1; ; p++) {
    const r = await pageRows();
    assert.equal(r.state, r.rows.length ? 'ok' : r.state, r.text);
    for (const row of r.rows) assert.equal(row.proof, 'ok', `entry ${row.index}: proof not verified`);
    seen.push(...r.rows);
    await onPage(p, r);
    if (await page.locator('#older').isDisabled()) break;
    await page.evaluate(() => document.querySelector('#explorer-status').removeAttribute('data-state'));
    await page.click('#older');
  }
  return seen;
}

const expected = (f) =>
  records
    .map((r, index) => ({ ...r, index }))
    .filter((r) => (!f.agency || r.agency === f.agency) && (!f.type || r.type === f.type || (f.type.endsWith('.*') && r.type.startsWith(f.type.slice(0, -1)))))
    .reverse();

test('the explorer pages through 1,000 records by agency and type, every proof verified in the browser', async () => {
  await page.goto(`${server.base}/explorer`);
  await page.waitForSelector('#checkpoint-status[data-state="ok"]');
  assert.match(await page.innerText('#checkpoint-status'), new RegExp(`tree size ${total}, signed by key .* pinned in this browser`));
  // The type filter offers the registry's types, also those no record uses yet.
  await page.waitForFunction(() => [...document.querySelectorAll('#types-seen option')].some((o) => o.value === 'land.survey'));
  const offered = await page.locator('#types-seen option').evaluateAll((os) => os.map((o) => o.value));
  for (const t of ['disease.covid-test', 'land.survey', 'land.mortgage', 'health.visit']) assert.ok(offered.includes(t), `${t} offered: ${offered}`);

  const f = { agency: 'hospital', type: 'health.vaccination' };
  const want = expected(f);
  assert.ok(want.length > 40, `${want.length} records match`);
  let pages = 0;
  const seen = await browse(f, async (p) => {
    pages = p;
    if (p === 2) await page.screenshot({ path: join(artifacts, 'explorer-filtered.png'), fullPage: true });
  });
  assert.deepEqual(seen.map((r) => r.index), want.map((r) => r.index), 'exactly the matching records, newest first');
  assert.ok(seen.every((r) => r.agency === f.agency && r.type === f.type));
  assert.equal(pages, Math.ceil(want.length / 20));

  // A type prefix, and everything.
  const land = await browse({ agency: 'land-registry', type: 'land.*', size: '50' });
  assert.deepEqual(land.map((r) => r.index), expected({ agency: 'land-registry', type: 'land.*' }).map((r) => r.index));
  const all = await browse({ size: '100' });
  // Everything: the records and, before them, the registry's entries.
  assert.deepEqual(all.map((r) => r.index), Array.from({ length: total }, (_, i) => total - 1 - i));
  // Newer goes back (to the page before the last one).
  await page.click('#newer');
  const back = await pageRows();
  assert.equal(back.rows[0].index, total - 1 - (Math.ceil(total / 100) - 2) * 100);
  assert.deepEqual(page.problems, []);
});

test('the time filter finds the records of a time window', async () => {
  await page.goto(`${server.base}/explorer`);
  await page.waitForSelector('#checkpoint-status[data-state="ok"]');
  // The browser runs in Asia/Shanghai; datetime-local takes local time.
  const local = (ms) => new Date(ms + 8 * 3600_000).toISOString().slice(0, 19);
  const cut = Math.ceil((Date.parse(records[firstHalfEnd].ts) + 1) / 1000) * 1000;
  assert.ok(cut < Date.parse(records[firstHalfEnd + 1].ts), 'the pause separates the halves');
  const early = await browse({ until: local(cut), size: '100' });
  assert.deepEqual(early.map((r) => r.index), Array.from({ length: firstHalfEnd + 1 }, (_, i) => firstHalfEnd - i));
  const late = await browse({ since: local(cut), agency: 'parking', size: '100' });
  assert.deepEqual(late.map((r) => r.index), expected({ agency: 'parking' }).filter((r) => r.index > firstHalfEnd).map((r) => r.index));
});

test('the address keeps the filters and the page; a switch of language keeps both', async () => {
  await page.goto(`${server.base}/explorer#log=${server.log.name}&agency=parking&type=parking.status&size=20`);
  await pageRows();
  await page.click('#older');
  await page.waitForFunction(() => location.hash.includes('before='));
  const before = await pageRows();
  await page.click('button[data-lang="zh-CN"]');
  assert.equal(await page.innerText('#page-no'), '第 2 页');
  const after = await pageRows();
  assert.deepEqual(after.rows, before.rows);
  assert.equal(await page.inputValue('#f-agency'), 'parking');
  assert.match(after.text, new RegExp(`全部 20 个包含证明均与树大小为 ${total} 的检查点相符`));
  await page.screenshot({ path: join(artifacts, 'explorer-zh.png'), fullPage: true });
  // The same address in a new tab shows the same page.
  const tab = await context.newPage();
  await tab.goto(page.url());
  await tab.waitForSelector('#explorer-status[data-state="ok"]');
  assert.equal(await tab.locator('#records-body tr').first().getAttribute('data-index'), String(before.rows[0].index));
  await tab.close();
  await page.click('button[data-lang="en"]');
});

test('an entry bundle changed on the way is caught by the inclusion proofs', async () => {
  await page.route('**/tile/entries/003.p/*', async (route) => {
    const resp = await route.fetch();
    const body = Buffer.from(await resp.body());
    const i = body.lastIndexOf(Buffer.from('parking-'));
    body[i + 8] = body[i + 8] === 0x39 ? 0x38 : body[i + 8] + 1; // a digit of the last subject
    await route.fulfill({ response: resp, body });
  });
  await page.goto(`${server.base}/explorer#log=${server.log.name}&size=20`);
  const r = await pageRows();
  assert.equal(r.state, 'bad', r.text);
  const bad = r.rows.filter((row) => row.proof === 'bad');
  assert.equal(bad.length, 1, JSON.stringify(bad));
  assert.match(r.text, /only 19 inclusion proofs verify/);
  await page.screenshot({ path: join(artifacts, 'explorer-tampered.png'), fullPage: true });
  await page.unroute('**/tile/entries/003.p/*');
});
