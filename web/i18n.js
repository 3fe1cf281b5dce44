// Languages of the pages: Simplified Chinese and English. The language comes
// from the reader's earlier choice (kept in this browser), else from the
// browser's languages (any `zh*` → Simplified Chinese, `en*` → English, the
// first that matches wins), else English. Switching re-renders every string in
// place, so whatever the reader has entered, checked or paged to stays.
//
// Strings live in the catalogues i18n/en.js and i18n/zh-CN.js (same keys;
// tests/web checks). Markup names them with `data-i18n="key"` (text) and
// `data-i18n-attr="attr:key;..."` (attributes); scripts use setMsg(), which
// remembers the message so a switch can redo it. Parameters (hashes, indexes,
// names — data, not words) are put in `<span translate="no">`.

import en from './i18n/en.js';
import zh from './i18n/zh-CN.js';
import { format } from './verify.js';

export const CATALOGUES = { 'zh-CN': zh, en };
export const LANGS = [
  { code: 'zh-CN', name: '中文' },
  { code: 'en', name: 'English' },
];
const STORE = 'stele.lang';

function detect() {
  try {
    const stored = localStorage.getItem(STORE);
    if (stored && CATALOGUES[stored]) return stored;
  } catch {
    // storage unavailable: fall through to the browser's languages
  }
  const prefs = (typeof navigator !== 'undefined' && (navigator.languages || [navigator.language])) || [];
  for (const l of prefs) {
    const low = String(l || '').toLowerCase();
    if (low.startsWith('zh')) return 'zh-CN';
    if (low.startsWith('en')) return 'en';
  }
  return 'en';
}

let current = detect();
const listeners = [];

export function lang() {
  return current;
}

function lookup(key) {
  const s = CATALOGUES[current][key];
  if (s !== undefined) return s;
  if (en[key] !== undefined) return en[key];
  return key;
}

/** The catalogue string for `key` in the current language, placeholders filled. */
export function t(key, params = {}) {
  return format(lookup(key), params, lookup);
}

/** The time of an RFC 3339 string in the reader's language and time zone. */
export function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return new Intl.DateTimeFormat(current, { dateStyle: 'long', timeStyle: 'long' }).format(d);
}

function paramNode(p) {
  if (p && typeof p === 'object' && typeof p.key === 'string') return msgFragment(p.key, p.params);
  const span = document.createElement('span');
  span.setAttribute('translate', 'no');
  span.className = 'v';
  span.textContent = String(p);
  return span;
}

/** A fragment for a message: its words as text, each parameter in its own `translate="no"` span. */
export function msgFragment(key, params = {}) {
  const frag = document.createDocumentFragment();
  const template = lookup(key);
  let last = 0;
  for (const m of template.matchAll(/\{(\w+)\}/g)) {
    if (!(m[1] in params)) continue;
    frag.append(template.slice(last, m.index));
    frag.append(paramNode(params[m[1]]));
    last = m.index + m[0].length;
  }
  frag.append(template.slice(last));
  return frag;
}

/**
 * Sets `node`'s content to the message `key` (with `params`) and remembers
 * it, so a language switch renders it again.
 */
export function setMsg(node, key, params = {}) {
  node._msg = { key, params };
  node.setAttribute('data-i18n-dyn', '');
  node.replaceChildren(msgFragment(key, params));
  return node;
}

/** Like setMsg for a time (rendered in the reader's locale and time zone). */
export function setTime(node, iso) {
  node._msg = { key: '@time', params: { iso } };
  node.setAttribute('data-i18n-dyn', '');
  node.setAttribute('datetime', iso);
  // Already in the reader's language (Intl); a translator must leave it be.
  node.setAttribute('translate', 'no');
  node.textContent = formatTime(iso);
  return node;
}

/** Sets an attribute to a message (no parameters: attributes carry words only). */
export function setAttrMsg(node, attr, key) {
  node._attrMsgs = { ...(node._attrMsgs || {}), [attr]: key };
  node.setAttribute('data-i18n-dyn', '');
  node.setAttribute(attr, t(key));
  return node;
}

/** Renders every string under `root` in the current language. */
export function apply(root = document) {
  document.documentElement.lang = current;
  for (const e of root.querySelectorAll('[data-i18n]')) e.textContent = t(e.getAttribute('data-i18n'));
  for (const e of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of e.getAttribute('data-i18n-attr').split(';')) {
      const [attr, key] = pair.split(':').map((x) => x.trim());
      if (attr && key) e.setAttribute(attr, t(key));
    }
  }
  for (const e of root.querySelectorAll('[data-i18n-dyn]')) {
    if (e._msg) {
      if (e._msg.key === '@time') e.textContent = formatTime(e._msg.params.iso);
      else e.replaceChildren(msgFragment(e._msg.key, e._msg.params));
    }
    for (const [attr, key] of Object.entries(e._attrMsgs || {})) e.setAttribute(attr, t(key));
  }
  const title = document.querySelector('title[data-i18n]');
  if (title) document.title = title.textContent;
}

/** Switches the language, remembers the choice, renders everything again. */
export function setLang(code) {
  if (!CATALOGUES[code]) return;
  current = code;
  try {
    localStorage.setItem(STORE, code);
  } catch {
    // not kept: the switch still applies to this page
  }
  apply();
  for (const fn of listeners) fn(code);
}

/** Calls `fn` after each language switch (for what apply() cannot redo by itself). */
export function onLangChange(fn) {
  listeners.push(fn);
}

/**
 * Wires the language switch: one button per language in `group`, the
 * current one pressed.
 */
export function initLangSwitch(group) {
  const buttons = LANGS.map((l) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.lang = l.code;
    b.textContent = l.name;
    b.dataset.lang = l.code;
    b.addEventListener('click', () => setLang(l.code));
    return b;
  });
  group.replaceChildren(...buttons);
  const mark = () => {
    for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.lang === current));
  };
  mark();
  onLangChange(mark);
}
