// Every view in both languages: the browser's language picks one, the switch
// changes it and keeps what is on the page, no visible string is left in the
// other language, axe-core finds no serious or critical violation, the views
// fit a phone, and the keyboard reaches everything. Screenshots of each view
// in each language go to tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { artifacts, checkA11y, launch, pinKey, startServer, untranslated } from './helpers.mjs';
import { jsonLink } from '../../web/links.js';

let server, receipts, context, page;

before(async () => {
  server = await startServer();
  const hospital = server.addAgency('hospital');
  receipts = await server.bulk(hospital, [
    ...Array.from({ length: 12 }, (_, i) => ({ type: 'health.vaccination', subject: `门诊-${i}`, attributes: { dose: i % 3 } })),
    ...Array.from({ length: 12 }, (_, i) => ({ type: 'parking.status', subject: `bay-${i}` })),
  ]);
  ({ context, page } = await launch(server.work, { locale: 'zh-CN' }));
  await pinKey(page, server.base, server.log.origin, server.log.vkey);
});

after(async () => {
  if (context) await context.close();
  if (server) server.stop();
});

const receipt = () => receipts[5];

/** The views, each opened and made ready: what a resident or an operator sees. */
const VIEWS = {
  'verify-ok': async () => {
    await page.goto(`${server.base}/`);
    await page.fill('#vkey', server.log.vkey);
    await page.fill('#receipt', JSON.stringify(receipt(), null, 2));
    await page.click('#verify-btn');
    await page.waitForSelector('#verify-result.ok');
  },
  'verify-failed': async () => {
    await page.goto(`${server.base}/`);
    await page.fill('#vkey', server.log.vkey);
    await page.fill('#receipt', JSON.stringify({ ...receipt(), leaf: receipt().leaf.replace('门诊', '急诊') }));
    await page.click('#verify-btn');
    await page.waitForSelector('#verify-result.bad');
  },
  lookup: async () => {
    await page.goto(`${server.base}/`);
    await page.waitForSelector('#lookup-log option', { state: 'attached' });
    await page.fill('#lookup-q', String(receipt().index));
    await page.click('#lookup-form button[type="submit"]');
    await page.waitForSelector('#lookup-result.ok');
    await page.waitForSelector('.log dd:has-text("✓")');
  },
  receipt: async () => {
    await page.goto(jsonLink(`${server.base}/receipt`, receipt()));
    await page.waitForSelector('#receipt-status[data-state="ok"]');
  },
  explorer: async () => {
    await page.goto(`${server.base}/explorer`);
    await page.waitForSelector('#explorer-status[data-state="ok"]');
  },
};

async function switchTo(lang) {
  await page.click(`button[data-lang="${lang}"]`);
  await page.waitForFunction((l) => document.documentElement.lang === l, lang);
}

test('the browser’s language chooses the page’s language; the choice is remembered', async () => {
  await page.goto(`${server.base}/`);
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'zh-CN', 'a zh-CN browser gets Chinese');
  assert.equal(await page.innerText('h1'), '核验本市各机构的记录');
  assert.equal(await page.title(), 'Stele — 可验证的记录日志');
  const { context: en, page: p } = await launch(server.work, { name: 'en', locale: 'en-US' });
  await p.goto(`${server.base}/`);
  assert.equal(await p.evaluate(() => document.documentElement.lang), 'en');
  assert.equal(await p.innerText('h1'), 'Check a record of the city’s agencies');
  // The choice made with the switch wins over the browser's language, on every page.
  await p.click('button[data-lang="zh-CN"]');
  await p.goto(`${server.base}/explorer`);
  assert.equal(await p.evaluate(() => document.documentElement.lang), 'zh-CN');
  assert.equal(await p.getAttribute('button[data-lang="zh-CN"]', 'aria-pressed'), 'true');
  await en.close();
});

test('every view in both languages: all strings translated, no serious accessibility violation', async () => {
  for (const lang of ['zh-CN', 'en']) {
    for (const [name, open] of Object.entries(VIEWS)) {
      await open();
      if ((await page.evaluate(() => document.documentElement.lang)) !== lang) await switchTo(lang);
      const left = await untranslated(page, lang);
      assert.deepEqual(left, [], `${name} in ${lang}: strings not in ${lang}`);
      await checkA11y(page, `${name} in ${lang}`);
      await page.screenshot({ path: join(artifacts, `view-${name}-${lang}.png`), fullPage: true });
    }
  }
  // At phone width too (the explorer's table becomes cards).
  await page.setViewportSize({ width: 360, height: 800 });
  for (const lang of ['zh-CN', 'en']) {
    for (const [name, open] of Object.entries(VIEWS)) {
      await open();
      if ((await page.evaluate(() => document.documentElement.lang)) !== lang) await switchTo(lang);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `${name} in ${lang} is ${overflow}px wider than a 360px phone`);
      assert.deepEqual(await untranslated(page, lang), [], `${name} in ${lang} at phone width`);
      await checkA11y(page, `${name} in ${lang} at phone width`);
      await page.screenshot({ path: join(artifacts, `view-${name}-${lang}-phone.png`), fullPage: true });
    }
  }
  await page.setViewportSize({ width: 1100, height: 1400 });
  assert.deepEqual(page.problems, []);
});

test('switching the language keeps what is on the page', async () => {
  await VIEWS['verify-ok']();
  await switchTo('en');
  const text = await page.inputValue('#receipt');
  assert.match(await page.innerText('#verify-result'), /Receipt verified/);
  await switchTo('zh-CN');
  assert.match(await page.innerText('#verify-result'), /回执验证通过：条目 \d+ 在日志/);
  assert.equal(await page.inputValue('#receipt'), text, 'the receipt stays');
  assert.equal(await page.inputValue('#vkey'), server.log.vkey, 'the key stays');
  assert.equal(await page.locator('#verify-steps li[data-ok="true"]').count(), 5, 'the steps stay');
  assert.match(await page.innerText('#verify-steps li[data-step="inclusion proof"]'), /包含证明：通过/);
  // A failure, named in the new language.
  await VIEWS['verify-failed']();
  assert.match(await page.innerText('#verify-result'), /验证在“叶哈希”一步失败/);
  await switchTo('en');
  assert.match(await page.innerText('#verify-result'), /failed at step “leaf hash”/);
  // Times follow the language: the receipt page's time, in both.
  await VIEWS.receipt();
  const enTime = await page.innerText('[data-field="time"]');
  await switchTo('zh-CN');
  const zhTime = await page.innerText('[data-field="time"]');
  const ts = new Date(JSON.parse(receipt().leaf).ts);
  const fmt = (l) => new Intl.DateTimeFormat(l, { dateStyle: 'long', timeStyle: 'long', timeZone: 'Asia/Shanghai' }).format(ts);
  assert.equal(enTime, fmt('en'));
  assert.equal(zhTime, fmt('zh-CN'));
  assert.equal(await page.getAttribute('svg.qr', 'aria-label'), '指向此回执的链接的二维码');
});

test('the keyboard reaches and works every control', async () => {
  await page.goto(`${server.base}/`);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'skip', 'the first stop skips to the content');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => location.hash), '#main');
  // Verify a receipt with the keyboard alone.
  await page.focus('#vkey');
  await page.keyboard.insertText(server.log.vkey);
  await page.focus('#receipt');
  await page.keyboard.insertText(JSON.stringify(receipt()));
  await page.focus('#verify-btn');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#verify-result.ok');
  // Every interactive element can take the focus and shows it.
  const unreachable = await page.evaluate(() =>
    [...document.querySelectorAll('a[href], button, input, select, textarea')]
      .filter((e) => e.checkVisibility() || e.classList.contains('visually-hidden'))
      .filter((e) => {
        e.focus();
        return document.activeElement !== e;
      })
      .map((e) => e.id || e.outerHTML.slice(0, 60)),
  );
  assert.deepEqual(unreachable, []);
  // The language switch works from the keyboard.
  await page.focus('button[data-lang="en"]');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.documentElement.lang === 'en');
  await page.focus('button[data-lang="zh-CN"]');
  await page.keyboard.press(' ');
  await page.waitForFunction(() => document.documentElement.lang === 'zh-CN');
});
