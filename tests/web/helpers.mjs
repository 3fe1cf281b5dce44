// What the browser suites share: a `stele serve` on a fresh data directory,
// agencies and their tokens, bulk submissions, Chromium, an accessibility
// check (axe-core), a check that every visible string is in the page's
// language, and QR codes read back with decoders the page does not use
// (jsQR for pictures, pdf.js to render PDFs).
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, existsSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import jsQR from 'jsqr';
import { PNG } from 'pngjs';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
export const repo = join(here, '..', '..');
export const artifacts = join(repo, 'tests', 'artifacts');
export const stele = process.env.STELE_BIN || join(process.env.CARGO_TARGET_DIR || join(repo, 'target'), 'debug', 'stele');
export const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits for `bin args…` (spawned with output to `logPath`) to write its address to `addrFile`. */
export async function spawnListening(args, addrFile, logPath, env = {}) {
  const out = openSync(logPath, 'w');
  const proc = spawn(stele, args, { stdio: ['ignore', out, out], env: { ...process.env, STELE_LOG: 'warn', ...env } });
  let exited = null;
  proc.on('exit', (code) => {
    exited = code;
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (existsSync(addrFile)) {
      const a = readFileSync(addrFile, 'utf8');
      if (a.endsWith('\n')) return { proc, addr: a.trim() };
    }
    if (exited !== null) throw new Error(`stele ${args[0]} exited (${exited}):\n${readFileSync(logPath, 'utf8')}`);
    if (Date.now() > deadline) throw new Error(`stele ${args[0]} did not start within 60 s`);
    await sleep(50);
  }
}

/** A `stele serve` on 127.0.0.1:0 with its own data directory. */
export async function startServer() {
  assert.ok(existsSync(stele), `stele binary not found at ${stele} (build it, or set STELE_BIN)`);
  assert.ok(existsSync(chromiumPath), `Chromium not found at ${chromiumPath} (apt-get install chromium, or set CHROMIUM)`);
  mkdirSync(artifacts, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'stele-web-'));
  const data = join(work, 'data');
  const addrFile = join(work, 'addr');
  const logPath = join(work, 'serve.log');
  const { proc, addr } = await spawnListening(['serve', '--listen', '127.0.0.1:0', '--addr-file', addrFile, '--data-dir', data], addrFile, logPath);
  const base = `http://${addr}`;
  const logs = (await (await fetch(`${base}/logs`)).json()).logs;
  const demo = readFileSync(logPath, 'utf8').match(/\bdemo\.[A-Za-z0-9_-]{20,}/);
  assert.ok(demo, 'the first start prints the demo token');
  // The suites submit records of many shapes by many agencies: every type
  // they use gets a version open to any agency and any attributes (the
  // example types' v1 stay in the log before it).
  const registered = (await (await fetch(`${base}/logs/${logs[0].name}/types`)).json()).types;
  for (const name of ['land.transfer', 'land.survey', 'land.mortgage', 'health.vaccination', 'health.visit', 'parking.status']) {
    const current = registered.find((t) => t.name === name);
    const def = { name, version: current ? current.version + 1 : 1, description: `${name} (any shape, for the browser tests)`, schema: true, writers: ['*'] };
    const r = await fetch(`${base}/logs/${logs[0].name}/types`, {
      method: 'POST',
      headers: { authorization: `Bearer ${demo[0]}`, 'content-type': 'application/json' },
      body: JSON.stringify(def),
    });
    assert.ok(r.ok, `applying ${name}: ${r.status} ${await r.text()}`);
  }
  return {
    work,
    data,
    base,
    log: logs[0],
    logUrl: `${base}/logs/${logs[0].name}`,
    demoToken: demo[0],
    addAgency(name, ...types) {
      const args = ['agency', 'add', name, '--data-dir', data, ...types.flatMap((t) => ['--types', t])];
      const text = execFileSync(stele, args, { encoding: 'utf8' });
      const token = text.split(/\s+/).find((w) => w.startsWith(`${name}.`) && w.length > 30);
      assert.ok(token, `no token in: ${text}`);
      // The server finds a new agency within a second of its last look.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1100);
      return token;
    },
    async bulk(token, records) {
      const r = await fetch(`${base}/logs/${logs[0].name}/records/bulk`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ records }),
      });
      const text = await r.text();
      assert.ok(r.ok, `bulk POST: ${r.status} ${text}`);
      return JSON.parse(text).receipts;
    },
    stop() {
      proc.kill();
      rmSync(work, { recursive: true, force: true });
    },
  };
}

/**
 * A log with witnesses, made as three agencies and an operator would: three
 * `stele witness serve` (keys from `stele witness keygen`), a 2-of-3
 * tlog-policy naming them, and `stele serve` with that policy (its key from
 * `stele keygen`, an agency from `stele agency add`). Records of any type.
 */
export async function startFederation() {
  assert.ok(existsSync(stele), `stele binary not found at ${stele} (build it, or set STELE_BIN)`);
  mkdirSync(artifacts, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'stele-web-fed-'));
  const origin = 'web.stele.test/witnessed';
  const keyFile = join(work, 'log.key');
  const keygen = execFileSync(stele, ['keygen', '--origin', origin, '--out', keyFile], { encoding: 'utf8' });
  const vkey = keygen.split(/\s+/).find((w) => w.startsWith(`${origin}+`));
  assert.ok(vkey, `no vkey in: ${keygen}`);
  const procs = [];
  let policy = `log ${vkey}\n`;
  for (let i = 0; i < 3; i++) {
    const name = `witness.web.stele.test/agency-${i}`;
    const wkey = join(work, `w${i}.skey`);
    const wvkey = execFileSync(stele, ['witness', 'keygen', '--name', name, '--out', wkey], { encoding: 'utf8' }).trim();
    const config = join(work, `w${i}.toml`);
    writeFileSync(config, `key_file = ${JSON.stringify(wkey)}\ndatabase = ${JSON.stringify(join(work, `w${i}.db`))}\n\n[[logs]]\norigin = ${JSON.stringify(origin)}\nvkey = ${JSON.stringify(vkey)}\n`);
    const addrFile = join(work, `w${i}.addr`);
    const { proc, addr } = await spawnListening(['witness', 'serve', '--config', config, '--listen', '127.0.0.1:0', '--addr-file', addrFile], addrFile, join(work, `w${i}.log`));
    procs.push(proc);
    policy += `witness agency-${i} ${wvkey} http://${addr}\n`;
  }
  policy += 'group two-of-three 2 agency-0 agency-1 agency-2\nquorum two-of-three\n';
  const policyFile = join(work, 'federation.policy');
  writeFileSync(policyFile, policy);
  const data = join(work, 'data');
  const config = join(work, 'stele.toml');
  writeFileSync(
    config,
    `embedded = true\n\n[[logs]]\nname = "witnessed"\norigin = ${JSON.stringify(origin)}\nkey_file = ${JSON.stringify(keyFile)}\naccept_unregistered_types = true\nwitness_policy = ${JSON.stringify(policyFile)}\nwitness_interval_ms = 200\n`,
  );
  const added = execFileSync(stele, ['agency', 'add', 'web', '--config', config, '--data-dir', data], { encoding: 'utf8' });
  const token = added.split(/\s+/).find((w) => w.startsWith('web.') && w.length > 30);
  assert.ok(token, `no token in: ${added}`);
  const addrFile = join(work, 'serve.addr');
  const { proc, addr } = await spawnListening(['serve', '--config', config, '--data-dir', data, '--listen', '127.0.0.1:0', '--addr-file', addrFile], addrFile, join(work, 'serve.log'));
  procs.push(proc);
  const base = `http://${addr}`;
  return {
    work,
    base,
    origin,
    vkey,
    policy,
    token,
    logUrl: `${base}/logs/witnessed`,
    async submit(subject, wait) {
      const r = await fetch(`${base}/logs/witnessed/records${wait ? '?wait=witnessed' : ''}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'health.visit', subject }),
      });
      const text = await r.text();
      assert.equal(r.status, 201, `POST: ${r.status} ${text}`);
      return { receipt: JSON.parse(text), kind: r.headers.get('stele-receipt-kind') };
    },
    stop() {
      for (const p of procs) p.kill();
      rmSync(work, { recursive: true, force: true });
    },
  };
}

/** A Chromium context (its own profile); `extraArgs` for the fake camera. */
export async function launch(work, { name = 'profile', extraArgs = [], locale = 'en-US', timezoneId = 'Asia/Shanghai', viewport } = {}) {
  const context = await chromium.launchPersistentContext(join(work, `chromium-${name}`), {
    executablePath: chromiumPath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    viewport: viewport || { width: 1100, height: 1400 },
    locale,
    timezoneId,
  });
  const page = context.pages()[0] || (await context.newPage());
  watchErrors(page);
  return { context, page };
}

/** Collects the page's errors (`page.problems`), to assert there are none. */
export function watchErrors(page) {
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(m.text());
  });
  return page;
}

/** Pins `vkey` for `origin` in the browser's storage (as the page's pin button does). */
export async function pinKey(page, base, origin, vkey) {
  await page.goto(`${base}/`);
  await page.evaluate(([o, k]) => localStorage.setItem('stele.pinned-vkeys', JSON.stringify({ [o]: k })), [origin, vkey]);
}

export async function setLanguage(page, lang) {
  await page.evaluate((l) => localStorage.setItem('stele.lang', l), lang);
}

// ---------- accessibility

const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** axe-core on the page as it is; fails on any serious or critical violation. */
export async function checkA11y(page, what) {
  // Evaluated through the DevTools protocol, so the page's CSP does not apply.
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${what}: accessibility violations:\n${JSON.stringify(bad, null, 2)}`);
  return result;
}

// ---------- language of every visible string

/**
 * Visible strings (text, and the placeholder / aria-label / title / alt /
 * data-label attributes) that are not in `lang`: outside elements marked
 * `translate="no"` (data: hashes, names, JSON) or carrying another `lang`
 * (the language switch), a Chinese page may hold no Latin words but a few
 * names of formats, and an English page no Chinese characters.
 */
export async function untranslated(page, lang) {
  return page.evaluate((lang) => {
    const allowed = new Set(['Stele', 'QR', 'JSON', 'SHA-256', '0x00', 'C2SP', 'tlog-tiles', 'tlog-proof', 'https', 'MIT', 'ID', 'land.*', 'base64', 'Ed25519', 'c2sp.org/tlog-proof@v1', 'UTC', '0x01']);
    const found = [];
    const foreign = (s) => {
      if (lang === 'en') return (s.match(/[\u3000-\u9fff\uff00-\uffef]+/g) || []);
      return s
        .split(/[^A-Za-z0-9._*@/+-]+/)
        .map((w) => w.replace(/^[.+/@-]+|[.+/@-]+$/g, ''))
        .filter((w) => /[A-Za-z]/.test(w) && !allowed.has(w));
    };
    const skip = (e) => e.closest('[translate="no"], script, style, noscript') || (e.closest('[lang]') && e.closest('[lang]').getAttribute('lang') !== document.documentElement.lang);
    const visible = (e) => e.checkVisibility ? e.checkVisibility() : e.getClientRects().length > 0;
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const e = n.parentElement;
      if (!e || skip(e) || !visible(e)) continue;
      for (const w of foreign(n.textContent)) found.push(`${e.tagName.toLowerCase()}#${e.id || ''}.${e.className || ''}: ${w} in “${n.textContent.trim().slice(0, 80)}”`);
    }
    for (const e of document.body.querySelectorAll('[placeholder], [aria-label], [title], [alt], [data-label]')) {
      if (skip(e) || !visible(e)) continue;
      for (const a of ['placeholder', 'aria-label', 'title', 'alt', 'data-label']) {
        const s = e.getAttribute(a);
        if (s) for (const w of foreign(s)) found.push(`${e.tagName.toLowerCase()}#${e.id || ''}[${a}]: ${w} in “${s.slice(0, 80)}”`);
      }
    }
    for (const w of foreign(document.title)) found.push(`title: ${w}`);
    if (document.documentElement.lang !== lang) found.push(`html lang is ${document.documentElement.lang}`);
    return found;
  }, lang);
}

// ---------- QR codes, read with decoders the page does not use

/** The text of the QR code in PNG bytes (jsQR), or null. */
export function decodePng(bytes) {
  const png = PNG.sync.read(bytes);
  const r = jsQR(new Uint8ClampedArray(png.data.buffer, png.data.byteOffset, png.data.length), png.width, png.height);
  return r ? r.data : null;
}

/**
 * Renders page 1 of a PDF with pdf.js (in Node, on @napi-rs/canvas) and
 * returns `{ text, qr }`: its text content and the QR code read by jsQR.
 */
export async function readPdf(bytes, scale = 3) {
  const pdfjs = await import('pdfjs-dist/legacy/build/pdf.mjs');
  const dist = dirname(require.resolve('pdfjs-dist/package.json'));
  const doc = await pdfjs.getDocument({
    data: new Uint8Array(bytes),
    cMapUrl: join(dist, 'cmaps') + '/',
    cMapPacked: true,
    standardFontDataUrl: join(dist, 'standard_fonts') + '/',
    verbosity: 0,
  }).promise;
  try {
    const page = await doc.getPage(1);
    const text = (await page.getTextContent()).items.map((i) => i.str).join('');
    const viewport = page.getViewport({ scale });
    const { canvas, context } = doc.canvasFactory.create(Math.ceil(viewport.width), Math.ceil(viewport.height));
    await page.render({ canvasContext: context, viewport, canvas }).promise;
    const img = context.getImageData(0, 0, canvas.width, canvas.height);
    const r = jsQR(img.data, img.width, img.height);
    return { text, qr: r ? r.data : null, pages: doc.numPages, width: viewport.width / scale, height: viewport.height / scale };
  } finally {
    await doc.destroy();
  }
}
