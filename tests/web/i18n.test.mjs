// The catalogues (web/i18n/en.js, web/i18n/zh-CN.js): the same keys and the
// same parameters in both, every string translated, every key the pages and
// scripts name present, and none left over. Also: the vendored QR library is
// the pinned npm package, unmodified.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

import en from '../../web/i18n/en.js';
import zh from '../../web/i18n/zh-CN.js';

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, '..', '..', 'web');
const require = createRequire(import.meta.url);

/** Words that stay as they are in Chinese: names of formats and programs. */
const KEPT = new Set(['Stele', 'QR', 'JSON', 'SHA-256', '0x00', 'C2SP', 'tlog-tiles', 'tlog-proof', 'https', 'MIT', 'ID', 'land.*', 'base64', 'Ed25519', 'c2sp.org/tlog-proof@v1', 'inclusion_proof', 'index', 'UTC', '0x01', 'cosignature/v1']);

const params = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

test('both catalogues have exactly the same keys', () => {
  const a = Object.keys(en).sort();
  const b = Object.keys(zh).sort();
  assert.deepEqual(a.filter((k) => !(k in zh)), [], 'keys only in English');
  assert.deepEqual(b.filter((k) => !(k in en)), [], 'keys only in Chinese');
  assert.ok(a.length > 200, `${a.length} keys`);
});

test('each string has the same parameters in both languages and is translated', () => {
  const problems = [];
  for (const [k, e] of Object.entries(en)) {
    const z = zh[k];
    if (typeof e !== 'string' || typeof z !== 'string' || !e || !z) {
      problems.push(`${k}: empty or not a string`);
      continue;
    }
    if (params(e).join() !== params(z).join()) problems.push(`${k}: parameters ${params(e)} vs ${params(z)}`);
    const words = z
      .replace(/\{\w+\}/g, ' ')
      .split(/[^A-Za-z0-9._*@/+-]+/)
      .map((w) => w.replace(/^[.+/@-]+|[.+/@-]+$/g, ''))
      .filter((w) => /[A-Za-z]/.test(w) && !KEPT.has(w));
    if (words.length) problems.push(`${k}: Latin words in Chinese: ${words.join(', ')}`);
    const letters = z.replace(/\{\w+\}/g, '');
    if (/[A-Za-z]{2}/.test(e.replace(/\{\w+\}/g, '')) && !/[\u3000-\u9fff\uff00-\uffef]/.test(letters)) {
      problems.push(`${k}: the Chinese string has no Chinese: ${z}`);
    }
    if (/[\u3000-\u9fff]/.test(e)) problems.push(`${k}: Chinese in the English string`);
  }
  assert.deepEqual(problems, []);
});

function sources() {
  const out = [];
  for (const f of readdirSync(web, { recursive: true })) {
    if (String(f).startsWith('vendor') || String(f).startsWith('i18n/')) continue;
    if (/\.(html|js)$/.test(f)) out.push([String(f), readFileSync(join(web, f), 'utf8')]);
  }
  return out;
}

test('every key the pages and scripts name is in the catalogues, and every catalogue key is used', () => {
  const named = new Map();
  const note = (k, f) => named.set(k, [...(named.get(k) || []), f]);
  const keyish = /['"`]((?:page|nav|lang|common|main|verify|scan|key|share|logs|lookup|footer|step|err|receipt|explorer|policy|disclosure|p|v)\.[A-Za-z][A-Za-z0-9.]*)['"`]/g;
  for (const [f, text] of sources()) {
    if (f.endsWith('.html')) {
      for (const m of text.matchAll(/data-i18n="([^"]+)"/g)) note(m[1], f);
      for (const m of text.matchAll(/data-i18n-attr="([^"]+)"/g)) for (const pair of m[1].split(';')) note(pair.split(':')[1].trim(), f);
    }
    for (const m of text.matchAll(keyish)) note(m[1], f);
  }
  const missing = [...named.keys()].filter((k) => !(k in en));
  assert.deepEqual(missing.map((k) => `${k} (${named.get(k).join(', ')})`), [], 'named but not in the catalogues');
  const unused = Object.keys(en).filter((k) => !named.has(k));
  assert.deepEqual(unused, [], 'in the catalogues but named nowhere');
});

test('no page has visible text outside the catalogues', () => {
  // Every element with words in the markup names its catalogue key (the
  // words in the markup are only the English fallback), or is data.
  const problems = [];
  for (const [f, html] of sources().filter(([f]) => f.endsWith('.html'))) {
    const body = html.slice(html.indexOf('<body'));
    const stripped = body
      .replace(/<!--[\s\S]*?-->/g, '')
      .replace(/<(\w+)[^>]*\s(data-i18n="|translate="no")[^>]*>[\s\S]*?<\/\1>/g, '')
      .replace(/<option[^>]*>\s*\d+\s*<\/option>/g, '')
      .replace(/<[^>]+>/g, ' ');
    const words = stripped.split(/\s+/).filter((w) => /[A-Za-z\u3000-\u9fff]/.test(w));
    if (words.length) problems.push(`${f}: ${words.join(' ')}`);
    for (const m of body.matchAll(/\s(placeholder|aria-label|title|alt)="([^"]*)"/g)) {
      const tag = body.slice(body.lastIndexOf('<', m.index), body.indexOf('>', m.index));
      if (!/data-i18n-attr="[^"]*\b/.test(tag) || !tag.includes(`${m[1]}:`)) problems.push(`${f}: ${m[1]}="${m[2]}" is not from the catalogue`);
    }
  }
  assert.deepEqual(problems, []);
});

test('the vendored qr library is the pinned npm package, unmodified', () => {
  const dist = dirname(require.resolve('qr'));
  for (const f of ['index.js', 'decode.js', 'LICENSE', 'LICENSE-MIT']) {
    assert.equal(readFileSync(join(web, 'vendor', 'qr', f), 'utf8'), readFileSync(join(dist, f), 'utf8'), f);
  }
  const pinned = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8')).devDependencies.qr;
  assert.equal(JSON.parse(readFileSync(join(dist, 'package.json'), 'utf8')).version, pinned);
  assert.match(readFileSync(join(web, 'vendor', 'README.md'), 'utf8'), new RegExp(`\\| \`qr/\` \\| \`qr\`.*\\| ${pinned.replace(/\./g, '\\.')} \\|`));
});
