// Scanning: a receipt's QR code shown to the page's camera (Chromium's fake
// capture device playing a .y4m made here) and read from a picture file;
// the page decodes it with its vendored decoder and verifies it step by
// step against the pinned key. Tampered codes fail and name the step.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { encodeQR } from 'qr';

import { artifacts, launch, pinKey, startServer } from './helpers.mjs';
import { compactLink, encodeCompact, shortLink, QR_ECC } from '../../web/links.js';
import { toBase64Url } from '../../web/verify.js';

let server, context, page, receipt, link;

/** The QR code of `text` as a grayscale matrix: 0 dark, 255 light, `scale` pixels per module. */
function qrPixels(text, scale) {
  const m = encodeQR(text, 'raw', { ecc: QR_ECC, border: 4 });
  const n = m.length * scale;
  const px = new Uint8Array(n * n).fill(255);
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) if (m[Math.floor(y / scale)][Math.floor(x / scale)]) px[y * n + x] = 0;
  return { n, px };
}

function qrPng(text, path) {
  const { n, px } = qrPixels(text, 6);
  const png = new PNG({ width: n, height: n, colorType: 0, inputColorType: 0 });
  png.data = Buffer.from(Array.from(px, (g) => [g, g, g, 255]).flat());
  writeFileSync(path, PNG.sync.write(png));
  return path;
}

/** A YUV4MPEG2 (4:2:0) clip of the code on a grey background, as a camera would see it. */
function qrY4m(text, path, width = 640, height = 480) {
  const { n, px } = qrPixels(text, 4);
  assert.ok(n < height, `the code (${n} px) fits the frame`);
  const y = new Uint8Array(width * height).fill(170);
  const ox = (width - n) >> 1;
  const oy = (height - n) >> 1;
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) y[(oy + r) * width + ox + c] = px[r * n + c] ? 235 : 16;
  const chroma = new Uint8Array((width / 2) * (height / 2) * 2).fill(128);
  const frame = Buffer.concat([Buffer.from('FRAME\n'), y, chroma]);
  const header = Buffer.from(`YUV4MPEG2 W${width} H${height} F10:1 Ip A1:1 C420jpeg\n`);
  writeFileSync(path, Buffer.concat([header, frame, frame, frame]));
  return path;
}

before(async () => {
  server = await startServer();
  const receipts = await server.bulk(server.demoToken, Array.from({ length: 25 }, (_, i) => ({ type: 'health.vaccination', subject: `clinic-${i}` })));
  receipt = receipts[17];
  link = compactLink(`${server.base}/receipt`, receipt);
  const y4m = qrY4m(link, join(server.work, 'camera.y4m'));
  ({ context, page } = await launch(server.work, {
    extraArgs: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${y4m}`],
  }));
  await context.grantPermissions(['camera'], { origin: server.base });
  await pinKey(page, server.base, server.log.origin, server.log.vkey);
});

after(async () => {
  if (context) await context.close();
  if (server) server.stop();
});

async function result() {
  await page.waitForSelector('#verify-result.ok, #verify-result.bad', { timeout: 20_000 });
  return {
    ok: await page.locator('#verify-result').evaluate((e) => e.classList.contains('ok')),
    text: await page.innerText('#verify-result'),
  };
}

test('the camera reads a receipt’s QR code and the page verifies it step by step', async () => {
  await page.goto(`${server.base}/`);
  await page.click('#camera-btn');
  await page.waitForSelector('#camera-box:not([hidden])');
  const r = await result();
  assert.ok(r.ok, r.text);
  assert.match(r.text, new RegExp(`Receipt verified: entry ${receipt.index} is in log`));
  assert.equal(await page.locator('#verify-steps li[data-ok="true"]').count(), 5);
  assert.equal(await page.inputValue('#receipt'), link, 'the scanned link is shown');
  assert.ok(await page.locator('#camera-box').isHidden(), 'the camera stops once it has read a code');
  assert.equal(await page.evaluate(() => document.querySelector('#camera').srcObject), null);
  await page.screenshot({ path: join(artifacts, 'scan-camera-verified.png'), fullPage: true });
  assert.deepEqual(page.problems, []);
});

test('a picture of a QR code verifies; tampered codes fail and name the step', async () => {
  const bytes = encodeCompact(receipt);
  const flip = (i) => {
    const b = bytes.slice();
    b[i] ^= 0x01;
    return `${server.base}/receipt#r=${toBase64Url(b)}`;
  };
  const short = shortLink(`${server.base}/receipt`, server.log.name, receipt);
  const cases = [
    ['whole receipt', link, null],
    ['short link', short, null],
    ['leaf', flip(bytes.length - 12), 'inclusion proof'],
    ['signature', flip(bytes.length - receipt.leaf.length - 32 * receipt.inclusion_proof.length - 3), 'checkpoint signature'],
    ['printed leaf hash', short.replace(/leaf_hash=(.)/, (m, c) => `leaf_hash=${c === 'a' ? 'b' : 'a'}`), 'leaf hash'],
  ];
  for (const [what, text, step] of cases) {
    await page.goto(`${server.base}/`);
    await page.setInputFiles('#scan-file', qrPng(text, join(server.work, `scan-${what.replace(/ /g, '-')}.png`)));
    const r = await result();
    if (!step) {
      assert.ok(r.ok, `${what}: ${r.text}`);
      continue;
    }
    assert.ok(!r.ok, `${what}: verified anyway`);
    assert.ok(r.text.includes(`failed at step “${step}”`), `${what}: ${r.text}`);
    assert.equal(await page.locator(`#verify-steps li[data-step="${step}"][data-ok="false"]`).count(), 1, what);
    if (what === 'leaf') await page.screenshot({ path: join(artifacts, 'scan-tampered.png'), fullPage: true });
  }
  // A picture without a code says so.
  const blank = new PNG({ width: 200, height: 200 });
  blank.data.fill(255);
  writeFileSync(join(server.work, 'blank.png'), PNG.sync.write(blank));
  await page.goto(`${server.base}/`);
  await page.setInputFiles('#scan-file', join(server.work, 'blank.png'));
  await page.waitForFunction(() => /No QR code/.test(document.querySelector('#scan-status').innerText));
});

test('a pasted link and an opened link verify the same way', async () => {
  await page.goto(`${server.base}/`);
  await page.fill('#receipt', link);
  await page.click('#verify-btn');
  assert.ok((await result()).ok);
  // Opening the receipt page's link on the main page works too.
  await page.goto(`${server.base}/${link.slice(link.indexOf('#'))}`);
  assert.ok((await result()).ok);
});
