// A witnessed log in the browser: a real federation (three `stele witness
// serve`, a 2-of-3 policy, `stele serve` with it), and the main page
// checking a witnessed receipt's cosignatures against the policy it
// fetched and pinned, naming the witnesses that cosigned; a receipt below
// the quorum, and a log-signed one, fail at the witness-quorum step. The
// policy code (web/policy.js) is also checked under Node against the same
// receipts, and against malformed policies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { artifacts, checkA11y, launch, startFederation } from './helpers.mjs';
import { checkQuorum, parsePolicy } from '../../web/policy.js';
import { jsonLink } from '../../web/links.js';
import * as v from '../../web/verify.js';

let fed;
let context;
let page;
let witnessed;
let logSigned;

before(async () => {
  fed = await startFederation();
  const w = await fed.submit('patient-1', true);
  assert.equal(w.kind, 'witnessed');
  witnessed = w.receipt;
  const l = await fed.submit('patient-2', false);
  assert.equal(l.kind, 'log-signed');
  logSigned = l.receipt;
  ({ context, page } = await launch(fed.work));
});

after(async () => {
  if (context) await context.close();
  if (fed) fed.stop();
});

/** The receipt with its checkpoint's cosignature lines cut to `keep` (and its tlog-proof to match). */
function withCosignatures(receipt, keep) {
  const note = receipt.checkpoint;
  const split = note.lastIndexOf('\n\n');
  const lines = note.slice(split + 2, -1).split('\n');
  const logLine = lines.filter((l) => l.startsWith(`— ${fed.origin} `));
  const cosigs = lines.filter((l) => !l.startsWith(`— ${fed.origin} `));
  const checkpoint = `${note.slice(0, split + 2)}${[...logLine, ...cosigs.slice(0, keep)].join('\n')}\n`;
  return { ...receipt, checkpoint, tlog_proof: receipt.tlog_proof.replace(note, checkpoint) };
}

test('policy.js: the witnessed receipt meets the policy, with who and when', () => {
  const policy = parsePolicy(fed.policy);
  const q = checkQuorum(witnessed.checkpoint, policy);
  assert.equal(q.quorum, 'two-of-three');
  assert.ok(q.cosigned.length >= 2, JSON.stringify(q.cosigned));
  for (const c of q.cosigned) {
    assert.match(c.name, /^agency-[0-2]$/);
    assert.ok(Math.abs(c.time - Date.now() / 1000) < 600, `cosigned at ${c.time}`);
  }
  assert.throws(() => checkQuorum(withCosignatures(witnessed, 1).checkpoint, policy), (e) => e.msg.key === 'p.quorumNotMet');
  assert.throws(() => checkQuorum(logSigned.checkpoint, policy), (e) => e.msg.key === 'p.noCosignatures');
  // A flipped byte in one cosignature rejects the note.
  const note = witnessed.checkpoint;
  const lines = note.split('\n');
  const i = lines.findIndex((l) => l.startsWith('— witness.web.stele.test/'));
  const sig = Buffer.from(lines[i].split(' ')[2], 'base64');
  sig[sig.length - 1] ^= 1;
  lines[i] = `${lines[i].split(' ').slice(0, 2).join(' ')} ${sig.toString('base64')}`;
  assert.throws(() => checkQuorum(lines.join('\n'), policy), (e) => e.msg.key === 'p.badCosignature');
});

test('policy.js: malformed policies are refused naming the line', () => {
  const bad = [
    ['quorum none\nwitness a b\n', 'p.line'],
    ['witness a x+00000000+AAAA\nquorum a\n', 'p.line'],
    ['group g 3 a\nquorum g\n', 'p.line'],
    ['log x\n', 'p.line'],
    [`log ${fed.vkey}\n`, 'p.noQuorum'],
  ];
  for (const [text, key] of bad) {
    assert.throws(() => parsePolicy(text), (e) => e instanceof v.VerifyError && e.msg.key === key, text);
  }
  // A log key where a witness key belongs (type 0x01, not 0x04).
  assert.throws(() => parsePolicy(`witness a ${fed.vkey}\nquorum a\n`), (e) => e.msg.key === 'p.line' && e.msg.params.reason.params.reason.key === 'p.notWitnessKey');
});

async function verifyInPage(receipt) {
  await page.fill('#receipt', JSON.stringify(receipt, null, 2));
  await page.click('#verify-btn');
  await page.waitForSelector('#verify-result.ok, #verify-result.bad');
  const quorum = page.locator('#verify-steps li[data-step="witness quorum"]');
  return {
    ok: await page.locator('#verify-result').evaluate((e) => e.classList.contains('ok')),
    text: await page.locator('#verify-result').innerText(),
    quorumOk: (await quorum.count()) ? await quorum.getAttribute('data-ok') : null,
    quorumText: (await quorum.count()) ? await quorum.innerText() : '',
  };
}

test('the page verifies a witnessed receipt against the pinned policy, naming the witnesses', async () => {
  await page.goto(`${fed.base}/`);
  await page.fill('#receipt', JSON.stringify(witnessed));
  await page.click('#server-key');
  await page.click('#server-policy');
  await page.waitForFunction(() => document.querySelector('#policy').value.includes('quorum two-of-three'));
  assert.equal(await page.inputValue('#policy'), fed.policy, 'the served policy is the configured file');
  await page.click('#pin-policy');
  assert.match(await page.locator('#policy-info').innerText(), /3 witnesses, quorum two-of-three \(pinned in this browser\)/);
  const r = await verifyInPage(witnessed);
  assert.ok(r.ok, r.text);
  assert.equal(r.quorumOk, 'true', r.quorumText);
  assert.match(r.quorumText, /quorum two-of-three met: cosigned by agency-\d \d{4}-\d\d-\d\dT[\d:]+Z, agency-\d/);
  await page.screenshot({ path: join(artifacts, 'witnessed-receipt.png'), fullPage: true });
  await checkA11y(page, 'main page with a witness policy');

  // After a reload the pinned policy comes back for the receipt's log.
  await page.goto(`${fed.base}/`);
  await page.fill('#vkey', fed.vkey);
  const again = await verifyInPage(witnessed);
  assert.ok(again.ok, again.text);
  assert.equal(await page.inputValue('#policy'), fed.policy);
});

test('below the quorum, or log-signed only, the receipt fails at the witness-quorum step', async () => {
  await page.goto(`${fed.base}/`);
  await page.fill('#vkey', fed.vkey);
  await page.fill('#policy', fed.policy);
  const one = await verifyInPage(withCosignatures(witnessed, 1));
  assert.ok(!one.ok, one.text);
  assert.equal(one.quorumOk, 'false');
  assert.match(one.text, /witness quorum/);
  assert.match(one.quorumText, /quorum two-of-three is not met: valid cosignatures only from agency-\d/);
  const plain = await verifyInPage(logSigned);
  assert.ok(!plain.ok, plain.text);
  assert.equal(plain.quorumOk, 'false');
  assert.match(plain.quorumText, /log-signed receipt/);
  // With the policy forgotten (a pinned one would fill the empty box), the
  // same receipt verifies against the key alone; then pinned again.
  await page.click('#unpin-policy');
  assert.match(await page.locator('#policy-info').innerText(), /\(not pinned\)/);
  await page.fill('#policy', '');
  const noPolicy = await verifyInPage(logSigned);
  assert.ok(noPolicy.ok, noPolicy.text);
  assert.equal(noPolicy.quorumOk, null);
  assert.equal(await page.inputValue('#policy'), '');
  await page.fill('#policy', fed.policy);
  await page.click('#pin-policy');
});

test('the receipt page requires the pinned policy too', async () => {
  // The policy pinned by the test above.
  const status = async () => {
    await page.waitForSelector('#receipt-status[data-state="ok"], #receipt-status[data-state="bad"], #receipt-status[data-state="warn"]');
    return {
      state: await page.getAttribute('#receipt-status', 'data-state'),
      quorum: await page.locator('#receipt-steps li[data-step="witness quorum"]').getAttribute('data-ok'),
    };
  };
  await page.goto('about:blank');
  await page.goto(jsonLink(`${fed.base}/receipt`, witnessed));
  const ok = await status();
  assert.notEqual(ok.state, 'bad');
  assert.equal(ok.quorum, 'true');
  await page.goto('about:blank');
  await page.goto(jsonLink(`${fed.base}/receipt`, logSigned));
  const bad = await status();
  assert.equal(bad.state, 'bad');
  assert.equal(bad.quorum, 'false');
});

test('the policy field and its messages in Chinese', async () => {
  await page.goto(`${fed.base}/`);
  await page.evaluate(() => localStorage.setItem('stele.lang', 'zh-CN'));
  await page.goto(`${fed.base}/`);
  await page.fill('#vkey', fed.vkey);
  await page.fill('#policy', fed.policy);
  const r = await verifyInPage(withCosignatures(witnessed, 1));
  assert.ok(!r.ok);
  assert.match(r.quorumText, /见证法定数/);
  assert.match(r.quorumText, /未达到法定数/);
  await page.evaluate(() => localStorage.setItem('stele.lang', 'en'));
});
